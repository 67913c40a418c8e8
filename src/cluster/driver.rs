//! The driver of a cluster pool: the task table, the queryable workers
//! pull from, and the liveliness watch that fails a lost worker's tasks.
//!
//! # Task states
//!
//! | state | held in | leaves by |
//! | --- | --- | --- |
//! | queued | `queue` and `tasks` | a pull assigns it (held) |
//! | held by `w` (assigned at pull `seq`), not started | `tasks`, `workers[w].running` (`false`) | `w` starts it (running); a result (settled); `w`'s token vanishing (queued again, not charged); a later pull of `w` that neither holds it nor carries its result (`w` handed it back, its task having run past the give-back time; or the reply never reached `w`: queued again, not charged, and offered to the parked pulls at once) |
//! | running on `w` | `tasks`, `workers[w].running` (`true`) | a result (settled); `w`'s token vanishing (queued again if the task has retries left, else settled with `HostLost`) |
//! | settled | the job's `done` table | the caller takes it |
//!
//! A result is accepted for a task that is queued or running, from any
//! worker, and settles it; any other result (late, duplicate, unknown) is
//! dropped and counted. So every task ends with exactly one result, and a
//! task may run more than once (at-least-once execution) only when its
//! worker was declared lost while it ran it and it had retries left, or
//! when a worker declared lost was in fact still running it. There is no
//! redelivery on a timer: a task that runs for hours is never run twice
//! while its worker lives.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zenoh::Wait;
use zenoh::query::Query;
use zenoh::sample::{Sample, SampleKind};

use super::ClusterError;
use super::net::{Session, decode_query};
use super::wire::{Assign, Pull, TaskMsg};
use crate::pool::remote::{self, ChunkOutcome, ItemOutcome, NetCodec, Runner};
use crate::pool::{PoolError, TaskError};
use crate::process::fn_ref::{self, FnRef, RawFnRef};

/// How long a pull waits at the driver for work before it is answered
/// [`Assign::Idle`].
pub(crate) const PARK: Duration = Duration::from_secs(1);
/// Envelope bytes allowed above the payload cap in a pull.
const ENVELOPE: usize = 64 << 10;
/// Chunks an imap keeps in flight.
pub(crate) const IMAP_AHEAD: usize = 256;

/// An encoded chunk ready for the table: its item count and
/// `(runner, target, args)`, or why it could not be encoded.
pub(crate) type Chunk = (usize, Result<(FnRef<Runner>, RawFnRef, Vec<u8>), NetCodec>);

/// A settled task: its item count and outcome.
pub(crate) type Settled = (usize, Result<Vec<ItemOutcome>, TaskError>);

pub(crate) struct Job {
    pub done: HashMap<usize, Settled>,
    pub finished: VecDeque<usize>,
    unordered: bool,
    pub submitted: usize,
    pub settled: usize,
    pub sealed: bool,
    pub done_items: usize,
    abandoned: bool,
}

impl Job {
    pub fn complete(&self) -> bool {
        self.sealed && self.settled == self.submitted
    }
}

pub(crate) struct Task {
    job: u64,
    ordinal: usize,
    len: usize,
    msg: TaskMsg,
    retries_left: u32,
    running: Option<(String, u64)>,
}

struct Parked {
    query: Query,
    until: Instant,
    seq: u64,
    want: usize,
}

/// The most tasks one pull takes.
const MAX_WANT: usize = 64;

struct WorkerState {
    host: String,
    /// The tasks it holds, and whether it started each.
    running: HashMap<u64, bool>,
    parked: Option<Parked>,
}

pub(crate) struct State {
    next_task: u64,
    next_job: u64,
    queue: VecDeque<u64>,
    pub tasks: HashMap<u64, Task>,
    pub jobs: HashMap<u64, Job>,
    workers: HashMap<String, WorkerState>,
    pub seen: HashSet<String>,
    lost: HashSet<String>,
    pub closed: bool,
    terminated: bool,
    pub dropped: u64,
    /// Since when no worker is left (after some had joined).
    orphaned: Option<Instant>,
    orphan_timeout: Duration,
}

type Replies = Vec<(Query, Assign)>;

pub(crate) struct Handles {
    pub _queryable: zenoh::query::Queryable<()>,
    pub _subscriber: zenoh::pubsub::Subscriber<()>,
    pub _started: zenoh::pubsub::Subscriber<()>,
    pub _token: zenoh::liveliness::LivelinessToken,
}

