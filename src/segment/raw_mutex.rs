//! The one raw lock under [`Lock`](crate::Lock), [`RLock`](crate::RLock),
//! [`Condition`](crate::Condition) and the locks of
//! [`Value`](crate::Value)/[`Array`](crate::Array): the crate's own lock
//! word ([`OwnerLock`]) placed in shared memory, plus a recursion depth
//! for `RLock`, implementing [`lock_api::RawMutex`] so that `lock_api`
//! guards sit on top. That split is the model for the crate's locks: the
//! raw word and its owner-death rule here, once, and every guard, timeout
//! and poisoning-free API from `lock_api`, never written by hand.
//!
//! # Owner death
//!
//! The word holds its owner's identity (kernel thread id and that
//! thread's start time). Nobody marks it when the owner dies; a contender
//! that has to wait sleeps in bounded slices and, when a slice runs out
//! with the same owner in the word, asks `/proc` whether that thread still
//! runs (a try-lock asks at once). If it has ended, the contender takes
//! the word over and is told [`Locked::OwnerDied`], which the crate hands
//! on as [`LockError::OwnerDied`](crate::LockError::OwnerDied) with a
//! guard. Exactly one contender wins the takeover, so the death is
//! reported once; the lock is usable again at once (there is no
//! "inconsistent" state to clear).
//!
//! The uncontended lock is one compare-and-swap, the uncontended unlock
//! another: the work of a minimal futex mutex. The kernel's robust-futex
//! list (which glibc's robust mutexes use, and which this lock used
//! before) tells a death at once and exactly, but costs list bookkeeping
//! on every lock and unlock, about twice a minimal futex mutex here; see
//! [`crate::sys::owner_lock`] for the measurement and the limits of the
//! polled scheme (one pid namespace with `/proc`, death seen after a
//! slice of at most 32 ms).
//!
//! # The word
//!
//! See the state table in [`crate::sys::owner_lock`]: `0` free, else the
//! owner's `start:tid`, with a waiters bit that makes the unlock wake one
//! sleeper.
//!
//! # Recursion
//!
//! The word is error-checking, never recursive: relocking from the owning
//! thread fails with `Deadlock`. A non-recursive lock reports that as
//! [`LockError::WouldDeadlock`](crate::LockError::WouldDeadlock) instead of
//! hanging; a recursive one (`RLock`) takes it as "already mine" and bumps
//! `depth`, a counter only the owning thread touches.
//!
//! # Unmapping
//!
//! Nothing outside the shared memory points into it (unlike a robust
//! mutex, which sits in its owner's robust list by address), so a handle
//! whose guard was leaked may unmap its memory: the lock stays held, in
//! the memory file, by a live thread.

#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::owner_lock::{LockFailed, Locked, OwnerLock};

/// The lock as laid out in shared memory.
#[repr(C)]
pub(crate) struct SharedMutex {
    mutex: OwnerLock,
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
        let mutex = this.cast::<OwnerLock>();
        // SAFETY: the caller's contract covers the mutex field too.
        unsafe { OwnerLock::init(mutex) };
        Ok(())
    }
}

static PLACEHOLDER: SharedMutex = SharedMutex {
    mutex: OwnerLock::new(),
    depth: AtomicU32::new(0),
};

/// A process-local binding to a [`SharedMutex`] in a mapped segment.
pub(crate) struct RawRobustMutex {
    shared: *const SharedMutex,
    recursive: bool,
}

// SAFETY: the pointer targets shared memory designed for concurrent use
// from any thread of any process (a lock word and an atomic).
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
        RawRobustMutex { shared, recursive }
    }

    #[inline]
    fn shared(&self) -> &SharedMutex {
        // SAFETY: `bind`'s contract (or the placeholder static).
        unsafe { &*self.shared }
    }

    /// Whether anyone holds the lock right now (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.shared().mutex.is_locked()
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
        let shared = self.shared();
        if shared.mutex.take_free() {
            // Only a recursive lock keeps a depth (a non-recursive one is
            // held once or not at all).
            if self.recursive {
                shared.depth.store(1, Ordering::Relaxed);
            }
            return Ok(Locked::Clean);
        }
        self.acquire_held(timeout)
    }

    /// [`acquire`](Self::acquire) when the word was not free (out of line,
    /// so that the fast path builds no result on the stack).
    #[inline(never)]
    fn acquire_held(&self, timeout: Option<Duration>) -> Result<Locked, LockFailed> {
        let r = self.shared().mutex.lock(timeout);
        if !self.recursive {
            return r;
        }
        self.account(r)
    }

    #[inline]
    fn account(&self, r: Result<Locked, LockFailed>) -> Result<Locked, LockFailed> {
        let depth = &self.shared().depth;
        match r {
            Ok(how) => {
                depth.store(1, Ordering::Relaxed);
                Ok(how)
            }
            Err(LockFailed::Deadlock) => {
                let d = depth.load(Ordering::Relaxed);
                if d == u32::MAX {
                    return Err(LockFailed::Os(io::Error::other(
                        "recursive lock acquired 2^32 times",
                    )));
                }
                depth.store(d + 1, Ordering::Relaxed);
                Ok(Locked::Clean)
            }
            Err(e) => Err(e),
        }
    }

    /// Releases one level (the lock itself when the depth reaches zero).
    /// Only the owning thread may call it.
    #[inline]
    pub fn release(&self) {
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
        }
        Ok(r)
    }
}

// SAFETY: `acquire`/`release` give mutual exclusion across every thread
// of every process (one lock word in shared memory); guards are not
// `Send` because only the owning thread may unlock the word.
unsafe impl lock_api::RawMutex for RawRobustMutex {
    /// A binding to a process-private placeholder mutex. The crate never
    /// uses it: every binding comes from [`RawRobustMutex::bind`].
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawRobustMutex {
        shared: &raw const PLACEHOLDER,
        recursive: false,
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

    #[inline]
    fn try_lock(&self) -> bool {
        self.acquire(Some(Duration::ZERO)).is_ok()
    }

    #[inline]
    unsafe fn unlock(&self) {
        self.release();
    }

    #[inline]
    fn is_locked(&self) -> bool {
        RawRobustMutex::is_locked(self)
    }
}
