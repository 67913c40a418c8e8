//! Typed proxies: handles on a manager's objects that convert `T` to and
//! from the server's [`AnyValue`](super::AnyValue) form at the client.

mod dict;
mod list;
mod namespace;
mod queue;
mod remote;
mod scalar;
mod sync;

pub use dict::DictProxy;
pub use list::ListProxy;
pub use namespace::Namespace;
pub use queue::{JoinableQueueProxy, QueueProxy};
pub use remote::RemoteObject;
pub use scalar::{ArrayProxy, ValueProxy};
pub use sync::{
    BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, EventProxy, LockGuard, LockProxy,
    RLockProxy, SemaphoreProxy,
};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ManagerError;
use super::handle::Handle;
use super::protocol::Op;
use super::value::{Value, from_value, to_value};

/// `T` → `Value`.
pub(crate) fn enc<T: Serialize + ?Sized>(v: &T) -> Result<Value, ManagerError> {
    Ok(to_value(v)?)
}

/// `Value` → `T`.
pub(crate) fn dec<T: DeserializeOwned>(v: Value) -> Result<T, ManagerError> {
    Ok(from_value(v)?)
}

/// An atomic arithmetic request on the server (`op` is `Op::Add` or
/// `Op::Mul`) with `operand`, on the entry at `key` or, with none, on the
/// object itself; the new value.
pub(crate) fn update<N: Serialize + DeserializeOwned>(
    h: &Handle,
    op: fn(Option<Value>, Value) -> Op,
    key: Option<Value>,
    operand: &N,
) -> Result<N, ManagerError> {
    dec(h.call(op(key, enc(operand)?))?)
}

/// A reply that is an integer count or index.
pub(crate) fn count(v: Value) -> Result<usize, ManagerError> {
    match v {
        Value::Int(i) => usize::try_from(i).map_err(|_| ManagerError::Protocol("bad count".into())),
        other => Err(ManagerError::Protocol(format!(
            "expected an integer, got {}",
            other.type_name()
        ))),
    }
}

/// A reply that is a boolean.
pub(crate) fn flag(v: Value) -> Result<bool, ManagerError> {
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(ManagerError::Protocol(format!(
            "expected a boolean, got {}",
            other.type_name()
        ))),
    }
}

/// A `Lookup`-style reply: `[]` for missing, `[v]` for present.
pub(crate) fn maybe<T: DeserializeOwned>(v: Value) -> Result<Option<T>, ManagerError> {
    match v {
        Value::List(mut l) if l.len() <= 1 => l.pop().map(dec).transpose(),
        _ => Err(ManagerError::Protocol("malformed lookup reply".into())),
    }
}

/// A list reply decoded element by element.
pub(crate) fn dec_list<T: DeserializeOwned>(v: Value) -> Result<Vec<T>, ManagerError> {
    match v {
        Value::List(l) | Value::Tuple(l) => l.into_iter().map(dec).collect(),
        other => Err(ManagerError::Type(format!(
            "expected a list, found {}",
            other.type_name()
        ))),
    }
}
