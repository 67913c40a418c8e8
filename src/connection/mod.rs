//! [`Connection`]s: message channels between two processes (or threads),
//! created in connected pairs by [`pipe`] or by [`Listener`]/[`Client`].
//!
//! Each message is one frame (see `frame.rs`). Typed messages are encoded by
//! the crate's codec, so handles inside them (including other
//! `Connection`s) travel too, as in Python's `multiprocessing.reduction`.

#[cfg(feature = "tokio")]
mod aio;
pub(crate) mod auth;
pub(crate) mod authkey;
mod frame;
mod handshake;
mod listener;
mod outbox;
mod pickle;
mod shared;
mod wait;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{self, SharedFd};
use crate::error::{RecvError, SendError};
use crate::sys;
use crate::wait::{Deadline, Spin};
pub use frame::DEFAULT_MAX_FRAME;
/// Header room to reserve when encoding a message for [`Connection::send_encoded`].
pub(crate) const FRAME_ROOM: usize = frame::SHORT_HEADER;
use frame::{Body, Drained, Reader};
pub(crate) use outbox::Outbox;
use shared::{Next, Shared};

#[cfg(feature = "tokio")]
pub use aio::AsyncConnection;
pub use listener::{Address, Client, Listener, ListenerBuilder, ToAddress};
pub use wait::{Waitable, wait};

/// One end of a two-way (or one-way) message channel.
///
/// Methods take `&self` and are safe to call from several threads: whole
/// frames are sent and received under internal locks, so messages from two
/// threads never interleave.
///
/// ```
/// let (a, b) = multiproc::pipe()?;
/// a.send(&(42, None::<i32>, "hello"))?;
/// let got: (i32, Option<i32>, String) = b.recv()?;
/// assert_eq!(got, (42, None, "hello".to_string()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection {
    fd: SharedFd,
    unix: bool,
    readable: bool,
    writable: bool,
    max_frame: usize,
    reader: Mutex<Reader>,
    writer: Mutex<()>,
    /// The shared-memory rings of a [`pipe`] pair (see `shared.rs`).
    shared: Option<Box<Shared>>,
}

/// Creates a connected pair of duplex [`Connection`]s: both ends send and
/// receive (Python's `multiprocessing.Pipe()`).
///
/// ```
/// let (a, b) = multiproc::pipe()?;
/// a.send(&"ping")?;
/// assert_eq!(b.recv::<String>()?, "ping");
/// b.send(&"pong")?;
/// assert_eq!(a.recv::<String>()?, "pong");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn pipe() -> io::Result<(Connection, Connection)> {
    let (a, b) = sys::socket::stream_pair()?;
    let (ra, rb) = Shared::pair()?;
    Ok((
        Connection::from_fd(a, true, true, true).with_shared(ra),
        Connection::from_fd(b, true, true, true).with_shared(rb),
    ))
}

/// Creates a one-way pair of [`Connection`]s, returned as
/// `(reader, writer)`: the first end only receives, the second only sends
/// (Python's `multiprocessing.Pipe(duplex=False)`, same order).
///
/// ```
/// let (reader, writer) = multiproc::pipe_simplex()?;
/// writer.send_bytes(b"ping")?;
/// assert_eq!(reader.recv_bytes()?, b"ping");
/// assert!(reader.send_bytes(b"no").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn pipe_simplex() -> io::Result<(Connection, Connection)> {
    let (a, b) = sys::socket::stream_pair()?;
    sys::socket::shutdown(a.as_fd(), false, true)?;
    sys::socket::shutdown(b.as_fd(), true, false)?;
    let (ra, rb) = Shared::pair()?;
    Ok((
        Connection::from_fd(a, true, true, false).with_shared(ra),
        Connection::from_fd(b, true, false, true).with_shared(rb),
    ))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The result of waiting for the next message of a connection with rings.
/// Where the body of the next message is.
enum Incoming<'a> {
    /// `len` bytes next in the shared ring.
    Ring(&'a Shared, usize),
    /// On the socket, read into the buffer or its own allocation.
    Socket(Body),
}

enum Ready {
    /// A message of this many bytes is next in the ring.
    Ring(usize),
    /// The next message is on the socket.
    Socket,
}

fn send_error(e: io::Error) -> SendError {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::NotConnected => SendError::Disconnected,
        _ => SendError::Io(e),
    }
}

