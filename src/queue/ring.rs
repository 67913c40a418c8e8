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
//! | `aio[0]`, `aio[1]` | an async consumer (`aio[0]`) or producer (`aio[1]`) about to wait (`1`); the `put` (`aio[0]`) or `get` (`aio[1]`) that swaps it back to `0` and rings the doorbell (`aio.rs`) | none | an async task may wait for data / space on the hang-up socket | SeqCst (Dekker's pattern with the commit words, as for events) |
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
//! | between a commit and its wake-up call | sleepers not woken | sleepers re-check every [`SLICE`](super::wait::SLICE) |
//! | holding producer handles (its end of the hang-up socket, see `fifo.rs`) | nothing in this memory: the kernel closes its descriptors, `hangups` is not bumped | consumers that sleep look at the socket every [`SLICE`](super::wait::SLICE) |
//!
//! So a message is visible exactly when its `tail` store happened, and
//! consumed exactly when its `head` store happened; both are single
//! stores made while the side's lock is held, after all the bytes they
//! publish or release were written or read.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::wait::Event;
use crate::codec::SharedFd;
use crate::spin::{Spin, spin_allowed};
use crate::sys;
use crate::sys::robust_mutex::{LockFailed, Locked, RobustMutex};

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

/// The start of the memfd. All-zero bytes are a valid initial state for
/// every atomic word; the creator writes the geometry and initialises the
/// locks before anyone else can see the file.
#[repr(C)]
struct Header {
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
    producer: ProducerSide,
    tail: Line<AtomicU64>,
    consumer: ConsumerSide,
    head: Line<AtomicU64>,
    c_slot: Line<AtomicU32>,
    free_resident: Line<AtomicU32>,
    data_event: Event,
    space_event: Event,
    join_event: Event,
    done: Line<AtomicU32>,
    hangups: Line<AtomicU32>,
    aio: Line<[AtomicU32; 2]>,
}

const _: () = assert!(std::mem::size_of::<Header>() <= TABLE_OFF);

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

impl From<io::Error> for PutFail {
    fn from(e: io::Error) -> Self {
        PutFail::Io(e)
    }
}

impl From<io::Error> for GetFail {
    fn from(e: io::Error) -> Self {
        GetFail::Io(e)
    }
}

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
    if spin_allowed() {
        for _ in 0..200 {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            if let Some(g) = got(m.try_lock())? {
                return Ok(Some(g));
            }
        }
    }
    got(m.lock(deadline.map(|d| d.saturating_duration_since(Instant::now()))))
}

