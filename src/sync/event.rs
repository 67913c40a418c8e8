//! [`Event`]: a flag processes wait for (Python's
//! `multiprocessing.Event`), on one futex word.
//!
//! # The futex word
//!
//! | word | meaning |
//! |---|---|
//! | `0` | clear, nobody asleep |
//! | `WAITERS` | clear, someone sleeps or is about to (so `set` must wake) |
//! | `SET` | set (waiters never sleep on a set event) |
//! | `SET \| WAITERS` | never: a waiter adds `WAITERS` only to a clear word, and `set` stores `SET` alone |
//!
//! `set` swaps the word to `SET` and wakes every sleeper if `WAITERS` was
//! there; skipping the wake when nobody sleeps keeps `set` a single atomic
//! operation. A waiter sets `WAITERS` with a CAS and sleeps with the value
//! it wrote as the expected value, so a `set` in between makes the kernel
//! return at once. `clear` only removes `SET`, keeping `WAITERS`. All
//! operations are `SeqCst`. No lock is involved, so a process dying at any
//! point leaves a usable event (at worst a stale `WAITERS` bit costing one
//! wake call).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::segment::{Kind, Segment};
use crate::sys;
use crate::sys::futex::Wake;
use crate::wait::{self, Deadline, Spin, futex_wait};

const SET: u32 = 1;
const WAITERS: u32 = 2;

/// A flag that processes and threads can set, clear and wait for
/// (Python's `multiprocessing.Event`).
///
/// ```
/// use multiproc::{Event, Process};
///
/// fn child(e: Event) {
///     e.set();
/// }
///
/// let e = Event::new()?;
/// let mut p = Process::new(child, e.clone());
/// p.start()?;
/// assert!(e.wait_timeout(std::time::Duration::from_secs(30)));
/// p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Event {
    seg: Arc<Segment>,
    spin: Arc<Spin>,
}

impl Event {
    /// A new, clear event.
    pub fn new() -> io::Result<Event> {
        let seg = Segment::create(Kind::Event, 0, 0, std::mem::size_of::<AtomicU32>())?;
        Ok(Event::from_segment(seg))
    }

    fn from_segment(seg: Segment) -> Event {
        Event {
            seg: Arc::new(seg),
            spin: Arc::new(Spin::new(&wait::SYNC)),
        }
    }

    fn word(&self) -> &AtomicU32 {
        // The payload starts with the event's word.
        self.seg.payload_at(0)
    }

    /// Whether the event is set.
    pub fn is_set(&self) -> bool {
        self.word().load(Ordering::SeqCst) & SET != 0
    }

    /// Sets the event, waking every waiter.
    pub fn set(&self) {
        if self.word().swap(SET, Ordering::SeqCst) & WAITERS != 0 {
            sys::futex::wake_all(self.word());
        }
    }

    /// Clears the event.
    pub fn clear(&self) {
        self.word().fetch_and(!SET, Ordering::SeqCst);
    }

    /// Waits until the event is set.
    pub fn wait(&self) {
        self.wait_until(Deadline::NEVER);
    }

    /// Waits at most `timeout` for the event to be set; returns whether it
    /// is set (Python's `wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(timeout))
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        if self.is_set() || self.spin.look_then_spin(|| self.is_set()) {
            return true;
        }
        let word = self.word();
        loop {
            let mut w = word.load(Ordering::SeqCst);
            if w & SET != 0 {
                return true;
            }
            if w & WAITERS == 0 {
                match word.compare_exchange(w, w | WAITERS, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => w |= WAITERS,
                    Err(_) => continue,
                }
            }
            if futex_wait(word, w, deadline) == Wake::TimedOut {
                return self.is_set();
            }
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

/// An `Event` travels to another process as its shared memory's
/// descriptor.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.seg.fd().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = Segment::receive(
            d,
            Kind::Event,
            0,
            |_| Some(std::mem::size_of::<AtomicU32>()),
        )?;
        Ok(Event::from_segment(seg))
    }
}
