//! [`DictProxy`]: a dict held by a manager.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ListProxy, count, dec, dec_list, enc, flag, maybe, update};
use crate::manager::error::ManagerError;
use crate::manager::handle::{Handle, proxy_common};
use crate::manager::protocol::Op;
use crate::manager::value::Value;

/// A dict from `K` to `V` held by a manager's server (Python's
/// `DictProxy`), in insertion order.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let scores = manager.dict::<String, i64>([])?;
/// scores.insert(&"a".into(), &1)?;
/// assert_eq!(scores.add(&"a".into(), 41)?, 42); // atomic, on the server
/// assert_eq!(scores.get(&"a".into())?, Some(42));
/// assert_eq!(scores.get(&"b".into())?, None);
///
/// // A list inside the dict, as a live proxy: the append sticks.
/// let nested = manager.dict::<String, Vec<i32>>([("k".into(), vec![])])?;
/// nested.list_at::<i32>(&"k".into())?.append(&1)?;
/// assert_eq!(nested.get(&"k".into())?, Some(vec![1]));
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
pub struct DictProxy<K, V> {
    pub(crate) h: Handle,
    _t: PhantomData<fn() -> (K, V)>,
}

proxy_common!(DictProxy<K, V>);

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// The value for `key`, if any.
    pub fn get(&self, key: &K) -> Result<Option<V>, ManagerError> {
        maybe(self.h.call(Op::Lookup(enc(key)?))?)
    }

    /// The value for `key` ([`ManagerError::Key`] if missing, like
    /// Python's `d[key]`).
    pub fn item(&self, key: &K) -> Result<V, ManagerError> {
        dec(self.h.call(Op::Item(enc(key)?))?)
    }

    /// Sets `key` to `value` (Python's `d[key] = value`).
    pub fn insert(&self, key: &K, value: &V) -> Result<(), ManagerError> {
        self.h.call(Op::SetItem(enc(key)?, enc(value)?)).map(drop)
    }

    /// Removes `key`, returning its value if it was there.
    pub fn remove(&self, key: &K) -> Result<Option<V>, ManagerError> {
        maybe(self.h.call(Op::DelItem {
            key: enc(key)?,
            lenient: true,
        })?)
    }

    /// Removes `key` and returns its value ([`ManagerError::Key`] if
    /// missing, like Python's `pop(key)`).
    pub fn pop(&self, key: &K) -> Result<V, ManagerError> {
        dec(self.h.call(Op::DelItem {
            key: enc(key)?,
            lenient: false,
        })?)
    }

    /// Removes `key` and returns its value, or `default` if it was missing.
    pub fn pop_or(&self, key: &K, default: V) -> Result<V, ManagerError> {
        Ok(self.remove(key)?.unwrap_or(default))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> Result<bool, ManagerError> {
        flag(self.h.call(Op::Contains(enc(key)?))?)
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>, ManagerError> {
        dec_list(self.h.call(Op::Keys)?)
    }

    /// The values, in insertion order.
    pub fn values(&self) -> Result<Vec<V>, ManagerError> {
        dec_list(self.h.call(Op::Values)?)
    }

    /// The entries, in insertion order.
    pub fn items(&self) -> Result<Vec<(K, V)>, ManagerError> {
        dec_list(self.h.call(Op::Items)?)
    }

    /// Number of entries.
    pub fn len(&self) -> Result<usize, ManagerError> {
        count(self.h.call(Op::Len)?)
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// Inserts every entry, in one round trip.
    pub fn update<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> Result<(), ManagerError>
    where
        K: 'a,
        V: 'a,
    {
        let pairs = entries
            .into_iter()
            .map(|(k, v)| Ok((enc(k)?, enc(v)?)))
            .collect::<Result<_, ManagerError>>()?;
        self.h.call(Op::Update(pairs)).map(drop)
    }

    /// The value for `key`, inserting `default` first if it is missing.
    pub fn setdefault(&self, key: &K, default: &V) -> Result<V, ManagerError> {
        dec(self.h.call(Op::SetDefault(enc(key)?, enc(default)?))?)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.h.call(Op::Clear).map(drop)
    }

    /// Atomically adds `delta` to the value at `key` on the server and
    /// returns the new value ([`ManagerError::Key`] if missing). Two
    /// processes adding to one entry lose nothing.
    pub fn add<N>(&self, key: &K, delta: N) -> Result<N, ManagerError>
    where
        N: Serialize + DeserializeOwned,
    {
        update(&self.h, Op::Add, Some(enc(key)?), &delta)
    }

    /// Atomically multiplies the value at `key` by `factor`.
    pub fn mul<N>(&self, key: &K, factor: N) -> Result<N, ManagerError>
    where
        N: Serialize + DeserializeOwned,
    {
        update(&self.h, Op::Mul, Some(enc(key)?), &factor)
    }

    /// A copy of the whole dict as entries.
    pub fn to_vec(&self) -> Result<Vec<(K, V)>, ManagerError> {
        self.items()
    }

    /// The list stored at `key`, as a live proxy: its changes stick (the
    /// entry must exist when the proxy is used).
    pub fn list_at<U>(&self, key: &K) -> Result<ListProxy<U>, ManagerError> {
        Ok(ListProxy::from_handle(self.h.child(enc(key)?)))
    }

    /// The dict stored at `key`, as a live proxy.
    pub fn dict_at<K2, V2>(&self, key: &K) -> Result<DictProxy<K2, V2>, ManagerError> {
        Ok(DictProxy::from_handle(self.h.child(enc(key)?)))
    }
}

/// Prints the dict as Python's `repr` would, fetched from the server.
impl<K, V> std::fmt::Display for DictProxy<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.h.call(Op::Repr) {
            Ok(Value::Str(s)) => f.write_str(&s),
            Ok(_) | Err(_) => f.write_str("<DictProxy: error>"),
        }
    }
}
