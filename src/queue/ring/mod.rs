//! The shared-memory ring behind every queue: a circular linked list of
//! 64 KiB segments in one sparse, sealed memfd, carrying length-prefixed
//! records, with a robust lock and a single commit word per side. The
//! linked blocks follow crossbeam-channel's `list` flavor (made circular
//! so that blocks are reused in place, and shared between processes);
//! the one-word commit and the cached opposite index follow the classic
//! single-producer/single-consumer ring (Lamport; Vyukov's "cached
//! head/tail").
//!
//! # Layout of the memfd
//!
//! ```text
//! 0          Header (immutable geometry, then one cache line per shared word group)
//! 4 KiB      segment table:   nslots × u64  [lseg: u32 | next: u32]
//! ...        slot bitmap:     nslots bits   (1 = the slot is a member of the circle)
//! ...        resident bitmap: nslots bits   (1 = the segment's memory is in place)
//! 64 KiB k   data:            nslots × 64 KiB segments
//! ```
//!
//! The file is sized once (`ftruncate`) to the queue's *capacity* (16 GiB by
//! default) and sealed against resizing; it is sparse, so it costs memory
//! only where segments have been written. Every process maps all of it.
//!
//! # Positions
//!
//! The byte stream of records is addressed by *positions*: `u32` counts of
//! 8-byte units, wrapping (a 32 GiB window; the capacity is kept below
//! 31 GiB so that comparisons never wrap). Position `p` lies in logical
//! segment `cseg(p) = (p - 1) >> 13`: a position on a segment boundary
//! belongs to the segment that *ends* there, so a cursor moves into the next
//! segment only when it reads or writes a byte in it. Logical segment
//! numbers are 19-bit and wrap too. Each record is `[len: u64][len bytes]`
//! padded to 8 bytes; records may straddle segments.
//!
//! # The circle of segments
//!
//! Physical slots form a circular linked list (`next` in the table). The
//! producers' tail segment `P` and the consumers' current segment `C`
//! (word `c_slot`) split it into the arc `[C ..= P]` of segments holding
//! unconsumed bytes and the arc `(P .. C)` of free segments. A producer
//! leaving segment `A` looks at `X = A.next`:
//!
//! * `X != C`: `X` is free. If its memory is still in place (its resident
//!   bit) it is reused in place; otherwise it is unlinked, its slot
//!   returned to the bitmap, and the producer looks again.
//! * `X == C`: the queue has caught up with itself; a slot from the bitmap
//!   is backed with memory (`fallocate`, so exhaustion is an error, not
//!   `SIGBUS`), given the next logical number and linked in after `A`.
//!
//! A consumer leaving a segment decides its fate *before* publishing its
//! new `c_slot`, so a producer never sees a segment free whose fate is
//! still open: while fewer than `keep` free segments are resident (the
//! counter `free_resident`; `keep` is the ring size, 4 MiB by default), it
//! keeps it in memory for producers to reuse; otherwise it punches it out
//! of the file (`fallocate(PUNCH_HOLE)`). So steady traffic, even with a
//! standing backlog, circulates through resident segments with no page
//! faults (only a growing backlog takes fresh memory), a backlog of any
//! size up to the capacity spills into new segments, and once consumed
//! those cost nothing again: an idle queue holds at most its ring, plus the
//! segment its consumers stand in and 8 bytes of table and two bits per
//! slot ever used.
//!
//! # State table: every shared word
//!
//! | word | written by | protected by | meaning | orderings |
//! |---|---|---|---|---|
//! | `tail` | producer | P lock | `[put_seq: u32 \| tail position: u32]`, the producers' **commit** | SeqCst store after the record and links are written (a Release that also orders the waiter-flag load); consumers load Acquire |
//! | `p_slot` | producer | P lock | slot of `cseg(tail)`; stale only after a death | Relaxed (the lock orders it) |
//! | `alloc_hint` | producer | P lock | lowest slot index that may be clear in the bitmap | Relaxed |
//! | `seen_get` | producer | P lock | a `get_seq` seen earlier (lower bound, for `maxsize`) | Relaxed |
//! | `head` | consumer | C lock | `[get_seq: u32 \| head position: u32]`, the consumers' **commit** | SeqCst store after the record was copied out; producers load Acquire |
//! | `c_slot` | consumer | C lock | slot of `cseg(head)`: the first segment producers must not touch | Release store after the segments left behind are kept or punched; producers load Acquire |
//! | `seen_put` | consumer | C lock | a `put_seq` seen earlier (lower bound) | Relaxed |
//! | table entry | producer | P lock | `[lseg \| next]` of a slot | Relaxed: consumers read an entry only after an Acquire load of a `tail` stored after it |
//! | slot bitmap words | producer | P lock | circle membership (a superset of it) | Relaxed |
//! | resident bit of a slot | consumer, when releasing it (C lock); producer, when taking a slot not in the circle (P lock) | the two never touch the same slot at once | whether the segment's memory is in place | atomic bit RMW, Relaxed; the producer reads a free slot's bit after its Acquire of `c_slot` |
//! | `free_resident` | consumer (+1 when keeping), producer (−1 when reusing); recounted holding both locks | both locks, separately | resident free segments, compared with `keep`; exact except after a death or a failed `put` (until the recount) | Relaxed RMW: a policy input, never a correctness one |
//! | `recount` | consumer repairing after a death (C lock); P lock holder | P lock to clear | `free_resident` may be off: the next P lock holder recounts it under both locks | Relaxed |
//! | `done` | `task_done` | CAS | tasks finished (`JoinableQueue`) | SeqCst CAS |
//! | `hangups` | a process whose last producer handle went away (`fifo.rs`) | none | bumped after that process closed its end of the hang-up socket, so that sleeping consumers look whether producers are left | SeqCst RMW, then `data_event` is notified; consumers load SeqCst |
//! | events | waiters / notifiers | none | see `wait.rs` | SeqCst |
//! | `cpus[0]`, `cpus[1]` | the last `put` (`cpus[0]`) or `get` (`cpus[1]`), when it differs | none | the CPU that side is pinned to, plus one (0: not pinned or not known yet): a hint for whether the other side's spin can pay (`wait::may_spin_beside`) | Relaxed |
//! | `aio[0]`, `aio[1]` | an async consumer (`aio[0]`) or producer (`aio[1]`) about to wait (`1`); the `put` (`aio[0]`) or `get` (`aio[1]`) that swaps it back to `0` and rings the doorbell (`queue/aio.rs`) | none | an async task may wait for data / space on the hang-up socket | SeqCst (Dekker's pattern with the commit words, as for events) |
//!
//! The robust mutexes are glibc's (`sys::robust_mutex`); their own words are
//! theirs.
//!
//! # Crash recovery
//!
//! A process may die at any instruction. What survivors see:
//!
//! | dies … | left behind | repaired by |
//! |---|---|---|
//! | in `put`, before the `tail` store | bytes and perhaps linked segments beyond the tail: invisible, the segments are free | nothing to repair: the next producer writes over them |
//! | in `put`, between taking a slot and linking it | a bitmap bit set for a slot outside the circle (bits are set before backing and linking, and cleared after unlinking), perhaps backed by memory | the next P lock holder, told `OwnerDied`, rebuilds the bitmap from the circle and punches such orphans |
//! | in `put`, after linking fresh or reusing kept segments | free segments in memory beyond the ring's worth (at most the dead message's), `free_resident` too low, until the next `put` | `OwnerDied` (or the failing `put` itself): holding the C lock too, so that no consumer keeps segments meanwhile, walk the free arc, punch those beyond `keep`, recount `free_resident` exactly |
//! | in `put`, after the `tail` store | a committed message; `p_slot` possibly one segment behind | `OwnerDied`: walk from `p_slot` along `next` to the segment whose `lseg` is `cseg(tail)` |
//! | in `get`, before the `head` store | nothing consumed: the next `get` returns the same message | nothing |
//! | in `get`, after the `head` store | the message consumed (the `get` had done everything but return); `c_slot` behind, segments left behind not yet kept or punched | `OwnerDied`: walk from `c_slot` to `cseg(head)` deciding each again (punching twice is harmless; no producer reuses them until `c_slot` moves); a segment kept twice overstates `free_resident`, so the repairer sets `recount` |
//! | holding either lock | the lock | the kernel marks it owner-dead; the next locker repairs as above |
//! | between a commit and its wake-up call (or doorbell) | sleepers (async waiters) not woken | sleepers re-check every [`SLICE`](crate::wait::SLICE) |
//! | holding producer handles (its end of the hang-up socket, see `fifo.rs`) | nothing in this memory: the kernel closes its descriptors, `hangups` is not bumped | consumers that sleep look at the socket every [`SLICE`](crate::wait::SLICE) |
//!
//! So a message is visible exactly when its `tail` store happened, and
//! consumed exactly when its `head` store happened; both are single
//! stores made while the side's lock is held, after all the bytes they
//! publish or release were written or read.
//!
//! These two tables, one row per shared word and one row per place a
//! process may die, are the model for every shared-memory structure in the
//! crate: a new one gets both, and a change here changes them first.
//!
//! # Where the code lives
//!
//! * here: the layout (header, table, bitmaps), positions, and the
//!   accessors every side uses;
//! * `create.rs`: making a ring and attaching to one received from
//!   another process (the layout checks);
//! * `put.rs`: the producer side, the [`Writer`] and growing the circle;
//! * `get.rs`: the consumer side, the [`Record`], and releasing segments;
//! * `recovery.rs`: repairing either side after a death (the crash
//!   table), and recounting the resident free segments;
//! * `waiting.rs`: waiting for data, for a `get`, and for tasks
//!   (`JoinableQueue`).