impl Connection {
    pub(crate) fn from_fd(fd: OwnedFd, unix: bool, readable: bool, writable: bool) -> Self {
        Connection {
            fd: SharedFd::new(fd),
            unix,
            readable,
            writable,
            max_frame: DEFAULT_MAX_FRAME,
            reader: Mutex::new(Reader::new(unix)),
            writer: Mutex::new(()),
            shared: None,
        }
    }

    fn with_shared(mut self, shared: Shared) -> Self {
        self.reader.get_mut().unwrap_or_else(|e| e.into_inner()).shm = true;
        self.shared = Some(Box::new(shared));
        self
    }

    /// Puts one whole frame (`parts`, its header first) in the ring,
    /// waiting for room. The caller holds the writer lock.
    fn ring_put(&self, sh: &Shared, parts: &[&[u8]], len: usize) -> Result<(), SendError> {
        loop {
            let mut t = sh.begin();
            if t.put(parts) {
                return t.commit(self.fd.fd());
            }
            sh.wait_room(len, self.fd.fd())?;
        }
    }

    /// Writes one whole frame (`parts`, its header first) into the
    /// outgoing ring if it fits there now, without waiting; `None`, with
    /// nothing written, when it cannot go that way now (no rings, too
    /// large for a record, or no room). The async send's fast path: no
    /// copy of the frame into an outbox.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_ring_send(&self, parts: &[&[u8]]) -> Option<Result<(), SendError>> {
        let sh = self.shared.as_deref()?;
        if parts.iter().map(|p| p.len()).sum::<usize>() > shared::MAX_RECORD {
            return None;
        }
        let _w = lock(&self.writer);
        let mut t = sh.begin();
        // A frame that does not fit leaves nothing behind: `put` reserves
        // nothing then, and only `commit` makes records visible.
        t.put(parts).then(|| t.commit(self.fd.fd()))
    }

    /// Announces in the ring a frame that follows on the socket, waiting
    /// for room. The caller holds the writer lock.
    fn ring_announce(&self, sh: &Shared) -> Result<(), SendError> {
        loop {
            let mut t = sh.begin();
            if t.put_on_socket() {
                return t.commit(self.fd.fd());
            }
            sh.wait_room(8, self.fd.fd())?;
        }
    }

    /// Waits (up to `deadline`; `zero`: not at all) for the next message
    /// of a connection with rings, and says where it is. The caller holds
    /// the reader lock.
    fn wait_shared(
        &self,
        sh: &Shared,
        r: &mut Reader,
        deadline: Option<std::time::Instant>,
        zero: bool,
    ) -> Result<Ready, RecvError> {
        let fd = self.fd.fd();
        if r.is_broken() {
            return Err(RecvError::Broken);
        }
        // Whether the socket was just read (so its news is buffered).
        let mut looked = false;
        loop {
            if r.socket_pending {
                return Ok(Ready::Socket);
            }
            // Frame bytes buffered before looking at the ring must have
            // been announced there (the announcement is committed before
            // the frame is sent).
            let had_bytes = r.has_frame_bytes();
            match sh.next() {
                Next::Message(len) => return Ok(Ready::Ring(len)),
                Next::Socket => {
                    r.socket_pending = true;
                    return Ok(Ready::Socket);
                }
                Next::Bad => {
                    r.set_broken();
                    return Err(RecvError::BadFrame);
                }
                Next::Empty if had_bytes => {
                    r.set_broken();
                    return Err(RecvError::BadFrame);
                }
                Next::Empty => {}
            }
            // Only a zero timeout (which must see the end of stream at
            // once) or a wake-up looks at the socket before sleeping: a
            // stale doorbell just ends the next sleep early.
            let drained = if zero || looked {
                r.drain_doorbells(fd)?
            } else {
                Drained::Nothing
            };
            looked = false;
            match drained {
                Drained::Data => continue,
                Drained::Eof if sh.has_data() => continue,
                Drained::Eof => return Err(RecvError::Disconnected),
                Drained::Nothing => {}
            }
            if zero {
                return Err(RecvError::Timeout);
            }
            if sh.spin_for_data(deadline) || !sh.arm() {
                continue;
            }
            looked = true;
            match deadline {
                None => r.recv_blocking(fd)?,
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() || !sys::poll::wait_readable(&[fd], Some(left))?[0] {
                        return Err(RecvError::Timeout);
                    }
                }
            }
        }
    }

    /// Whether a message waits in this end's incoming ring (no system
    /// call; `false` without rings).
    pub(crate) fn ring_has_data(&self) -> bool {
        self.shared.as_deref().is_some_and(Shared::has_data)
    }

    /// Spins, as a blocking receive does before it sleeps (the ring's
    /// adaptive spin, none when [`spin_may_pay`](Self::spin_may_pay) says
    /// no), until a message is
    /// in the incoming ring; whether one came. `false` at once without
    /// rings or when the next message is announced on the socket. For the
    /// async receive, before it asks for a doorbell and waits for the
    /// reactor.
    #[cfg(feature = "tokio")]
    pub(crate) fn spin_for_ring(&self) -> bool {
        let Some(sh) = &self.shared else {
            return false;
        };
        if lock(&self.reader).socket_pending {
            return false;
        }
        sh.spin_for_data(None)
    }

    /// Whether spinning for this end's peer can pay: it has rings, the
    /// machine more than one CPU, and the peer is not pinned to the one
    /// CPU this process is pinned to.
    pub(crate) fn spin_may_pay(&self) -> bool {
        self.shared.as_deref().is_some_and(Shared::may_spin)
    }

    /// Whether something can be received now (a message, or an error to
    /// report); if not, a connection with rings asks its writer for a
    /// doorbell, so that its socket becomes readable when one comes. For
    /// `wait`, `poll` and the pool, before they sleep in `poll(2)`.
    pub(crate) fn ready_or_arm(&self) -> bool {
        let Some(sh) = &self.shared else {
            return self.has_buffered();
        };
        let mut r = lock(&self.reader);
        if r.socket_pending {
            return r.ready(self.max_frame);
        }
        if sh.has_data() || r.ended() {
            return true;
        }
        match r.drain_doorbells(self.fd.fd()) {
            Ok(Drained::Nothing) => {}
            _ => return true,
        }
        !sh.arm()
    }

    /// Wraps an existing connected Unix-domain stream socket, for example
    /// one half of [`UnixStream::pair`] or a socket accepted elsewhere. The
    /// result sends and receives in both directions and can carry handles;
    /// the peer must speak the same framing (a 4-byte big-endian length, or
    /// `-1` and an 8-byte length, before each message). The socket is put
    /// in blocking mode.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let (mut raw, theirs) = UnixStream::pair()?;
    /// let conn = multiproc::Connection::from_unix_stream(theirs)?;
    /// raw.write_all(&[0, 0, 0, 2, b'h', b'i'])?;
    /// assert_eq!(conn.recv_bytes()?, b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_unix_stream(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        Ok(Connection::from_fd(OwnedFd::from(stream), true, true, true))
    }

    /// Sets the largest frame this end accepts (default
    /// [`DEFAULT_MAX_FRAME`], 512 MiB) and sends. A longer frame is refused
    /// before anything is allocated.
    pub fn set_max_frame(&mut self, bytes: usize) {
        self.max_frame = bytes;
    }

    /// The frame cap in force.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Whether this end can receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Sends one serde value. Handles inside it (connections, queues, …)
    /// travel too, over Unix-domain connections.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        if !self.writable {
            return Err(SendError::NotWritable);
        }
        self.send_encoded(codec::encode(value, frame::SHORT_HEADER)?)
    }

    /// Sends a value encoded by [`codec::encode`] with
    /// `frame::SHORT_HEADER` bytes of room.
    pub(crate) fn send_encoded(&self, mut enc: codec::Encoded) -> Result<(), SendError> {
        self.send_encoded_mut(&mut enc)
    }

    /// [`send_encoded`](Self::send_encoded), leaving the message to the
    /// caller (its room for the header overwritten).
    #[inline]
    pub(crate) fn send_encoded_mut(&self, enc: &mut codec::Encoded) -> Result<(), SendError> {
        let body_len = enc.bytes.len() - frame::SHORT_HEADER;
        self.check_send(body_len, !enc.fds.is_empty())?;
        let mut header = [0u8; frame::LONG_HEADER];
        let hlen = frame::write_header(body_len, &mut header);
        if hlen == frame::SHORT_HEADER {
            enc.bytes[..hlen].copy_from_slice(&header[..hlen]);
        }
        let fds = enc.borrowed_fds();
        let _w = lock(&self.writer);
        if let Some(sh) = &self.shared {
            if fds.is_empty() && enc.bytes.len() <= shared::MAX_RECORD {
                return self.ring_put(sh, &[&enc.bytes], enc.bytes.len());
            }
            self.ring_announce(sh)?;
        }
        if hlen == frame::SHORT_HEADER {
            sys::socket::send_all(self.fd.fd(), &[&enc.bytes], &fds).map_err(send_error)
        } else {
            let body = &enc.bytes[frame::SHORT_HEADER..];
            sys::socket::send_all(self.fd.fd(), &[&header[..hlen], body], &fds).map_err(send_error)
        }
    }

    /// Receives one encoded message: its codec payload and the
    /// descriptors that came with it.
    pub(crate) fn recv_encoded(
        &self,
        timeout: Option<Duration>,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), RecvError> {
        self.recv_with(timeout, |body, fds| {
            let (fds, payload) = codec::take_fds(body, fds)?;
            Ok((payload.to_vec(), fds))
        })
    }

    /// Like [`recv_encoded`](Self::recv_encoded), without a copy of a
    /// large frame's body out of the allocation it arrived in (a pool's
    /// chunks and replies): the message's bytes, where its payload starts
    /// in them, and its descriptors.
    pub(crate) fn recv_encoded_whole(
        &self,
        timeout: Option<Duration>,
    ) -> Result<(Vec<u8>, usize, Vec<OwnedFd>), RecvError> {
        self.recv_next(timeout, |r, next| {
            let body = match next {
                Incoming::Ring(sh, len) => {
                    let body = sh.take_vec(len);
                    let (fds, _) = codec::take_fds(&body, &mut VecDeque::new())?;
                    return Ok((body, 1, fds));
                }
                Incoming::Socket(Body::InBuffer(s, e)) => {
                    let (body, fds) = r.body_and_fds(s, e);
                    let (fds, _) = codec::take_fds(body, fds)?;
                    return Ok((body.to_vec(), 1, fds));
                }
                Incoming::Socket(Body::Owned(v)) => v,
            };
            let (fds, _) = codec::take_fds(&body, &mut r.fds)?;
            Ok((body, 1, fds))
        })
    }

    /// Sends raw bytes as one message, without encoding (Python's
    /// `send_bytes`).
    pub fn send_bytes(&self, data: &[u8]) -> Result<(), SendError> {
        if !self.writable {
            return Err(SendError::NotWritable);
        }
        self.check_send(data.len(), false)?;
        let mut header = [0u8; frame::LONG_HEADER];
        let hlen = frame::write_header(data.len(), &mut header);
        let _w = lock(&self.writer);
        if let Some(sh) = &self.shared {
            if hlen + data.len() <= shared::MAX_RECORD {
                return self.ring_put(sh, &[&header[..hlen], data], hlen + data.len());
            }
            self.ring_announce(sh)?;
        }
        sys::socket::send_all(self.fd.fd(), &[&header[..hlen], data], &[]).map_err(send_error)
    }

    /// Whether a frame of `body_len` bytes (with descriptors or not) may
    /// be sent: the rules every send path applies before writing.
    fn check_send(&self, body_len: usize, has_fds: bool) -> Result<(), SendError> {
        if has_fds && !self.unix {
            return Err(SendError::HandlesNotSupported);
        }
        if body_len > self.max_frame {
            return Err(SendError::TooLarge {
                len: body_len,
                max: self.max_frame,
            });
        }
        Ok(())
    }

    /// Waits for the next message and lets `take` read its body, wherever
    /// it is: next in the shared ring, or on the socket.
    fn recv_next<R>(
        &self,
        timeout: Option<Duration>,
        take: impl FnOnce(&mut Reader, Incoming<'_>) -> Result<R, RecvError>,
    ) -> Result<R, RecvError> {
        if !self.readable {
            return Err(RecvError::NotReadable);
        }
        // A zero timeout reads only what is queued (and pays no clock read).
        let deadline = Deadline::from_timeout(timeout).instant();
        let mut r = lock(&self.reader);
        if let Some(sh) = &self.shared {
            let zero = timeout == Some(Duration::ZERO);
            if let Ready::Ring(len) = self.wait_shared(sh, &mut r, deadline, zero)? {
                if len > self.max_frame {
                    return Err(self.ring_too_large(&mut r, len));
                }
                return take(&mut r, Incoming::Ring(sh, len));
            }
        }
        let (hlen, len) = r.peek_header(self.fd.fd(), self.max_frame, deadline)?;
        let body = r.read_body(self.fd.fd(), hlen, len, deadline)?;
        let result = take(&mut r, Incoming::Socket(body));
        r.socket_pending = false;
        result
    }

    fn recv_with<R>(
        &self,
        timeout: Option<Duration>,
        f: impl FnOnce(&[u8], &mut VecDeque<OwnedFd>) -> Result<R, RecvError>,
    ) -> Result<R, RecvError> {
        self.recv_next(timeout, |r, next| match next {
            Incoming::Ring(sh, len) => {
                let mut body = std::mem::take(&mut r.scratch);
                body.resize(len, 0);
                sh.take(len, &mut body);
                let result = f(&body, &mut VecDeque::new());
                r.scratch = body;
                result
            }
            Incoming::Socket(Body::InBuffer(s, e)) => {
                let (body, fds) = r.body_and_fds(s, e);
                f(body, fds)
            }
            Incoming::Socket(Body::Owned(v)) => f(&v, &mut r.fds),
        })
    }

    /// Like [`recv`](Self::recv), but first polls without sleeping for up
    /// to `spin`'s budget (when another CPU can run the sender), so that an
    /// answer arriving within microseconds costs no wake-up. For the
    /// request/reply loops of the manager.
    pub(crate) fn recv_spin<T: DeserializeOwned>(&self, spin: &Spin) -> Result<T, RecvError> {
        let mut got = None;
        spin.until(
            || match self.recv_timeout::<T>(Duration::ZERO) {
                Err(RecvError::Timeout) => false,
                r => {
                    got = Some(r);
                    true
                }
            },
            Deadline::NEVER,
        );
        got.unwrap_or_else(|| self.recv())
    }

    /// Receives one serde value, waiting as long as it takes.
    ///
    /// Returns [`RecvError::Disconnected`] as soon as the peer has closed (or
    /// died) with nothing left to read.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T, RecvError> {
        self.recv_with(None, |body, fds| Ok(codec::decode(body, fds)?))
    }

    /// Like [`recv`](Self::recv), giving up with [`RecvError::Timeout`]
    /// after `timeout`; a partly received message stays buffered.
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_with(Some(timeout), |body, fds| Ok(codec::decode(body, fds)?))
    }

    /// Receives one message as raw bytes (Python's `recv_bytes`).
    pub fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        self.recv_bytes_until(None)
    }

    /// Like [`recv_bytes`](Self::recv_bytes) with a timeout.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.recv_bytes_until(Some(timeout))
    }

    /// One message as bytes; a frame too large for the read buffer already
    /// has its own allocation, which is returned as it is (no second copy).
    fn recv_bytes_until(&self, timeout: Option<Duration>) -> Result<Vec<u8>, RecvError> {
        self.recv_next(timeout, |r, next| {
            Ok(match next {
                Incoming::Ring(sh, len) => sh.take_vec(len),
                Incoming::Socket(Body::InBuffer(s, e)) => r.body_and_fds(s, e).0.to_vec(),
                Incoming::Socket(Body::Owned(v)) => v,
            })
        })
    }

    /// Receives one message into `buf` and returns its length (Python's
    /// `recv_bytes_into`). If `buf` is too small the message stays queued and
    /// [`RecvError::BufferTooSmall`] says how large it is.
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        if !self.readable {
            return Err(RecvError::NotReadable);
        }
        let mut r = lock(&self.reader);
        if let Some(sh) = &self.shared
            && let Ready::Ring(len) = self.wait_shared(sh, &mut r, None, false)?
        {
            if len > self.max_frame {
                return Err(self.ring_too_large(&mut r, len));
            }
            if len > buf.len() {
                return Err(RecvError::BufferTooSmall {
                    len,
                    capacity: buf.len(),
                });
            }
            sh.take(len, buf);
            return Ok(len);
        }
        let (hlen, len) = r.peek_header(self.fd.fd(), self.max_frame, None)?;
        if len > buf.len() {
            return Err(RecvError::BufferTooSmall {
                len,
                capacity: buf.len(),
            });
        }
        r.read_body_into(self.fd.fd(), hlen, len, buf, None)?;
        r.socket_pending = false;
        Ok(len)
    }

    /// Whether something can be received, waiting up to `timeout`
    /// (`Duration::ZERO` just checks). Like Python's `poll`: `true` when a
    /// whole message (or end of stream) is already buffered, or when new
    /// bytes are waiting on the socket; in the latter case a message still
    /// arriving can make `recv` wait for its end. Part of a message kept by
    /// an earlier `recv_timeout` does not count on its own.
    pub fn poll(&self, timeout: Duration) -> io::Result<bool> {
        if !self.readable {
            return Ok(false);
        }
        if self.shared.is_some() {
            let deadline = Deadline::from_timeout(Some(timeout));
            loop {
                if self.ready_or_arm() {
                    return Ok(true);
                }
                // Readable: a doorbell, a frame or the end of stream; the
                // next round tells which (a stale doorbell only re-arms).
                if !sys::poll::wait_readable(&[self.fd.fd()], deadline.remaining())?[0] {
                    return Ok(false);
                }
            }
        }
        if self.has_buffered() {
            return Ok(true);
        }
        Ok(sys::poll::wait_readable(&[self.fd.fd()], Some(timeout))?[0])
    }

    /// Closes this end (Python's `close`). The peer's `recv` then reports
    /// [`RecvError::Disconnected`]. Dropping the connection does the same.
    pub fn close(self) {}

    /// The connection back, with its receive buffer, if it is idle: no
    /// shared rings, nothing received and left unread, the stream neither
    /// ended nor broken, and no other handle on the descriptor (for a
    /// connection its owner uses again).
    pub(crate) fn into_idle(mut self) -> Option<Self> {
        let r = self.reader.get_mut().unwrap_or_else(|e| e.into_inner());
        if self.shared.is_some() || r.has_frame_bytes() || !r.fds.is_empty() || r.ended() {
            return None;
        }
        self.fd.is_unique().then_some(self)
    }

    /// Whether a whole message (or an error to report) is buffered, so
    /// that the next receive does not touch the socket.
    pub(crate) fn has_buffered(&self) -> bool {
        let r = lock(&self.reader);
        match &self.shared {
            Some(sh) if !r.socket_pending => sh.has_data() || r.ended(),
            _ => r.ready(self.max_frame),
        }
    }

    /// A ring message over this end's cap: refused, and the stream is
    /// broken from then on (as when the socket announces one).
    fn ring_too_large(&self, r: &mut Reader, len: usize) -> RecvError {
        r.set_broken();
        RecvError::TooLarge {
            len: len as u64,
            max: self.max_frame,
        }
    }
}

