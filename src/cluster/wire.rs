//! The messages between a cluster pool's driver and its workers, and the
//! worker-side runners.
//!
//! Key space (under the cluster's namespace `ns`):
//!
//! | key | what |
//! | --- | --- |
//! | `ns/pool/<pool>` | the driver's liveliness token: workers pull from live pools |
//! | `ns/pool/<pool>/work` | the driver's queryable: a [`Pull`] asks, an [`Assign`] answers |
//! | `ns/pool/<pool>/started` | the driver's subscriber: a [`Started`] notice, for a task started while a pull was on its way |
//! | `ns/worker/<worker>` | a worker's liveliness token: when it vanishes, the driver fails (or retries) the tasks the worker was running |
//!
//! A worker runs one task (a chunk of items) at a time and holds a few
//! more it has not started (its *prefetch*, default 2), so that the round
//! trip of a pull overlaps the running of a task. It has at most one pull
//! on its way. A pull says "here is what I did" (results), "I start this
//! one now" (started), "these I still hold" (held), and "give me up to
//! this many more" (want). A worker whose task has run past its
//! give-back time hands back what it holds behind it with a pull of want
//! 0 that no longer holds them. A task a worker holds but has not started is
//! queued again uncharged when the worker is lost or hands it back; a started one is
//! charged to the retry budget. A start travels in the pull sent as the
//! task starts, or, with a pull already on its way, in a [`Started`]
//! notice: a start whose notice had not left the worker when it died is
//! counted as not started (the task runs again, uncharged; execution is
//! at-least-once either way). Tasks are numbered per pool; a result
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
    /// Tasks of this pool it starts now.
    pub started: Vec<u64>,
    /// Tasks of this pool it holds (started or not), results not yet sent.
    pub held: Vec<u64>,
    /// Tasks it holds from every pool: the driver parks a pull only from
    /// a worker that holds none (one that holds some must come back to
    /// report them).
    pub holding: u32,
    /// How many more tasks it takes.
    pub want: u32,
}

/// A worker starts tasks it holds (sent while a pull is on its way).
#[derive(Serialize, Deserialize, Debug)]
pub struct Started {
    pub worker: String,
    pub tasks: Vec<u64>,
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
