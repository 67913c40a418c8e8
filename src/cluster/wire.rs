//! The messages between a cluster pool's driver and its workers, and the
//! worker-side runners.
//!
//! Key space (under the cluster's namespace `ns`):
//!
//! | key | what |
//! | --- | --- |
//! | `ns/pool/<pool>` | the driver's liveliness token: workers pull from live pools |
//! | `ns/pool/<pool>/work` | the driver's queryable: a [`Pull`] asks, an [`Assign`] answers |
//! | `ns/worker/<worker>` | a worker's liveliness token: when it vanishes, the driver fails (or retries) the tasks the worker was running |
//!
//! A worker runs one task (a chunk of items) at a time. It reports the
//! results of what it ran in its next pull, so a pull says both "here is
//! what I did" and "give me more". Tasks are numbered per pool; a result
//! for a task that is no longer running (its worker was declared lost, or
//! another worker already returned it) is dropped, so the caller gets
//! exactly one result per task.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::net;
use crate::pool::TaskError;
use crate::process::fn_ref::{FnRef, RawFnRef};

/// A worker's request for work, carrying the results of its last task.
#[derive(Serialize, Deserialize, Debug)]
pub struct Pull {
    /// The worker's id (also its liveliness key chunk).
    pub worker: String,
    /// The host it runs on.
    pub host: String,
    /// Grows with every pull of this worker.
    pub seq: u64,
    /// Results of tasks it ran.
    pub results: Vec<Done>,
}

/// The result of one task.
#[derive(Serialize, Deserialize, Debug)]
pub struct Done {
    pub task: u64,
    pub outcome: ChunkOutcome,
}

/// What running a task gave.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum ChunkOutcome {
    /// One outcome per item.
    Ran(Vec<ItemOutcome>),
    /// The arguments did not decode in the worker.
    BadArgs(String),
    /// The task came from a different build of the program.
    WrongBinary,
}

/// One item's outcome.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum ItemOutcome {
    /// The function returned this value (encoded).
    Ok(Vec<u8>),
    /// The function panicked.
    Panicked(String),
    /// The value could not be encoded.
    Encode(String),
    /// The encoded value exceeds the payload cap.
    TooLarge { size: u64, limit: u64 },
}

/// The driver's answer to a [`Pull`].
#[derive(Serialize, Deserialize, Debug)]
pub enum Assign {
    /// Run these.
    Tasks(Vec<TaskMsg>),
    /// Nothing to do now: pull again.
    Idle,
    /// The driver has not yet seen this worker's liveliness token: pull
    /// again shortly (the token and the query race through the routers).
    Unknown,
    /// This worker was declared lost: join again under a new id.
    Refused,
    /// The pool is closed or terminated: it has no more work.
    Closed,
}

/// One task: a chunk of items for one function.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TaskMsg {
    pub task: u64,
    /// The driver's [`binary_fingerprint`](crate::process::fn_ref::binary_fingerprint):
    /// a worker runs only tasks of its own build.
    pub fingerprint: isize,
    pub runner: FnRef<Runner>,
    pub target: RawFnRef,
    /// The driver's payload cap: the result must fit it.
    pub cap: u64,
    pub args: Vec<u8>,
}

/// Runs one task in a worker: decodes the items, calls the target on each,
/// encodes each value within `cap` bytes.
pub type Runner = fn(target: RawFnRef, args: &[u8], cap: usize) -> ChunkOutcome;

/// Runs `f` on every item of the encoded `Vec<T>` in `args`.
pub fn run_each<T, R>(args: &[u8], cap: usize, f: impl Fn(T) -> R) -> ChunkOutcome
where
    T: DeserializeOwned,
    R: Serialize,
{
    let items: Vec<T> = match net::decode(args, usize::MAX) {
        Ok(v) => v,
        Err(e) => return ChunkOutcome::BadArgs(format!("{e:?}")),
    };
    let mut total = 0usize;
    let mut out: Vec<ItemOutcome> = items
        .into_iter()
        .map(|a| match catch_unwind(AssertUnwindSafe(|| f(a))) {
            Ok(r) => match net::encode(&r, cap) {
                Ok(b) => {
                    total += b.len();
                    ItemOutcome::Ok(b)
                }
                Err(net::NetCodec::TooLarge { size, limit }) => {
                    ItemOutcome::TooLarge { size, limit }
                }
                Err(e) => ItemOutcome::Encode(format!("{e:?}")),
            },
            Err(p) => ItemOutcome::Panicked(crate::pool::panic_text(p)),
        })
        .collect();
    if total > cap {
        // Each value fits but the chunk's reply would not.
        for o in &mut out {
            if matches!(o, ItemOutcome::Ok(_)) {
                *o = ItemOutcome::TooLarge {
                    size: total as u64,
                    limit: cap as u64,
                };
            }
        }
    }
    ChunkOutcome::Ran(out)
}

/// The runner for `fn(A) -> R` targets.
pub fn run_map<A: DeserializeOwned, R: Serialize>(
    target: RawFnRef,
    args: &[u8],
    cap: usize,
) -> ChunkOutcome {
    // The driver erased `target` from an `fn(A) -> R` and paired it with
    // this runner, monomorphised for the same `A` and `R`; the worker
    // checked that the task comes from its own build (fingerprint).
    let f = target.typed::<fn(A) -> R>().get();
    run_each(args, cap, f)
}

/// Decodes one item's outcome as `R`.
pub fn item<R: DeserializeOwned>(o: ItemOutcome, cap: usize) -> Result<R, TaskError> {
    match o {
        ItemOutcome::Ok(b) => net::decode(&b, cap).map_err(|e| e.into_task_error()),
        ItemOutcome::Panicked(message) => Err(TaskError::Panicked { message }),
        ItemOutcome::Encode(m) => Err(TaskError::Encode(m)),
        ItemOutcome::TooLarge { size, limit } => Err(TaskError::TooLarge { size, limit }),
    }
}
