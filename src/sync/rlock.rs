//! [`RLock`]: a recursive lock shared between processes (Python's
//! `multiprocessing.RLock`), robust against a holder that dies.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::LockError;
use crate::segment::Kind;
use crate::segment::mutex::{Guard, MutexSegment, acquire_methods, map_result};

/// A recursive lock for processes and threads (Python's
/// `multiprocessing.RLock`): the thread holding it may acquire it again;
/// it is free once every guard is dropped.
///
/// If the holding thread dies (its process is killed, or the thread
/// exits) the next acquirer gets the lock inside
/// [`LockError::OwnerDied`], whatever the dead holder's depth was.
///
/// ```
/// let lock = multiproc::RLock::new()?;
/// let outer = lock.acquire().map_err(multiproc::LockError::without_guard)?;
/// let inner = lock.acquire().map_err(multiproc::LockError::without_guard)?;
/// assert_eq!(lock.depth(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!lock.is_locked());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    inner: Arc<MutexSegment>,
}

/// One level of a held [`RLock`]; dropping it releases that level.
#[must_use = "the level is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    _guard: Guard<'a>,
}

impl RLock {
    /// A new, unlocked recursive lock in its own shared memory.
    pub fn new() -> io::Result<RLock> {
        Ok(RLock {
            inner: Arc::new(MutexSegment::create(Kind::RLock, 0, 0, 0, 1, true)?),
        })
    }

    fn lock(&self, timeout: Option<Duration>) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
        map_result(self.inner.lock(timeout), |guard| RLockGuard {
            _guard: guard,
        })
    }

    acquire_methods!(lock -> RLockGuard<'_>;
        /// Acquires one more level, waiting as long as it takes.
        acquire,
        /// Acquires one more level, waiting at most `timeout`.
        acquire_timeout,
        /// Acquires one more level if the lock is free or already this
        /// thread's.
        try_acquire,
    );

    /// Whether some thread of some process holds the lock right now.
    pub fn is_locked(&self) -> bool {
        self.inner.raw().is_locked()
    }

    /// How many levels the holder holds (0 when free). Only meaningful
    /// to the holding thread; others see a snapshot.
    pub fn depth(&self) -> u32 {
        if self.is_locked() {
            self.inner.raw().depth()
        } else {
            0
        }
    }

    pub(super) fn segment(&self) -> &MutexSegment {
        &self.inner
    }
}

impl RLockGuard<'_> {
    /// Releases this level (the same as dropping the guard).
    pub fn release(self) {}
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLockGuard")
    }
}

/// An `RLock` travels to another process as its shared memory's
/// descriptor.
impl Serialize for RLock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.segment().fd().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RLock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = MutexSegment::receive(d, Kind::RLock, 0, |_| Some(0), 1, true)?;
        Ok(RLock {
            inner: Arc::new(seg),
        })
    }
}
