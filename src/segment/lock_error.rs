//! How acquiring a process-shared lock can fail: the one error type of
//! every lock in the crate (the primitives of `sync/` and the lock of a
//! `Value` or `Array`).

use std::fmt;
use std::io;

/// Acquiring a lock ([`Lock`](crate::Lock), [`RLock`](crate::RLock), a
/// [`Condition`](crate::Condition)'s lock or the lock of a
/// [`Value`](crate::Value)/[`Array`](crate::Array)) did not go normally.
///
/// `G` is what the operation produces when it does get the lock: a guard,
/// or the result of a convenience method such as
/// [`Value::get`](crate::Value::get).
#[non_exhaustive]
pub enum LockError<G> {
    /// The previous holder ended (its process was killed, or its thread
    /// exited) while holding the lock. The lock *was* acquired and `G` is
    /// the usual result, but the data the lock protects may be
    /// half-updated: check or repair it. Like `std::sync::PoisonError`,
    /// except that only this one acquirer is told; later ones acquire
    /// normally.
    OwnerDied(G),
    /// Not acquired within the timeout (at once for the `try_` forms).
    Timeout,
    /// The calling thread already holds this (non-recursive) lock;
    /// waiting would never end.
    WouldDeadlock,
    /// The OS reported an error (the lock's memory is corrupted).
    Os(io::Error),
}

impl<G> LockError<G> {
    /// Takes the result despite a dead previous holder: `Ok(g)` for
    /// [`OwnerDied`](Self::OwnerDied), the error itself otherwise.
    ///
    /// ```
    /// use multiproc::{Lock, LockError};
    ///
    /// let lock = Lock::new()?;
    /// let guard = lock
    ///     .acquire()
    ///     .or_else(LockError::recover)
    ///     .map_err(LockError::without_guard)?;
    /// # drop(guard);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recover(self) -> Result<G, Self> {
        match self {
            LockError::OwnerDied(g) => Ok(g),
            e => Err(e),
        }
    }

    /// Drops the payload (releasing the lock if it is a guard), keeping
    /// the kind of error: an error that borrows nothing, for `?` into
    /// `Box<dyn Error>` (a guard borrows its lock, so an error holding one
    /// cannot be boxed as `'static`).
    pub fn without_guard(self) -> LockError<()> {
        self.map(drop)
    }

    /// Whether this is [`OwnerDied`](Self::OwnerDied).
    pub fn is_owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    /// Maps the payload of [`OwnerDied`](Self::OwnerDied).
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            LockError::OwnerDied(g) => LockError::OwnerDied(f(g)),
            LockError::Timeout => LockError::Timeout,
            LockError::WouldDeadlock => LockError::WouldDeadlock,
            LockError::Os(e) => LockError::Os(e),
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Timeout => f.write_str("Timeout"),
            LockError::WouldDeadlock => f.write_str("WouldDeadlock"),
            LockError::Os(e) => f.debug_tuple("Os").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => {
                f.write_str("the previous holder of the lock died while holding it")
            }
            LockError::Timeout => f.write_str("the lock was not acquired within the timeout"),
            LockError::WouldDeadlock => {
                f.write_str("this thread already holds the lock; acquiring it again would deadlock")
            }
            LockError::Os(e) => write!(f, "lock failed: {e}"),
        }
    }
}

impl<G> std::error::Error for LockError<G> {}
