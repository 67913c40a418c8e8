//! The one raw lock under [`Lock`](crate::Lock), [`RLock`](crate::RLock),
//! [`Condition`](crate::Condition) and the locks of
//! [`Value`](crate::Value)/[`Array`](crate::Array): a robust,
//! process-shared, error-checking pthread mutex placed in shared memory,
//! plus a recursion depth for `RLock`, implementing
//! [`lock_api::RawMutex`] so that `lock_api` guards sit on top.
//!
//! # Owner death
//!
//! The mutex is glibc's `PTHREAD_MUTEX_ROBUST` kind, which uses the
//! kernel's robust-futex protocol: glibc links every robust mutex a thread
//! holds into that thread's robust list (registered with
//! `set_robust_list`), and when the thread ends, however it ends (return,
//! `pthread_exit`, `SIGKILL` of its process), the kernel walks the list,
//! sets `FUTEX_OWNER_DIED` in each held mutex's word and wakes one waiter.
//! That waiter's lock call returns `EOWNERDEAD`: it now holds the mutex,
//! marks it consistent at once, and the crate hands it a guard inside
//! [`LockError::OwnerDied`](crate::LockError::OwnerDied). Detection is
//! immediate (no polling) and exact: the owner is a *thread*, identified by
//! the kernel, so neither pid reuse nor threads confuse it.
//!
//! The alternative, a futex word of our own holding the owner's id, with
//! waiters sleeping in slices and checking whether the owner still runs,
//! was not taken: it notices a death only after a slice, must tell a dead
//! thread from a recycled id (pids wrap after `pid_max`, 32768 by default),
//! and relies on `/proc` and on every process sharing one pid namespace. A
//! futex word of our own on the kernel's robust list is not possible
//! either: the kernel keeps one list per thread, and glibc owns it. What
//! this crate does instead is run glibc's robust protocol inline on
//! glibc's own list (see [`crate::sys::robust_mutex`]): lock and unlock
//! are one atomic each plus a few stores linking the mutex into the
//! thread's list, against glibc's calls, which cost two to four times a
//! minimal futex mutex. What remains above the minimal futex mutex (about
//! 2x uncontended, see the `sync.*` rows of `benches/compare`) is that
//! list bookkeeping — the price of telling a thread's death, not just a
//! process's — and the `held` count below.
//!
//! # The futex word
//!
//! The first 32 bits of the mutex are the futex word the kernel's robust
//! protocol defines (the pthread implementation and the kernel change it;
//! this crate only reads it, for `is_locked`):
//!
//! | word | meaning | who moves it on |
//! |---|---|---|
//! | `0` | free | a locker CASes in its tid |
//! | `tid` | held by thread `tid`, nobody asleep | the owner CASes back to `0` on unlock; a contender sets `FUTEX_WAITERS` before sleeping |
//! | `tid \| FUTEX_WAITERS` | held, someone sleeps or is about to | the owner's unlock stores `0` and `FUTEX_WAKE`s one sleeper |
//! | `FUTEX_OWNER_DIED` (+ `FUTEX_WAITERS`) | the owner's thread ended holding it; the kernel set the bit, cleared the tid and woke one sleeper | the next locker CASes in its tid (keeping the bit), gets `EOWNERDEAD`, then `pthread_mutex_consistent` |
//!
//! with `FUTEX_WAITERS = 0x8000_0000`, `FUTEX_OWNER_DIED = 0x4000_0000` and
//! the tid in the low 30 bits. An owner that unlocks after `EOWNERDEAD`
//! *without* `pthread_mutex_consistent` would make the mutex permanently
//! unusable (`ENOTRECOVERABLE`); this crate always makes it consistent
//! before returning, so the owner-died state is reported to exactly one
//! acquirer.
//!
//! # Recursion
//!
//! The mutex itself is error-checking, never recursive: relocking from the
//! owning thread fails with `EDEADLK`. A non-recursive lock reports that as
//! [`LockError::WouldDeadlock`](crate::LockError::WouldDeadlock) instead of
//! hanging; a recursive one (`RLock`) takes it as "already mine" and bumps
//! `depth`, a counter only the owning thread touches.
//!
//! # Unmapping
//!
//! While a thread holds a robust mutex, the mutex is linked into the
//! thread's robust list by its address. A handle whose guard was leaked
//! (`mem::forget`) therefore must not unmap the memory when dropped: `held`
//! counts this handle's acquisitions, and the owner of the segment leaks
//! the mapping rather than unmap it while `held` is non-zero.

