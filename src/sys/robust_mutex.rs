//! Robust, process-shared, error-checking pthread mutexes
//! (`PTHREAD_MUTEX_ROBUST` + `PTHREAD_PROCESS_SHARED` +
//! `PTHREAD_MUTEX_ERRORCHECK`), for placing in shared memory: the locks of
//! queues and CSP channels (whose record mutexes others probe for their
//! owner's liveness with a try-lock, which the kernel's marking makes a
//! plain load). The user-facing locks (`Lock`, `RLock`, `Condition`,
//! `Value`/`Array`) use the cheaper [`super::owner_lock`] instead; it
//! explains the trade.
//!
//! glibc registers one kernel robust list per thread (`set_robust_list`)
//! and links every robust mutex the thread holds into it. When a thread
//! ends for any reason (including `SIGKILL` of its process) the kernel walks
//! that list, sets `FUTEX_OWNER_DIED` in the futex word of every mutex still
//! held and wakes one waiter, whose lock call then returns `EOWNERDEAD`
//! ([`Locked::OwnerDied`]). The owner is named by its kernel thread id, so
//! a recycled process id cannot fool it. The new owner repairs what the
//! dead one left half done, calls [`RobustMutex::mark_consistent`], and
//! carries on; a mutex unlocked without that becomes unusable
//! (`ENOTRECOVERABLE`).
//!
//! # The fast path: glibc's protocol, without the calls
//!
//! Where the C library is glibc on a 64-bit target (checked once per
//! thread: the kernel's robust-list head registered by glibc must have the
//! futex offset of glibc's 64-bit `pthread_mutex_t`), lock and unlock do
//! not call pthread at all: they run glibc's robust protocol inline, on
//! the same words, in the same thread's list. That costs one
//! compare-and-swap plus a handful of plain stores into the thread's list,
//! where `pthread_mutex_lock`/`unlock` of a robust mutex cost two to four
//! times a minimal futex mutex (the kind checks, `__owner`/`__nusers`
//! bookkeeping and two non-inlined calls). The words used, in glibc's
//! 64-bit `pthread_mutex_t`:
//!
//! | offset | field | who writes it |
//! |---|---|---|
//! | 0 | `__lock`, the futex word: `0` free, else owner tid \| `FUTEX_WAITERS` \| `FUTEX_OWNER_DIED` | lockers (CAS), the owner's unlock (swap to 0), the kernel at the owner's death |
//! | 24 | `__list.__prev`: the previous node of the owner's robust list | the owner, on enqueue; glibc or this code dequeuing a neighbour |
//! | 32 | `__list.__next`: the next node (the kernel's list entry points here; `futex_offset` = -32) | as above |
//!
//! Enqueue and dequeue copy glibc's `ENQUEUE_MUTEX`/`DEQUEUE_MUTEX`
//! (a doubly linked list whose empty head points at itself, with glibc's
//! `robust_prev` word in front of the head), so that glibc's own robust
//! mutexes and these can sit in one list in any order. Before the
//! compare-and-swap of a lock and before the dequeue of an unlock, the
//! node is published in the head's `list_op_pending` (as glibc does), so a
//! thread killed between the two steps is still covered by the kernel.
//! Owner death is then exactly what glibc gives: the kernel sets
//! `FUTEX_OWNER_DIED` and clears the tid for every node still listed when
//! the thread ends, and wakes one sleeper; the next locker takes the word
//! (dropping the bit) and is told [`Locked::OwnerDied`]. As the bit is
//! gone from the word, [`RobustMutex::mark_consistent`] has nothing to do
//! on this path.
//!
//! The futex word (the kernel's robust-futex protocol defines it):
//!
//! | word | meaning | who moves it on |
//! |---|---|---|
//! | `0` | free | a locker CASes in its tid |
//! | `tid` | held by thread `tid`, nobody asleep | the owner swaps back `0` on unlock; a contender sets `FUTEX_WAITERS` before sleeping |
//! | `tid \| FUTEX_WAITERS` | held, someone sleeps or is about to | the owner's unlock stores `0` and `FUTEX_WAKE`s one sleeper |
//! | `FUTEX_OWNER_DIED` (+ `FUTEX_WAITERS`) | the owner's thread ended holding it; the kernel set the bit, cleared the tid and woke one sleeper | the next locker CASes in its tid (dropping the bit) and is told [`Locked::OwnerDied`] |
//!
//! with `FUTEX_WAITERS = 0x8000_0000`, `FUTEX_OWNER_DIED = 0x4000_0000`
//! and the tid in the low 30 bits.
//!
//! Tids change across `fork`: the per-thread cache is cleared by a
//! `pthread_atfork` child handler (glibc re-registers the same, emptied,
//! list head in the child). Elsewhere (another C library, a 32-bit
//! target), every call goes through pthread as before; the word protocol
//! is the same, so both paths may meet on one mutex.

