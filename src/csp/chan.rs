//! One channel's state machine over a block of memory: a lock-guarded
//! header, a table of *records* (parties waiting on the channel), message
//! areas, and an optional ring buffer. The same code runs over private heap
//! memory (threads) and over a shared memfd mapping (processes); nothing in
//! it holds a pointer that would not mean the same in another process.
//! Any party may die at any instruction (a process killed inside a channel
//! operation); the others go on (see *Crash recovery*).
//!
//! # Memory layout
//!
//! ```text
//! [Header, 192 B][Holder, 24 B; 32][Rec, 128 B; nrecords][record data; nrecords × slot][buffer slot; (capacity + 1) × (8 + slot)]
//! ```
//!
//! The header's geometry (`capacity`, `nrecords`, `slot`) is written once
//! at creation; a process opening the segment reads it once, checks that it
//! fits the mapping, and keeps its own copy, so a peer that scribbles on
//! the header later cannot make us read or write outside the mapping. The
//! buffer has one spare slot, so that a message can be moved in before the
//! one whose room it takes is released.
//!
//! # Records
//!
//! A party that cannot complete at once *posts* a record and sleeps on the
//! record's `state` word (futex). A record is either *committed* (kind
//! `READ` or `WRITE`: a plain blocked read/write, or an alternation's single
//! *offer*), which any counterpart holding the lock may complete, or a
//! *watch* (`WATCH | READ`, `WATCH | WRITE`): an alternation asking to be
//! told when the other side becomes ready, which nobody can complete.
//!
//! Each record has a robust mutex, `held`, which its owner's thread holds
//! from posting the record (it takes it in `alloc`, under the lock) to
//! releasing it (after the `FREE`/`TAKEN` store). So whether a record's
//! owner is alive is a `trylock` away: busy (or "mine") means alive;
//! owner-dead, or free while the record is not, means its owner is gone.
//! A completer checks its counterpart this way before completing it
//! (`live_oldest`): no writer hands a message to a dead reader.
//!
//! ## State table of `Rec::state`
//!
//! | value | meaning | set by |
//! |---|---|---|
//! | `FREE` 0 | unused | owner (release, withdrawal CAS), or a lock holder reclaiming a dead owner's record |
//! | `WAITING` 1 | committed, completable | poster, under the lock; a lock holder turning a dead reader's `DONE` record into an orphan write |
//! | `WATCHING` 2 | watch, not completable | poster under the lock; owner re-arms `NOTIFIED → WATCHING` |
//! | `DONE` 3 | completed: a read record holds the message | a counterpart, under the lock, by CAS from `WAITING` |
//! | `NOTIFIED` 4 | a watched event happened | a counterpart, under the lock, by CAS from `WATCHING` |
//! | `ABORTED` 5 | poisoned or retired while pending | poisoner (lock-free CAS) or retirer (under the lock) |
//! | `TAKEN` 6 | unused, and was completed last time (free for `alloc`, like `FREE`) | owner, releasing a `DONE` record; tells a repairer that a completion happened |
//! | bit 31 `SLEEPING` | the owner sleeps (or is about to) on this word | owner, by CAS; whoever changes the state wakes it |
//!
//! Every transition out of `WAITING` is a CAS, so a completer's
//! `WAITING → DONE`, the owner's withdrawal `WAITING → FREE` and the
//! poisoner's `WAITING → ABORTED` race safely: exactly one wins. A
//! completer writes the message into a read record *before* its Release
//! CAS, and the owner reads it after an Acquire load that sees `DONE`. A
//! record becomes reusable (`FREE`/`TAKEN`) only by its owner, with
//! Release, after it read the message (or by a lock holder once its owner
//! is dead); allocation happens under the lock with an Acquire load, so no
//! allocation can overwrite a message still being read, and no completer
//! copying under the lock can see its record reallocated.
//!
//! `Rec::owner` is an alternation's token, 0 for a plain read or write, or
//! `ORPHAN`: the record holds a message whose writer (or whose reader, for
//! a completed read record) died; it is a committed write with no owner,
//! which the reader that takes it frees (`WAITING → FREE`).
//!
//! ## Header words
//!
//! | word | meaning |
//! |---|---|
//! | `lock` | the robust mutex of `lock.rs`; a holder that dies leaves it owner-dead |
//! | `flags` | `POISONED`, `RETIRED`, `SPILLED` (set lock-free with AcqRel, never cleared) |
//! | `readers`, `writers` | live ends of each side; the decrement to 0 sets `RETIRED`, then aborts the waiting parties under the lock |
//! | `hwm` | one past the highest record index ever allocated (under the lock; stored before the record is posted) |
//! | `buf` | `[head: u32 \| len: u32]` of the ring buffer: one store publishes a push or a pop (under the lock) |
//! | `intent_buf`, `intent_orphan`, `intent_rec` | a pop that moves a waiting writer in: the buffer word before, whether the writer is an orphan, and `[record + 1 \| its seq]` (nonzero while the move is under way; under the lock) |
//! | `seq` | post counter (under the lock) |
//! | `read_at`, `read_party`, `write_at`, `write_party` | when (monotonic nanoseconds) a party of that side last completed an operation, and which (`[pid \| tid]`); Relaxed, lock-free, a hint for selection (see `returning`) |
//! | `freed`, `free_sleepers` | futex word bumped on every release, and how many sleep on it (SeqCst pair, Dekker style: a releaser either sees a sleeper or the sleeper sees the bump) |
//! | holder table (after the header, 32 slots: `pid`, `start`, `readers`, `writers`) | the processes holding ends and how many of each side: a process claims a slot by CAS on `pid` (free: 0, or a dead process's holding nothing), then stores `start`; it alone adds to its counts; a decrement (its own, a receiver adopting an end in flight, or `release_dead`) never goes below 0 (CAS) |
//! | `magic`, `capacity`, `nrecords`, `slot`, `id` | written once at creation, before `magic` (Release); read once at open after `magic` (Acquire) |
//!
//! Words documented as "under the lock", and a record's `kind`, `seq`,
//! `len`, `owner` and message bytes, are accessed with Relaxed atomics (or
//! plain copies) while holding the lock: the mutex's acquire and release
//! order them between holders (a holder that died included: the next one
//! acquires through the kernel's owner-died path). The exceptions, read
//! without the lock, are `state` (see above), `flags` (Acquire loads), and
//! the message of a `DONE` read record, which the owner reads after its
//! Acquire load of `DONE`.
//!
//! # Crash recovery
//!
//! Every change under the lock that others act on is one store or CAS
//! made after everything it publishes was written, so a holder that dies
//! before it changed nothing and one that dies after it did all of it; the
//! one exception, a pop that moves a writer in (a CAS on the writer's
//! record, then the buffer store), writes its intent first. Waiting
//! parties sleep at most [`SLICE`] at a time and then `heal`: take the lock
//! (repairing it if its holder died) and reclaim dead owners' records.
//!
//! | dies … | left behind | repaired by |
//! |---|---|---|
//! | holding the lock, anywhere | the lock, owner-dead | the next locker (`Locked::OwnerDied`) runs `repair`: resolves an intent, finishes a retirement or poisoning (abort, drain), re-sends every notification and wake-up, reclaims dead owners' records, sweeps spill segments, then marks the mutex consistent |
//! | writing into a free buffer slot, before the `buf` store | bytes in a slot outside `[head, head + len)` | nothing: the write did not happen |
//! | after taking the buffer front (the `buf` store) | a message consumed by a reader that never returned | nothing: like a reader dying just after `read` returned |
//! | moving a writer in, between the intent and the writer's CAS | intent set, writer still `WAITING` | `repair`: `buf` unchanged, so the dead reader's pop is undone (front kept, writer still waits) |
//! | moving a writer in, between the CAS and the `buf` store | intent set, writer `DONE`/`TAKEN` (an orphan: `FREE`) with the same `seq` | `repair`: does the `buf` store (front consumed by the dead reader) |
//! | copying into a waiting reader's record, before the CAS | bytes in a `WAITING` record | nothing: the next writer writes over them |
//! | completing a record, before the futex wake (sent after unlocking) | an owner asleep on a changed word | the owner's slice ends; `repair` also wakes every sleeper |
//! | notifying watches, half way | alternations not told | `repair` notifies every watch (a spurious notification costs a rescan) |
//! | posting, after `alloc` took the record's mutex | a `FREE` record with an owner-dead mutex | the next `alloc` takes it (`OwnerDied`) |
//! | with its record posted (`WAITING`, `WATCHING`, `NOTIFIED`, `ABORTED`) | the record, owner-dead | a completer skips and reclaims it (`live_oldest`), or a `heal`/`repair`/full `alloc` sweep does: a write becomes an orphan (delivered whole to the next reader), anything else is freed |
//! | after its read record was completed, before copying out | a `DONE` read record holding the message | a sweep turns it into an orphan write: the next reader gets the message (the writer has returned) |
//! | after a completion of its write record, before releasing it | a `DONE` write record | a sweep frees it |
//! | releasing, between the `FREE`/`TAKEN` store and unlocking `held` | a free record with an owner-dead mutex | the next `alloc` takes it |
//! | holding ends (any time) | counts in its holder slot and in `readers`/`writers` | `heal` (`release_dead`): a holder no longer running has its counts taken one by one (a CAS each, so exactly once) and dropped from `readers`/`writers`, retiring the channel if they were the last |
//! | claiming a holder slot, after the `pid` CAS, before `start` | a slot with counts 0 and the wrong start time | the next claimer reuses it (counts 0, process not running) |
//! | retiring: after the last end's decrement, before `RETIRED` | a count of 0 and no flag: the channel never retires | not repaired (one instruction; poison still works) |
//! | retiring or poisoning, after the flag, before aborting everyone | parties waiting on a retired or poisoned channel | `heal` (every slice) and `repair` abort them |
//!
//! What a writer sees when its reader dies: a rendezvous `write` returns
//! once a reader that was alive when it took the value has it — in its
//! own memory, or (when the writer completed the reader's waiting record)
//! in that record. If that reader dies before copying it out, the value
//! goes to the next reader as an orphan; if it dies after, the value is
//! lost with it, exactly as if it had died just after `read` returned.
//! Either way the writer is not told. A write is never delivered twice.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::lock;
use super::memory::Memory;
use super::spill;
use crate::sys;
use crate::sys::futex;
use crate::sys::liveness::{self, ProcessId};
use crate::sys::robust_mutex::{Locked, RobustMutex};

