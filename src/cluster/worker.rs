//! Worker mode: the program's own executable serving cluster pools.
//!
//! A worker holds a liveliness token `ns/worker/<id>` and pulls tasks from
//! the live pools (found by their tokens `ns/pool/<id>`): it runs one at a
//! time, holds up to its prefetch more, and keeps one pull on its way
//! while it runs, reporting results, starts and what it holds (see
//! `wire`). A task runs on the worker's runner thread while the worker's
//! own loop goes on: once the task has run for the give-back time, the
//! worker hands back what it holds behind it (a pull that no longer holds
//! them), so a long or blocking task never keeps queued work from an idle
//! worker. It runs the
//! functions of its own copy of the program, so it must be the same build
//! as the driver (a task from another build is refused).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zenoh::Wait;
use zenoh::sample::SampleKind;

use super::driver::PARK;
use super::net::{Pending, Session};
use super::wire::{Assign, Done, Pull, Started, TaskMsg};
use super::{ClusterConfig, ClusterError, ENV_WORKER};
use crate::pool::remote::{self, ChunkOutcome};
use crate::process::fn_ref;

/// Environment variable: a worker started by [`ENV_WORKER`] exits once
/// no pool has been live for this many milliseconds.
pub const ENV_IDLE_EXIT_MS: &str = "MULTIPROC_CLUSTER_IDLE_EXIT_MS";

/// Environment variable: the prefetch of a worker started by
/// [`ENV_WORKER`] (see [`WorkerOptions::prefetch`]).
pub const ENV_PREFETCH: &str = "MULTIPROC_CLUSTER_PREFETCH";

/// Environment variable: the give-back time of a worker started by
/// [`ENV_WORKER`], in milliseconds (see [`WorkerOptions::give_back_after`]).
pub const ENV_GIVE_BACK_MS: &str = "MULTIPROC_CLUSTER_GIVE_BACK_MS";

/// Tasks a worker holds beside the one it runs, by default.
pub const DEFAULT_PREFETCH: u32 = 2;

/// How long a task runs before its worker hands back the tasks it holds
/// behind it, by default.
pub const DEFAULT_GIVE_BACK: Duration = Duration::from_millis(100);

/// How often a worker running a task looks at a pull's reply on its way.
const POLL: Duration = Duration::from_millis(2);

/// How long a worker keeps a result whose pool's token vanished, in case
/// its own link was what failed and the pool comes back into view.
const RESULT_GRACE: Duration = Duration::from_secs(15);

/// How a worker behaves (see [`serve`]).
///
/// ```
/// use std::time::Duration;
/// use multiproc::cluster::WorkerOptions;
/// let o = WorkerOptions::new()
///     .idle_exit(Duration::from_secs(30))
///     .prefetch(4)
///     .give_back_after(Duration::from_millis(500));
/// # let _ = o;
/// ```
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    idle_exit: Option<Duration>,
    prefetch: u32,
    give_back: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            idle_exit: None,
            prefetch: DEFAULT_PREFETCH,
            give_back: DEFAULT_GIVE_BACK,
        }
    }
}

impl WorkerOptions {
    /// Serve forever (until the process is stopped), with the default
    /// prefetch.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tasks the worker holds beside the one it runs (default
    /// [`DEFAULT_PREFETCH`], at most 64): it asks for them while it runs,
    /// so a pull's round trip overlaps a task. 0: one task at a time, a
    /// pull after each. Tasks it holds but has not started go back to the
    /// queue, uncharged, if it is lost, or when the task it runs has run
    /// for the give-back time ([`give_back_after`](Self::give_back_after)).
    pub fn prefetch(mut self, tasks: u32) -> Self {
        self.prefetch = tasks.min(64);
        self
    }

    /// Once the task it runs has run this long (default
    /// [`DEFAULT_GIVE_BACK`], 100 ms), the worker hands the tasks it holds
    /// behind it back to their pool, which gives them to the next worker
    /// that asks (it takes no more itself until the task ends). So a long
    /// task, or one that waits for another task of the pool, never keeps
    /// queued work from an idle worker: as in Python's pool, a task waits
    /// only when every worker is busy.
    pub fn give_back_after(mut self, after: Duration) -> Self {
        self.give_back = after;
        self
    }

