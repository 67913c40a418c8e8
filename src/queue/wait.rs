//! Waiting for a condition on shared memory: spin briefly (for an adaptive
//! budget of at most 20 µs, and not at all when this process may run on
//! only one CPU), then sleep on a futex, with a waiter flag so that the side that makes the condition
//! true skips the wake-up system call when nobody sleeps (an "event
//! count", as in Dmitry Vyukov's eventcount and folly's `EventCount`).
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

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

/// Longest single sleep before a sleeper re-checks its condition on its
/// own (the bound on the delay a notifier killed mid-notify can cause).
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// The most a waiter spins before sleeping.
const MAX_SPIN_NS: u32 = 20_000;

/// The least spin budget.
const MIN_SPIN_NS: u32 = 500;

/// A process-local spin budget for one kind of wait. A wait that ends
/// while spinning shows spinning pays (the other side is running on
/// another CPU): the budget doubles, up to its maximum. A wait that has to
/// sleep halves it, so that on a loaded machine, where the other side
/// needs the CPU we would spin on, spinning fades out; every 128th wait
/// spins the full budget again to notice when that changes.
pub(crate) struct Spin {
    budget: AtomicU32,
    waits: AtomicU32,
}

impl Spin {
    pub(crate) const fn new() -> Spin {
        Spin {
            budget: AtomicU32::new(MAX_SPIN_NS),
            waits: AtomicU32::new(0),
        }
    }

    fn budget(&self) -> Duration {
        let n = self.waits.fetch_add(1, Ordering::Relaxed);
        let b = if n.is_multiple_of(128) {
            MAX_SPIN_NS
        } else {
            self.budget.load(Ordering::Relaxed)
        };
        Duration::from_nanos(u64::from(b))
    }

    fn paid(&self, yes: bool) {
        let b = self.budget.load(Ordering::Relaxed);
        let next = if yes {
            b.saturating_mul(2).min(MAX_SPIN_NS)
        } else {
            (b / 2).max(MIN_SPIN_NS)
        };
        self.budget.store(next, Ordering::Relaxed);
    }
}

/// A wake-up channel in shared memory. All-zero bytes are a valid, idle
/// event.
#[repr(C, align(64))]
pub(crate) struct Event {
    waiters: AtomicU32,
    seq: AtomicU32,
}

impl Event {
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
        deadline: Option<Instant>,
        spin: &Spin,
    ) -> bool {
        if ready() {
            return true;
        }
        if spin_allowed() {
            let start = Instant::now();
            let budget = spin.budget();
            let mut i = 0u32;
            loop {
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
                if ready() {
                    spin.paid(true);
                    return true;
                }
                i += 1;
                if i.is_multiple_of(8) {
                    let now = Instant::now();
                    if now - start >= budget || deadline.is_some_and(|d| now >= d) {
                        break;
                    }
                }
            }
            spin.paid(false);
        }
        self.sleep_until(ready, deadline)
    }

    fn sleep_until(&self, mut ready: impl FnMut() -> bool, deadline: Option<Instant>) -> bool {
        loop {
            // Acquire: pairs with the notifier's Release bump.
            let seen = self.seq.load(Ordering::Acquire);
            // SeqCst: the store half of Dekker's pattern (module docs).
            self.waiters.store(1, Ordering::SeqCst);
            if ready() {
                return true;
            }
            let slice = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    (d - now).min(SLICE)
                }
                None => SLICE,
            };
            sys::futex::wait(&self.seq, seen, Some(slice));
            if ready() {
                return true;
            }
        }
    }
}

/// Whether spinning can help: not when this process may only run on one
/// CPU (the other side cannot make progress while we spin). The affinity
/// mask is re-read at most every 100 ms, so pinning a running process is
/// noticed.
pub(crate) fn spin_allowed() -> bool {
    static CACHE: AtomicU64 = AtomicU64::new(0);
    // Layout: [allowed+1: 2 bits][millis since START: 62 bits]; 0 = unknown.
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    let now_ms = start.elapsed().as_millis() as u64 & ((1 << 62) - 1);
    let cached = CACHE.load(Ordering::Relaxed);
    if cached != 0 {
        let at = cached & ((1 << 62) - 1);
        if now_ms.wrapping_sub(at) < 100 {
            return (cached >> 62) == 2;
        }
    }
    let allowed = sys::process::affinity_cpus() > 1;
    let tag: u64 = if allowed { 2 } else { 1 };
    CACHE.store((tag << 62) | now_ms, Ordering::Relaxed);
    allowed
}
