//! [`EventCount`]: waiting for a condition on shared memory: spin briefly
//! (see [`Spin`]), then sleep on a futex, with a waiter flag so that the
//! side that makes the condition true skips the wake-up system call when
//! nobody sleeps (an "event count", as in Dmitry Vyukov's eventcount and
//! folly's `EventCount`). Used by the queues' ring and the manager's
//! mailbox.
//!
//! # Protocol
//!
//! | word | written by | values |
//! |---|---|---|
//! | `waiters` | a waiter, before it sleeps (`1`); the notifier (`0`) | `1`: someone may sleep on `seq` |
//! | `seq` | the notifier, before `FUTEX_WAKE` | bumped once per wake-up round |
//!
//! Waiter: `s = seq`; `waiters = 1` (SeqCst); check the condition with a
//! SeqCst load; sleep on `seq` while it still holds `s`.
//! Notifier: make the condition true with a SeqCst store; load `waiters`
//! (SeqCst); if it is `1`, swap it to `0`, bump `seq` and wake everyone.
//!
//! The two SeqCst store/load pairs form Dekker's pattern: either the
//! waiter's check sees the new condition, or the notifier sees the flag.
//! If the notifier bumps `seq` after the waiter read it, the futex call
//! returns at once instead of sleeping. Waking *all* sleepers (they re-check
//! and re-set the flag) keeps the flag honest: a flag cleared by one
//! notifier never strands a second sleeper, and a waiter that died leaves at
//! most one needless wake-up behind. Sleepers also wake every
//! [`SLICE`] to re-check, which bounds the delay when a notifier is killed
//! between its store and its wake-up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{Deadline, Spin};
use crate::sys;

/// Longest single sleep before a sleeper re-checks on its own: its
/// condition (the bound on the delay a notifier killed mid-notify can
/// cause), and whatever no wake-up announces (a peer's socket hung up, a
/// client gone, a stop flag).
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// A wake-up channel in shared memory. All-zero bytes are a valid, idle
/// event.
#[repr(C, align(64))]
pub(crate) struct EventCount {
    waiters: AtomicU32,
    seq: AtomicU32,
}

impl EventCount {
    /// Wakes the sleepers, if any. Call right after the SeqCst store that
    /// made their condition true.
    pub(crate) fn notify(&self) {
        // SeqCst pairs with the waiter's SeqCst flag store (see the module
        // docs): we see its flag or it sees our condition store.
        if self.waiters.load(Ordering::SeqCst) != 0 && self.waiters.swap(0, Ordering::SeqCst) != 0 {
            // Release: a sleeper that sees the new `seq` also sees the
            // condition store before it (it re-checks anyway).
            self.seq.fetch_add(1, Ordering::Release);
            sys::futex::wake_all(&self.seq);
        }
    }

    /// Waits until `ready()` is true or `deadline` passes; returns the last
    /// `ready()`. `ready` must read the condition with SeqCst loads.
    pub(crate) fn wait_until(
        &self,
        mut ready: impl FnMut() -> bool,
        deadline: Deadline,
        spin: &Spin,
    ) -> bool {
        if ready() {
            return true;
        }
        if spin.until(&mut ready, deadline) {
            return true;
        }
        self.sleep_until(ready, deadline)
    }

    /// Like [`wait_until`](Self::wait_until) without the spinning: for a
    /// caller that spun already.
    pub(crate) fn sleep_until(&self, mut ready: impl FnMut() -> bool, deadline: Deadline) -> bool {
        loop {
            // Acquire: pairs with the notifier's Release bump.
            let seen = self.seq.load(Ordering::Acquire);
            // SeqCst: the store half of Dekker's pattern (module docs).
            self.waiters.store(1, Ordering::SeqCst);
            if ready() {
                return true;
            }
            let slice = match deadline.remaining() {
                Some(Duration::ZERO) => return false,
                Some(left) => left.min(SLICE),
                None => SLICE,
            };
            sys::futex::wait(&self.seq, seen, Some(slice));
            if ready() {
                return true;
            }
        }
    }
}
