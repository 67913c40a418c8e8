//! [`ClusterPool`]: the local pool's API over a cluster driver.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ClusterConfig;
use super::driver::{Chunk, Driver, IMAP_AHEAD};
use super::handle::{ClusterAsyncResult, ClusterImap, ClusterMapResult};
use super::net::Session;
use crate::pool::api;
use crate::pool::imap::{Feed, Stream};
use crate::pool::remote::{self, Runner};
use crate::pool::{PoolError, StarFn, TaskError};
use crate::process::fn_ref::{FnRef, RawFnRef};

/// A pool whose workers are processes anywhere in a cluster (Ray's and
/// Dask's step beyond `multiprocessing.Pool`), made by
/// [`Pool::cluster`](crate::Pool::cluster).
///
/// It has the local pool's methods; the differences:
///
/// * Workers are separate processes that join by themselves (see
///   [`serve`](super::serve)); the pool does not start them.
///   [`wait_for_workers`](Self::wait_for_workers) waits until some have
///   joined; tasks submitted before any has simply wait.
/// * A worker whose liveliness token vanishes (its process died, its host
///   or its link went down: noticed within the session lease) fails the
///   tasks it was running with [`TaskError::HostLost`], naming the host,
///   unless they have retries left ([`ClusterConfig::task_retries`],
///   default 0; only running tasks are charged). The tasks it held
///   without having started them ([`WorkerOptions::prefetch`](super::WorkerOptions::prefetch))
///   go back to the queue uncharged; other tasks are not affected.
/// * **At-least-once execution, exactly one result per task**: a task runs
///   again only after its worker was declared lost; whichever result
///   arrives first is the task's, and any later one is dropped (counted by
///   [`dropped_results`](Self::dropped_results)). Nothing is ever redelivered
///   because it took long.
/// * Handles (file descriptors) cannot travel between hosts: arguments or
///   values holding them fail with [`TaskError::Encode`]; payloads over the
///   cap fail with [`TaskError::TooLarge`].
/// * The driver keeps the task table: if the driver's process dies, its
///   pool ends (as in Python); workers drop its tasks and serve other
///   pools.
///
/// ```no_run
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::cluster("tcp/10.0.0.1:7447")?;
/// let squares: Vec<u64> = pool.imap(square, 0..1_000_000u64)?.map(Result::unwrap).collect();
/// assert_eq!(squares[3], 9);
/// # Ok::<(), multiproc::PoolError>(())
/// ```
pub struct ClusterPool {
    driver: Arc<Driver>,
    ticker: Mutex<Option<JoinHandle<()>>>,
    id: String,
}

impl std::fmt::Debug for ClusterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPool").field("id", &self.id).finish()
    }
}

impl crate::pool::Pool {
    /// A pool whose workers run anywhere in the cluster given by `config`
    /// (an endpoint such as `"tcp/10.0.0.1:7447"`, or a
    /// [`ClusterConfig`]; [`ClusterConfig::from_env`] reads
    /// `MULTIPROC_CLUSTER`). See [`ClusterPool`].
    pub fn cluster(config: impl Into<ClusterConfig>) -> Result<ClusterPool, PoolError> {
        let session = config.into().open()?;
        ClusterPool::with_session(&session)
    }
}

impl ClusterPool {
    /// A cluster pool on an open session (which can also carry network
    /// channels).
    pub fn with_session(session: &Session) -> Result<ClusterPool, PoolError> {
        let (driver, ticker, id) = Driver::start(session)?;
        Ok(ClusterPool {
            driver,
            ticker: Mutex::new(Some(ticker)),
            id,
        })
    }

