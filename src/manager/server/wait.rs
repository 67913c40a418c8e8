//! Blocking on the server without blocking the server: each client
//! connection has its own thread, and a blocking operation waits on the
//! object's own condition variable, in slices, checking between slices
//! that the client is still there (a client killed mid-call must not, say,
//! take a queue item with it).
//!
//! Between slices a waiter learns of its own client's death late: an object
//! that hands something to a waiter (a condition's notify) or counts its
//! waiters (a barrier) keeps a [`Watch`] on each waiting client, so that
//! whoever acts on the waiters can check, at that moment, that they are
//! still there.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::local_lock::lock;
use crate::manager::protocol::{Block, Fault};
use crate::sys;
use crate::wait::{Deadline, SLICE};

/// The client on whose behalf an operation runs.
pub(crate) struct Caller<'a> {
    /// Its session (one per client process).
    pub session: u64,
    pub(crate) conn: &'a Connection,
}

impl Caller<'_> {
    /// Whether the client has hung up. While it waits for a reply a client
    /// sends nothing, so a readable connection means end of stream.
    pub fn gone(&self) -> bool {
        hung_up(self.conn.as_fd())
    }

    /// A watch on this client for as long as its call waits (`None` if the
    /// connection cannot be duplicated: out of descriptors; the waiter
    /// still notices its client's death itself, a slice later).
    pub fn watch(&self) -> Option<Watch> {
        sys::socket::dup(self.conn.as_fd()).ok().map(Watch)
    }
}

fn hung_up(fd: BorrowedFd<'_>) -> bool {
    matches!(
        sys::poll::wait_readable(&[fd], Some(Duration::ZERO)),
        Ok(r) if r[0]
    )
}

/// A waiting client's connection, held by the object it waits on so that
/// others can ask whether it is still there. Valid only while the call
/// waits: once answered, the client may send again and its connection
/// turns readable, so the waiter must drop its watch (or the object forget
/// it) before the answer goes out.
pub(crate) struct Watch(OwnedFd);

impl Watch {
    /// Whether the watched client has hung up (see [`Caller::gone`]).
    pub fn gone(&self) -> bool {
        hung_up(self.0.as_fd())
    }
}

/// Waits until `ready` returns `Some`, for at most `block`: `Err(Timeout)`
/// when time runs out, `Err(ClientGone)` if the client hangs up meanwhile.
pub(crate) fn wait_for<S, T>(
    m: &Mutex<S>,
    cv: &Condvar,
    block: Block,
    caller: &Caller<'_>,
    mut ready: impl FnMut(&mut S) -> Option<T>,
) -> Result<T, Fault> {
    // A wait too long to represent is no limit (see `Deadline`), whatever
    // a client sent.
    let deadline = Deadline::from_timeout(block).instant();
    let mut g = lock(m);
    loop {
        if let Some(x) = ready(&mut g) {
            return Ok(x);
        }
        let slice = match deadline {
            None => SLICE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Fault::Timeout);
                }
                left.min(SLICE)
            }
        };
        g = cv
            .wait_timeout(g, slice)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        // Checked before `ready` runs again, so a client that died while
        // waiting cannot take the item (or lock) it was waiting for.
        if caller.gone() {
            return Err(Fault::ClientGone);
        }
    }
}
