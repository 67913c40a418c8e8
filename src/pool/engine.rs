//! The pool's engine: its workers, the queue of chunks, the jobs waiting for
//! results, and the step that moves them along.
//!
//! # Driving
//!
//! Nothing here has a thread of its own. Progress happens in [`Shared::step`]:
//! dispatch queued chunks, then wait (without holding the state lock) until
//! a worker sends a reply, dies, can take more bytes, or another thread
//! wakes the step up; then take in what happened. Whoever waits on the pool
//! drives it: [`Shared::wait_until`] runs steps while nobody else does, and
//! otherwise sleeps on a condition variable that every step signals (a
//! leader/follower scheme). A spawn pool keeps one background thread
//! waiting forever, so work advances even when nobody waits (Python's
//! behaviour); a fork pool has none, because a process must have a single
//! thread to fork replacement workers.
//!
//! # Never blocking on a worker
//!
//! The pool writes to workers without waiting (an [`Outbox`] per worker
//! keeps what did not fit until its socket or ring takes more), so a
//! worker that blocks sending a large result while the pool has a large
//! chunk for it cannot deadlock the two.
//!
//! # Worker deaths
//!
//! Each worker has a private connection, a pidfd and a status word in
//! shared memory ([`Board`]). When its connection ends or its pidfd becomes
//! readable, the pool takes in every reply it did send, reaps it, and reads
//! its status word: the chunk it held fails with
//! [`TaskError::WorkerDied`]; the other chunks it had been sent go back to
//! the front of the queue. Those are chunks it had not started, and chunks
//! of tiny tasks (under 20 µs) whose replies it was holding back to send
//! several in one write: their results died with it, so they run again
//! (their functions are called a second time). If it died in the initializer, its chunks go
//! back too, and after [`init_failure_limit`] initializer failures in a row
//! (with no successful reply in between) the pool gives up: every pending
//! task fails with [`TaskError::Initializer`] and no worker is started
//! again, so a broken initializer cannot loop forever.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::board::{Board, INIT, seq_le};
use super::error::{TaskError, WorkerExit};
use super::wire;
use crate::codec;
use crate::connection::{Connection, FRAME_ROOM, Outbox, RawFrame, frame_encoded, pipe};
use crate::error::{RecvError, StartError};
use crate::local_lock::lock;
use crate::process::Process;
use crate::sys;
use crate::sys::poll::Interest;
use crate::wait::{self, Deadline, Spin};

/// Starts one worker process given its connection, status word and number.
pub type StartWorker =
    Box<dyn Fn(Connection, Board, u64) -> Result<Process<()>, StartError> + Send + Sync>;

/// How long the background driver of a spawn pool stands by after another
/// thread drove the pool (see [`Shared::drive_in_background`]).
const GRACE: Duration = Duration::from_millis(2);
/// Longest single wait of a step, a safety net against a lost wake-up.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// Chunks sent to one worker ahead of its replies, at least…
const MIN_WINDOW: usize = 2;
/// …and at most.
const MAX_WINDOW: usize = 512;
/// Work queued in a worker beyond the chunk it runs, in nanoseconds: enough
/// to hide the round trip, little enough to keep workers balanced.
const QUEUED_NS: f64 = 2_000_000.0;
/// An idle worker takes back the chunks waiting behind another worker's
/// chunk once that one has run this long: long enough that the tail of a
/// map of tiny tasks is not shuffled around, short enough that no task
/// waits noticeably behind a long one.
const STEAL_AFTER: Duration = Duration::from_millis(2);
/// Longest wait of a step while a worker's ring is full (its room comes
/// back without a sign on the socket).
const RING_RETRY: Duration = Duration::from_millis(1);
/// The driver spins for a reply only when one is expected within this
/// (from the typical chunk's run time): a spin for a reply that comes
/// later only takes the CPU from the workers.
const SPIN_AHEAD_NS: f64 = 30_000.0;
/// Frames of finished chunks kept for later chunks (see
/// [`Shared::spare_frame`]), at most…
const SPARE_FRAMES: usize = 4;
/// …each of a capacity within this range.
const SPARE_CAPACITY: std::ops::RangeInclusive<usize> = (4 << 10)..=(1 << 20);

/// Hashes the pool's own sequential numbers (chunks, jobs), far cheaper
/// than SipHash (no outsider chooses them). The low bits, which pick the
/// bucket, are the number itself, so consecutive chunks sit side by side in
/// the table (a 100k-chunk map touches it in order instead of missing the
/// cache on every lookup); the top seven bits, which the table keeps as a
/// tag to tell entries of one group apart, are a multiplicative hash.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        const TAG: u64 = 0x7f << 57;
        self.0 = (n & !TAG) | ((self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15) & TAG);
    }
}

/// A map keyed by the pool's sequential numbers.
pub type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Initializer failures in a row after which the pool gives up.
pub fn init_failure_limit(processes: usize) -> usize {
    processes.max(3)
}

/// The pool's fixed settings.
pub struct Config {
    /// Number of workers.
    pub processes: usize,
    /// Chunks per worker before it is replaced.
    pub maxtasks: Option<usize>,
    /// How to start one.
    pub start: StartWorker,
}

/// A chunk's raw reply: the frame's payload, where the outcomes start, and
/// the descriptors that came with it.
pub struct Payload {
    pub bytes: Vec<u8>,
    pub start: usize,
    pub fds: Vec<OwnedFd>,
    /// Whether every task of the chunk returned a value.
    pub all_ok: bool,
}