#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use crate::sys::robust_mutex::{FUTEX_TID_MASK, LockFailed, Locked, RobustMutex};

/// The lock as laid out in shared memory.
#[repr(C)]
pub(crate) struct SharedMutex {
    mutex: RobustMutex,
    /// How many times the owner holds it (recursive locks only; stays 0
    /// in a non-recursive one); written by
    /// the owning thread alone, so relaxed ordering suffices: the mutex's
    /// own acquire/release orders it for the next owner.
    depth: AtomicU32,
}

impl SharedMutex {
    /// Initialises a lock in place.
    ///
    /// # Safety
    ///
    /// `this` points to zeroed, writable, suitably aligned memory that
    /// nobody uses yet and that stays at this address while in use.
    pub unsafe fn init(this: *mut SharedMutex) -> io::Result<()> {
        // `mutex` is the first field of this `repr(C)` structure.
        let mutex = this.cast::<RobustMutex>();
        // SAFETY: the caller's contract covers the mutex field too.
        unsafe { RobustMutex::init(mutex) }
    }
}

static PLACEHOLDER: SharedMutex = SharedMutex {
    mutex: RobustMutex::private(),
    depth: AtomicU32::new(0),
};

/// A process-local binding to a [`SharedMutex`] in a mapped segment.
pub(crate) struct RawRobustMutex {
    shared: *const SharedMutex,
    recursive: bool,
    /// Acquisitions through this binding not yet released. Only changed
    /// by the thread holding the lock, while holding it, so plain loads
    /// and stores suffice (the lock orders them).
    held: AtomicUsize,
}

// SAFETY: the pointer targets shared memory designed for concurrent use
// from any thread of any process (a process-shared mutex and an atomic).
unsafe impl Send for RawRobustMutex {}
// SAFETY: as above.
unsafe impl Sync for RawRobustMutex {}

impl RawRobustMutex {
    /// Binds to the lock at `shared`.
    ///
    /// # Safety
    ///
    /// `shared` points to a `SharedMutex` initialised by
    /// [`SharedMutex::init`] that stays mapped as long as this binding
    /// lives.
    pub unsafe fn bind(shared: *const SharedMutex, recursive: bool) -> Self {
        RawRobustMutex {
            shared,
            recursive,
            held: AtomicUsize::new(0),
        }
    }

    #[inline]
    fn shared(&self) -> &SharedMutex {
        // SAFETY: `bind`'s contract (or the placeholder static).
        unsafe { &*self.shared }
    }

