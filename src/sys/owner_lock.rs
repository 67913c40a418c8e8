//! A process-shared lock word of the crate's own: the owner's identity in
//! one 64-bit word, taken with one compare-and-swap and released with one,
//! robust to owner death without the kernel's robust list. The lock under
//! [`Lock`](crate::Lock), [`RLock`](crate::RLock),
//! [`Condition`](crate::Condition) and the locks of
//! [`Value`](crate::Value)/[`Array`](crate::Array) (see
//! `segment/raw_mutex.rs`).
//!
//! # The word
//!
//! | bits | meaning |
//! |---|---|
//! | 0..30 | owner's kernel thread id (0: free) |
//! | 31 | [`WAITERS`]: someone sleeps on the word or is about to |
//! | 32..64 | owner's *generation*: the low 32 bits of its thread's start time (clock ticks after boot, field 22 of `/proc/<tid>/stat`) |
//!
//! | word | who moves it on, how (ordering) |
//! |---|---|
//! | `0` | a locker CASes in its identity (Acquire: the last owner's writes are visible) |
//! | `gen:tid` | the owner CASes it back to `0` (Release); a contender CASes in `WAITERS` before sleeping (Relaxed: it only announces itself) |
//! | `gen:tid \| WAITERS` | the owner swaps in `0` (Release) and wakes one sleeper; a waiter that found `gen:tid` dead CASes in its own identity (Acquire) and is told [`Locked::OwnerDied`] |
//!
//! Sleepers wait on the low 32 bits (tid and `WAITERS`), the futex word
//! proper; the generation only tells a dead thread from a later one that
//! was given the same tid (tids wrap after `pid_max`, 32768 by default).
//! The thread's identity is looked up once per thread (and again in a
//! forked child) and kept in a thread-local, so the uncontended lock is a
//! thread-local load and one CAS, the uncontended unlock one CAS: the
//! same work as a minimal futex mutex.
//!
//! # Owner death
//!
//! Nobody marks a dead owner's word. A contender finds out, and only when
//! it would otherwise wait: a blocking lock sleeps in slices (1 ms,
//! doubling up to 32 ms); when a slice runs out and the word still names
//! the same owner, it asks `/proc/<tid>/stat` whether that thread still
//! runs with that start time ([`liveness::thread_start`]; a zombie counts
//! as dead; a thread `/proc` does not show, as under `hidepid`, counts as
//! alive while `pidfd_open` still finds its id). A try-lock, or a timed lock about to give up, asks at once.
//! If the owner is gone, the contender CASes its own identity over the dead
//! one; exactly one wins, and only it is told [`Locked::OwnerDied`]. The
//! answer "alive" is remembered per thread for a few milliseconds
//! (`ALIVE_FOR`), so that a loop of failing try-locks does not read `/proc`
//! each time.
//!
//! | dies here | left behind | repaired by |
//! |---|---|---|
//! | before the lock's CAS | nothing | — |
//! | holding the lock (after the CAS, before the unlock's CAS/swap) | word naming a dead thread | the next contender whose slice runs out (or at once, on a try) |
//! | after the unlock's swap, before the wake | `0`, a sleeper not woken | the sleeper's slice runs out and it finds the word free |
//!
//! The limits, all documented on [`Lock`](crate::Lock): processes sharing
//! a lock must see one another in one pid namespace with `/proc` mounted
//! (when `/proc` cannot say, the owner is taken as alive: a death goes
//! unnoticed rather than a live owner robbed); a thread that `exec`s while
//! holding the lock keeps holding it; death is seen after a slice, not at
//! once.
//!
//! # Why not the kernel's robust list
//!
//! The kernel's robust-futex protocol marks a dead owner's word at once
//! and exactly (it walks the dead thread's robust list and sets
//! `FUTEX_OWNER_DIED`). But the kernel keeps one list per thread, and
//! glibc owns it; a lock on that list must be linked in on every lock and
//! unlinked on every unlock, with `list_op_pending` set and cleared around
//! both. The crate did exactly that (running glibc's protocol inline on
//! glibc's list, [`super::robust_mutex`]). Measured on the same machine,
//! in alternation, with the same code around both: lock + unlock of the
//! bare words cost 5.8-7.2 ns on the robust list, 4.9 ns for this word
//! and 4.7-4.8 ns for a minimal futex mutex; through [`Lock`](crate::Lock)
//! (`sync.lock.uncontended` of `benches/compare`), 1.4-1.9x the minimal
//! futex mutex on the robust list against 1.0-1.1x for this word. The
//! robust list stays where its exactness pays and the lock is not on a
//! hot uncontended path: the locks of queues, and CSP channels, whose
//! record mutexes others probe for liveness all the time (a load of the
//! word there, a `/proc` read here).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys::futex::{self, Wake};
use crate::sys::liveness::{self, ThreadStart};
pub use crate::sys::robust_mutex::{LockFailed, Locked};