const MAGIC: u32 = 0x6373_7032;
const HEADER: usize = 192;
/// Slots of the holder table (processes holding ends, see *Ends of dead
/// processes*), and the size of one.
const HOLDERS: usize = 32;
const HOLDER: usize = 24;
/// Where the records start.
const RECS: usize = HEADER + HOLDERS * HOLDER;
const REC: usize = 128;
const SLOT_HEADER: usize = 8;

/// How long a party sleeps before it looks for dead parties itself (a
/// lock holder that died, a wake-up a dying process never sent, a
/// message left in a dead reader's record).
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// How long a selection waits at most for a counterpart it prefers that
/// is coming back (see `Chan::returning`).
pub(crate) const RETURN_WAIT: Duration = Duration::from_millis(20);

/// How long after completing an operation a party still counts as coming
/// back (see `Chan::returning`).
pub(crate) const RECENT: Duration = Duration::from_millis(20);

/// A counterpart coming back from its last handover (see `Chan::returning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Returning {
    /// Its record was completed; it is alive and has not woken up yet.
    Collecting,
    /// Thread `tid` of process `pid` completed an operation a moment ago;
    /// worth waiting for only while it runs (or waits for a CPU): asleep,
    /// it waits for something else.
    Recent { pid: i32, tid: i32 },
}

/// `Rec::owner` of a record whose owner died holding a message the channel
/// still owes a reader (an *orphan*): any reader may take it.
const ORPHAN: u64 = u64::MAX;

/// Record kinds: direction, and whether it is a watch.
pub(crate) const READ: u32 = 1;
pub(crate) const WRITE: u32 = 2;
pub(crate) const WATCH: u32 = 4;

pub(crate) const FREE: u32 = 0;
pub(crate) const WAITING: u32 = 1;
pub(crate) const WATCHING: u32 = 2;
pub(crate) const DONE: u32 = 3;
pub(crate) const NOTIFIED: u32 = 4;
pub(crate) const ABORTED: u32 = 5;
pub(crate) const TAKEN: u32 = 6;
pub(crate) const SLEEPING: u32 = 1 << 31;

/// Sets [`SLEEPING`] on a record's state `word`, last read as `seen`, so
/// that whoever changes the word next must wake its owner. False if the
/// word changed meanwhile: the caller re-reads it instead of sleeping.
pub(crate) fn ask_to_be_woken(word: &AtomicU32, seen: u32) -> bool {
    seen & SLEEPING != 0
        || word
            .compare_exchange(seen, seen | SLEEPING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
}

const POISONED: u32 = 1;
const RETIRED: u32 = 2;
const SPILLED: u32 = 4;

/// Why a channel operation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpError {
    Poisoned,
    Retired,
    Timeout,
}

#[repr(C)]
struct Header {
    magic: AtomicU32,
    flags: AtomicU32,
    readers: AtomicU32,
    writers: AtomicU32,
    capacity: AtomicU32,
    nrecords: AtomicU32,
    slot: AtomicU32,
    hwm: AtomicU32,
    seq: AtomicU32,
    freed: AtomicU32,
    free_sleepers: AtomicU32,
    intent_orphan: AtomicU32,
    buf: AtomicU64,
    id: AtomicU64,
    max_message: AtomicU64,
    intent_buf: AtomicU64,
    intent_rec: AtomicU64,
    read_at: AtomicU64,
    read_party: AtomicU64,
    write_at: AtomicU64,
    write_party: AtomicU64,
    lock: RobustMutex,
}

/// One process holding ends of the channel: its identity (pid 0: a free
/// slot) and how many ends of each side it holds.
#[repr(C)]
struct Holder {
    pid: AtomicU32,
    readers: AtomicU32,
    writers: AtomicU32,
    _pad: AtomicU32,
    start: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Holder>() == HOLDER);

impl Holder {
    fn side(&self, dir: u32) -> &AtomicU32 {
        if dir == READ {
            &self.readers
        } else {
            &self.writers
        }
    }
}

#[repr(C)]
struct Rec {
    state: AtomicU32,
    kind: AtomicU32,
    seq: AtomicU32,
    len: AtomicU32,
    owner: AtomicU64,
    _pad: AtomicU64,
    held: RobustMutex,
}

fn pack(head: u32, len: u32) -> u64 {
    u64::from(head) | (u64::from(len) << 32)
}

fn unpack(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

/// Where a test may make this process die (`SIGKILL`) inside a channel
/// operation, to check that the others recover. Not part of the API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u32)]
pub enum CrashPoint {
    /// Just after taking the channel lock, before changing anything.
    Locked = 1,
    /// A reader, holding the lock, copied a waiting writer's message out
    /// but has not completed the writer's record.
    ReadCopied,
    /// A reader completed a waiting writer's record, still holding the lock.
    ReadCompleted,
    /// A writer copied its message into a waiting reader's record but has
    /// not completed it.
    WriteCopied,
    /// A writer completed a waiting reader's record (it holds the message
    /// now), still holding the lock.
    WriteCompleted,
    /// A writer copied its message into a free buffer slot but has not
    /// published it.
    BufferCopied,
    /// A reader took the front of the buffer (published), still holding
    /// the lock.
    BufferTaken,
    /// A reader took the front of a full buffer and wrote down that it
    /// moves a waiting writer's message in, before completing the writer.
    MoveIntent,
    /// ... after completing the writer, before publishing the buffer.
    MoveCompleted,
    /// A party posted its waiting record, still holding the lock.
    Posted,
    /// A party's record is posted; it is about to sleep.
    Waiting,
    /// A reader's record was completed (the message is in it); the reader
    /// has not copied it out.
    DoneUnread,
    /// A writer created the segment of a large message, before posting it.
    Spilled,
    /// An alternation posted its watches and offer and is about to sleep.
    AltSleeping,
    /// The last end of a side set the channel's retired flag, before
    /// aborting the waiting parties.
    Retiring,
}

static CRASH_AT: AtomicU32 = AtomicU32::new(0);

/// Makes this process die at `point` from now on (`None`: nowhere).
#[doc(hidden)]
pub fn crash_at(point: Option<CrashPoint>) {
    CRASH_AT.store(point.map_or(0, |p| p as u32), Ordering::Relaxed);
}

#[inline]
pub(crate) fn crash_point(point: CrashPoint) {
    if CRASH_AT.load(Ordering::Relaxed) == point as u32 {
        sys::process::kill_self();
    }
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);
const _: () = assert!(std::mem::size_of::<Rec>() <= REC && REC.is_multiple_of(8));

/// The geometry of a channel, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Buffer slots (0: rendezvous).
    pub capacity: u32,
    /// Parties that can wait on the channel at once.
    pub nrecords: u32,
    /// The largest encoded message carried inline, in bytes (larger ones
    /// spill, see `spill.rs`).
    pub slot: u32,
    /// The largest encoded message at all.
    pub max_message: u64,
}