#![allow(unsafe_code)]

mod create;
mod get;
mod put;
mod recovery;
mod waiting;

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::codec::SharedFd;
use crate::macros::from_variants;
use crate::sys;
use crate::sys::robust_mutex::{LockFailed, Locked, RobustMutex};
use crate::wait::{self, Backoff, EventCount, Spin};

pub(crate) use get::Record;
pub(crate) use put::Writer;

/// log2 of the segment size.
const SEG_SHIFT: u32 = 16;
/// Segment size: 64 KiB.
pub(crate) const SEG: usize = 1 << SEG_SHIFT;
/// Positions count units of this many bytes.
const UNIT: usize = 8;
/// log2 of the units in a segment.
const SEG_UNITS_SHIFT: u32 = SEG_SHIFT - 3;
/// Units in a segment.
const SEG_UNITS: u32 = 1 << SEG_UNITS_SHIFT;
/// Logical segment numbers are this wide.
const LSEG_MASK: u32 = u32::MAX >> SEG_UNITS_SHIFT;
/// Largest capacity: keeps every live span well inside the 32 GiB window
/// of positions, and every queue length below 2^32.
pub(crate) const MAX_CAPACITY: usize = 31 << 30;
/// Where the segment table starts.
const TABLE_OFF: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"mpqueue\0");
const VERSION: u32 = 3;
/// Record header size.
const HDR: usize = 8;