#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};

use crate::sys::futex::{self, Wake};

/// The owner's thread id in the futex word.
pub const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// Someone sleeps on the word (or is about to): unlock must wake one.
const FUTEX_WAITERS: u32 = 0x8000_0000;
/// The owner's thread ended holding it (set by the kernel).
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;

/// Offset of `__list.__prev` in glibc's 64-bit `pthread_mutex_t`.
const PREV_OFFSET: usize = 24;
/// Offset of `__list.__next`, where the kernel's list entries point.
const NEXT_OFFSET: usize = 32;

/// The kernel's `struct robust_list_head` (glibc's `robust_head` in the
/// thread descriptor).
#[repr(C)]
struct RobustListHead {
    list: *mut u8,
    futex_offset: isize,
    list_op_pending: *mut u8,
}

/// [`RobustListHead`] pointer value of a thread that must use pthread.
const NO_FAST_PATH: usize = 1;

thread_local! {
    /// This thread's robust-list head (0: not looked up yet;
    /// [`NO_FAST_PATH`]: pthread only) and kernel tid (0: not looked up
    /// yet, or forked since), in one cell: one thread-local access.
    static ME: std::cell::Cell<(usize, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// This thread's list head and tid, or `None` where the fast path is not
/// available.
#[inline(always)]
fn me() -> Option<(*mut RobustListHead, u32)> {
    let (head, tid) = ME.with(|m| m.get());
    if head > NO_FAST_PATH && tid != 0 {
        return Some((head as *mut RobustListHead, tid));
    }
    me_slow()
}

#[cold]
fn me_slow() -> Option<(*mut RobustListHead, u32)> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget_tid_in_child() {
        // A const-initialised thread-local without destructor: a plain
        // store, as async-signal-safe as the handler must be.
        ME.with(|m| m.set((m.get().0, 0)));
    }
    let mut head = ME.with(|m| m.get().0);
    if head == 0 {
        head = lookup_head().map_or(NO_FAST_PATH, |h| h as usize);
        ME.with(|m| m.set((head, 0)));
    }
    if head == NO_FAST_PATH {
        return None;
    }
    HOOK.call_once(|| {
        // SAFETY: registers a handler that only stores to a thread-local
        // cell (see above).
        unsafe { libc::pthread_atfork(None, None, Some(forget_tid_in_child)) };
    });
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    ME.with(|m| m.set((head, tid)));
    Some((head as *mut RobustListHead, tid))
}

/// The robust-list head the C library registered for this thread, if it
/// is glibc's 64-bit layout.
fn lookup_head() -> Option<*mut RobustListHead> {
    if !cfg!(all(target_env = "gnu", target_pointer_width = "64")) {
        return None;
    }
    let mut head: *mut RobustListHead = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: get_robust_list(0, ..) writes this thread's head pointer and
    // its length into the two places given, which outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0 as libc::c_long,
            &mut head as *mut *mut RobustListHead,
            &mut len as *mut libc::size_t,
        )
    };
    if rc != 0 || head.is_null() || len != std::mem::size_of::<RobustListHead>() {
        return None;
    }
    // SAFETY: the head lives in this thread's descriptor for the thread's
    // lifetime; only this thread (and the kernel at its exit) uses it.
    let offset = unsafe { (*head).futex_offset };
    (offset == -(NEXT_OFFSET as isize)).then_some(head)
}

