//! [`Condition`]: a condition variable shared between processes (Python's
//! `multiprocessing.Condition`), over a [`Lock`] or [`RLock`].
//!
//! # Shared state
//!
//! | field | meaning |
//! |---|---|
//! | `seq` | futex word; every `notify` that finds waiters adds one |
//! | `waiters` | threads between registering in `wait` and waking up |
//!
//! A waiter reads `seq` and increments `waiters` while holding the lock,
//! releases the lock, and sleeps while `seq` is unchanged. A notifier
//! holds the lock (its guard is the only way to notify), so it sees every
//! registered waiter; it bumps `seq` and wakes `n` sleepers. Because the
//! waiter read `seq` under the lock, a notify after the waiter released
//! the lock always changes `seq`, so no wake-up is lost. As with
//! `std::sync::Condvar` (built the same way), a wait can also end for a
//! waiter that a notify did not pick, so call it in a loop or use
//! [`ConditionGuard::wait_for`]. Nothing here needs a waiter to finish: a
//! process killed while waiting leaves at most a stale `waiters` count,
//! which costs a needless wake call.

use std::fmt;
use std::io;
use std::mem::offset_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::LockError;
use super::lock::Lock;
use super::rlock::RLock;
use crate::codec::SharedFd;
use crate::macros::from_variants;
use crate::segment::mutex::{Guard, MutexSegment, acquire_methods, map_result};
use crate::segment::{Kind, Segment};
use crate::sys;
use crate::sys::futex::Wake;
use crate::sys::robust_mutex::Locked;
use crate::wait::{self, Deadline, Spin, futex_wait};

#[repr(C)]
struct State {
    seq: AtomicU32,
    waiters: AtomicU32,
}

/// A [`State`] in place.
struct Words<'a> {
    seq: &'a AtomicU32,
    waiters: &'a AtomicU32,
}

/// The lock a [`Condition`] uses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ConditionLock {
    /// A plain lock.
    Lock(Lock),
    /// A recursive lock (the default, as in Python); a wait releases every
    /// level and restores them.
    RLock(RLock),
}

from_variants!(ConditionLock {
    Lock => Lock,
    RLock => RLock,
});

impl ConditionLock {
    fn segment(&self) -> &MutexSegment {
        match self {
            ConditionLock::Lock(l) => l.segment(),
            ConditionLock::RLock(l) => l.segment(),
        }
    }
}

/// A condition variable for processes and threads (Python's
/// `multiprocessing.Condition`).
///
/// [`acquire`](Self::acquire) its lock to get a [`ConditionGuard`]; wait
/// and notify through the guard (Python raises if you notify without the
/// lock; here you cannot).
///
/// ```
/// use multiproc::{Condition, Process, Value};
/// use std::time::Duration;
///
/// fn child((cond, ready): (Condition, Value<u32>)) {
///     let g = cond.acquire().unwrap();
///     ready.store(1);
///     g.notify_all();
/// }
///
/// let cond = Condition::new()?;
/// let ready = Value::new(0u32)?;
/// let mut g = cond.acquire().unwrap();
/// let mut p = Process::new(child, (cond.clone(), ready.clone()));
/// p.start()?;
/// let ok = g
///     .wait_for_timeout(|| ready.load() == 1, Duration::from_secs(30))
///     .unwrap();
/// assert!(ok);
/// drop(g);
/// p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: ConditionLock,
    seg: Arc<Segment>,
    spin: Arc<Spin>,
}

/// A [`Condition`]'s lock, held; wait and notify through it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    _guard: Guard<'a>,
    cond: &'a Condition,
}

impl Condition {
    /// A condition over a new [`RLock`] (Python's default).
    pub fn new() -> io::Result<Condition> {
        Self::with_lock(RLock::new()?)
    }

    /// A condition over `lock` (a [`Lock`] or an [`RLock`]).
    pub fn with_lock(lock: impl Into<ConditionLock>) -> io::Result<Condition> {
        let seg = Segment::create(Kind::Condition, 0, 0, std::mem::size_of::<State>())?;
        Ok(Condition {
            lock: lock.into(),
            seg: Arc::new(seg),
            spin: Arc::new(Spin::new(&wait::SYNC)),
        })
    }

    /// The lock the condition uses.
    pub fn lock(&self) -> &ConditionLock {
        &self.lock
    }