impl Payload {
    /// Decodes the outcomes of its `len` tasks.
    pub fn decode<R: serde::de::DeserializeOwned>(self, len: usize) -> Vec<Result<R, TaskError>> {
        wire::decode_outcomes(&self.bytes[self.start..], self.fds, len, self.all_ok)
    }

    /// Appends the values of its `len` tasks to `out`, if every one
    /// returned one that decodes and the reply carries no descriptors (the
    /// common case, decoded without a `Result` per task); otherwise
    /// `false`, `out` is as it was, and [`decode`](Self::decode) tells the
    /// tasks apart.
    pub fn values_into<R: serde::de::DeserializeOwned>(
        &self,
        len: usize,
        out: &mut Vec<R>,
    ) -> bool {
        self.all_ok
            && self.fds.is_empty()
            && wire::decode_values_into(&self.bytes[self.start..], len, out)
    }
}

/// Decodes a chunk's result, or repeats its chunk-wide error for each task.
pub fn expand<R: serde::de::DeserializeOwned>(
    result: Result<Payload, TaskError>,
    len: usize,
) -> Vec<Result<R, TaskError>> {
    match result {
        Ok(p) => p.decode(len),
        Err(e) => std::iter::repeat_with(|| Err(e.clone()))
            .take(len)
            .collect(),
    }
}

/// Where a job's chunk stands.
pub enum Slot {
    /// Queued or running.
    Pending,
    /// Finished, not yet taken by the job's handle.
    Done(Result<Payload, TaskError>),
    /// Taken (or discarded).
    Taken,
}

/// Runs under the pool's lock when a job with callbacks completes: takes
/// its results out of the job, and returns what to call once the lock is
/// released (the user's callback).
pub type Hook = Box<dyn FnOnce(&mut Job) -> Callback + Send>;

/// A user's callback, ready to run.
pub type Callback = Box<dyn FnOnce() + Send>;

/// One `map`, `imap` or `apply`: its chunks and their results.
pub struct Job {
    /// Tasks in each chunk.
    pub sizes: Vec<usize>,
    /// Each chunk's state.
    pub slots: Vec<Slot>,
    /// Chunks finished.
    pub done_chunks: usize,
    /// Tasks finished.
    pub done_items: usize,
    /// Tasks submitted.
    pub items: usize,
    /// No more chunks will be added.
    pub sealed: bool,
    /// Finished chunks not yet taken, in the order they finished (kept
    /// only for jobs consumed out of order).
    pub finished: VecDeque<usize>,
    unordered: bool,
    /// Whether some finished chunk had a failed task.
    pub any_failed: bool,
    /// Its handle is gone: results are dropped as they come.
    abandoned: bool,
    /// Runs when the job completes (a job submitted with callbacks).
    hook: Option<Hook>,
    /// Its callback is running (or waits for the lock to be released).
    in_callback: bool,
}

impl Job {
    /// Every chunk finished and no more will come.
    pub fn complete(&self) -> bool {
        self.sealed && self.done_chunks == self.slots.len()
    }

    /// Complete, and its callback (if any) has returned.
    pub fn settled(&self) -> bool {
        self.complete() && self.hook.is_none() && !self.in_callback
    }

    /// Takes chunk `ordinal`'s result if it is finished.
    pub fn take(&mut self, ordinal: usize) -> Option<Result<Payload, TaskError>> {
        match std::mem::replace(&mut self.slots[ordinal], Slot::Taken) {
            Slot::Done(r) => Some(r),
            other => {
                self.slots[ordinal] = other;
                None
            }
        }
    }
}

struct InFlight {
    job: u64,
    ordinal: usize,
    frame: Arc<RawFrame>,
}

/// A chunk given to a worker.
struct Sent {
    chunk: u64,
    at: Instant,
    /// The sequence number of its message (see [`Board`]).
    seq: u32,
}

struct Worker {
    key: u64,
    pid: i32,
    process: Process<()>,
    pidfd: Arc<OwnedFd>,
    conn: Arc<Connection>,
    board: Board,
    /// Frames not yet (fully) written.
    outbox: Outbox,
    /// Chunks sent (or in the outbox), oldest first.
    outstanding: VecDeque<Sent>,
    /// Messages put in its outbox so far (the sequence number of the last).
    sent_seq: u32,
    /// Chunks were taken back from it: it gets no new ones until it
    /// replies (it is stuck on a long chunk).
    robbed: bool,
    /// Chunks given to it in its life.
    assigned: usize,
    last_done: Instant,
    stopping: bool,
    dead: bool,
    init_error: Option<String>,
}

/// Everything behind the pool's lock.
pub struct State {
    cfg: Config,
    workers: Vec<Worker>,
    queue: VecDeque<u64>,
    inflight: IdMap<InFlight>,
    /// The jobs, by number.
    pub jobs: IdMap<Job>,
    next_job: u64,
    next_worker: u64,
    driving: bool,
    wake_pending: bool,
    /// Threads waiting in [`Shared::wait_until`] (not the background
    /// driver).
    waiters: usize,
    /// When such a thread last ran a step.
    user_stepped: Option<Instant>,
    /// Threads asleep on the `changed` condition variable.
    sleepers: usize,
    /// No new jobs.
    pub closed: bool,
    /// Stopped by `terminate`.
    pub terminated: bool,
    broken: Option<TaskError>,
    init_failures: usize,
    chunk_ns: f64,
    /// Callbacks of completed jobs, to run once the lock is released.
    callbacks: Vec<(u64, Callback)>,
    /// Buffers of finished chunks' frames, for later chunks.
    spare: Vec<Vec<u8>>,
}

