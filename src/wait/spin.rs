//! Spinning before sleeping: one policy with named presets, and
//! [`may_spin`], the one answer to "can spinning help here?".
//!
//! Waking a sleeper on another CPU costs tens of microseconds on small
//! VMs, while the other side often answers within a few: a short spin
//! first avoids most sleeps. With one CPU a spin only delays the process
//! we wait for, so there is none.
//!
//! Every wait of the crate that spins has one shape, after parking_lot's
//! `SpinWait` and crossbeam-utils' `Backoff`: look at the condition, then
//! alternate a *pause* (spin-loop hints; at the end maybe yields of the
//! CPU) and a look, until the condition holds or the spin's limit is
//! reached; then sleep (the caller's futex or `poll`). A [`Policy`] says
//! how long the pauses are, where the limit lies and how it adapts; the
//! presets are the crate's waits, each with the numbers it was tuned with:
//!
//! | preset | pause | limit per wait | adapts | waits |
//! |---|---|---|---|---|
//! | [`SHARED`] | 16 hints | 20 µs | doubles when a spin pays, halves when it ends in a sleep (≥ 2 µs, above a cross-CPU round trip, so that a peer answering at once is still caught); full every 128th wait, and after waking the peer (`until_probing_if`) | a queue's data, space and tasks; the manager's mailbox ([`EventCount`](super::EventCount)) |
//! | [`SOCKET`] | none (each look is a `recv`) | 20 µs | as [`SHARED`] | the manager's request/reply connections |
//! | [`SYNC`] | 1 hint | 200 pauses | full again when a spin pays, halves when it ends in a sleep (≥ 8); full every 16th wait | `Event`, `Semaphore`, `Condition`, `Barrier` |
//! | [`QUEUE_LOCK`] | 32 hints | 200 pauses | fixed | a queue's locks |
//! | [`CSP_LOCK`] | 1 hint | 100 pauses | fixed | a CSP channel's lock |
//! | [`CSP`] | 1, 2, 4 … 64 hints, then 4 yields | 11 pauses | fixed | CSP parties waiting for a counterpart |
//!
//! A [`Backoff`] is one wait (its state lives on the stack); a [`Spin`] is
//! a process-local adaptive limit for one kind of wait, shared by the
//! waits of a handle, each made with a `Backoff`. The adaptation follows
//! the machine: on a quiet one the other side answers within the spin and
//! no one sleeps; on a loaded one the other side is often not running,
//! spinning only takes CPU time from it, and the limit shrinks to almost
//! nothing, with a full spin now and then to notice when that changes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Deadline;
use crate::sys;

/// How one kind of wait spins before it sleeps (see the module's table).
#[derive(Debug)]
pub(crate) struct Policy {
    /// Spin-loop hints in the first pause.
    pause: u32,
    /// Whether every pause doubles the one before (exponential backoff).
    grow: bool,
    /// The most one wait spins.
    limit: Limit,
    /// Yields of the CPU after the last spinning pause.
    yields: u32,
    /// How a [`Spin`]'s limit changes from wait to wait.
    adapt: Adapt,
}

/// Where a wait's spinning ends.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// After this many pauses.
    Pauses(u32),
    /// After this many nanoseconds (the clock is read every
    /// [`CLOCK_EVERY`] pauses), or at the wait's deadline.
    Nanos(u32),
}

/// How a [`Spin`]'s limit adapts.
#[derive(Clone, Copy, Debug)]
enum Adapt {
    /// It does not.
    Fixed,
    /// A spin that paid restores the full limit; one that ended in a sleep
    /// halves it, down to `min`; every `probe`th wait spins the full limit.
    Restore { min: u32, probe: u32 },
    /// A spin that paid doubles the limit, up to the full one; one that
    /// ended in a sleep halves it, down to `min`; every `probe`th wait
    /// spins the full limit.
    Double { min: u32, probe: u32 },
}

/// A timed spin reads the clock every this many pauses.
const CLOCK_EVERY: u32 = 8;