    /// The workers whose liveliness tokens this pool sees now.
    pub fn workers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.driver.lock().seen.iter().cloned().collect();
        v.sort();
        v
    }

    /// Waits until at least `n` workers are seen, or `timeout`; how many
    /// are.
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.driver.lock().seen.len();
            if seen >= n || Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Results that arrived for tasks already settled (late or duplicate)
    /// and were dropped.
    pub fn dropped_results(&self) -> u64 {
        self.driver.lock().dropped
    }

    fn chunks<T: Serialize>(
        &self,
        runner: FnRef<Runner>,
        target: RawFnRef,
        items: &[T],
        chunksize: usize,
    ) -> Vec<Chunk> {
        let cap = self.driver.cap;
        items
            .chunks(chunksize)
            .map(|c| (c.len(), remote::encode(c, cap).map(|b| (runner, target, b))))
            .collect()
    }

    fn submit<T: Serialize>(
        &self,
        runner: FnRef<Runner>,
        target: RawFnRef,
        items: &[T],
        chunksize: usize,
    ) -> Result<u64, PoolError> {
        let job = self.driver.new_job(false)?;
        let chunks = self.chunks(runner, target, items, chunksize);
        self.driver.add_chunks(job, chunks, true);
        Ok(job)
    }

    api::submit_methods! {
        map: ClusterMapResult, apply: ClusterAsyncResult, imap: ClusterImap, chunk: "items per task";
        /// Runs `f` on every item in the cluster, values in input order, or
        /// the error of the failed task with the lowest index.
        map;
        /// Submits a map without waiting.
        map_async;
        /// Runs `f(a, b, …)` for every tuple (Python's `starmap`).
        starmap;
        /// Runs `f(args)` on a worker and waits for its value.
        apply;
        /// Results one by one in input order (Python's `imap`). The input is
        /// read lazily, with a bounded number of tasks in flight, so an
        /// endless or huge input works in bounded memory.
        imap;
        /// Results one by one as they finish (Python's `imap_unordered`).
        imap_unordered;
    }

    /// Like [`map`](Self::map), returning every item's own result.
    pub fn map_results<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        Ok(self.map_async(f, items)?.into_results())
    }

    /// Accepts no new work; workers hear the pool is closed once what was
    /// submitted is done.
    pub fn close(&self) {
        self.driver.close();
    }

    /// Fails every unfinished task with [`TaskError::Terminated`] and
    /// leaves the cluster (workers drop what they run for this pool).
    pub fn terminate(&self) {
        self.driver.terminate();
        let t = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    /// After [`close`](Self::close), waits until every task has settled.
    pub fn join(&self) -> Result<(), PoolError> {
        self.join_until(None, Duration::MAX)
    }

    /// Like [`join`](Self::join), giving up with [`PoolError::Timeout`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), PoolError> {
        self.join_until(Instant::now().checked_add(timeout), timeout)
    }

    fn join_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<(), PoolError> {
        if !self.driver.lock().closed {
            return Err(PoolError::NotClosed);
        }
        let (_st, done) = self.driver.wait_until(|st| st.tasks.is_empty(), deadline);
        if done {
            Ok(())
        } else {
            Err(PoolError::Timeout(timeout))
        }
    }
}

impl api::Submit for ClusterPool {
    type Map<R> = ClusterMapResult<R>;
    type Imap<R> = ClusterImap<R>;

    fn workers(&self) -> usize {
        self.driver.lock().seen.len()
    }

    fn submit_map<A: api::Arg, R: api::Ret>(
        &self,
        f: fn(A) -> R,
        items: Vec<A>,
        chunksize: usize,
    ) -> Result<ClusterMapResult<R>, PoolError> {
        let runner: Runner = remote::run_map::<A, R>;
        let job = self.submit(FnRef::new(runner), FnRef::new(f).erase(), &items, chunksize)?;
        Ok(ClusterMapResult::new(self.driver.clone(), job, items.len()))
    }