impl Geometry {
    fn slot_stride(&self) -> usize {
        (self.slot as usize).div_ceil(8) * 8
    }
    fn data_off(&self) -> usize {
        RECS + self.nrecords as usize * REC
    }
    fn buf_off(&self) -> usize {
        self.data_off() + self.nrecords as usize * self.slot_stride()
    }
    fn buf_stride(&self) -> usize {
        SLOT_HEADER + self.slot_stride()
    }
    /// Physical buffer slots: one spare, so that a message can be moved in
    /// before the one it replaces is released (see `try_read_locked`).
    fn buf_slots(&self) -> u32 {
        if self.capacity == 0 {
            0
        } else {
            self.capacity.saturating_add(1)
        }
    }
    /// Bytes of memory the channel needs.
    pub fn size(&self) -> usize {
        self.checked_size().unwrap_or(usize::MAX)
    }

    /// Bytes of memory the channel needs, `None` if that overflows (a
    /// geometry read from a segment is not trusted).
    fn checked_size(&self) -> Option<usize> {
        let slot = (u128::from(self.slot)).div_ceil(8) * 8;
        let total = RECS as u128
            + u128::from(self.nrecords) * (REC as u128 + slot)
            + (u128::from(self.capacity) + u128::from(self.capacity > 0))
                * (SLOT_HEADER as u128 + slot);
        usize::try_from(total).ok()
    }
}

/// What an attempt to complete at once achieved.
pub(crate) enum Attempt {
    /// Completed: the message read (for a read), or nothing (for a write).
    Done(Option<Vec<u8>>),
    /// No counterpart is ready.
    NotReady,
}

/// What posting a record achieved.
pub(crate) enum Posted {
    /// The record `idx` is posted.
    Record(u32),
    /// An offer found a ready counterpart while posting and completed
    /// instead (the payload as in [`Attempt::Done`]).
    Completed(Option<Vec<u8>>),
    /// Every record is in use.
    NoRoom,
}

/// How a withdrawal ended.
pub(crate) enum Withdrawn {
    /// The record was still pending and is gone: the operation did not happen.
    Gone,
    /// A counterpart completed it first (the message, for a read).
    Completed(Option<Vec<u8>>),
    /// Poison or retirement aborted it.
    Aborted,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// One channel: its memory and this process's copy of its geometry.
pub(crate) struct Chan {
    mem: Memory,
    geo: Geometry,
    lock_spin: u32,
    wait_spin: u32,
}

/// Collects futex wakes to issue once the lock is released.
struct Wakes<'a> {
    chan: &'a Chan,
    recs: [u32; 16],
    n: usize,
}

impl<'a> Wakes<'a> {
    fn push(&mut self, idx: u32) {
        if self.n < self.recs.len() {
            self.recs[self.n] = idx;
            self.n += 1;
        } else {
            futex::wake_all(&self.chan.rec(idx).state);
        }
    }
}

/// The channel lock, held; unlocks and then issues the pending wakes on drop.
struct Guard<'a> {
    wakes: Wakes<'a>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let chan = self.wakes.chan;
        let _ = chan.header().lock.unlock();
        for &idx in &self.wakes.recs[..self.wakes.n] {
            // A late wake of a record its owner already released is a
            // spurious wake for the next owner, which re-checks its word.
            futex::wake_all(&chan.rec(idx).state);
        }
    }
}

fn spins() -> (u32, u32) {
    if sys::process::usable_cpus() > 1 {
        (100, 1)
    } else {
        (0, 0)
    }
}

impl Chan {
    /// A new channel in `mem`, which must be zeroed and at least
    /// `geo.size()` bytes.
    pub fn create(mem: Memory, geo: Geometry) -> Chan {
        assert!(mem.len() >= geo.size());
        let (lock_spin, wait_spin) = spins();
        let chan = Chan {
            mem,
            geo,
            lock_spin,
            wait_spin,
        };
        // SAFETY: the memory is zeroed, at least `geo.size()` bytes (so it
        // holds the header and every record), 8-byte aligned, not yet seen
        // by anyone else, and the mutexes stay where they are for the
        // memory's lifetime.
        unsafe {
            let base = chan.mem.base();
            RobustMutex::init(base.add(std::mem::offset_of!(Header, lock)).cast())
                .expect("initialise a channel lock");
            for idx in 0..geo.nrecords as usize {
                RobustMutex::init(
                    base.add(RECS + idx * REC + std::mem::offset_of!(Rec, held))
                        .cast(),
                )
                .expect("initialise a channel record");
            }
        }
        let h = chan.header();
        h.capacity.store(geo.capacity, Ordering::Relaxed);
        h.nrecords.store(geo.nrecords, Ordering::Relaxed);
        h.slot.store(geo.slot, Ordering::Relaxed);
        h.max_message.store(geo.max_message, Ordering::Relaxed);
        let id = (u64::from(sys::process::getpid() as u32) << 32)
            | u64::from(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        h.id.store(id, Ordering::Relaxed);
        // Release: a process that maps the segment later (after receiving
        // the descriptor, itself a synchronising event) sees the geometry.
        h.magic.store(MAGIC, Ordering::Release);
        chan
    }

    /// Opens a channel created by another process in `mem`, checking that
    /// its geometry fits the memory.
    pub fn open(mem: Memory) -> Result<Chan, String> {
        if mem.len() < RECS {
            return Err("channel segment too small".into());
        }
        let (lock_spin, wait_spin) = spins();
        let mut chan = Chan {
            mem,
            geo: Geometry {
                capacity: 0,
                nrecords: 0,
                slot: 0,
                max_message: 0,
            },
            lock_spin,
            wait_spin,
        };
        let h = chan.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err("not a channel segment".into());
        }
        let geo = Geometry {
            capacity: h.capacity.load(Ordering::Relaxed),
            nrecords: h.nrecords.load(Ordering::Relaxed),
            slot: h.slot.load(Ordering::Relaxed),
            max_message: h.max_message.load(Ordering::Relaxed),
        };
        let _ = h;
        if geo.nrecords == 0 || geo.checked_size().is_none_or(|n| n > chan.mem.len()) {
            return Err("channel segment geometry does not fit its size".into());
        }
        chan.geo = geo;
        Ok(chan)
    }

    /// The memory, for passing the segment on.
    pub fn memory(&self) -> &Memory {
        &self.mem
    }

    fn header(&self) -> &Header {
        // SAFETY: the memory is at least HEADER bytes (checked in
        // create/open), 8-byte aligned, lives as long as `self`, and every
        // header field is an atomic, so shared access is sound.
        unsafe { &*(self.mem.base() as *const Header) }
    }

    fn rec(&self, idx: u32) -> &Rec {
        debug_assert!(idx < self.geo.nrecords);
        let idx = idx.min(self.geo.nrecords - 1) as usize;
        // SAFETY: idx < nrecords, so the record lies inside the memory
        // (geometry checked against the size); records are 32-byte aligned
        // atomics.
        unsafe { &*(self.mem.base().add(RECS + idx * REC) as *const Rec) }
    }

    fn rec_data(&self, idx: u32) -> *mut u8 {
        let idx = idx.min(self.geo.nrecords - 1) as usize;
        // SAFETY: inside the memory by the geometry check; `slot` bytes
        // are available from here.
        unsafe {
            self.mem
                .base()
                .add(self.geo.data_off() + idx * self.geo.slot_stride())
        }
    }

    fn buf_slot(&self, i: u32) -> (&AtomicU32, *mut u8) {
        let i = i.min(self.geo.buf_slots().saturating_sub(1)) as usize;
        // SAFETY: i < capacity, so the slot lies inside the memory; its
        // first 4 bytes are an aligned atomic length, then `slot` bytes.
        unsafe {
            let p = self
                .mem
                .base()
                .add(self.geo.buf_off() + i * self.geo.buf_stride());
            (&*(p as *const AtomicU32), p.add(SLOT_HEADER))
        }
    }

    /// Whether waiting parties spin and yield before sleeping (not on a
    /// single CPU): 0 or 1.
    pub fn wait_spin(&self) -> u32 {
        self.wait_spin
    }