impl Ring {
    /// Creates a new ring in a fresh memfd.
    pub(crate) fn create(geo: Geometry) -> io::Result<Ring> {
        let capacity = geo.capacity.clamp(2 * SEG, MAX_CAPACITY);
        let nslots = capacity.div_ceil(SEG) as u32;
        let keep = (geo.ring.div_ceil(SEG) as u32).clamp(2, nslots);
        if geo.maxsize > i32::MAX as u32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "maxsize must be below 2^31",
            ));
        }
        let table_len = nslots as usize * 8;
        let bitmap_off = (TABLE_OFF + table_len).next_multiple_of(4096);
        let bitmap_len = (nslots as usize).div_ceil(64) * 8;
        let resident_off = bitmap_off + bitmap_len;
        let data_off = (resident_off + bitmap_len).next_multiple_of(SEG);
        let total = data_off + nslots as usize * SEG;
        let fd = sys::shm::memfd("multiproc-queue", total)?;
        let map = sys::shm::Mapping::map(std::os::fd::AsFd::as_fd(&fd), total)?;
        let base = map.as_ptr();
        // SAFETY: the mapping is fresh, `total` bytes long, page-aligned and
        // zero-filled, and nobody else has the descriptor yet: we are its
        // only user while writing the header, the first table entry and the
        // first bitmap word. The header fits in the first page (checked at
        // compile time) and the offsets lie inside the mapping.
        unsafe {
            let h = base.cast::<Header>();
            (&raw mut (*h).magic).write(MAGIC);
            (&raw mut (*h).version).write(VERSION);
            (&raw mut (*h).seg_shift).write(SEG_SHIFT);
            (&raw mut (*h).nslots).write(nslots);
            (&raw mut (*h).keep).write(keep);
            (&raw mut (*h).maxsize).write(geo.maxsize);
            (&raw mut (*h).bitmap_off).write(bitmap_off as u64);
            (&raw mut (*h).resident_off).write(resident_off as u64);
            (&raw mut (*h).data_off).write(data_off as u64);
            (&raw mut (*h).total_len).write(total as u64);
            RobustMutex::init(&raw mut (*h).producer.lock)?;
            RobustMutex::init(&raw mut (*h).consumer.lock)?;
            // Slot 0 starts the circle alone, as the segment that "ends" at
            // position 0.
            let t = base.add(TABLE_OFF).cast::<AtomicU64>();
            (*t).store(entry(cseg(0) & LSEG_MASK, 0), Ordering::Relaxed);
            let b = base.add(bitmap_off).cast::<AtomicU64>();
            (*b).store(1, Ordering::Relaxed);
            let r = base.add(resident_off).cast::<AtomicU64>();
            (*r).store(1, Ordering::Relaxed);
        }
        sys::shm::allocate(std::os::fd::AsFd::as_fd(&fd), data_off, SEG)?;
        Ok(Ring {
            fd: SharedFd::new(fd),
            map,
            nslots,
            keep,
            maxsize: geo.maxsize,
            bitmap_off,
            resident_off,
            data_off,
            spins: [Spin::new(), Spin::new(), Spin::new()],
        })
    }

    /// Maps an existing ring received from another process, checking its
    /// geometry against the file.
    pub(crate) fn attach(fd: SharedFd) -> io::Result<Ring> {
        let len = sys::shm::size(fd.fd())?;
        if len < TABLE_OFF {
            return Err(corrupt("file too small"));
        }
        let map = sys::shm::Mapping::map(fd.fd(), len)?;
        let h = map.as_ptr().cast::<Header>();
        // SAFETY: the mapping holds at least a page, so the header fields
        // are in bounds; the geometry fields were written once by the
        // creator before the descriptor was shared and never change.
        let (magic, version, seg_shift, nslots, keep, maxsize) = unsafe {
            (
                (&raw const (*h).magic).read(),
                (&raw const (*h).version).read(),
                (&raw const (*h).seg_shift).read(),
                (&raw const (*h).nslots).read(),
                (&raw const (*h).keep).read(),
                (&raw const (*h).maxsize).read(),
            )
        };
        // SAFETY: as above.
        let (bitmap_off, resident_off, data_off, total) = unsafe {
            (
                (&raw const (*h).bitmap_off).read() as usize,
                (&raw const (*h).resident_off).read() as usize,
                (&raw const (*h).data_off).read() as usize,
                (&raw const (*h).total_len).read() as usize,
            )
        };
        let table_end = TABLE_OFF + nslots as usize * 8;
        let bitmap_len = (nslots as usize).div_ceil(64) * 8;
        let ok = magic == MAGIC
            && version == VERSION
            && seg_shift == SEG_SHIFT
            && nslots >= 2
            && (nslots as usize) <= MAX_CAPACITY / SEG
            && keep >= 2
            && keep <= nslots
            && maxsize <= i32::MAX as u32
            && bitmap_off >= table_end
            && bitmap_off % 8 == 0
            && resident_off >= bitmap_off + bitmap_len
            && resident_off % 8 == 0
            && data_off >= resident_off + bitmap_len
            && data_off % SEG == 0
            && total == data_off + nslots as usize * SEG
            && total == len;
        if !ok {
            return Err(corrupt("not a queue, or a queue of another version"));
        }
        Ok(Ring {
            fd,
            map,
            nslots,
            keep,
            maxsize,
            bitmap_off,
            resident_off,
            data_off,
            spins: [Spin::new(), Spin::new(), Spin::new()],
        })
    }

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

    /// Table entry of slot `i`; `i` must be below `nslots`.
    fn entry(&self, i: u32) -> &AtomicU64 {
        debug_assert!(i < self.nslots);
        // SAFETY: `i < nslots` (callers check indices read from shared
        // memory with `checked`), so the entry lies inside the table, which
        // is 8-byte aligned and inside the mapping.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(TABLE_OFF + i as usize * 8)
                .cast::<AtomicU64>()
        }
    }

    fn bitmap(&self, word: usize) -> &AtomicU64 {
        debug_assert!(word < (self.nslots as usize).div_ceil(64));
        // SAFETY: the bitmap has `ceil(nslots / 64)` words from
        // `bitmap_off` (validated), 8-byte aligned, inside the mapping.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(self.bitmap_off + word * 8)
                .cast::<AtomicU64>()
        }
    }

    /// Word of the resident bitmap holding slot `i`'s bit (1: the
    /// segment's memory is in place; 0: it was punched).
    fn resident_word(&self, i: u32) -> &AtomicU64 {
        debug_assert!(i < self.nslots);
        // SAFETY: the resident bitmap has `ceil(nslots / 64)` words from
        // `resident_off` (validated), 8-byte aligned, inside the mapping.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(self.resident_off + (i as usize / 64) * 8)
                .cast::<AtomicU64>()
        }
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

    /// First byte of slot `i`'s segment.
    fn seg_ptr(&self, i: u32) -> *mut u8 {
        debug_assert!(i < self.nslots);
        // SAFETY: slot `i < nslots` lies inside the data area.
        unsafe { self.map.as_ptr().add(self.data_off + i as usize * SEG) }
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

    // ---------------------------------------------------------------
    // Producer side
    // ---------------------------------------------------------------

    /// Appends one record whose payload `write` produces through the
    /// [`Writer`], if there is room. Nothing becomes visible unless this
    /// returns `Ok`.
    pub(crate) fn try_put(
        &self,
        lock_deadline: Option<Instant>,
        write: impl FnOnce(&mut Writer<'_>) -> Result<(), String>,
    ) -> Result<(), PutFail> {
        let h = self.header();
        let Some((guard, died)) = acquire(&h.producer.lock, lock_deadline)? else {
            return Err(PutFail::LockTimeout);
        };
        if died {
            self.recover_producer()?;
            h.producer.lock.mark_consistent()?;
        } else if h.producer.recount.load(Ordering::Relaxed) != 0 {
            self.recount_free(self.checked(h.producer.p_slot.load(Ordering::Relaxed))?)?;
        }
        // Relaxed: only P lock holders store `tail`, and the lock orders us
        // after the last of them.
        let (seq, pos) = unpack(h.tail.0.load(Ordering::Relaxed));
        if self.maxsize != 0 {
            let mut seen = h.producer.seen_get.load(Ordering::Relaxed);
            if seq.wrapping_sub(seen) >= self.maxsize {
                // Acquire: pairs with the consumer's commit (only the count
                // is used; reuse of space is governed by `c_slot`).
                seen = unpack(h.head.0.load(Ordering::Acquire)).0;
                h.producer.seen_get.store(seen, Ordering::Relaxed);
                if seq.wrapping_sub(seen) >= self.maxsize {
                    return Err(PutFail::Full);
                }
            }
        }
        let mut w = Writer {
            ring: self,
            slot: self.checked(h.producer.p_slot.load(Ordering::Relaxed))?,
            lseg: cseg(pos),
            off: seg_off(pos),
            len: 0,
            limit: self.max_message(),
            fail: None,
            allocated: false,
        };
        let start_slot = w.slot;
        let failed = |w: &mut Writer<'_>, f: PutFail| {
            if w.allocated || w.slot != start_slot {
                // Segments linked, or kept ones reused, for nothing:
                // recount, and give back what exceeds the ring.
                self.recount_free(start_slot)?;
            }
            Err(f)
        };
        if w.off == SEG && !w.advance() {
            let f = w.fail.take().unwrap_or(PutFail::NoSpace(None));
            return failed(&mut w, f);
        }
        let (hdr_slot, hdr_off) = (w.slot, w.off);
        w.off += HDR;
        if let Err(msg) = write(&mut w) {
            let f = w.fail.take().unwrap_or(PutFail::Encode(msg));
            return failed(&mut w, f);
        }
        if let Some(f) = w.fail.take() {
            return failed(&mut w, f);
        }
        let len = w.len;
        w.off = align8(w.off);
        // SAFETY: (hdr_slot, hdr_off) is an 8-aligned spot inside a
        // segment that this P lock holder reserved (it lies past the tail,
        // so no consumer reads it until the commit below).
        unsafe {
            self.seg_ptr(hdr_slot)
                .add(hdr_off)
                .cast::<u64>()
                .write(len as u64);
        }
        let units = (1 + len.div_ceil(UNIT)) as u32;
        // COMMIT. SeqCst: publishes the record and links (Release) and is
        // the store half of the wake-up handshake with sleeping consumers.
        h.tail.0.store(
            pack(seq.wrapping_add(1), pos.wrapping_add(units)),
            Ordering::SeqCst,
        );
        h.producer.p_slot.store(w.slot, Ordering::Relaxed);
        drop(guard);
        h.data_event.notify();
        Ok(())
    }

    /// Repairs the producer side after its last lock holder died (see the
    /// module docs). Idempotent.
    fn recover_producer(&self) -> io::Result<()> {
        let h = self.header();
        let (_, pos) = unpack(h.tail.0.load(Ordering::Relaxed));
        let target = cseg(pos);
        let mut s = self.checked(h.producer.p_slot.load(Ordering::Relaxed))?;
        let mut steps = 0;
        while lseg_of(self.entry(s).load(Ordering::Relaxed)) != target {
            s = self.next(s)?;
            steps += 1;
            if steps > self.nslots {
                return Err(corrupt("tail segment not found"));
            }
        }
        h.producer.p_slot.store(s, Ordering::Relaxed);
        // Rebuild the bitmap from the circle.
        let words = (self.nslots as usize).div_ceil(64);
        let mut member = vec![0u64; words];
        let start = s;
        let mut steps = 0;
        loop {
            member[s as usize / 64] |= 1 << (s % 64);
            s = self.next(s)?;
            if s == start {
                break;
            }
            steps += 1;
            if steps > self.nslots {
                return Err(corrupt("the circle of segments does not close"));
            }
        }
        for (w, &m) in member.iter().enumerate() {
            let old = self.bitmap(w).swap(m, Ordering::Relaxed);
            // Slots taken from the bitmap but never linked: give their
            // memory back.
            let mut orphans = old & !m;
            while orphans != 0 {
                let i = (w * 64) as u32 + orphans.trailing_zeros();
                orphans &= orphans - 1;
                if i < self.nslots {
                    self.punch(i);
                    self.set_resident(i, false);
                }
            }
        }
        h.producer.alloc_hint.store(0, Ordering::Relaxed);
        h.producer.seen_get.store(
            unpack(h.head.0.load(Ordering::Acquire)).0,
            Ordering::Relaxed,
        );
        self.recount_free(start)
    }

    /// Runs [`trim_free`](Self::trim_free) with the C lock held too, so
    /// that no consumer moves `c_slot` or `free_resident` meanwhile and the
    /// count it stores is exact. Run by a P lock holder. It only tries the
    /// C lock (with a brief spin), never waits for it: a consumer's
    /// callback may be putting into this very queue while it holds the C
    /// lock. If the C lock is busy, the recount is left for the next `put`.
    fn recount_free(&self, p: u32) -> io::Result<()> {
        let h = self.header();
        h.producer.recount.store(1, Ordering::Relaxed);
        // Busy, or held by this very thread (a callback): later. (A broken
        // C lock is the next `get`'s to report.)
        let Ok(Some(guard)) = self.lock_consumer(Some(Instant::now())) else {
            return Ok(());
        };
        self.trim_free(p)?;
        h.producer.recount.store(0, Ordering::Relaxed);
        drop(guard);
        Ok(())
    }

    /// Walks the free arc after the tail segment `p`: keeps the first
    /// `keep` resident segments, punches the others, and recounts
    /// `free_resident`. Run holding both locks (see
    /// [`recount_free`](Self::recount_free)) after a death or a failed
    /// `put`, which can leave segments linked and backed but unused, or
    /// the count off.
    fn trim_free(&self, p: u32) -> io::Result<()> {
        let h = self.header();
        let c = h.c_slot.0.load(Ordering::Acquire);
        let mut kept = 0;
        let mut f = self.next(p)?;
        let mut steps = 0;
        while f != c && f != p {
            if self.is_resident(f) {
                if kept < self.keep {
                    kept += 1;
                } else {
                    self.punch(f);
                    self.set_resident(f, false);
                }
            }
            f = self.next(f)?;
            steps += 1;
            if steps > self.nslots {
                return Err(corrupt("free segments do not end"));
            }
        }
        h.free_resident.0.store(kept, Ordering::Relaxed);
        Ok(())
    }

    /// Takes a clear slot from the bitmap (lowest first) and backs it with
    /// memory.
    fn alloc_slot(&self) -> Result<u32, PutFail> {
        let h = self.header();
        let words = (self.nslots as usize).div_ceil(64);
        let hint =
            (h.producer.alloc_hint.load(Ordering::Relaxed) as usize).min(self.nslots as usize);
        let order = (hint / 64..words).chain(0..hint / 64);
        let mut found = None;
        for w in order {
            let bits = self.bitmap(w).load(Ordering::Relaxed);
            if bits != u64::MAX {
                let i = w * 64 + (!bits).trailing_zeros() as usize;
                if i < self.nslots as usize {
                    found = Some(i as u32);
                    break;
                }
            }
        }
        let Some(y) = found else {
            return Err(PutFail::NoSpace(None));
        };
        // Set before backing and linking: the bitmap stays a superset of
        // the circle and of the backed slots outside it, so a death at any
        // point here leaves an orphan that recovery finds and punches.
        self.bitmap(y as usize / 64)
            .fetch_or(1 << (y % 64), Ordering::Relaxed);
        if let Err(e) = sys::shm::allocate(self.fd.fd(), self.data_off + y as usize * SEG, SEG) {
            self.punch(y);
            self.free_slot(y);
            return Err(match e.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::OutOfMemory => {
                    PutFail::NoSpace(Some(e))
                }
                _ => PutFail::Io(e),
            });
        }
        // No consumer looks at a slot outside the circle, so the producer
        // may write its resident bit here.
        self.set_resident(y, true);
        h.producer.alloc_hint.store(y + 1, Ordering::Relaxed);
        Ok(y)
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

    fn free_slot(&self, x: u32) {
        let h = self.header();
        self.bitmap(x as usize / 64)
            .fetch_and(!(1 << (x % 64)), Ordering::Relaxed);
        if x < h.producer.alloc_hint.load(Ordering::Relaxed) {
            h.producer.alloc_hint.store(x, Ordering::Relaxed);
        }
    }

    // ---------------------------------------------------------------
    // Consumer side
    // ---------------------------------------------------------------

    /// Takes the oldest record if there is one: `body` sees it, then the
    /// record is consumed (committed) and `body`'s result returned. If
    /// `body` panics, or the process dies before the commit, the record
    /// stays queued.
    pub(crate) fn try_get<R>(
        &self,
        lock_deadline: Option<Instant>,
        body: impl FnOnce(&Record<'_>) -> R,
    ) -> Result<R, GetFail> {
        let h = self.header();
        let Some(guard) = self.lock_consumer(lock_deadline)? else {
            return Err(GetFail::LockTimeout);
        };
        // Relaxed: only C lock holders store `head`.
        let (seq, pos) = unpack(h.head.0.load(Ordering::Relaxed));
        let seen = h.consumer.seen_put.load(Ordering::Relaxed);
        if seq == seen {
            // Acquire: pairs with the producer's commit, so the record and
            // the links to its segments are visible below.
            let (put, _) = unpack(h.tail.0.load(Ordering::Acquire));
            h.consumer.seen_put.store(put, Ordering::Relaxed);
            if put == seq {
                return Err(GetFail::Empty);
            }
        }
        let mut slot = self.checked(h.c_slot.0.load(Ordering::Relaxed))?;
        let mut off = seg_off(pos);
        if off == SEG {
            slot = self.next(slot)?;
            off = 0;
        }
        // SAFETY: (slot, off) is 8-aligned inside a segment of the held
        // arc, holding the header of a committed record that no producer
        // touches until we move `c_slot` past it.
        let len = unsafe { self.seg_ptr(slot).add(off).cast::<u64>().read() } as usize;
        if len > self.max_message() {
            return Err(corrupt("record longer than the queue").into());
        }
        off += HDR;
        let rec = Record {
            ring: self,
            slot,
            off,
            len,
        };
        let out = body(&rec);
        let units = (1 + len.div_ceil(UNIT)) as u32;
        let new_pos = pos.wrapping_add(units);
        // COMMIT. SeqCst: orders our reads of the record before any reuse
        // (Release) and is the store half of the handshake with producers
        // waiting for space.
        h.head
            .0
            .store(pack(seq.wrapping_add(1), new_pos), Ordering::SeqCst);
        self.release_to(cseg(new_pos))?;
        drop(guard);
        h.space_event.notify();
        Ok(out)
    }

    /// Takes the C lock, repairing the consumer side if its last holder
    /// died (see the module docs); `None` if not had by `deadline`.
    fn lock_consumer(&self, deadline: Option<Instant>) -> io::Result<Option<Guard<'_>>> {
        let h = self.header();
        let Some((guard, died)) = acquire(&h.consumer.lock, deadline)? else {
            return Ok(None);
        };
        if died {
            let (_, pos) = unpack(h.head.0.load(Ordering::Relaxed));
            self.release_to(cseg(pos))?;
            // The dead holder may have counted a segment it had not yet
            // released, which was just counted again.
            h.producer.recount.store(1, Ordering::Relaxed);
            h.consumer.lock.mark_consistent()?;
        }
        Ok(Some(guard))
    }

    /// Moves `c_slot` forward to the segment numbered `target`, punching
    /// the cold segments left behind (normal release and crash repair
    /// alike). Idempotent.
    fn release_to(&self, target: u32) -> io::Result<()> {
        let h = self.header();
        let mut s = self.checked(h.c_slot.0.load(Ordering::Relaxed))?;
        let start = s;
        let mut steps = 0;
        while lseg_of(self.entry(s).load(Ordering::Relaxed)) != target {
            // Keep up to `keep` free segments in memory for producers to
            // reuse without faults; give the others back. The counter is
            // exact except after a death, which asks the producers to
            // recount it.
            if h.free_resident.0.load(Ordering::Relaxed) < self.keep {
                self.set_resident(s, true);
                h.free_resident.0.fetch_add(1, Ordering::Relaxed);
            } else {
                self.punch(s);
                self.set_resident(s, false);
            }
            s = self.next(s)?;
            steps += 1;
            if steps > self.nslots {
                return Err(corrupt("head segment not found"));
            }
        }
        if s != start {
            // Release: our reads of (and holes in) the segments behind
            // happen before a producer that sees the new value reuses them.
            h.c_slot.0.store(s, Ordering::Release);
        }
        Ok(())
    }

    // ---------------------------------------------------------------
    // Waiting
    // ---------------------------------------------------------------

    /// Whether the queue looks non-empty.
    fn has_data(&self) -> bool {
        let h = self.header();
        let (g, _) = unpack(h.head.0.load(Ordering::SeqCst));
        let (p, _) = unpack(h.tail.0.load(Ordering::SeqCst));
        g != p
    }

    /// Spins briefly (the adaptive budget of `wait.rs`) until the queue
    /// looks non-empty; `false` if it did not, or spinning cannot help.
    pub(crate) fn spin_data(&self, deadline: Option<Instant>) -> bool {
        self.spins[0].spin_until(|| self.has_data(), deadline, 16)
    }

    /// Sleeps until the queue looks non-empty, or
    /// [`hangups`](Self::hangups) moves away from `hangups_seen`, or the
    /// deadline passes; `false` only at the deadline. No spinning: call
    /// [`spin_data`](Self::spin_data) first.
    pub(crate) fn sleep_data(&self, deadline: Option<Instant>, hangups_seen: u32) -> bool {
        let h = self.header();
        h.data_event.sleep_until(
            || self.has_data() || h.hangups.0.load(Ordering::SeqCst) != hangups_seen,
            deadline,
        )
    }

    /// The async waiters' flags: `[data, space]` (see `aio.rs`).
    pub(crate) fn aio_flags(&self) -> &[AtomicU32; 2] {
        &self.header().aio.0
    }

    /// How many times a process gave up its last producer handle.
    pub(crate) fn hangups(&self) -> u32 {
        // SeqCst: the load half of the handshake in `note_hangup`.
        self.header().hangups.0.load(Ordering::SeqCst)
    }

    /// Tells sleeping consumers that this process holds no producer handle
    /// any more (call after closing its end of the hang-up socket).
    pub(crate) fn note_hangup(&self) {
        let h = self.header();
        // SeqCst: the store half of the waiter handshake (`wait.rs`).
        h.hangups.0.fetch_add(1, Ordering::SeqCst);
        h.data_event.notify();
    }

    /// Waits until some `get` commits after `seen` was read from
    /// [`get_seq`](Self::get_seq) (or the deadline passes).
    pub(crate) fn wait_get(&self, seen: u32, deadline: Option<Instant>) -> bool {
        let h = self.header();
        h.space_event.wait_until(
            || unpack(h.head.0.load(Ordering::SeqCst)).0 != seen,
            deadline,
            &self.spins[1],
        )
    }

    // ---------------------------------------------------------------
    // Task accounting (JoinableQueue)
    // ---------------------------------------------------------------

    /// Counts one finished task; `false` if every message ever put is
    /// already counted.
    pub(crate) fn task_done(&self) -> bool {
        let h = self.header();
        let mut done = h.done.0.load(Ordering::SeqCst);
        loop {
            let put = unpack(h.tail.0.load(Ordering::SeqCst)).0;
            if done == put {
                return false;
            }
            match h.done.0.compare_exchange_weak(
                done,
                done.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(d) => done = d,
            }
        }
        if done.wrapping_add(1) == unpack(h.tail.0.load(Ordering::SeqCst)).0 {
            h.join_event.notify();
        }
        true
    }

    /// Messages put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u32 {
        let h = self.header();
        let done = h.done.0.load(Ordering::SeqCst);
        unpack(h.tail.0.load(Ordering::SeqCst)).0.wrapping_sub(done)
    }

    /// Waits until every message put is marked done.
    pub(crate) fn wait_all_done(&self, deadline: Option<Instant>) -> bool {
        self.header()
            .join_event
            .wait_until(|| self.unfinished() == 0, deadline, &self.spins[2])
    }
}

