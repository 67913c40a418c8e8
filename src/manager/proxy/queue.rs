//! [`QueueProxy`] and [`JoinableQueueProxy`]: FIFO queues held by a
//! manager (Python's `manager.Queue()` / `manager.JoinableQueue()`).

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{count, dec, enc};
use crate::manager::error::ManagerError;
use crate::manager::handle::{Handle, proxy_common};
use crate::manager::protocol::{Block, Op};

/// A FIFO queue of `T` held by a manager's server.
///
/// Blocking calls wait on the server, on their own connection, so other
/// calls (from this process or others) go on meanwhile.
///
/// ```
/// use std::time::Duration;
/// let manager = multiproc::Manager::start()?;
/// let q = manager.queue::<String>(0)?; // 0: unbounded
/// q.put(&"hello".into())?;
/// assert_eq!(q.get()?, "hello");
/// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::ManagerError::Empty)));
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
pub struct QueueProxy<T> {
    pub(crate) h: Handle,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(QueueProxy<T>);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    fn put_with(&self, item: &T, block: Block) -> Result<(), ManagerError> {
        self.h
            .call(Op::Put {
                item: enc(item)?,
                block,
            })
            .map(drop)
    }

    fn get_with(&self, block: Block) -> Result<T, ManagerError> {
        dec(self.h.call(Op::Take { block })?)
    }

    /// Adds `item`, waiting for room if the queue is bounded and full.
    pub fn put(&self, item: &T) -> Result<(), ManagerError> {
        self.put_with(item, None)
    }

    /// Like [`put`](Self::put), failing with [`ManagerError::Full`] after
    /// `timeout`.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), ManagerError> {
        self.put_with(item, Some(timeout))
    }

    /// Adds `item` if there is room now ([`ManagerError::Full`] otherwise).
    pub fn put_nowait(&self, item: &T) -> Result<(), ManagerError> {
        self.put_with(item, Some(Duration::ZERO))
    }

    /// Removes and returns the oldest item, waiting for one.
    pub fn get(&self) -> Result<T, ManagerError> {
        self.get_with(None)
    }

    /// Like [`get`](Self::get), failing with [`ManagerError::Empty`] after
    /// `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, ManagerError> {
        self.get_with(Some(timeout))
    }

    /// Removes and returns the oldest item if there is one now
    /// ([`ManagerError::Empty`] otherwise).
    pub fn get_nowait(&self) -> Result<T, ManagerError> {
        self.get_with(Some(Duration::ZERO))
    }

    /// Number of items queued.
    pub fn qsize(&self) -> Result<usize, ManagerError> {
        count(self.h.call(Op::QSize)?)
    }

    /// Whether the queue is empty now.
    pub fn empty(&self) -> Result<bool, ManagerError> {
        Ok(self.qsize()? == 0)
    }
}

/// A queue whose consumers report finished items, so producers can wait
/// for all of them ([`join`](Self::join)).
pub struct JoinableQueueProxy<T> {
    pub(crate) h: Handle,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(JoinableQueueProxy<T>);

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    /// The queue operations (`put`, `get`, …).
    pub fn queue(&self) -> QueueProxy<T> {
        QueueProxy::from_handle(self.h.clone())
    }

    /// Adds `item` (see [`QueueProxy::put`]).
    pub fn put(&self, item: &T) -> Result<(), ManagerError> {
        self.queue().put(item)
    }

    /// Removes the oldest item (see [`QueueProxy::get`]).
    pub fn get(&self) -> Result<T, ManagerError> {
        self.queue().get()
    }

    /// Like [`get`](Self::get) with a timeout.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, ManagerError> {
        self.queue().get_timeout(timeout)
    }

    /// Reports one item taken with `get` as finished.
    pub fn task_done(&self) -> Result<(), ManagerError> {
        self.h.call(Op::TaskDone).map(drop)
    }

    /// Waits until every item put has been reported finished.
    pub fn join(&self) -> Result<(), ManagerError> {
        self.h.call(Op::Join { block: None }).map(drop)
    }

    /// Like [`join`](Self::join), failing with [`ManagerError::Timeout`]
    /// after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), ManagerError> {
        self.h
            .call(Op::Join {
                block: Some(timeout),
            })
            .map(drop)
    }

    /// Number of items queued.
    pub fn qsize(&self) -> Result<usize, ManagerError> {
        self.queue().qsize()
    }
}
