//! Length-prefixed frames, in the shape Python's `multiprocessing.connection`
//! uses: a 4-byte big-endian signed length, or `-1` followed by an 8-byte
//! big-endian length for frames of 2 GiB and more.
//!
//! The reader keeps one buffer per connection so that a small frame usually
//! arrives in a single `recvmsg`, and checks every announced length against
//! the connection's cap *before* allocating anything. A frame too large for
//! that buffer gets its own allocation, which grows with the bytes that
//! arrive rather than with the announced length, and which the socket
//! fills directly without zeroing it first (see `Large`). The buffer starts at
//! one page and doubles (up to 64 KiB; not with rings, see `fill`) whenever
//! a read fills it: a
//! connection that only ever carries a few small messages (a child's
//! bootstrap and result) then never zeroes 64 KiB, which after a `fork`
//! would also mean copying 16 write-protected pages.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::error::RecvError;
use crate::sys;

/// Header size for frames below 2 GiB.
pub const SHORT_HEADER: usize = 4;
/// Header size for frames of 2 GiB and more.
pub const LONG_HEADER: usize = 12;
/// Default cap on one frame: 512 MiB.
pub const DEFAULT_MAX_FRAME: usize = 512 << 20;
/// Most received descriptors kept waiting for their message; more is a
/// protocol violation.
const MAX_PENDING_FDS: usize = 4 * sys::socket::MAX_FDS_PER_MSG;
const BUF_SIZE: usize = 64 << 10;
/// The capacity a large frame's buffer starts with.
const FIRST_LARGE_CAPACITY: usize = 1 << 20;
/// The read buffer's first size (it grows to `BUF_SIZE`).
const FIRST_BUF_SIZE: usize = 4 << 10;

/// Writes the header for a body of `len` bytes; returns the header length.
pub fn write_header(len: usize, out: &mut [u8; LONG_HEADER]) -> usize {
    if len < i32::MAX as usize {
        out[..4].copy_from_slice(&(len as i32).to_be_bytes());
        SHORT_HEADER
    } else {
        out[..4].copy_from_slice(&(-1i32).to_be_bytes());
        out[4..12].copy_from_slice(&(len as u64).to_be_bytes());
        LONG_HEADER
    }
}

/// The cap actually enforced: no allocation can exceed `isize::MAX` bytes.
fn cap(max: usize) -> usize {
    max.min(isize::MAX as usize - LONG_HEADER)
}

/// Where the body of the next frame is.
pub enum Body {
    /// `buf[start..end]` of the read buffer.
    InBuffer(usize, usize),
    /// A frame too large for the buffer, read into its own allocation.
    Owned(Vec<u8>),
}

/// A frame too large for the read buffer, being received into its own
/// allocation.
///
/// The memory follows the bytes that arrive, not the length the header
/// announced: the socket writes straight into the vector's spare capacity
/// (never zeroed, so a page becomes resident only when bytes land in it),
/// and the capacity runs ahead of the bytes (1 MiB, then four times over,
/// never past the announced length). A peer announcing 500 MiB and sending
/// one byte thus makes one page resident, not 500 MiB. An honest frame is
/// read straight into the vector that `recv_bytes` returns: a frame of up
/// to 1 MiB is never reallocated, a larger one a few times (for such sizes
/// `realloc` mostly moves pages, `mremap`, rather than copying bytes).
/// Writing into uninitialised room with no zeroing pass is what lets an
/// owned 1 MiB receive cost about what a receive into the caller's buffer
/// costs.
struct Large {
    /// The bytes arrived so far.
    body: Vec<u8>,
    /// The announced body length.
    len: usize,
    /// The header length.
    hlen: usize,
}

impl Large {
    /// Starts a frame of `len` body bytes whose first bytes are `have`.
    fn new(have: &[u8], len: usize, hlen: usize) -> Result<Self, RecvError> {
        let mut large = Large {
            body: Vec::new(),
            len,
            hlen,
        };
        large.reserve(have.len().max(FIRST_LARGE_CAPACITY).min(len))?;
        large.body.extend_from_slice(have);
        Ok(large)
    }

