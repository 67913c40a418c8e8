//! [`Barrier`]: a meeting point for a fixed number of parties (Python's
//! `multiprocessing.Barrier`), broken, not hung, when a party dies.
//!
//! # Shared state
//!
//! A robust lock (see `raw_mutex`) guards the transitions; waiters sleep
//! on `seq` without the lock and read the rest with atomics.
//!
//! | field | meaning |
//! |---|---|
//! | `seq` | futex word, bumped after every transition (pass, break, reset) |
//! | `count` | parties arrived in the current generation |
//! | `generation` | the current generation; the last arrival moves it on |
//! | `outcomes` | bit `g % 64`: generation `g` ended by a reset (1) or passed (0) |
//! | `broken`, `broken_pid` | why the barrier is broken (0: it is not), and the dead party |
//! | `slots[]` | holders: `pid << 42 \| start time`, one per process-local handle, 0 when free |
//!
//! A waiter in generation `g` is done when `generation != g` (its outcome is bit
//! `g` of `outcomes`, written before `generation` moves on) or when `broken` is
//! set while `generation == g`.
//!
//! # Dead parties
//!
//! Every process that creates or receives a `Barrier` registers itself in
//! `slots` (pid and start time, so a recycled pid is not mistaken for the
//! original) and deregisters when its last handle to that copy drops.
//! Waiters sleep in slices of [`SLICE`]; after each they check that every
//! registered process still runs. A party that arrives while others are
//! counted checks the same before counting itself in (else it could
//! complete the barrier with a dead party), and so do
//! [`broken`](Barrier::broken) and [`n_waiting`](Barrier::n_waiting). A
//! registered process that no longer runs (killed, crashed, exited without
//! dropping its handle) breaks the barrier with
//! [`BarrierError::PartyDied`], and its slot is freed so that a
//! [`reset`](Barrier::reset) makes the barrier usable again. Threads of
//! one process count as that process: a thread that dies in a live process
//! is not detected (use a timeout).

#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{BarrierError, LockError};
use crate::segment::Kind;
use crate::segment::mutex::{Guard, MutexSegment};
use crate::sys;
use crate::sys::liveness::{self, ProcessId};
use crate::wait::{self, Deadline, Spin, futex_wait};

/// How long a waiter sleeps between checks for dead parties.
pub const SLICE: Duration = Duration::from_millis(20);

const INTACT: u32 = 0;
const ABORTED: u32 = 1;
const TIMED_OUT: u32 = 2;
const DIED: u32 = 3;

const START_BITS: u32 = 42;
const START_MASK: u64 = (1 << START_BITS) - 1;

#[repr(C)]
struct State {
    seq: AtomicU32,
    count: AtomicU32,
    generation: AtomicU32,
    broken: AtomicU32,
    broken_pid: AtomicI32,
    _pad: u32,
    outcomes: AtomicU64,
}

fn slots_for(parties: u64) -> usize {
    (parties as usize).saturating_mul(2).clamp(64, 4096)
}

fn data_bytes(parties: u64) -> Option<usize> {
    if parties == 0 || parties > u32::MAX as u64 {
        return None;
    }
    Some(std::mem::size_of::<State>() + slots_for(parties) * 8)
}

fn pack(id: ProcessId) -> u64 {
    ((id.pid as u64) << START_BITS) | (id.start & START_MASK)
}

fn unpack(v: u64) -> ProcessId {
    ProcessId {
        pid: (v >> START_BITS) as i32,
        start: v & START_MASK,
    }
}

fn running(id: ProcessId) -> bool {
    match liveness::start_time(id.pid) {
        None => false,
        // A start time of 0 means it could not be read at registration:
        // fall back to the pid alone.
        Some(s) => id.start == 0 || s & START_MASK == id.start,
    }
}

struct Inner {
    seg: MutexSegment,
    spin: Spin,
    /// This copy's registration: slot index and the word written there.
    slot: Option<(usize, u64)>,
}