    /// Return once no pool has been live for `after` (counted from the
    /// start, and from the end of the last pool).
    pub fn idle_exit(mut self, after: Duration) -> Self {
        self.idle_exit = Some(after);
        self
    }
}

/// Serves the cluster pools of `config` in this process: joins the
/// cluster, pulls tasks, runs them, returns their results. Returns only
/// with [`WorkerOptions::idle_exit`], or when the session cannot be
/// opened.
///
/// ```no_run
/// use multiproc::cluster::{ClusterConfig, WorkerOptions, serve};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     if std::env::args().nth(1).as_deref() == Some("worker") {
///         serve(&ClusterConfig::from_env()?, WorkerOptions::new())?;
///         return Ok(());
///     }
///     // … the driver's work …
///     Ok(())
/// }
/// ```
pub fn serve(config: &ClusterConfig, options: WorkerOptions) -> Result<(), ClusterError> {
    let session = config.open()?;
    Worker::new(session)?.run(&options)
}

/// If [`ENV_WORKER`] is `1`, serves the cluster of
/// [`ClusterConfig::from_env`] and exits the process (status 0 after an
/// idle exit, 2 if the cluster could not be joined); otherwise returns at
/// once. The crate calls this before `main` (as it recognises a spawned
/// child), so a program needs no code of its own for worker mode; calling
/// it first thing in `main` does no harm.
pub fn serve_if_worker() {
    if std::env::var_os(ENV_WORKER).is_none_or(|v| v != "1") {
        return;
    }
    run_worker_and_exit()
}

/// The options of a worker started by [`ENV_WORKER`]:
/// [`ENV_IDLE_EXIT_MS`], [`ENV_PREFETCH`] and [`ENV_GIVE_BACK_MS`].
fn options_from_env() -> Result<WorkerOptions, ClusterError> {
    let mut options = WorkerOptions::new();
    if let Some(ms) = std::env::var(ENV_IDLE_EXIT_MS)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options = options.idle_exit(Duration::from_millis(ms));
    }
    if let Ok(v) = std::env::var(ENV_PREFETCH) {
        let n = v.parse().map_err(|_| {
            ClusterError::Config(format!("{ENV_PREFETCH}={v:?} is not a number of tasks"))
        })?;
        options = options.prefetch(n);
    }
    if let Ok(v) = std::env::var(ENV_GIVE_BACK_MS) {
        let ms = v.parse().map_err(|_| {
            ClusterError::Config(format!(
                "{ENV_GIVE_BACK_MS}={v:?} is not a number of milliseconds"
            ))
        })?;
        options = options.give_back_after(Duration::from_millis(ms));
    }
    Ok(options)
}

fn run_worker_and_exit() -> ! {
    let code = match options_from_env().and_then(|o| serve(&ClusterConfig::from_env()?, o)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("multiproc: cluster worker: {e}");
            2
        }
    };
    std::process::exit(code);
}

#[ctor::ctor(unsafe, priority = late)]
fn recognise_cluster_worker() {
    if std::env::var_os(ENV_WORKER).is_none_or(|v| v != "1")
        || std::env::var_os(crate::process::BOOTSTRAP_ENV_KEY).is_some()
    {
        // Not a worker; or a child spawned by one, which runs its target.
        return;
    }
    // Not passed on to the processes the worker's tasks start (a spawned
    // child must run its own target, not serve the cluster).
    crate::sys::process::remove_env_single_threaded(ENV_WORKER);
    run_worker_and_exit()
}

struct Worker {
    session: Session,
    id: String,
    token: Option<zenoh::liveliness::LivelinessToken>,
    pools: Arc<Mutex<Vec<String>>>,
    /// A querier of each live pool's `work` key.
    queriers: HashMap<String, zenoh::query::Querier<'static>>,
    _subscriber: zenoh::pubsub::Subscriber<()>,
}

fn new_id(session: &Session) -> Result<String, ClusterError> {
    let tag = crate::sys::random::hex(4).map_err(|e| ClusterError::Zenoh(e.to_string()))?;
    Ok(format!(
        "{}.{}.{tag}",
        session.host(),
        crate::sys::process::getpid()
    ))
}

