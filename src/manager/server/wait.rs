//! Blocking on the server without blocking the server: each client
//! connection has its own thread, and a blocking operation waits on the
//! object's own condition variable, in slices, checking between slices
//! that the client is still there (a client killed mid-call must not, say,
//! take a queue item with it).

use std::os::fd::AsFd;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::Connection;
use crate::manager::protocol::{Block, Fault};
use crate::sys;
use crate::wait::Deadline;

/// How often a blocked operation checks that its client is still there.
const SLICE: Duration = Duration::from_millis(100);

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
        matches!(
            sys::poll::wait_readable(&[self.conn.as_fd()], Some(Duration::ZERO)),
            Ok(r) if r[0]
        )
    }
}

/// Locks, ignoring poisoning (a panicking handler leaves the state valid:
/// every handler mutates it in single steps).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
