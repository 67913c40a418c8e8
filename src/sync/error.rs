//! Errors of the synchronization primitives.

use std::io;

pub use crate::segment::LockError;

/// Why a [`Barrier`](crate::Barrier) wait did not pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// The barrier is broken: [`abort`](crate::Barrier::abort) was called,
    /// it was [`reset`](crate::Barrier::reset) while this party waited,
    /// another party's wait timed out, or a party died. It stays broken
    /// until `reset`.
    #[error("the barrier is broken")]
    Broken,
    /// This wait timed out; the barrier is now broken for every party (as
    /// in Python).
    #[error("the barrier wait timed out; the barrier is now broken")]
    Timeout,
    /// A process holding the barrier (pid given) died without dropping it;
    /// the barrier is now broken for every party.
    #[error("process {pid} holding the barrier died; the barrier is now broken")]
    PartyDied {
        /// The dead process.
        pid: i32,
    },
    /// The barrier's internal lock failed (its memory is corrupted).
    #[error("barrier failed: {0}")]
    Os(#[from] io::Error),
}

/// Releasing a [`Semaphore`](crate::Semaphore) or
/// [`BoundedSemaphore`](crate::BoundedSemaphore) failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A bounded semaphore was released more times than acquired.
    #[error("semaphore released too many times (bound {bound})")]
    TooManyReleases {
        /// The bound (the initial value).
        bound: u32,
    },
    /// The count would exceed `u32::MAX`.
    #[error("semaphore count overflow")]
    Overflow,
}