/// A `pthread_mutex_t` initialised robust, process-shared and
/// error-checking. It must live at a fixed address (shared memory) from
/// [`init`](Self::init) on.
#[repr(C)]
pub struct RobustMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a process-shared pthread mutex is designed to be used from any
// thread of any process; every access goes through pthread calls or atomics.
unsafe impl Sync for RobustMutex {}
// SAFETY: as above; the mutex holds no thread-local state of its own.
unsafe impl Send for RobustMutex {}

/// How a lock call that got the mutex got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// Normally.
    Clean,
    /// The previous owner ended while holding it; the data it protects
    /// may be half-updated. Repair it, then call
    /// [`RobustMutex::mark_consistent`] before unlocking.
    OwnerDied,
}

/// Why a lock call did not get the mutex.
#[derive(Debug)]
pub enum LockFailed {
    /// Not acquired before the timeout (immediately for `try_lock`).
    Timeout,
    /// The calling thread already holds it.
    Deadlock,
    /// Any other error: a corrupted mutex, or `ENOTRECOVERABLE` (a holder
    /// ended and the next one unlocked it without making it consistent).
    Os(io::Error),
}

impl From<LockFailed> for io::Error {
    /// The errno the failed pthread call returned (`ETIMEDOUT`, `EDEADLK`,
    /// or the error itself).
    fn from(e: LockFailed) -> io::Error {
        match e {
            LockFailed::Timeout => io::Error::from_raw_os_error(libc::ETIMEDOUT),
            LockFailed::Deadlock => io::Error::from_raw_os_error(libc::EDEADLK),
            LockFailed::Os(e) => e,
        }
    }
}