/// Waiting on shared memory that another process writes.
pub(crate) const SHARED: Policy = Policy {
    pause: 16,
    grow: false,
    limit: Limit::Nanos(20_000),
    yields: 0,
    adapt: Adapt::Double {
        min: 2_000,
        probe: 128,
    },
};

/// Waiting for a socket: every look is a non-blocking receive.
pub(crate) const SOCKET: Policy = Policy { pause: 0, ..SHARED };

/// The futex-based primitives of `sync` (the locks sleep at once:
/// `sync/raw_mutex.rs` says why).
pub(crate) const SYNC: Policy = Policy {
    pause: 1,
    grow: false,
    limit: Limit::Pauses(200),
    yields: 0,
    adapt: Adapt::Restore { min: 8, probe: 16 },
};

/// A queue's robust mutexes, before sleeping on them.
pub(crate) const QUEUE_LOCK: Policy = Policy {
    pause: 32,
    grow: false,
    limit: Limit::Pauses(200),
    yields: 0,
    adapt: Adapt::Fixed,
};

/// A CSP channel's robust mutex, before sleeping on it.
pub(crate) const CSP_LOCK: Policy = Policy {
    pause: 1,
    grow: false,
    limit: Limit::Pauses(100),
    yields: 0,
    adapt: Adapt::Fixed,
};

/// A CSP party waiting for its counterpart: exponentially growing spins,
/// then a few yields, which let the counterpart run on our CPU when there
/// are more runnable parties than CPUs (crossbeam-utils' `Backoff`).
pub(crate) const CSP: Policy = Policy {
    pause: 1,
    grow: true,
    limit: Limit::Pauses(7),
    yields: 4,
    adapt: Adapt::Fixed,
};

impl Policy {
    /// The full limit, in the limit's unit.
    const fn full(&self) -> u32 {
        match self.limit {
            Limit::Pauses(n) | Limit::Nanos(n) => n,
        }
    }
}

/// One wait's spinning: call [`snooze`](Self::snooze) between looks at the
/// condition; once it returns `false`, sleep.
///
/// ```ignore
/// let mut backoff = Backoff::new(&wait::CSP);
/// while !ready() {
///     if !backoff.snooze() {
///         sleep();
///     }
/// }
/// ```
#[derive(Debug)]
pub(crate) struct Backoff {
    /// Hints in the next pause.
    hints: u32,
    grow: bool,
    /// Spinning pauses made.
    pauses: u32,
    /// This wait's limit, in the policy's unit.
    limit: u32,
    timed: bool,
    yields: u32,
    /// When a timed spin started.
    start: Option<Instant>,
    deadline: Deadline,
}

impl Backoff {
    /// A wait by `policy`; it does not spin, nor yield, when [`may_spin`]
    /// says spinning cannot help.
    #[inline]
    pub fn new(policy: &Policy) -> Backoff {
        // A lightweight CSP process never spins: the party it waits for
        // most likely runs on its own thread once it parks.
        if may_spin() && !sys::futex::parks_tasks() {
            Backoff::with(policy, policy.full(), Deadline::NEVER)
        } else {
            Backoff::off()
        }
    }

    /// A wait by `policy` for a party that last ran where `peer` says: the
    /// CPU it is pinned to plus one, as published by a side that shares
    /// memory with this one, or 0 (not known yet, which falls back to
    /// [`Backoff::new`]). A process pinned to one CPU still spins for a
    /// peer pinned to another: the cross-CPU wake-up it saves is the
    /// costly one.
    #[inline]
    pub fn beside(policy: &Policy, peer: u32) -> Backoff {
        let allowed = match peer {
            0 => may_spin(),
            cpu => may_spin_beside(cpu as i32 - 1),
        };
        if allowed && !sys::futex::parks_tasks() {
            Backoff::with(policy, policy.full(), Deadline::NEVER)
        } else {
            Backoff::off()
        }
    }

    /// A wait that does not spin: sleep at once.
    #[inline]
    pub fn off() -> Backoff {
        Backoff {
            hints: 0,
            grow: false,
            pauses: 0,
            limit: 0,
            timed: false,
            yields: 0,
            start: None,
            deadline: Deadline::NEVER,
        }
    }

