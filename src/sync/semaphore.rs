//! [`Semaphore`] and [`BoundedSemaphore`]: counting semaphores shared
//! between processes (Python's `multiprocessing.Semaphore` /
//! `BoundedSemaphore`), on one futex word.
//!
//! # Shared state
//!
//! | field | meaning | ordering |
//! |---|---|---|
//! | `value` | the count; the futex word sleepers wait on while it is `0` | changed by CAS, `SeqCst` |
//! | `waiters` | processes/threads inside the slow path of `acquire` | `SeqCst` increments/decrements |
//! | `bound` | the largest allowed count (`u32::MAX` when unbounded) | written once at creation |
//!
//! No lost wake-up: an acquirer increments `waiters` and then re-reads
//! `value` before sleeping (and `FUTEX_WAIT` re-checks `value == 0`
//! atomically); a releaser increments `value` and then reads `waiters`.
//! With both sequences `SeqCst`, either the releaser sees the waiter and
//! wakes it, or the waiter sees the new count. A waiter killed while
//! counted in `waiters` only costs later releases a needless wake call.
//!
//! A semaphore has no owner: a process killed after acquiring does not
//! give its unit back (as in Python). Waits have timeouts.

use std::fmt;
use std::io;
use std::mem::offset_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ReleaseError;
use crate::codec::SharedFd;
use crate::segment::{Kind, Segment};
use crate::sys;
use crate::sys::futex::Wake;
use crate::wait::{self, Deadline, Spin, futex_wait};

#[repr(C)]
struct State {
    value: AtomicU32,
    waiters: AtomicU32,
    bound: AtomicU32,
}

/// A [`State`] in place.
struct Words<'a> {
    value: &'a AtomicU32,
    waiters: &'a AtomicU32,
    bound: &'a AtomicU32,
}

#[derive(Clone)]
struct Core {
    seg: Arc<Segment>,
    spin: Arc<Spin>,
}

const PLAIN: u64 = 0;
const BOUNDED: u64 = 1;

impl Core {
    fn new(value: u32, bound: u32, tag: u64) -> io::Result<Core> {
        let seg = Segment::create(Kind::Semaphore, tag, 0, std::mem::size_of::<State>())?;
        let core = Core::from_segment(seg);
        let st = core.state();
        st.value.store(value, Ordering::Relaxed);
        st.bound.store(bound, Ordering::Relaxed);
        Ok(core)
    }

    fn open(fd: SharedFd, tag: u64) -> Result<Core, String> {
        let seg = Segment::open(fd, Kind::Semaphore, tag, |_| {
            Some(std::mem::size_of::<State>())
        })?;
        Ok(Core::from_segment(seg))
    }

    fn from_segment(seg: Segment) -> Core {
        Core {
            seg: Arc::new(seg),
            spin: Arc::new(Spin::new(&wait::SYNC)),
        }
    }

    /// The payload's `State` (checked at creation or attachment), each
    /// word through the segment's checked accessor.
    fn state(&self) -> Words<'_> {
        Words {
            value: self.seg.payload_at(offset_of!(State, value)),
            waiters: self.seg.payload_at(offset_of!(State, waiters)),
            bound: self.seg.payload_at(offset_of!(State, bound)),
        }
    }

    fn try_take(&self) -> bool {
        let value = self.state().value;
        let mut v = value.load(Ordering::SeqCst);
        while v > 0 {
            match value.compare_exchange_weak(v, v - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    fn acquire(&self, timeout: Option<Duration>) -> bool {
        if self.try_take() {
            return true;
        }
        if timeout == Some(Duration::ZERO) {
            return false;
        }
        let deadline = Deadline::from_timeout(timeout);
        if self.spin.look_then_spin(|| self.try_take()) {
            return true;
        }
        let st = self.state();
        st.waiters.fetch_add(1, Ordering::SeqCst);
        let got = loop {
            if self.try_take() {
                break true;
            }
            if futex_wait(st.value, 0, deadline) == Wake::TimedOut {
                break self.try_take();
            }
        };
        st.waiters.fetch_sub(1, Ordering::SeqCst);
        got
    }

    fn release(&self, n: u32) -> Result<(), ReleaseError> {
        let st = self.state();
        let bound = st.bound.load(Ordering::Relaxed);
        let mut v = st.value.load(Ordering::SeqCst);
        loop {
            let new = v.checked_add(n).ok_or(ReleaseError::Overflow)?;
            if new > bound {
                return Err(if bound == u32::MAX {
                    ReleaseError::Overflow
                } else {
                    ReleaseError::TooManyReleases { bound }
                });
            }
            match st
                .value
                .compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if st.waiters.load(Ordering::SeqCst) > 0 {
            sys::futex::wake(st.value, n);
        }
        Ok(())
    }

    fn value(&self) -> u32 {
        self.state().value.load(Ordering::SeqCst)
    }
}

macro_rules! semaphore {
    ($(#[$doc:meta])* $name:ident, $tag:expr, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            core: Core,
        }

        impl $name {
            /// Takes one unit, waiting as long as it takes.
            pub fn acquire(&self) {
                self.core.acquire(None);
            }

            /// Takes one unit, waiting at most `timeout`; `false` if none
            /// became available.
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                self.core.acquire(Some(timeout))
            }

            /// Takes one unit if one is available now.
            pub fn try_acquire(&self) -> bool {
                self.core.acquire(Some(Duration::ZERO))
            }

            /// The current count.
            pub fn value(&self) -> u32 {
                self.core.value()
            }

            /// Python's name for [`value`](Self::value).
            pub fn get_value(&self) -> u32 {
                self.value()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("value", &self.value())
                    .finish()
            }
        }

        #[doc = concat!("A `", stringify!($name), "` travels to another process as its shared memory's descriptor.")]
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.core.seg.fd().serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let fd = SharedFd::deserialize(d)?;
                let core = Core::open(fd, $tag).map_err(|e| {
                    serde::de::Error::custom(format!("{e} (a {} was expected)", $kind))
                })?;
                Ok($name { core })
            }
        }
    };
}

semaphore!(
    /// A counting semaphore for processes and threads (Python's
    /// `multiprocessing.Semaphore`).
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(2)?;
    /// assert!(sem.try_acquire());
    /// assert!(sem.try_acquire());
    /// assert!(!sem.try_acquire());
    /// sem.release()?;
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    Semaphore,
    PLAIN,
    "Semaphore"
);

semaphore!(
    /// A semaphore that refuses to be released above its initial value
    /// (Python's `multiprocessing.BoundedSemaphore`).
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1)?;
    /// assert!(sem.release().is_err());
    /// sem.acquire();
    /// sem.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    BoundedSemaphore,
    BOUNDED,
    "BoundedSemaphore"
);

impl Semaphore {
    /// A semaphore holding `value` units.
    pub fn new(value: u32) -> io::Result<Semaphore> {
        Ok(Semaphore {
            core: Core::new(value, u32::MAX, PLAIN)?,
        })
    }

    /// Gives one unit back and wakes one waiter. Any process may release,
    /// whether or not it acquired.
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.core.release(1)
    }

    /// Gives `n` units back at once.
    pub fn release_n(&self, n: u32) -> Result<(), ReleaseError> {
        self.core.release(n)
    }
}

impl BoundedSemaphore {
    /// A bounded semaphore holding `value` units, which is also its bound.
    pub fn new(value: u32) -> io::Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            core: Core::new(value, value, BOUNDED)?,
        })
    }

    /// Gives one unit back and wakes one waiter;
    /// [`ReleaseError::TooManyReleases`] if the count is already at its
    /// bound.
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.core.release(1)
    }
}
