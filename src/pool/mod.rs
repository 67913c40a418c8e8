//! A pool of worker processes (Python's `multiprocessing.Pool`) that never
//! hangs when a worker dies.
//!
//! ```
//! use multiproc::Pool;
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(square, 0..5)?, vec![0, 1, 4, 9, 16]);
//! let r = pool.apply_async(square, 12)?;
//! assert_eq!(r.get()?, 144);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Failures are results
//!
//! Every task ends with its value or a [`TaskError`]; none is lost and no
//! call waits for a task that can no longer finish:
//!
//! * a panic in a task is that task's [`TaskError::Panicked`], with the
//!   panic message; the worker survives and the other tasks complete;
//! * a worker that dies (killed by a signal, the OOM killer,
//!   `std::process::exit`, a crash, or while sending its result) fails the
//!   chunk it held with [`TaskError::WorkerDied`], naming the signal or
//!   exit code; chunks it had been sent but had not started run on another
//!   worker, and a replacement worker is started;
//! * a result that does not decode is that task's [`TaskError::Decode`];
//! * [`terminate`](Pool::terminate) (or dropping the pool) kills the
//!   workers at once and fails what was pending with
//!   [`TaskError::Terminated`].
//!
//! # Design
//!
//! Each worker has a private [`pipe`](crate::pipe) to the pool, so the pool
//! knows exactly which chunks each worker holds, and a status word in
//! shared memory naming the chunk it is running, so that after a death the
//! pool fails exactly that chunk and re-sends the ones the worker had not
//! started (rather than guessing, or, like Python, losing the task and
//! hanging). The pool watches every worker's connection and pidfd. Chunks
//! are sent ahead of the replies (a window of 2 to 512 chunks per worker,
//! sized from the measured time per chunk so that about 2 ms of work waits
//! in each worker), always without blocking, so throughput on tiny tasks
//! is not bound by round trips and a slow worker cannot deadlock the pool.
//! A chunk sent ahead is not lost to a worker that gets stuck on a long
//! one: when another worker is idle and nothing is queued, the pool takes
//! back (through a claim word in shared memory, so each chunk runs exactly
//! once) every chunk the stuck worker has not started, and the idle
//! workers run them. As in Python, no task waits behind a busy worker while
//! another worker is idle (for more than about 2 ms).
//! Work functions are plain `fn(A) -> R`; a worker finds them in its copy of
//! the executable by their distance from a fixed function, as
//! [`Process`] targets. With glibc, a worker keeps up to 16 MiB of the
//! memory it frees for its next allocations (and takes allocations under
//! 4 MiB from its heap), so each chunk's buffers are not handed back to
//! the kernel and faulted in again for the next one.
//!
//! The pool has no thread that must be alive for waits to finish: whoever
//! waits on it (a `get`, `map`, iteration of an [`Imap`], `join`) drives it
//! when no other thread does. A pool using the spawn start method also
//! keeps one background thread driving it, so submitted work advances while
//! nobody waits, as in Python. A pool using the fork start method has none
//! (it must stay single-threaded to fork replacement workers): its work
//! advances while you wait on it, and a chunk window's worth of tasks per
//! worker runs as soon as it is submitted.
//!
//! # Initializer failures
//!
//! A worker that panics in, or dies during, the builder's initializer runs
//! none of its chunks: they go back to the queue and a new worker is
//! started. After `max(processes, 3)` such failures in a row, with no task
//! completing in between, the pool stops starting workers and every pending
//! and future task fails with [`TaskError::Initializer`], carrying the
//! panic message or how the worker died. A failure that is only occasional
//! therefore costs nothing but a restart, and a broken initializer cannot
//! restart workers forever (Python's pool does).
//!
//! # Differences from Python
//!
//! * `map` waits for every task and returns the values, or the error of the
//!   failed task with the lowest index ([`PoolError::Task`]);
//!   [`map_results`](Pool::map_results) gives every task's `Result`.
//! * `maxtasksperchild` counts chunks, as Python's does (a map chunk is one
//!   task to Python's worker).
//! * `starmap` takes a function item of 1 to 12 arguments and tuples of
//!   them ([`StarFn`]); a function pointer or a capturing closure cannot be
//!   found by a worker.
//! * [`imap`](Pool::imap) reads its input lazily and keeps a bounded number
//!   of chunks in flight, so an endless iterator works.
//! * [`map`](Pool::map) (of an input of known length) and
//!   [`map_chunked`](Pool::map_chunked) read their input while the first
//!   chunks run. When the chunks are
//!   large (frames of 16 KiB or more), only two per worker are encoded
//!   ahead of the replies, each into the buffer of a finished one, so a long
//!   map works in a few chunks' worth of memory (Python reads the whole
//!   input first).
//! * Dropping a result handle does not cancel its tasks (as in Python); its
//!   results are discarded.
//! * Results stay in their handle, so `get` can be called again, as in
//!   Python; it returns a copy (`R: Clone`). [`AsyncResult::into_value`]
//!   and [`MapResult::into_values`] hand the results over without one
//!   (what [`map`](Pool::map) and [`apply`](Pool::apply) use).
//! * Python's `callback` and `error_callback` are the closures given to
//!   [`apply_async_with`](Pool::apply_async_with) and
//!   [`map_async_with`](Pool::map_async_with). They run in the thread
//!   driving the pool: a spawn pool's own thread, so without anyone
//!   waiting; in a fork pool (no thread of its own), a thread waiting on
//!   the pool.
//! * Workers ignore `SIGINT`. A terminal's Ctrl-C goes to the whole
//!   foreground process group; Python's workers get a `KeyboardInterrupt`
//!   that kills them mid-task (and can hang the pool). Here the pool's
//!   owner alone decides: left at the default, Ctrl-C kills the owner and
//!   the workers die with it; an owner that handles `SIGINT` can let the
//!   work finish ([`close`](Pool::close) and [`join`](Pool::join)) or stop
//!   it ([`terminate`](Pool::terminate)). An initializer may restore the
//!   default if tasks should be interrupted themselves.

