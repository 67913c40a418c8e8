//! How `Event`, `Semaphore`, `Condition` and `Barrier` wait: spin briefly
//! (only when another CPU can make progress meanwhile), then sleep on a
//! futex, with deadlines. (The locks sleep at once; `raw_mutex.rs` says
//! why.)
//!
//! Waking a sleeper on another CPU costs tens of microseconds on small
//! VMs, while the other side often answers within a few: a short spin
//! avoids most sleeps. With one CPU a spin only delays the process we wait
//! for, so there is none.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys;
use crate::sys::futex::Wake;
pub(crate) use crate::wait::Deadline;

/// The most spin iterations before sleeping (each a `spin_loop` hint,
/// some tens of nanoseconds): a few microseconds in all.
const MAX_SPINS: u32 = 200;
/// The fewest, once spinning keeps failing.
const MIN_SPINS: u32 = 8;
/// Every this many waits spin the full budget, to notice that spinning
/// pays again.
const PROBE_EVERY: u32 = 16;

/// Whether spinning can help: this process may run on more than one CPU
/// (its affinity mask, read once per process, at the first contended
/// wait).
pub(crate) fn may_spin() -> bool {
    static MULTI: OnceLock<bool> = OnceLock::new();
    *MULTI.get_or_init(|| sys::process::usable_cpus() > 1)
}

/// An adaptive spin budget, process-local, one per handle (shared by its
/// clones). A spin that ends with the condition met restores the full
/// budget; one that ends in a sleep halves it. On a quiet machine the
/// other side answers within the spin and no one sleeps; on a loaded one
/// the other side is often not running, spinning only takes CPU time from
/// it, and the budget shrinks to almost nothing (with a full probe every
/// [`PROBE_EVERY`] waits).
#[derive(Debug)]
pub(crate) struct Spinner {
    budget: AtomicU32,
    waits: AtomicU32,
}

impl Spinner {
    pub fn new() -> Spinner {
        Spinner {
            budget: AtomicU32::new(MAX_SPINS),
            waits: AtomicU32::new(0),
        }
    }

    /// Spins until `done()` holds or the budget is spent; returns the last
    /// `done()`. The counters are a heuristic: relaxed, racy updates are
    /// fine.
    pub fn spin_until(&self, mut done: impl FnMut() -> bool) -> bool {
        if !may_spin() {
            return done();
        }
        let budget = self.budget.load(Ordering::Relaxed);
        let n = self.waits.fetch_add(1, Ordering::Relaxed);
        let this_time = if n.is_multiple_of(PROBE_EVERY) {
            MAX_SPINS
        } else {
            budget
        };
        for _ in 0..this_time {
            if done() {
                self.budget.store(MAX_SPINS, Ordering::Relaxed);
                return true;
            }
            std::hint::spin_loop();
        }
        if done() {
            self.budget.store(MAX_SPINS, Ordering::Relaxed);
            return true;
        }
        self.budget
            .store((budget / 2).max(MIN_SPINS), Ordering::Relaxed);
        false
    }
}

/// Sleeps while `word == expected`, until `deadline`.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> Wake {
    match deadline.remaining() {
        Some(Duration::ZERO) => Wake::TimedOut,
        left => sys::futex::wait(word, expected, left),
    }
}