impl RobustMutex {
    /// Initialises the mutex in place.
    ///
    /// # Safety
    ///
    /// `this` points to writable, suitably aligned memory for a
    /// `RobustMutex` that no thread of any process uses yet, and that stays
    /// at this address for as long as anyone uses it.
    pub unsafe fn init(this: *mut RobustMutex) -> io::Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let a = attr.as_mut_ptr();
        // SAFETY: `a` points to `attr`'s storage, which this initialises.
        check(unsafe { libc::pthread_mutexattr_init(a) })?;
        // SAFETY: `attr` was initialised above and is destroyed only at the
        // end (so for each setter below).
        let r =
            check(unsafe { libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK) })
                .and_then(|_| {
                    // SAFETY: as above.
                    check(unsafe {
                        libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED)
                    })
                })
                .and_then(|_| {
                    // SAFETY: as above.
                    check(unsafe {
                        libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST)
                    })
                })
                .and_then(|_| {
                    let mutex =
                        UnsafeCell::raw_get(this.cast::<UnsafeCell<libc::pthread_mutex_t>>());
                    // SAFETY: `this` is valid for writes and unused by anyone
                    // else (the caller's contract); `attr` is initialised.
                    check(unsafe { libc::pthread_mutex_init(mutex, a) })
                });
        // SAFETY: `attr` was initialised above and is not used again.
        unsafe { libc::pthread_mutexattr_destroy(a) };
        r
    }

    #[inline]
    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.0.get()
    }

    /// Locks, waiting at most `timeout` (`None`: no limit).
    ///
    /// The timeout is turned into a `CLOCK_REALTIME` deadline
    /// (`pthread_mutex_timedlock`); a wall clock set forward is caught by
    /// re-checking the monotonic clock, a wall clock set back lengthens the
    /// wait by as much.
    #[inline]
    pub fn lock(&self, timeout: Option<Duration>) -> Result<Locked, LockFailed> {
        if let Some(me) = me() {
            if self.take_free(me) {
                return Ok(Locked::Clean);
            }
            return self.fast_lock(me, timeout);
        }
        self.pthread_lock(timeout)
    }

    #[inline(never)]
    fn pthread_lock(&self, timeout: Option<Duration>) -> Result<Locked, LockFailed> {
        match timeout {
            // SAFETY: the mutex was initialised by `init` (the owner of the
            // shared memory guarantees it) and stays mapped while `self` is
            // borrowed.
            None => self.outcome(unsafe { libc::pthread_mutex_lock(self.raw()) }),
            Some(t) => self.lock_timed(t),
        }
    }

    #[cold]
    fn lock_timed(&self, timeout: Duration) -> Result<Locked, LockFailed> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let now = clock_gettime(ClockId::Realtime);
            let mut sec = now
                .tv_sec
                .saturating_add(left.as_secs().min(i64::MAX as u64 / 2) as i64);
            let mut nsec = now.tv_nsec + left.subsec_nanos() as i64;
            if nsec >= 1_000_000_000 {
                nsec -= 1_000_000_000;
                sec = sec.saturating_add(1);
            }
            let abs = libc::timespec {
                tv_sec: sec as libc::time_t,
                tv_nsec: nsec as _,
            };
            // SAFETY: as in the untimed case; `abs` outlives the call.
            let rc = unsafe { libc::pthread_mutex_timedlock(self.raw(), &abs) };
            if rc == libc::ETIMEDOUT && start.elapsed() < timeout {
                continue;
            }
            return self.outcome(rc);
        }
    }

    /// Locks if nobody holds it.
    #[inline]
    pub fn try_lock(&self) -> Result<Locked, LockFailed> {
        if let Some(me) = me() {
            if self.take_free(me) {
                return Ok(Locked::Clean);
            }
            return self.fast_lock(me, Some(Duration::ZERO));
        }
        self.pthread_try_lock()
    }

    #[inline(never)]
    fn pthread_try_lock(&self) -> Result<Locked, LockFailed> {
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw()) };
        if rc == libc::EBUSY {
            return Err(LockFailed::Timeout);
        }
        self.outcome(rc)
    }

    #[inline]
    fn outcome(&self, rc: libc::c_int) -> Result<Locked, LockFailed> {
        if rc == 0 {
            return Ok(Locked::Clean);
        }
        self.failed(rc)
    }

    #[cold]
    fn failed(&self, rc: libc::c_int) -> Result<Locked, LockFailed> {
        match rc {
            libc::EOWNERDEAD => Ok(Locked::OwnerDied),
            libc::ETIMEDOUT => Err(LockFailed::Timeout),
            libc::EDEADLK => Err(LockFailed::Deadlock),
            e => Err(LockFailed::Os(io::Error::from_raw_os_error(e))),
        }
    }

    /// After [`Locked::OwnerDied`] and repair: makes the mutex usable
    /// again. Call before `unlock`.
    pub fn mark_consistent(&self) -> io::Result<()> {
        if me().is_some() {
            // The fast path dropped FUTEX_OWNER_DIED when it took the word.
            return Ok(());
        }
        // SAFETY: as in `lock`; the calling thread holds the mutex (it was
        // told `OwnerDied`), which is when pthread_mutex_consistent may be
        // called.
        check(unsafe { libc::pthread_mutex_consistent(self.raw()) })
    }

    /// Unlocks. Fails with `EPERM` when the calling thread does not hold it.
    #[inline]
    pub fn unlock(&self) -> io::Result<()> {
        if let Some(me) = me() {
            return self.fast_unlock(me);
        }
        self.pthread_unlock()
    }

    #[inline(never)]
    fn pthread_unlock(&self) -> io::Result<()> {
        // SAFETY: as in `lock`; an error-checking mutex refuses an unlock by
        // a thread that does not own it instead of corrupting it.
        check(unsafe { libc::pthread_mutex_unlock(self.raw()) })
    }

    /// The futex word as an atomic.
    #[inline(always)]
    fn futex_word(&self) -> &AtomicU32 {
        // SAFETY: see `word`.
        unsafe { AtomicU32::from_ptr(self.raw().cast::<u32>()) }
    }

    /// The address of `__list.__next`: this mutex's entry in a robust
    /// list.
    #[inline(always)]
    fn entry(&self) -> *mut u8 {
        // SAFETY: inside the mutex (40 bytes on 64-bit glibc).
        unsafe { self.raw().cast::<u8>().add(NEXT_OFFSET) }
    }

    /// Publishes (or, with null, clears) the list operation under way, in
    /// program order with the surrounding word and list updates.
    #[inline(always)]
    fn set_pending(head: *mut RobustListHead, entry: *mut u8) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        let pending = head
            .cast::<u8>()
            .wrapping_add(std::mem::offset_of!(RobustListHead, list_op_pending))
            .cast::<*mut u8>();
        // SAFETY: `head` is this thread's registered robust-list head (see
        // `me`); only this thread writes it.
        unsafe { std::ptr::write_volatile(pending, entry) };
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }

    /// glibc's `ENQUEUE_MUTEX`: links this mutex at the front of the
    /// thread's robust list. Called by the owner, with the word taken.
    #[inline(always)]
    fn enqueue(&self, head: *mut RobustListHead) {
        let entry = self.entry();
        let prev_field = self.prev_field();
        // `list` is the first field of the `repr(C)` head.
        let list = head.cast::<*mut u8>();
        // SAFETY: `head` is this thread's list head; only this thread
        // changes its list.
        let first = unsafe { list.read() };
        // `first` points at the `__next` field of the first node (or at the
        // head itself, behind which glibc keeps the `robust_prev` word, when
        // empty), so the word 8 bytes before it is that node's `__prev`.
        let first_prev = ((first as usize & !1) - 8) as *mut *mut u8;
        // SAFETY: that `__prev` word (above), changed by this thread only.
        unsafe { first_prev.write(entry) };
        // SAFETY: `entry` is this mutex's `__next` field.
        unsafe { entry.cast::<*mut u8>().write(first) };
        // SAFETY: this mutex's `__prev` field.
        unsafe { prev_field.write(head.cast()) };
        // The node is complete before the kernel can reach it.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        // SAFETY: as for the read of `first`.
        unsafe { list.write(entry) };
    }

    /// This mutex's `__prev` link word.
    #[inline(always)]
    fn prev_field(&self) -> *mut *mut u8 {
        self.raw()
            .cast::<u8>()
            .wrapping_add(PREV_OFFSET)
            .cast::<*mut u8>()
    }

    /// glibc's `DEQUEUE_MUTEX`: unlinks this mutex from the owner's list.
    #[inline(always)]
    fn dequeue(&self) {
        let entry = self.entry().cast::<*mut u8>();
        let prev_field = self.prev_field();
        // The calling thread owns the mutex, so the node is in its list
        // (linked by `enqueue` or by glibc) and its neighbours' link words
        // are 8 bytes before the addresses stored in it.
        // SAFETY: this mutex's `__next` field.
        let next = unsafe { entry.read() };
        // SAFETY: this mutex's `__prev` field.
        let prev = unsafe { prev_field.read() };
        // SAFETY: the next node's `__prev` word (above), changed only by
        // this thread, the list's owner.
        unsafe { (((next as usize & !1) - 8) as *mut *mut u8).write(prev) };
        // SAFETY: the previous node's `__next` word (or the head's `list`).
        unsafe { ((prev as usize & !1) as *mut *mut u8).write(next) };
        // SAFETY: this mutex's `__prev` field.
        unsafe { prev_field.write(std::ptr::null_mut()) };
        // SAFETY: this mutex's `__next` field.
        unsafe { entry.write(std::ptr::null_mut()) };
    }

    /// The uncontended lock: takes a free word (0) in one
    /// compare-and-swap and lists the mutex; `false` (nothing changed but
    /// `list_op_pending`, which [`fast_lock`](Self::fast_lock) rewrites)
    /// if the word was not free.
    #[inline(always)]
    fn take_free(&self, (head, tid): (*mut RobustListHead, u32)) -> bool {
        Self::set_pending(head, self.entry());
        // Acquire: the owner's writes before its release swap are visible.
        let ok = self
            .futex_word()
            .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if ok {
            self.enqueue(head);
            Self::set_pending(head, std::ptr::null_mut());
        }
        ok
    }

    /// The lock when the word was not free (held, or left by a dead
    /// owner).
    #[inline(never)]
    fn fast_lock(
        &self,
        (head, tid): (*mut RobustListHead, u32),
        timeout: Option<Duration>,
    ) -> Result<Locked, LockFailed> {
        Self::set_pending(head, self.entry());
        let cur = self.futex_word().load(Ordering::Relaxed);
        let r = self.lock_contended(tid, cur, timeout);
        if r.is_ok() {
            self.enqueue(head);
        }
        Self::set_pending(head, std::ptr::null_mut());
        r
    }

    /// glibc's `__lll_robust_lock_wait`, with a relative timeout.
    #[cold]
    fn lock_contended(
        &self,
        tid: u32,
        mut cur: u32,
        timeout: Option<Duration>,
    ) -> Result<Locked, LockFailed> {
        let word = self.futex_word();
        // Read only by a timed wait (a try-lock fails without the clock).
        let mut started: Option<Instant> = None;
        // After sleeping, others may sleep too: take the word with
        // FUTEX_WAITERS so that our unlock wakes one.
        let mut waiters = 0;
        loop {
            let owner = cur & FUTEX_TID_MASK;
            if owner == tid {
                return Err(LockFailed::Deadlock);
            }
            if owner == 0 {
                // Free, or left by a dead owner (FUTEX_OWNER_DIED): take it,
                // dropping that bit and keeping FUTEX_WAITERS.
                let new = tid | (cur & FUTEX_WAITERS) | waiters;
                match word.compare_exchange(cur, new, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) if cur & FUTEX_OWNER_DIED != 0 => return Ok(Locked::OwnerDied),
                    Ok(_) => return Ok(Locked::Clean),
                    Err(c) => {
                        cur = c;
                        continue;
                    }
                }
            }
            let left = match timeout {
                None => None,
                Some(t) if t.is_zero() => return Err(LockFailed::Timeout),
                Some(t) => {
                    match t.checked_sub(started.get_or_insert_with(Instant::now).elapsed()) {
                        Some(left) if !left.is_zero() => Some(left),
                        _ => return Err(LockFailed::Timeout),
                    }
                }
            };
            if cur & FUTEX_WAITERS == 0 {
                let want = cur | FUTEX_WAITERS;
                if let Err(c) =
                    word.compare_exchange(cur, want, Ordering::Relaxed, Ordering::Relaxed)
                {
                    cur = c;
                    continue;
                }
                cur = want;
            }
            if futex::wait(word, cur, left) == Wake::TimedOut
                && timeout.is_some_and(|t| started.is_some_and(|s| s.elapsed() >= t))
            {
                return Err(LockFailed::Timeout);
            }
            waiters = FUTEX_WAITERS;
            cur = word.load(Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn fast_unlock(&self, (head, tid): (*mut RobustListHead, u32)) -> io::Result<()> {
        let word = self.futex_word();
        if word.load(Ordering::Relaxed) & FUTEX_TID_MASK != tid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Self::set_pending(head, self.entry());
        self.dequeue();
        // Release: our writes under the lock reach the next owner.
        let old = word.swap(0, Ordering::Release);
        if old & FUTEX_WAITERS != 0 {
            futex::wake(word, 1);
        }
        Self::set_pending(head, std::ptr::null_mut());
        Ok(())
    }

    /// The futex word (`__lock`, the first field of glibc's mutex on every
    /// Linux target): `0` free, else owner tid | flags. A hint for
    /// spinning; only pthread calls change it.
    pub fn word(&self) -> u32 {
        // SAFETY: the word is the first, 4-byte aligned `int` of the mutex;
        // glibc and the kernel only ever access it atomically, so an atomic
        // load from here does not race with them.
        unsafe { AtomicU32::from_ptr(self.raw().cast::<u32>()) }.load(Ordering::Relaxed)
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