#[cfg(feature = "tokio")]
mod aio;
pub(crate) mod api;
mod board;
mod engine;
pub(crate) mod error;
pub(crate) mod imap;
mod progress;
#[cfg(feature = "zenoh")]
pub(crate) mod remote;
mod result;
mod star;
mod wire;
mod worker;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::process::fn_ref::FnRef;
use crate::process::{Process, StartMethod, get_start_method, usable_cpu_count};
use crate::wait::Deadline;
use engine::{Config, Shared, StartWorker};
pub use error::{PoolError, TaskError, WorkerExit};
pub use imap::Imap;
pub use progress::Progress;
pub use result::{AsyncResult, MapResult};
pub use star::StarFn;
use worker::{WorkerArgs, worker_main};

/// Most chunks encoded and handed to the pool at a time by `map` (the
/// batches grow to this from one), so workers start before a long input
/// is fully encoded.
const SUBMIT_BATCH: usize = 1024;
/// A blocking `map` whose first chunk encodes to a frame of at least this
/// many bytes reads its input only as chunks finish (see
/// [`Pool::map_reading`]); smaller chunks are handed over all at once.
const READ_AHEAD_FRAME: usize = 16 << 10;
/// Chunks such a map keeps in flight per worker: the one it runs and the
/// one waiting behind it.
const READ_AHEAD_PER_WORKER: usize = 2;
/// Chunks an [`Imap`] keeps in flight per worker.
const IMAP_AHEAD_PER_WORKER: usize = 256;

/// A pool of worker processes running `fn(A) -> R` tasks.
///
/// Made by [`Pool::new`] or [`Pool::builder`]. All methods take `&self`;
/// the pool can be shared between threads. Dropping it terminates it, like
/// leaving Python's `with Pool() as p:` block; call [`close`](Self::close)
/// and [`join`](Self::join) first to let the work finish.
///
/// See the [module documentation](crate::pool) for the failure rules and
/// the design.
pub struct Pool {
    shared: Arc<Shared>,
    processes: usize,
    driver: Mutex<Option<JoinHandle<()>>>,
}

type MakeStart = Box<dyn FnOnce(Option<usize>, StartMethod) -> StartWorker + Send>;