/// Writes a record's payload into the ring, crossing into (and linking)
/// new segments as needed. Only exists while the P lock is held.
pub(crate) struct Writer<'a> {
    ring: &'a Ring,
    slot: u32,
    lseg: u32,
    off: usize,
    len: usize,
    limit: usize,
    fail: Option<PutFail>,
    /// Whether a fresh slot was linked in.
    allocated: bool,
}

impl Writer<'_> {
    /// Appends `data`; `false` when out of room (the reason is kept for
    /// `try_put`).
    #[inline]
    pub(crate) fn write(&mut self, data: &[u8]) -> bool {
        let n = data.len();
        if n <= 16 && self.off + n <= SEG && self.len + n <= self.limit && self.fail.is_none() {
            // Small pieces (most of what a serialiser emits): copy inline
            // rather than through `memcpy`.
            // SAFETY: as in `write_slow`: [off, off + n) is inside segment
            // `slot`, past the committed tail, owned by this P lock holder.
            // Volatile stores keep the compiler from turning the loop back
            // into a `memcpy` call.
            unsafe {
                let dst = self.ring.seg_ptr(self.slot).add(self.off);
                for (i, &b) in data.iter().enumerate() {
                    dst.add(i).write_volatile(b);
                }
            }
            self.off += n;
            self.len += n;
            return true;
        }
        self.write_slow(data)
    }

    fn write_slow(&mut self, mut data: &[u8]) -> bool {
        if self.fail.is_some() {
            return false;
        }
        if self.len + data.len() > self.limit {
            self.fail = Some(PutFail::TooLarge);
            return false;
        }
        while !data.is_empty() {
            if self.off == SEG && !self.advance() {
                return false;
            }
            let n = (SEG - self.off).min(data.len());
            // SAFETY: [off, off + n) lies inside segment `slot`, which is
            // past the committed tail (free or reserved by this P lock
            // holder), so nobody else reads or writes it; `data` is a
            // separate Rust slice.
            unsafe {
                ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    self.ring.seg_ptr(self.slot).add(self.off),
                    n,
                );
            }
            self.off += n;
            self.len += n;
            data = &data[n..];
        }
        true
    }

    /// Moves into the next segment (see "The circle of segments").
    fn advance(&mut self) -> bool {
        match self.try_advance() {
            Ok(()) => true,
            Err(f) => {
                self.fail = Some(f);
                false
            }
        }
    }

    fn try_advance(&mut self) -> Result<(), PutFail> {
        let r = self.ring;
        let h = r.header();
        let a = self.slot;
        let lseg = (self.lseg + 1) & LSEG_MASK;
        let mut steps = 0;
        loop {
            let ea = r.entry(a).load(Ordering::Relaxed);
            let x = r.checked(next_of(ea))?;
            // Acquire: pairs with the consumer's Release of `c_slot`, so its
            // reads of (and holes in) a segment we now see as free are done.
            let c = h.c_slot.0.load(Ordering::Acquire);
            if x != c {
                let ex = r.entry(x).load(Ordering::Relaxed);
                if r.is_resident(x) {
                    // A free segment still in memory: reuse it in place.
                    r.entry(x)
                        .store(entry(lseg, next_of(ex)), Ordering::Relaxed);
                    let _ =
                        h.free_resident
                            .0
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            });
                    self.slot = x;
                    break;
                }
                // A free segment whose memory the consumer gave back: unlink
                // it, then clear its bit, and look again.
                r.entry(a)
                    .store(entry(lseg_of(ea), next_of(ex)), Ordering::Relaxed);
                r.free_slot(x);
                steps += 1;
                if steps > r.nslots {
                    return Err(corrupt("free segments do not end").into());
                }
                continue;
            }
            let y = r.alloc_slot()?;
            self.allocated = true;
            r.entry(y).store(entry(lseg, x), Ordering::Relaxed);
            r.entry(a).store(entry(lseg_of(ea), y), Ordering::Relaxed);
            self.slot = y;
            break;
        }
        self.lseg = lseg;
        self.off = 0;
        Ok(())
    }
}

