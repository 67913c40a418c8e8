//! Proxies on the manager's synchronisation objects: locks, semaphores,
//! conditions, events and barriers (Python's `AcquirerProxy`,
//! `ConditionProxy`, `EventProxy`, `BarrierProxy`).
//!
//! The objects live on the server; a blocking call waits there, on its own
//! connection. A lock held by a process that dies is released when the
//! server notices the process's connections closing.

use std::time::Duration;

use super::{count, flag};
use crate::manager::client::thread_number;
use crate::manager::error::ManagerError;
use crate::manager::handle::{Handle, proxy_common};
use crate::manager::protocol::{Block, Op};
use crate::wait::Deadline;

fn acquire(h: &Handle, block: Block) -> Result<bool, ManagerError> {
    flag(h.call(Op::Acquire {
        thread: thread_number(),
        block,
    })?)
}

fn release(h: &Handle) -> Result<(), ManagerError> {
    h.call(Op::Release {
        thread: thread_number(),
    })
    .map(drop)
}

/// Releases a lock (or semaphore) when dropped; made by the proxies'
/// `guard` methods.
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard {
    h: Handle,
}

impl LockGuard {
    /// Releases now, reporting any error (dropping releases silently).
    pub fn release(self) -> Result<(), ManagerError> {
        let r = release(&self.h);
        std::mem::forget(self);
        r
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = release(&self.h);
    }
}

macro_rules! acquirer {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            pub(crate) h: Handle,
        }

        proxy_common!($name);

        impl $name {
            /// Acquires, waiting as long as it takes.
            pub fn acquire(&self) -> Result<(), ManagerError> {
                acquire(&self.h, None).map(drop)
            }

            /// Acquires if possible within `timeout`; `Ok(false)` if not.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
                acquire(&self.h, Some(timeout))
            }

            /// Acquires if possible right now; `Ok(false)` if not.
            pub fn try_acquire(&self) -> Result<bool, ManagerError> {
                acquire(&self.h, Some(Duration::ZERO))
            }

            /// Releases ([`ManagerError::NotOwner`] if not held by this
            /// thread, where ownership applies).
            pub fn release(&self) -> Result<(), ManagerError> {
                release(&self.h)
            }

            /// Acquires and returns a guard that releases on drop.
            pub fn guard(&self) -> Result<LockGuard, ManagerError> {
                self.acquire()?;
                Ok(LockGuard { h: self.h.clone() })
            }
        }
    };
}

acquirer!(
    /// A lock held by a manager (Python's `manager.Lock()`): any thread of
    /// any process may release it.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let lock = manager.lock()?;
    /// {
    ///     let _held = lock.guard()?;
    ///     assert!(!lock.try_acquire()?);
    /// }
    /// assert!(lock.try_acquire()?);
    /// lock.release()?;
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    LockProxy
);

acquirer!(
    /// A re-entrant lock held by a manager (Python's `manager.RLock()`):
    /// owned by one thread of one process, which may acquire it again.
    RLockProxy
);

acquirer!(
    /// A counting semaphore held by a manager (Python's
    /// `manager.Semaphore(n)`).
    SemaphoreProxy
);

acquirer!(
    /// A semaphore that refuses to be released above its initial value
    /// (Python's `manager.BoundedSemaphore(n)`).
    BoundedSemaphoreProxy
);

acquirer!(
    /// A condition variable with its own re-entrant lock, held by a
    /// manager (Python's `manager.Condition()`).
    ///
    /// `notify` does not check that the caller holds the lock.
    ConditionProxy
);

impl ConditionProxy {
    /// Releases the lock, waits for a notification, and takes the lock
    /// back. The lock must be held by this thread.
    pub fn wait(&self) -> Result<(), ManagerError> {
        self.h
            .call(Op::Wait {
                thread: thread_number(),
                block: None,
            })
            .map(drop)
    }

    /// Like [`wait`](Self::wait) for at most `timeout`; `Ok(false)` if no
    /// notification came (the lock is held again either way).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        flag(self.h.call(Op::Wait {
            thread: thread_number(),
            block: Some(timeout),
        })?)
    }

    /// Waits until `predicate()` holds, re-checking after each
    /// notification, for at most `timeout` (`None`: no limit). Returns the
    /// predicate's last value. The lock must be held.
    pub fn wait_for(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool, ManagerError> {
        let deadline = Deadline::from_timeout(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            match deadline.remaining() {
                None => self.wait()?,
                Some(Duration::ZERO) => return Ok(predicate()),
                Some(left) => {
                    self.wait_timeout(left)?;
                }
            }
        }
    }

    /// Wakes up to `n` waiters.
    pub fn notify(&self, n: usize) -> Result<(), ManagerError> {
        self.h.call(Op::Notify(n as u64)).map(drop)
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) -> Result<(), ManagerError> {
        self.h.call(Op::NotifyAll).map(drop)
    }
}

/// An event flag held by a manager (Python's `manager.Event()`).
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let ev = manager.event()?;
/// assert!(!ev.wait_timeout(std::time::Duration::from_millis(1))?);
/// ev.set()?;
/// assert!(ev.is_set()?);
/// ev.wait()?;
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
pub struct EventProxy {
    pub(crate) h: Handle,
}

proxy_common!(EventProxy);

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<(), ManagerError> {
        self.h.call(Op::EventSet).map(drop)
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.h.call(Op::EventClear).map(drop)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool, ManagerError> {
        flag(self.h.call(Op::EventIsSet)?)
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<(), ManagerError> {
        self.h.call(Op::EventWait { block: None }).map(drop)
    }

    /// Waits at most `timeout`; returns whether the flag is set.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        flag(self.h.call(Op::EventWait {
            block: Some(timeout),
        })?)
    }
}

/// A barrier held by a manager (Python's `manager.Barrier(parties)`).
pub struct BarrierProxy {
    pub(crate) h: Handle,
}

proxy_common!(BarrierProxy);

impl BarrierProxy {
    /// Waits until `parties` callers are waiting; returns this caller's
    /// arrival index (`0..parties`). [`ManagerError::BrokenBarrier`] if
    /// the barrier is or becomes broken.
    pub fn wait(&self) -> Result<usize, ManagerError> {
        count(self.h.call(Op::BarrierWait { block: None })?)
    }

    /// Like [`wait`](Self::wait); running out of time breaks the barrier
    /// (for every waiter, as in Python).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, ManagerError> {
        count(self.h.call(Op::BarrierWait {
            block: Some(timeout),
        })?)
    }

    /// Breaks the barrier: current and later waiters fail.
    pub fn abort(&self) -> Result<(), ManagerError> {
        self.h.call(Op::Abort).map(drop)
    }

    /// Returns the barrier to its initial state; current waiters fail.
    pub fn reset(&self) -> Result<(), ManagerError> {
        self.h.call(Op::Reset).map(drop)
    }

    /// Number of parties.
    pub fn parties(&self) -> Result<usize, ManagerError> {
        count(self.h.call(Op::Parties)?)
    }

    /// Number of callers waiting now.
    pub fn n_waiting(&self) -> Result<usize, ManagerError> {
        count(self.h.call(Op::NWaiting)?)
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> Result<bool, ManagerError> {
        flag(self.h.call(Op::Broken)?)
    }
}
