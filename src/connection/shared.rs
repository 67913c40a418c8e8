//! The shared-memory path of a [`pipe`](super::pipe) pair: messages cross
//! in two byte rings (one per direction) in a memfd mapped by both ends,
//! with a spin before any sleep, instead of through the socket (whose every
//! message costs system calls on both sides and, when the reader sleeps, a
//! wake-up of tens of microseconds across CPUs on a small VM). The design
//! is the manager's mailbox (`manager/mailbox.rs`) generalised from one
//! message in flight to a stream.
//!
//! Only pairs made by [`pipe`](super::pipe) / [`pipe_simplex`](super::pipe_simplex)
//! have rings: both ends are then this crate's, on this host. A connection
//! from a [`Listener`](super::Listener), a [`Client`](super::Client) or
//! [`Connection::from_unix_stream`](super::Connection::from_unix_stream)
//! never has one, so a Python or remote peer sees the plain framing.
//!
//! The socket stays beside the rings and carries:
//! * messages that carry descriptors or do not fit a record
//!   ([`MAX_RECORD`]), announced in the ring by an [`ON_SOCKET`] record so
//!   that order is kept;
//! * doorbells: one [`DOORBELL`] byte, sent after a commit when the reader
//!   said it is going to sleep in `poll(2)` on the socket. Sleeping on the
//!   socket (not a futex) keeps [`wait`](super::wait), `poll` and a dead
//!   peer's end of stream working as before;
//! * its end of stream: how each side learns the other is gone.
//!
//! # Layout of the memfd (sealed against resizing)
//!
//! ```text
//! 0       Header: magic, each end's CPU, then one Dir per direction
//! 4 KiB   ring of direction 0 (end 0 writes, end 1 reads)   CAP bytes
//! …       ring of direction 1 (end 1 writes, end 0 reads)   CAP bytes
//! ```
//!
//! A record is the frame header of the socket framing (4-byte big-endian
//! length), its body, padding to 8 bytes. It never wraps: when the room
//! left before the end is too small, a [`WRAP`] record fills it.
//!
//! # Shared words, per direction
//!
//! | word | written by | meaning | ordering |
//! |---|---|---|---|
//! | `tail` | the writer, after copying records in | bytes committed, ever | SeqCst store; the reader's Acquire load sees the bytes |
//! | `head` | the reader, after copying a record out | bytes consumed, ever | SeqCst store; the writer's Acquire load frees the room |
//! | `wants` | the reader (`1`) before sleeping on the socket; the writer (`0`, swap) when it rings | send a doorbell after the next commit | SeqCst on both sides (Dekker with `tail`) |
//! | `waits` | the writer (`1`) before sleeping for room; the reader (`0`, swap) when it wakes it | wake `space` after the next consume | SeqCst on both sides (Dekker with `head`) |
//! | `space` | the reader (increment) | the writer's futex word | |
//! | `cpu[end]` | that end | the one CPU it may run on, or -1 | Relaxed: a hint for spinning |
//!
//! `wants` starts at 1 and an end sets it again when dropped: the next send
//! then rings, and a send to an end whose every copy is closed fails with
//! `EPIPE` as on a plain socket.
//!
//! # Crashes
//!
//! | dies | left behind | handled by |
//! |---|---|---|
//! | writer, copying | bytes past `tail` | nothing: never committed, never read |
//! | writer, between an `ON_SOCKET` record and its frame | the record | the reader's socket read ends in end of stream: `Disconnected` |
//! | reader, copying out | `head` not moved | nothing: the record is still there for a copy of the end |
//! | reader, writer waiting for room | a full ring | the writer looks at the socket every [`SLICE`](wait::SLICE): hung up, `Disconnected` |
//!
//! A reader bounds-checks every length it reads from the ring and copies a
//! body out before decoding it, so a peer scribbling on the memory can only
//! make a message fail to decode.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::codec::SharedFd;
use crate::error::SendError;
use crate::sys;
use crate::wait::{self, Deadline, Spin};

