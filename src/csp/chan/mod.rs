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
//! In private memory (a `threads_only` channel: the threads and
//! lightweight processes of one process) there is no holder table and the
//! records are packed (72 B each): no other process can hold ends or die
//! inside it, and a network of a million lightweight processes has a
//! million channels.
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
//! | `read_at`, `read_party`, `write_at`, `write_party` | when (coarse monotonic nanoseconds) a party of that side last completed an operation, and which (`[pid \| tid]`); Relaxed, lock-free, a hint for selection (see `returning`) |
//! | `read_cpu`, `write_cpu` | the CPU the party of that side that last completed an operation is pinned to, plus one (0: not pinned, or none yet); Relaxed, lock-free, stored only when it changes: tells a waiting counterpart whether spinning can help (see `spin_rec`) |
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
//!
//! # Where the code lives
//!
//! * here: the layout (header, holder table, records), the geometry, the
//!   lock and its guard, and the accessors every part uses;
//! * `offers.rs`: under the lock, posting records and completing them (a
//!   read or write at once, the oldest live counterpart, watches told);
//! * `messages.rs`: the message bytes: copies in and out of records, the
//!   ring buffer, and the spill segments of large messages;
//! * `waiting.rs`: sleeping on a record or for a free one, withdrawing,
//!   and finishing a posted operation;
//! * `ops.rs`: the operations the channel handles call (read, write, and
//!   what an alternation needs);
//! * `hints.rs`: lock-free hints for selection (who waits, who is coming
//!   back);
//! * `ends.rs`: counting the ends of each side per process, retiring,
//!   poisoning;
//! * `healing.rs`: repairing after a death (the crash table above);
//! * `crash.rs`: the crash points tests kill a process at.

#![allow(unsafe_code)]

mod crash;
mod ends;
pub(crate) mod fast;
mod healing;
mod hints;
mod messages;
mod offers;
mod ops;
mod waiting;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use self::fast::Fast;
use super::error::ChannelError;
use super::lock;
use super::memory::Memory;
use crate::sys;
use crate::sys::futex;
use crate::sys::robust_mutex::{Locked, RobustMutex};
use crate::sys::shm::InPlace;
use crate::wait::{self, Backoff};

pub(crate) use crash::crash_point;
#[doc(hidden)]
pub use crash::{CrashPoint, crash_at};

const MAGIC: u32 = 0x6373_7032;
const HEADER: usize = 192;
/// Slots of the holder table (processes holding ends, see *Ends of dead
/// processes*), and the size of one.
const HOLDERS: usize = 32;
const HOLDER: usize = 24;
/// Where the records start in shared memory (after the holder table).
const RECS: usize = HEADER + HOLDERS * HOLDER;
/// The stride of records in shared memory: one cache line each, apart.
const REC: usize = 128;
/// The stride of records in private memory, packed (a million channels
/// between lightweight processes must fit).
const REC_PACKED: usize = std::mem::size_of::<Rec>();
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
    read_cpu: AtomicU32,
    write_cpu: AtomicU32,
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

// SAFETY: `#[repr(C)]`, only atomics and a process-shared mutex (whose
// word changes only through pthread calls): valid at any bit pattern a peer
// may leave, and changed only through interior mutability.
unsafe impl InPlace for Header {}
// SAFETY: as for `Header`: only atomics.
unsafe impl InPlace for Holder {}
// SAFETY: as for `Header`.
unsafe impl InPlace for Rec {}

fn pack(head: u32, len: u32) -> u64 {
    u64::from(head) | (u64::from(len) << 32)
}

fn unpack(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);
const _: () = assert!(std::mem::size_of::<Rec>() <= REC && REC.is_multiple_of(8));
const _: () = assert!(REC_PACKED.is_multiple_of(8));

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
    /// Private memory (`Memory::Heap`): no other process can hold ends or
    /// die inside the channel, so there is no holder table and the records
    /// are packed.
    pub private: bool,
}