    /// The channel's identity (orders channels for alternation).
    pub fn id(&self) -> u64 {
        self.header().id.load(Ordering::Relaxed)
    }

    /// Notes that a message of this channel went to a segment of its own
    /// (so that dropping or repairing the channel sweeps segments).
    pub fn mark_spilled(&self) {
        let h = self.header();
        if h.flags.load(Ordering::Relaxed) & SPILLED == 0 {
            h.flags.fetch_or(SPILLED, Ordering::AcqRel);
        }
    }

    /// What the names of this channel's spill segments carry.
    pub fn spill_tag(&self) -> String {
        format!("{:x}", self.id())
    }

    /// Under the lock: unlinks the spill segments of this channel that no
    /// running process can still deliver (see `spill.rs`).
    fn sweep_segments(&self) {
        if self.header().flags.load(Ordering::Acquire) & SPILLED == 0 {
            return;
        }
        let mut held = Vec::new();
        let mut keep = |p: *const u8, len: u32| {
            if len > 0 && self.copy_out(p, 1)[0] == 0xFF {
                held.push(self.copy_out(p, len));
            }
        };
        for idx in 0..self.hwm() {
            let r = self.rec(idx);
            let s = r.state.load(Ordering::Acquire) & !SLEEPING;
            let kind = r.kind.load(Ordering::Relaxed);
            if (kind == WRITE && matches!(s, WAITING | ABORTED | DONE))
                || (kind == READ && s == DONE)
            {
                keep(self.rec_data(idx), r.len.load(Ordering::Relaxed));
            }
        }
        let (head, len) = self.buf_word();
        for k in 0..len {
            let (slot_len, p) = self.buf_slot((head + k) % self.geo.buf_slots());
            keep(p, slot_len.load(Ordering::Relaxed));
        }
        spill::sweep(&self.spill_tag(), &held);
    }

    /// The largest message carried inline, in bytes.
    pub fn slot(&self) -> usize {
        self.geo.slot as usize
    }

    /// The largest message at all, in bytes.
    pub fn max_message(&self) -> u64 {
        self.geo.max_message
    }

    /// Whether the channel is poisoned.
    pub fn is_poisoned(&self) -> bool {
        self.header().flags.load(Ordering::Acquire) & POISONED != 0
    }

    /// Whether the channel is poisoned, in the SeqCst order that pairs
    /// with `poison` (checked by a sleeper after it set `SLEEPING`).
    pub fn poisoned_now(&self) -> bool {
        self.header().flags.load(Ordering::SeqCst) & POISONED != 0
    }

    /// Whether the channel is retired.
    pub fn is_retired(&self) -> bool {
        self.header().flags.load(Ordering::Acquire) & RETIRED != 0
    }

    /// The record's futex word.
    pub fn state_word(&self, idx: u32) -> &AtomicU32 {
        &self.rec(idx).state
    }

    fn lock(&self) -> Result<Guard<'_>, OpError> {
        let got = lock::lock(&self.header().lock, self.lock_spin).ok_or(OpError::Poisoned)?;
        let g = self.held(got);
        if self.is_poisoned() {
            return Err(OpError::Poisoned);
        }
        Ok(g)
    }

    /// The guard for a lock just taken; repairs first if its last holder
    /// died holding it.
    fn held(&self, got: Locked) -> Guard<'_> {
        let mut g = Guard {
            wakes: Wakes {
                chan: self,
                recs: [0; 16],
                n: 0,
            },
        };
        if got == Locked::OwnerDied {
            self.repair(&mut g);
            let _ = self.header().lock.mark_consistent();
        }
        crash_point(CrashPoint::Locked);
        g
    }

    /// Under the lock, after its holder died: makes the channel whole again
    /// (see the crash table in the module docs). Idempotent, so that a
    /// repairer that dies too is repaired after in turn.
    fn repair(&self, g: &mut Guard<'_>) {
        let h = self.header();
        // A reader died moving a writer's message into the buffer: finish
        // the move if the writer was told, else undo the reader's take.
        let rec = h.intent_rec.load(Ordering::Relaxed);
        if rec != 0 {
            let old = h.intent_buf.load(Ordering::Relaxed);
            if h.buf.load(Ordering::Relaxed) == old {
                let idx = (rec as u32).wrapping_sub(1).min(self.geo.nrecords - 1);
                let seq = (rec >> 32) as u32;
                let r = self.rec(idx);
                let s = r.state.load(Ordering::Acquire) & !SLEEPING;
                let taken = r.seq.load(Ordering::Relaxed) == seq
                    && if h.intent_orphan.load(Ordering::Relaxed) != 0 {
                        s == FREE
                    } else {
                        s == DONE || s == TAKEN
                    };
                if taken {
                    // The dead reader took the front message: its segment,
                    // if any, is nobody's now.
                    spill::discard(&self.buf_front());
                    let (head, len) = unpack(old);
                    h.buf.store(
                        pack((head + 1) % self.geo.buf_slots(), len),
                        Ordering::Relaxed,
                    );
                }
            }
            h.intent_rec.store(0, Ordering::Relaxed);
        }
        let flags = h.flags.load(Ordering::Acquire);
        if flags & (POISONED | RETIRED) != 0 {
            self.abort_all();
        }
        if flags & POISONED != 0 || (flags & RETIRED != 0 && h.readers.load(Ordering::Acquire) == 0)
        {
            self.drain_buffer();
        }
        // Wake-ups and notifications the dead holder may not have sent.
        self.poke(g, READ, 0);
        self.poke(g, WRITE, 0);
        for idx in 0..self.hwm() {
            if self.rec(idx).state.load(Ordering::Relaxed) & SLEEPING != 0 {
                g.wakes.push(idx);
            }
        }
        self.sweep();
        self.sweep_segments();
        h.freed.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&h.freed);
    }

    /// Under the lock: finds records whose owner died and reclaims them;
    /// returns whether the channel holds an orphan message afterwards.
    fn sweep(&self) -> bool {
        let mut orphans = false;
        for idx in 0..self.hwm() {
            let r = self.rec(idx);
            let s = r.state.load(Ordering::Acquire) & !SLEEPING;
            if s == FREE || s == TAKEN {
                continue;
            }
            if r.owner.load(Ordering::Relaxed) == ORPHAN || lock::holder_gone(&r.held) {
                orphans |= self.reclaim(idx);
            }
        }
        orphans
    }
}

impl Drop for Chan {
    /// Sweeps the channel's spill segments that nobody will deliver (only
    /// if it ever spilled; see `spill.rs`).
    fn drop(&mut self) {
        if self.header().flags.load(Ordering::Acquire) & SPILLED == 0 {
            return;
        }
        if let Some(got) = lock::lock(&self.header().lock, 0) {
            let _g = self.held(got);
            self.sweep_segments();
        }
    }
}

impl Chan {
    /// Under the lock: record `idx`'s owner is gone (its mutex is free).
    /// A message the channel still owes a reader (a dead writer's waiting
    /// record, or a dead reader's completed one it never copied out)
    /// becomes an orphan write any reader may take; anything else is freed.
    /// Returns whether the record is an orphan write now.
    fn reclaim(&self, idx: u32) -> bool {
        let r = self.rec(idx);
        let s = r.state.load(Ordering::Acquire) & !SLEEPING;
        let kind = r.kind.load(Ordering::Relaxed);
        match (s, kind) {
            (WAITING, WRITE) => {
                r.owner.store(ORPHAN, Ordering::Relaxed);
                true
            }
            (DONE, READ) if !self.is_poisoned() => {
                r.kind.store(WRITE, Ordering::Relaxed);
                r.owner.store(ORPHAN, Ordering::Relaxed);
                r.state.store(WAITING, Ordering::SeqCst);
                true
            }
            (FREE | TAKEN, _) => false,
            _ => {
                if (kind == WRITE && s != DONE) || (kind == READ && s == DONE) {
                    // A dead writer's message nobody will read (aborted).
                    spill::discard(
                        &self.copy_out(self.rec_data(idx), r.len.load(Ordering::Relaxed)),
                    );
                }
                r.owner.store(0, Ordering::Relaxed);
                r.state.store(FREE, Ordering::Release);
                let h = self.header();
                h.freed.fetch_add(1, Ordering::SeqCst);
                if h.free_sleepers.load(Ordering::SeqCst) > 0 {
                    futex::wake_all(&h.freed);
                }
                false
            }
        }
    }

