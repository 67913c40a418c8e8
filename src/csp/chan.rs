//! One channel's state machine over a block of memory: a lock-guarded
//! header, a table of *records* (parties waiting on the channel), message
//! areas, and an optional ring buffer. The same code runs over private heap
//! memory (threads) and over a shared memfd mapping (processes); nothing in
//! it holds a pointer that would not mean the same in another process.
//!
//! # Memory layout
//!
//! ```text
//! [Header, 128 B][Rec; nrecords][record data; nrecords × slot][buffer slot; capacity × (8 + slot)]
//! ```
//!
//! The header's geometry (`capacity`, `nrecords`, `slot`) is written once
//! at creation; a process opening the segment reads it once, checks that it
//! fits the mapping, and keeps its own copy, so a peer that scribbles on
//! the header later cannot make us read or write outside the mapping.
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
//! ## State table of `Rec::state`
//!
//! | value | meaning | set by |
//! |---|---|---|
//! | `FREE` 0 | unused | owner (release), or owner's withdrawal CAS |
//! | `WAITING` 1 | committed, completable | poster, under the lock |
//! | `WATCHING` 2 | watch, not completable | poster under the lock; owner re-arms `NOTIFIED → WATCHING` |
//! | `DONE` 3 | completed: a read record holds the message | a counterpart, under the lock, by CAS from `WAITING` |
//! | `NOTIFIED` 4 | a watched event happened | a counterpart, under the lock, by CAS from `WATCHING` |
//! | `ABORTED` 5 | poisoned or retired while pending | poisoner (lock-free CAS) or retirer (under the lock) |
//! | bit 31 `SLEEPING` | the owner sleeps (or is about to) on this word | owner, by CAS; whoever changes the state wakes it |
//!
//! Every transition out of `WAITING` is a CAS, so a completer's
//! `WAITING → DONE`, the owner's withdrawal `WAITING → FREE` and the
//! poisoner's `WAITING → ABORTED` race safely: exactly one wins. A
//! completer writes the message into a read record *before* its Release
//! CAS, and the owner reads it after an Acquire load that sees `DONE`. A
//! record becomes reusable (`FREE`) only by its owner, with Release, after
//! it read the message; allocation happens under the lock with an Acquire
//! load, so no allocation can overwrite a message still being read, and no
//! completer copying under the lock can see its record reallocated.
//!
//! ## Header words
//!
//! | word | meaning |
//! |---|---|
//! | `lock` | see `lock.rs` |
//! | `flags` | `POISONED` (set lock-free, never cleared), `RETIRED` (set under the lock, never cleared) |
//! | `readers`, `writers` | live ends of each side; the decrement to 0 retires the channel (under the lock) |
//! | `hwm` | one past the highest record index ever allocated (under the lock) |
//! | `buf_head`, `buf_len`, `seq` | ring buffer position and post counter (under the lock) |
//! | `freed`, `free_sleepers` | futex word bumped on every release, and how many sleep on it (SeqCst pair, Dekker style: a releaser either sees a sleeper or the sleeper sees the bump) |
//! | `magic`, `capacity`, `nrecords`, `slot`, `id` | written once at creation, before `magic` (Release); read once at open after `magic` (Acquire) |
//!
//! Words documented as "under the lock", and a record's `kind`, `seq`,
//! `len`, `owner` and message bytes, are accessed with Relaxed atomics (or
//! plain copies) while holding the lock: the lock's Acquire on `lock` and
//! Release on `unlock` order them between holders. The exceptions, read
//! without the lock, are `state` (see above), `flags` (Acquire loads; its
//! bits are set with AcqRel), and the message of a `DONE` read record,
//! which the owner reads after its Acquire load of `DONE`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::backoff::Backoff;
use super::lock;
use super::memory::Memory;
use super::spill;
use crate::sys;
use crate::sys::futex;

const MAGIC: u32 = 0x6373_7031;
const HEADER: usize = 128;
const REC: usize = 32;
const SLOT_HEADER: usize = 8;

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
pub(crate) const SLEEPING: u32 = 1 << 31;

const POISONED: u32 = 1;
const RETIRED: u32 = 2;

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
    lock: AtomicU32,
    flags: AtomicU32,
    readers: AtomicU32,
    writers: AtomicU32,
    capacity: AtomicU32,
    nrecords: AtomicU32,
    slot: AtomicU32,
    hwm: AtomicU32,
    buf_head: AtomicU32,
    buf_len: AtomicU32,
    seq: AtomicU32,
    freed: AtomicU32,
    free_sleepers: AtomicU32,
    id: AtomicU64,
    max_message: AtomicU64,
}

#[repr(C)]
struct Rec {
    state: AtomicU32,
    kind: AtomicU32,
    seq: AtomicU32,
    len: AtomicU32,
    owner: AtomicU64,
    _pad: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);