/// A whole frame (header and body) ready to be written, and the
/// descriptors that must travel with its first byte.
pub(crate) struct RawFrame {
    /// Header and body.
    pub bytes: Vec<u8>,
    /// Descriptors to attach.
    pub fds: Vec<std::sync::Arc<OwnedFd>>,
}

/// Frames a value encoded by [`codec::encode`] with [`FRAME_ROOM`] bytes of
/// room; the body length is `enc.bytes.len() - FRAME_ROOM`.
pub(crate) fn frame_encoded(mut enc: codec::Encoded) -> RawFrame {
    let body_len = enc.bytes.len() - frame::SHORT_HEADER;
    let mut header = [0u8; frame::LONG_HEADER];
    let hlen = frame::write_header(body_len, &mut header);
    let bytes = if hlen == frame::SHORT_HEADER {
        enc.bytes[..hlen].copy_from_slice(&header[..hlen]);
        enc.bytes
    } else {
        let mut v = Vec::with_capacity(hlen + body_len);
        v.extend_from_slice(&header[..hlen]);
        v.extend_from_slice(&enc.bytes[frame::SHORT_HEADER..]);
        v
    };
    RawFrame {
        bytes,
        fds: enc.fds,
    }
}

impl Connection {
    /// Writes as much of `bufs` as the socket takes without waiting,
    /// `fds` attached to the first byte; `Ok(0)` when the socket is full.
    /// The bytes must be whole frames (see [`frame_encoded`]), possibly
    /// resumed where an earlier call stopped.
    pub(crate) fn try_send_raw(
        &self,
        bufs: &[std::io::IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<usize, SendError> {
        let _w = lock(&self.writer);
        match sys::socket::try_send(self.fd.fd(), bufs, fds) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(send_error(e)),
        }
    }

    /// Writes whole frames (see [`frame_encoded`]) that carry no
    /// descriptors, waiting as long as it takes.
    pub(crate) fn send_raw_all(&self, bytes: &[u8]) -> Result<(), SendError> {
        let _w = lock(&self.writer);
        let Some(sh) = &self.shared else {
            return sys::socket::send_all(self.fd.fd(), &[bytes], &[]).map_err(send_error);
        };
        // Frame by frame: as many as fit in the ring per commit.
        let mut rest = bytes;
        while !rest.is_empty() {
            let mut t = sh.begin();
            while let Some(h) = rest.get(..frame::SHORT_HEADER) {
                let len = frame::SHORT_HEADER
                    + u32::from_be_bytes(h.try_into().expect("4 bytes")) as usize;
                let (f, after) = rest.split_at(len.min(rest.len()));
                if f.len() > shared::MAX_RECORD {
                    if !t.is_empty() {
                        break;
                    }
                    t.commit(self.fd.fd())?;
                    self.ring_announce(sh)?;
                    sys::socket::send_all(self.fd.fd(), &[f], &[]).map_err(send_error)?;
                    rest = after;
                    t = sh.begin();
                    continue;
                }
                if !t.put(&[f]) {
                    break;
                }
                rest = after;
            }
            if t.is_empty() && !rest.is_empty() {
                let len = rest.len().min(shared::MAX_RECORD);
                t.commit(self.fd.fd())?;
                sh.wait_room(len, self.fd.fd())?;
                continue;
            }
            t.commit(self.fd.fd())?;
        }
        Ok(())
    }
}

/// The socket underneath, for waiting on it together with other
/// descriptors.
///
/// An end made by [`pipe`] receives most messages through shared memory,
/// which does not make the socket readable by itself. Before each wait of
/// your own, call [`poll`](Connection::poll) with a zero timeout: `true`
/// means a message (or the end of the stream) is there now; `false` also
/// asks the writer to make the socket readable when the next one comes.
/// [`wait`] does this for you.
///
/// ```
/// use std::time::Duration;
///
/// let (a, b) = multiproc::pipe()?;
/// b.send(&1u8)?;
/// // Look before polling the descriptor elsewhere.
/// assert!(a.poll(Duration::ZERO)?);
/// assert_eq!(a.recv::<u8>()?, 1);
/// assert!(!a.poll(Duration::ZERO)?); // armed: the next send rings the socket
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.fd()
    }
}