fn pack(seq: u32, pos: u32) -> u64 {
    u64::from(seq) | (u64::from(pos) << 32)
}

fn unpack(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

/// Logical segment of position `pos` (a boundary belongs to the segment
/// ending there).
fn cseg(pos: u32) -> u32 {
    pos.wrapping_sub(1) >> SEG_UNITS_SHIFT
}

/// Byte offset of `pos` inside its logical segment, in `1..=SEG` (`SEG` on
/// a boundary).
fn seg_off(pos: u32) -> usize {
    ((pos.wrapping_sub(1) & (SEG_UNITS - 1)) as usize + 1) * UNIT
}

fn entry(lseg: u32, next: u32) -> u64 {
    u64::from(lseg) | (u64::from(next) << 32)
}

fn lseg_of(e: u64) -> u32 {
    e as u32
}

fn next_of(e: u64) -> u32 {
    (e >> 32) as u32
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("queue memory is corrupt: {what}"),
    )
}

/// Producer-private words (read only by producers).
#[repr(C, align(64))]
struct ProducerSide {
    lock: RobustMutex,
    p_slot: AtomicU32,
    alloc_hint: AtomicU32,
    seen_get: AtomicU32,
    /// Nonzero: a consumer repaired its side after a death, so
    /// `free_resident` may be off; the next P lock holder recounts it.
    recount: AtomicU32,
}

/// Consumer-private words (read only by consumers).
#[repr(C, align(64))]
struct ConsumerSide {
    lock: RobustMutex,
    seen_put: AtomicU32,
}

/// One atomic word alone on its cache line.
#[repr(C, align(64))]
struct Line<T>(T);

/// The header's first 64 bytes: the geometry, written once by the creator
/// before anyone else can see the file, and never changed.
#[repr(C)]
#[derive(Clone, Copy)]
struct Fixed {
    magic: u64,
    version: u32,
    seg_shift: u32,
    nslots: u32,
    keep: u32,
    maxsize: u32,
    _reserved: u32,
    bitmap_off: u64,
    resident_off: u64,
    data_off: u64,
    total_len: u64,
}

