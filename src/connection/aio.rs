//! [`AsyncConnection`]: a [`Connection`] driven by tokio's reactor.
//!
//! The socket is registered with the runtime (`AsyncFd`, edge-triggered
//! `epoll`) and every read and write is the blocking path's own code run
//! without waiting: a receive is `recv_timeout(ZERO)` (the same framing,
//! frame cap, descriptor handling and typed errors; a partly received
//! frame stays buffered in the connection's reader), a send writes the
//! frame made by [`frame_encoded`] with `MSG_DONTWAIT`. When the socket has
//! nothing to give or no room, the task waits for the reactor's readiness
//! event instead of a thread: one runtime thread serves any number of
//! connections.
//!
//! A receive on a [`pipe`](super::pipe) end (one with shared-memory rings)
//! first spins on its ring as the blocking receive does (adaptive, at most
//! 20 µs, none on one CPU or when both ends are pinned to the same one):
//! a reply arriving within microseconds then costs no system call and no
//! wake-up through the reactor, whose doorbell and `epoll` wake-up across
//! CPUs cost more than the whole round trip. Only then does it ask the
//! writer for a doorbell and wait.
//!
//! # Cancellation
//!
//! A `recv` future dropped at an `.await` loses nothing: a frame is taken
//! out of the reader only when it is returned. A `send` future dropped
//! after writing part of its frame leaves the rest in the connection's
//! outbox; the next `send` (or [`flush`](AsyncConnection::flush)) writes it
//! first, so the peer never sees a torn frame. A `send` dropped before
//! writing anything sent nothing.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{Connection, FRAME_ROOM, Outbox, RawFrame, frame, frame_encoded};
use crate::codec;
use crate::error::{RecvError, SendError};

/// The connection as the reactor sees it: its descriptor.
struct Io(Connection);