    /// Looks for dead parties: repairs the channel if its lock holder
    /// died, reclaims the records of dead owners. Returns whether an orphan
    /// message waits for a reader. Waiting parties call it every [`SLICE`].
    pub fn heal(&self) -> bool {
        self.release_dead();
        if self.header().flags.load(Ordering::Acquire) & (POISONED | RETIRED) != 0 {
            // A poisoner or retirer may have died before aborting everyone.
            self.abort_all();
        }
        match self.lock() {
            Ok(_g) => self.sweep(),
            Err(_) => false,
        }
    }

    /// The channel's words and records, for diagnosing a test.
    pub fn debug_state(&self) -> String {
        let h = self.header();
        let mut out = format!(
            "lock {:#x} flags {} readers {} writers {} hwm {} buf {:?} intent {:#x}\n",
            h.lock.word(),
            h.flags.load(Ordering::Relaxed),
            h.readers.load(Ordering::Relaxed),
            h.writers.load(Ordering::Relaxed),
            self.hwm(),
            self.buf_word(),
            h.intent_rec.load(Ordering::Relaxed),
        );
        for idx in 0..self.hwm() {
            let r = self.rec(idx);
            out += &format!(
                "  rec {idx}: state {:#x} kind {} seq {} len {} owner {:#x} held {:#x}\n",
                r.state.load(Ordering::Relaxed),
                r.kind.load(Ordering::Relaxed),
                r.seq.load(Ordering::Relaxed),
                r.len.load(Ordering::Relaxed),
                r.owner.load(Ordering::Relaxed),
                r.held.word(),
            );
        }
        out
    }

    /// How many committed records of direction `dir` wait (tests use it
    /// to order parties).
    pub fn waiting(&self, dir: u32) -> usize {
        (0..self.hwm())
            .filter(|&idx| {
                let r = self.rec(idx);
                r.kind.load(Ordering::Relaxed) == dir
                    && r.state.load(Ordering::Acquire) & !SLEEPING == WAITING
            })
            .count()
    }

    /// The error a dead (aborted) operation reports.
    fn abort_error(&self) -> OpError {
        if self.is_poisoned() {
            OpError::Poisoned
        } else {
            OpError::Retired
        }
    }

    // ---- ends, poison, retire ------------------------------------------

    fn holder(&self, i: usize) -> &Holder {
        let i = i.min(HOLDERS - 1);
        // SAFETY: the holder table lies inside the memory (`RECS` bytes at
        // least, checked in create/open), 8-byte aligned, all atomics.
        unsafe { &*(self.mem.base().add(HEADER + i * HOLDER) as *const Holder) }
    }

    /// The holder slot of process `id`, claimed if `claim` and it has
    /// none (a free slot, or one of a dead process holding nothing).
    fn holder_of(&self, id: ProcessId, claim: bool) -> Option<&Holder> {
        let pid = id.pid as u32;
        let mine = (0..HOLDERS).map(|i| self.holder(i)).find(|s| {
            s.pid.load(Ordering::Acquire) == pid && s.start.load(Ordering::Acquire) == id.start
        });
        if mine.is_some() || !claim {
            return mine;
        }
        for i in 0..HOLDERS {
            let s = self.holder(i);
            let old = s.pid.load(Ordering::Acquire);
            let reusable = old == 0
                || (s.readers.load(Ordering::Acquire) == 0
                    && s.writers.load(Ordering::Acquire) == 0
                    && !liveness::is_running(ProcessId {
                        pid: old as i32,
                        start: s.start.load(Ordering::Acquire),
                    }));
            if reusable
                && s.pid
                    .compare_exchange(old, pid, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                s.readers.store(0, Ordering::Release);
                s.writers.store(0, Ordering::Release);
                s.start.store(id.start, Ordering::Release);
                return Some(s);
            }
        }
        None
    }

    /// Adds `delta` (±1) to the ends of side `dir` that process `id` holds
    /// (a decrement only if it holds one); whether it did. A process that
    /// finds the table full is not registered (its ends are then not
    /// released if it dies).
    fn hold(&self, id: ProcessId, dir: u32, delta: i32) -> bool {
        if delta > 0 {
            let Some(s) = self.holder_of(id, true) else {
                return false;
            };
            s.side(dir).fetch_add(1, Ordering::AcqRel);
            return true;
        }
        // Two threads claiming at once may have given the process two
        // slots: take the count from whichever holds one.
        (0..HOLDERS).map(|i| self.holder(i)).any(|s| {
            s.pid.load(Ordering::Acquire) == id.pid as u32
                && s.start.load(Ordering::Acquire) == id.start
                && s.side(dir)
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
        })
    }

    /// Counts one more end on side `dir`, held by this process.
    pub fn add_end(&self, dir: u32) {
        let h = self.header();
        let c = if dir == READ { &h.readers } else { &h.writers };
        c.fetch_add(1, Ordering::AcqRel);
        self.hold(liveness::me(), dir, 1);
    }

    /// Takes over an end that process `from` counted for it (an end in
    /// flight, see `channel.rs`): this process holds it now. If `from`
    /// died meanwhile and its ends were released, counts it anew.
    pub fn adopt_end(&self, dir: u32, from: ProcessId) {
        if self.hold(from, dir, -1) {
            self.hold(liveness::me(), dir, 1);
        } else {
            self.add_end(dir);
        }
    }

    /// Counts one end less on side `dir`, held by this process; the last
    /// one retires the channel.
    pub fn remove_end(&self, dir: u32) {
        self.hold(liveness::me(), dir, -1);
        self.drop_end(dir);
    }