    /// Makes the capacity at least `capacity` (`<= len`). Fails if memory
    /// cannot be had (the cap allows more than there is): an error, not an
    /// abort.
    fn reserve(&mut self, capacity: usize) -> Result<(), RecvError> {
        let more = capacity.saturating_sub(self.body.len());
        if self.body.try_reserve_exact(more).is_err() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory).into());
        }
        Ok(())
    }

    /// Makes sure there is spare capacity to receive into: four times the
    /// capacity when it is full (at least [`FIRST_LARGE_CAPACITY`], at most
    /// the announced length).
    fn make_room(&mut self) -> Result<(), RecvError> {
        if self.body.len() == self.body.capacity() {
            self.reserve(
                self.body
                    .capacity()
                    .saturating_mul(4)
                    .max(FIRST_LARGE_CAPACITY)
                    .min(self.len),
            )?;
        }
        Ok(())
    }

    /// Body bytes still to come.
    fn missing(&self) -> usize {
        self.len - self.body.len()
    }
}

/// Where a receive puts its bytes.
enum Room<'a> {
    /// Into this slice.
    Slice(&'a mut [u8]),
    /// Appended to the vector, in its spare capacity, at most this many
    /// bytes (the rest of the frame: a receive must not take bytes of the
    /// next frame, which may carry descriptors).
    Spare(&'a mut Vec<u8>, usize),
}

/// The reading half of a connection.
pub struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Descriptors received and not yet claimed by a message.
    pub fds: VecDeque<OwnedFd>,
    /// A large frame being filled.
    large: Option<Large>,
    broken: bool,
    eof: bool,
    unix: bool,
    /// The connection has shared-memory rings (see `shared.rs`): doorbell
    /// bytes between frames are skipped, and a frame is read from the
    /// socket only when a ring record announced it.
    pub shm: bool,
    /// A ring record announced a frame on the socket that is not fully
    /// received yet.
    pub socket_pending: bool,
    /// Reused buffer for messages copied out of a ring.
    pub scratch: Vec<u8>,
}

/// What [`Reader::drain_doorbells`] found on the socket.
pub enum Drained {
    /// Nothing (doorbells only, or nothing at all).
    Nothing,
    /// Bytes of a frame.
    Data,
    /// End of stream.
    Eof,
}

