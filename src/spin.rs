//! Spinning before sleeping. Waking a sleeper on another CPU costs tens of
//! microseconds on small VMs, while the other side often answers within a
//! few: polling for a short, adaptive budget first avoids most sleeps. With
//! one CPU a spin only delays the process we wait for, so there is none.
//! Used by the queues (polling shared memory) and by request/reply
//! connections (polling a socket).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

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

    /// Polls `ready` until it holds, for at most the budget and not past
    /// `deadline`, with `pause` spin-loop hints between polls; whether it
    /// came to hold. Returns `false` at once when spinning cannot help
    /// ([`spin_allowed`]).
    pub(crate) fn spin_until(
        &self,
        ready: impl FnMut() -> bool,
        deadline: Option<Instant>,
        pause: u32,
    ) -> bool {
        self.spin_until_if(spin_allowed(), ready, deadline, pause)
    }

    /// [`spin_until`](Self::spin_until) with the caller's own answer to
    /// whether spinning can help (for a wait that knows where its peer
    /// runs).
    pub(crate) fn spin_until_if(
        &self,
        allowed: bool,
        mut ready: impl FnMut() -> bool,
        deadline: Option<Instant>,
        pause: u32,
    ) -> bool {
        if !allowed {
            return false;
        }
        let start = Instant::now();
        let budget = self.budget();
        let mut i = 0u32;
        loop {
            for _ in 0..pause {
                std::hint::spin_loop();
            }
            if ready() {
                self.paid(true);
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
        self.paid(false);
        false
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

/// The one CPU this process may run on, or -1 when it may run on several.
/// Re-read at most every 100 ms, like [`spin_allowed`].
pub(crate) fn pinned_cpu() -> i32 {
    static CACHE: AtomicU64 = AtomicU64::new(0);
    // Layout: [cpu + 2: 32 bits][millis since START: 32 bits]; 0 = unknown.
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    let now_ms = start.elapsed().as_millis() as u64 & 0xFFFF_FFFF;
    let cached = CACHE.load(Ordering::Relaxed);
    if cached != 0 && now_ms.wrapping_sub(cached & 0xFFFF_FFFF) & 0xFFFF_FFFF < 100 {
        return (cached >> 32) as i32 - 2;
    }
    let cpu = sys::process::pinned_cpu().map_or(-1, |c| c as i32);
    CACHE.store((((cpu + 2) as u64) << 32) | now_ms, Ordering::Relaxed);
    cpu
}

/// CPUs online on the machine (whatever this process's affinity).
pub(crate) fn online_cpus() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(sys::process::cpu_count)
}
