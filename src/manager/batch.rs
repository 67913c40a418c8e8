//! [`Batch`]: several operations on a manager's objects in one round trip.

use std::sync::Arc;

use serde::Serialize;

use super::client::{Endpoint, fault};
use super::error::ManagerError;
use super::handle::Handle;
use super::protocol::{Op, Path, Request};
use super::proxy::{DictProxy, ListProxy, Namespace, ValueProxy, enc};
use super::value::Value;

/// Operations collected to run on one manager in a single round trip, in
/// order, each with its own result. Operations on different objects of
/// the same manager can be mixed; other processes' operations may run
/// between two of a batch (a batch is not a transaction).
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let log = manager.list::<i32>([])?;
/// let ns = manager.namespace()?;
/// ns.set("hits", &0)?;
///
/// let mut batch = manager.batch();
/// for i in 0..100 {
///     batch.append(&log, &i)?;
/// }
/// let hits = batch.add_attr(&ns, "hits", 100)?;
/// let replies = batch.run()?;
/// assert_eq!(replies.len(), 101);
/// assert_eq!(replies[hits].as_ref().unwrap().clone().decode::<i32>()?, 100);
/// assert_eq!(log.len()?, 100);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Batch {
    endpoint: Arc<Endpoint>,
    ops: Vec<(u64, Path, Op)>,
    /// Keeps the objects alive until the batch has run.
    keep: Vec<Handle>,
}

impl Batch {
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> Self {
        Batch {
            endpoint,
            ops: Vec::new(),
            keep: Vec::new(),
        }
    }

    fn push(&mut self, h: &Handle, op: Op) -> Result<usize, ManagerError> {
        if !Arc::ptr_eq(h.endpoint(), &self.endpoint) {
            return Err(ManagerError::Protocol(
                "a batch runs on one manager; this object belongs to another".into(),
            ));
        }
        if !self.keep.iter().any(|k| Arc::ptr_eq(&k.r, &h.r)) {
            self.keep.push(h.clone());
        }
        self.ops.push((h.r.id, (*h.path).clone(), op));
        Ok(self.ops.len() - 1)
    }

    /// Appends `item` to `list`. Returns the operation's index in the
    /// replies (reply: `None`).
    pub fn append<T: Serialize>(
        &mut self,
        list: &ListProxy<T>,
        item: &T,
    ) -> Result<usize, ManagerError> {
        self.push(&list.h, Op::Append(enc(item)?))
    }

    /// Reads `list[index]` (reply: the item).
    pub fn list_get<T>(&mut self, list: &ListProxy<T>, index: i64) -> Result<usize, ManagerError> {
        self.push(&list.h, Op::Item(Value::Int(index.into())))
    }

    /// Sets `dict[key] = value` (reply: `None`).
    pub fn insert<K: Serialize, V: Serialize>(
        &mut self,
        dict: &DictProxy<K, V>,
        key: &K,
        value: &V,
    ) -> Result<usize, ManagerError> {
        self.push(&dict.h, Op::SetItem(enc(key)?, enc(value)?))
    }

    /// Reads `dict[key]` (reply: the value, or [`ManagerError::Key`]).
    pub fn get<K: Serialize, V>(
        &mut self,
        dict: &DictProxy<K, V>,
        key: &K,
    ) -> Result<usize, ManagerError> {
        self.push(&dict.h, Op::Item(enc(key)?))
    }

    /// Atomically adds `delta` to `dict[key]` (reply: the new value).
    pub fn add_entry<K: Serialize, V, N: Serialize>(
        &mut self,
        dict: &DictProxy<K, V>,
        key: &K,
        delta: N,
    ) -> Result<usize, ManagerError> {
        self.push(&dict.h, Op::Add(Some(enc(key)?), enc(&delta)?))
    }

    /// Sets attribute `attr` of `ns` (reply: `None`).
    pub fn set_attr<T: Serialize + ?Sized>(
        &mut self,
        ns: &Namespace,
        attr: &str,
        value: &T,
    ) -> Result<usize, ManagerError> {
        self.push(&ns.h, Op::SetItem(Value::Str(attr.into()), enc(value)?))
    }

    /// Reads attribute `attr` of `ns` (reply: its value).
    pub fn get_attr(&mut self, ns: &Namespace, attr: &str) -> Result<usize, ManagerError> {
        self.push(&ns.h, Op::Item(Value::Str(attr.into())))
    }

    /// Atomically adds `delta` to attribute `attr` (reply: the new value).
    pub fn add_attr<N: Serialize>(
        &mut self,
        ns: &Namespace,
        attr: &str,
        delta: N,
    ) -> Result<usize, ManagerError> {
        self.push(&ns.h, Op::Add(Some(Value::Str(attr.into())), enc(&delta)?))
    }

    /// Atomically adds `delta` to a value (reply: the new value).
    pub fn add_value<T: Serialize>(
        &mut self,
        value: &ValueProxy<T>,
        delta: T,
    ) -> Result<usize, ManagerError> {
        self.push(&value.h, Op::Add(None, enc(&delta)?))
    }

    /// Number of operations collected.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation was collected.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Sends every operation in one request and returns their replies, in
    /// order; decode a reply with [`Value::decode`]. The outer `Err` means
    /// the batch did not run (e.g. [`ManagerError::Disconnected`]).
    pub fn run(self) -> Result<Vec<Result<Value, ManagerError>>, ManagerError> {
        if self.ops.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.endpoint.call_many(&Request::Batch(self.ops))?;
        drop(self.keep);
        Ok(replies.into_iter().map(|r| r.map_err(fault)).collect())
    }
}
