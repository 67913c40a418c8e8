//! [`Lock`]: a non-recursive lock shared between processes (Python's
//! `multiprocessing.Lock`), robust against a holder that dies.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::LockError;
use crate::segment::Kind;
use crate::segment::mutex::{Guard, MutexSegment, acquire_methods, map_result};

/// A lock for processes and threads (Python's `multiprocessing.Lock`).
///
/// Acquiring returns a [`LockGuard`]; dropping the guard releases the lock.
/// Clones share the lock, and a `Lock` passed to a child process (as a
/// [`Process`](crate::Process) argument or inside a message) is the same
/// lock there.
///
/// If a holder dies (its process is killed, or its thread exits) while
/// holding the lock, the next acquirer gets it inside
/// [`LockError::OwnerDied`], never a hang. Acquiring a lock the calling
/// thread already holds is [`LockError::WouldDeadlock`] (Python would
/// block forever); use an [`RLock`](crate::RLock) for that.
///
/// Unlike Python's, the lock is released by the thread that acquired it
/// (when its guard drops), not by any process.
///
/// ```
/// use multiproc::{Lock, Process};
///
/// fn child(lock: Lock) -> bool {
///     let _held = lock.acquire().unwrap();
///     true
/// }
///
/// let lock = Lock::new()?;
/// let mut p = Process::new(child, lock.clone());
/// p.start()?;
/// assert!(p.join()?);
/// assert!(lock.try_acquire().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    inner: Arc<MutexSegment>,
}

/// Proof that a [`Lock`] is held; releases it when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    _guard: Guard<'a>,
}

impl Lock {
    /// A new, unlocked lock in its own shared memory.
    pub fn new() -> io::Result<Lock> {
        Ok(Lock {
            inner: Arc::new(MutexSegment::create(Kind::Lock, 0, 0, 0, 1, false)?),
        })
    }

    fn lock(&self, timeout: Option<Duration>) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        map_result(self.inner.lock(timeout), |guard| LockGuard {
            _guard: guard,
        })
    }

    acquire_methods!(lock -> LockGuard<'_>;
        /// Acquires the lock, waiting as long as it takes.
        acquire,
        /// Acquires the lock, waiting at most `timeout`
        /// ([`LockError::Timeout`] after that).
        acquire_timeout,
        /// Acquires the lock if it is free ([`LockError::Timeout`] if not).
        try_acquire,
    );

    /// Whether some thread of some process holds the lock right now.
    pub fn is_locked(&self) -> bool {
        self.inner.raw().is_locked()
    }

    pub(super) fn segment(&self) -> &MutexSegment {
        &self.inner
    }
}

impl LockGuard<'_> {
    /// Releases the lock (the same as dropping the guard).
    pub fn release(self) {}
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// A `Lock` travels to another process as its shared memory's descriptor.
impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.segment().fd().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Lock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = MutexSegment::receive(d, Kind::Lock, 0, |_| Some(0), 1, false)?;
        Ok(Lock {
            inner: Arc::new(seg),
        })
    }
}
