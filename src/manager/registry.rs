//! User-defined types served by a manager (Python's
//! `BaseManager.register`): a type implementing [`Served`], built on the
//! server by a [`Constructor`] registered under a type name before the
//! manager starts.
//!
//! The server of [`Manager::start`](super::Manager::start) is a spawned copy
//! of the running executable, so registration is a table of plain function
//! pointers that both copies share: the builder sends each constructor to
//! the server as its distance from a fixed function of the binary, as
//! `Process` does with targets.

use std::collections::HashMap;

use super::value::Value;
use crate::process::fn_ref::FnRef;

/// A type whose methods a manager serves by name.
///
/// Arguments and return values are [`AnyValue`](super::AnyValue)s; use
/// [`from_value`](super::from_value) and [`to_value`](super::to_value) to
/// work with typed ones. An `Err` reaches the caller as
/// [`ManagerError::Remote`](super::ManagerError::Remote).
///
/// Calls on one object are serialised (the server holds its mutex during
/// `call`), so a method that blocks delays the object's other callers, not
/// the rest of the server.
///
/// ```
/// use multiproc::manager::{AnyValue, Served, from_value, to_value};
///
/// struct Counter(i64);
///
/// impl Served for Counter {
///     fn call(&mut self, method: &str, args: AnyValue) -> Result<AnyValue, String> {
///         match method {
///             "add" => {
///                 self.0 += from_value::<i64>(args).map_err(|e| e.to_string())?;
///                 Ok(AnyValue::Int(self.0.into()))
///             }
///             "get" => Ok(AnyValue::Int(self.0.into())),
///             _ => Err(format!("Counter has no method {method}")),
///         }
///     }
/// }
///
/// fn new_counter(args: AnyValue) -> Result<Box<dyn Served>, String> {
///     Ok(Box::new(Counter(from_value(args).map_err(|e| e.to_string())?)))
/// }
/// # let mut c = new_counter(AnyValue::Int(1)).unwrap();
/// # assert_eq!(c.call("add", AnyValue::Int(2)).unwrap(), AnyValue::Int(3));
/// # let _ = to_value(&1);
/// ```
pub trait Served: Send + 'static {
    /// Runs `method` with `args`.
    fn call(&mut self, method: &str, args: Value) -> Result<Value, String>;
}

/// Builds a served object from the arguments given to
/// [`Factory::create`](super::Factory::create).
pub type Constructor = fn(Value) -> Result<Box<dyn Served>, String>;

/// The registered constructors, by type name.
pub(crate) type Registry = HashMap<String, Constructor>;

/// A registry as it travels to a spawned server: names and references
/// to the constructors.
pub(crate) fn to_refs(registry: &Registry) -> Vec<(String, FnRef<Constructor>)> {
    registry
        .iter()
        .map(|(name, ctor)| (name.clone(), FnRef::new(*ctor)))
        .collect()
}

/// Rebuilds a registry sent by [`to_refs`] in a copy of the same binary.
pub(crate) fn from_refs(refs: Vec<(String, FnRef<Constructor>)>) -> Registry {
    refs.into_iter()
        .map(|(name, ctor)| (name, ctor.get()))
        .collect()
}
