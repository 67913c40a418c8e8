//! [`SimpleQueue`]: the reduced, unbounded queue (Python's
//! `multiprocessing.SimpleQueue`).

use std::fmt;
use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{GetError, GetTimeoutError, PutError};
use super::fifo::Queue;
use super::iter::{Iter, TryIter};

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
// Travels to other processes like a [`Queue`]: encoded as its queue.
#[derive(Serialize, Deserialize)]
#[serde(transparent, bound = "")]
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

    #[cfg(feature = "tokio")]
    pub(super) fn into_queue(self) -> Queue<T> {
        self.inner
    }

    /// Whether the queue looks empty.
    pub fn empty(&self) -> bool {
        self.inner.empty()
    }

    /// Declares that this handle will put no more: it stops counting as
    /// a producer and still gets (see [`Queue::close`]).
    pub fn close(&self) {
        self.inner.close()
    }

    /// Whether [`close`](Self::close) was called on this handle.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// A new, empty queue.
    pub fn new() -> io::Result<Self> {
        Ok(SimpleQueue {
            inner: Queue::new()?,
        })
    }
}

/// The put side needs only `T: Serialize`.
impl<T: Serialize> SimpleQueue<T> {
    /// Puts `value` at the back; never waits (see [`Queue::put`]).
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.inner.put(value)
    }
}

/// The get side needs only `T: DeserializeOwned`.
impl<T: DeserializeOwned> SimpleQueue<T> {
    /// Takes the front message, waiting for one; fails with
    /// [`GetError::Disconnected`] once it is empty and every producer is
    /// gone (see [`Queue::get`]).
    pub fn get(&self) -> Result<T, GetError> {
        self.inner.get()
    }

    /// Like [`get`](Self::get), waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.inner.get_timeout(timeout)
    }

    /// Waits for each message; ends when the queue is empty and every
    /// producer is gone (see [`Queue::iter`]). `for msg in &queue` does
    /// the same.
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::new()?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// q.close();
    /// assert_eq!(q.iter().collect::<Vec<i32>>(), [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        self.inner.iter()
    }

    /// Takes the messages queued now, without waiting (see
    /// [`Queue::try_iter`]).
    pub fn try_iter(&self) -> TryIter<'_, T> {
        self.inner.try_iter()
    }
}

/// `for msg in &queue`: the same as [`iter`](SimpleQueue::iter).
impl<'a, T: DeserializeOwned> IntoIterator for &'a SimpleQueue<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("empty", &self.empty())
            .finish()
    }
}