    /// A wait by `policy` whatever [`may_spin`] says (its yields let
    /// another party run on this CPU).
    #[inline]
    pub fn always(policy: &Policy) -> Backoff {
        Backoff::with(policy, policy.full(), Deadline::NEVER)
    }

    #[inline]
    fn with(policy: &Policy, limit: u32, deadline: Deadline) -> Backoff {
        let timed = matches!(policy.limit, Limit::Nanos(_));
        Backoff {
            hints: policy.pause,
            grow: policy.grow,
            pauses: 0,
            limit,
            timed,
            yields: policy.yields,
            start: timed.then(Instant::now),
            deadline,
        }
    }

    fn no_yields(mut self) -> Backoff {
        self.yields = 0;
        self
    }

    /// Pauses before the next look; `false` once the limit is reached:
    /// time to sleep.
    #[inline]
    pub fn snooze(&mut self) -> bool {
        if self.timed {
            if self.pauses > 0 && self.pauses.is_multiple_of(CLOCK_EVERY) && self.time_is_up() {
                return false;
            }
        } else if self.pauses >= self.limit {
            if self.yields == 0 {
                return false;
            }
            self.yields -= 1;
            std::thread::yield_now();
            return true;
        }
        for _ in 0..self.hints {
            std::hint::spin_loop();
        }
        if self.grow {
            self.hints *= 2;
        }
        self.pauses += 1;
        true
    }

    #[cold]
    fn time_is_up(&self) -> bool {
        let now = Instant::now();
        let start = self.start.unwrap_or(now);
        now - start >= Duration::from_nanos(u64::from(self.limit))
            || self.deadline.instant().is_some_and(|d| now >= d)
    }
}

/// A process-local adaptive spin limit for one kind of wait (see the
/// module docs), one per handle, shared by its clones. The counters are a
/// heuristic: relaxed, racy updates are fine.
#[derive(Debug)]
pub(crate) struct Spin {
    policy: &'static Policy,
    limit: AtomicU32,
    waits: AtomicU32,
}

impl Spin {
    /// A spin by `policy`, starting with its full limit.
    pub const fn new(policy: &'static Policy) -> Spin {
        Spin {
            policy,
            limit: AtomicU32::new(policy.full()),
            waits: AtomicU32::new(0),
        }
    }

    /// Pauses and looks at `ready()` in turn, until it holds (`true`), the
    /// limit is reached or `deadline` passes (`false`). Returns `false` at
    /// once, without looking, when spinning cannot help ([`may_spin`]);
    /// the caller looks before calling.
    #[inline]
    pub fn until(&self, ready: impl FnMut() -> bool, deadline: Deadline) -> bool {
        self.until_if(may_spin(), ready, deadline)
    }

    /// [`until`](Self::until) with the caller's own answer to whether
    /// spinning can help (a wait that knows where its peer runs: see
    /// [`may_spin_beside`]).
    #[inline]
    pub fn until_if(&self, allowed: bool, ready: impl FnMut() -> bool, deadline: Deadline) -> bool {
        self.until_probing_if(allowed, false, ready, deadline)
    }

    /// [`until_if`](Self::until_if), spinning the full limit this time when
    /// `probe` is set, whatever the limit has shrunk to: for a wait whose
    /// peer was just woken from its sleep (it will answer after a wake-up,
    /// longer than an answer from a running peer). Without it, two sides
    /// that each found the other asleep keep sleeping: each one's wait
    /// includes the other's wake-up, fails, and shrinks its limit further.
    #[inline]
    pub fn until_probing_if(
        &self,
        allowed: bool,
        probe_now: bool,
        mut ready: impl FnMut() -> bool,
        deadline: Deadline,
    ) -> bool {
        if !allowed {
            return false;
        }
        let limit = self.limit.load(Ordering::Relaxed);
        let this_time = match self.policy.adapt {
            Adapt::Fixed => limit,
            Adapt::Restore { probe, .. } | Adapt::Double { probe, .. } => {
                let n = self.waits.fetch_add(1, Ordering::Relaxed);
                if probe_now || n.is_multiple_of(probe) {
                    self.policy.full()
                } else {
                    limit
                }
            }
        };
        let mut backoff = Backoff::with(self.policy, this_time, deadline).no_yields();
        while backoff.snooze() {
            if ready() {
                self.paid(true);
                return true;
            }
        }
        self.paid(false);
        false
    }