    /// Whether this binding holds the lock (so its memory must stay
    /// mapped).
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed) != 0
    }

    /// Whether anyone holds the lock right now (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.shared().mutex.word() & FUTEX_TID_MASK != 0
    }

    /// The recursion depth (a snapshot; exact for the owning thread).
    pub fn depth(&self) -> u32 {
        self.shared().depth.load(Ordering::Relaxed)
    }

    /// Acquires, waiting at most `timeout` (`None`: no limit;
    /// `Some(ZERO)`: try once).
    ///
    /// There is no spinning: a contender sleeps in the kernel at once. On
    /// a lock taken and released in a tight loop by several processes,
    /// spinning waiters grab the lock at every release and the lock's
    /// cache line moves between CPUs on every acquisition (measured 3-4x
    /// slower); sleeping waiters let the running holder keep it.
    #[inline]
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<Locked, LockFailed> {
        let m = &self.shared().mutex;
        let r = match timeout {
            Some(Duration::ZERO) => m.try_lock(),
            t => m.lock(t),
        };
        self.account(r)
    }

    #[inline]
    fn account(&self, r: Result<Locked, LockFailed>) -> Result<Locked, LockFailed> {
        let depth = &self.shared().depth;
        let r = match r {
            Ok(how) => {
                if how == Locked::OwnerDied {
                    // The lock stays usable; the caller is told the data
                    // it guards may be half-updated. It holds the mutex,
                    // so this cannot fail.
                    let _ = self.shared().mutex.mark_consistent();
                }
                // Only a recursive lock keeps a depth (a non-recursive
                // one is held once or not at all).
                if self.recursive {
                    depth.store(1, Ordering::Relaxed);
                }
                Ok(how)
            }
            Err(LockFailed::Deadlock) if self.recursive => {
                let d = depth.load(Ordering::Relaxed);
                if d == u32::MAX {
                    return Err(LockFailed::Os(io::Error::other(
                        "recursive lock acquired 2^32 times",
                    )));
                }
                depth.store(d + 1, Ordering::Relaxed);
                Ok(Locked::Clean)
            }
            Err(e) => return Err(e),
        };
        self.add_held(1);
        r
    }

    #[inline]
    fn add_held(&self, n: usize) {
        let h = self.held.load(Ordering::Relaxed);
        self.held.store(h.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    fn sub_held(&self, n: usize) {
        let h = self.held.load(Ordering::Relaxed);
        self.held.store(h.wrapping_sub(n), Ordering::Relaxed);
    }

    /// Releases one level (the lock itself when the depth reaches zero).
    /// Only the owning thread may call it.
    #[inline]
    pub fn release(&self) {
        self.sub_held(1);
        if self.recursive {
            let depth = &self.shared().depth;
            let d = depth.load(Ordering::Relaxed);
            if d > 1 {
                depth.store(d - 1, Ordering::Relaxed);
                return;
            }
            depth.store(0, Ordering::Relaxed);
        }
        // An error here means the caller is not the owner; the guard types
        // (not `Send`) make that impossible.
        let _ = self.shared().mutex.unlock();
    }

    /// Releases every level at once (for a condition wait); returns the
    /// depth to restore with [`reacquire`](Self::reacquire).
    pub fn release_all(&self) -> u32 {
        if !self.recursive {
            self.release();
            return 1;
        }
        let depth = self.shared().depth.load(Ordering::Relaxed).max(1);
        self.sub_held(depth as usize - 1);
        self.shared().depth.store(1, Ordering::Relaxed);
        self.release();
        depth
    }

    /// Takes the lock back after [`release_all`](Self::release_all), at
    /// the same depth, waiting as long as it takes.
    pub fn reacquire(&self, depth: u32) -> Result<Locked, LockFailed> {
        let r = self.acquire(None)?;
        if self.recursive {
            self.shared().depth.store(depth, Ordering::Relaxed);
            self.add_held(depth as usize - 1);
        }
        Ok(r)
    }
}

// SAFETY: `acquire`/`release` give mutual exclusion across every thread
// of every process (a process-shared pthread mutex); guards are not `Send`
// because only the owning thread may unlock an error-checking mutex.
unsafe impl lock_api::RawMutex for RawRobustMutex {
    /// A binding to a process-private placeholder mutex. The crate never
    /// uses it: every binding comes from [`RawRobustMutex::bind`].
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawRobustMutex {
        shared: &raw const PLACEHOLDER,
        recursive: false,
        held: AtomicUsize::new(0),
    };

    type GuardMarker = lock_api::GuardNoSend;

    /// Blocks until acquired. The crate acquires through
    /// [`acquire`](RawRobustMutex::acquire), which reports owner death and
    /// self-deadlock; this trait method (unused by the crate) treats an
    /// owner death as an ordinary acquisition, and a self-deadlock as one:
    /// it never returns, as `std::sync::Mutex` may do.
    fn lock(&self) {
        if self.acquire(None).is_err() {
            loop {
                std::thread::park();
            }
        }
    }

    fn try_lock(&self) -> bool {
        self.acquire(Some(Duration::ZERO)).is_ok()
    }

    unsafe fn unlock(&self) {
        self.release();
    }

    fn is_locked(&self) -> bool {
        RawRobustMutex::is_locked(self)
    }
}
