//! Synchronization primitives shared between processes (and usable
//! between threads): [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Event`], [`Condition`] and [`Barrier`], with
//! Python's methods and a timeout form of every wait.
//!
//! Each lives in its own small shared memory segment (a sealed memfd), so
//! a handle is one descriptor: clones share it across threads, and passing
//! it to a child [`Process`](crate::Process) (either start method) or
//! inside a message hands the child the same primitive.
//!
//! The locks are robust: a holder that dies hands the lock to the next
//! acquirer with [`LockError::OwnerDied`] (see `segment/raw_mutex.rs` and
//! `sys/owner_lock.rs` for the mechanism and its lock word). A [`Barrier`] notices a dead party and
//! breaks. [`Semaphore`], [`Event`] and [`Condition`] have no owner to lose
//! and never wait without a way out (timeouts; a `Condition`'s lock is
//! robust).

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard, ConditionLock};
pub use error::{BarrierError, LockError, ReleaseError};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};
