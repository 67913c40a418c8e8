//! [`RLock`]: a recursive lock shared between processes (Python's
//! `multiprocessing.RLock`), robust against a holder that dies.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::LockError;
use super::lock::lock_common;
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
    acquire_methods!(lock -> RLockGuard<'_>;
        /// Acquires one more level, waiting as long as it takes.
        acquire,
        /// Acquires one more level, waiting at most `timeout`.
        acquire_timeout,
        /// Acquires one more level if the lock is free or already this
        /// thread's.
        try_acquire,
    );

    /// How many levels the holder holds (0 when free). Only meaningful
    /// to the holding thread; others see a snapshot.
    pub fn depth(&self) -> u32 {
        if self.is_locked() {
            self.inner.raw().depth()
        } else {
            0
        }
    }
}

impl RLockGuard<'_> {
    /// Releases this level (the same as dropping the guard).
    pub fn release(self) {}
}

lock_common!(RLock, RLockGuard, Kind::RLock, recursive: true, "recursive lock");