/// Bytes of one direction's ring.
pub(crate) const CAP: usize = 256 << 10;
/// Largest record (header and body) that goes in a ring.
pub(crate) const MAX_RECORD: usize = 64 << 10;
/// Where the first ring starts.
const DATA_OFF: usize = 4096;
/// Size of the file.
const TOTAL: usize = DATA_OFF + 2 * CAP;
/// Header of a record saying the next message is on the socket (`-2` as a
/// big-endian `i32`, never a frame length).
const ON_SOCKET: u32 = 0xFFFF_FFFE;
/// Header of a record filling the room before the end of the ring (`-3`).
const WRAP: u32 = 0xFFFF_FFFD;
/// The byte sent on the socket to wake a reader sleeping there. It cannot
/// start a frame header (those start with `0x00..=0x7F` or `0xFF`).
pub(crate) const DOORBELL: u8 = 0xDB;
const MAGIC: u64 = u64::from_le_bytes(*b"mppipe1\0");

/// Words the writer of a direction writes.
#[repr(C, align(64))]
struct WriterLine {
    tail: AtomicU64,
    waits: AtomicU32,
    space: AtomicU32,
}

/// Words the reader of a direction writes.
#[repr(C, align(64))]
struct ReaderLine {
    head: AtomicU64,
    wants: AtomicU32,
}

#[repr(C)]
struct Dir {
    w: WriterLine,
    r: ReaderLine,
}

#[repr(C, align(64))]
struct Common {
    magic: AtomicU64,
    cpu: [AtomicI32; 2],
}

#[repr(C)]
struct Header {
    common: Common,
    dirs: [Dir; 2],
}

const _: () = assert!(std::mem::size_of::<Header>() <= DATA_OFF);
const _: () = assert!(MAX_RECORD + 8 <= CAP / 2);

fn padded(len: usize) -> usize {
    (len + 7) & !7
}

/// Whether a record of `len` bytes (header included) fits after `tail`,
/// with a wrap record in front of it if it must start over.
fn fits(tail: u64, head: u64, len: usize) -> bool {
    let need = padded(len) as u64;
    let to_end = (CAP - tail as usize % CAP) as u64;
    let wrap = if to_end < need { to_end } else { 0 };
    tail + wrap + need - head <= CAP as u64
}

/// One end's view of the rings of a pair.
pub(crate) struct Shared {
    map: sys::shm::Mapping,
    fd: SharedFd,
    /// Which end this is: it writes direction `end`, reads `1 - end`.
    end: usize,
    spin: Spin,
    /// Whether this end's last commit rang the peer's doorbell (the peer
    /// slept): this end's next wait spins the full limit, covering the
    /// peer's wake-up (see `Spin::until_probing_if`).
    rang: AtomicBool,
}

/// What is next in the ring being read.
pub(crate) enum Next {
    /// Nothing committed.
    Empty,
    /// The next message is on the socket (the record is consumed).
    Socket,
    /// A message of `len` body bytes.
    Message(usize),
    /// A record that cannot be: the ring is unusable.
    Bad,
}

impl Shared {
    /// A fresh pair of rings, as its two ends.
    pub fn pair() -> io::Result<(Shared, Shared)> {
        let fd = sys::shm::memfd("multiproc-pipe", TOTAL)?;
        let fd = SharedFd::new(fd);
        let a = Shared::map(fd.clone(), 0)?;
        let h = a.header();
        for d in &h.dirs {
            d.r.wants.store(1, Ordering::Relaxed);
        }
        h.common.cpu[0].store(-1, Ordering::Relaxed);
        h.common.cpu[1].store(-1, Ordering::Relaxed);
        h.common.magic.store(MAGIC, Ordering::Release);
        let b = Shared::map(fd, 1)?;
        Ok((a, b))
    }

    fn map(fd: SharedFd, end: usize) -> io::Result<Shared> {
        let map = sys::shm::Mapping::map(fd.fd(), TOTAL)?;
        Ok(Shared {
            map,
            fd,
            end,
            spin: Spin::new(&wait::SHARED),
            rang: AtomicBool::new(false),
        })
    }

