//! A shared-memory mailbox beside a manager connection on the same host:
//! requests and answers cross in shared memory, with a spin then a futex
//! wait, instead of through the socket (whose every message costs system
//! calls on both sides and, when the reader sleeps, a wake-up of tens of
//! microseconds on a small VM).
//!
//! The socket stays open beside it: its end of stream is how each side
//! learns that the other is gone, and a message that does not fit a slot
//! (or carries handles) still travels on it, announced in the slot.
//!
//! # Layout of the memfd (sealed against resizing)
//!
//! ```text
//! 0        Header: magic, then one Slot per direction (request, answer)
//! 4 KiB    request bytes   (SLOT_BYTES)
//! …        answer bytes    (SLOT_BYTES)
//! ```
//!
//! # Protocol
//!
//! A connection is strictly request then answer, so each slot has one
//! writer and one reader, taking turns; neither ever waits for a slot to
//! empty.
//!
//! | word | written by | meaning |
//! |---|---|---|
//! | `len` | the sender, before `full` | bytes in the slot, or [`ON_SOCKET`]: the message follows on the socket |
//! | `full` | the sender (`1`, SeqCst, then the event is notified); the receiver (`0`, once it has copied the bytes out) | a message is waiting |
//! | `event` | see `wait::EventCount` | the receiver's sleep and wake-up |
//! | `closed` | either side, when it stops using the mailbox (both events are then notified) | the other side stops waiting and looks at the socket |
//! | `cpu[side]` | that side (0: the client, which made the mailbox; 1: the server), Relaxed | the one CPU it may run on, or -1: a hint for spinning ([`wait::may_spin_beside`]) |
//!
//! A sender killed before its `full` store leaves nothing visible; the
//! receiver, waking every [`SLICE`](wait::SLICE) to look at the socket, sees its end of
//! stream and stops. A side that ends normally (or hangs up on a bad
//! message) sets `closed`, so the other learns it at once. A receiver copies the bytes out before decoding, so a
//! peer scribbling on the slot can only make a message fail to decode.

#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, SharedFd};
use crate::connection::Connection;
use crate::connection::FRAME_ROOM;
use crate::error::{RecvError, SendError};
use crate::sys;
use crate::wait::{self, Deadline, EventCount, Spin};

/// Bytes of message one slot holds.
pub(crate) const SLOT_BYTES: usize = 64 << 10;
/// Where the request bytes start.
const DATA_OFF: usize = 4096;
/// Size of the file.
const TOTAL: usize = DATA_OFF + 2 * SLOT_BYTES;
/// `len` of a message sent on the socket instead.
const ON_SOCKET: u32 = u32::MAX;
const MAGIC: u64 = u64::from_le_bytes(*b"mpmbox1\0");

/// One direction.
#[repr(C, align(64))]
struct Slot {
    full: AtomicU32,
    len: AtomicU32,
    event: EventCount,
}

#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Nonzero once either side has stopped using the mailbox.
    closed: AtomicU32,
    /// The CPU each side is pinned to, or -1 (see the module's table).
    cpu: [AtomicI32; 2],
    request: Slot,
    answer: Slot,
}

const _: () = assert!(std::mem::size_of::<Header>() <= DATA_OFF);

/// Which way a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    /// Client to server.
    Request,
    /// Server to client.
    Answer,
}

/// One side's view of a mailbox.
pub(crate) struct Mailbox {
    map: sys::shm::Mapping,
    spin: Spin,
    /// Which side this is: 0 the client (it made the mailbox), 1 the
    /// server.
    side: usize,
    /// The process using it: a child forked with a copy of this handle
    /// must not close the mailbox when it drops the copy.
    pid: i32,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

impl Mailbox {
    /// A fresh, empty mailbox (the client makes it), and its descriptor
    /// to send to the server. (Neither side keeps the descriptor: the
    /// mappings are all they need.)
    pub fn create() -> io::Result<(Mailbox, SharedFd)> {
        let fd = sys::shm::memfd("multiproc-mailbox", TOTAL)?;
        let map = sys::shm::Mapping::map(std::os::fd::AsFd::as_fd(&fd), TOTAL)?;
        let mb = Mailbox {
            map,
            spin: Spin::new(&wait::SHARED),
            side: 0,
            pid: sys::process::getpid(),
        };
        for c in &mb.header().cpu {
            c.store(-1, Ordering::Relaxed);
        }
        mb.header().magic.store(MAGIC, Ordering::Release);
        Ok((mb, SharedFd::new(fd)))
    }