/// The pool's state and the means to wait on it, shared by the pool and
/// every handle.
pub struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Where the background driver stands by (see
    /// [`drive_in_background`](Shared::drive_in_background)): woken only
    /// when the pool is finished, not by every step.
    standby: Condvar,
    wake_rx: OwnedFd,
    wake_tx: OwnedFd,
    next_chunk: AtomicU64,
    /// The driver's spin before it sleeps, while replies are due.
    spin: Spin,
    /// Async tasks waiting on the pool, woken with `changed`.
    #[cfg(feature = "tokio")]
    wakers: Mutex<Vec<std::task::Waker>>,
    /// A thread drives the pool all the time (a spawn pool).
    #[cfg(feature = "tokio")]
    background: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// A pool with no workers yet.
    pub fn new(cfg: Config) -> std::io::Result<Arc<Shared>> {
        let (wake_rx, wake_tx) = sys::socket::stream_pair()?;
        Ok(Arc::new(Shared {
            state: Mutex::new(State {
                cfg,
                workers: Vec::new(),
                queue: VecDeque::new(),
                inflight: IdMap::default(),
                jobs: IdMap::default(),
                next_job: 1,
                next_worker: 1,
                driving: false,
                wake_pending: false,
                waiters: 0,
                user_stepped: None,
                sleepers: 0,
                closed: false,
                terminated: false,
                broken: None,
                init_failures: 0,
                chunk_ns: 1_000_000.0,
                callbacks: Vec::new(),
                spare: Vec::new(),
            }),
            changed: Condvar::new(),
            standby: Condvar::new(),
            wake_rx,
            wake_tx,
            next_chunk: AtomicU64::new(1),
            spin: Spin::new(&wait::SHARED),
            #[cfg(feature = "tokio")]
            wakers: Mutex::new(Vec::new()),
            #[cfg(feature = "tokio")]
            background: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Wakes the threads (and async tasks) waiting for the state to change.
    fn notify_changed(&self) {
        self.changed.notify_all();
        self.notify_async();
    }

    /// Wakes the async tasks waiting on the pool (none without the
    /// `tokio` feature).
    fn notify_async(&self) {
        #[cfg(feature = "tokio")]
        for w in std::mem::take(&mut *lock(&self.wakers)) {
            w.wake();
        }
    }

    /// Has `waker` woken at the next change of the state (`pool/aio.rs`).
    #[cfg(feature = "tokio")]
    pub fn wake_on_change(&self, waker: &std::task::Waker) {
        let mut wakers = lock(&self.wakers);
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Records that a thread drives the pool all the time.
    #[cfg(feature = "tokio")]
    pub fn set_background(&self) {
        self.background.store(true, Ordering::Relaxed);
    }

    /// Whether a thread drives the pool all the time.
    #[cfg(feature = "tokio")]
    pub fn background(&self) -> bool {
        self.background.load(Ordering::Relaxed)
    }

    /// Starts the initial workers; the first failure is returned.
    pub fn start_workers(&self) -> Result<(), StartError> {
        let mut st = self.lock();
        while st.workers.len() < st.cfg.processes {
            let w = st.start_worker()?;
            st.workers.push(w);
        }
        Ok(())
    }

    /// A fresh chunk number.
    pub fn chunk_id(&self) -> u64 {
        self.next_chunk.fetch_add(1, Ordering::Relaxed)
    }

    /// Frames one chunk: its number, the runner and target, the arguments.
    pub fn encode_chunk<T: serde::Serialize>(
        &self,
        call: wire::Call,
        items: &[T],
    ) -> (u64, Result<RawFrame, TaskError>) {
        self.encode_chunk_in(call, items, Vec::new())
    }

    /// The buffer of a finished chunk's frame, to encode another chunk in
    /// (its pages are in memory already), or an empty one.
    pub fn spare_frame(&self) -> Vec<u8> {
        self.lock().spare.pop().unwrap_or_default()
    }

    /// [`encode_chunk`](Self::encode_chunk) into the allocation of `bytes`.
    pub fn encode_chunk_in<T: serde::Serialize>(
        &self,
        call: wire::Call,
        items: &[T],
        mut bytes: Vec<u8>,
    ) -> (u64, Result<RawFrame, TaskError>) {
        let id = self.chunk_id();
        // Room for plain values (8 bytes each), so that they need no
        // reallocation.
        bytes.clear();
        bytes.reserve(FRAME_ROOM + 64 + 8 * items.len());
        let frame = codec::encode_with(bytes, FRAME_ROOM, |out| {
            codec::append_to(&(id, call.runner, call.target), out)
                .and_then(|()| codec::append_seq(items, out))
                .map_err(crate::error::CodecError::Encode)
        })
        .map_err(|e| TaskError::Encode(e.to_string()))
            .and_then(|enc| {
                let len = enc.bytes.len() - FRAME_ROOM;
                if len > crate::connection::DEFAULT_MAX_FRAME {
                    Err(TaskError::Encode(format!(
                        "a chunk of {len} bytes exceeds the message cap of {} bytes; use a smaller chunk size",
                        crate::connection::DEFAULT_MAX_FRAME
                    )))
                } else {
                    Ok(frame_encoded(enc))
                }
            });
        (id, frame)
    }

    /// Opens a job; refused once the pool is closed.
    pub fn new_job(&self, unordered: bool) -> Result<u64, super::PoolError> {
        self.new_job_with(unordered, None)
    }

    /// Opens a job whose `hook` runs when it completes.
    pub fn new_job_with(
        &self,
        unordered: bool,
        hook: Option<Hook>,
    ) -> Result<u64, super::PoolError> {
        let mut st = self.lock();
        let closed = st.closed;
        let id = super::api::next_job_id(&mut st.next_job, closed)?;
        st.jobs.insert(
            id,
            Job {
                sizes: Vec::new(),
                slots: Vec::new(),
                done_chunks: 0,
                done_items: 0,
                items: 0,
                sealed: false,
                finished: VecDeque::new(),
                any_failed: false,
                unordered,
                abandoned: false,
                hook,
                in_callback: false,
            },
        );
        Ok(id)
    }

    /// Adds chunks (tasks per chunk, number, frame) to a job and sends what
    /// the workers can take; `seal` says no more will come.
    pub fn add_chunks(
        &self,
        job: u64,
        chunks: Vec<(usize, u64, Result<RawFrame, TaskError>)>,
        seal: bool,
    ) {
        let mut st = self.lock();
        let stopped = if st.terminated {
            Some(TaskError::Terminated)
        } else {
            st.broken.clone()
        };
        let mut finished_now = false;
        for (len, id, frame) in chunks {
            let Some(j) = st.jobs.get_mut(&job) else {
                return;
            };
            let ordinal = j.slots.len();
            j.sizes.push(len);
            j.items += len;
            let frame = match (frame, stopped.clone()) {
                (Ok(f), None) => f,
                (Ok(_), Some(e)) | (Err(e), _) => {
                    j.slots.push(Slot::Done(Err(e)));
                    j.done_chunks += 1;
                    j.done_items += len;
                    j.any_failed = true;
                    if j.unordered {
                        j.finished.push_back(ordinal);
                    }
                    finished_now = true;
                    continue;
                }
            };
            j.slots.push(Slot::Pending);
            st.inflight.insert(
                id,
                InFlight {
                    job,
                    ordinal,
                    frame: Arc::new(frame),
                },
            );
            st.queue.push_back(id);
        }
        if seal && let Some(j) = st.jobs.get_mut(&job) {
            j.sealed = true;
            finished_now |= j.complete();
        }
        st.check_hook(job);
        st.dispatch(false);
        // Also when the driver sleeps while replies to come may be caught
        // by its spin (the worker answers through shared memory).
        if st.workers.len() < st.cfg.processes
            || st.workers.iter().any(|w| !w.outbox.is_empty())
            || st.reply_due_soon(Instant::now())
        {
            self.wake(&mut st);
        }
        let st = self.run_callbacks(st);
        drop(st);
        if finished_now {
            self.notify_changed();
        }
    }

    /// The job's handle is gone: its tasks still run (as in Python), their
    /// results are dropped.
    pub fn abandon(&self, job: u64) {
        let mut st = self.lock();
        let remove = match st.jobs.get_mut(&job) {
            // Its callback still runs when it completes, as in Python.
            Some(j) if j.hook.is_some() || j.in_callback => {
                j.sealed = true;
                false
            }
            Some(j) => {
                j.sealed = true;
                j.abandoned = true;
                j.finished.clear();
                for s in &mut j.slots {
                    if matches!(s, Slot::Done(_)) {
                        *s = Slot::Taken;
                    }
                }
                j.complete()
            }
            None => false,
        };
        if remove {
            st.jobs.remove(&job);
        }
        self.wake(&mut st);
        drop(st);
        self.notify_changed();
    }

    /// Runs the callbacks of jobs that completed, without the lock; then
    /// the jobs are settled (and their handles' waits end).
    fn run_callbacks<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if st.callbacks.is_empty() {
            return st;
        }
        let calls = std::mem::take(&mut st.callbacks);
        drop(st);
        let mut ids = Vec::with_capacity(calls.len());
        for (id, call) in calls {
            // A panicking callback must not stop the pool (its message is
            // printed by the panic hook).
            let _ = catch_unwind(AssertUnwindSafe(call));
            ids.push(id);
        }
        let mut st = self.lock();
        for id in ids {
            st.jobs.remove(&id);
        }
        self.notify_changed();
        st
    }

    /// Wakes the thread driving the pool, if one waits.
    fn wake(&self, st: &mut State) {
        if st.driving && !st.wake_pending {
            st.wake_pending = true;
            let _ = sys::socket::try_send(self.wake_tx.as_fd(), &[IoSlice::new(&[1])], &[]);
        }
    }

    /// Stops accepting jobs; the workers exit once the work is done.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        self.wake(&mut st);
        drop(st);
        self.notify_changed();
        self.standby.notify_all();
    }

    /// Kills every worker at once and fails every unfinished task with
    /// [`TaskError::Terminated`].
    pub fn terminate(&self) {
        let mut st = self.lock();
        st.closed = true;
        if !st.terminated {
            st.terminated = true;
            for w in &st.workers {
                let _ = w.process.kill();
            }
            let workers = std::mem::take(&mut st.workers);
            for mut w in workers {
                let _ = w.process.join_timeout(Duration::from_secs(5));
            }
            st.fail_all(TaskError::Terminated);
        }
        self.wake(&mut st);
        let st = self.run_callbacks(st);
        drop(st);
        self.notify_changed();
        self.standby.notify_all();
    }

    /// Waits until `done` holds (it may take results out of the state), or
    /// until `deadline`; drives the pool meanwhile when nobody else does.
    /// Returns the locked state and whether `done` held.
    pub fn wait_until(
        &self,
        done: impl FnMut(&mut State) -> bool,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'_, State>, bool) {
        let mut st = self.lock();
        st.waiters += 1;
        let (mut st, held) = self.wait_inner(st, done, deadline, false);
        st.waiters -= 1;
        if st.finished() {
            // The background driver need not stand by its grace out (a
            // join waits for it).
            self.standby.notify_all();
        }
        (st, held)
    }

    /// [`wait_until`](Self::wait_until) for the background thread of a
    /// spawn pool: it drives only while no other thread waits on the pool
    /// and none has driven it for [`GRACE`], so that a thread waiting for
    /// its results drives the pool itself (and catches a reply with its
    /// own spin, without a hand-over between two threads).
    pub fn drive_in_background(&self, done: impl FnMut(&mut State) -> bool) {
        let st = self.lock();
        drop(self.wait_inner(st, done, None, true));
    }

    fn wait_inner<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        mut done: impl FnMut(&mut State) -> bool,
        deadline: Option<Instant>,
        background: bool,
    ) -> (MutexGuard<'a, State>, bool) {
        loop {
            if done(&mut st) {
                return (st, true);
            }
            let stand_by = background
                && (st.waiters > 0 || st.user_stepped.is_some_and(|t| t.elapsed() < GRACE));
            if !st.driving && !stand_by {
                st = match catch_unwind(AssertUnwindSafe(|| self.step(st, deadline))) {
                    Ok(st) => st,
                    Err(p) => {
                        // A bug outside the step's own guards: fail every
                        // task rather than leave the pool marked as driven.
                        let mut st = self.lock();
                        st.internal_failure(p);
                        st.driving = false;
                        self.notify_changed();
                        st
                    }
                };
                if !background {
                    st.user_stepped = Some(Instant::now());
                }
                if done(&mut st) {
                    return (st, true);
                }
            } else if stand_by {
                // Not on `changed`: the steps of the threads that drive
                // meanwhile need not wake this one.
                st = self
                    .standby
                    .wait_timeout(st, GRACE)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            } else {
                let now = Instant::now();
                if deadline.is_none_or(|d| now < d) {
                    let wait = deadline.map_or(MAX_WAIT, |d| (d - now).min(MAX_WAIT));
                    st.sleepers += 1;
                    st = self
                        .changed
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    st.sleepers -= 1;
                    continue;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return (st, false);
            }
        }
    }

    /// One round of driving (see the module docs).
    fn step<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        st.driving = true;
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| {
            st.maintain();
            st.dispatch(true);
        })) {
            st.internal_failure(p);
        }
        let watch: Vec<(u64, Arc<Connection>, Arc<OwnedFd>, bool)> = st
            .workers
            .iter()
            .map(|w| {
                let write = w.outbox.waits_for_socket(&w.conn);
                (w.key, w.conn.clone(), w.pidfd.clone(), write)
            })
            .collect();
        let ring_full = st
            .workers
            .iter()
            .any(|w| !w.outbox.is_empty() && !w.outbox.waits_for_socket(&w.conn));
        let mut buffered = st.workers.iter().any(|w| w.conn.has_buffered());
        // Replies are due from workers that may answer within the spin.
        let spin = !buffered && st.reply_due_soon(Instant::now());
        let steal_at = st.next_steal();
        drop(st);
        // A reply caught by the spin is taken in without a poll (the next
        // step polls). Caught means a whole message can be received: a
        // ring record alone may wait behind a large frame still coming on
        // the socket, and a step that skipped the poll for it would never
        // read that frame.
        let mut caught = false;
        if spin {
            let conns = || {
                watch
                    .iter()
                    .any(|(_, c, _, _)| c.ring_has_data() && c.has_buffered())
            };
            caught = self.spin.until_if(true, conns, Deadline::at(deadline));
            buffered = caught;
        }
        if !buffered {
            // Not `any`: every connection is asked for its doorbell.
            buffered = watch
                .iter()
                .fold(false, |b, (_, c, _, _)| c.ready_or_arm() | b);
        }

        let now = Instant::now();
        let timeout = if buffered {
            Duration::ZERO
        } else {
            let wait =
                deadline.map_or(MAX_WAIT, |d| d.saturating_duration_since(now).min(MAX_WAIT));
            let wait = if ring_full {
                wait.min(RING_RETRY)
            } else {
                wait
            };
            steal_at.map_or(wait, |t| wait.min(t.saturating_duration_since(now)))
        };
        let mut interest: Vec<Interest<'_>> = Vec::with_capacity(1 + 2 * watch.len());
        interest.push(Interest {
            fd: self.wake_rx.as_fd(),
            write: false,
        });
        for (_, conn, pidfd, write) in &watch {
            interest.push(Interest {
                fd: conn.as_fd(),
                write: *write,
            });
            interest.push(Interest {
                fd: pidfd.as_fd(),
                write: false,
            });
        }
        let ready = if caught {
            vec![(false, false); interest.len()]
        } else {
            sys::poll::wait_events(&interest, Some(timeout))
                .unwrap_or_else(|_| vec![(false, false); interest.len()])
        };
        drop(interest);

        let mut st = self.lock();
        if ready[0].0 {
            let mut buf = [0u8; 64];
            while matches!(sys::socket::read(self.wake_rx.as_fd(), &mut buf, true), Ok(n) if n > 0)
            {
            }
            st.wake_pending = false;
        }
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| {
            for (i, (key, conn, _, _)) in watch.iter().enumerate() {
                let (readable, writable) = ready[1 + 2 * i];
                let exited = ready[2 + 2 * i].0;
                if readable || writable || exited || conn.has_buffered() {
                    st.service(*key, readable, writable, exited);
                }
            }
            st.maintain();
            st.dispatch(true);
        })) {
            st.internal_failure(p);
        }
        st.driving = false;
        if st.sleepers > 0 {
            self.notify_changed();
        } else {
            self.notify_async();
        }
        self.run_callbacks(st)
    }
}

