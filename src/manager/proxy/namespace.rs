//! [`Namespace`]: named attributes held by a manager.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DictProxy, ListProxy, dec, dec_list, enc, update};
use crate::manager::error::ManagerError;
use crate::manager::handle::{Handle, proxy_common};
use crate::manager::protocol::Op;
use crate::manager::value::Value;

/// A namespace of named attributes of any serde types, held by a manager
/// (Python's `manager.Namespace()`), printed exactly as Python prints one.
///
/// Unlike Python's `ns.x += 1`, [`add`](Self::add) and [`mul`](Self::mul)
/// run on the server, atomically: two processes adding to one attribute
/// lose nothing.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let ns = manager.namespace()?;
/// ns.set("x", &1)?;
/// ns.set("y", &1)?;
/// assert_eq!(ns.to_string(), "Namespace(x=1, y=1)");
/// ns.add("x", 5)?;
/// ns.mul("y", 10)?;
/// assert_eq!(ns.get::<i64>("x")?, 6);
/// assert_eq!(ns.to_string(), "Namespace(x=6, y=10)");
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
pub struct Namespace {
    pub(crate) h: Handle,
}

proxy_common!(Namespace);

fn name(n: &str) -> Value {
    Value::Str(n.to_string())
}

impl Namespace {
    /// The attribute `attr` as a `T` ([`ManagerError::Key`] if it is not
    /// set).
    pub fn get<T: DeserializeOwned>(&self, attr: &str) -> Result<T, ManagerError> {
        dec(self.h.call(Op::Item(name(attr)))?)
    }

    /// Sets the attribute `attr`.
    pub fn set<T: Serialize + ?Sized>(&self, attr: &str, value: &T) -> Result<(), ManagerError> {
        self.h.call(Op::SetItem(name(attr), enc(value)?)).map(drop)
    }

    /// Deletes the attribute `attr` ([`ManagerError::Key`] if it is not
    /// set).
    pub fn del(&self, attr: &str) -> Result<(), ManagerError> {
        self.h
            .call(Op::DelItem {
                key: name(attr),
                lenient: false,
            })
            .map(drop)
    }

    /// Whether the attribute `attr` is set.
    pub fn has(&self, attr: &str) -> Result<bool, ManagerError> {
        super::flag(self.h.call(Op::Contains(name(attr)))?)
    }

    /// The names of the attributes, in the order they were first set.
    pub fn names(&self) -> Result<Vec<String>, ManagerError> {
        dec_list(self.h.call(Op::Keys)?)
    }

    /// Atomically adds `delta` to the attribute on the server and returns
    /// the new value (ints and floats mix as in Python; strings, lists and
    /// bytes concatenate).
    pub fn add<N>(&self, attr: &str, delta: N) -> Result<N, ManagerError>
    where
        N: Serialize + DeserializeOwned,
    {
        update(&self.h, Op::Add, Some(name(attr)), &delta)
    }

    /// Atomically multiplies the attribute by `factor` and returns the new
    /// value.
    pub fn mul<N>(&self, attr: &str, factor: N) -> Result<N, ManagerError>
    where
        N: Serialize + DeserializeOwned,
    {
        update(&self.h, Op::Mul, Some(name(attr)), &factor)
    }

    /// The list stored in attribute `attr`, as a live proxy.
    pub fn list_at<T>(&self, attr: &str) -> ListProxy<T> {
        ListProxy::from_handle(self.h.child(name(attr)))
    }

    /// The dict stored in attribute `attr`, as a live proxy.
    pub fn dict_at<K, V>(&self, attr: &str) -> DictProxy<K, V> {
        DictProxy::from_handle(self.h.child(name(attr)))
    }

    /// Python's repr, `Namespace(x=1, y=1)`, fetched from the server.
    pub fn repr(&self) -> Result<String, ManagerError> {
        match self.h.call(Op::Repr)? {
            Value::Str(s) => Ok(s),
            _ => Err(ManagerError::Protocol("repr is not a string".into())),
        }
    }
}

/// Prints `Namespace(x=1, y=1)` as Python does (`<Namespace: error>` if
/// the server cannot be reached).
impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.repr() {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("<Namespace: error>"),
        }
    }
}
