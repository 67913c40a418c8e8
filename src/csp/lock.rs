//! The lock that guards one channel's state: a robust, process-shared
//! pthread mutex (`sys::robust_mutex`) in the channel's memory, taken after
//! a short spin on its futex word. When its holder dies (any thread ending,
//! `SIGKILL` of its process included) the kernel marks the mutex owner-dead
//! and the next acquirer is told [`Locked::OwnerDied`]: it repairs the
//! channel (see the crash table in `chan.rs`) before marking the mutex
//! consistent.
//!
//! Poison does not go through the lock: it is a flag in the channel header,
//! set lock-free; a holder keeps the lock for a bounded, short time (it
//! never sleeps holding it), so a waiter on the lock soon gets it and sees
//! the flag.
//!
//! The futex word is glibc's (see `sys/robust_mutex.rs` for its table); this
//! module only reads it as a spinning hint.

use crate::sys::robust_mutex::{LockFailed, Locked, RobustMutex};
use crate::wait::Backoff;

/// Acquires `m`, spinning on its word by `backoff` (made by the
/// [`CSP_LOCK`](crate::wait::CSP_LOCK) preset, or [`Backoff::off`])
/// before sleeping. `None` when the mutex is unusable (it cannot be,
/// unless the memory was scribbled on: every owner-dead acquirer marks it
/// consistent).
pub(crate) fn lock(m: &RobustMutex, mut backoff: Backoff) -> Option<Locked> {
    match m.try_lock() {
        Ok(l) => return Some(l),
        Err(LockFailed::Timeout) => {}
        Err(_) => return None,
    }
    while backoff.snooze() {
        if m.word() == 0 {
            match m.try_lock() {
                Ok(l) => return Some(l),
                Err(LockFailed::Timeout) => {}
                Err(_) => return None,
            }
        }
    }
    m.lock(None).ok()
}

/// Takes `m` if nobody holds it, without waiting.
pub(crate) fn try_lock(m: &RobustMutex) -> Option<Locked> {
    m.try_lock().ok()
}

/// Whether the thread that took a record's mutex (see `chan.rs`) is gone:
/// `true` when it ended holding it (the kernel marked it owner-dead) or
/// nobody holds it at all. Leaves the mutex free. `false` while its owner
/// (in any process, or this very thread) still holds it.
pub(crate) fn holder_gone(m: &RobustMutex) -> bool {
    match m.try_lock() {
        Ok(l) => {
            if l == Locked::OwnerDied {
                let _ = m.mark_consistent();
            }
            let _ = m.unlock();
            true
        }
        Err(_) => false,
    }
}