impl Worker {
    fn new(session: Session) -> Result<Worker, ClusterError> {
        let pools: Arc<Mutex<Vec<String>>> = Arc::default();
        let p = pools.clone();
        let subscriber = session
            .z()
            .liveliness()
            .declare_subscriber(session.key("pool/*"))
            .history(true)
            .callback(move |sample| {
                let key = sample.key_expr().as_str();
                let Some(id) = key.rsplit('/').next() else {
                    return;
                };
                let mut pools = p.lock().unwrap_or_else(|e| e.into_inner());
                pools.retain(|x| x != id);
                if sample.kind() == SampleKind::Put {
                    pools.push(id.to_string());
                }
            })
            .wait()
            .map_err(|e| ClusterError::Zenoh(e.to_string()))?;
        let mut w = Worker {
            id: String::new(),
            session,
            token: None,
            pools,
            queriers: HashMap::new(),
            _subscriber: subscriber,
        };
        w.rejoin()?;
        Ok(w)
    }

    /// Takes a fresh id and token (at start, and after being declared
    /// lost).
    fn rejoin(&mut self) -> Result<(), ClusterError> {
        self.token = None;
        self.id = new_id(&self.session)?;
        let token = self
            .session
            .z()
            .liveliness()
            .declare_token(self.session.key(&format!("worker/{}", self.id)))
            .wait()
            .map_err(|e| ClusterError::Zenoh(e.to_string()))?;
        self.token = Some(token);
        Ok(())
    }

    fn live_pools(&self) -> Vec<String> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends pull `seq` to `pool`: the results held for it, `started`
    /// (the task this worker starts now, if any), what it holds, and
    /// `want`. `None`: it could not be sent.
    fn send_pull(
        &mut self,
        pool: &str,
        seq: u64,
        started: Option<u64>,
        want: usize,
        local: &VecDeque<(String, TaskMsg)>,
        results: &[(String, Done)],
    ) -> Option<InFlight> {
        // Everything of this pool it holds: waiting, starting now, or done
        // with results not yet acknowledged.
        let held: Vec<u64> = local
            .iter()
            .filter(|(p, _)| p == pool)
            .map(|(_, t)| t.task)
            .chain(started)
            .chain(
                results
                    .iter()
                    .filter(|(p, _)| p == pool)
                    .map(|(_, d)| d.task),
            )
            .collect();
        let mine: Vec<&Done> = results
            .iter()
            .filter(|(p, _)| p == pool)
            .map(|(_, d)| d)
            .take(MAX_RESULTS)
            .collect();
        let mut pull = Pull {
            worker: self.id.clone(),
            host: self.session.host().to_string(),
            seq,
            results: mine
                .iter()
                .map(|d| Done {
                    task: d.task,
                    outcome: d.outcome.clone(),
                })
                .collect(),
            started: started.into_iter().collect(),
            held,
            holding: (local.len() + usize::from(started.is_some())) as u32,
            want: want as u32,
        };
        let limit = self.session.max_payload() + (64 << 10);
        let bytes = match remote::encode(&pull, limit) {
            Ok(b) => b,
            Err(_) => {
                // Each result fits the cap on its own (results are capped
                // when made): send one.
                pull.results.truncate(1);
                remote::encode(&pull, limit).ok()?
            }
        };
        let carried = pull.results.iter().map(|d| d.task).collect();
        let timeout = PARK + Duration::from_secs(10);
        if !self.queriers.contains_key(pool) {
            let key = self.session.key(&format!("pool/{pool}/work"));
            let q = self.session.querier(key, timeout).ok()?;
            self.queriers.insert(pool.to_string(), q);
        }
        let replies = self.queriers.get(pool)?.get().payload(bytes).wait().ok()?;
        let pending = Pending::new(replies, timeout);
        Some(InFlight {
            pool: pool.to_string(),
            carried,
            pending,
        })
    }

    /// Tells `pool` that this worker starts `task` (when no pull can carry
    /// it).
    fn notice(&self, pool: &str, task: u64) {
        let n = Started {
            worker: self.id.clone(),
            tasks: vec![task],
        };
        if let Ok(bytes) = remote::encode(&n, 64 << 10) {
            let key = self.session.key(&format!("pool/{pool}/started"));
            let _ = self.session.z().put(key, bytes).wait();
        }
    }

