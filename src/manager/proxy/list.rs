//! [`ListProxy`]: a list held by a manager.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DictProxy, count, dec, dec_list, enc, flag, update};
use crate::manager::error::ManagerError;
use crate::manager::handle::{Handle, proxy_common};
use crate::manager::protocol::Op;
use crate::manager::value::Value;

/// A list of `T` held by a manager's server (Python's `ListProxy`).
///
/// Every method is one round trip to the server, and every process holding
/// a clone sees every other's changes. Indices are `i64` and, as in
/// Python, negative ones count from the end.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let records = manager.list(vec![("Computers".to_string(), 1), ("Histoty".to_string(), 5)])?;
/// records.append(&("Hindi".to_string(), 9))?;
/// assert_eq!(records.len()?, 3);
/// assert_eq!(records.get(-1)?, ("Hindi".to_string(), 9));
/// assert_eq!(records.to_string(), "[('Computers', 1), ('Histoty', 5), ('Hindi', 9)]");
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
pub struct ListProxy<T> {
    pub(crate) h: Handle,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(ListProxy<T>);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends `item` (Python's `append`).
    pub fn append(&self, item: &T) -> Result<(), ManagerError> {
        self.h.call(Op::Append(enc(item)?)).map(drop)
    }

    /// Same as [`append`](Self::append).
    pub fn push(&self, item: &T) -> Result<(), ManagerError> {
        self.append(item)
    }

    /// Appends every item, in one round trip.
    pub fn extend<'a>(&self, items: impl IntoIterator<Item = &'a T>) -> Result<(), ManagerError>
    where
        T: 'a,
    {
        let items = items.into_iter().map(enc).collect::<Result<_, _>>()?;
        self.h.call(Op::Extend(items)).map(drop)
    }

    /// The item at `index`.
    pub fn get(&self, index: i64) -> Result<T, ManagerError> {
        dec(self.h.call(Op::Item(Value::Int(index.into())))?)
    }

    /// Replaces the item at `index`.
    pub fn set(&self, index: i64, item: &T) -> Result<(), ManagerError> {
        self.h
            .call(Op::SetItem(Value::Int(index.into()), enc(item)?))
            .map(drop)
    }

    /// Inserts `item` before `index` (clamped to the list, as in Python).
    pub fn insert(&self, index: i64, item: &T) -> Result<(), ManagerError> {
        self.h.call(Op::Insert(index, enc(item)?)).map(drop)
    }

    /// Removes and returns the last item ([`ManagerError::Index`] when
    /// empty).
    pub fn pop(&self) -> Result<T, ManagerError> {
        dec(self.h.call(Op::Pop(None))?)
    }

    /// Removes and returns the item at `index`.
    pub fn pop_at(&self, index: i64) -> Result<T, ManagerError> {
        dec(self.h.call(Op::Pop(Some(index)))?)
    }

    /// Removes the first item equal to `item` ([`ManagerError::NotFound`]
    /// if there is none).
    pub fn remove(&self, item: &T) -> Result<(), ManagerError> {
        self.h.call(Op::Remove(enc(item)?)).map(drop)
    }

    /// The position of the first item equal to `item`.
    pub fn index(&self, item: &T) -> Result<usize, ManagerError> {
        count(self.h.call(Op::Index(enc(item)?))?)
    }

    /// How many items equal `item`.
    pub fn count(&self, item: &T) -> Result<usize, ManagerError> {
        count(self.h.call(Op::Count(enc(item)?))?)
    }

    /// Whether some item equals `item`.
    pub fn contains(&self, item: &T) -> Result<bool, ManagerError> {
        flag(self.h.call(Op::Contains(enc(item)?))?)
    }

    /// Number of items.
    pub fn len(&self) -> Result<usize, ManagerError> {
        count(self.h.call(Op::Len)?)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// A copy of the whole list, in one round trip.
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        dec_list(self.h.call(Op::Get)?)
    }

    /// Iterates over a snapshot taken now (one round trip).
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>, ManagerError> {
        Ok(self.to_vec()?.into_iter())
    }

    /// Replaces the whole list.
    pub fn replace(&self, items: &[T]) -> Result<(), ManagerError> {
        self.h.call(Op::Set(enc(items)?)).map(drop)
    }

    /// Sorts the list on the server, in the server's value order: numbers
    /// by value, strings and tuples lexicographically, structs field by
    /// field in declaration order (the order `#[derive(Ord)]` gives), enum
    /// variants by name.
    pub fn sort(&self) -> Result<(), ManagerError>
    where
        T: Ord,
    {
        self.h.call(Op::Sort { reverse: false }).map(drop)
    }

    /// Sorts in descending order (see [`sort`](Self::sort)).
    pub fn sort_reverse(&self) -> Result<(), ManagerError>
    where
        T: Ord,
    {
        self.h.call(Op::Sort { reverse: true }).map(drop)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<(), ManagerError> {
        self.h.call(Op::Reverse).map(drop)
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.h.call(Op::Clear).map(drop)
    }

    /// Atomically adds `delta` to the item at `index` on the server and
    /// returns the new value (numbers; strings and lists concatenate).
    pub fn add(&self, index: i64, delta: &T) -> Result<T, ManagerError> {
        update(&self.h, Op::Add, Some(Value::Int(index.into())), delta)
    }

    /// The list stored at `index`, as a live proxy: its changes stick.
    pub fn list_at<U>(&self, index: i64) -> ListProxy<U> {
        ListProxy::from_handle(self.h.child(Value::Int(index.into())))
    }

    /// The dict stored at `index`, as a live proxy.
    pub fn dict_at<K, V>(&self, index: i64) -> DictProxy<K, V> {
        DictProxy::from_handle(self.h.child(Value::Int(index.into())))
    }
}

/// Prints the list as Python's `repr` would, fetched from the server
/// (`<ListProxy: error>` if that fails).
impl<T> std::fmt::Display for ListProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.h.call(Op::Repr) {
            Ok(Value::Str(s)) => f.write_str(&s),
            Ok(_) | Err(_) => f.write_str("<ListProxy: error>"),
        }
    }
}