    /// Looks at `ready()` once, then spins [`until`](Self::until) it
    /// holds, with no deadline: whether it came to hold.
    #[inline]
    pub fn look_then_spin(&self, mut ready: impl FnMut() -> bool) -> bool {
        ready() || self.until(ready, Deadline::NEVER)
    }

    fn paid(&self, yes: bool) {
        let full = self.policy.full();
        let next = match (self.policy.adapt, yes) {
            (Adapt::Fixed, _) => return,
            (Adapt::Restore { .. }, true) => full,
            (Adapt::Double { .. }, true) => {
                let l = self.limit.load(Ordering::Relaxed);
                l.saturating_mul(2).min(full)
            }
            (Adapt::Restore { min, .. } | Adapt::Double { min, .. }, false) => {
                (self.limit.load(Ordering::Relaxed) / 2).max(min)
            }
        };
        self.limit.store(next, Ordering::Relaxed);
    }
}

/// Whether spinning can help: not when this process may run on only one
/// CPU (its affinity mask), where the other side cannot make progress
/// while we spin. Every spinning wait of the crate asks here. The mask is
/// re-read at most every [`REREAD_NS`] nanoseconds (of the coarse
/// monotonic clock, a few nanoseconds to read), so pinning a running
/// process is noticed.
#[inline]
pub(crate) fn may_spin() -> bool {
    // [allowed + 1: 2 bits][coarse nanoseconds: 62 bits]; 0: not read yet.
    static CACHE: AtomicU64 = AtomicU64::new(0);
    reread::<62>(&CACHE, || u64::from(sys::process::affinity_cpus() > 1)) == 1
}

/// The one CPU this process may run on, or -1 when it may run on several
/// (re-read like [`may_spin`]'s mask). A wait that shares memory with a
/// peer publishes it there, for [`may_spin_beside`].
pub(crate) fn pinned_cpu() -> i32 {
    // [cpu + 2: 16 bits][coarse nanoseconds: 48 bits, about 3 days
    // before wrapping, which only costs one early re-read]; 0: not read yet.
    static CACHE: AtomicU64 = AtomicU64::new(0);
    let cpu_plus_1 = reread::<48>(&CACHE, || {
        sys::process::pinned_cpu().map_or(0, |c| c.min(0xFFFD) as u64 + 1)
    });
    cpu_plus_1 as i32 - 1
}

/// A small value `read()` cached in `cache` for [`REREAD_NS`] of the
/// coarse monotonic clock: the word holds `[value + 1][nanoseconds:
/// NS_BITS bits]`, 0 while nothing was read. Racing callers may both read;
/// either value is current.
#[inline]
fn reread<const NS_BITS: u32>(cache: &AtomicU64, read: impl FnOnce() -> u64) -> u64 {
    let ns: u64 = (1 << NS_BITS) - 1;
    let now = sys::waitv::monotonic_coarse_ns() & ns;
    let cached = cache.load(Ordering::Relaxed);
    if cached != 0 && now.wrapping_sub(cached & ns) & ns < REREAD_NS {
        return (cached >> NS_BITS) - 1;
    }
    let value = read();
    cache.store(((value + 1) << NS_BITS) | now, Ordering::Relaxed);
    value
}

/// Whether spinning for a peer that published `peer_cpu` (see
/// [`pinned_cpu`]) can help: the machine has more than one CPU online and
/// the two are not pinned to the same one. Unlike [`may_spin`], a process
/// pinned to one CPU may spin for a peer running on another, which is
/// where spinning pays most (a cross-CPU wake-up costs tens of
/// microseconds on small VMs).
pub(crate) fn may_spin_beside(peer_cpu: i32) -> bool {
    static ONLINE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if *ONLINE.get_or_init(sys::process::cpu_count) < 2 {
        return false;
    }
    let me = pinned_cpu();
    me < 0 || me != peer_cpu
}