/// The start of the memfd. All-zero bytes are a valid initial state for
/// every atomic word; the creator writes the geometry and initialises the
/// locks before anyone else can see the file.
#[repr(C)]
struct Header {
    fixed: Fixed,
    producer: ProducerSide,
    tail: Line<AtomicU64>,
    consumer: ConsumerSide,
    head: Line<AtomicU64>,
    c_slot: Line<AtomicU32>,
    free_resident: Line<AtomicU32>,
    data_event: EventCount,
    space_event: EventCount,
    join_event: EventCount,
    done: Line<AtomicU32>,
    hangups: Line<AtomicU32>,
    aio: Line<[AtomicU32; 2]>,
    /// `[producer, consumer]`: the CPU the last process to put (get) is
    /// pinned to, plus one; 0 when not pinned or not known yet.
    cpus: Line<[AtomicU32; 2]>,
}

const _: () = assert!(std::mem::size_of::<Header>() <= TABLE_OFF);
const _: () = assert!(std::mem::size_of::<Fixed>() == 64);

/// Sizes asked for at creation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    /// 0: unbounded; otherwise the most messages the queue holds.
    pub maxsize: u32,
    /// Bytes of free segments kept resident for reuse (the ring size).
    pub ring: usize,
    /// Bytes of address space for data.
    pub capacity: usize,
}

/// Why a `put` did not happen.
#[derive(Debug)]
pub(crate) enum PutFail {
    /// `maxsize` messages are queued.
    Full,
    /// No segment could be had: every slot is in use, or the system refused
    /// memory (the error, if any).
    NoSpace(Option<io::Error>),
    /// The message can never fit.
    TooLarge,
    /// The value could not be serialised (message from the encoder).
    Encode(String),
    /// The lock was not acquired before the deadline.
    LockTimeout,
    /// An OS error, or corrupt shared state.
    Io(io::Error),
}

/// Why a `get` did not happen.
#[derive(Debug)]
pub(crate) enum GetFail {
    /// Nothing queued.
    Empty,
    /// The lock was not acquired before the deadline.
    LockTimeout,
    /// An OS error, or corrupt shared state.
    Io(io::Error),
}

from_variants!(PutFail { io::Error => Io });
from_variants!(GetFail { io::Error => Io });

/// This process's view of a ring: the descriptor and the mapping.
pub(crate) struct Ring {
    fd: SharedFd,
    map: sys::shm::Mapping,
    nslots: u32,
    keep: u32,
    maxsize: u32,
    bitmap_off: usize,
    resident_off: usize,
    data_off: usize,
    /// This process's spin budgets for waiting on data, on a get, on the
    /// tasks.
    spins: [Spin; 3],
}

/// Holds a side's lock; unlocks on drop (also when a user callback
/// panics, which leaves nothing committed).
struct Guard<'a>(&'a RobustMutex);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn acquire(m: &RobustMutex, deadline: Option<Instant>) -> io::Result<Option<(Guard<'_>, bool)>> {
    // `Ok(None)`: not acquired in time; any other failure is an error.
    let got = |r: Result<Locked, LockFailed>| match r {
        Ok(how) => Ok(Some((Guard(m), how == Locked::OwnerDied))),
        Err(LockFailed::Timeout) => Ok(None),
        Err(e) => Err(e.into()),
    };
    if let Some(g) = got(m.try_lock())? {
        return Ok(Some(g));
    }
    let mut backoff = Backoff::new(&wait::QUEUE_LOCK);
    while backoff.snooze() {
        if let Some(g) = got(m.try_lock())? {
            return Ok(Some(g));
        }
    }
    got(m.lock(deadline.map(|d| d.saturating_duration_since(Instant::now()))))
}

