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

use serde::{Deserialize, Serialize};

use crate::pool::remote::{ChunkOutcome, Runner};
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