/// How long [`may_spin`] and [`pinned_cpu`] trust their last reading of
/// the affinity mask: about one tick of the coarse clock. A process that
/// pins itself just after starting (as a worker placed on its own CPU
/// does) must be seen pinned at once, or it publishes its old CPU to its
/// peers and both sides stop spinning; a `sched_getaffinity` per
/// millisecond of waiting costs nothing measurable.
const REREAD_NS: u64 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the pauses and yields a policy allows in one wait.
    fn pauses(policy: &Policy) -> u32 {
        let mut b = Backoff::always(policy);
        let mut n = 0;
        while b.snooze() {
            n += 1;
        }
        n
    }

    #[test]
    fn fixed_presets_keep_their_counts() {
        assert_eq!(pauses(&QUEUE_LOCK), 200);
        assert_eq!(pauses(&CSP_LOCK), 100);
        // 1, 2, 4 … 64 hints, then 4 yields.
        assert_eq!(pauses(&CSP), 11);
        let mut b = Backoff::always(&CSP);
        for _ in 0..7 {
            b.snooze();
        }
        assert_eq!(b.hints, 128);
    }

    #[test]
    fn adaptive_limit_halves_and_recovers() {
        let s = Spin::new(&SYNC);
        if !may_spin() {
            assert!(!s.until(|| true, Deadline::NEVER));
            return;
        }
        // The first wait probes with the full limit and fails: halved.
        assert!(!s.until(|| false, Deadline::NEVER));
        assert_eq!(s.limit.load(Ordering::Relaxed), 100);
        assert!(!s.until(|| false, Deadline::NEVER));
        assert_eq!(s.limit.load(Ordering::Relaxed), 50);
        for _ in 0..10 {
            s.until(|| false, Deadline::NEVER);
        }
        assert_eq!(s.limit.load(Ordering::Relaxed), 8);
        // A spin that pays restores the full limit.
        assert!(s.until(|| true, Deadline::NEVER));
        assert_eq!(s.limit.load(Ordering::Relaxed), 200);
    }

    #[test]
    fn timed_spin_doubles_and_respects_the_deadline() {
        let s = Spin::new(&SHARED);
        if !may_spin() {
            return;
        }
        assert!(!s.until(|| false, Deadline::NEVER));
        assert_eq!(s.limit.load(Ordering::Relaxed), 10_000);
        assert!(s.until(|| true, Deadline::NEVER));
        assert_eq!(s.limit.load(Ordering::Relaxed), 20_000);
        // A passed deadline ends the spin at the first clock reading.
        let mut looks = 0;
        assert!(!s.until(
            || {
                looks += 1;
                false
            },
            Deadline::after(Duration::ZERO)
        ));
        assert_eq!(looks, CLOCK_EVERY);
    }

    #[test]
    fn a_probing_wait_spins_the_full_limit_once_the_limit_has_shrunk() {
        let s = Spin::new(&SHARED);
        // Failed waits halve the limit down to its floor (the first wait
        // of a Spin is a probe at the full limit).
        for _ in 0..8 {
            s.until_probing_if(true, false, || false, Deadline::NEVER);
        }
        assert_eq!(s.limit.load(Ordering::Relaxed), 2_000);
        let spun = |probe: bool| {
            let t0 = Instant::now();
            assert!(!s.until_probing_if(true, probe, || false, Deadline::NEVER));
            t0.elapsed()
        };
        // A probing wait spins the full 20 µs (at least; the machine may be
        // busy), and its failure leaves the floor as it was.
        let probing = spun(true);
        assert!(probing >= Duration::from_micros(20), "{probing:?}");
        assert_eq!(s.limit.load(Ordering::Relaxed), 2_000);
    }

    #[test]
    fn may_spin_follows_the_affinity_mask() {
        assert_eq!(may_spin(), sys::process::affinity_cpus() > 1);
    }
}
