//! The worker process: runs the initializer once, then chunks of tasks
//! until told to stop, until its task budget (`maxtasksperchild`) is spent,
//! or until the pool goes away.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::board::{Board, IDLE, INIT};
use super::wire::{self, Runner};
use crate::codec;
use crate::connection::Connection;
use crate::error::SendError;
use crate::process::target;

/// What a worker is started with.
#[derive(Serialize, Deserialize)]
pub struct WorkerArgs<I> {
    /// Its private connection to the pool.
    pub conn: Connection,
    /// Its status word.
    pub board: Board,
    /// The initializer (as a distance from the binary's anchor) and its
    /// arguments.
    pub init: Option<(isize, I)>,
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
    board.set(INIT);
    if let Some((offset, init_args)) = init {
        // SAFETY: the pool took this distance from an `fn(I)` of this binary
        // (the builder's `initializer`, typed with this very `I`); a spawned
        // worker checked the binary fingerprint at start-up.
        let f = unsafe { std::mem::transmute::<usize, fn(I)>(target::address_at(offset)) };
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(init_args))) {
            let text = wire::panic_message(panic);
            let _ = conn.send_encoded(wire::message(wire::STOP, wire::INIT_FAILED, &text));
            return;
        }
    }
    board.set(IDLE);
    let mut done = 0usize;
    while maxtasks.is_none_or(|m| done < m) {
        let Ok((payload, fds)) = conn.recv_encoded(None) else {
            return;
        };
        let Ok(((chunk, runner, target_offset), rest)) =
            codec::decode_payload::<(u64, isize, isize)>(&payload, Vec::new())
        else {
            return;
        };
        if chunk == wire::STOP {
            return;
        }
        board.set(chunk);
        // SAFETY: the pool took this distance from a `Runner` of this binary
        // (`run_map`/`run_star` monomorphised for the target's types).
        let runner = unsafe { std::mem::transmute::<usize, Runner>(target::address_at(runner)) };
        let reply = runner(target::address_at(target_offset), chunk, rest, fds);
        let sent = match conn.send_encoded(reply) {
            Ok(()) => true,
            Err(e @ (SendError::TooLarge { .. } | SendError::Codec(_))) => conn
                .send_encoded(wire::message(chunk, wire::BAD_RESULT, &e.to_string()))
                .is_ok(),
            Err(_) => false,
        };
        board.set(IDLE);
        if !sent {
            return;
        }
        done += 1;
    }
}
