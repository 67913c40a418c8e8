//! What can go wrong with a pool, and with one of its tasks.

use std::fmt;
use std::time::Duration;

use crate::error::StartError;
use crate::sys;

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// A signal killed it (`SIGKILL` from `kill -9` or the OOM killer,
    /// `SIGSEGV` from a crash, …).
    Signal(i32),
    /// It exited with this code (`std::process::exit`, `abort` gives
    /// `SIGABRT` instead).
    Code(i32),
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WorkerExit::Signal(sig) => match sys::process::signal_name(sig) {
                Some(name) => write!(f, "killed by signal {sig} ({name})"),
                None => write!(f, "killed by signal {sig}"),
            },
            WorkerExit::Code(code) => write!(f, "exited with code {code}"),
        }
    }
}

/// Why one task has no result. Every task of a pool ends with a value or
/// one of these; none is lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task's function panicked; the other tasks are unaffected.
    #[error("the task panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The worker process died while it held this task (running it, or
    /// sending its result). With a chunk size above one, every task of the
    /// chunk it held gets this error. The pool starts a replacement.
    #[error("worker process {pid} died while running this task: {exit}")]
    WorkerDied {
        /// The worker's process id.
        pid: i32,
        /// How it ended.
        exit: WorkerExit,
    },
    /// Workers kept dying or panicking in the pool's initializer, so the
    /// pool gave up (see [`Pool`](crate::Pool) on initializer failures).
    #[error("the pool's workers fail in their initializer: {message}")]
    Initializer {
        /// What the last failing initializer did (its panic message, or how
        /// its process died).
        message: String,
    },
    /// The arguments or the result could not be encoded (or are larger
    /// than a message may be).
    #[error("cannot encode the task's arguments or result: {0}")]
    Encode(String),
    /// The arguments (in the worker) or the result (in the pool) did not
    /// decode as the function's types.
    #[error("the task's arguments or result did not decode: {0}")]
    Decode(String),
    /// [`Pool::terminate`](crate::Pool::terminate) (or dropping the pool)
    /// stopped the pool before the task finished.
    #[error("the pool was terminated before the task finished")]
    Terminated,
    /// The pool cannot run tasks any more (no worker could be started, or
    /// an internal error).
    #[error("the pool cannot run tasks: {0}")]
    Broken(String),
    /// A cluster worker was lost (its liveliness token vanished: the
    /// process died, its host or link went down) while it ran this task,
    /// and the task's retry budget was spent (see [`crate::cluster`]).
    #[cfg(feature = "zenoh")]
    #[error("worker {worker} on host {host} was lost while running this task")]
    HostLost {
        /// The host the worker ran on.
        host: String,
        /// The worker's id (host, process id and a random part).
        worker: String,
    },
    /// The encoded arguments or result are larger than the cluster's
    /// payload cap (see [`crate::cluster::ClusterConfig::max_payload`]).
    #[cfg(feature = "zenoh")]
    #[error("payload of {size} bytes exceeds the cluster's cap of {limit} bytes")]
    TooLarge {
        /// The encoded size.
        size: u64,
        /// The cap.
        limit: u64,
    },
}

/// A pool operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A task failed: the one with the lowest index among the failed ones.
    #[error("task {index} failed: {error}")]
    Task {
        /// Its position in the input.
        index: usize,
        /// Why.
        #[source]
        error: TaskError,
    },
    /// [`close`](crate::Pool::close) or `terminate` was called: no new
    /// work is accepted.
    #[error("the pool is closed to new work")]
    Closed,
    /// [`join`](crate::Pool::join) needs `close` or `terminate` first.
    #[error("the pool is still running: close or terminate it before joining")]
    NotClosed,
    /// No result within the timeout (only from the `*_timeout` forms);
    /// the handle stays usable.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The results were lost (only an internal error gives this: results
    /// stay in their handle, so `get` can be called again).
    #[error("the result was already taken")]
    AlreadyTaken,
    /// An argument is out of range (no processes, a chunk size of zero).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The workers could not be started.
    #[error("cannot start the pool's workers: {0}")]
    Start(#[from] StartError),
    /// The OS refused something the pool needs (a socket, shared memory).
    #[error("cannot set up the pool: {0}")]
    Io(#[from] std::io::Error),
    /// A cluster pool could not join or use its cluster.
    #[cfg(feature = "zenoh")]
    #[error("cluster: {0}")]
    Cluster(#[from] crate::error::ClusterError),
}

/// Every task's value, or the error of the failed task with the lowest
/// index (what a map's `into_values` and `get` return).
pub(crate) fn first_error<R>(results: Vec<Result<R, TaskError>>) -> Result<Vec<R>, PoolError> {
    let mut out = Vec::with_capacity(results.len());
    for (index, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => out.push(v),
            Err(error) => return Err(PoolError::Task { index, error }),
        }
    }
    Ok(out)
}