    /// Maps end `end` of the rings in `fd` (received with a connection),
    /// after checking that it is a sealed file of the right size and kind.
    pub fn attach(fd: SharedFd, end: u8) -> io::Result<Shared> {
        if end > 1 || sys::shm::size(fd.fd())? != TOTAL || !sys::shm::resize_sealed(fd.fd())? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a sealed pipe memory of the right size",
            ));
        }
        let sh = Shared::map(fd, end as usize)?;
        if sh.header().common.magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not pipe memory",
            ));
        }
        Ok(sh)
    }

    /// The descriptor and end number, to send this end to another process.
    pub fn wire(&self) -> (SharedFd, u8) {
        (self.fd.clone(), self.end as u8)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is TOTAL bytes, page-aligned, and starts with
        // a Header (checked at compile time to fit); every field is an
        // atomic, valid at any bit pattern.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    /// The byte at `off` (below CAP) of direction `dir`'s ring.
    fn ring_at(&self, dir: usize, off: usize) -> *mut u8 {
        debug_assert!(off < CAP);
        // SAFETY: both rings lie inside the TOTAL-byte mapping and `off`
        // is inside the ring.
        unsafe { self.map.as_ptr().add(DATA_OFF + dir * CAP + off) }
    }

    fn out(&self) -> &Dir {
        &self.header().dirs[self.end]
    }

    fn inn(&self) -> &Dir {
        &self.header().dirs[1 - self.end]
    }

    // ------------------------------------------------------------ writing

    /// Starts writing records; nothing is visible before [`Txn::commit`].
    /// The caller holds the end's writer lock.
    pub fn begin(&self) -> Txn<'_> {
        self.publish_cpu();
        let d = self.out();
        let tail = d.w.tail.load(Ordering::Relaxed);
        Txn {
            sh: self,
            start: tail,
            tail,
            head: d.r.head.load(Ordering::Acquire),
        }
    }

    /// Sleeps until the ring has room for a record of `len` bytes (header
    /// included), or the peer is gone. The caller holds the writer lock.
    pub fn wait_room(&self, len: usize, sock: BorrowedFd<'_>) -> Result<(), SendError> {
        let d = self.out();
        let room = || {
            fits(
                d.w.tail.load(Ordering::Relaxed),
                d.r.head.load(Ordering::SeqCst),
                len,
            )
        };
        if room() || self.spin.until_if(self.may_spin(), room, Deadline::NEVER) {
            return Ok(());
        }
        loop {
            let seen = d.w.space.load(Ordering::SeqCst);
            d.w.waits.store(1, Ordering::SeqCst);
            if room() {
                d.w.waits.store(0, Ordering::Relaxed);
                return Ok(());
            }
            if sys::futex::wait(&d.w.space, seen, Some(wait::SLICE)) == sys::futex::Wake::TimedOut
                && sys::poll::hung_up(sock).unwrap_or(true)
            {
                return Err(SendError::Disconnected);
            }
        }
    }

    // ------------------------------------------------------------ reading

    fn read_u32(&self, pos: u64) -> u32 {
        let mut b = [0u8; 4];
        // SAFETY: `pos % CAP` is 8-aligned and at most CAP - 8, so the 4
        // bytes lie inside the ring; the copy goes to a local buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ring_at(1 - self.end, pos as usize % CAP),
                b.as_mut_ptr(),
                4,
            )
        };
        u32::from_be_bytes(b)
    }

    /// What is next in the incoming ring. Wrap records are skipped, an
    /// [`ON_SOCKET`] record consumed. The caller holds the reader lock.
    pub fn next(&self) -> Next {
        let d = self.inn();
        loop {
            let head = d.r.head.load(Ordering::Relaxed);
            let tail = d.w.tail.load(Ordering::Acquire);
            if head == tail {
                return Next::Empty;
            }
            let left = tail.wrapping_sub(head);
            if left > CAP as u64 || !head.is_multiple_of(8) || left < 8 {
                return Next::Bad;
            }
            let h = self.read_u32(head);
            let to_end = (CAP - head as usize % CAP) as u64;
            match h {
                WRAP if to_end <= left => self.consume_bytes(to_end),
                ON_SOCKET => {
                    self.consume_bytes(8);
                    return Next::Socket;
                }
                len if (len as usize) + 4 <= MAX_RECORD
                    && padded(len as usize + 4) as u64 <= left.min(to_end) =>
                {
                    return Next::Message(len as usize);
                }
                _ => return Next::Bad,
            }
        }
    }

    /// Copies the body of the message [`next`](Self::next) announced
    /// (`len` bytes) into `dst` and consumes it.
    pub fn take(&self, len: usize, dst: &mut [u8]) {
        let head = self.inn().r.head.load(Ordering::Relaxed);
        let dst = &mut dst[..len];
        // SAFETY: `next` checked that the record (4 + len bytes from
        // `head % CAP`) lies inside the ring and is committed; the writer
        // does not touch it until `head` moves past it. A peer writing
        // anyway can only change the bytes copied, not their bounds.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ring_at(1 - self.end, head as usize % CAP + 4),
                dst.as_mut_ptr(),
                len,
            )
        };
        self.consume_bytes(padded(len + 4) as u64);
    }

    /// Like [`take`](Self::take), into a new vector of exactly `len`
    /// bytes, copied straight into its fresh capacity (no zeroing pass).
    pub fn take_vec(&self, len: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(len);
        let head = self.inn().r.head.load(Ordering::Relaxed);
        // SAFETY: the source as in `take` (`next` checked the record lies
        // inside the ring and is committed); `body` has room for `len`
        // bytes, and its buffer cannot overlap the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ring_at(1 - self.end, head as usize % CAP + 4),
                body.as_mut_ptr(),
                len,
            )
        };
        // SAFETY: the copy above initialised the first `len` bytes, and
        // `len` is within the capacity.
        unsafe { body.set_len(len) };
        self.consume_bytes(padded(len + 4) as u64);
        body
    }

    fn consume_bytes(&self, n: u64) {
        let d = self.inn();
        let head = d.r.head.load(Ordering::Relaxed) + n;
        d.r.head.store(head, Ordering::SeqCst);
        if d.w.waits.load(Ordering::SeqCst) != 0 && d.w.waits.swap(0, Ordering::SeqCst) != 0 {
            d.w.space.fetch_add(1, Ordering::SeqCst);
            sys::futex::wake_all(&d.w.space);
        }
    }

    /// Whether a record is committed in the incoming ring.
    pub fn has_data(&self) -> bool {
        let d = self.inn();
        d.w.tail.load(Ordering::Acquire) != d.r.head.load(Ordering::Relaxed)
    }

    /// Asks for a doorbell on the socket after the writer's next commit;
    /// whether the ring is still empty (if not, no doorbell is needed).
    pub fn arm(&self) -> bool {
        let d = self.inn();
        d.r.wants.store(1, Ordering::SeqCst);
        let empty = d.w.tail.load(Ordering::SeqCst) == d.r.head.load(Ordering::Relaxed);
        if !empty {
            d.r.wants.store(0, Ordering::Relaxed);
        }
        empty
    }

    /// This end stops reading for now (it is dropped): the next commit
    /// rings, which tells the writer if every copy of this end is gone.
    pub fn release(&self) {
        self.inn().r.wants.store(1, Ordering::SeqCst);
    }

    /// Spins until a record is committed, the budget runs out or
    /// `deadline` passes; whether one came.
    pub fn spin_for_data(&self, deadline: Option<Instant>) -> bool {
        let woke_peer = self.rang.load(Ordering::Relaxed);
        if woke_peer {
            self.rang.store(false, Ordering::Relaxed);
        }
        self.spin.until_probing_if(
            self.may_spin(),
            woke_peer,
            || self.has_data(),
            Deadline::at(deadline),
        )
    }

    /// Whether spinning can help: the machine has more than one CPU and
    /// the two ends are not both pinned to the same one. Each end publishes
    /// the CPU it is pinned to (a process pinned to one CPU can still be
    /// answered by a peer running on another, which is the common case of
    /// pinned workers).
    pub fn may_spin(&self) -> bool {
        self.publish_cpu();
        let peer = self.header().common.cpu[1 - self.end].load(Ordering::Relaxed);
        wait::may_spin_beside(peer)
    }

    /// Publishes this end's CPU (see [`may_spin`](Self::may_spin)) without
    /// deciding anything: writers call it so that a reader sees where its
    /// writer runs.
    pub fn publish_cpu(&self) {
        let cpus = &self.header().common.cpu;
        let me = wait::pinned_cpu();
        if cpus[self.end].load(Ordering::Relaxed) != me {
            cpus[self.end].store(me, Ordering::Relaxed);
        }
    }
}