const _: () = assert!(std::mem::size_of::<Rec>() == REC);

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
        HEADER + self.nrecords as usize * REC
    }
    fn buf_off(&self) -> usize {
        self.data_off() + self.nrecords as usize * self.slot_stride()
    }
    fn buf_stride(&self) -> usize {
        SLOT_HEADER + self.slot_stride()
    }
    /// Bytes of memory the channel needs.
    pub fn size(&self) -> usize {
        self.checked_size().unwrap_or(usize::MAX)
    }

    /// Bytes of memory the channel needs, `None` if that overflows (a
    /// geometry read from a segment is not trusted).
    fn checked_size(&self) -> Option<usize> {
        let slot = (u128::from(self.slot)).div_ceil(8) * 8;
        let total = HEADER as u128
            + u128::from(self.nrecords) * (REC as u128 + slot)
            + u128::from(self.capacity) * (SLOT_HEADER as u128 + slot);
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
        lock::unlock(&chan.header().lock);
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
        if mem.len() < HEADER {
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
        unsafe { &*(self.mem.base().add(HEADER + idx * REC) as *const Rec) }
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
        let i = i.min(self.geo.capacity.saturating_sub(1)) as usize;
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
        lock::lock(&self.header().lock, self.lock_spin).map_err(|_| OpError::Poisoned)?;
        let g = Guard {
            wakes: Wakes {
                chan: self,
                recs: [0; 16],
                n: 0,
            },
        };
        if self.is_poisoned() {
            return Err(OpError::Poisoned);
        }
        Ok(g)
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

    /// Counts one more end on side `dir`.
    pub fn add_end(&self, dir: u32) {
        let h = self.header();
        let c = if dir == READ { &h.readers } else { &h.writers };
        c.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts one end less on side `dir`; the last one retires the channel.
    pub fn remove_end(&self, dir: u32) {
        let h = self.header();
        let c = if dir == READ { &h.readers } else { &h.writers };
        let prev = c.fetch_sub(1, Ordering::AcqRel);
        if prev == 1 {
            // Under the lock, so that every post either happened before
            // (and is aborted here) or sees RETIRED. A poisoned channel
            // needs no retiring.
            if let Ok(_g) = self.lock() {
                h.flags.fetch_or(RETIRED, Ordering::AcqRel);
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
        // Best effort, only when nobody holds the lock: release what is
        // buffered (spilled messages own named segments).
        let locked = lock::try_lock(&h.lock);
        if locked {
            self.drain_buffer();
        }
        // SeqCst, paired with the SeqCst record store in `alloc` and the
        // SeqCst check in `poisoned_now`: a record posted under a lock taken
        // just before the poison is either seen by the scan below (and
        // aborted) or its owner sees the flag before it sleeps.
        h.flags.fetch_or(POISONED, Ordering::SeqCst);
        lock::poison(&h.lock);
        if locked {
            lock::unlock(&h.lock);
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
            if r.state.load(Ordering::Acquire) != FREE {
                continue;
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
            // SeqCst (a Release at least, publishing the fields above):
            // see `poison`.
            r.state.store(state, Ordering::SeqCst);
            if idx >= h.hwm.load(Ordering::Relaxed) {
                h.hwm.store(idx + 1, Ordering::Relaxed);
            }
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

    fn buf_push(&self, data: &[u8]) {
        let h = self.header();
        let (head, len) = (
            h.buf_head.load(Ordering::Relaxed),
            h.buf_len.load(Ordering::Relaxed),
        );
        let (slot_len, p) = self.buf_slot((head + len) % self.geo.capacity);
        self.copy_in(p, data);
        slot_len.store(data.len() as u32, Ordering::Relaxed);
        h.buf_len.store(len + 1, Ordering::Relaxed);
    }

    fn buf_pop(&self) -> Vec<u8> {
        let h = self.header();
        let (head, len) = (
            h.buf_head.load(Ordering::Relaxed),
            h.buf_len.load(Ordering::Relaxed),
        );
        let (slot_len, p) = self.buf_slot(head);
        let v = self.copy_out(p, slot_len.load(Ordering::Relaxed));
        h.buf_head
            .store((head + 1) % self.geo.capacity, Ordering::Relaxed);
        h.buf_len.store(len - 1, Ordering::Relaxed);
        v
    }

    /// Under the lock: discards every buffered message.
    fn drain_buffer(&self) {
        while self.buf_len() > 0 {
            spill::discard(&self.buf_pop());
        }
    }

    fn buf_len(&self) -> u32 {
        if self.geo.capacity == 0 {
            0
        } else {
            self.header()
                .buf_len
                .load(Ordering::Relaxed)
                .min(self.geo.capacity)
        }
    }

    /// Under the lock: read at once if a message is buffered or a writer
    /// waits.
    fn try_read_locked(&self, g: &mut Guard<'_>, owner: u64) -> Result<Attempt, OpError> {
        if self.buf_len() > 0 {
            let v = self.buf_pop();
            // Room freed: move the oldest waiting writer in, or tell
            // watching writers.
            let mut moved = false;
            while let Some(w) = self.oldest(WRITE) {
                let msg = self.copy_out(self.rec_data(w), self.rec(w).len.load(Ordering::Relaxed));
                if self.complete(g, w) {
                    self.buf_push(&msg);
                    moved = true;
                    break;
                }
            }
            if !moved {
                self.poke(g, WRITE, owner);
            }
            return Ok(Attempt::Done(Some(v)));
        }
        while let Some(w) = self.oldest(WRITE) {
            let msg = self.copy_out(self.rec_data(w), self.rec(w).len.load(Ordering::Relaxed));
            if self.complete(g, w) {
                return Ok(Attempt::Done(Some(msg)));
            }
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
        while let Some(r) = self.oldest(READ) {
            self.copy_in(self.rec_data(r), data);
            self.rec(r).len.store(data.len() as u32, Ordering::Relaxed);
            if self.complete(g, r) {
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

    /// Waits until record `idx` leaves state `expected`; returns the new
    /// state (without `SLEEPING`), or `None` at the deadline.
    fn wait_rec(&self, idx: u32, expected: u32, deadline: Option<Instant>) -> Option<u32> {
        let st = &self.rec(idx).state;
        let mut backoff = Backoff::new(self.wait_spin > 0);
        loop {
            let s = st.load(Ordering::Acquire) & !SLEEPING;
            if s != expected {
                return Some(s);
            }
            if !backoff.snooze() {
                break;
            }
        }
        loop {
            let s = st.load(Ordering::Acquire);
            if s & !SLEEPING != expected {
                return Some(s & !SLEEPING);
            }
            if s & SLEEPING == 0
                && st
                    .compare_exchange(s, s | SLEEPING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue;
            }
            // Poisoned after our record was posted but before the
            // poisoner's scan could see it: do not sleep (see `poison`).
            if self.poisoned_now() {
                return Some(ABORTED);
            }
            let timeout = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    Some(d - now)
                }
                None => None,
            };
            futex::wait(st, expected | SLEEPING, timeout);
        }
    }

    /// Sleeps until a record is released (or `deadline`).
    fn wait_for_room(&self, seen: u32, deadline: Option<Instant>) -> Result<(), OpError> {
        let h = self.header();
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if timeout != Some(std::time::Duration::ZERO) {
            futex::wait(&h.freed, seen, timeout);
        }
        h.free_sleepers.fetch_sub(1, Ordering::SeqCst);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(OpError::Timeout);
        }
        Ok(())
    }

    /// Releases record `idx` (owner only): `→ FREE`, waking whoever waits
    /// for a free record.
    pub fn release(&self, idx: u32) {
        let h = self.header();
        // Release: our reads of the record happen-before its reuse.
        self.rec(idx).state.store(FREE, Ordering::Release);
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
            if let Some(idx) = self.alloc(kind, 0, data) {
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
                    let msg = (r.kind.load(Ordering::Relaxed) == READ)
                        .then(|| self.copy_out(self.rec_data(idx), r.len.load(Ordering::Relaxed)));
                    self.release(idx);
                    return Withdrawn::Completed(msg);
                }
                _ => {
                    self.release(idx);
                    return Withdrawn::Aborted;
                }
            }
        }
    }

    /// Waits for committed record `idx` to complete.
    fn finish(&self, idx: u32, deadline: Option<Instant>) -> Result<Option<Vec<u8>>, OpError> {
        match self.wait_rec(idx, WAITING, deadline) {
            None => match self.withdraw(idx) {
                Withdrawn::Gone => Err(OpError::Timeout),
                Withdrawn::Completed(v) => Ok(v),
                Withdrawn::Aborted => Err(self.abort_error()),
            },
            Some(_) => match self.withdraw(idx) {
                Withdrawn::Completed(v) => Ok(v),
                Withdrawn::Gone | Withdrawn::Aborted => Err(self.abort_error()),
            },
        }
    }

    // ---- plain operations ------------------------------------------------

    /// Writes one encoded message, waiting until a reader took it (or, if
    /// buffered, until it is in the buffer).
    pub fn write(&self, data: &[u8], deadline: Option<Instant>) -> Result<(), OpError> {
        match self.post_blocking(WRITE, Some(data), deadline)? {
            Err(_) => Ok(()),
            Ok(idx) => self.finish(idx, deadline).map(|_| ()),
        }
    }

    /// Reads one encoded message.
    pub fn read(&self, deadline: Option<Instant>) -> Result<Vec<u8>, OpError> {
        match self.post_blocking(READ, None, deadline)? {
            Err(Attempt::Done(v)) => Ok(v.unwrap_or_default()),
            Err(Attempt::NotReady) => unreachable!("post_blocking returns only completions"),
            Ok(idx) => self.finish(idx, deadline).map(Option::unwrap_or_default),
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