impl AsRawFd for Io {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// How long a sender waits before it looks again at a full shared-memory
/// ring (its room comes back without a sign the reactor sees).
const RING_RETRY: Duration = Duration::from_millis(1);

/// A [`Connection`] for async code on a tokio runtime: `send(..).await`,
/// `recv().await` and their bytes forms, woken by the runtime's reactor
/// rather than by a thread per waiting task.
///
/// The wire format, frame cap, descriptor passing and errors are those
/// of the blocking [`Connection`], so the peer may use either. Methods
/// take `&self`: several tasks may send and receive at once (whole frames
/// never interleave), and the handle can be shared with an `Arc`.
///
/// It must be made inside a runtime with I/O and time enabled
/// (`enable_all`), and used on that runtime.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// rt.block_on(async {
///     let (a, b) = multiproc::pipe()?;
///     let (a, b) = (a.into_async()?, b.into_async()?);
///     a.send(&(1, "one")).await?;
///     let got: (i32, String) = b.recv().await?;
///     assert_eq!(got, (1, "one".to_string()));
///     b.send_bytes(b"raw").await?;
///     assert_eq!(a.recv_bytes().await?, b"raw");
///     Ok(())
/// })
/// # }
/// ```
pub struct AsyncConnection {
    io: AsyncFd<Io>,
    outbox: tokio::sync::Mutex<Outbox>,
}

impl Connection {
    /// Makes this connection async (see [`AsyncConnection`]). Must be
    /// called inside a tokio runtime with I/O enabled.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let (a, b) = multiproc::pipe()?;
    /// rt.block_on(async {
    ///     let a = a.into_async()?;
    ///     b.send(&7u8)?; // the other end stays blocking
    ///     assert_eq!(a.recv::<u8>().await?, 7);
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn into_async(self) -> io::Result<AsyncConnection> {
        AsyncConnection::new(self)
    }
}

impl AsyncConnection {
    /// Registers `conn` with the current runtime's reactor. Outside a
    /// runtime this fails with an error; in a runtime built without I/O
    /// it panics (tokio's rule).
    pub fn new(conn: Connection) -> io::Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "an async connection must be made inside a tokio runtime",
            ));
        }
        // SAFETY: the descriptor is the connection's own, open for as long
        // as the `Io` that owns the connection lives inside the `AsyncFd`,
        // and a connection never changes its descriptor.
        let io = unsafe {
            AsyncFd::register_with_interest(Io(conn), Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(AsyncConnection {
            io,
            outbox: tokio::sync::Mutex::new(Outbox::new()),
        })
    }

    /// The blocking connection underneath (for `max_frame`, `readable`,
    /// `poll`…). Receiving through it is fine; sending through it while
    /// an async send is under way could interleave frames.
    pub fn get_ref(&self) -> &Connection {
        &self.io.get_ref().0
    }

    /// Takes the connection out of the reactor, as a blocking one again.
    /// Bytes of a cancelled send not yet written are lost (see
    /// [`flush`](Self::flush)).
    pub fn into_inner(self) -> Connection {
        self.io.into_inner().0
    }

    /// Sets the frame cap (see [`Connection::set_max_frame`]).
    pub fn set_max_frame(&mut self, bytes: usize) {
        self.io.get_mut().0.set_max_frame(bytes);
    }

    fn conn(&self) -> &Connection {
        &self.io.get_ref().0
    }

    /// Sends one serde value; handles inside it travel too, as with
    /// [`Connection::send`].
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        let conn = self.conn();
        if !conn.writable {
            return Err(SendError::NotWritable);
        }
        let enc = codec::encode(value, FRAME_ROOM)?;
        conn.check_send(enc.bytes.len() - FRAME_ROOM, !enc.fds.is_empty())?;
        let f = frame_encoded(enc);
        if f.fds.is_empty() {
            let out = self.outbox.lock().await;
            if let Some(r) = self.try_ring(&out, &[&f.bytes]) {
                return r;
            }
        }
        self.send_frame(f.bytes, f.fds).await
    }

    /// Sends raw bytes as one message (see [`Connection::send_bytes`]).
    pub async fn send_bytes(&self, data: &[u8]) -> Result<(), SendError> {
        let conn = self.conn();
        if !conn.writable {
            return Err(SendError::NotWritable);
        }
        conn.check_send(data.len(), false)?;
        let mut header = [0u8; frame::LONG_HEADER];
        let hlen = frame::write_header(data.len(), &mut header);
        {
            let out = self.outbox.lock().await;
            if let Some(r) = self.try_ring(&out, &[&header[..hlen], data]) {
                return r;
            }
        }
        let mut bytes = Vec::with_capacity(hlen + data.len());
        bytes.extend_from_slice(&header[..hlen]);
        bytes.extend_from_slice(data);
        self.send_frame(bytes, Vec::new()).await
    }

    /// Finishes writing the frame of a `send` that was cancelled part-way,
    /// if there is one.
    pub async fn flush(&self) -> Result<(), SendError> {
        let mut out = self.outbox.lock().await;
        self.write_out(&mut out).await
    }

    /// Writes a frame straight into the ring when nothing is queued
    /// before it and it fits now (see [`Connection::try_ring_send`]);
    /// `None` when it must go through the outbox.
    fn try_ring(&self, out: &Outbox, parts: &[&[u8]]) -> Option<Result<(), SendError>> {
        if !out.is_empty() {
            return None;
        }
        self.conn().try_ring_send(parts)
    }

    async fn send_frame(&self, bytes: Vec<u8>, fds: Vec<Arc<OwnedFd>>) -> Result<(), SendError> {
        let mut out = self.outbox.lock().await;
        self.write_out(&mut out).await?;
        out.push(Arc::new(RawFrame { bytes, fds }));
        self.write_out(&mut out).await
    }

    /// Writes what the outbox holds (through the connection's ring or its
    /// socket), waiting for room through the reactor. On an error the
    /// frame is dropped (the stream is broken anyway).
    async fn write_out(&self, out: &mut Outbox) -> Result<(), SendError> {
        loop {
            out.flush(self.conn())?;
            if out.is_empty() {
                return Ok(());
            }
            if !out.waits_for_socket(self.conn()) {
                tokio::time::sleep(RING_RETRY).await;
                continue;
            }
            let mut ready = self.io.writable().await.map_err(SendError::Io)?;
            out.flush(self.conn())?;
            if !out.is_empty() && out.waits_for_socket(self.conn()) {
                ready.clear_ready();
            }
        }
    }

    /// Runs a receive that does not wait until it gets something other
    /// than "nothing yet", waiting for the reactor in between.
    async fn recv_op<R>(
        &self,
        op: impl Fn(&Connection) -> Result<R, RecvError>,
    ) -> Result<R, RecvError> {
        let conn = self.conn();
        if !conn.readable {
            return Err(RecvError::NotReadable);
        }
        // Spin first, as a blocking receive does: a reply coming within
        // microseconds then costs no system call (a look at the socket for
        // doorbells), no doorbell and no reactor wake-up, which across
        // CPUs costs more than the round trip.
        if !conn.ring_has_data() {
            conn.spin_for_ring();
        }
        loop {
            match op(conn) {
                Err(RecvError::Timeout) => {}
                r => return r,
            }
            // A pipe's writer makes the socket readable only when asked.
            if conn.ready_or_arm() {
                continue;
            }
            let mut ready = self.io.readable().await?;
            match op(conn) {
                // Only now is the socket known drained: any later arrival
                // is a new readiness event.
                Err(RecvError::Timeout) => ready.clear_ready(),
                r => return r,
            }
        }
    }

    /// Receives one serde value (see [`Connection::recv`]):
    /// [`RecvError::Disconnected`] once the peer closed or died with
    /// nothing left to read.
    pub async fn recv<T: DeserializeOwned>(&self) -> Result<T, RecvError> {
        self.recv_op(|c| c.recv_timeout::<T>(Duration::ZERO)).await
    }

    /// Receives one message as raw bytes (see [`Connection::recv_bytes`]).
    pub async fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        self.recv_op(|c| c.recv_bytes_timeout(Duration::ZERO)).await
    }
}

impl AsFd for AsyncConnection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn().as_fd()
    }
}

impl std::fmt::Debug for AsyncConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncConnection").field(self.conn()).finish()
    }
}
