//! [`JoinableQueue`]: a queue whose consumers report each message done,
//! so that a producer can wait for all the work (Python's
//! `multiprocessing.JoinableQueue`).

use std::fmt;
use std::io;
use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{TaskDoneError, TasksPending};
use super::fifo::Queue;
use super::iter::Iter;
use crate::wait::Deadline;

/// A [`Queue`] that also counts unfinished tasks: every `put` adds one,
/// every [`task_done`](Self::task_done) removes one, and
/// [`join`](Self::join) waits until none is left. All of `Queue`'s methods
/// are available through `Deref`.
///
/// The count lives in shared memory and is part of the queue's commit
/// protocol: a message is counted exactly when its `put` takes effect, and
/// `task_done` is one atomic step, so a process killed anywhere cannot
/// leave the count off by one. (A consumer killed after its `get` and
/// before its `task_done` leaves that task unfinished, as in Python.)
///
/// ```
/// use multiproc::{JoinableQueue, Process};
///
/// fn worker(q: JoinableQueue<u32>) -> u32 {
///     let mut sum = 0;
///     for _ in 0..3 {
///         sum += q.get().unwrap();
///         q.task_done().unwrap();
///     }
///     sum
/// }
///
/// let q = JoinableQueue::new()?;
/// let mut p = Process::new(worker, q.clone());
/// p.start()?;
/// for i in 1..=3 {
///     q.put(i)?;
/// }
/// q.join();
/// assert_eq!(p.join()?, 6);
/// assert!(q.task_done().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
// Travels to other processes like a [`Queue`]: encoded as its queue.
#[derive(Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct JoinableQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.inner
    }
}

impl<T> JoinableQueue<T> {
    pub(super) fn from_queue(inner: Queue<T>) -> Self {
        JoinableQueue { inner }
    }

    /// Marks one message as processed. Fails if called more times than
    /// messages were put (Python raises `ValueError`).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.inner.shared.ring.task_done() {
            Ok(())
        } else {
            Err(TaskDoneError)
        }
    }

    /// Messages put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.inner.shared.ring.unfinished() as usize
    }

    /// Waits until every message put so far has been marked done.
    pub fn join(&self) {
        self.inner.shared.ring.wait_all_done(Deadline::NEVER);
    }

    /// Like [`join`](Self::join), giving up after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), TasksPending> {
        if self
            .inner
            .shared
            .ring
            .wait_all_done(Deadline::after(timeout))
        {
            Ok(())
        } else {
            Err(TasksPending {
                unfinished: self.unfinished_tasks(),
            })
        }
    }
}

impl<T> JoinableQueue<T> {
    /// A new unbounded joinable queue.
    pub fn new() -> io::Result<Self> {
        Ok(JoinableQueue {
            inner: Queue::new()?,
        })
    }

    /// A new joinable queue holding at most `maxsize` messages (0:
    /// unbounded).
    pub fn with_maxsize(maxsize: usize) -> io::Result<Self> {
        Ok(JoinableQueue {
            inner: Queue::with_maxsize(maxsize)?,
        })
    }
}

/// `for msg in &queue`: see [`Queue::iter`] (`iter` and `try_iter` come
/// through `Deref`). Each message still needs its
/// [`task_done`](JoinableQueue::task_done).
impl<'a, T: DeserializeOwned> IntoIterator for &'a JoinableQueue<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.inner.iter()
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.qsize())
            .field("unfinished_tasks", &self.unfinished_tasks())
            .finish()
    }
}