    fn run(mut self, options: &WorkerOptions) -> Result<(), ClusterError> {
        let cap = self.session.max_payload();
        let prefetch = options.prefetch as usize;
        let runner = TaskThread::start()?;
        let mut seq = 0u64;
        // Tasks held, not started, in order, with their pool.
        let mut local: VecDeque<(String, TaskMsg)> = VecDeque::new();
        // Results no reply has acknowledged yet, with their pool.
        let mut results: Vec<(String, Done)> = Vec::new();
        // The one pull on its way.
        let mut inflight: Option<InFlight> = None;
        // The task the task thread runs.
        let mut current: Option<Current> = None;
        let mut rr = 0usize;
        let mut backoff = Duration::from_millis(10);
        let mut last_pool = Instant::now();
        let mut closed: HashMap<String, Instant> = HashMap::new();
        // Pools whose token vanished while results for them were held.
        let mut missing: HashMap<String, Instant> = HashMap::new();
        loop {
            let pools = self.live_pools();
            let now = Instant::now();
            if !pools.is_empty() {
                last_pool = now;
            }
            // Tasks of a vanished pool are wanted no more. Its results are
            // kept a while: this session may have lost its link and be
            // joining again (the pool's token comes back then).
            local.retain(|(p, _)| pools.contains(p));
            self.queriers.retain(|p, _| pools.contains(p));
            missing.retain(|p, _| !pools.contains(p));
            for (p, _) in &results {
                if !pools.contains(p) {
                    missing.entry(p.clone()).or_insert(now);
                }
            }
            results.retain(|(p, _)| {
                missing
                    .get(p)
                    .is_none_or(|since| now.duration_since(*since) < RESULT_GRACE)
            });
            closed.retain(|_, until| *until > now);

            // The running task's result, waited for while nothing else is
            // due: a reply on its way is looked at every `POLL`, held tasks
            // are handed back at the give-back time.
            if let Some(c) = current.take() {
                let wait = if inflight.is_some() {
                    POLL
                } else if !local.is_empty() {
                    c.give_back_at.saturating_duration_since(now)
                } else {
                    Duration::from_secs(1)
                };
                match runner.done.recv_timeout(wait) {
                    Ok(outcome) => {
                        results.push((
                            c.pool,
                            Done {
                                task: c.task,
                                outcome,
                            },
                        ));
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => current = Some(c),
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(ClusterError::Zenoh("the worker's task thread ended".into()));
                    }
                }
            }

            // The reply to the pull on its way: waited for only when there
            // is nothing to run.
            let reply = match inflight.take() {
                Some(f) if local.is_empty() && current.is_none() => {
                    let InFlight {
                        pool,
                        carried,
                        pending,
                    } = f;
                    Some((pool, carried, pending.wait()))
                }
                Some(f) => match f.pending.poll() {
                    Some(r) => Some((f.pool, f.carried, r)),
                    None => {
                        inflight = Some(f);
                        None
                    }
                },
                None => None,
            };
            if let Some((pool, carried, reply)) = reply {
                let answer = match reply {
                    Ok(Some(bytes)) => {
                        // It reached the driver: the results it carried
                        // are in.
                        results.retain(|(p, d)| !(*p == pool && carried.contains(&d.task)));
                        remote::decode::<Assign>(&bytes, cap + (64 << 10)).ok()
                    }
                    _ => None,
                };
                match answer {
                    Some(Assign::Tasks(tasks)) => {
                        backoff = Duration::from_millis(10);
                        local.extend(tasks.into_iter().map(|t| (pool.clone(), t)));
                    }
                    Some(Assign::Idle) => backoff = Duration::from_millis(10),
                    Some(Assign::Refused) => {
                        // Declared lost: the drivers queued again (or
                        // failed) what this worker held.
                        local.clear();
                        self.rejoin()?;
                    }
                    Some(Assign::Closed) => {
                        local.retain(|(p, _)| *p != pool);
                        closed.insert(pool, Instant::now() + Duration::from_millis(500));
                    }
                    // Not yet known to the driver (its token and the pull
                    // race through the routers), or no answer (the pool is
                    // going, or the network is slow: results stay while the
                    // pool's token lives): try again shortly.
                    Some(Assign::Unknown) | None => {
                        if local.is_empty() && current.is_none() {
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_millis(500));
                        }
                    }
                }
                continue;
            }

            // A task running past the give-back time: hand back, one pool
            // per pull, what it holds behind it. A pull that no longer
            // holds them (but still holds the running task) queues them
            // again at the driver, uncharged; want 0, so the answer comes
            // at once and brings nothing.
            if let Some(c) = current.as_mut() {
                if inflight.is_none() && !local.is_empty() && now >= c.give_back_at {
                    let pool = local[0].0.clone();
                    let (back, keep): (VecDeque<_>, VecDeque<_>) =
                        local.drain(..).partition(|(p, _)| *p == pool);
                    local = keep;
                    let running = (c.pool == pool).then_some(c.task);
                    seq += 1;
                    inflight = self.send_pull(&pool, seq, running, 0, &local, &results);
                    if inflight.is_none() {
                        // Not sent: keep them, and try again a little later.
                        local.extend(back);
                        c.give_back_at = now + Duration::from_millis(100);
                    }
                }
                continue;
            }

            // Run the next task held, telling its pool it starts: in a pull
            // asking for more if none is on its way, else in a notice.
            if let Some((pool, t)) = local.pop_front() {
                let task = t.task;
                let want = prefetch.saturating_sub(local.len());
                let mut told = false;
                if inflight.is_none() && want > 0 {
                    seq += 1;
                    inflight = self.send_pull(&pool, seq, Some(task), want, &local, &results);
                    told = inflight.is_some();
                }
                if !told {
                    self.notice(&pool, task);
                }
                runner.run(t, cap)?;
                current = Some(Current {
                    pool,
                    task,
                    give_back_at: Instant::now() + options.give_back,
                });
                continue;
            }

            // Nothing to run and no pull on its way: pull from a pool with
            // results to report, else from the open pools in turn.
            let open: Vec<&String> = pools.iter().filter(|p| !closed.contains_key(*p)).collect();
            let target = results
                .iter()
                .map(|(p, _)| p)
                .find(|p| pools.contains(p))
                .or_else(|| {
                    (!open.is_empty()).then(|| {
                        rr = rr.wrapping_add(1);
                        open[rr % open.len()]
                    })
                })
                .cloned();
            let Some(pool) = target else {
                if results.is_empty() && idle_exit_due(options, last_pool) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            seq += 1;
            inflight = self.send_pull(&pool, seq, None, prefetch + 1, &local, &results);
            if inflight.is_none() {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// The task a worker's task thread runs.
struct Current {
    pool: String,
    task: u64,
    /// When it hands back the tasks it holds behind this one.
    give_back_at: Instant,
}

/// The thread a worker runs its tasks on, one at a time, so that the
/// worker's own loop goes on (reading replies, handing back held tasks)
/// while a task runs.
struct TaskThread {
    jobs: Sender<(TaskMsg, usize)>,
    done: Receiver<ChunkOutcome>,
}

impl TaskThread {
    fn start() -> Result<TaskThread, ClusterError> {
        let (jobs, job_rx) = mpsc::channel::<(TaskMsg, usize)>();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("multiproc-task".into())
            // The main thread's usual stack: tasks are the program's own
            // functions, written for it.
            .stack_size(8 << 20)
            .spawn(move || {
                for (t, cap) in job_rx {
                    if done_tx.send(run_task(t, cap)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| ClusterError::Connect(format!("cannot start the task thread: {e}")))?;
        Ok(TaskThread { jobs, done })
    }

    fn run(&self, t: TaskMsg, cap: usize) -> Result<(), ClusterError> {
        self.jobs
            .send((t, cap))
            .map_err(|_| ClusterError::Zenoh("the worker's task thread ended".into()))
    }
}

/// Results one pull carries at most.
const MAX_RESULTS: usize = 64;

/// A pull on its way: its pool, the tasks whose results it carries, and
/// its reply.
struct InFlight {
    pool: String,
    carried: Vec<u64>,
    pending: Pending,
}

fn idle_exit_due(options: &WorkerOptions, last_pool: Instant) -> bool {
    options.idle_exit.is_some_and(|d| last_pool.elapsed() >= d)
}

fn run_task(t: TaskMsg, cap: usize) -> ChunkOutcome {
    // A function reference is only sound in the build it was taken in.
    if t.fingerprint != fn_ref::binary_fingerprint() {
        return ChunkOutcome::WrongBinary;
    }
    let cap = cap.min(usize::try_from(t.cap).unwrap_or(usize::MAX));
    (t.runner.get())(t.target, &t.args, cap)
}