    fn submit_star<F: StarFn<T>, T: Serialize>(
        &self,
        f: F,
        items: Vec<T>,
        chunksize: usize,
    ) -> Result<ClusterMapResult<F::Output>, PoolError> {
        // The runner carries the function in its type; the target is
        // unused (see `pool::star`).
        let runner = FnRef::new(f.cluster_runner());
        let job = self.submit(runner, runner.erase(), &items, chunksize)?;
        Ok(ClusterMapResult::new(self.driver.clone(), job, items.len()))
    }

    fn open_imap<A: api::Arg, R: api::Ret>(
        &self,
        f: fn(A) -> R,
        mut input: api::Chunks<A>,
        ordered: bool,
        total: Option<usize>,
    ) -> Result<ClusterImap<R>, PoolError> {
        let runner: Runner = remote::run_map::<A, R>;
        let (runner, target) = (FnRef::new(runner), FnRef::new(f).erase());
        let cap = self.driver.cap;
        let feed: Feed<Driver> = Box::new(move |_: &Driver| {
            let chunk = input()?;
            let encoded = remote::encode(&chunk, cap).map(|b| (runner, target, b));
            Some((chunk.len(), encoded))
        });
        let job = self.driver.new_job(!ordered)?;
        Ok(ClusterImap::new(Stream::new(
            self.driver.clone(),
            job,
            ordered,
            feed,
            total,
            IMAP_AHEAD,
        )))
    }
}

impl Drop for ClusterPool {
    fn drop(&mut self) {
        self.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterError, NetChannel};

    fn router() -> Session {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        ClusterConfig::listen(format!("tcp/127.0.0.1:{port}"))
            .open()
            .expect("a loopback router")
    }

    fn double(x: u64) -> u64 {
        2 * x
    }

    #[test]
    fn garbage_and_oversized_pulls_are_refused_and_the_driver_goes_on() {
        let s = router();
        let pool = ClusterPool::with_session(&s).unwrap();
        let key = s.key(&format!("pool/{}/work", pool.id));
        let r = s.ask(&key, vec![0xff; 64], Duration::from_secs(10));
        assert!(
            matches!(&r, Err(ClusterError::Zenoh(m)) if m.contains("bad pull")),
            "{r:?}"
        );
        let big = vec![0u8; s.max_payload() + (128 << 10)];
        let r = s.ask(&key, big, Duration::from_secs(10));
        assert!(
            matches!(&r, Err(ClusterError::Zenoh(_)) | Ok(None)),
            "{r:?}"
        );
        // A well-formed pull from a worker whose token was never seen is
        // told to come back (the token/query ordering race).
        let pull = crate::cluster::wire::Pull {
            worker: "nobody".into(),
            host: "nowhere".into(),
            seq: 1,
            results: Vec::new(),
            started: Vec::new(),
            held: Vec::new(),
            holding: 0,
            want: 1,
        };
        let bytes = remote::encode(&pull, usize::MAX).unwrap();
        let reply = s
            .ask(&key, bytes, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        let a: crate::cluster::wire::Assign = remote::decode(&reply, usize::MAX).unwrap();
        assert!(matches!(a, crate::cluster::wire::Assign::Unknown), "{a:?}");
        // Still accepting work (no worker: it stays queued).
        let r = pool.apply_async(double, 21).unwrap();
        assert!(!r.ready());
    }

    #[test]
    fn a_channel_home_refuses_garbage_and_a_second_home() {
        let s = router();
        let chan: NetChannel<u32> = NetChannel::home(&s, "g").unwrap();
        let r = s.ask(&s.key("chan/g/op"), vec![0xff; 16], Duration::from_secs(10));
        assert!(
            matches!(&r, Err(ClusterError::Zenoh(m)) if m.contains("bad channel")),
            "{r:?}"
        );
        assert!(matches!(
            NetChannel::<u32>::home(&s, "g"),
            Err(ClusterError::Config(m)) if m.contains("already has a home")
        ));
        assert!(matches!(
            NetChannel::<u32>::home(&s, "a/b"),
            Err(ClusterError::Config(_))
        ));
        drop(chan);
    }
}