/// Same as [`Connection::from_unix_stream`].
///
/// ```
/// use std::os::unix::net::UnixStream;
/// let (_raw, theirs) = UnixStream::pair()?;
/// let conn: multiproc::Connection = theirs.try_into()?;
/// assert!(conn.readable() && conn.writable());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl TryFrom<UnixStream> for Connection {
    type Error = io::Error;

    fn try_from(stream: UnixStream) -> io::Result<Self> {
        Connection::from_unix_stream(stream)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.fd())
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .finish()
    }
}

/// The wire form of a connection passed to another process: its
/// descriptor travels out of band, its flags in the bytes.
#[derive(Serialize, Deserialize)]
struct Wire {
    fd: SharedFd,
    unix: bool,
    readable: bool,
    writable: bool,
    max_frame: u64,
    /// The rings of a [`pipe`] pair, and which end this is.
    shared: Option<(SharedFd, u8)>,
}

/// A `Connection` can be sent to another process (as a `Process` argument
/// or inside a message over a Unix-domain connection). Bytes it has already
/// buffered but not delivered stay with the sender's copy.
impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            fd: self.fd.clone(),
            unix: self.unix,
            readable: self.readable,
            writable: self.writable,
            max_frame: self.max_frame as u64,
            shared: self.shared.as_deref().map(Shared::wire),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let shared = match w.shared {
            Some((fd, end)) => Some(Box::new(
                Shared::attach(fd, end).map_err(<D::Error as serde::de::Error>::custom)?,
            )),
            None => None,
        };
        let mut reader = Reader::new(w.unix);
        reader.shm = shared.is_some();
        Ok(Connection {
            fd: w.fd,
            unix: w.unix,
            readable: w.readable,
            writable: w.writable,
            max_frame: usize::try_from(w.max_frame).unwrap_or(usize::MAX),
            reader: Mutex::new(reader),
            writer: Mutex::new(()),
            shared,
        })
    }
}