impl State {
    /// Whether the pool has nothing left to do and no worker left: closed
    /// and idle, terminated, or broken.
    pub fn finished(&self) -> bool {
        self.terminated
            || (self.broken.is_some() && self.workers.is_empty())
            || (self.closed && self.idle() && self.workers.is_empty())
    }

    /// Process ids of the workers alive.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty() && self.jobs.values().all(|j| j.sealed)
    }

    fn start_worker(&mut self) -> Result<Worker, StartError> {
        let (ours, theirs) = pipe()?;
        let board = Board::new()?;
        let key = self.next_worker;
        self.next_worker += 1;
        let process = (self.cfg.start)(theirs, board.clone(), key)?;
        let pidfd = match process.pidfd() {
            Some(fd) => sys::socket::dup(fd)?,
            None => return Err(StartError::Io(std::io::Error::other("worker has no pidfd"))),
        };
        Ok(Worker {
            key,
            pid: process.pid().unwrap_or(0),
            process,
            pidfd: Arc::new(pidfd),
            conn: Arc::new(ours),
            board,
            outbox: Outbox::new(),
            outstanding: VecDeque::new(),
            sent_seq: 0,
            robbed: false,
            assigned: 0,
            last_done: Instant::now(),
            stopping: false,
            dead: false,
            init_error: None,
        })
    }

    /// Starts missing workers, or stops them all once closed and idle.
    fn maintain(&mut self) {
        if self.terminated || self.broken.is_some() {
            return;
        }
        if self.closed && self.idle() {
            for w in &mut self.workers {
                if !w.stopping && w.outstanding.is_empty() {
                    w.stopping = true;
                    let stop = codec::encode(&(wire::STOP, 0isize, 0isize), FRAME_ROOM)
                        .expect("plain values encode");
                    w.push(Arc::new(frame_encoded(stop)));
                    flush(w);
                }
            }
            return;
        }
        while self.workers.len() < self.cfg.processes {
            match self.start_worker() {
                Ok(w) => self.workers.push(w),
                Err(e) => {
                    self.init_failures += 1;
                    if self.init_failures >= init_failure_limit(self.cfg.processes) {
                        self.break_pool(TaskError::Broken(format!("cannot start a worker: {e}")));
                    }
                    return;
                }
            }
        }
    }

    fn window(&self) -> usize {
        ((QUEUED_NS / self.chunk_ns.max(1.0)) as usize).clamp(MIN_WINDOW, MAX_WINDOW)
    }

    /// Gives queued chunks to the least busy workers with room, and writes.
    /// With `steal`, a worker left idle takes back the chunks that wait
    /// behind a long one in another worker (see [`State::steal`]).
    fn dispatch(&mut self, steal: bool) {
        loop {
            if !self.queue.is_empty() {
                self.assign();
            }
            if !(steal && self.queue.is_empty() && self.steal(Instant::now())) {
                break;
            }
        }
        for w in &mut self.workers {
            if !w.outbox.is_empty() {
                flush(w);
            }
        }
    }

    /// Whether worker `w` may be given another chunk now.
    fn can_take(&self, w: &Worker, window: usize) -> bool {
        !w.stopping
            && !w.dead
            && !w.robbed
            && w.outstanding.len() < window
            && self.cfg.maxtasks.is_none_or(|m| w.assigned < m)
    }

    /// Moves queued chunks to the workers with the fewest outstanding.
    fn assign(&mut self) {
        let window = self.window();
        let now = Instant::now();
        while let Some(&id) = self.queue.front() {
            let Some(i) = (0..self.workers.len())
                .filter(|&i| self.can_take(&self.workers[i], window))
                .min_by_key(|&i| self.workers[i].outstanding.len())
            else {
                break;
            };
            self.queue.pop_front();
            let Some(inf) = self.inflight.get(&id) else {
                continue;
            };
            let frame = inf.frame.clone();
            let w = &mut self.workers[i];
            let seq = w.push(frame);
            w.outstanding.push_back(Sent {
                chunk: id,
                at: now,
                seq,
            });
            w.assigned += 1;
        }
    }

    /// A worker that could take a chunk has none, and none is queued.
    fn someone_idle(&self) -> bool {
        let window = self.window();
        self.workers
            .iter()
            .any(|w| w.outstanding.is_empty() && self.can_take(w, window))
    }

    /// Whether a worker answering through shared memory is expected to
    /// reply within [`SPIN_AHEAD_NS`] (or is already late), so that the
    /// driver's spin may catch the reply.
    fn reply_due_soon(&self, now: Instant) -> bool {
        let ahead = Duration::from_nanos((self.chunk_ns - SPIN_AHEAD_NS).max(0.0) as u64);
        self.workers.iter().any(|w| {
            w.outstanding.front().is_some_and(|s| {
                w.conn.spin_may_pay()
                    && now.saturating_duration_since(s.at.max(w.last_done)) >= ahead
            })
        })
    }

    /// Since when worker `w` has run its oldest outstanding chunk (as far
    /// as the pool can tell), if it holds chunks it has not started.
    fn stuck_since(w: &Worker) -> Option<Instant> {
        if w.dead || w.stopping || w.outstanding.len() < 2 {
            return None;
        }
        let last = w.outstanding.back().expect("not empty").seq;
        if seq_le(last, w.board.claimed()) {
            return None;
        }
        Some(
            w.outstanding
                .front()
                .expect("not empty")
                .at
                .max(w.last_done),
        )
    }

    /// When the next [`steal`](Self::steal) could take something, if a
    /// worker is idle now.
    fn next_steal(&self) -> Option<Instant> {
        if !self.queue.is_empty() || !self.someone_idle() {
            return None;
        }
        self.workers
            .iter()
            .filter_map(Self::stuck_since)
            .min()
            .map(|t| t + STEAL_AFTER)
    }

    /// With nothing queued and a worker idle, takes back the chunks not yet
    /// started by a worker whose current chunk has run for [`STEAL_AFTER`]
    /// (the worker skips them, see [`Board`]) and queues them again, in
    /// order, at the front. Whether anything was taken.
    fn steal(&mut self, now: Instant) -> bool {
        if !self.someone_idle() {
            return false;
        }
        let Some(victim) = self
            .workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| Self::stuck_since(w).map(|t| (i, t)))
            .filter(|&(_, t)| now.saturating_duration_since(t) >= STEAL_AFTER)
            .min_by_key(|&(_, t)| t)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let w = &mut self.workers[victim];
        let claimed = w.board.revoke(w.sent_seq);
        let keep = w
            .outstanding
            .iter()
            .position(|s| !seq_le(s.seq, claimed))
            .unwrap_or(w.outstanding.len());
        let taken: Vec<u64> = w.outstanding.drain(keep..).map(|s| s.chunk).collect();
        w.assigned -= taken.len();
        // Until it replies to what it kept (if it started anything).
        w.robbed = !w.outstanding.is_empty();
        for &c in taken.iter().rev() {
            self.queue.push_front(c);
        }
        !taken.is_empty()
    }

    /// Takes in what happened to worker `key`.
    fn service(&mut self, key: u64, readable: bool, writable: bool, exited: bool) {
        let Some(idx) = self.workers.iter().position(|w| w.key == key) else {
            return;
        };
        // Taken out while the state is borrowed, and put back in its place:
        // the order of the workers is the order in which idle ones get
        // work, so a run of single tasks keeps going to the same worker
        // (still spinning for the next one) while the others sleep.
        let mut w = self.workers.remove(idx);
        if readable || w.conn.has_buffered() {
            self.read_replies(&mut w, readable);
        }
        if (writable || !w.outbox.is_empty()) && !w.dead {
            flush(&mut w);
        }
        if exited || w.dead {
            w.dead = true;
            self.read_replies(&mut w, true);
            self.bury(w);
        } else {
            self.workers.insert(idx, w);
        }
    }

    /// Takes in the worker's replies: while some are buffered, and first
    /// one look at the connection if `look` (it polled readable, or the
    /// worker is dead and everything it sent must be read).
    fn read_replies(&mut self, w: &mut Worker, look: bool) {
        // One clock read for the replies that arrived together.
        let now = Instant::now();
        let mut look = look;
        loop {
            if !look && !w.conn.has_buffered() {
                return;
            }
            look = w.dead;
            match w.conn.recv_encoded_whole(Some(Duration::ZERO)) {
                Ok((payload, at, fds)) => self.on_reply(w, payload, at, fds, now),
                Err(RecvError::Timeout) => return,
                Err(_) => {
                    w.dead = true;
                    return;
                }
            }
        }
    }

    /// Takes in a reply whose payload starts at `at` in `payload`.
    fn on_reply(
        &mut self,
        w: &mut Worker,
        payload: Vec<u8>,
        at: usize,
        fds: Vec<OwnedFd>,
        now: Instant,
    ) {
        let Ok(((chunk, kind, all_ok), rest)) =
            codec::decode_payload::<(u64, u8, bool)>(&payload[at..], Vec::new())
        else {
            // Not our protocol: treat the worker as broken.
            w.dead = true;
            return;
        };
        let start = payload.len() - rest.len();
        let text = || {
            codec::decode_payload::<String>(rest, Vec::new())
                .map(|(s, _)| s)
                .unwrap_or_default()
        };
        if kind == wire::INIT_FAILED {
            w.init_error = Some(format!("the initializer panicked: {}", text()));
            return;
        }
        self.init_failures = 0;
        w.robbed = false;
        if let Some(pos) = w.outstanding.iter().position(|s| s.chunk == chunk) {
            let sent = w.outstanding.remove(pos).expect("position is valid").at;
            let sample = now.duration_since(sent.max(w.last_done)).as_nanos() as f64;
            w.last_done = now;
            self.chunk_ns = self.chunk_ns * 0.875 + sample * 0.125;
        }
        let result = match kind {
            wire::DONE => Ok(Payload {
                bytes: payload,
                start,
                fds,
                all_ok,
            }),
            wire::BAD_ARGS => Err(TaskError::Decode(text())),
            wire::BAD_RESULT => Err(TaskError::Encode(text())),
            other => Err(TaskError::Decode(format!("unknown reply kind {other}"))),
        };
        self.finish_chunk(chunk, result);
    }

    fn finish_chunk(&mut self, chunk: u64, result: Result<Payload, TaskError>) {
        let Some(inf) = self.inflight.remove(&chunk) else {
            return;
        };
        self.keep_frame(inf.frame);
        let Some(job) = self.jobs.get_mut(&inf.job) else {
            return;
        };
        let failed = !matches!(&result, Ok(p) if p.all_ok);
        job.any_failed |= failed;
        job.done_chunks += 1;
        job.done_items += job.sizes[inf.ordinal];
        if job.abandoned {
            job.slots[inf.ordinal] = Slot::Taken;
            if job.complete() {
                self.jobs.remove(&inf.job);
            }
        } else {
            job.slots[inf.ordinal] = Slot::Done(result);
            if job.unordered {
                job.finished.push_back(inf.ordinal);
            }
            self.check_hook(inf.job);
        }
    }

    /// Keeps the buffer of a finished chunk's frame for a later chunk (see
    /// [`Shared::spare_frame`]) if no outbox holds the frame any more, it
    /// carries no descriptors, and its size is worth it.
    fn keep_frame(&mut self, frame: Arc<RawFrame>) {
        if self.spare.len() >= SPARE_FRAMES {
            return;
        }
        if let Ok(f) = Arc::try_unwrap(frame)
            && f.fds.is_empty()
            && SPARE_CAPACITY.contains(&f.bytes.capacity())
        {
            self.spare.push(f.bytes);
        }
    }

    /// Runs the hook of job `id` if it has just completed; its callback
    /// waits in `callbacks`.
    fn check_hook(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if !job.complete() {
            return;
        }
        if let Some(hook) = job.hook.take() {
            job.in_callback = true;
            let call = hook(job);
            self.callbacks.push((id, call));
        }
    }

    /// A worker died (or was told to stop and did): settle its chunks.
    fn bury(&mut self, mut w: Worker) {
        reap(&mut w.process);
        let exit = match w.process.exitcode() {
            Some(c) if c < 0 => WorkerExit::Signal(-c),
            Some(c) => WorkerExit::Code(c),
            None => WorkerExit::Code(-1),
        };
        let status = w.board.get();
        let held: Vec<u64> = w.outstanding.drain(..).map(|s| s.chunk).collect();
        if status == INIT {
            self.init_failures += 1;
            let message = w
                .init_error
                .take()
                .unwrap_or_else(|| format!("worker process {} {exit} in the initializer", w.pid));
            for &c in held.iter().rev() {
                self.queue.push_front(c);
            }
            if self.init_failures >= init_failure_limit(self.cfg.processes) {
                self.break_pool(TaskError::Initializer { message });
            }
            return;
        }
        for &c in held.iter().rev() {
            if c == status {
                self.finish_chunk(c, Err(TaskError::WorkerDied { pid: w.pid, exit }));
            } else {
                self.queue.push_front(c);
            }
        }
    }

    /// Fails every unfinished chunk with `error`.
    fn fail_all(&mut self, error: TaskError) {
        self.queue.clear();
        for w in &mut self.workers {
            w.outstanding.clear();
            w.outbox.clear();
        }
        let ids: Vec<u64> = self.inflight.keys().copied().collect();
        for id in ids {
            self.finish_chunk(id, Err(error.clone()));
        }
    }

    /// Gives up: kills the workers, fails all work, refuses new work.
    fn break_pool(&mut self, error: TaskError) {
        self.broken = Some(error.clone());
        for w in &self.workers {
            let _ = w.process.kill();
        }
        for mut w in std::mem::take(&mut self.workers) {
            let _ = w.process.join_timeout(Duration::from_secs(5));
        }
        self.fail_all(error);
    }

    /// A bug in the engine: fail loudly through every task rather than hang.
    fn internal_failure(&mut self, panic: Box<dyn std::any::Any + Send>) {
        let message = format!("internal error: {}", wire::panic_message(panic));
        self.break_pool(TaskError::Broken(message));
    }
}

impl Worker {
    /// Puts a message in the outbox; returns its sequence number.
    fn push(&mut self, frame: Arc<RawFrame>) -> u32 {
        self.outbox.push(frame);
        self.sent_seq = self.sent_seq.wrapping_add(1);
        self.sent_seq
    }
}

/// Waits for a worker that is ending (its connection closed) to exit,
/// killing it if it lingers; its exit status is then known.
fn reap(p: &mut Process<()>) {
    if matches!(
        p.join_timeout(Duration::from_millis(200)),
        Err(crate::error::JoinError::Timeout(_))
    ) {
        let _ = p.kill();
        let _ = p.join_timeout(Duration::from_secs(5));
    }
}

/// Writes what the worker's connection takes of its outbox, without
/// waiting.
fn flush(w: &mut Worker) {
    if w.outbox.flush(&w.conn).is_err() {
        // The worker is gone; its death is handled when seen.
        w.dead = true;
    }
}