/// Settings for a [`Pool`] (Python's `Pool(processes, initializer,
/// initargs, maxtasksperchild, context)`).
///
/// ```
/// use multiproc::{Pool, StartMethod};
///
/// fn setup(greeting: String) { assert_eq!(greeting, "hi"); }
/// fn double(x: i32) -> i32 { 2 * x }
///
/// let pool = Pool::builder()
///     .processes(2)
///     .initializer(setup, "hi".to_string())
///     .maxtasksperchild(100)
///     .start_method(StartMethod::Spawn)
///     .build()?;
/// assert_eq!(pool.map(double, [1, 2, 3])?, vec![2, 4, 6]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until it builds"]
pub struct PoolBuilder {
    processes: Option<usize>,
    maxtasks: Option<usize>,
    method: Option<StartMethod>,
    init: Option<MakeStart>,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("maxtasksperchild", &self.maxtasks)
            .field("start_method", &self.method)
            .field("initializer", &self.init.is_some())
            .finish()
    }
}

fn make_start<I>(
    init: Option<worker::Init<I>>,
    maxtasks: Option<usize>,
    method: StartMethod,
) -> StartWorker
where
    I: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    let init = Mutex::new(init);
    let prefix = match method {
        StartMethod::Spawn => "SpawnPoolWorker",
        StartMethod::Fork => "ForkPoolWorker",
    };
    Box::new(move |conn, board, n| {
        let init = init.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let args = WorkerArgs {
            conn,
            board,
            init,
            maxtasks,
        };
        let mut p = Process::new(worker_main::<I>, args)
            .name(format!("{prefix}-{n}"))
            .daemon(true)
            .start_method(method);
        p.start()?;
        Ok(p)
    })
}