/// The owner's thread id.
const TID_MASK: u64 = 0x3fff_ffff;
/// Someone sleeps on the word (or is about to): unlock must wake one.
const WAITERS: u64 = 0x8000_0000;
/// The first sleep before a contender checks on the owner.
const FIRST_SLICE: Duration = Duration::from_millis(1);
/// The longest sleep between two checks.
const MAX_SLICE: Duration = Duration::from_millis(32);
/// How long a thread trusts an "alive" answer about an owner.
const ALIVE_FOR: Duration = Duration::from_millis(4);

thread_local! {
    /// This thread's identity as it appears in a word it holds (0: not
    /// looked up yet, or forked since).
    static ME: Cell<u64> = const { Cell::new(0) };
    /// Owners recently found alive, and when (see `ALIVE_FOR`).
    static ALIVE: Cell<[(u64, Option<Instant>); 4]> = const { Cell::new([(0, None); 4]) };
}

/// This thread's identity: generation above, tid below.
#[inline(always)]
fn me() -> u64 {
    let id = ME.with(|m| m.get());
    if id != 0 {
        return id;
    }
    me_slow()
}

#[cold]
fn me_slow() -> u64 {
    static HOOK: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget_in_child() {
        // A const-initialised thread-local without destructor: a plain
        // store, as async-signal-safe as the handler must be.
        ME.with(|m| m.set(0));
    }
    HOOK.call_once(|| {
        // SAFETY: registers a handler that only stores to a thread-local
        // cell (see above).
        unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    let tid = super::process::gettid() as u32 as u64 & TID_MASK;
    // Without /proc the generation is 0, which waiters read as "unknown".
    let generation = match liveness::thread_start(None) {
        ThreadStart::Running(start) => start as u32 as u64,
        ThreadStart::Gone | ThreadStart::Unknown => 0,
    };
    let id = generation << 32 | tid;
    ME.with(|m| m.set(id));
    id
}

/// Whether the thread `owner` (an identity as stored in a word) has
/// ended. `false` when it cannot be told.
fn owner_dead(owner: u64) -> bool {
    let now = Instant::now();
    let fresh = |(id, at): (u64, Option<Instant>)| {
        id == owner && at.is_some_and(|at| now.saturating_duration_since(at) < ALIVE_FOR)
    };
    if ALIVE.with(|a| a.get().into_iter().any(fresh)) {
        return false;
    }
    if me() >> 32 == 0 {
        // This thread could not read its own start time: `/proc` is not
        // there (a missing file would say nothing about the owner).
        return false;
    }
    let tid = (owner & TID_MASK) as i32;
    let generation = (owner >> 32) as u32;
    let dead = match liveness::thread_start(Some(tid)) {
        ThreadStart::Gone => true,
        // Generation 0: the owner could not read its start time either.
        ThreadStart::Running(start) => generation != 0 && start as u32 != generation,
        ThreadStart::Unknown => false,
    };
    if !dead {
        ALIVE.with(|a| {
            let mut seen = a.get();
            // Replace this owner's entry, else the oldest.
            let slot = (0..seen.len())
                .find(|&i| seen[i].0 == owner)
                .or_else(|| (0..seen.len()).min_by_key(|&i| seen[i].1))
                .unwrap_or(0);
            seen[slot] = (owner, Some(now));
            a.set(seen);
        });
    }
    dead
}

/// The lock word, placed in shared memory (zeroed memory is a free lock).
#[repr(C, align(8))]
pub struct OwnerLock {
    word: AtomicU64,
}

impl OwnerLock {
    /// A free lock, for constant contexts.
    pub const fn new() -> OwnerLock {
        OwnerLock {
            word: AtomicU64::new(0),
        }
    }

    /// Initialises a lock in place.
    ///
    /// # Safety
    ///
    /// `this` points to writable, 8-byte aligned memory that no thread of
    /// any process uses yet.
    pub unsafe fn init(this: *mut OwnerLock) {
        // SAFETY: the caller's contract.
        unsafe { this.write(OwnerLock::new()) }
    }

    /// The futex word: the low 32 bits of the lock word (tid and
    /// `WAITERS`).
    #[inline(always)]
    fn futex_word(&self) -> &AtomicU32 {
        let low = if cfg!(target_endian = "big") { 1 } else { 0 };
        let p = self.word.as_ptr().cast::<u32>().wrapping_add(low);
        // SAFETY: `p` is the 4-byte aligned low half of the 8-byte word,
        // valid as long as `self`. The crate only passes this reference to
        // the futex calls (the kernel reads the half atomically) and to a
        // park hook that loads it: a 32-bit load inside a 64-bit atomic,
        // which the targets the crate supports (x86-64, aarch64) perform
        // atomically.
        unsafe { AtomicU32::from_ptr(p) }
    }

    /// Whether anyone holds the lock (a snapshot; a dead owner still
    /// counts until a contender finds it dead).
    #[inline]
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) & TID_MASK != 0
    }

    /// Locks, waiting at most `timeout` (`None`: no limit; `Some(ZERO)`:
    /// try once).
    #[inline]
    pub fn lock(&self, timeout: Option<Duration>) -> Result<Locked, LockFailed> {
        if self.take_free() {
            return Ok(Locked::Clean);
        }
        self.lock_contended(me(), self.word.load(Ordering::Relaxed), timeout)
    }

    /// The uncontended lock: takes a free word in one compare-and-swap;
    /// `false` (nothing changed) if it was not free. Callers go on with
    /// [`lock`](Self::lock).
    #[inline(always)]
    pub fn take_free(&self) -> bool {
        // Acquire: the last owner's writes before its release are visible.
        self.word
            .compare_exchange(0, me(), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// The lock when the word was not free.
    #[cold]
    fn lock_contended(
        &self,
        me: u64,
        mut cur: u64,
        timeout: Option<Duration>,
    ) -> Result<Locked, LockFailed> {
        if cur & !WAITERS == me {
            return Err(LockFailed::Deadlock);
        }
        // No clock read for an untimed wait.
        let deadline = timeout.map(|t| {
            let now = Instant::now();
            now.checked_add(t).unwrap_or(now + MAX_SLICE * 1024)
        });
        let mut slice = FIRST_SLICE;
        // After sleeping, others may sleep too: take the word with WAITERS
        // so that our unlock wakes one.
        let mut waiters = 0;
        loop {
            let owner = cur & !WAITERS;
            if owner & TID_MASK == 0 {
                let new = me | (cur & WAITERS) | waiters;
                match self
                    .word
                    .compare_exchange(cur, new, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Ok(Locked::Clean),
                    Err(c) => {
                        cur = c;
                        continue;
                    }
                }
            }
            if owner == me {
                return Err(LockFailed::Deadlock);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                // About to give up: first make sure the owner lives.
                match self.take_from_dead(me, cur) {
                    Some(r) => return r,
                    None => {
                        cur = self.word.load(Ordering::Relaxed);
                        if cur & TID_MASK == 0 {
                            continue;
                        }
                        return Err(LockFailed::Timeout);
                    }
                }
            }
            if cur & WAITERS == 0 {
                let want = cur | WAITERS;
                // Relaxed: only announces a sleeper; the word's owner reads
                // it with its release swap.
                if let Err(c) =
                    self.word
                        .compare_exchange(cur, want, Ordering::Relaxed, Ordering::Relaxed)
                {
                    cur = c;
                    continue;
                }
                cur = want;
            }
            let nap = left.map_or(slice, |l| l.min(slice));
            let woke = futex::wait(self.futex_word(), cur as u32, Some(nap));
            waiters = WAITERS;
            if woke == Wake::TimedOut && self.word.load(Ordering::Relaxed) == cur {
                if let Some(r) = self.take_from_dead(me, cur) {
                    return r;
                }
                slice = (slice * 2).min(MAX_SLICE);
            }
            cur = self.word.load(Ordering::Relaxed);
        }
    }

    /// If the owner named in `cur` has ended, takes the word over from it:
    /// `Some` with the outcome, `None` if the owner lives (or someone else
    /// moved the word meanwhile).
    #[cold]
    fn take_from_dead(&self, me: u64, cur: u64) -> Option<Result<Locked, LockFailed>> {
        if !owner_dead(cur & !WAITERS) {
            return None;
        }
        // Keep WAITERS: others may sleep on the dead owner too.
        self.word
            .compare_exchange(cur, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Ok(Locked::OwnerDied))
    }

    /// Unlocks. Fails with `EPERM` when the calling thread does not hold
    /// it.
    #[inline]
    pub fn unlock(&self) -> io::Result<()> {
        let me = me();
        // Release: our writes under the lock reach the next owner.
        match self
            .word
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(cur) => self.unlock_waiters(me, cur),
        }
    }

    /// The unlock when `WAITERS` is set (or the caller is not the owner).
    #[cold]
    fn unlock_waiters(&self, me: u64, cur: u64) -> io::Result<()> {
        if cur & !WAITERS != me {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        // Only the owner clears the word; contenders only add WAITERS,
        // already set, so the swap cannot lose anything.
        self.word.swap(0, Ordering::Release);
        futex::wake(self.futex_word(), 1);
        Ok(())
    }
}

impl Default for OwnerLock {
    fn default() -> Self {
        OwnerLock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A lock held by a live thread of this process, the holder's
    /// identity, and the channel that makes it release and end.
    fn held_elsewhere(
        lock: &'static OwnerLock,
    ) -> (u64, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let (id_tx, id_rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            assert_eq!(lock.lock(None).unwrap(), Locked::Clean);
            id_tx.send(lock.word.load(Ordering::Relaxed)).unwrap();
            rx.recv().unwrap();
            lock.unlock().unwrap();
        });
        (id_rx.recv().unwrap(), tx, t)
    }

    #[test]
    fn a_live_holder_keeps_the_lock() {
        static LOCK: OwnerLock = OwnerLock::new();
        let (id, release, t) = held_elsewhere(&LOCK);
        assert_ne!(id >> 32, 0, "the holder's start time is in the word");
        assert!(matches!(
            LOCK.lock(Some(Duration::ZERO)),
            Err(LockFailed::Timeout)
        ));
        assert!(matches!(
            LOCK.lock(Some(Duration::from_millis(20))),
            Err(LockFailed::Timeout)
        ));
        release.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(LOCK.lock(None).unwrap(), Locked::Clean);
        assert!(matches!(LOCK.lock(None), Err(LockFailed::Deadlock)));
        LOCK.unlock().unwrap();
        assert!(!LOCK.is_locked());
    }

    #[test]
    fn a_recycled_tid_is_not_the_old_owner() {
        static LOCK: OwnerLock = OwnerLock::new();
        let (id, release, t) = held_elsewhere(&LOCK);
        // The same, live, thread id with another start time: the thread
        // that locked ended and its id went to a new thread.
        let ghost = id ^ (1 << 32);
        LOCK.word.store(ghost | WAITERS, Ordering::Relaxed);
        assert_eq!(LOCK.lock(None).unwrap(), Locked::OwnerDied);
        LOCK.unlock().unwrap();
        // Reported once: the word is clean again.
        assert_eq!(LOCK.lock(Some(Duration::ZERO)).unwrap(), Locked::Clean);
        LOCK.unlock().unwrap();
        // Put the real holder back so that its own unlock succeeds.
        LOCK.word.store(id, Ordering::Relaxed);
        release.send(()).unwrap();
        t.join().unwrap();
        assert!(!LOCK.is_locked());
    }

    #[test]
    fn a_thread_that_ended_holding_is_found_dead() {
        static LOCK: OwnerLock = OwnerLock::new();
        std::thread::spawn(|| {
            assert_eq!(LOCK.lock(None).unwrap(), Locked::Clean);
        })
        .join()
        .unwrap();
        assert!(LOCK.is_locked());
        // A try finds out at once, a blocking lock after a slice.
        assert_eq!(LOCK.lock(Some(Duration::ZERO)).unwrap(), Locked::OwnerDied);
        LOCK.unlock().unwrap();
        let worker = std::thread::spawn(|| {
            assert_eq!(LOCK.lock(None).unwrap(), Locked::Clean);
        });
        worker.join().unwrap();
        assert_eq!(LOCK.lock(None).unwrap(), Locked::OwnerDied);
        LOCK.unlock().unwrap();
    }

    #[test]
    fn unlock_by_a_non_owner_is_refused() {
        static LOCK: OwnerLock = OwnerLock::new();
        assert!(LOCK.unlock().is_err());
        let (_, release, t) = held_elsewhere(&LOCK);
        assert!(LOCK.unlock().is_err());
        release.send(()).unwrap();
        t.join().unwrap();
    }
}
