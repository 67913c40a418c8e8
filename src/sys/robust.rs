//! A mutex that lives in memory shared between processes and survives the
//! death of its owner: glibc's process-shared, robust, error-checking
//! `pthread_mutex_t`.
//!
//! Every thread registers a robust list with the kernel (glibc does it at
//! thread start). When a thread dies holding a robust mutex, the kernel
//! marks the mutex word `FUTEX_OWNER_DIED` and wakes one waiter; the next
//! `lock` then succeeds with [`Acquired::OwnerDied`]. The owner is named by
//! its kernel thread id, so a recycled process id cannot fool it. The new
//! owner repairs what the dead one left half done, calls
//! [`RobustMutex::mark_consistent`], and carries on.

use std::cell::UnsafeCell;
use std::io;
use std::time::Duration;

/// How [`RobustMutex::lock`] got the mutex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The previous owner unlocked it.
    Clean,
    /// The previous owner died holding it: repair the state it protects,
    /// then call [`RobustMutex::mark_consistent`] before unlocking.
    OwnerDied,
}

/// A `pthread_mutex_t` initialised process-shared and robust. Place it in
/// shared memory and initialise it once with [`RobustMutex::init`].
#[repr(C)]
pub struct RobustMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: the pthread mutex is designed to be used from many threads (and
// processes) at once; all access goes through pthread calls.
unsafe impl Sync for RobustMutex {}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

fn acquired(rc: libc::c_int) -> io::Result<Acquired> {
    match rc {
        0 => Ok(Acquired::Clean),
        libc::EOWNERDEAD => Ok(Acquired::OwnerDied),
        rc => Err(io::Error::from_raw_os_error(rc)),
    }
}

impl RobustMutex {
    /// Initialises a mutex in place (process-shared, robust,
    /// error-checking).
    ///
    /// # Safety
    ///
    /// `this` must point to writable memory of `size_of::<RobustMutex>()`
    /// bytes, suitably aligned, that no thread or process uses yet.
    pub unsafe fn init(this: *mut RobustMutex) -> io::Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before the
        // other calls use it and destroyed on every path; `this` is valid
        // and unused, as the caller promised.
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let r = check(libc::pthread_mutexattr_setpshared(
                attr.as_mut_ptr(),
                libc::PTHREAD_PROCESS_SHARED,
            ))
            .and_then(|_| {
                check(libc::pthread_mutexattr_setrobust(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ROBUST,
                ))
            })
            .and_then(|_| {
                check(libc::pthread_mutexattr_settype(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ERRORCHECK,
                ))
            })
            .and_then(|_| {
                check(libc::pthread_mutex_init(
                    UnsafeCell::raw_get(&raw const (*this).0),
                    attr.as_ptr(),
                ))
            });
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            r
        }
    }

    /// Locks, waiting as long as it takes. Fails with `EDEADLK` if this
    /// thread already holds it and `ENOTRECOVERABLE` if an earlier owner
    /// died and its successor unlocked without marking it consistent.
    pub fn lock(&self) -> io::Result<Acquired> {
        // SAFETY: the mutex was initialised by `init` (the caller of the
        // constructor of the shared structure guarantees it).
        acquired(unsafe { libc::pthread_mutex_lock(self.0.get()) })
    }

    /// Locks if it is free right now; `Ok(None)` when another thread holds
    /// it.
    pub fn try_lock(&self) -> io::Result<Option<Acquired>> {
        // SAFETY: as in `lock`.
        match unsafe { libc::pthread_mutex_trylock(self.0.get()) } {
            libc::EBUSY => Ok(None),
            rc => acquired(rc).map(Some),
        }
    }

    /// Locks, giving up (`Ok(None)`) after `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> io::Result<Option<Acquired>> {
        // pthread_mutex_timedlock takes an absolute CLOCK_REALTIME deadline.
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let mut sec = now
            .tv_sec
            .saturating_add(timeout.as_secs().min(i64::MAX as u64) as i64);
        let mut nsec = now.tv_nsec + i64::from(timeout.subsec_nanos());
        if nsec >= 1_000_000_000 {
            sec = sec.saturating_add(1);
            nsec -= 1_000_000_000;
        }
        let ts = libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        };
        // SAFETY: as in `lock`; `ts` is a valid timespec for the call.
        match unsafe { libc::pthread_mutex_timedlock(self.0.get(), &ts) } {
            libc::ETIMEDOUT => Ok(None),
            rc => acquired(rc).map(Some),
        }
    }

    /// After [`Acquired::OwnerDied`] and repair: makes the mutex usable
    /// again. Call before `unlock`.
    pub fn mark_consistent(&self) -> io::Result<()> {
        // SAFETY: as in `lock`; the calling thread holds the mutex.
        check(unsafe { libc::pthread_mutex_consistent(self.0.get()) })
    }

    /// Unlocks. Only the holding thread may call it.
    pub fn unlock(&self) -> io::Result<()> {
        // SAFETY: as in `lock`; error-checking mutexes refuse an unlock by
        // a thread that does not hold them (EPERM) instead of misbehaving.
        check(unsafe { libc::pthread_mutex_unlock(self.0.get()) })
    }
}