/// A committed record seen by a consumer inside [`Ring::try_get`].
pub(crate) struct Record<'a> {
    ring: &'a Ring,
    slot: u32,
    off: usize,
    len: usize,
}

impl Record<'_> {
    /// Payload length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The payload in place, when it lies within one segment.
    pub(crate) fn contiguous(&self) -> Option<&[u8]> {
        if self.off + self.len <= SEG {
            // SAFETY: the bytes lie inside one segment of the held arc and
            // belong to a committed record: no producer writes them until
            // this consumer releases the segment, after the borrow ends.
            Some(unsafe {
                std::slice::from_raw_parts(self.ring.seg_ptr(self.slot).add(self.off), self.len)
            })
        } else {
            None
        }
    }

    /// Appends the payload to `out`.
    pub(crate) fn copy_to(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.reserve(self.len);
        let (mut slot, mut off, mut left) = (self.slot, self.off, self.len);
        while left > 0 {
            if off == SEG {
                slot = self.ring.next(slot)?;
                off = 0;
            }
            let n = (SEG - off).min(left);
            // SAFETY: as in `contiguous`, for the piece in this segment;
            // `reserve` made room for `n` more bytes in `out`.
            unsafe {
                let dst = out.as_mut_ptr().add(out.len());
                ptr::copy_nonoverlapping(self.ring.seg_ptr(slot).add(off), dst, n);
                out.set_len(out.len() + n);
            }
            off += n;
            left -= n;
        }
        Ok(())
    }
}