impl PoolBuilder {
    /// Number of worker processes (default: the number of CPUs this process
    /// may use, its CPU affinity and cgroup CPU quota taken into account,
    /// which can be fewer than [`cpu_count`](crate::cpu_count) in a
    /// container or under `taskset`).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(args)` once in each worker when it starts (Python's
    /// `initializer` and `initargs`). The arguments are encoded anew for
    /// each worker, so handles in them (queues, connections…) reach every
    /// worker. See the [module documentation](crate::pool) for what happens
    /// when it fails.
    ///
    /// It is also where a worker's logger belongs: a spawned worker never
    /// runs the program's `main`, so a logger installed there is missing in
    /// the worker (use the logger's `try_init` form, which is harmless in a
    /// forked worker that inherited one).
    pub fn initializer<I>(mut self, f: fn(I), args: I) -> Self
    where
        I: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        let init = FnRef::new(f);
        self.init = Some(Box::new(move |maxtasks, method| {
            make_start(Some((init, args)), maxtasks, method)
        }));
        self
    }

    /// Replaces each worker after it has run `n` chunks (Python's
    /// `maxtasksperchild`; a chunk of a map counts as one). Default: never.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// How workers start (default: [`get_start_method`]). With
    /// [`StartMethod::Fork`] the process building the pool, and every
    /// thread waiting on it, must be its only thread (see the module
    /// documentation).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, PoolError> {
        let processes = self.processes.unwrap_or_else(usable_cpu_count);
        if processes == 0 {
            return Err(PoolError::Invalid("a pool needs at least one process"));
        }
        if self.maxtasks == Some(0) {
            return Err(PoolError::Invalid("maxtasksperchild must be at least 1"));
        }
        let method = self.method.unwrap_or_else(get_start_method);
        let start = match self.init {
            Some(make) => make(self.maxtasks, method),
            None => make_start::<()>(None, self.maxtasks, method),
        };
        let shared = Shared::new(Config {
            processes,
            maxtasks: self.maxtasks,
            start,
        })?;
        if let Err(e) = shared.start_workers() {
            shared.terminate();
            return Err(e.into());
        }
        let driver = if method == StartMethod::Spawn {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("multiproc-pool".into())
                .spawn(move || {
                    s.drive_in_background(|st| st.finished());
                });
            match spawned {
                Ok(h) => {
                    #[cfg(feature = "tokio")]
                    shared.set_background();
                    Some(h)
                }
                Err(e) => {
                    shared.terminate();
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        Ok(Pool {
            shared,
            processes,
            driver: Mutex::new(driver),
        })
    }
}

impl Pool {
    /// A pool of `processes` workers with the default settings.
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Pool::builder().processes(processes).build()
    }

    /// Settings for a pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: None,
            maxtasks: None,
            method: None,
            init: None,
        }
    }

    /// Number of worker processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Process ids of the workers alive right now.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.shared.lock().worker_pids()
    }

    /// Submits `items` in chunks of `chunksize`, read from the input a
    /// chunk at a time; returns the job and the number of tasks.
    fn submit_with<T: Serialize>(
        &self,
        call: wire::Call,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
        hook: Option<engine::Hook>,
    ) -> Result<(u64, usize), PoolError> {
        let job = self.shared.new_job_with(false, hook)?;
        // Should the input panic while it is read, the job is given up
        // (sealed), so that the pool can still close.
        struct Abandon<'a>(&'a Shared, u64);
        impl Drop for Abandon<'_> {
            fn drop(&mut self) {
                self.0.abandon(self.1);
            }
        }
        let guard = Abandon(&self.shared, job);
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            self.shared.add_chunks(job, Vec::new(), true);
        }
        // One chunk's items at a time (the buffer is reused).
        let mut chunk: Vec<T> = Vec::with_capacity(chunksize.min(items.size_hint().0).max(1));
        let mut total = 0;
        // The first chunk goes out alone, so a worker starts while the
        // rest is encoded; the batches then double.
        let mut batch_len = 1;
        let mut batch = Vec::new();
        while items.peek().is_some() {
            chunk.clear();
            chunk.extend(items.by_ref().take(chunksize));
            total += chunk.len();
            let (id, frame) = self.shared.encode_chunk(call, &chunk);
            batch.push((chunk.len(), id, frame));
            let last = items.peek().is_none();
            if last || batch.len() == batch_len {
                self.shared
                    .add_chunks(job, std::mem::take(&mut batch), last);
                batch_len = (batch_len * 2).min(SUBMIT_BATCH);
            }
        }
        std::mem::forget(guard);
        Ok((job, total))
    }

    /// A blocking map of `call` over `items`, `chunksize` per chunk: the
    /// values in input order, or the first error. Chunks whose frames are
    /// large ([`READ_AHEAD_FRAME`]) are read from the input and encoded
    /// only as earlier ones finish, at most [`READ_AHEAD_PER_WORKER`] per
    /// worker in flight, each into the frame of a finished one (see
    /// `Shared::spare_frame`); the values of finished chunks are decoded
    /// meanwhile. A long map of large chunks so works in a few frames of
    /// memory, used again and again, rather than in new memory for every
    /// chunk (whose page faults cost more than the encoding). Small chunks
    /// are handed over as by `map_async`.
    fn map_reading<T: Serialize, R: DeserializeOwned>(
        &self,
        call: wire::Call,
        items: impl Iterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError> {
        let job = self.shared.new_job(false)?;
        let mut items = items.peekable();
        // Should the input panic while it is read, the handle's drop gives
        // the job up (seals it), so that the pool can still close.
        let mut handle = MapResult::<R>::new(self.shared.clone(), job, items.size_hint().0);
        if items.peek().is_none() {
            self.shared.add_chunks(job, Vec::new(), true);
        }
        let mut chunk: Vec<T> = Vec::with_capacity(chunksize.min(items.size_hint().0).max(1));
        let (mut total, mut added) = (0, 0);
        // Chunks in flight before the next is read: no limit until the
        // first frame shows that the chunks are large.
        let mut ahead = usize::MAX;
        // Otherwise the first chunk goes out alone, so a worker starts
        // while the rest is encoded; the batches then double.
        let mut batch_len = 1;
        let mut batch = Vec::new();
        while items.peek().is_some() {
            if added >= ahead {
                handle.wait_chunks(added + 1 - ahead);
            }
            chunk.clear();
            chunk.extend(items.by_ref().take(chunksize));
            total += chunk.len();
            let spare = if ahead == usize::MAX {
                Vec::new()
            } else {
                self.shared.spare_frame()
            };
            let (id, frame) = self.shared.encode_chunk_in(call, &chunk, spare);
            if added == 0
                && frame
                    .as_ref()
                    .is_ok_and(|f| f.bytes.len() >= READ_AHEAD_FRAME)
            {
                ahead = READ_AHEAD_PER_WORKER * self.processes.max(1);
            }
            batch.push((chunk.len(), id, frame));
            added += 1;
            let last = items.peek().is_none();
            if last || batch.len() == batch_len || ahead != usize::MAX {
                self.shared
                    .add_chunks(job, std::mem::take(&mut batch), last);
                batch_len = (batch_len * 2).min(SUBMIT_BATCH);
            }
        }
        handle.set_len(total);
        handle.into_values()
    }

    api::submit_methods! {
        map: MapResult, apply: AsyncResult, imap: Imap, chunk: "tasks per message";
        /// Runs `f` on every item in the pool and returns the values in input
        /// order, or the error of the failed task with the lowest index (after
        /// every task has finished). The chunk size is Python's default: about
        /// four chunks per worker.
        map;
        /// Submits a map without waiting; the handle gives the results.
        map_async;
        /// Runs `f(a, b, …)` for every tuple `(a, b, …)` (Python's `starmap`),
        /// results in order; errors as for [`map`](Self::map). `f` takes 1 to
        /// 12 arguments and must be a function item (see [`StarFn`]).
        ///
        /// ```
        /// fn add(a: i32, b: i32) -> i32 { a + b }
        /// fn volume(x: u32, y: u32, z: u32) -> u32 { x * y * z }
        /// let pool = multiproc::Pool::new(2)?;
        /// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, vec![3, 7]);
        /// assert_eq!(pool.starmap(volume, [(1, 2, 3), (2, 2, 2)])?, vec![6, 8]);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        starmap;
        /// Runs `f(args)` in a worker and waits for its value (Python's
        /// `apply`).
        apply;
        /// Results one by one in input order, as they become available
        /// (Python's `imap`, chunk size 1).
        ///
        /// ```
        /// fn square(x: u64) -> u64 { x * x }
        /// let pool = multiproc::Pool::new(2)?;
        /// let squares: Vec<u64> = pool.imap(square, 0..)?.take(4).map(Result::unwrap).collect();
        /// assert_eq!(squares, vec![0, 1, 4, 9]);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        imap;
        /// Results one by one in the order they finish (Python's
        /// `imap_unordered`, chunk size 1).
        imap_unordered;
    }

    /// Like [`map`](Self::map), returning every task's own result.
    ///
    /// ```
    /// use multiproc::{Pool, TaskError};
    ///
    /// fn inverse(x: i32) -> i32 { 100 / x }
    ///
    /// let pool = Pool::new(2)?;
    /// let results = pool.map_results(inverse, [5, 0, 10])?;
    /// assert_eq!(results[0], Ok(20));
    /// assert!(matches!(&results[1], Err(TaskError::Panicked { message }) if message.contains("divide by zero")));
    /// assert_eq!(results[2], Ok(10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_results<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        self.map_async(f, items)?.into_results()
    }

    /// Like [`apply_async`](Self::apply_async), calling `callback` with the
    /// value, or `error_callback` with the error, once the task has
    /// finished (Python's `callback` and `error_callback`). They run in the
    /// parent, in the thread driving the pool (a spawn pool's own thread;
    /// for a fork pool, a thread waiting on it), before the handle reports
    /// the task ready; they should return quickly. The value stays
    /// available from the handle.
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let pool = multiproc::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.apply_async_with(square, 5, move |v: &u64| tx.send(*v).unwrap(), |_| {})?;
    /// assert_eq!(r.get()?, 25);
    /// assert_eq!(rx.recv()?, 25);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        callback: impl FnOnce(&R) + Send + 'static,
        error_callback: impl FnOnce(&TaskError) + Send + 'static,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let call = result::apply_hook(callback, error_callback);
        let inner = MapResult::with_callback(self.shared.clone(), 1, call, |hook| {
            self.submit_with(wire::Call::map(f), [args], 1, Some(hook))
                .map(|(job, _)| job)
        })?;
        Ok(AsyncResult::new(inner))
    }

    /// Like [`map_async`](Self::map_async), calling `callback` with the
    /// values once every task has returned one, or `error_callback` with
    /// the error of the failed task with the lowest index (Python's
    /// `callback` and `error_callback`; they run as for
    /// [`apply_async_with`](Self::apply_async_with)).
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let pool = multiproc::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.map_async_with(square, 0..4, move |v: &[u64]| tx.send(v.to_vec()).unwrap(), |_| {})?;
    /// r.wait();
    /// assert_eq!(rx.recv()?, vec![0, 1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        callback: impl FnOnce(&[R]) + Send + 'static,
        error_callback: impl FnOnce(&PoolError) + Send + 'static,
    ) -> Result<MapResult<R>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        let n = items.len();
        let chunksize = api::default_chunksize(n, self.processes);
        let call = result::map_hook(callback, error_callback);
        MapResult::with_callback(self.shared.clone(), n, call, |hook| {
            self.submit_with(wire::Call::map(f), items, chunksize, Some(hook))
                .map(|(job, _)| job)
        })
    }

    /// Accepts no new work; the workers exit once what was submitted is
    /// done (Python's `close`).
    pub fn close(&self) {
        self.shared.close();
    }

    /// Kills the workers at once; unfinished tasks fail with
    /// [`TaskError::Terminated`] (Python's `terminate`). Returns when every
    /// worker has been reaped.
    pub fn terminate(&self) {
        self.shared.terminate();
        self.join_driver();
    }

    /// After [`close`](Self::close) (or `terminate`), waits until the work
    /// is done and every worker has exited.
    pub fn join(&self) -> Result<(), PoolError> {
        self.join_until(None, Duration::MAX)
    }

    /// Like [`join`](Self::join), giving up with [`PoolError::Timeout`]
    /// after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), PoolError> {
        self.join_until(Deadline::after(timeout).instant(), timeout)
    }

    fn join_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<(), PoolError> {
        if !self.shared.lock().closed {
            return Err(PoolError::NotClosed);
        }
        let (st, done) = self.shared.wait_until(|st| st.finished(), deadline);
        drop(st);
        if !done {
            return Err(PoolError::Timeout(timeout));
        }
        self.join_driver();
        Ok(())
    }

    fn join_driver(&self) {
        let handle = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .finish()
    }
}