    /// Releases the ends of every process that died holding some: they
    /// count as retired (see *Ends of dead processes*). Returns whether
    /// it released any.
    pub fn release_dead(&self) -> bool {
        let me = sys::process::getpid() as u32;
        let mut any = false;
        for i in 0..HOLDERS {
            let s = self.holder(i);
            let pid = s.pid.load(Ordering::Acquire);
            if pid == 0 || pid == me {
                continue;
            }
            let (r, w) = (
                s.readers.load(Ordering::Acquire),
                s.writers.load(Ordering::Acquire),
            );
            if r == 0 && w == 0 {
                continue;
            }
            let id = ProcessId {
                pid: pid as i32,
                start: s.start.load(Ordering::Acquire),
            };
            if liveness::is_running(id) {
                continue;
            }
            // Each count is taken by exactly one releaser.
            for (dir, c) in [(READ, &s.readers), (WRITE, &s.writers)] {
                while c
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    self.drop_end(dir);
                    any = true;
                }
            }
        }
        any
    }

    /// One end of side `dir` less in the channel's count.
    fn drop_end(&self, dir: u32) {
        let h = self.header();
        let c = if dir == READ { &h.readers } else { &h.writers };
        let prev = c.fetch_sub(1, Ordering::AcqRel);
        if prev == 1 {
            // The flag first, lock-free (so that a death from here on is
            // repaired by the next lock holder, which sees it), then, under
            // the lock, abort every post that happened before: a post under
            // the lock either happened before this lock or sees RETIRED. A
            // poisoned channel needs no retiring.
            h.flags.fetch_or(RETIRED, Ordering::AcqRel);
            crash_point(CrashPoint::Retiring);
            if let Ok(_g) = self.lock() {
                self.abort_all();
                if dir == READ {
                    // Nobody will read what is buffered.
                    self.drain_buffer();
                }
            }
        }
    }

    /// Poisons the channel: lock-free, immediate, permanent.
    pub fn poison(&self) {
        let h = self.header();
        // SeqCst, paired with the SeqCst record store in `alloc` and the
        // SeqCst check in `poisoned_now`: a record posted under a lock taken
        // just before the poison is either seen by the scan below (and
        // aborted) or its owner sees the flag before it sleeps.
        h.flags.fetch_or(POISONED, Ordering::SeqCst);
        // Best effort, only when nobody holds the lock: release what is
        // buffered (spilled messages own named segments). A holder, or the
        // repairer of a dead one, sees the flag and drains.
        if let Some(got) = lock::try_lock(&h.lock) {
            let _g = self.held(got);
            self.drain_buffer();
        }
        self.abort_all();
        h.freed.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&h.freed);
    }

    fn abort_all(&self) {
        for idx in 0..self.geo.nrecords {
            let st = &self.rec(idx).state;
            // SeqCst: see `poison`.
            let mut s = st.load(Ordering::SeqCst);
            loop {
                let base = s & !SLEEPING;
                if !matches!(base, WAITING | WATCHING | NOTIFIED) {
                    break;
                }
                // AcqRel: the owner, seeing ABORTED, also sees the flags.
                match st.compare_exchange(s, ABORTED, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        if s & SLEEPING != 0 {
                            futex::wake_all(st);
                        }
                        break;
                    }
                    Err(now) => s = now,
                }
            }
        }
    }

    // ---- helpers under the lock ------------------------------------------

    fn hwm(&self) -> u32 {
        self.header()
            .hwm
            .load(Ordering::Relaxed)
            .min(self.geo.nrecords)
    }

    /// The oldest committed record of kind `kind` whose owner is alive,
    /// or, for `WRITE`, an orphan; the records of dead owners met on the
    /// way are reclaimed.
    fn live_oldest(&self, kind: u32) -> Option<u32> {
        loop {
            let idx = self.oldest(kind)?;
            let r = self.rec(idx);
            if r.owner.load(Ordering::Relaxed) == ORPHAN || !lock::holder_gone(&r.held) {
                return Some(idx);
            }
            if self.reclaim(idx) && kind == WRITE {
                return Some(idx);
            }
        }
    }

    /// The oldest committed record of kind `kind` (not a watch).
    fn oldest(&self, kind: u32) -> Option<u32> {
        let mut best: Option<(u32, u32)> = None;
        for idx in 0..self.hwm() {
            let r = self.rec(idx);
            if r.state.load(Ordering::Acquire) & !SLEEPING == WAITING
                && r.kind.load(Ordering::Relaxed) == kind
            {
                let seq = r.seq.load(Ordering::Relaxed);
                let older = match best {
                    None => true,
                    Some((_, b)) => (seq.wrapping_sub(b) as i32) < 0,
                };
                if older {
                    best = Some((idx, seq));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Takes the message of write record `idx`: completes it, or frees it
    /// if it is an orphan. Fails if the owner withdrew it or it was aborted
    /// meanwhile.
    fn take_write(&self, g: &mut Guard<'_>, idx: u32) -> bool {
        let r = self.rec(idx);
        if r.owner.load(Ordering::Relaxed) != ORPHAN {
            return self.complete(g, idx);
        }
        // A dead owner may have left `SLEEPING` set.
        let mut s = r.state.load(Ordering::Relaxed);
        let ok = loop {
            if s & !SLEEPING != WAITING {
                break false;
            }
            match r
                .state
                .compare_exchange(s, FREE, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break true,
                Err(now) => s = now,
            }
        };
        if ok {
            r.owner.store(0, Ordering::Relaxed);
            let h = self.header();
            h.freed.fetch_add(1, Ordering::SeqCst);
            if h.free_sleepers.load(Ordering::SeqCst) > 0 {
                futex::wake_all(&h.freed);
            }
        }
        ok
    }

    /// Completes committed record `idx`: `WAITING → DONE`. Fails if the
    /// owner withdrew it or it was aborted meanwhile.
    fn complete(&self, g: &mut Guard<'_>, idx: u32) -> bool {
        let st = &self.rec(idx).state;
        let mut s = st.load(Ordering::Relaxed);
        loop {
            if s & !SLEEPING != WAITING {
                return false;
            }
            // Release: the message we copied into (or out of) the record
            // is complete before the owner sees DONE.
            match st.compare_exchange(s, DONE, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    if s & SLEEPING != 0 {
                        g.wakes.push(idx);
                    }
                    return true;
                }
                Err(now) => s = now,
            }
        }
    }

    /// Tells the watches of kind `WATCH | kind` (except `owner`'s) that
    /// something changed.
    fn poke(&self, g: &mut Guard<'_>, kind: u32, owner: u64) {
        for idx in 0..self.hwm() {
            let r = self.rec(idx);
            if r.kind.load(Ordering::Relaxed) != WATCH | kind
                || (owner != 0 && r.owner.load(Ordering::Relaxed) == owner)
            {
                continue;
            }
            let mut s = r.state.load(Ordering::Acquire);
            while s & !SLEEPING == WATCHING {
                match r
                    .state
                    .compare_exchange(s, NOTIFIED, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        if s & SLEEPING != 0 {
                            g.wakes.push(idx);
                        }
                        break;
                    }
                    Err(now) => s = now,
                }
            }
        }
    }

    /// Allocates a record (kind, owner), message `data` copied in for a
    /// committed write; returns its index.
    fn alloc(&self, kind: u32, owner: u64, data: Option<&[u8]>) -> Option<u32> {
        let h = self.header();
        for idx in 0..self.geo.nrecords {
            let r = self.rec(idx);
            // Acquire: pairs with the previous owner's Release of FREE, so
            // its last read of the message happened before we overwrite it.
            if !matches!(r.state.load(Ordering::Acquire), FREE | TAKEN) {
                continue;
            }
            // The record's mutex is ours while the record is: others tell
            // from it whether we are alive. Busy: its last owner is between
            // releasing the record and the mutex; owner-dead: it died there.
            match r.held.try_lock() {
                Ok(Locked::Clean) => {}
                Ok(Locked::OwnerDied) => {
                    let _ = r.held.mark_consistent();
                }
                Err(_) => continue,
            }
            r.kind.store(kind, Ordering::Relaxed);
            r.owner.store(owner, Ordering::Relaxed);
            let seq = h.seq.fetch_add(1, Ordering::Relaxed);
            r.seq.store(seq, Ordering::Relaxed);
            if let Some(d) = data {
                self.copy_in(self.rec_data(idx), d);
                r.len.store(d.len() as u32, Ordering::Relaxed);
            }
            let state = if kind & WATCH != 0 { WATCHING } else { WAITING };
            // The high-water mark first: a record is never posted beyond it,
            // even by a holder that dies here.
            if idx >= h.hwm.load(Ordering::Relaxed) {
                h.hwm.store(idx + 1, Ordering::Relaxed);
            }
            // SeqCst (a Release at least, publishing the fields above):
            // see `poison`.
            r.state.store(state, Ordering::SeqCst);
            crash_point(CrashPoint::Posted);
            return Some(idx);
        }
        None
    }

    fn copy_in(&self, dst: *mut u8, src: &[u8]) {
        let n = src.len().min(self.geo.slot as usize);
        // SAFETY: `dst` has `slot` bytes inside the memory; the region is
        // owned by us under the protocol (a record we hold the lock for
        // and that its owner does not read until DONE, or a free buffer
        // slot under the lock).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, n) }
    }

    fn copy_out(&self, src: *const u8, len: u32) -> Vec<u8> {
        let n = (len as usize).min(self.geo.slot as usize);
        let mut v = Vec::with_capacity(n);
        // SAFETY: `src` has `slot` bytes inside the memory, `n <= slot`,
        // and the protocol guarantees nobody writes them while we read.
        unsafe {
            std::ptr::copy_nonoverlapping(src, v.as_mut_ptr(), n);
            v.set_len(n);
        }
        v
    }

    /// The buffer word: front slot and number of messages.
    fn buf_word(&self) -> (u32, u32) {
        let (head, len) = unpack(self.header().buf.load(Ordering::Relaxed));
        (
            head.min(self.geo.buf_slots().saturating_sub(1)),
            len.min(self.geo.capacity),
        )
    }

    /// Under the lock, with room: appends `data`. One store publishes it.
    fn buf_push(&self, data: &[u8]) {
        let (head, len) = self.buf_word();
        let (slot_len, p) = self.buf_slot((head + len) % self.geo.buf_slots());
        self.copy_in(p, data);
        slot_len.store(data.len() as u32, Ordering::Relaxed);
        crash_point(CrashPoint::BufferCopied);
        self.header()
            .buf
            .store(pack(head, len + 1), Ordering::Relaxed);
    }

    /// Under the lock: a copy of the front message (not removed).
    fn buf_front(&self) -> Vec<u8> {
        let (head, _) = self.buf_word();
        let (slot_len, p) = self.buf_slot(head);
        self.copy_out(p, slot_len.load(Ordering::Relaxed))
    }

    /// Under the lock: discards every buffered message, each one's segment
    /// before the store that removes it (a segment unlinked twice is
    /// harmless; one never unlinked would stay).
    fn drain_buffer(&self) {
        loop {
            let (head, len) = self.buf_word();
            if len == 0 {
                break;
            }
            spill::discard(&self.buf_front());
            self.header().buf.store(
                pack((head + 1) % self.geo.buf_slots(), len - 1),
                Ordering::Relaxed,
            );
        }
    }

    fn buf_len(&self) -> u32 {
        if self.geo.capacity == 0 {
            0
        } else {
            self.buf_word().1
        }
    }

    /// Under the lock: read at once if a message is buffered or a writer
    /// waits.
    fn try_read_locked(&self, g: &mut Guard<'_>, owner: u64) -> Result<Attempt, OpError> {
        let h = self.header();
        if self.buf_len() > 0 {
            let (head, len) = self.buf_word();
            let (v, name) = spill::claim(self.buf_front());
            let slots = self.geo.buf_slots();
            // Room freed: move the oldest waiting writer in, or tell
            // watching writers. The move is written down first (the
            // intent) so that a repairer can tell whether the writer was
            // told; the writer's message goes to the spare slot, so the
            // front stays intact until the buffer word moves.
            let mut next = pack((head + 1) % slots, len - 1);
            let mut moved = false;
            while let Some(w) = self.live_oldest(WRITE) {
                let r = self.rec(w);
                let (slot_len, p) = self.buf_slot((head + len) % slots);
                let wlen = r.len.load(Ordering::Relaxed);
                self.copy_in(p, &self.copy_out(self.rec_data(w), wlen));
                slot_len.store(wlen, Ordering::Relaxed);
                h.intent_buf.store(pack(head, len), Ordering::Relaxed);
                h.intent_orphan.store(
                    u32::from(r.owner.load(Ordering::Relaxed) == ORPHAN),
                    Ordering::Relaxed,
                );
                h.intent_rec.store(
                    u64::from(w + 1) | (u64::from(r.seq.load(Ordering::Relaxed)) << 32),
                    Ordering::Relaxed,
                );
                crash_point(CrashPoint::MoveIntent);
                if self.take_write(g, w) {
                    crash_point(CrashPoint::MoveCompleted);
                    next = pack((head + 1) % slots, len);
                    moved = true;
                    break;
                }
            }
            h.buf.store(next, Ordering::Relaxed);
            h.intent_rec.store(0, Ordering::Relaxed);
            spill::unlink(name);
            crash_point(CrashPoint::BufferTaken);
            if !moved {
                self.poke(g, WRITE, owner);
            }
            return Ok(Attempt::Done(Some(v)));
        }
        while let Some(w) = self.live_oldest(WRITE) {
            let msg = self.copy_out(self.rec_data(w), self.rec(w).len.load(Ordering::Relaxed));
            let (msg, name) = spill::claim(msg);
            crash_point(CrashPoint::ReadCopied);
            if self.take_write(g, w) {
                spill::unlink(name);
                crash_point(CrashPoint::ReadCompleted);
                return Ok(Attempt::Done(Some(msg)));
            }
            spill::unclaim(msg);
        }
        if self.is_retired() {
            return Err(OpError::Retired);
        }
        Ok(Attempt::NotReady)
    }

    /// Under the lock: write at once if a reader waits or the buffer has
    /// room.
    fn try_write_locked(
        &self,
        g: &mut Guard<'_>,
        data: &[u8],
        owner: u64,
    ) -> Result<Attempt, OpError> {
        if self.is_retired() {
            return Err(OpError::Retired);
        }
        while let Some(r) = self.live_oldest(READ) {
            self.copy_in(self.rec_data(r), data);
            self.rec(r).len.store(data.len() as u32, Ordering::Relaxed);
            crash_point(CrashPoint::WriteCopied);
            if self.complete(g, r) {
                crash_point(CrashPoint::WriteCompleted);
                return Ok(Attempt::Done(None));
            }
        }
        if self.buf_len() < self.geo.capacity {
            self.buf_push(data);
            self.poke(g, READ, owner);
            return Ok(Attempt::Done(None));
        }
        Ok(Attempt::NotReady)
    }

    // ---- waiting ---------------------------------------------------------

    /// How long a party sleeps before it looks for dead parties: one
    /// [`SLICE`] over shared memory, where a process may be killed alone;
    /// no limit in a channel of one process's threads, where no party
    /// dies without the whole process (an untimed sleep also saves the
    /// kernel timer each sleep would arm).
    pub(crate) fn slice(&self) -> Option<Duration> {
        self.mem.fd().map(|_| SLICE)
    }

    /// Waits until record `idx` leaves state `expected`, for at most one
    /// [`SLICE`]; returns the new state (without `SLEEPING`), `Err(true)`
    /// at the deadline, `Err(false)` when the slice ended first.
    fn wait_rec(&self, idx: u32, expected: u32, deadline: Option<Instant>) -> Result<u32, bool> {
        let st = &self.rec(idx).state;
        let mut backoff = Backoff::new(self.wait_spin > 0);
        loop {
            let s = st.load(Ordering::Acquire) & !SLEEPING;
            if s != expected {
                return Ok(s);
            }
            if !backoff.snooze() {
                break;
            }
        }
        crash_point(CrashPoint::Waiting);
        let slice_end = self.slice().map(|s| Instant::now() + s);
        loop {
            let s = st.load(Ordering::Acquire);
            if s & !SLEEPING != expected {
                return Ok(s & !SLEEPING);
            }
            if !ask_to_be_woken(st, s) {
                continue;
            }
            // Poisoned after our record was posted but before the
            // poisoner's scan could see it: do not sleep (see `poison`).
            if self.poisoned_now() {
                return Ok(ABORTED);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(true);
            }
            if slice_end.is_some_and(|e| now >= e) {
                return Err(false);
            }
            let end = match (deadline, slice_end) {
                (Some(d), Some(e)) => Some(d.min(e)),
                (d, e) => d.or(e),
            };
            futex::wait(st, expected | SLEEPING, end.map(|e| e - now));
        }
    }

    /// Sleeps until a record is released (or `deadline`, or one
    /// [`SLICE`], after which it looks for dead owners' records).
    fn wait_for_room(&self, seen: u32, deadline: Option<Instant>) -> Result<(), OpError> {
        let h = self.header();
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        let timeout = match (left, self.slice()) {
            (Some(l), Some(s)) => Some(l.min(s)),
            (l, s) => l.or(s),
        };
        let woke = if timeout.is_some_and(|t| t.is_zero()) {
            futex::Wake::TimedOut
        } else {
            futex::wait(&h.freed, seen, timeout)
        };
        h.free_sleepers.fetch_sub(1, Ordering::SeqCst);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(OpError::Timeout);
        }
        if woke == futex::Wake::TimedOut {
            self.heal();
        }
        Ok(())
    }

    /// Releases record `idx` (owner only): `→ FREE` (`→ TAKEN` after it
    /// was completed), then its mutex, waking whoever waits for a free
    /// record.
    pub fn release(&self, idx: u32) {
        self.release_as(idx, FREE);
    }

    fn release_as(&self, idx: u32, state: u32) {
        let h = self.header();
        let r = self.rec(idx);
        // Release: our reads of the record happen-before its reuse.
        r.state.store(state, Ordering::Release);
        let _ = r.held.unlock();
        h.freed.fetch_add(1, Ordering::SeqCst);
        if h.free_sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&h.freed);
        }
    }

    /// Posts `kind` (a committed READ/WRITE) waiting for a free record
    /// when all are in use; `None` when it completed at once instead.
    fn post_blocking(
        &self,
        kind: u32,
        data: Option<&[u8]>,
        deadline: Option<Instant>,
    ) -> Result<Result<u32, Attempt>, OpError> {
        loop {
            let mut g = self.lock()?;
            let a = match data {
                Some(d) => self.try_write_locked(&mut g, d, 0)?,
                None => self.try_read_locked(&mut g, 0)?,
            };
            if let Attempt::Done(v) = a {
                return Ok(Err(Attempt::Done(v)));
            }
            let mut idx = self.alloc(kind, 0, data);
            if idx.is_none() {
                // Every record is in use: some may be dead parties'.
                if self.sweep() && kind == READ {
                    continue;
                }
                idx = self.alloc(kind, 0, data);
            }
            if let Some(idx) = idx {
                // Tell watching alternations of the other side.
                self.poke(&mut g, if kind == READ { WRITE } else { READ }, 0);
                return Ok(Ok(idx));
            }
            let h = self.header();
            h.free_sleepers.fetch_add(1, Ordering::SeqCst);
            let seen = h.freed.load(Ordering::SeqCst);
            drop(g);
            self.wait_for_room(seen, deadline)?;
        }
    }

    /// Withdraws committed record `idx` (owner only, lock-free): exactly
    /// one of this CAS and a completer's wins.
    pub fn withdraw(&self, idx: u32) -> Withdrawn {
        let r = self.rec(idx);
        let mut s = r.state.load(Ordering::Acquire);
        loop {
            match s & !SLEEPING {
                WAITING => {
                    match r
                        .state
                        .compare_exchange(s, FREE, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => {
                            let _ = r.held.unlock();
                            let h = self.header();
                            h.freed.fetch_add(1, Ordering::SeqCst);
                            if h.free_sleepers.load(Ordering::SeqCst) > 0 {
                                futex::wake_all(&h.freed);
                            }
                            return Withdrawn::Gone;
                        }
                        Err(now) => s = now,
                    }
                }
                DONE => {
                    let (msg, name) = if r.kind.load(Ordering::Relaxed) == READ {
                        crash_point(CrashPoint::DoneUnread);
                        let (m, name) = spill::claim(
                            self.copy_out(self.rec_data(idx), r.len.load(Ordering::Relaxed)),
                        );
                        (Some(m), name)
                    } else {
                        (None, None)
                    };
                    self.release_as(idx, TAKEN);
                    spill::unlink(name);
                    return Withdrawn::Completed(msg);
                }
                _ => {
                    self.release(idx);
                    return Withdrawn::Aborted;
                }
            }
        }
    }

    /// Waits for committed record `idx` to complete. `Ok(Err(()))`: the
    /// record was withdrawn because an orphan message may be waiting for
    /// this reader; post again.
    fn finish(
        &self,
        idx: u32,
        deadline: Option<Instant>,
    ) -> Result<Result<Option<Vec<u8>>, ()>, OpError> {
        loop {
            match self.wait_rec(idx, WAITING, deadline) {
                Err(true) => {
                    return match self.withdraw(idx) {
                        Withdrawn::Gone => Err(OpError::Timeout),
                        Withdrawn::Completed(v) => Ok(Ok(v)),
                        Withdrawn::Aborted => Err(self.abort_error()),
                    };
                }
                Err(false) => {
                    let reader = self.rec(idx).kind.load(Ordering::Relaxed) == READ;
                    if self.heal() && reader {
                        return match self.withdraw(idx) {
                            Withdrawn::Gone => Ok(Err(())),
                            Withdrawn::Completed(v) => Ok(Ok(v)),
                            Withdrawn::Aborted => Err(self.abort_error()),
                        };
                    }
                }
                Ok(_) => {
                    return match self.withdraw(idx) {
                        Withdrawn::Completed(v) => Ok(Ok(v)),
                        Withdrawn::Gone | Withdrawn::Aborted => Err(self.abort_error()),
                    };
                }
            }
        }
    }

    // ---- plain operations ------------------------------------------------

    /// Writes one encoded message, waiting until a reader took it (or, if
    /// buffered, until it is in the buffer).
    pub fn write(&self, data: &[u8], deadline: Option<Instant>) -> Result<(), OpError> {
        loop {
            let done = match self.post_blocking(WRITE, Some(data), deadline)? {
                Err(_) => true,
                Ok(idx) => self.finish(idx, deadline)?.is_ok(),
            };
            if done {
                self.handed_over(WRITE);
                return Ok(());
            }
        }
    }

    /// Reads one encoded message.
    pub fn read(&self, deadline: Option<Instant>) -> Result<Vec<u8>, OpError> {
        loop {
            let got = match self.post_blocking(READ, None, deadline)? {
                Err(Attempt::Done(v)) => Some(v),
                Err(Attempt::NotReady) => unreachable!("post_blocking returns only completions"),
                Ok(idx) => self.finish(idx, deadline)?.ok(),
            };
            if let Some(v) = got {
                self.handed_over(READ);
                return Ok(v.unwrap_or_default());
            }
        }
    }

    // ---- alternation support ---------------------------------------------

    /// Completes at once if the other side is ready (never waits).
    pub fn try_op(&self, dir: u32, data: Option<&[u8]>, owner: u64) -> Result<Attempt, OpError> {
        let mut g = self.lock()?;
        if dir == READ {
            self.try_read_locked(&mut g, owner)
        } else {
            self.try_write_locked(&mut g, data.unwrap_or_default(), owner)
        }
    }

    /// Posts a watch of direction `dir` for `owner`.
    pub fn post_watch(&self, dir: u32, owner: u64) -> Result<Posted, OpError> {
        let _g = self.lock()?;
        Ok(match self.alloc(WATCH | dir, owner, None) {
            Some(idx) => Posted::Record(idx),
            None => Posted::NoRoom,
        })
    }

    /// Re-arms a notified watch (owner only).
    pub fn rearm(&self, idx: u32) {
        let st = &self.rec(idx).state;
        let s = st.load(Ordering::Acquire);
        if s & !SLEEPING == NOTIFIED {
            // Fails only if poison aborted it meanwhile, which the owner
            // then sees.
            let _ = st.compare_exchange(s, WATCHING, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Posts `owner`'s single committed offer, or completes at once if
    /// the other side is ready by now.
    pub fn post_offer(&self, dir: u32, data: Option<&[u8]>, owner: u64) -> Result<Posted, OpError> {
        let mut g = self.lock()?;
        let a = if dir == READ {
            self.try_read_locked(&mut g, owner)?
        } else {
            self.try_write_locked(&mut g, data.unwrap_or_default(), owner)?
        };
        if let Attempt::Done(v) = a {
            return Ok(Posted::Completed(v));
        }
        Ok(match self.alloc(dir, owner, data) {
            Some(idx) => {
                self.poke(&mut g, if dir == READ { WRITE } else { READ }, owner);
                Posted::Record(idx)
            }
            None => Posted::NoRoom,
        })
    }

    /// Whether a counterpart of `dir` (a writer, for a reader) is *coming
    /// back* from its last handover on this channel (a hint, read without
    /// the lock; see [`Returning`]): a live counterpart's record was
    /// completed (`DONE`) and it has not collected it yet, or one
    /// completed an operation less than [`RECENT`] ago. Fair and priority
    /// selection wait a little for a guard they prefer in this state, so
    /// that a party offering all the time is not passed over merely
    /// because it was still waking up from its previous handover (see
    /// `alternation.rs`).
    pub fn returning(&self, dir: u32) -> Option<Returning> {
        let other = if dir == READ { WRITE } else { READ };
        let done = (0..self.hwm()).any(|idx| {
            let r = self.rec(idx);
            r.kind.load(Ordering::Relaxed) == other
                && r.state.load(Ordering::Acquire) & !SLEEPING == DONE
                && r.owner.load(Ordering::Relaxed) != ORPHAN
                && !lock::holder_gone(&r.held)
        });
        if done {
            return Some(Returning::Collecting);
        }
        let (at, party) = self.last_party(other);
        let at = at.load(Ordering::Relaxed);
        let party = party.load(Ordering::Relaxed);
        let ago = Duration::from_nanos(sys::waitv::monotonic_ns().saturating_sub(at));
        (at != 0 && ago < RECENT).then_some(Returning::Recent {
            pid: (party >> 32) as i32,
            tid: party as i32,
        })
    }

    /// Notes that this thread, a party of side `kind`, just completed an
    /// operation (a hint for selections, see [`returning`](Self::returning)).
    pub fn handed_over(&self, kind: u32) {
        let (at, party) = self.last_party(kind);
        let me = (u64::from(sys::process::getpid() as u32) << 32)
            | u64::from(sys::process::gettid() as u32);
        party.store(me, Ordering::Relaxed);
        at.store(sys::waitv::monotonic_ns(), Ordering::Relaxed);
    }

    /// When a party of side `kind` last completed an operation, and which
    /// (`[pid | tid]`).
    fn last_party(&self, kind: u32) -> (&AtomicU64, &AtomicU64) {
        let h = self.header();
        if kind == READ {
            (&h.read_at, &h.read_party)
        } else {
            (&h.write_at, &h.write_party)
        }
    }

    /// Whether someone other than `owner` watches for the opposite of
    /// `dir` (a hint, read without the lock).
    pub fn has_opposite_watch(&self, dir: u32, owner: u64) -> bool {
        let want = WATCH | if dir == READ { WRITE } else { READ };
        (0..self.hwm()).any(|idx| {
            let r = self.rec(idx);
            r.kind.load(Ordering::Relaxed) == want
                && r.owner.load(Ordering::Relaxed) != owner
                && matches!(
                    r.state.load(Ordering::Acquire) & !SLEEPING,
                    WATCHING | NOTIFIED
                )
        })
    }
}