/// Records being written to the outgoing ring.
pub(crate) struct Txn<'a> {
    sh: &'a Shared,
    start: u64,
    tail: u64,
    /// The reader's `head` as last seen.
    head: u64,
}

impl Txn<'_> {
    /// Reserves a record of `len` bytes (header included): its offset in
    /// the ring, or `None` if there is no room now.
    fn reserve(&mut self, len: usize) -> Option<usize> {
        if !fits(self.tail, self.head, len) {
            self.head = self.sh.out().r.head.load(Ordering::Acquire);
            if !fits(self.tail, self.head, len) {
                return None;
            }
        }
        let need = padded(len) as u64;
        let to_end = (CAP - self.tail as usize % CAP) as u64;
        let wrap = if to_end < need { to_end } else { 0 };
        if wrap > 0 {
            self.write_at(self.tail, &[&WRAP.to_be_bytes()]);
            self.tail += wrap;
        }
        let at = self.tail;
        self.tail += need;
        Some(at as usize % CAP)
    }

    fn write_at(&self, pos: u64, parts: &[&[u8]]) {
        let mut off = pos as usize % CAP;
        for p in parts {
            // SAFETY: `reserve` made room for the whole record from `pos`,
            // before the end of the ring and not yet committed, so the
            // reader does not look at it; this end's writer lock keeps
            // other writers of this process out.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    p.as_ptr(),
                    self.sh.ring_at(self.sh.end, off),
                    p.len(),
                )
            };
            off += p.len();
        }
    }

    /// Appends one whole frame (its 4-byte header first, then the body,
    /// possibly in several parts; at most [`MAX_RECORD`] bytes); whether
    /// it fit.
    pub fn put(&mut self, parts: &[&[u8]]) -> bool {
        let len = parts.iter().map(|p| p.len()).sum();
        debug_assert!(len <= MAX_RECORD);
        match self.reserve(len) {
            Some(at) => {
                self.write_at(at as u64, parts);
                true
            }
            None => false,
        }
    }

    /// Appends a record announcing a message on the socket; whether it fit.
    pub fn put_on_socket(&mut self) -> bool {
        self.put(&[&ON_SOCKET.to_be_bytes(), &[0; 4]])
    }

    /// Whether anything was appended.
    pub fn is_empty(&self) -> bool {
        self.tail == self.start
    }

    /// Makes the records visible and rings the reader if it sleeps.
    /// `Disconnected` when the ring said so and every copy of the reading
    /// end is closed (the records are then lost, as on a socket).
    pub fn commit(self, sock: BorrowedFd<'_>) -> Result<(), SendError> {
        if self.tail == self.start {
            return Ok(());
        }
        let d = self.sh.out();
        d.w.tail.store(self.tail, Ordering::SeqCst);
        if d.r.wants.load(Ordering::SeqCst) != 0 && d.r.wants.swap(0, Ordering::SeqCst) != 0 {
            self.sh.rang.store(true, Ordering::Relaxed);
            match sys::socket::try_send(sock, &[io::IoSlice::new(&[DOORBELL])], &[]) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(super::send_error(e)),
            }
        }
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("end", &self.end).finish()
    }
}

impl AsFd for Shared {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.fd()
    }
}
