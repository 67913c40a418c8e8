//! The authenticating [`Listener`](super::Listener)'s accept path: many
//! handshakes in progress at once, driven by `poll(2)` from inside
//! `accept`, so that peers who connect and stay silent (or answer slowly)
//! cannot hold up a good client behind them.
//!
//! How it runs:
//! - Every accepted socket is sent its challenge at once and joins the set
//!   of handshakes *in progress*, with its own deadline (the listener's
//!   handshake timeout, counted from its accept).
//! - One accepting thread at a time, the *leader*, polls the listening
//!   socket and every socket in progress, advances each handshake whose
//!   socket is readable by one step (a step never blocks: the challenge and
//!   the verdicts are a few dozen bytes, sent on fresh sockets), drops the
//!   ones past their deadline, and accepts new peers. Authenticated
//!   connections go to a *ready* queue. Other accepting threads wait on a
//!   condition variable for the ready queue or for the leadership.
//! - Nothing runs between `accept` calls: no thread, no descriptor beyond
//!   the sockets in the set, all closed with the listener. A handshake
//!   whose peer answered while nobody was accepting completes on the next
//!   `accept` (its deadline still counts).
//! - At most [`MAX_IN_PROGRESS`] handshakes are in progress; a new peer
//!   beyond that evicts (closes) the *oldest*. Dropping new peers instead
//!   would let a few hundred silent sockets lock everyone out for a whole
//!   handshake timeout; evicting the oldest lets a good client, which
//!   answers within a round trip, through unless the flood opens
//!   `MAX_IN_PROGRESS` sockets within that round trip.
//! - A handshake that fails (wrong key, silence past the deadline, garbage)
//!   closes that peer's socket and is not reported by `accept`: one peer's
//!   failure must not end a server's accept loop. The peer itself gets the
//!   usual error on its side (`Auth`, `HandshakeTimeout`, …).
//!
//! The protocol steps themselves are in `auth.rs`, shared with the
//! blocking handshake of [`Client`](super::Client).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Connection, auth};
use crate::error::{ConnectError, RecvError};
use crate::sys;
use crate::wait::Deadline;

/// Most handshakes in progress at once; a new peer beyond this evicts the
/// oldest.
pub(super) const MAX_IN_PROGRESS: usize = 128;

/// Where one listener-side handshake stands.
enum Step {
    /// Our challenge is out; the peer's response is awaited.
    Response(auth::Challenge),
    /// Our verdict is out; the peer's challenge is awaited.
    Challenge,
    /// Our answer is out; the peer's verdict is awaited.
    Verdict,
}

/// One handshake in progress.
struct InProgress {
    conn: Connection,
    step: Step,
    /// `None` when the timeout is too long to represent.
    deadline: Option<Instant>,
    /// The connection's frame cap, restored once authenticated.
    max_frame: usize,
}

/// What one step of a handshake came to.
enum Outcome {
    /// Waiting for more bytes.
    Pending,
    /// Authenticated.
    Done,
    /// Failed: wrong key, broken frame, peer gone.
    Failed,
}

impl InProgress {
    /// Accepts `conn` into a handshake: lowers its frame cap and sends the
    /// challenge. `Ok(None)` if the peer cannot even be challenged; an
    /// error if the OS random source fails (the listener's failure, not
    /// the peer's: `accept` reports it).
    fn start(
        mut conn: Connection,
        deadline: Option<Instant>,
    ) -> Result<Option<Self>, ConnectError> {
        let message = auth::new_challenge()?;
        let max_frame = conn.max_frame();
        conn.set_max_frame(auth::MAX_MESSAGE);
        if auth::send_challenge(&conn, &message).is_err() {
            return Ok(None);
        }
        Ok(Some(InProgress {
            conn,
            step: Step::Response(message),
            deadline,
            max_frame,
        }))
    }

    /// Takes the steps the bytes already received allow, without waiting.
    fn advance(&mut self, key: &[u8]) -> Outcome {
        loop {
            let frame = match self.conn.recv_bytes_timeout(Duration::ZERO) {
                Ok(frame) => frame,
                Err(RecvError::Timeout) => return Outcome::Pending,
                Err(_) => return Outcome::Failed,
            };
            let res = match &self.step {
                Step::Response(message) => {
                    auth::judge_response(&self.conn, key, message, &frame).map(|()| Step::Challenge)
                }
                Step::Challenge => auth::answer(&self.conn, key, &frame).map(|()| Step::Verdict),
                Step::Verdict => match auth::judge_verdict(&frame) {
                    Ok(()) => {
                        self.conn.set_max_frame(self.max_frame);
                        return Outcome::Done;
                    }
                    Err(_) => return Outcome::Failed,
                },
            };
            match res {
                Ok(next) => self.step = next,
                Err(_) => return Outcome::Failed,
            }
        }
    }
}