impl Reader {
    pub fn new(unix: bool) -> Self {
        Reader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            large: None,
            broken: false,
            eof: false,
            unix,
            shm: false,
            socket_pending: false,
            scratch: Vec::new(),
        }
    }

    /// Leading doorbell bytes in the buffer (none without rings).
    fn doorbells(&self) -> usize {
        if !self.shm || self.large.is_some() {
            return 0;
        }
        self.buf[self.start..self.end]
            .iter()
            .take_while(|&&b| b == super::shared::DOORBELL)
            .count()
    }

    /// Whether bytes of a frame are buffered (not counting doorbells).
    pub fn has_frame_bytes(&self) -> bool {
        self.large.is_some() || self.end - self.start > self.doorbells()
    }

    /// Marks the stream broken: every later receive fails.
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    /// Whether the stream broke.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether the stream ended or broke.
    pub fn ended(&self) -> bool {
        self.eof || self.broken
    }

    /// Reads what the socket holds without waiting, dropping doorbells
    /// (connections with rings only); what else is there.
    pub fn drain_doorbells(&mut self, fd: BorrowedFd<'_>) -> Result<Drained, RecvError> {
        if self.buf.len() < FIRST_BUF_SIZE {
            self.buf.resize(FIRST_BUF_SIZE, 0);
        }
        loop {
            let n = self.doorbells();
            self.consume(n);
            if self.has_frame_bytes() {
                return Ok(Drained::Data);
            }
            if self.eof {
                return Ok(Drained::Eof);
            }
            let room = self.buf.len() - self.end;
            match self.recv_into_room(fd, true) {
                Ok(0) => {}
                Ok(n) => {
                    // Less than the room: that was all.
                    if n < room && self.doorbells() == self.end - self.start {
                        self.consume(n);
                        return Ok(Drained::Nothing);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Drained::Nothing);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sleeps until the socket has bytes (doorbells, a frame) or ends, and
    /// buffers what came (connections with rings only).
    pub fn recv_blocking(&mut self, fd: BorrowedFd<'_>) -> Result<(), RecvError> {
        if self.eof {
            return Ok(());
        }
        if self.buf.len() < FIRST_BUF_SIZE {
            self.buf.resize(FIRST_BUF_SIZE, 0);
        }
        if self.end == self.buf.len() {
            // Full of frame bytes: nothing to wait for.
            return Ok(());
        }
        match self.recv_into_room(fd, false) {
            Ok(0) => {}
            Ok(_) => {
                let bells = self.doorbells();
                self.consume(bells);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Whether the next receive completes without reading the socket: a
    /// whole frame is buffered, or the error the receive will report is
    /// already known (end of stream, a broken stream, a bad or oversized
    /// header). Part of a frame does not count.
    pub fn ready(&self, max: usize) -> bool {
        if self.broken || self.eof {
            return true;
        }
        if self.large.is_some() {
            return false;
        }
        let b = &self.buf[self.start + self.doorbells()..self.end];
        let Some(short) = b.get(..4) else {
            return false;
        };
        let (hlen, len) = match i32::from_be_bytes(short.try_into().expect("4 bytes")) {
            short if short >= 0 => (SHORT_HEADER, short as u64),
            -1 => match b.get(4..12) {
                Some(long) => (
                    LONG_HEADER,
                    u64::from_be_bytes(long.try_into().expect("8 bytes")),
                ),
                None => return false,
            },
            _ => return true,
        };
        len > cap(max) as u64 || (b.len() - hlen) as u64 >= len
    }

    /// A body in the buffer, and the descriptors waiting beside it.
    pub fn body_and_fds(&mut self, start: usize, end: usize) -> (&[u8], &mut VecDeque<OwnedFd>) {
        (&self.buf[start..end], &mut self.fds)
    }

    /// Marks `n` buffered bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Receives more bytes into `dst`, waiting until `deadline`.
    fn read_some(
        fd: BorrowedFd<'_>,
        unix: bool,
        mut dst: Room<'_>,
        fds: &mut VecDeque<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<usize, RecvError> {
        // With a deadline, every read is non-blocking: bytes already queued
        // cost neither a clock read nor a poll, and a wait never outlasts
        // the deadline (even if another process sharing the descriptor
        // takes the bytes the poll announced).
        let n = loop {
            let n = Self::recv_once(fd, unix, &mut dst, fds, deadline.is_some());
            let Some(d) = deadline else { break n };
            if !matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                break n;
            }
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() || !sys::poll::wait_readable(&[fd], Some(left))?[0] {
                return Err(RecvError::Timeout);
            }
        };
        if fds.len() > MAX_PENDING_FDS {
            fds.clear();
            return Err(RecvError::BadFrame);
        }
        match n {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// One `recv` (with the descriptors that come along, on Unix
    /// sockets).
    /// One receive into the free room at the end of the buffer: the bytes
    /// that came; 0 when the stream ended or the peer reset it (both are
    /// the end of the stream, recorded in `eof`).
    fn recv_into_room(&mut self, fd: BorrowedFd<'_>, nonblocking: bool) -> std::io::Result<usize> {
        let mut dst = Room::Slice(&mut self.buf[self.end..]);
        match Self::recv_once(fd, self.unix, &mut dst, &mut self.fds, nonblocking) {
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                self.eof = true;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    fn recv_once(
        fd: BorrowedFd<'_>,
        unix: bool,
        dst: &mut Room<'_>,
        fds: &mut VecDeque<OwnedFd>,
        nonblocking: bool,
    ) -> std::io::Result<usize> {
        let dst = match dst {
            Room::Slice(dst) => &mut **dst,
            // The middle of a frame carries no descriptors (they come with
            // its first byte, read with the header): a plain `recv` into
            // the spare capacity, bounded by what the frame still misses.
            Room::Spare(v, limit) if v.capacity() - v.len() <= *limit => {
                return sys::socket::recv_spare(fd, v, nonblocking);
            }
            // More capacity than the frame needs (the allocator rounded
            // up): zero just the frame's room and read into that.
            Room::Spare(v, limit) => {
                let start = v.len();
                v.resize(start + *limit, 0);
                let n = Self::recv_once(
                    fd,
                    unix,
                    &mut Room::Slice(&mut v[start..]),
                    fds,
                    nonblocking,
                );
                v.truncate(start + *n.as_ref().unwrap_or(&0));
                return n;
            }
        };
        if unix {
            let mut got = Vec::new();
            let n = sys::socket::recv(fd, dst, &mut got, nonblocking);
            fds.extend(got);
            n
        } else {
            sys::socket::read(fd, dst, nonblocking)
        }
    }

    /// Makes sure at least `want` bytes are buffered.
    fn fill(
        &mut self,
        fd: BorrowedFd<'_>,
        want: usize,
        deadline: Option<Instant>,
    ) -> Result<(), RecvError> {
        if self.buf.len() < FIRST_BUF_SIZE.max(want) {
            self.buf.resize(FIRST_BUF_SIZE.max(want), 0);
        }
        while self.end - self.start < want {
            if self.eof {
                return Err(self.eof_error(want));
            }
            if self.buf.len() - self.start < want {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = Self::read_some(
                fd,
                self.unix,
                Room::Slice(&mut self.buf[self.end..]),
                &mut self.fds,
                deadline,
            )?;
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
            // A read that filled all the room suggests more is queued;
            // but not with rings, whose socket carries only doorbells,
            // frames with descriptors and frames too large for a ring
            // record, whose bytes a larger buffer would only make
            // `read_body` copy again (up to 64 KiB of each).
            if !self.shm && self.end == self.buf.len() && self.buf.len() < BUF_SIZE {
                self.buf.resize((2 * self.buf.len()).min(BUF_SIZE), 0);
            }
        }
        Ok(())
    }

    fn eof_error(&mut self, want: usize) -> RecvError {
        let got = (self.end - self.start) as u64;
        if got == 0 {
            RecvError::Disconnected
        } else {
            // Whatever remains can never complete: drop it.
            self.broken = true;
            RecvError::Truncated {
                expected: self.announced().unwrap_or(want as u64),
                got,
            }
        }
    }

    /// The full frame size (header included) announced by buffered bytes.
    fn announced(&self) -> Option<u64> {
        let b = &self.buf[self.start..self.end];
        let short = i32::from_be_bytes(b.get(..4)?.try_into().ok()?);
        if short >= 0 {
            Some(short as u64 + SHORT_HEADER as u64)
        } else {
            Some(
                u64::from_be_bytes(b.get(4..12)?.try_into().ok()?)
                    .saturating_add(LONG_HEADER as u64),
            )
        }
    }

    /// Reads the next frame header and returns (header length, body length)
    /// without consuming anything.
    pub fn peek_header(
        &mut self,
        fd: BorrowedFd<'_>,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<(usize, usize), RecvError> {
        if self.broken {
            return Err(RecvError::Broken);
        }
        if let Some(large) = &self.large {
            return Ok((0, large.len));
        }
        while self.shm {
            self.fill(fd, 1, deadline)?;
            let n = self.doorbells();
            if n == 0 {
                break;
            }
            self.consume(n);
        }
        self.fill(fd, SHORT_HEADER, deadline)?;
        let short = i32::from_be_bytes(
            self.buf[self.start..self.start + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let (hlen, len) = if short >= 0 {
            (SHORT_HEADER, short as u64)
        } else if short == -1 {
            self.fill(fd, LONG_HEADER, deadline)?;
            let long = u64::from_be_bytes(
                self.buf[self.start + 4..self.start + 12]
                    .try_into()
                    .expect("8 bytes"),
            );
            (LONG_HEADER, long)
        } else {
            self.broken = true;
            return Err(RecvError::BadFrame);
        };
        let max = cap(max);
        if len > max as u64 {
            self.broken = true;
            return Err(RecvError::TooLarge { len, max });
        }
        Ok((hlen, len as usize))
    }

    /// Reads the next whole frame (after [`peek_header`](Self::peek_header)
    /// returned `(hlen, len)`).
    pub fn read_body(
        &mut self,
        fd: BorrowedFd<'_>,
        hlen: usize,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<Body, RecvError> {
        if self.large.is_none() && hlen + len <= BUF_SIZE {
            self.fill(fd, hlen + len, deadline)?;
            let s = self.start + hlen;
            self.consume(hlen + len);
            // consume() may reset start/end to 0 but leaves the bytes in place.
            return Ok(Body::InBuffer(s, s + len));
        }
        let mut large = match self.large.take() {
            Some(large) => large,
            None => {
                // The length was checked against the cap before this; the
                // allocation grows with the bytes that arrive.
                let have = (self.end - self.start - hlen).min(len);
                let b = self.start + hlen;
                let large = Large::new(&self.buf[b..b + have], len, hlen);
                if large.is_err() {
                    self.broken = true;
                }
                let large = large?;
                self.consume(hlen + have);
                large
            }
        };
        while large.missing() > 0 {
            if let Err(e) = large.make_room() {
                self.broken = true;
                return Err(e);
            }
            let missing = large.missing();
            let room = Room::Spare(&mut large.body, missing);
            match Self::read_some(fd, self.unix, room, &mut self.fds, deadline) {
                Ok(0) => {
                    self.eof = true;
                    self.broken = true;
                    return Err(RecvError::Truncated {
                        expected: (large.len + large.hlen) as u64,
                        got: (large.body.len() + large.hlen) as u64,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    self.large = Some(large);
                    return Err(e);
                }
            }
        }
        Ok(Body::Owned(large.body))
    }

    /// Reads the next whole frame into `dst[..len]` (`dst` holds at least
    /// `len` bytes). A frame too large for the read buffer goes straight
    /// into `dst`, without an allocation of its own.
    pub fn read_body_into(
        &mut self,
        fd: BorrowedFd<'_>,
        hlen: usize,
        len: usize,
        dst: &mut [u8],
        deadline: Option<Instant>,
    ) -> Result<(), RecvError> {
        let dst = &mut dst[..len];
        if self.large.is_some() || hlen + len <= BUF_SIZE {
            match self.read_body(fd, hlen, len, deadline)? {
                Body::InBuffer(s, e) => dst.copy_from_slice(&self.buf[s..e]),
                Body::Owned(v) => dst.copy_from_slice(&v),
            }
            return Ok(());
        }
        let have = (self.end - self.start - hlen).min(len);
        dst[..have].copy_from_slice(&self.buf[self.start + hlen..self.start + hlen + have]);
        self.consume(hlen + have);
        let mut filled = have;
        while filled < len {
            let room = Room::Slice(&mut dst[filled..]);
            match Self::read_some(fd, self.unix, room, &mut self.fds, deadline) {
                Ok(0) => {
                    self.eof = true;
                    self.broken = true;
                    return Err(RecvError::Truncated {
                        expected: (len + hlen) as u64,
                        got: (filled + hlen) as u64,
                    });
                }
                Ok(n) => filled += n,
                Err(e) => {
                    // Keep what arrived so that the frame is still received
                    // whole by the next call, as `read_body` does.
                    match Large::new(&dst[..filled], len, hlen) {
                        Ok(large) => self.large = Some(large),
                        Err(_) => self.broken = true,
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