impl Ring {
    /// The descriptor (for passing the queue to another process).
    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a header (created or validated
        // above) and lives as long as `self`; its shared fields are atomics
        // or glibc mutexes, the rest is immutable.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    /// Table entry of slot `i`; `i` must be below `nslots` (callers check
    /// indices read from shared memory with `checked`).
    fn entry(&self, i: u32) -> &AtomicU64 {
        debug_assert!(i < self.nslots);
        self.map.at(TABLE_OFF + i as usize * 8)
    }

    /// Word `word` of the slot bitmap.
    fn bitmap(&self, word: usize) -> &AtomicU64 {
        debug_assert!(word < (self.nslots as usize).div_ceil(64));
        self.map.at(self.bitmap_off + word * 8)
    }

    /// Word of the resident bitmap holding slot `i`'s bit (1: the
    /// segment's memory is in place; 0: it was punched).
    fn resident_word(&self, i: u32) -> &AtomicU64 {
        debug_assert!(i < self.nslots);
        self.map.at(self.resident_off + (i as usize / 64) * 8)
    }

    fn is_resident(&self, i: u32) -> bool {
        self.resident_word(i).load(Ordering::Relaxed) & (1 << (i % 64)) != 0
    }

    fn set_resident(&self, i: u32, yes: bool) {
        let w = self.resident_word(i);
        if yes {
            w.fetch_or(1 << (i % 64), Ordering::Relaxed);
        } else {
            w.fetch_and(!(1 << (i % 64)), Ordering::Relaxed);
        }
    }

    /// Gives slot `i`'s memory back. Punching twice is harmless; failing
    /// to punch only costs memory. Callers punch *before* clearing the
    /// slot's resident bit: a death in between leaves a bit that says
    /// "resident" over a hole (reusing it only faults in fresh pages),
    /// never a cleared bit over memory, which a producer would unlink and
    /// forget while it still holds memory.
    fn punch(&self, i: u32) {
        let _ = sys::shm::punch_hole(self.fd.fd(), self.data_off + i as usize * SEG, SEG);
    }

    /// Gives segment `i`'s memory back and marks it not resident.
    fn give_back(&self, i: u32) {
        self.punch(i);
        self.set_resident(i, false);
    }

    /// Byte `off` (at most `SEG`) of slot `i`'s segment.
    fn seg_at(&self, i: u32, off: usize) -> *mut u8 {
        debug_assert!(i < self.nslots && off <= SEG);
        // SAFETY: slot `i < nslots` lies inside the data area, and
        // `off <= SEG` stays inside (or one past) its segment.
        unsafe {
            self.map
                .as_ptr()
                .add(self.data_off + i as usize * SEG + off)
        }
    }

    /// The length word of the record starting at byte `off` (8-aligned) of
    /// slot `i`'s segment.
    fn record_len(&self, i: u32, off: usize) -> &AtomicU64 {
        debug_assert!(i < self.nslots && off < SEG);
        self.map.at(self.data_off + i as usize * SEG + off)
    }

    /// `i` if it names a slot, else a corruption error.
    #[inline]
    fn checked(&self, i: u32) -> io::Result<u32> {
        if i < self.nslots {
            Ok(i)
        } else {
            Err(corrupt("slot index out of range"))
        }
    }

    fn next(&self, i: u32) -> io::Result<u32> {
        self.checked(next_of(self.entry(i).load(Ordering::Relaxed)))
    }

    /// The next segment of a walk that has taken `steps` steps: a walk
    /// longer than the ring is corrupt state, reported as `what`.
    fn next_of_walk(&self, i: u32, steps: &mut u32, what: &str) -> io::Result<u32> {
        let next = self.next(i)?;
        *steps += 1;
        if *steps > self.nslots {
            return Err(corrupt(what));
        }
        Ok(next)
    }

    /// Largest message: the data area less two segments (the consumer's
    /// current segment, and slack for the header and padding).
    pub(crate) fn max_message(&self) -> usize {
        (self.nslots as usize - 2) * SEG
    }

    /// `maxsize` (0: unbounded).
    pub(crate) fn maxsize(&self) -> u32 {
        self.maxsize
    }

    /// Messages queued now (approximate while others work).
    pub(crate) fn len(&self) -> u32 {
        let h = self.header();
        let (g, _) = unpack(h.head.0.load(Ordering::SeqCst));
        let (p, _) = unpack(h.tail.0.load(Ordering::SeqCst));
        p.wrapping_sub(g)
    }

    /// Messages taken so far (wrapping), for waiting on "a get happened".
    pub(crate) fn get_seq(&self) -> u32 {
        unpack(self.header().head.0.load(Ordering::SeqCst)).0
    }

    /// Memory the file holds now.
    pub(crate) fn allocated_bytes(&self) -> io::Result<usize> {
        sys::shm::allocated_bytes(self.fd.fd())
    }
}