/// The handshakes of one listener.
pub(super) struct Handshakes {
    state: Mutex<State>,
    /// Signalled when a connection is ready or the leadership is free.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Handshakes in progress, oldest first (empty while a leader holds
    /// them).
    in_progress: VecDeque<InProgress>,
    /// Authenticated connections not yet returned by `accept`.
    ready: VecDeque<Connection>,
    /// Whether a thread is driving the handshakes.
    leader: bool,
}

/// What the listener lends the handshakes: its socket and its accept.
pub(super) trait Accept {
    /// The listening socket.
    fn listening(&self) -> BorrowedFd<'_>;
    /// Accepts one pending peer, if there is one.
    fn try_accept(&self) -> std::io::Result<Option<Connection>>;
}

impl Handshakes {
    pub(super) fn new() -> Self {
        Handshakes {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock; a panic elsewhere
        // does not make it unusable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next authenticated connection, waiting until `deadline` (`None`:
    /// no limit; then [`ConnectError::Timeout`]).
    pub(super) fn accept(
        &self,
        listener: &impl Accept,
        key: &[u8],
        handshake_timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Connection, ConnectError> {
        let mut state = self.lock();
        loop {
            if let Some(conn) = state.ready.pop_front() {
                return Ok(conn);
            }
            if !state.leader {
                state.leader = true;
                let mut lead = Lead {
                    handshakes: self,
                    in_progress: std::mem::take(&mut state.in_progress),
                    ready: VecDeque::new(),
                };
                drop(state);
                let res = lead.run(listener, key, handshake_timeout, deadline);
                drop(lead);
                state = self.lock();
                match res {
                    Ok(()) => continue,
                    Err(e) => return Err(e),
                }
            }
            state = match deadline {
                None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ConnectError::Timeout);
                    }
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The leader's hold on the handshakes; gives them back (and the
/// leadership up) when dropped, even by a panic.
struct Lead<'a> {
    handshakes: &'a Handshakes,
    in_progress: VecDeque<InProgress>,
    ready: VecDeque<Connection>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut state = self.handshakes.lock();
        state.in_progress = std::mem::take(&mut self.in_progress);
        state.ready.append(&mut self.ready);
        state.leader = false;
        drop(state);
        self.handshakes.changed.notify_all();
    }
}

impl Lead<'_> {
    /// Drives the handshakes until one connection is ready (`Ok`) or
    /// `deadline` passes ([`ConnectError::Timeout`]).
    fn run(
        &mut self,
        listener: &impl Accept,
        key: &[u8],
        handshake_timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<(), ConnectError> {
        // New peers may be queued already: look before waiting.
        let mut listening_ready = true;
        let mut readable: Vec<bool> = vec![true; self.in_progress.len()];
        loop {
            // Advance the handshakes whose sockets spoke.
            let spoke = readable.iter().copied().chain(std::iter::repeat(false));
            for (mut h, spoke) in std::mem::take(&mut self.in_progress).into_iter().zip(spoke) {
                let outcome = if spoke {
                    h.advance(key)
                } else {
                    Outcome::Pending
                };
                match outcome {
                    Outcome::Pending => self.in_progress.push_back(h),
                    Outcome::Failed => {}
                    Outcome::Done => self.ready.push_back(h.conn),
                }
            }
            if listening_ready {
                self.take_new_peers(listener, handshake_timeout)?;
            }
            if !self.ready.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            self.in_progress
                .retain(|h| h.deadline.is_none_or(|d| d > now));
            if deadline.is_some_and(|d| d <= now) {
                return Err(ConnectError::Timeout);
            }
            let wake = self
                .in_progress
                .iter()
                .filter_map(|h| h.deadline)
                .chain(deadline)
                .min();
            let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(self.in_progress.len() + 1);
            fds.push(listener.listening());
            fds.extend(self.in_progress.iter().map(|h| h.conn.as_fd()));
            let wait = wake.map(|w| w.saturating_duration_since(Instant::now()));
            let flags = sys::poll::wait_readable(&fds, wait)?;
            listening_ready = flags[0];
            readable = flags[1..].to_vec();
        }
    }

    /// Accepts the peers queued on the listening socket (at most
    /// [`MAX_IN_PROGRESS`] per call, so that a flood cannot keep the
    /// leader from stepping the handshakes it has) and challenges them.
    fn take_new_peers(
        &mut self,
        listener: &impl Accept,
        handshake_timeout: Duration,
    ) -> Result<(), ConnectError> {
        for _ in 0..MAX_IN_PROGRESS {
            let Some(conn) = listener.try_accept()? else {
                break;
            };
            let Some(h) = InProgress::start(conn, Deadline::after(handshake_timeout).instant())?
            else {
                continue;
            };
            if self.in_progress.len() >= MAX_IN_PROGRESS {
                self.in_progress.pop_front();
            }
            self.in_progress.push_back(h);
        }
        Ok(())
    }
}
