//! Robust, process-shared, error-checking pthread mutexes
//! (`PTHREAD_MUTEX_ROBUST` + `PTHREAD_PROCESS_SHARED` +
//! `PTHREAD_MUTEX_ERRORCHECK`), for placing in shared memory.
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
//! Going through glibc rather than registering a list of our own keeps the
//! one list per thread that glibc already owns.

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};

/// The owner's thread id in the futex word.
pub const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

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
    /// A statically initialised, process-private, default mutex (neither
    /// robust nor error-checking): only a placeholder for constant
    /// contexts that need some valid mutex.
    pub const fn private() -> RobustMutex {
        RobustMutex(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER))
    }

    /// Initialises the mutex in place.
    ///
    /// # Safety
    ///
    /// `this` points to writable, suitably aligned memory for a
    /// `RobustMutex` that no thread of any process uses yet, and that stays
    /// at this address for as long as anyone uses it.
    pub unsafe fn init(this: *mut RobustMutex) -> io::Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before the
        // setters use it and destroyed at the end; `this` is valid for
        // writes and unused by anyone else (the caller's contract).
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let a = attr.as_mut_ptr();
            let r = check(libc::pthread_mutexattr_settype(
                a,
                libc::PTHREAD_MUTEX_ERRORCHECK,
            ))
            .and_then(|_| {
                check(libc::pthread_mutexattr_setpshared(
                    a,
                    libc::PTHREAD_PROCESS_SHARED,
                ))
            })
            .and_then(|_| {
                check(libc::pthread_mutexattr_setrobust(
                    a,
                    libc::PTHREAD_MUTEX_ROBUST,
                ))
            })
            .and_then(|_| {
                check(libc::pthread_mutex_init(
                    UnsafeCell::raw_get(this.cast::<UnsafeCell<libc::pthread_mutex_t>>()),
                    a,
                ))
            });
            libc::pthread_mutexattr_destroy(a);
            r
        }
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
        // SAFETY: as in `lock`; the calling thread holds the mutex (it was
        // told `OwnerDied`), which is when pthread_mutex_consistent may be
        // called.
        check(unsafe { libc::pthread_mutex_consistent(self.raw()) })
    }

    /// Unlocks. Fails with `EPERM` when the calling thread does not hold it.
    #[inline]
    pub fn unlock(&self) -> io::Result<()> {
        // SAFETY: as in `lock`; an error-checking mutex refuses an unlock by
        // a thread that does not own it instead of corrupting it.
        check(unsafe { libc::pthread_mutex_unlock(self.raw()) })
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