impl api::Submit for Pool {
    type Map<R> = MapResult<R>;
    type Imap<R> = Imap<R>;

    fn workers(&self) -> usize {
        self.processes
    }

    fn submit_map<A: api::Arg, R: api::Ret>(
        &self,
        f: fn(A) -> R,
        items: Vec<A>,
        chunksize: usize,
    ) -> Result<MapResult<R>, PoolError> {
        self.submit_map_iter(f, items.into_iter(), chunksize)
    }

    fn submit_map_iter<A: api::Arg, R: api::Ret>(
        &self,
        f: fn(A) -> R,
        items: impl Iterator<Item = A>,
        chunksize: usize,
    ) -> Result<MapResult<R>, PoolError> {
        let (job, n) = self.submit_with(wire::Call::map(f), items, chunksize, None)?;
        Ok(MapResult::new(self.shared.clone(), job, n))
    }

    fn map_waiting<A: api::Arg, R: api::Ret, I: Iterator<Item = A>>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: usize,
    ) -> Result<Result<Vec<R>, PoolError>, I> {
        Ok(self.map_reading(wire::Call::map(f), items, chunksize))
    }

    fn submit_star<F: StarFn<T>, T: Serialize>(
        &self,
        f: F,
        items: Vec<T>,
        chunksize: usize,
    ) -> Result<MapResult<F::Output>, PoolError> {
        let call = wire::Call::runner_only(f.runner());
        let (job, n) = self.submit_with(call, items, chunksize, None)?;
        Ok(MapResult::new(self.shared.clone(), job, n))
    }

    fn open_imap<A: api::Arg, R: api::Ret>(
        &self,
        f: fn(A) -> R,
        mut input: api::Chunks<A>,
        ordered: bool,
        total: Option<usize>,
    ) -> Result<Imap<R>, PoolError> {
        let call = wire::Call::map(f);
        let feed: imap::Feed<Shared> = Box::new(move |shared: &Shared| {
            let chunk = input()?;
            let (id, frame) = shared.encode_chunk(call, &chunk);
            Some((chunk.len(), id, frame))
        });
        let job = self.shared.new_job(!ordered)?;
        Ok(Imap::new(imap::Stream::new(
            self.shared.clone(),
            job,
            ordered,
            feed,
            total,
            IMAP_AHEAD_PER_WORKER * self.processes,
        )))
    }
}
