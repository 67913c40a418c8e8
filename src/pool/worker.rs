//! The worker process: runs the initializer once, then chunks of tasks
//! until told to stop, until its task budget (`maxtasksperchild`) is spent,
//! or until the pool goes away.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::board::{Board, IDLE, INIT};
use super::wire::{self, Runner};
use crate::codec;
use crate::connection::DEFAULT_MAX_FRAME;
use crate::connection::{Connection, FRAME_ROOM, frame_encoded};
use crate::error::SendError;
use crate::process::fn_ref::{FnRef, RawFnRef};

/// A worker's initializer and its arguments.
pub type Init<I> = (FnRef<fn(I)>, I);

/// What a worker is started with.
#[derive(Serialize, Deserialize)]
pub struct WorkerArgs<I> {
    /// Its private connection to the pool.
    pub conn: Connection,
    /// Its status word.
    pub board: Board,
    /// The initializer and its arguments.
    pub init: Option<Init<I>>,
    /// How many chunks it runs before exiting (`None`: no limit).
    pub maxtasks: Option<usize>,
}

/// The worker's main loop (the target of every worker process).
pub fn worker_main<I: DeserializeOwned>(args: WorkerArgs<I>) {
    let WorkerArgs {
        conn,
        board,
        init,
        maxtasks,
    } = args;
    // Ctrl-C in a terminal reaches the whole process group: the pool's
    // owner decides (see the pool docs); the worker dies with it anyway.
    let _ = crate::sys::process::ignore_interrupt();
    // A chunk's buffers are freed and allocated again for the next one:
    // without this, glibc returns them to the kernel every time and every
    // chunk pays a page fault per 4 KiB of them.
    crate::sys::process::keeps_freed_memory();
    board.set(INIT);
    if let Some((init, init_args)) = init {
        let f = init.get();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(init_args))) {
            let text = wire::panic_message(panic);
            let _ = conn.send_encoded(wire::message(wire::STOP, wire::INIT_FAILED, &text));
            return;
        }
    }
    board.set(IDLE);
    let mut done = 0usize;
    let mut held = Held::default();
    let mut last_end = Instant::now();
    // The sequence number of the last message received (see `Board`).
    let mut seq = 0u32;
    while maxtasks.is_none_or(|m| done < m) {
        let buffered = conn.has_buffered();
        if !held.is_empty() && !buffered && !held.flush(&conn) {
            return;
        }
        let Ok((payload, at, fds)) = conn.recv_encoded_whole(None) else {
            return;
        };
        seq = seq.wrapping_add(1);
        let Ok(((chunk, runner, target), rest)) =
            codec::decode_payload::<(u64, FnRef<Runner>, RawFnRef)>(&payload[at..], Vec::new())
        else {
            return;
        };
        let start = payload.len() - rest.len();
        if chunk == wire::STOP {
            held.flush(&conn);
            return;
        }
        if !board.claim(seq) {
            // The pool took this chunk back for an idle worker.
            continue;
        }
        board.set(chunk);
        let runner = runner.get();
        // A chunk that was already buffered starts when the last one ended
        // (one clock read per chunk in a burst of tiny ones).
        let started = if buffered { last_end } else { Instant::now() };
        let reply = runner(target, chunk, &wire::Message::new((payload, start)), fds);
        let ended = Instant::now();
        last_end = ended;
        let tiny = ended.duration_since(started) < TINY;
        done += 1;
        let last = maxtasks.is_some_and(|m| done >= m);
        let sent = if reply.fds.is_empty() && reply.bytes.len() - FRAME_ROOM <= DEFAULT_MAX_FRAME {
            held.push(frame_encoded(reply).bytes, ended);
            // The status word still names this chunk while its reply waits,
            // so a death now fails it; replies held from earlier chunks are
            // lost with the worker and those chunks run again elsewhere.
            if tiny && !last && held.worth_holding(ended) && conn.has_buffered() {
                true
            } else {
                held.flush(&conn)
            }
        } else {
            held.flush(&conn) && send_reply(&conn, chunk, reply)
        };
        board.set(IDLE);
        if !sent {
            return;
        }
    }
    held.flush(&conn);
}

/// A chunk that ran for less than this is "tiny": its reply may wait for
/// the next ones, to share one write.
const TINY: Duration = Duration::from_micros(20);
/// Most replies held back…
const HOLD_MAX: usize = 64;
/// …and for at most this long.
const HOLD_FOR: Duration = Duration::from_millis(1);

/// Replies of tiny chunks, held back while more work is already buffered,
/// so that a burst of tiny tasks costs one write per many results.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    count: usize,
    since: Option<Instant>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn push(&mut self, frame: Vec<u8>, now: Instant) {
        if self.bytes.is_empty() {
            self.bytes = frame;
        } else {
            self.bytes.extend_from_slice(&frame);
        }
        self.count += 1;
        self.since.get_or_insert(now);
    }

    fn worth_holding(&self, now: Instant) -> bool {
        self.count < HOLD_MAX && self.since.is_some_and(|t| now.duration_since(t) < HOLD_FOR)
    }

    /// Writes the held replies; whether the pool is still there.
    fn flush(&mut self, conn: &Connection) -> bool {
        if self.count == 0 {
            return true;
        }
        let ok = conn.send_raw_all(&self.bytes).is_ok();
        // Freed now rather than at the next push (which takes the next
        // reply's buffer): the next chunk's buffers can take its memory.
        self.bytes = Vec::new();
        self.count = 0;
        self.since = None;
        ok
    }
}

/// Sends one reply, or a message saying why it could not be sent.
fn send_reply(conn: &Connection, chunk: u64, reply: crate::codec::Encoded) -> bool {
    match conn.send_encoded(reply) {
        Ok(()) => true,
        Err(e @ (SendError::TooLarge { .. } | SendError::Codec(_))) => conn
            .send_encoded(wire::message(chunk, wire::BAD_RESULT, &e.to_string()))
            .is_ok(),
        Err(_) => false,
    }
}