/// A barrier for `parties` processes or threads (Python's
/// `multiprocessing.Barrier`): each [`wait`](Self::wait) blocks until
/// `parties` waits are in progress, then all return.
///
/// A party that dies breaks the barrier for the others
/// ([`BarrierError::PartyDied`]) instead of leaving them waiting forever
/// (see the module docs for how). Python's `action` argument has no
/// counterpart: the party whose `wait` returns `parties - 1` (the last to
/// arrive) can do the work.
///
/// ```
/// use multiproc::{Barrier, Process};
///
/// fn child(b: Barrier) -> usize {
///     b.wait().unwrap()
/// }
///
/// let b = Barrier::new(2)?;
/// let mut p = Process::new(child, b.clone());
/// p.start()?;
/// let mine = b.wait_timeout(std::time::Duration::from_secs(30))?;
/// let theirs = p.join()?;
/// assert_eq!(mine + theirs, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    inner: Arc<Inner>,
}

impl Barrier {
    /// A barrier for `parties` parties (at least 1).
    pub fn new(parties: u32) -> io::Result<Barrier> {
        let bytes = data_bytes(parties as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a barrier needs at least one party",
            )
        })?;
        let seg = MutexSegment::create(Kind::Barrier, 0, parties as u64, bytes, 8, false)?;
        Ok(Self::register(seg))
    }

    fn register(seg: MutexSegment) -> Barrier {
        let mut b = Inner {
            seg,
            spin: Spin::new(&wait::SYNC),
            slot: None,
        };
        let me = pack(liveness::me());
        b.slot = (0..b.slots())
            .find(|&i| {
                b.slot_word(i)
                    .compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .map(|i| (i, me));
        Barrier { inner: Arc::new(b) }
    }

    /// How many parties must wait for the barrier to pass.
    pub fn parties(&self) -> u32 {
        self.inner.seg.segment().len() as u32
    }

    /// How many parties wait right now (0 when broken, which a dead
    /// party makes it: see the module docs).
    pub fn n_waiting(&self) -> u32 {
        self.inner.notice_death();
        let st = self.inner.state();
        if st.broken.load(Ordering::SeqCst) != INTACT {
            0
        } else {
            st.count.load(Ordering::SeqCst)
        }
    }

    /// Whether the barrier is broken (by [`abort`](Self::abort), a
    /// timeout, or a registered process that died while others wait).
    pub fn broken(&self) -> bool {
        self.inner.notice_death();
        self.inner.state().broken.load(Ordering::SeqCst) != INTACT
    }

    /// Waits until all parties wait; returns this party's arrival index
    /// (`0..parties`, the last arrival gets `parties - 1`).
    pub fn wait(&self) -> Result<usize, BarrierError> {
        self.inner.wait_until(Deadline::NEVER)
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; a timeout breaks
    /// the barrier for everyone ([`BarrierError::Timeout`] here,
    /// [`BarrierError::Broken`] for the others), as in Python.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, BarrierError> {
        self.inner.wait_until(Deadline::after(timeout))
    }

    /// Breaks the barrier: current and future waits fail with
    /// [`BarrierError::Broken`] until [`reset`](Self::reset).
    pub fn abort(&self) -> Result<(), BarrierError> {
        let _g = self.inner.lock()?;
        self.inner.break_locked(ABORTED, 0);
        Ok(())
    }

    /// Returns the barrier to its initial, empty, unbroken state; parties
    /// waiting now fail with [`BarrierError::Broken`].
    pub fn reset(&self) -> Result<(), BarrierError> {
        let st = self.inner.state();
        {
            let _g = self.inner.lock()?;
            let g = st.generation.load(Ordering::Relaxed);
            if st.count.load(Ordering::Relaxed) > 0 {
                st.outcomes.fetch_or(1 << (g % 64), Ordering::SeqCst);
                st.count.store(0, Ordering::Relaxed);
                st.generation.store(g.wrapping_add(1), Ordering::SeqCst);
            }
            st.broken.store(INTACT, Ordering::SeqCst);
            st.broken_pid.store(0, Ordering::SeqCst);
            st.seq.fetch_add(1, Ordering::SeqCst);
        }
        sys::futex::wake_all(&st.seq);
        Ok(())
    }
}

impl Inner {
    fn state(&self) -> &State {
        // SAFETY: the data area holds a `State` followed by the slots
        // (checked at creation or attachment), 64-byte aligned, all atomics,
        // mapped as long as `self.seg` lives.
        unsafe { &*self.seg.data().cast::<State>() }
    }

    fn slots(&self) -> usize {
        slots_for(self.seg.segment().len())
    }

    fn slot_word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.slots());
        let word = self
            .seg
            .data()
            .wrapping_add(std::mem::size_of::<State>() + i * 8)
            .cast::<AtomicU64>();
        // SAFETY: `i` is below the slot count, whose words follow `State`
        // inside the checked data area; 8-byte aligned as `State`'s size is
        // a multiple of 8.
        unsafe { &*word }
    }

    fn parties(&self) -> u32 {
        self.seg.segment().len() as u32
    }

    /// Takes the internal lock; a holder that died inside a transition
    /// leaves the state unknown, so the barrier is then broken.
    fn lock(&self) -> Result<Guard<'_>, BarrierError> {
        match self.seg.lock(None) {
            Ok(g) => Ok(g),
            Err(LockError::OwnerDied(g)) => {
                self.break_locked(ABORTED, 0);
                Ok(g)
            }
            Err(LockError::Os(e)) => Err(BarrierError::Os(e)),
            Err(e) => Err(BarrierError::Os(io::Error::other(e.to_string()))),
        }
    }

    /// Marks the barrier broken (if it is not) and wakes every waiter.
    /// The internal lock must be held.
    fn break_locked(&self, why: u32, pid: i32) -> bool {
        let st = self.state();
        if st.broken.load(Ordering::SeqCst) != INTACT {
            return false;
        }
        st.broken_pid.store(pid, Ordering::SeqCst);
        st.broken.store(why, Ordering::SeqCst);
        st.seq.fetch_add(1, Ordering::SeqCst);
        sys::futex::wake_all(&st.seq);
        true
    }

    fn broken_error(&self) -> Option<BarrierError> {
        let st = self.state();
        match st.broken.load(Ordering::SeqCst) {
            INTACT => None,
            DIED => Some(BarrierError::PartyDied {
                pid: st.broken_pid.load(Ordering::SeqCst),
            }),
            _ => Some(BarrierError::Broken),
        }
    }

    /// The result for a waiter of generation `g` with index `idx`, if it
    /// is decided.
    fn outcome(&self, g: u32, idx: usize) -> Option<Result<usize, BarrierError>> {
        let st = self.state();
        if st.generation.load(Ordering::SeqCst) != g {
            return Some(
                if st.outcomes.load(Ordering::SeqCst) & (1 << (g % 64)) != 0 {
                    Err(BarrierError::Broken)
                } else {
                    Ok(idx)
                },
            );
        }
        self.broken_error().map(Err)
    }

    /// A registered process that died while others wait (the check an
    /// arriving party makes); `None` when no one waits or the barrier is
    /// broken already. Read without the lock: `/proc` reads would hold up
    /// every other arrival.
    fn dead_while_waited(&self) -> Option<(usize, u64, i32)> {
        let st = self.state();
        if st.count.load(Ordering::SeqCst) == 0 || st.broken.load(Ordering::SeqCst) != INTACT {
            return None;
        }
        self.dead_holder()
    }

    /// Breaks the barrier over `dead` (found by `dead_holder`), freeing
    /// its slot so that a reset barrier does not break again over the same
    /// death. The internal lock must be held. Whether this call broke it.
    fn break_for_death_locked(&self, (slot, word, pid): (usize, u64, i32)) -> bool {
        self.free_slot(slot, word);
        self.break_locked(DIED, pid)
    }

    /// Frees slot `slot` if it still holds `word` (a dead process's).
    fn free_slot(&self, slot: usize, word: u64) {
        let _ = self
            .slot_word(slot)
            .compare_exchange(word, 0, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// For the state queries: breaks the barrier if a party died while
    /// others wait, as the next arrival would.
    fn notice_death(&self) {
        if let Some(dead) = self.dead_while_waited()
            && let Ok(_guard) = self.lock()
        {
            self.break_for_death_locked(dead);
        }
    }

    fn wait_until(&self, deadline: Deadline) -> Result<usize, BarrierError> {
        let st = self.state();
        // Parties already counted may have died since they arrived: a
        // sleeping party notices within a slice, but this arrival must not
        // count itself in (or complete the barrier) beside a dead one.
        let dead = self.dead_while_waited();
        let (g, idx) = {
            let guard = self.lock()?;
            if let Some(e) = self.broken_error() {
                return Err(e);
            }
            if let Some(d) = dead {
                self.break_for_death_locked(d);
                return Err(self.broken_error().unwrap_or(BarrierError::Broken));
            }
            let g = st.generation.load(Ordering::Relaxed);
            let idx = st.count.load(Ordering::Relaxed);
            if idx + 1 >= self.parties() {
                st.count.store(0, Ordering::Relaxed);
                st.outcomes.fetch_and(!(1 << (g % 64)), Ordering::SeqCst);
                st.generation.store(g.wrapping_add(1), Ordering::SeqCst);
                st.seq.fetch_add(1, Ordering::SeqCst);
                drop(guard);
                sys::futex::wake_all(&st.seq);
                return Ok(idx as usize);
            }
            st.count.store(idx + 1, Ordering::Relaxed);
            (g, idx as usize)
        };
        // The loop below picks up the outcome if the spin saw one.
        self.spin.look_then_spin(|| self.outcome(g, idx).is_some());
        let mut next_check = Instant::now() + SLICE;
        loop {
            let s = st.seq.load(Ordering::SeqCst);
            if let Some(r) = self.outcome(g, idx) {
                return r;
            }
            if deadline.expired() {
                return self.give_up(g, idx, None);
            }
            futex_wait(&st.seq, s, Deadline::after(deadline.slice(SLICE)));
            if Instant::now() >= next_check {
                if let Some(dead) = self.dead_holder() {
                    return self.give_up(g, idx, Some(dead));
                }
                next_check = Instant::now() + SLICE;
            }
        }
    }

    /// Breaks generation `g` (unless it was decided meanwhile) over a
    /// timeout (`dead` is `None`) or the death `dead`, and returns this
    /// waiter's result.
    fn give_up(
        &self,
        g: u32,
        idx: usize,
        dead: Option<(usize, u64, i32)>,
    ) -> Result<usize, BarrierError> {
        let _guard = self.lock()?;
        let st = self.state();
        let (why, pid, err) = match dead {
            None => (TIMED_OUT, 0, BarrierError::Timeout),
            Some((slot, word, pid)) => {
                self.free_slot(slot, word);
                (DIED, pid, BarrierError::PartyDied { pid })
            }
        };
        if st.generation.load(Ordering::SeqCst) == g && self.break_locked(why, pid) {
            return Err(err);
        }
        self.outcome(g, idx).unwrap_or(Err(BarrierError::Broken))
    }

    /// A registered process, other than this one, that no longer runs.
    fn dead_holder(&self) -> Option<(usize, u64, i32)> {
        let me = sys::process::getpid();
        (0..self.slots()).find_map(|i| {
            let w = self.slot_word(i).load(Ordering::SeqCst);
            let id = unpack(w);
            (w != 0 && id.pid != me && !running(id)).then_some((i, w, id.pid))
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Only the registering process deregisters: a copy of this handle
        // inherited through a bare `fork` must not remove its parent.
        if let Some((i, me)) = self.slot
            && unpack(me).pid == sys::process::getpid()
        {
            let _ = self
                .slot_word(i)
                .compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

/// A `Barrier` travels to another process as its shared memory's
/// descriptor; the receiving process registers as a holder.
impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.seg.segment().fd().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = MutexSegment::receive(d, Kind::Barrier, 0, data_bytes, 8, false)?;
        Ok(Barrier::register(seg))
    }
}