pub(crate) struct Driver {
    /// Keeps the session open while the pool lives.
    _session: Session,
    state: Mutex<State>,
    cond: Condvar,
    pub cap: usize,
    retries: u32,
    handles: Mutex<Option<Handles>>,
}

fn send(replies: Replies, cap: usize) {
    for (q, a) in replies {
        match remote::encode(&a, cap + ENVELOPE) {
            Ok(bytes) => {
                let _ = q.reply(q.key_expr().clone(), bytes).wait();
            }
            Err(e) => {
                let _ = q.reply_err(format!("{e:?}")).wait();
            }
        }
    }
}

/// A zenoh callback handing each event to the driver while it lives: it
/// holds the driver weakly, so the driver's own subscriptions do not keep
/// it alive.
fn to_driver<E>(
    driver: &Arc<Driver>,
    on: impl Fn(&Driver, E) + Send + Sync + 'static,
) -> impl Fn(E) + Send + Sync + 'static {
    let weak = Arc::downgrade(driver);
    move |event| {
        if let Some(d) = weak.upgrade() {
            on(&d, event);
        }
    }
}

impl Driver {
    /// Starts a driver on `session`: its liveliness watch on the workers,
    /// its queryable, its own token and its ticker thread.
    pub fn start(session: &Session) -> Result<(Arc<Driver>, JoinHandle<()>, String), PoolError> {
        let id = crate::sys::random::hex(8)?;
        let driver = Arc::new(Driver {
            _session: session.clone(),
            state: Mutex::new(State {
                next_task: 1,
                next_job: 1,
                queue: VecDeque::new(),
                tasks: HashMap::new(),
                jobs: HashMap::new(),
                workers: HashMap::new(),
                seen: HashSet::new(),
                lost: HashSet::new(),
                closed: false,
                terminated: false,
                dropped: 0,
                orphaned: None,
                orphan_timeout: session.inner.orphan_timeout,
            }),
            cond: Condvar::new(),
            cap: session.max_payload(),
            retries: session.inner.retries,
            handles: Mutex::new(None),
        });
        let z = session.z();
        let zerr = |e: zenoh::Error| PoolError::Cluster(ClusterError::Zenoh(e.to_string()));
        let subscriber = z
            .liveliness()
            .declare_subscriber(session.key("worker/*"))
            .history(true)
            .callback(to_driver(&driver, |d, sample: Sample| {
                if let Some(w) = worker_of(sample.key_expr().as_str()) {
                    d.on_token(w, sample.kind() == SampleKind::Put);
                }
            }))
            .wait()
            .map_err(zerr)?;
        let queryable = z
            .declare_queryable(session.key(&format!("pool/{id}/work")))
            .callback(to_driver(&driver, |d, query: Query| d.on_pull(query)))
            .wait()
            .map_err(zerr)?;
        let started = z
            .declare_subscriber(session.key(&format!("pool/{id}/started")))
            .callback(to_driver(&driver, |d, sample: Sample| {
                d.on_started(&sample.payload().to_bytes());
            }))
            .wait()
            .map_err(zerr)?;
        let token = z
            .liveliness()
            .declare_token(session.key(&format!("pool/{id}")))
            .wait()
            .map_err(zerr)?;
        *driver.handles.lock().unwrap_or_else(|e| e.into_inner()) = Some(Handles {
            _queryable: queryable,
            _subscriber: subscriber,
            _started: started,
            _token: token,
        });
        let weak: Weak<Driver> = Arc::downgrade(&driver);
        let ticker = std::thread::Builder::new()
            .name("multiproc-cluster".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let Some(d) = weak.upgrade() else { return };
                    if d.lock().terminated {
                        return;
                    }
                    d.tick();
                }
            })?;
        Ok((driver, ticker, id))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done` holds or `deadline`; the guard and whether it
    /// holds.
    pub fn wait_until(
        &self,
        mut done: impl FnMut(&mut State) -> bool,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'_, State>, bool) {
        let mut st = self.lock();
        loop {
            if done(&mut st) {
                return (st, true);
            }
            let wait = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return (st, false);
                    }
                    d - now
                }
                None => Duration::from_secs(3600),
            };
            st = self
                .cond
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn on_pull(&self, query: Query) {
        let Some(pull) = decode_query::<Pull>(&query, self.cap + ENVELOPE, "pull") else {
            return;
        };
        let mut out = Replies::new();
        {
            let mut st = self.lock();
            st.started(&pull.worker, &pull.started);
            let got = !pull.results.is_empty();
            for d in pull.results {
                st.accept(d.task, d.outcome);
            }
            let ask = Ask {
                worker: &pull.worker,
                host: &pull.host,
                seq: pull.seq,
                held: &pull.held,
                holding: pull.holding,
                want: (pull.want as usize).min(MAX_WANT),
            };
            let answer = st.answer(&ask, query, &mut out);
            if let Some((q, a)) = answer {
                out.push((q, a));
            }
            // Tasks the pull handed back (or that never reached the
            // worker) go to the workers waiting now.
            st.dispatch(&mut out);
            if got {
                self.cond.notify_all();
            }
        }
        send(out, self.cap);
    }

    /// A [`Started`](super::wire::Started) notice (ignored if it does
    /// not decode: the task then counts as not started).
    fn on_started(&self, bytes: &[u8]) {
        if let Ok(n) = remote::decode::<super::wire::Started>(bytes, ENVELOPE) {
            self.lock().started(&n.worker, &n.tasks);
        }
    }

    fn on_token(&self, worker: &str, alive: bool) {
        let mut out = Replies::new();
        {
            let mut st = self.lock();
            if alive {
                if !st.lost.contains(worker) {
                    st.seen.insert(worker.to_string());
                }
            } else {
                st.worker_lost(worker, &mut out);
                st.dispatch(&mut out);
                self.cond.notify_all();
            }
        }
        send(out, self.cap);
    }

    fn tick(&self) {
        let mut out = Replies::new();
        {
            let mut st = self.lock();
            let now = Instant::now();
            if st.orphans(now) {
                self.cond.notify_all();
            }
            for w in st.workers.values_mut() {
                if w.parked.as_ref().is_some_and(|p| p.until <= now)
                    && let Some(p) = w.parked.take()
                {
                    out.push((p.query, Assign::Idle));
                }
            }
        }
        send(out, self.cap);
    }

    pub fn new_job(&self, unordered: bool) -> Result<u64, PoolError> {
        let mut st = self.lock();
        let closed = st.closed || st.terminated;
        let id = crate::pool::api::next_job_id(&mut st.next_job, closed)?;
        st.jobs.insert(
            id,
            Job {
                done: HashMap::new(),
                finished: VecDeque::new(),
                unordered,
                submitted: 0,
                settled: 0,
                sealed: false,
                done_items: 0,
                abandoned: false,
            },
        );
        Ok(id)
    }

    /// Adds encoded chunks to `job` (sealing it when `last`).
    pub fn add_chunks(&self, job: u64, chunks: Vec<Chunk>, last: bool) {
        let mut out = Replies::new();
        {
            let mut st = self.lock();
            for (len, c) in chunks {
                let Some(j) = st.jobs.get_mut(&job) else {
                    break;
                };
                let ordinal = j.submitted;
                j.submitted += 1;
                match c {
                    Err(e) => st.settle(job, ordinal, len, Err(e.into_task_error())),
                    Ok(_) if st.terminated => {
                        st.settle(job, ordinal, len, Err(TaskError::Terminated))
                    }
                    Ok((runner, target, args)) => {
                        let id = st.next_task;
                        st.next_task += 1;
                        let msg = TaskMsg {
                            task: id,
                            fingerprint: fn_ref::binary_fingerprint(),
                            runner,
                            target,
                            cap: self.cap as u64,
                            args,
                        };
                        st.tasks.insert(
                            id,
                            Task {
                                job,
                                ordinal,
                                len,
                                msg,
                                retries_left: self.retries,
                                running: None,
                            },
                        );
                        st.queue.push_back(id);
                    }
                }
            }
            if last && let Some(j) = st.jobs.get_mut(&job) {
                j.sealed = true;
            }
            st.dispatch(&mut out);
            self.cond.notify_all();
        }
        send(out, self.cap);
    }

    /// The caller no longer wants `job`'s results.
    pub fn abandon(&self, job: u64) {
        let mut st = self.lock();
        // Tasks of the job still queued will not run: nobody wants them.
        let st = &mut *st;
        let queued: HashSet<u64> = st
            .queue
            .iter()
            .copied()
            .filter(|id| st.tasks.get(id).is_some_and(|t| t.job == job))
            .collect();
        if !queued.is_empty() {
            st.queue.retain(|id| !queued.contains(id));
            for id in queued {
                if let Some(t) = st.tasks.remove(&id) {
                    st.settle(t.job, t.ordinal, t.len, Err(TaskError::Terminated));
                }
            }
        }
        if let Some(j) = st.jobs.get_mut(&job) {
            j.abandoned = true;
            j.done.clear();
            j.finished.clear();
            j.sealed = true;
            if j.complete() {
                st.jobs.remove(&job);
            }
        }
    }

    pub fn close(&self) {
        let mut out = Replies::new();
        {
            let mut st = self.lock();
            st.closed = true;
            if st.tasks.is_empty() {
                st.unpark_all(Assign::Closed, &mut out);
            }
            self.cond.notify_all();
        }
        send(out, self.cap);
    }

    pub fn terminate(&self) {
        let mut out = Replies::new();
        {
            let mut st = self.lock();
            st.closed = true;
            st.terminated = true;
            st.queue.clear();
            let ids: Vec<u64> = st.tasks.keys().copied().collect();
            for id in ids {
                if let Some(t) = st.tasks.remove(&id) {
                    st.settle(t.job, t.ordinal, t.len, Err(TaskError::Terminated));
                }
            }
            for w in st.workers.values_mut() {
                w.running.clear();
            }
            st.unpark_all(Assign::Closed, &mut out);
            self.cond.notify_all();
        }
        send(out, self.cap);
        let handles = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(handles);
    }
}

impl State {
    /// Fails the queued tasks once every worker has been gone for the
    /// orphan timeout; whether it did.
    fn orphans(&mut self, now: Instant) -> bool {
        if self.queue.is_empty() || !self.seen.is_empty() || self.lost.is_empty() {
            self.orphaned = None;
            return false;
        }
        let since = *self.orphaned.get_or_insert(now);
        if now.duration_since(since) < self.orphan_timeout {
            return false;
        }
        let why = format!(
            "every worker of the cluster was lost and none joined within {:?}",
            self.orphan_timeout
        );
        for id in std::mem::take(&mut self.queue) {
            if let Some(t) = self.tasks.remove(&id) {
                self.settle(t.job, t.ordinal, t.len, Err(TaskError::Broken(why.clone())));
            }
        }
        self.orphaned = None;
        true
    }

    fn accept(&mut self, task: u64, outcome: ChunkOutcome) {
        let Some(t) = self.tasks.remove(&task) else {
            self.dropped += 1;
            return;
        };
        match &t.running {
            Some((w, _)) => {
                if let Some(ws) = self.workers.get_mut(w) {
                    ws.running.remove(&task);
                }
            }
            None => self.queue.retain(|x| *x != task),
        }
        let result = match outcome {
            ChunkOutcome::Ran(items) if items.len() == t.len => Ok(items),
            ChunkOutcome::Ran(_) => Err(TaskError::Decode(
                "the worker sent a different number of results than tasks".into(),
            )),
            ChunkOutcome::BadArgs(m) => Err(TaskError::Decode(m)),
            ChunkOutcome::WrongBinary => Err(TaskError::Broken(
                "the worker runs a different build of the program".into(),
            )),
        };
        self.settle(t.job, t.ordinal, t.len, result);
    }

    fn settle(
        &mut self,
        job: u64,
        ordinal: usize,
        len: usize,
        result: Result<Vec<ItemOutcome>, TaskError>,
    ) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        j.settled += 1;
        j.done_items += len;
        if j.abandoned {
            if j.complete() {
                self.jobs.remove(&job);
            }
            return;
        }
        j.done.insert(ordinal, (len, result));
        if j.unordered {
            j.finished.push_back(ordinal);
        }
    }

    /// `worker` started `tasks` (those it holds).
    fn started(&mut self, worker: &str, tasks: &[u64]) {
        if let Some(w) = self.workers.get_mut(worker) {
            for t in tasks {
                if let Some(s) = w.running.get_mut(t) {
                    *s = true;
                }
            }
        }
    }

    /// The answer to a pull (or `None`: parked).
    fn answer(
        &mut self,
        ask: &Ask<'_>,
        query: Query,
        out: &mut Replies,
    ) -> Option<(Query, Assign)> {
        let (worker, host, seq) = (ask.worker, ask.host, ask.seq);
        if self.terminated || (self.closed && self.tasks.is_empty()) {
            return Some((query, Assign::Closed));
        }
        if self.lost.contains(worker) {
            return Some((query, Assign::Refused));
        }
        if !self.seen.contains(worker) {
            return Some((query, Assign::Unknown));
        }
        let w = self
            .workers
            .entry(worker.to_string())
            .or_insert_with(|| WorkerState {
                host: host.to_string(),
                running: HashMap::new(),
                parked: None,
            });
        if let Some(p) = w.parked.take() {
            out.push((p.query, Assign::Idle));
        }
        // Tasks assigned to an earlier pull that this pull neither holds
        // nor reports never reached the worker (it has one pull on its way
        // at a time, so it had every earlier answer that reached it):
        // queue them again, uncharged.
        let mut undelivered: Vec<u64> = w
            .running
            .keys()
            .copied()
            .filter(|id| {
                !ask.held.contains(id)
                    && self
                        .tasks
                        .get(id)
                        .and_then(|t| t.running.as_ref())
                        .is_some_and(|(_, s)| *s < seq)
            })
            .collect();
        undelivered.sort_unstable();
        for id in undelivered.iter().rev() {
            w.running.remove(id);
            if let Some(t) = self.tasks.get_mut(id) {
                t.running = None;
                self.queue.push_front(*id);
            }
        }
        let msgs = self.assign_up_to(ask.want, worker, seq);
        if !msgs.is_empty() {
            return Some((query, Assign::Tasks(msgs)));
        }
        if ask.want == 0 || ask.holding > 0 {
            // It must come back to report what it holds: never parked.
            return Some((query, Assign::Idle));
        }
        if let Some(w) = self.workers.get_mut(worker) {
            w.parked = Some(Parked {
                query,
                until: Instant::now() + PARK,
                seq,
                want: ask.want,
            });
        }
        None
    }

    /// Assigns up to `want` queued tasks to `worker`'s pull `seq`.
    fn assign_up_to(&mut self, want: usize, worker: &str, seq: u64) -> Vec<TaskMsg> {
        let mut msgs = Vec::new();
        while msgs.len() < want {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            if let Some(m) = self.assign(id, worker, seq) {
                msgs.push(m);
            }
        }
        msgs
    }

    fn assign(&mut self, id: u64, worker: &str, seq: u64) -> Option<TaskMsg> {
        let t = self.tasks.get_mut(&id)?;
        t.running = Some((worker.to_string(), seq));
        if let Some(w) = self.workers.get_mut(worker) {
            w.running.insert(id, false);
        }
        Some(t.msg.clone())
    }

    /// Hands queued tasks to parked pulls.
    fn dispatch(&mut self, out: &mut Replies) {
        if self.queue.is_empty() {
            if self.closed && self.tasks.is_empty() {
                self.unpark_all(Assign::Closed, out);
            }
            return;
        }
        let parked: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.parked.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for name in parked {
            if self.queue.is_empty() {
                break;
            }
            let Some(p) = self.workers.get_mut(&name).and_then(|w| w.parked.take()) else {
                continue;
            };
            let msgs = self.assign_up_to(p.want, &name, p.seq);
            if msgs.is_empty() {
                out.push((p.query, Assign::Idle));
            } else {
                out.push((p.query, Assign::Tasks(msgs)));
            }
        }
    }

    fn unpark_all(&mut self, a: Assign, out: &mut Replies) {
        for w in self.workers.values_mut() {
            if let Some(p) = w.parked.take() {
                out.push((p.query, clone_assign(&a)));
            }
        }
    }

    fn worker_lost(&mut self, worker: &str, out: &mut Replies) {
        self.seen.remove(worker);
        self.lost.insert(worker.to_string());
        let Some(w) = self.workers.remove(worker) else {
            return;
        };
        if let Some(p) = w.parked {
            out.push((p.query, Assign::Refused));
        }
        let mut ids: Vec<(u64, bool)> = w.running.into_iter().collect();
        ids.sort_unstable();
        for (id, started) in ids.into_iter().rev() {
            let Some(t) = self.tasks.get_mut(&id) else {
                continue;
            };
            if !started {
                // Held but never started: not charged.
                t.running = None;
                self.queue.push_front(id);
            } else if t.retries_left > 0 {
                t.retries_left -= 1;
                t.running = None;
                self.queue.push_front(id);
            } else if let Some(t) = self.tasks.remove(&id) {
                let e = TaskError::HostLost {
                    host: w.host.clone(),
                    worker: worker.to_string(),
                };
                self.settle(t.job, t.ordinal, t.len, Err(e));
            }
        }
    }
}

/// What a pull asks, beside its results.
struct Ask<'a> {
    worker: &'a str,
    host: &'a str,
    seq: u64,
    held: &'a [u64],
    holding: u32,
    want: usize,
}

fn worker_of(key: &str) -> Option<&str> {
    key.rsplit('/').next()
}

fn clone_assign(a: &Assign) -> Assign {
    match a {
        Assign::Tasks(t) => Assign::Tasks(t.clone()),
        Assign::Idle => Assign::Idle,
        Assign::Unknown => Assign::Unknown,
        Assign::Refused => Assign::Refused,
        Assign::Closed => Assign::Closed,
    }
}
