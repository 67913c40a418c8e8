//! [`SimpleQueue`]: the reduced, unbounded queue (Python's
//! `multiprocessing.SimpleQueue`).

use std::fmt;
use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{GetError, GetTimeoutError, PutError};
use super::fifo::Queue;

/// An unbounded FIFO with just `put`, `get` and `empty`, like Python's
/// `SimpleQueue`. Same machinery and guarantees as [`Queue`].
///
/// ```
/// let q = multiproc::SimpleQueue::new()?;
/// q.put("one".to_string())?;
/// assert!(!q.empty());
/// assert_eq!(q.get()?, "one");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SimpleQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> SimpleQueue<T> {
    pub(super) fn from_queue(inner: Queue<T>) -> Self {
        SimpleQueue { inner }
    }

    /// Whether the queue looks empty.
    pub fn empty(&self) -> bool {
        self.inner.empty()
    }

    /// Closes this process's handle (see [`Queue::close`]).
    pub fn close(&self) {
        self.inner.close()
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, empty queue.
    pub fn new() -> io::Result<Self> {
        Ok(SimpleQueue {
            inner: Queue::new()?,
        })
    }

    /// Puts `value` at the back; never waits (see [`Queue::put`]).
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.inner.put(value)
    }

    /// Takes the front message, waiting for one.
    pub fn get(&self) -> Result<T, GetError> {
        self.inner.get()
    }

    /// Like [`get`](Self::get), waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.inner.get_timeout(timeout)
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("empty", &self.empty())
            .finish()
    }
}

/// Travels to other processes like a [`Queue`].
impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SimpleQueue {
            inner: Queue::deserialize(d)?,
        })
    }
}
