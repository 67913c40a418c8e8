//! Worker mode: the program's own executable serving cluster pools.
//!
//! A worker holds a liveliness token `ns/worker/<id>` and pulls one task at
//! a time from the live pools (found by their tokens `ns/pool/<id>`),
//! reporting each result in its next pull (see `wire`). It runs the
//! functions of its own copy of the program, so it must be the same build
//! as the driver (a task from another build is refused).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zenoh::Wait;
use zenoh::sample::SampleKind;

use super::driver::PARK;
use super::net::Session;
use super::wire::{Assign, Done, Pull, TaskMsg};
use super::{ClusterConfig, ClusterError, ENV_WORKER};
use crate::pool::remote::{self, ChunkOutcome};
use crate::process::fn_ref;

/// Environment variable: a worker started by [`ENV_WORKER`] exits once
/// no pool has been live for this many milliseconds.
pub const ENV_IDLE_EXIT_MS: &str = "MULTIPROC_CLUSTER_IDLE_EXIT_MS";

/// How long a worker keeps a result whose pool's token vanished, in case
/// its own link was what failed and the pool comes back into view.
const RESULT_GRACE: Duration = Duration::from_secs(15);

/// How a worker behaves (see [`serve`]).
///
/// ```
/// use std::time::Duration;
/// use multiproc::cluster::WorkerOptions;
/// let o = WorkerOptions::new().idle_exit(Duration::from_secs(30));
/// # let _ = o;
/// ```
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    idle_exit: Option<Duration>,
}

impl WorkerOptions {
    /// Serve forever (until the process is stopped).
    pub fn new() -> Self {
        Self::default()
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
    Worker::new(session)?.run(options.idle_exit)
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

fn run_worker_and_exit() -> ! {
    let idle = std::env::var(ENV_IDLE_EXIT_MS)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let mut options = WorkerOptions::new();
    if let Some(d) = idle {
        options = options.idle_exit(d);
    }
    let code = match ClusterConfig::from_env().and_then(|c| serve(&c, options)) {
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

    fn run(mut self, idle_exit: Option<Duration>) -> Result<(), ClusterError> {
        let cap = self.session.max_payload();
        let mut seq = 0u64;
        let mut pending: Option<(String, Done)> = None;
        let mut rr = 0usize;
        let mut backoff = Duration::from_millis(10);
        let mut last_pool = Instant::now();
        let mut closed: HashMap<String, Instant> = HashMap::new();
        let mut orphaned: Option<Instant> = None;
        loop {
            let pools = self.live_pools();
            let now = Instant::now();
            match &pending {
                Some((p, _)) if !pools.contains(p) => {
                    // Its pool's token is gone: the driver ended, or this
                    // session lost its link and is joining again (the token
                    // comes back then). Keep the result a while.
                    let since = *orphaned.get_or_insert(now);
                    if now.duration_since(since) >= RESULT_GRACE {
                        pending = None;
                        orphaned = None;
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
                _ => orphaned = None,
            }
            closed.retain(|_, until| *until > now);
            let open: Vec<&String> = pools.iter().filter(|p| !closed.contains_key(*p)).collect();
            if !pools.is_empty() {
                last_pool = now;
            }
            let pool = match &pending {
                Some((p, _)) => p.clone(),
                None if open.is_empty() => {
                    if idle_exit.is_some_and(|d| last_pool.elapsed() >= d) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                None => {
                    rr = rr.wrapping_add(1);
                    open[rr % open.len()].clone()
                }
            };
            seq += 1;
            let results = match &pending {
                Some((_, d)) => vec![Done {
                    task: d.task,
                    outcome: d.outcome.clone(),
                }],
                None => Vec::new(),
            };
            let pull = Pull {
                worker: self.id.clone(),
                host: self.session.host().to_string(),
                seq,
                results,
            };
            let bytes = match remote::encode(&pull, cap + (64 << 10)) {
                Ok(b) => b,
                Err(_) => {
                    // Cannot happen: results were capped when made.
                    pending = None;
                    continue;
                }
            };
            let key = self.session.key(&format!("pool/{pool}/work"));
            let reply = self
                .session
                .ask(&key, bytes, PARK + Duration::from_secs(10));
            let Ok(Some(reply)) = reply else {
                // No answer: the pool is going, or the network is slow.
                // Results stay pending while the pool's token lives.
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            };
            pending = None;
            let assign: Assign = match remote::decode(&reply, cap + (64 << 10)) {
                Ok(a) => a,
                Err(_) => continue,
            };
            match assign {
                Assign::Tasks(tasks) => {
                    backoff = Duration::from_millis(10);
                    // One task per pull (the driver sends no more).
                    if let Some(t) = tasks.into_iter().next() {
                        let task = t.task;
                        let outcome = run_task(t, cap);
                        pending = Some((pool, Done { task, outcome }));
                    }
                }
                Assign::Idle => backoff = Duration::from_millis(10),
                Assign::Unknown => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Assign::Refused => self.rejoin()?,
                Assign::Closed => {
                    closed.insert(pool, Instant::now() + Duration::from_millis(500));
                }
            }
        }
    }
}

fn run_task(t: TaskMsg, cap: usize) -> ChunkOutcome {
    // A function reference is only sound in the build it was taken in.
    if t.fingerprint != fn_ref::binary_fingerprint() {
        return ChunkOutcome::WrongBinary;
    }
    let cap = cap.min(usize::try_from(t.cap).unwrap_or(usize::MAX));
    (t.runner.get())(t.target, &t.args, cap)
}
