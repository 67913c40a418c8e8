//! An outbox: whole frames queued for a connection and written without
//! ever waiting, for a sender (the pool) that must not block on one peer
//! while others need it. What does not fit now (the socket's buffer or the
//! ring is full) stays queued until the next [`Outbox::flush`].

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use super::{Connection, RawFrame, lock, shared};
use crate::error::SendError;
use crate::sys;

/// Frames gathered into one `sendmsg`.
const GATHER: usize = 64;

/// Frames waiting to be written to one connection (see the module docs).
#[derive(Default)]
pub(crate) struct Outbox {
    /// Frames not yet (fully) written, with the bytes already written.
    frames: VecDeque<(Arc<RawFrame>, usize)>,
    /// The front frame goes on the socket and its ring record announcing
    /// it is committed (connections with rings only).
    announced: bool,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Outbox::default()
    }

    /// Queues a whole frame (see [`frame_encoded`](super::frame_encoded)).
    pub fn push(&mut self, frame: Arc<RawFrame>) {
        self.frames.push_back((frame, 0));
    }

    /// Whether everything was written.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops what is queued (the peer is gone).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.announced = false;
    }

    /// Whether what is left waits for the socket to take bytes (poll it
    /// for writing); otherwise it waits for ring room, which the peer
    /// makes without a sign: flush again soon.
    pub fn waits_for_socket(&self, conn: &Connection) -> bool {
        !self.frames.is_empty() && (conn.shared.is_none() || self.announced)
    }

    /// Writes what can be written now, without waiting.
    /// [`SendError::Disconnected`] (or another error) when the peer is
    /// gone; the frames are then dropped.
    pub fn flush(&mut self, conn: &Connection) -> Result<(), SendError> {
        let result = match &conn.shared {
            Some(sh) => self.flush_shared(conn, sh),
            None => self.flush_socket(conn),
        };
        if result.is_err() {
            self.clear();
        }
        result
    }

    fn flush_socket(&mut self, conn: &Connection) -> Result<(), SendError> {
        while let Some((first, off)) = self.frames.front() {
            let n = if !first.fds.is_empty() && *off == 0 {
                let fds: Vec<BorrowedFd<'_>> = first.fds.iter().map(|f| f.as_fd()).collect();
                conn.try_send_raw(&[IoSlice::new(&first.bytes)], &fds)?
            } else {
                let mut bufs = Vec::with_capacity(GATHER.min(self.frames.len()));
                for (i, (f, off)) in self.frames.iter().enumerate() {
                    if bufs.len() == GATHER || (i > 0 && !f.fds.is_empty()) {
                        break;
                    }
                    bufs.push(IoSlice::new(&f.bytes[*off..]));
                }
                conn.try_send_raw(&bufs, &[])?
            };
            if n == 0 {
                return Ok(());
            }
            self.written(n);
        }
        Ok(())
    }

    /// Marks `n` bytes from the front as written.
    fn written(&mut self, mut n: usize) {
        while n > 0 {
            let (f, off) = self.frames.front_mut().expect("bytes were sent from it");
            let left = f.bytes.len() - *off;
            if n >= left {
                n -= left;
                self.frames.pop_front();
                self.announced = false;
            } else {
                *off += n;
                n = 0;
            }
        }
    }

    fn flush_shared(&mut self, conn: &Connection, sh: &shared::Shared) -> Result<(), SendError> {
        let _w = lock(&conn.writer);
        let sock = conn.fd.fd();
        while let Some((first, off)) = self.frames.front() {
            if self.announced {
                // The rest of a frame that goes on the socket.
                let fds: Vec<BorrowedFd<'_>> = if *off == 0 {
                    first.fds.iter().map(|f| f.as_fd()).collect()
                } else {
                    Vec::new()
                };
                let n = match sys::socket::try_send(
                    sock,
                    &[IoSlice::new(&first.bytes[*off..])],
                    &fds,
                ) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(super::send_error(e)),
                };
                self.written(n);
                continue;
            }
            // As many ring frames as fit, committed together; then the
            // announcement of a socket frame, if one is next.
            let mut t = sh.begin();
            let mut taken = 0;
            let mut full = false;
            for (f, _) in &self.frames {
                if !f.fds.is_empty() || f.bytes.len() > shared::MAX_RECORD {
                    if t.put_on_socket() {
                        self.announced = true;
                    } else {
                        full = true;
                    }
                    break;
                }
                if !t.put(&[&f.bytes]) {
                    full = true;
                    break;
                }
                taken += 1;
            }
            t.commit(sock)?;
            self.frames.drain(..taken);
            if full {
                return Ok(());
            }
        }
        Ok(())
    }
}
