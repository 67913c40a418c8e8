//! [`ValueProxy`] and [`ArrayProxy`]: Python's `manager.Value` and
//! `manager.Array`, held by the server.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ListProxy, dec, enc, update};
use crate::manager::error::ManagerError;
use crate::manager::handle::{Handle, proxy_common};
use crate::manager::protocol::Op;
use crate::manager::value::Value;

/// One value held by a manager (Python's `manager.Value`), with atomic
/// server-side arithmetic.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let counter = manager.value(0i64)?;
/// counter.add(5)?;
/// assert_eq!(counter.mul(3)?, 15);
/// counter.set(&1)?;
/// assert_eq!(counter.get()?, 1);
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
pub struct ValueProxy<T> {
    pub(crate) h: Handle,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(ValueProxy<T>);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value.
    pub fn get(&self) -> Result<T, ManagerError> {
        dec(self.h.call(Op::Get)?)
    }

    /// Replaces the value.
    pub fn set(&self, value: &T) -> Result<(), ManagerError> {
        self.h.call(Op::Set(enc(value)?)).map(drop)
    }

    /// Atomically adds `delta` on the server; returns the new value.
    pub fn add(&self, delta: T) -> Result<T, ManagerError> {
        update(&self.h, Op::Add, None, &delta)
    }

    /// Atomically multiplies by `factor` on the server; returns the new
    /// value.
    pub fn mul(&self, factor: T) -> Result<T, ManagerError> {
        update(&self.h, Op::Mul, None, &factor)
    }
}

/// A fixed-length array held by a manager (Python's `manager.Array`).
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let arr = manager.array(&[0i32, 1, 2, 3])?;
/// arr.set(1, &-1)?;
/// assert_eq!(arr.add(3, 10)?, 13);
/// assert_eq!(arr.to_vec()?, vec![0, -1, 2, 13]);
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
pub struct ArrayProxy<T> {
    pub(crate) h: Handle,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(ArrayProxy<T>);

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// The server keeps an array as a list: the reads and writes an array
    /// shares with a list are the list's.
    fn list(&self) -> ListProxy<T> {
        ListProxy::from_handle(self.h.clone())
    }

    /// The element at `index` (negative counts from the end).
    pub fn get(&self, index: i64) -> Result<T, ManagerError> {
        self.list().get(index)
    }

    /// Sets the element at `index`.
    pub fn set(&self, index: i64, value: &T) -> Result<(), ManagerError> {
        self.list().set(index, value)
    }

    /// Atomically adds `delta` to the element at `index`; returns the new
    /// value.
    pub fn add(&self, index: i64, delta: T) -> Result<T, ManagerError> {
        update(&self.h, Op::Add, Some(Value::Int(index.into())), &delta)
    }

    /// Number of elements.
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.list().len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        self.list().is_empty()
    }

    /// A copy of every element (Python's `arr[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        self.list().to_vec()
    }
}