impl Geometry {
    /// Slots of the holder table (none in private memory).
    fn holders(&self) -> usize {
        if self.private { 0 } else { HOLDERS }
    }
    /// Where the records start.
    fn recs_off(&self) -> usize {
        HEADER + self.holders() * HOLDER
    }
    /// The stride of the records.
    fn rec_stride(&self) -> usize {
        if self.private { REC_PACKED } else { REC }
    }
    fn slot_stride(&self) -> usize {
        (self.slot as usize).div_ceil(8) * 8
    }
    fn data_off(&self) -> usize {
        self.recs_off() + self.nrecords as usize * self.rec_stride()
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
        let total = self.recs_off() as u128
            + u128::from(self.nrecords) * (self.rec_stride() as u128 + slot)
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

/// A new channel identity: this process's id and a counter.
fn new_id() -> u64 {
    (u64::from(sys::process::getpid() as u32) << 32)
        | u64::from(NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// Makes zeroed memory of at least `geo.size()` bytes, not yet seen by
/// anyone else, a channel: its mutexes and its geometry.
fn init_memory(mem: &Memory, geo: &Geometry, id: u64) {
    assert!(mem.len() >= geo.size());
    let h: &Header = mem.at(0);
    // The mutexes stay where they are for the memory's lifetime.
    let lock = std::ptr::from_ref(&h.lock).cast_mut();
    // SAFETY: the channel lock (an `UnsafeCell` inside, so writable
    // through this pointer), unused by anyone yet (above).
    unsafe { RobustMutex::init(lock) }.expect("initialise a channel lock");
    for idx in 0..geo.nrecords as usize {
        let rec: &Rec = mem.at(geo.recs_off() + idx * geo.rec_stride());
        let held = std::ptr::from_ref(&rec.held).cast_mut();
        // SAFETY: as for the channel lock, for the record's mutex.
        unsafe { RobustMutex::init(held) }.expect("initialise a channel record");
    }
    h.capacity.store(geo.capacity, Ordering::Relaxed);
    h.nrecords.store(geo.nrecords, Ordering::Relaxed);
    h.slot.store(geo.slot, Ordering::Relaxed);
    h.max_message.store(geo.max_message, Ordering::Relaxed);
    h.id.store(id, Ordering::Relaxed);
    // Release: a process that maps the segment later (after receiving
    // the descriptor, itself a synchronising event) sees the geometry.
    h.magic.store(MAGIC, Ordering::Release);
}

/// One channel: its memory and this process's copy of its geometry.
pub(crate) struct Chan {
    /// Set at creation for shared memory; private memory is allocated by
    /// the first use of the general path ([`Chan::mem`]).
    mem: OnceLock<Memory>,
    geo: Geometry,
    /// The direct hand-over between lightweight processes of this
    /// process, while nobody else uses the channel (`chan/fast.rs`).
    fast: Fast,
    /// A private channel's words that its memory would hold otherwise.
    local: Local,
}

/// The words of a private channel that are needed before it has memory
/// (the header's `flags`, `readers`, `writers` and `id`, which a private
/// channel's header leaves unused): a million channels between
/// lightweight processes, which only the hand-over path uses, need no
/// more (about 400 bytes a channel less).
#[derive(Default)]
struct Local {
    flags: AtomicU32,
    readers: AtomicU32,
    writers: AtomicU32,
    id: u64,
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
            futex::wake_owner(&self.chan.rec(idx).state);
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
            // Only a record's owner sleeps on its word: when that is a
            // lightweight process of ours, no syscall is needed.
            futex::wake_owner(&chan.rec(idx).state);
        }
    }
}

impl Chan {
    /// A new channel in `mem`, shared memory (a memfd mapping) which must
    /// be zeroed and at least `geo.size()` bytes.
    pub fn create(mem: Memory, geo: Geometry) -> Chan {
        assert!(mem.len() >= geo.size());
        assert!(
            !geo.private && mem.fd().is_some(),
            "a shared geometry in shared memory"
        );
        let id = new_id();
        init_memory(&mem, &geo, id);
        Chan {
            mem: OnceLock::from(mem),
            geo,
            fast: Fast::new(geo.capacity == 0),
            local: Local::default(),
        }
    }

    /// A new channel in private memory (threads and lightweight processes
    /// of this process only). The memory is allocated when the general
    /// path first needs it: a rendezvous channel that only lightweight
    /// processes use (`fast.rs`) may never need it.
    pub fn private(geo: Geometry) -> Chan {
        assert!(geo.private, "a private geometry");
        Chan {
            mem: OnceLock::new(),
            geo,
            fast: Fast::new(geo.capacity == 0),
            local: Local {
                id: new_id(),
                ..Local::default()
            },
        }
    }

    /// Opens a channel created by another process in `mem`, checking that
    /// its geometry fits the memory.
    pub fn open(mem: Memory) -> Result<Chan, String> {
        if mem.len() < RECS {
            return Err("channel segment too small".into());
        }
        let mut chan = Chan {
            mem: OnceLock::from(mem),
            geo: Geometry {
                capacity: 0,
                nrecords: 0,
                slot: 0,
                max_message: 0,
                private: false,
            },
            fast: Fast::new(false),
            local: Local::default(),
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
            private: false,
        };
        let _ = h;
        if geo.nrecords == 0 || geo.checked_size().is_none_or(|n| n > chan.mem().len()) {
            return Err("channel segment geometry does not fit its size".into());
        }
        chan.geo = geo;
        Ok(chan)
    }

    /// The direct hand-over path of lightweight processes.
    pub fn fast(&self) -> &Fast {
        &self.fast
    }

    /// The memory, for passing the segment on.
    pub fn memory(&self) -> &Memory {
        self.mem()
    }

    /// The channel's memory: a private channel's is allocated here, when
    /// first needed.
    #[inline]
    fn mem(&self) -> &Memory {
        self.mem.get_or_init(|| {
            let mem = Memory::heap(self.geo.size());
            init_memory(&mem, &self.geo, self.local.id);
            mem
        })
    }

    /// The header (the memory holds at least `RECS` bytes, checked in
    /// create/open).
    fn header(&self) -> &Header {
        self.mem().at(0)
    }

    /// The `flags` word: in the header, or for a private channel beside
    /// it (see [`Local`]).
    fn flags(&self) -> &AtomicU32 {
        if self.geo.private {
            &self.local.flags
        } else {
            &self.header().flags
        }
    }

    /// The count of ends of side `dir` (`readers` or `writers`): in the
    /// header, or for a private channel beside it.
    fn ends_word(&self, dir: u32) -> &AtomicU32 {
        match (self.geo.private, dir == READ) {
            (true, true) => &self.local.readers,
            (true, false) => &self.local.writers,
            (false, true) => &self.header().readers,
            (false, false) => &self.header().writers,
        }
    }

    /// Record `idx`, which must be below `nrecords`.
    fn rec(&self, idx: u32) -> &Rec {
        debug_assert!(idx < self.geo.nrecords);
        let idx = idx.min(self.geo.nrecords - 1) as usize;
        self.mem()
            .at(self.geo.recs_off() + idx * self.geo.rec_stride())
    }

    /// Byte `off` of the memory, which the geometry (checked against the
    /// memory's size) puts inside it.
    fn byte(&self, off: usize) -> *mut u8 {
        debug_assert!(off <= self.mem().len());
        // SAFETY: `off` lies inside the memory (above).
        unsafe { self.mem().base().add(off) }
    }

    /// The message area of record `idx`: `slot` bytes.
    fn rec_data(&self, idx: u32) -> *mut u8 {
        let idx = idx.min(self.geo.nrecords - 1) as usize;
        self.byte(self.geo.data_off() + idx * self.geo.slot_stride())
    }

    /// Buffer slot `i`: its length word, then `slot` bytes of message.
    fn buf_slot(&self, i: u32) -> (&AtomicU32, *mut u8) {
        let i = i.min(self.geo.buf_slots().saturating_sub(1)) as usize;
        let off = self.geo.buf_off() + i * self.geo.buf_stride();
        (self.mem().at(off), self.byte(off + SLOT_HEADER))
    }

    /// Slots of the holder table (none in private memory).
    fn holders(&self) -> usize {
        self.geo.holders()
    }

    /// Slot `i` (below `holders()`) of the holder table (inside the
    /// `RECS` bytes a shared memory holds at least, checked in
    /// create/open).
    fn holder(&self, i: usize) -> &Holder {
        debug_assert!(i < self.holders());
        let i = i.min(HOLDERS - 1);
        self.mem().at(HEADER + i * HOLDER)
    }

    /// The channel's identity (orders channels for alternation).
    pub fn id(&self) -> u64 {
        if self.geo.private {
            self.local.id
        } else {
            self.header().id.load(Ordering::Relaxed)
        }
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
        self.flags().load(Ordering::Acquire) & POISONED != 0
    }

    /// Whether the channel is poisoned, in the SeqCst order that pairs
    /// with `poison` (checked by a sleeper after it set `SLEEPING`).
    pub fn poisoned_now(&self) -> bool {
        self.flags().load(Ordering::SeqCst) & POISONED != 0
    }

    /// Whether the channel is retired.
    pub fn is_retired(&self) -> bool {
        self.flags().load(Ordering::Acquire) & RETIRED != 0
    }

    /// The record's futex word.
    pub fn state_word(&self, idx: u32) -> &AtomicU32 {
        &self.rec(idx).state
    }

    fn lock(&self) -> Result<Guard<'_>, OpError> {
        let got = lock::lock(&self.header().lock, Backoff::new(&wait::CSP_LOCK))
            .ok_or(OpError::Poisoned)?;
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

    fn hwm(&self) -> u32 {
        self.header()
            .hwm
            .load(Ordering::Relaxed)
            .min(self.geo.nrecords)
    }

    /// The error a dead (aborted) operation reports.
    fn abort_error(&self) -> OpError {
        if self.is_poisoned() {
            OpError::Poisoned
        } else {
            OpError::Retired
        }
    }

    /// The channel's words and records, for diagnosing a test.
    pub fn debug_state(&self) -> String {
        let h = self.header();
        let mut out = format!(
            "lock {:#x} flags {} readers {} writers {} hwm {} buf {:?} intent {:#x}\n",
            h.lock.word(),
            self.flags().load(Ordering::Relaxed),
            self.ends_word(READ).load(Ordering::Relaxed),
            self.ends_word(WRITE).load(Ordering::Relaxed),
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
}

/// The error a channel operation's failure gives its caller.
pub(crate) fn op_error(e: OpError) -> ChannelError {
    match e {
        OpError::Poisoned => ChannelError::Poisoned,
        OpError::Retired => ChannelError::Retired,
        OpError::Timeout => ChannelError::Timeout,
    }
}