    /// The payload's `State` (checked at creation or attachment), each
    /// word through the segment's checked accessor.
    fn state(&self) -> Words<'_> {
        Words {
            seq: self.seg.payload_at(offset_of!(State, seq)),
            waiters: self.seg.payload_at(offset_of!(State, waiters)),
        }
    }

    fn guard(
        &self,
        timeout: Option<Duration>,
    ) -> Result<ConditionGuard<'_>, LockError<ConditionGuard<'_>>> {
        map_result(self.lock.segment().lock(timeout), |guard| ConditionGuard {
            _guard: guard,
            cond: self,
        })
    }

    acquire_methods!(guard -> ConditionGuard<'_>;
        /// Acquires the lock, waiting as long as it takes.
        acquire,
        /// Acquires the lock, waiting at most `timeout`.
        acquire_timeout,
        /// Acquires the lock if it is free.
        try_acquire,
    );
}

impl ConditionGuard<'_> {
    /// Releases the lock, sleeps until notified, and takes the lock back.
    /// May also return without a notify aimed at this waiter (see the
    /// module docs).
    ///
    /// [`LockError::OwnerDied`]: while this thread slept, a holder of the
    /// lock died; the lock is held again.
    pub fn wait(&mut self) -> Result<(), LockError<()>> {
        self.wait_until(Deadline::NEVER)
            .map(drop)
            .map_err(|e| e.map(drop))
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; `Ok(false)` if it
    /// timed out (the lock is held again either way).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool, LockError<bool>> {
        self.wait_until(Deadline::after(timeout))
    }

    /// Waits until `predicate()` holds (checked with the lock held, first
    /// before any wait).
    pub fn wait_for(&mut self, mut predicate: impl FnMut() -> bool) -> Result<(), LockError<()>> {
        let mut died = false;
        while !predicate() {
            match self.wait() {
                Ok(()) => {}
                Err(LockError::OwnerDied(())) => died = true,
                Err(e) => return Err(e),
            }
        }
        if died {
            Err(LockError::OwnerDied(()))
        } else {
            Ok(())
        }
    }

    /// Waits at most `timeout` for `predicate()` to hold; returns its last
    /// value.
    pub fn wait_for_timeout(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<bool, LockError<bool>> {
        let deadline = Deadline::after(timeout);
        let mut died = false;
        let mut ok = predicate();
        while !ok && !deadline.expired() {
            match self.wait_until(deadline) {
                Ok(_) => {}
                Err(LockError::OwnerDied(_)) => died = true,
                Err(e) => return Err(e.map(|_| false)),
            }
            ok = predicate();
        }
        if died {
            Err(LockError::OwnerDied(ok))
        } else {
            Ok(ok)
        }
    }

    fn wait_until(&mut self, deadline: Deadline) -> Result<bool, LockError<bool>> {
        let st = self.cond.state();
        let seq = st.seq.load(Ordering::SeqCst);
        st.waiters.fetch_add(1, Ordering::SeqCst);
        let raw = self.cond.lock.segment().raw();
        let depth = raw.release_all();
        let changed = || st.seq.load(Ordering::SeqCst) != seq;
        let notified = self.cond.spin.look_then_spin(changed)
            || loop {
                if futex_wait(st.seq, seq, deadline) == Wake::TimedOut {
                    break changed();
                }
                if changed() {
                    break true;
                }
            };
        st.waiters.fetch_sub(1, Ordering::SeqCst);
        match raw.reacquire(depth) {
            Ok(Locked::Clean) => Ok(notified),
            Ok(Locked::OwnerDied) => Err(LockError::OwnerDied(notified)),
            // The lock was released above and is free or another's, so
            // neither a timeout nor a self-deadlock can happen; only a
            // corrupted mutex fails. The guard then does not hold the lock,
            // and its drop's unlock is refused harmlessly.
            Err(e) => Err(crate::segment::mutex::failed(e)),
        }
    }

    /// Wakes up to `n` waiters.
    pub fn notify(&self, n: u32) {
        let st = self.cond.state();
        if n > 0 && st.waiters.load(Ordering::SeqCst) > 0 {
            st.seq.fetch_add(1, Ordering::SeqCst);
            sys::futex::wake(st.seq, n);
        }
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.notify(u32::MAX >> 1);
    }

    /// Releases the lock (the same as dropping the guard).
    pub fn release(self) {}
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .finish()
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConditionGuard")
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    lock: ConditionLock,
    state: SharedFd,
}

/// A `Condition` travels to another process as the descriptors of its
/// lock and of its own shared state.
impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            lock: self.lock.clone(),
            state: self.seg.fd().clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let seg = Segment::open(w.state, Kind::Condition, 0, |_| {
            Some(std::mem::size_of::<State>())
        })
        .map_err(serde::de::Error::custom)?;
        Ok(Condition {
            lock: w.lock,
            seg: Arc::new(seg),
            spin: Arc::new(Spin::new(&wait::SYNC)),
        })
    }
}