    /// Maps a mailbox received from a client, after checking that it is
    /// one and that nobody can resize it under us.
    pub fn attach(fd: SharedFd) -> io::Result<Mailbox> {
        if sys::shm::size(fd.fd())? != TOTAL || !sys::shm::resize_sealed(fd.fd())? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a sealed mailbox of the right size",
            ));
        }
        let map = sys::shm::Mapping::map(fd.fd(), TOTAL)?;
        let mb = Mailbox {
            map,
            spin: Spin::new(&wait::SHARED),
            side: 1,
            pid: sys::process::getpid(),
        };
        if mb.header().magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a mailbox"));
        }
        Ok(mb)
    }

    /// Tells the other side this one is done with the mailbox (it stops
    /// waiting at once). Also done on drop.
    pub fn close(&self) {
        let h = self.header();
        h.closed.store(1, Ordering::SeqCst);
        h.request.event.notify();
        h.answer.event.notify();
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is TOTAL bytes, page-aligned, and starts with
        // a Header (checked at compile time to fit); every field is an
        // atomic (or an Event of atomics), valid at any bit pattern.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    /// Publishes the CPU this side is pinned to (or -1), and says whether
    /// spinning for the other side can help: more than one CPU, and the
    /// two not pinned to the same one. A side pinned to one CPU still
    /// spins for a peer on another (the cross-CPU wake-up it saves is the
    /// costly one).
    fn may_spin(&self) -> bool {
        let cpus = &self.header().cpu;
        let me = wait::pinned_cpu();
        if cpus[self.side].load(Ordering::Relaxed) != me {
            cpus[self.side].store(me, Ordering::Relaxed);
        }
        wait::may_spin_beside(cpus[1 - self.side].load(Ordering::Relaxed))
    }

    fn slot(&self, way: Way) -> (&Slot, *mut u8) {
        let h = self.header();
        let (slot, off) = match way {
            Way::Request => (&h.request, DATA_OFF),
            Way::Answer => (&h.answer, DATA_OFF + SLOT_BYTES),
        };
        // SAFETY: both data areas lie inside the TOTAL-byte mapping.
        (slot, unsafe { self.map.as_ptr().add(off) })
    }

    /// Sends `value` one way: in the slot if it fits and carries no
    /// handles, otherwise announced in the slot and sent on `conn`.
    pub fn send<T: Serialize>(
        &self,
        way: Way,
        value: &T,
        conn: &Connection,
    ) -> Result<(), SendError> {
        // Encoded once, with room for a frame header in case it goes on
        // the socket.
        let enc = codec::encode(value, FRAME_ROOM)?;
        let body = &enc.bytes[FRAME_ROOM..];
        // Refused before it is announced, so the peer never waits for it.
        if body.len() > conn.max_frame() {
            return Err(SendError::TooLarge {
                len: body.len(),
                max: conn.max_frame(),
            });
        }
        let (slot, data) = self.slot(way);
        // The peer decides its spin by where this side runs.
        self.may_spin();
        if enc.fds.is_empty() && body.len() <= SLOT_BYTES {
            // SAFETY: the slot is ours to write (the peer reads it only
            // after our `full` store below, and wrote its last message
            // there before we received it); `body` is a separate buffer
            // of at most SLOT_BYTES.
            unsafe { std::ptr::copy_nonoverlapping(body.as_ptr(), data, body.len()) };
            slot.len.store(body.len() as u32, Ordering::Relaxed);
            slot.full.store(1, Ordering::SeqCst);
            slot.event.notify();
            return Ok(());
        }
        slot.len.store(ON_SOCKET, Ordering::Relaxed);
        slot.full.store(1, Ordering::SeqCst);
        slot.event.notify();
        conn.send_encoded(enc)
    }

    /// Receives the next message coming `way`. [`RecvError::Disconnected`]
    /// once the peer's end of `conn` is closed (checked every [`SLICE`](wait::SLICE)
    /// while nothing comes).
    pub fn recv<T: DeserializeOwned>(&self, way: Way, conn: &Connection) -> Result<T, RecvError> {
        let (slot, data) = self.slot(way);
        let closed = &self.header().closed;
        // SeqCst: the load half of the event's protocol.
        let ready = || slot.full.load(Ordering::SeqCst) == 1 || closed.load(Ordering::SeqCst) != 0;
        let spin = self.may_spin();
        loop {
            if slot.full.load(Ordering::SeqCst) == 1 {
                break;
            }
            if closed.load(Ordering::SeqCst) != 0 {
                return Err(RecvError::Disconnected);
            }
            let deadline = Deadline::after(wait::SLICE);
            if !(self.spin.until_if(spin, ready, deadline)
                || slot.event.sleep_until(ready, deadline))
            {
                // Nothing for a while. The peer sends nothing on the socket
                // unless announced in the slot, so a readable socket means
                // it is gone.
                let fd = std::os::fd::AsFd::as_fd(conn);
                if sys::poll::wait_readable(&[fd], Some(Duration::ZERO))?[0] {
                    return Err(RecvError::Disconnected);
                }
            }
        }
        // Acquire: pairs with the sender's SeqCst `full` store, after which
        // `len` and the bytes are visible.
        std::sync::atomic::fence(Ordering::Acquire);
        let len = slot.len.load(Ordering::Relaxed);
        if len == ON_SOCKET {
            slot.full.store(0, Ordering::Release);
            return conn.recv();
        }
        if len as usize > SLOT_BYTES {
            slot.full.store(0, Ordering::Release);
            return Err(RecvError::BadFrame);
        }
        // The connection's cap holds here too.
        if len as usize > conn.max_frame() {
            slot.full.store(0, Ordering::Release);
            return Err(RecvError::TooLarge {
                len: u64::from(len),
                max: conn.max_frame(),
            });
        }
        let mut body = vec![0u8; len as usize];
        // SAFETY: `len` bytes at `data` lie inside the slot; the sender
        // wrote them before its `full` store and does not write again until
        // we answer. A misbehaving peer writing meanwhile can only change
        // what we copy, never its bounds.
        unsafe { std::ptr::copy_nonoverlapping(data, body.as_mut_ptr(), body.len()) };
        slot.full.store(0, Ordering::Release);
        Ok(codec::decode(&body, &mut Default::default())?)
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        if self.pid == sys::process::getpid() {
            self.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::pipe;

    #[test]
    fn a_mailbox_is_owner_only() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::PermissionsExt;
        let (_mb, fd) = Mailbox::create().unwrap();
        let path = format!("/proc/self/fd/{}", fd.fd().as_raw_fd());
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
    }

    /// Runs `f` with a watchdog: a regression fails instead of hanging.
    fn within(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("timed out"),
            Err(_) => panic!("the test panicked"),
        }
    }

    #[test]
    fn only_a_sealed_mailbox_of_the_right_size_is_taken() {
        let wrong_size = SharedFd::new(sys::shm::memfd("t", TOTAL - 4096).unwrap());
        assert!(Mailbox::attach(wrong_size).is_err());
        let no_magic = SharedFd::new(sys::shm::memfd("t", TOTAL).unwrap());
        assert!(Mailbox::attach(no_magic).is_err());
        let (_mb, fd) = Mailbox::create().unwrap();
        assert!(Mailbox::attach(fd).is_ok());
    }

    #[test]
    fn messages_cross_both_ways_small_and_large() {
        within(messages_cross);
    }

    fn messages_cross() {
        let (client_conn, server_conn) = pipe().unwrap();
        let (client, fd) = Mailbox::create().unwrap();
        let server = Mailbox::attach(fd).unwrap();
        let t = std::thread::spawn(move || {
            for _ in 0..3 {
                let v: Vec<u8> = server.recv(Way::Request, &server_conn).unwrap();
                server
                    .send(Way::Answer, &(v.len(), v), &server_conn)
                    .unwrap();
            }
            // The client closes its side (its socket stays open): the
            // wait ends, with no message.
            let r = server.recv::<u8>(Way::Request, &server_conn);
            assert!(matches!(r, Err(RecvError::Disconnected)), "{r:?}");
        });
        for len in [0, 1000, 3 * SLOT_BYTES] {
            let v = vec![5u8; len];
            client.send(Way::Request, &v, &client_conn).unwrap();
            let (n, back): (usize, Vec<u8>) = client.recv(Way::Answer, &client_conn).unwrap();
            assert_eq!((n, back), (len, v));
        }
        drop(client);
        t.join().unwrap();
        drop(client_conn);
    }

    #[test]
    fn a_peer_gone_or_a_message_over_the_cap_ends_the_wait() {
        within(peer_gone_or_over_the_cap);
    }

    fn peer_gone_or_over_the_cap() {
        let (client_conn, mut server_conn) = pipe().unwrap();
        let (client, fd) = Mailbox::create().unwrap();
        let server = Mailbox::attach(fd).unwrap();
        // Over the receiving connection's cap: refused, not decoded.
        server_conn.set_max_frame(100);
        client
            .send(Way::Request, &vec![0u8; 500], &client_conn)
            .unwrap();
        let r = server.recv::<Vec<u8>>(Way::Request, &server_conn);
        assert!(matches!(r, Err(RecvError::TooLarge { .. })), "{r:?}");
        // The peer's socket closes without a word and its mailbox stays
        // open, as when it is killed: seen at the next check, not a hang.
        std::mem::forget(server);
        drop(server_conn);
        let r = client.recv::<u8>(Way::Answer, &client_conn);
        assert!(matches!(r, Err(RecvError::Disconnected)), "{r:?}");
    }
}
