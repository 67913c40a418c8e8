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
/// Taking a free lock and releasing it cost one atomic compare-and-swap
/// each. The lock records its holder (thread id and start time); a death
/// is noticed by an acquirer that finds the lock taken: at once by
/// `try_acquire` (and by `acquire_timeout` before it gives up), otherwise
/// after a short sleep (1 ms, doubling up to 32 ms between checks), by
/// asking `/proc` whether the holder still runs. So the processes sharing
/// a lock must see each other in one pid namespace with `/proc` mounted
/// (where `/proc` cannot tell, a holder counts as alive), and a thread
/// that `exec`s while holding the lock still holds it afterwards.
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
    acquire_methods!(lock -> LockGuard<'_>;
        /// Acquires the lock, waiting as long as it takes.
        acquire,
        /// Acquires the lock, waiting at most `timeout`
        /// ([`LockError::Timeout`] after that).
        acquire_timeout,
        /// Acquires the lock if it is free ([`LockError::Timeout`] if not).
        try_acquire,
    );
}

impl LockGuard<'_> {
    /// Releases the lock (the same as dropping the guard).
    pub fn release(self) {}
}

/// What [`Lock`] and [`RLock`](crate::RLock) share, for a handle `$lock`
/// over `inner: Arc<MutexSegment>` of kind `$kind` with guard `$guard`:
/// creation, taking the lock (the private `lock`, under `acquire_methods!`), the
/// state, `Debug`, and travelling as the segment's descriptor.
macro_rules! lock_common {
    ($lock:ident, $guard:ident, $kind:expr, recursive: $recursive:expr, $what:literal) => {
        impl $lock {
            #[doc = concat!("A new, unlocked ", $what, " in its own shared memory.")]
            pub fn new() -> io::Result<$lock> {
                Ok($lock {
                    inner: Arc::new(MutexSegment::create($kind, 0, 0, 0, 1, $recursive)?),
                })
            }

            #[inline]
            fn lock(&self, timeout: Option<Duration>) -> Result<$guard<'_>, LockError<$guard<'_>>> {
                map_result(self.inner.lock(timeout), |guard| $guard { _guard: guard })
            }

            /// Whether some thread of some process holds the lock right now.
            pub fn is_locked(&self) -> bool {
                self.inner.raw().is_locked()
            }

            pub(super) fn segment(&self) -> &MutexSegment {
                &self.inner
            }
        }

        impl fmt::Debug for $lock {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($lock))
                    .field("locked", &self.is_locked())
                    .finish()
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($guard))
            }
        }

        #[doc = concat!("A `", stringify!($lock), "` travels to another process as its shared memory's descriptor.")]
        impl Serialize for $lock {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.inner.segment().fd().serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $lock {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let seg = MutexSegment::receive(d, $kind, 0, |_| Some(0), 1, $recursive)?;
                Ok($lock {
                    inner: Arc::new(seg),
                })
            }
        }
    };
}

pub(super) use lock_common;

lock_common!(Lock, LockGuard, Kind::Lock, recursive: false, "lock");
