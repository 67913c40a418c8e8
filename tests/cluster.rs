//! The cluster pool across processes on Zenoh (feature `zenoh`).
//!
//! Every host is a separate process started fresh (exec of this test
//! binary in worker mode, `MULTIPROC_CLUSTER_WORKER=1`), sharing only the
//! endpoint of the router embedded in the test process, with a 1 s lease.
//! Every test runs under a watchdog and kills the workers it started.

#![cfg(feature = "zenoh")]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{LIMIT, eventually, watchdog};
use multiproc::cluster::{ClusterConfig, ClusterError, ClusterPool, ENV_ENDPOINT, ENV_WORKER};
use multiproc::{Pool, PoolError, TaskError};

const USER: &str = "tester";
const PASSWORD: &str = "correct horse";
const LEASE: Duration = Duration::from_secs(1);

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

/// The cluster's router (in this process) and its endpoint.
struct Cluster {
    endpoint: String,
    workers: Vec<Child>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            endpoint: format!("tcp/127.0.0.1:{}", free_port()),
            workers: Vec::new(),
        }
    }

    fn config(&self) -> ClusterConfig {
        ClusterConfig::listen(self.endpoint.clone())
            .credentials(USER, PASSWORD)
            .lease(LEASE)
    }

    fn pool(&self, config: ClusterConfig) -> ClusterPool {
        Pool::cluster(config).expect("start the driver and its router")
    }

    /// Starts a worker process: this test binary, fresh, in worker mode.
    fn worker(&mut self) -> u32 {
        self.worker_with(&[])
    }

    /// [`worker`](Self::worker) with more environment variables.
    fn worker_with(&mut self, env: &[(&str, &str)]) -> u32 {
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .envs(env.iter().copied())
            .env(ENV_WORKER, "1")
            .env(ENV_ENDPOINT, &self.endpoint)
            .env(multiproc::cluster::ENV_USER, USER)
            .env(multiproc::cluster::ENV_PASSWORD, PASSWORD)
            .env(multiproc::cluster::ENV_LEASE_MS, "1000")
            .env(multiproc::cluster::ENV_IDLE_EXIT_MS, "20000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a worker");
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    fn signal(&self, pid: u32, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.workers {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: i32, b: i32) -> i32 {
    a + b
}

fn pid_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// A task that starts a local child of its own (spawn start method: a
/// fresh exec of the worker, which must run `square`, not serve).
fn square_in_a_child(x: u64) -> u64 {
    Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn(square, x)
        .unwrap()
        .join()
        .unwrap()
}

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(40));
    x * x
}

fn boom(x: u32) -> u32 {
    if x == 3 {
        panic!("three is right out");
    }
    x
}

fn len_of(v: Vec<u8>) -> usize {
    v.len()
}

fn make_bytes(n: usize) -> Vec<u8> {
    vec![7; n]
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .replace(['/', '*', '$', '?', '#', ' '], "_")
}

#[test]
fn map_imap_starmap_apply_across_two_worker_processes() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config());
        c.worker();
        c.worker();
        assert_eq!(pool.wait_for_workers(2, Duration::from_secs(30)), 2);
        assert_eq!(
            pool.map(square, 0..100u64).unwrap(),
            (0..100u64).map(|x| x * x).collect::<Vec<_>>()
        );
        assert_eq!(pool.starmap(add, [(1, 2), (3, 4)]).unwrap(), vec![3, 7]);
        assert_eq!(pool.apply(square, 12).unwrap(), 144);
        assert_eq!(pool.apply(square_in_a_child, 9).unwrap(), 81);
        let ordered: Vec<u64> = pool
            .imap(square, 0..50u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ordered, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
        let mut unordered: Vec<u64> = pool
            .imap_unordered(square, 0..50u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, ordered);
        // Both workers served (each pulls one task at a time).
        let pids: std::collections::HashSet<u32> = pool
            .map_chunked(pid_after, vec![50u64; 16], 1)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(pids.len(), 2, "{pids:?}");
        // A panic is that item's error only.
        let r = pool.map_results(boom, 0..6u32).unwrap();
        assert!(
            matches!(&r[3], Err(TaskError::Panicked { message }) if message.contains("right out"))
        );
        assert_eq!(r.iter().filter(|x| x.is_ok()).count(), 5);
        assert_eq!(pool.dropped_results(), 0);
    });
}

#[test]
fn imap_keeps_a_bounded_window_over_an_endless_input() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config());
        c.worker();
        assert_eq!(pool.wait_for_workers(1, Duration::from_secs(30)), 1);
        let mut it = pool.imap_chunked(square, 0u64.., 4).unwrap();
        for i in 0..3000u64 {
            assert_eq!(it.next().unwrap().unwrap(), i * i);
            assert!(it.in_flight() <= 256, "{} tasks in flight", it.in_flight());
        }
    });
}

#[test]
fn a_worker_killed_mid_task_fails_exactly_its_task_naming_the_host() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config());
        let a = c.worker();
        assert_eq!(pool.wait_for_workers(1, Duration::from_secs(30)), 1);
        // Worker `a` takes the long task; then `b` joins and does the rest.
        let long = pool.apply_async(pid_after, 60_000).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let b = c.worker();
        assert_eq!(pool.wait_for_workers(2, Duration::from_secs(30)), 2);
        let short = pool.map_chunked(pid_after, vec![1u64; 20], 1).unwrap();
        assert!(short.iter().all(|p| *p == b), "{short:?} {a} {b}");
        let started = Instant::now();
        c.signal(a, "KILL");
        match long.into_value() {
            Err(PoolError::Task {
                error: TaskError::HostLost { host: h, worker },
                ..
            }) => {
                assert_eq!(h, host());
                assert!(worker.contains(&format!(".{a}.")), "{worker}");
            }
            other => panic!("expected HostLost, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(15));
        // The pool goes on with the survivor.
        assert_eq!(pool.map(square, 0..10u64).unwrap()[9], 81);
    });
}

#[test]
fn prefetched_tasks_of_a_killed_worker_are_queued_again_uncharged() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config());
        // Prefetch 2: `a` takes the long task and holds the next two (and
        // keeps them: its give-back time is longer than the test).
        let a = c.worker_with(&[
            (multiproc::cluster::ENV_PREFETCH, "2"),
            (multiproc::cluster::ENV_GIVE_BACK_MS, "600000"),
        ]);
        assert_eq!(pool.wait_for_workers(1, Duration::from_secs(30)), 1);
        let r = pool
            .map_async_chunked(pid_after, vec![60_000u64, 1, 1, 1, 1], 1)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        let b = c.worker();
        // `b` runs the two tasks nobody holds; the two `a` holds wait.
        assert!(
            eventually(Duration::from_secs(30), || r.progress().0 == 2),
            "{:?}",
            r.progress()
        );
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(r.progress().0, 2, "the held tasks stay with their worker");
        c.signal(a, "KILL");
        // The running task fails (no retries); the held ones, never
        // started, run on `b` without being charged.
        let results = r.into_results();
        match &results[0] {
            Err(TaskError::HostLost { worker, .. }) => {
                assert!(worker.contains(&format!(".{a}.")), "{worker}")
            }
            other => panic!("expected HostLost, got {other:?}"),
        }
        assert!(
            results[1..].iter().all(|p| matches!(p, Ok(p) if *p == b)),
            "{results:?} {a} {b}"
        );
    });
}

/// Waits (at most 30 s) for `path` to exist: whether it came, and this
/// process's id.
fn wait_for_file(path: String) -> (bool, u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::path::Path::new(&path).exists() {
        if Instant::now() > deadline {
            return (false, std::process::id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (true, std::process::id())
}

fn make_file(path: String) -> u32 {
    std::fs::write(&path, b"here").unwrap();
    std::process::id()
}

#[test]
fn a_task_waiting_for_a_held_task_hands_it_back_to_an_idle_worker() {
    watchdog(LIMIT, || {
        let path = std::env::temp_dir()
            .join(format!("multiproc-cluster-flag-{}", std::process::id()))
            .to_str()
            .unwrap()
            .to_string();
        let _ = std::fs::remove_file(&path);
        let mut c = Cluster::new();
        let pool = c.pool(c.config());
        // Both tasks are queued before any worker joins: the first worker
        // takes both in its first pull, runs the waiting one and holds the
        // one it waits for.
        let waiter = pool.apply_async(wait_for_file, path.clone()).unwrap();
        let maker = pool.apply_async(make_file, path.clone()).unwrap();
        c.worker_with(&[(multiproc::cluster::ENV_PREFETCH, "2")]);
        assert_eq!(pool.wait_for_workers(1, Duration::from_secs(30)), 1);
        std::thread::sleep(Duration::from_millis(300));
        c.worker_with(&[(multiproc::cluster::ENV_PREFETCH, "2")]);
        // The first hands the held task back after 100 ms of waiting; the
        // second worker runs it.
        let (came, waiter_pid) = waiter.into_value().unwrap();
        let maker_pid = maker.into_value().unwrap();
        assert!(came, "the task it waited for never ran");
        assert_ne!(waiter_pid, maker_pid);
        assert_eq!(pool.dropped_results(), 0);
        // The pool goes on.
        assert_eq!(pool.map(square, 0..10u64).unwrap()[9], 81);
        let _ = std::fs::remove_file(&path);
    });
}

#[test]
fn killing_a_prefetching_worker_mid_map_gives_every_other_result_once() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config());
        let a = c.worker_with(&[(multiproc::cluster::ENV_PREFETCH, "3")]);
        c.worker_with(&[(multiproc::cluster::ENV_PREFETCH, "3")]);
        assert_eq!(pool.wait_for_workers(2, Duration::from_secs(30)), 2);
        let n = 60u64;
        let r = pool.map_async_chunked(slow_square, 0..n, 1).unwrap();
        assert!(eventually(Duration::from_secs(30), || r.progress().0 >= 10));
        c.signal(a, "KILL");
        let results = r.into_results();
        assert_eq!(results.len() as u64, n);
        // At most the one task `a` was running fails (no retries): what it
        // held without starting ran on the survivor.
        let lost = results
            .iter()
            .filter(|r| matches!(r, Err(TaskError::HostLost { .. })))
            .count();
        assert!(lost <= 1, "{results:?}");
        for (x, r) in (0..n).zip(&results) {
            match r {
                Ok(v) => assert_eq!(*v, x * x),
                Err(TaskError::HostLost { .. }) => {}
                Err(e) => panic!("task {x}: {e:?}"),
            }
        }
        assert_eq!(pool.map(square, 0..10u64).unwrap()[9], 81);
    });
}

#[test]
fn a_frozen_worker_is_lost_at_lease_expiry_its_task_retried_and_its_late_result_dropped() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config().task_retries(1));
        let a = c.worker();
        assert_eq!(pool.wait_for_workers(1, Duration::from_secs(30)), 1);
        let task = pool.apply_async(pid_after, 3000).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        // Frozen: its socket stays open, only the lease can tell.
        c.signal(a, "STOP");
        let b = c.worker();
        // Retried once on `b` (queued tasks are not charged; this one ran).
        assert_eq!(task.get().unwrap(), b);
        c.signal(a, "CONT");
        // `a` wakes, finishes, reports: the result is dropped.
        assert!(
            eventually(Duration::from_secs(30), || pool.dropped_results() == 1),
            "the late result was not seen"
        );
        assert_eq!(task.get().unwrap(), b);
        // `a` joins again under a new id and works.
        assert!(eventually(Duration::from_secs(30), || pool.workers().len() == 2));
        assert_eq!(pool.map(square, 0..8u64).unwrap()[7], 49);
    });
}

#[test]
fn unauthenticated_and_wrong_password_sessions_are_refused() {
    watchdog(LIMIT, || {
        let c = Cluster::new();
        let pool = c.pool(c.config());
        let none = ClusterConfig::connect(c.endpoint.clone())
            .connect_timeout(Duration::from_secs(2))
            .open();
        assert!(matches!(none, Err(ClusterError::Connect(_))), "{none:?}");
        let wrong = ClusterConfig::connect(c.endpoint.clone())
            .credentials(USER, "wrong")
            .connect_timeout(Duration::from_secs(2))
            .open();
        assert!(matches!(wrong, Err(ClusterError::Connect(_))), "{wrong:?}");
        let right = ClusterConfig::connect(c.endpoint.clone())
            .credentials(USER, PASSWORD)
            .open();
        assert!(right.is_ok(), "{right:?}");
        drop(pool);
    });
}

#[test]
fn listening_beyond_loopback_without_credentials_is_refused() {
    let e = ClusterConfig::listen("tcp/0.0.0.0:0").open().unwrap_err();
    assert!(matches!(e, ClusterError::Insecure(_)), "{e}");
}

#[test]
fn oversized_arguments_and_results_are_typed_errors() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config().max_payload(64 << 10));
        c.worker();
        assert_eq!(pool.wait_for_workers(1, Duration::from_secs(30)), 1);
        match pool.apply(len_of, vec![0u8; 100_000]) {
            Err(PoolError::Task {
                error: TaskError::TooLarge { size, limit },
                ..
            }) => {
                assert!(size > 100_000);
                assert_eq!(limit, 64 << 10);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(
            pool.apply(make_bytes, 100_000),
            Err(PoolError::Task {
                error: TaskError::TooLarge { .. },
                ..
            })
        ));
        // Within the cap both ways.
        assert_eq!(pool.apply(len_of, vec![0u8; 1000]).unwrap(), 1000);
        assert_eq!(pool.apply(make_bytes, 1000).unwrap().len(), 1000);
    });
}

// ---- network CSP channels ----

use multiproc::cluster::{NetChannel, NetReader, NetWriter};
use multiproc::csp::ChannelError;
use multiproc::{Builder, StartMethod};

fn client(endpoint: &str) -> multiproc::cluster::Session {
    ClusterConfig::connect(endpoint)
        .credentials(USER, PASSWORD)
        .lease(LEASE)
        .open()
        .expect("join the cluster")
}

/// Another host: a fresh exec of this binary (spawn start method), given
/// only the endpoint.
fn host_process<A, R>(f: fn(A) -> R, arg: A) -> multiproc::JoinHandle<R>
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + serde::de::DeserializeOwned,
{
    Builder::new()
        .start_method(StartMethod::Spawn)
        .stderr(multiproc::Stdio::Null)
        .spawn(f, arg)
        .expect("start a host process")
}

/// Writes `-1` with a short timeout (no reader yet: must time out), then
/// 0..20, then retires by returning.
fn writer_host(endpoint: String) -> Result<bool, String> {
    let s = client(&endpoint);
    let w: NetWriter<i64> = NetWriter::open(&s, "nums").map_err(|e| e.to_string())?;
    let lonely = matches!(
        w.write_timeout(&-1, Duration::from_millis(300)),
        Err(ChannelError::Timeout)
    );
    for i in 0..20 {
        w.write(&i).map_err(|e| e.to_string())?;
    }
    Ok(lonely)
}

#[test]
fn net_channel_rendezvous_and_retire_across_processes() {
    watchdog(LIMIT, || {
        let c = Cluster::new();
        let s = c.config().open().unwrap();
        let chan: NetChannel<i64> = NetChannel::home(&s, "nums").unwrap();
        let r = chan.reader().unwrap();
        let writer = host_process(writer_host, c.endpoint.clone());
        // The writer's first write finds no reader and times out, untaken.
        std::thread::sleep(Duration::from_millis(1500));
        let got: Vec<i64> = (0..20).map(|_| r.read().unwrap()).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(writer.join().unwrap(), Ok(true));
        // Its only writer retired (the process ended): the channel is retired.
        assert!(matches!(
            r.read_timeout(Duration::from_secs(20)),
            Err(ChannelError::Retired)
        ));
        assert!(chan.is_retired());
    });
}

fn reader_host((endpoint, n): (String, usize)) -> Result<Vec<i64>, String> {
    let s = client(&endpoint);
    let r: NetReader<i64> = NetReader::open(&s, "poisoned").map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    loop {
        match r.read() {
            Ok(v) => got.push(v),
            Err(ChannelError::Poisoned) if got.len() == n => return Ok(got),
            Err(e) => return Err(format!("{e} after {got:?}")),
        }
    }
}

#[test]
fn net_channel_poison_reaches_a_reader_on_another_host() {
    watchdog(LIMIT, || {
        let c = Cluster::new();
        let s = c.config().open().unwrap();
        let chan: NetChannel<i64> = NetChannel::home(&s, "poisoned").unwrap();
        let w = chan.writer().unwrap();
        let reader = host_process(reader_host, (c.endpoint.clone(), 3));
        for i in 0..3 {
            w.write(&i).unwrap();
        }
        w.poison();
        assert!(matches!(w.write(&9), Err(ChannelError::Poisoned)));
        assert_eq!(reader.join().unwrap(), Ok(vec![0, 1, 2]));
    });
}

fn home_host(endpoint: String) {
    let s = client(&endpoint);
    let _chan: NetChannel<i64> = NetChannel::home(&s, "homeless").unwrap();
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn a_lost_home_fails_a_waiting_writer_with_channel_lost() {
    watchdog(LIMIT, || {
        let c = Cluster::new();
        let s = c.config().open().unwrap();
        let home = host_process(home_host, c.endpoint.clone());
        let w = loop {
            match NetWriter::<i64>::open(&s, "homeless") {
                Ok(w) => break w,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let waiting = std::thread::spawn(move || w.write(&1));
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        home.kill().unwrap();
        let r = waiting.join().unwrap();
        assert!(matches!(r, Err(ChannelError::Lost(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(20));
    });
}

fn one_read_then_hang(endpoint: String) -> i64 {
    let s = client(&endpoint);
    let r: NetReader<i64> = NetReader::open(&s, "lonely").unwrap();
    let v = r.read().unwrap();
    std::thread::sleep(Duration::from_secs(300));
    v
}

#[test]
fn losing_the_only_reader_fails_a_waiting_writer_with_channel_lost() {
    watchdog(LIMIT, || {
        let c = Cluster::new();
        let s = c.config().open().unwrap();
        let chan: NetChannel<i64> = NetChannel::home(&s, "lonely").unwrap();
        let w = chan.writer().unwrap();
        let reader = host_process(one_read_then_hang, c.endpoint.clone());
        w.write(&1).unwrap();
        let waiting = std::thread::spawn(move || w.write(&2));
        std::thread::sleep(Duration::from_millis(500));
        reader.kill().unwrap();
        let r = waiting.join().unwrap();
        assert!(matches!(r, Err(ChannelError::Lost(_))), "{r:?}");
    });
}

#[test]
fn net_channel_refuses_an_oversized_message() {
    watchdog(LIMIT, || {
        let c = Cluster::new();
        let s = c.config().max_payload(4096).open().unwrap();
        let chan: NetChannel<Vec<u8>> = NetChannel::home(&s, "big").unwrap();
        let w = chan.writer().unwrap();
        let r = w.write(&vec![0u8; 10_000]);
        assert!(matches!(r, Err(ChannelError::TooLarge { .. })), "{r:?}");
    });
}

#[test]
fn all_workers_killed_fails_running_tasks_and_then_queued_ones_no_hang() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config().orphan_timeout(Duration::from_secs(2)));
        let a = c.worker();
        let b = c.worker();
        assert_eq!(pool.wait_for_workers(2, Duration::from_secs(30)), 2);
        let r = pool
            .map_async_chunked(pid_after, vec![60_000u64; 6], 1)
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        c.signal(a, "KILL");
        c.signal(b, "KILL");
        let results = r.into_results();
        let lost = results
            .iter()
            .filter(|r| matches!(r, Err(TaskError::HostLost { .. })))
            .count();
        let orphaned = results
            .iter()
            .filter(|r| matches!(r, Err(TaskError::Broken(m)) if m.contains("every worker")))
            .count();
        assert_eq!((lost, orphaned), (2, 4), "{results:?}");
    });
}

// ---- a host whose link goes down (network namespaces, root only) ----

/// A network namespace joined to this one by a veth pair, with addresses
/// only on that pair; removed (with the pair) on drop.
struct Netns {
    name: String,
    outside: String,
    host_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// `None` (with the reason) where namespaces cannot be made: not root,
    /// or no `ip` tool.
    fn new() -> Result<Netns, String> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0");
        if !root {
            return Err("not running as root".into());
        }
        let pid = std::process::id();
        let n = Netns {
            name: format!("mpcl{pid}"),
            outside: format!("mpo{pid}"),
            host_ip: format!("10.213.{}.1", pid % 250),
            ns_ip: format!("10.213.{}.2", pid % 250),
        };
        let inside = format!("mpi{pid}");
        ip(&["netns", "add", &n.name])?;
        ip(&[
            "link", "add", &n.outside, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &inside, "netns", &n.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", n.host_ip),
            "dev",
            &n.outside,
        ])?;
        ip(&["link", "set", &n.outside, "up"])?;
        ip(&[
            "-n",
            &n.name,
            "addr",
            "add",
            &format!("{}/30", n.ns_ip),
            "dev",
            &inside,
        ])?;
        ip(&["-n", &n.name, "link", "set", &inside, "up"])?;
        Ok(n)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.outside]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_host_whose_link_goes_down_is_lost_within_the_lease() {
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("skipped: network namespaces unavailable ({why})");
            return;
        }
    };
    watchdog(LIMIT, move || {
        let endpoint = format!("tcp/{}:{}", ns.host_ip, free_port());
        let config = ClusterConfig::listen(endpoint.clone())
            .credentials(USER, PASSWORD)
            .lease(LEASE);
        let pool = Pool::cluster(config).expect("driver on the veth address");
        // The worker lives in the namespace: its only route is the veth.
        let mut worker = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(std::env::current_exe().unwrap())
            .env(ENV_WORKER, "1")
            .env(ENV_ENDPOINT, &endpoint)
            .env(multiproc::cluster::ENV_USER, USER)
            .env(multiproc::cluster::ENV_PASSWORD, PASSWORD)
            .env(multiproc::cluster::ENV_LEASE_MS, "1000")
            .env(multiproc::cluster::ENV_IDLE_EXIT_MS, "20000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert_eq!(pool.wait_for_workers(1, Duration::from_secs(30)), 1);
        let long = pool.apply_async(pid_after, 60_000).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        // No FIN, no RST: only the lease can tell.
        let started = Instant::now();
        ip(&["link", "set", &ns.outside, "down"]).unwrap();
        let r = long.into_value();
        let took = started.elapsed();
        assert!(
            matches!(
                r,
                Err(PoolError::Task {
                    error: TaskError::HostLost { .. },
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(took < Duration::from_secs(10), "lost after {took:?}");
        let _ = worker.kill();
        let _ = worker.wait();
        drop(pool);
        drop(ns);
    });
}

#[test]
fn a_dropped_map_handle_cancels_its_queued_tasks_and_the_pool_goes_on() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config());
        c.worker();
        assert_eq!(pool.wait_for_workers(1, Duration::from_secs(30)), 1);
        // One worker, a 300 ms task at a time: 50 of them would take 15 s.
        let r = pool
            .map_async_chunked(pid_after, vec![300u64; 50], 1)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(r);
        let started = Instant::now();
        assert_eq!(pool.apply(square, 7).unwrap(), 49);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    });
}

// ---- network ends in an alternation ----

use multiproc::csp::{Alternation, Channel, Fair};

fn steady_writer((endpoint, name, n): (String, String, u32)) -> Result<u32, String> {
    let s = client(&endpoint);
    let w: NetWriter<u32> = NetWriter::open(&s, &name).map_err(|e| e.to_string())?;
    for i in 0..n {
        w.write(&i).map_err(|e| e.to_string())?;
    }
    Ok(n)
}

#[test]
fn an_alternation_over_a_network_and_a_local_reader_takes_exactly_one_per_round() {
    watchdog(LIMIT, || {
        const N: u32 = 150;
        let c = Cluster::new();
        let s = c.config().open().unwrap();
        let chan: NetChannel<u32> = NetChannel::home(&s, "mixed").unwrap();
        let net = chan.reader().unwrap();
        let local = Channel::<u32>::new().unwrap();
        let (lr, lw) = (local.reader(), local.writer());
        let remote = host_process(steady_writer, (c.endpoint.clone(), "mixed".into(), N));
        // Both writers write all the time: most rounds find both ready.
        let feeder = std::thread::spawn(move || {
            for i in 0..N {
                lw.write(&(1000 + i)).unwrap();
            }
        });
        let mut fair = Fair::new();
        let mut got = Vec::new();
        while got.len() < 2 * N as usize {
            let v = Alternation::new()
                .net_input(&net, Some)
                .input(&lr, Some)
                .timeout(Duration::from_secs(20), || None)
                .fair_select(&mut fair)
                .unwrap();
            // A round that took two values would lose one: the writers
            // finish and the next round times out.
            got.push(v.unwrap_or_else(|| panic!("stalled after {} values", got.len())));
        }
        feeder.join().unwrap();
        assert_eq!(remote.join().unwrap(), Ok(N));
        let (nets, locals): (Vec<u32>, Vec<u32>) = got.iter().partition(|&&v| v < 1000);
        assert_eq!(nets, (0..N).collect::<Vec<_>>());
        assert_eq!(locals, (1000..1000 + N).collect::<Vec<_>>());
        // Nothing more: both writers have gone.
        let more = Alternation::new()
            .net_input(&net, Some)
            .input(&lr, Some)
            .timeout(Duration::from_secs(2), || None)
            .pri_select();
        assert!(
            matches!(more, Ok(None) | Err(ChannelError::Retired)),
            "{more:?}"
        );
    });
}

/// In its own process: offers each of 0..n either on the network channel
/// "meet" or on a local buffered channel (whichever the alternation
/// takes); returns what went each way.
fn alternating_writer((endpoint, n): (String, u32)) -> Result<(Vec<u32>, Vec<u32>), String> {
    let s = client(&endpoint);
    let w: NetWriter<u32> = NetWriter::open(&s, "meet").map_err(|e| e.to_string())?;
    let local = Channel::<u32>::buffered(n as usize).map_err(|e| e.to_string())?;
    let (lr, lw) = (local.reader(), local.writer());
    let mut fair = Fair::new();
    let mut net = Vec::new();
    for i in 0..n {
        let over_net = Alternation::new()
            .net_output(&w, &i, || true)
            .output(&lw, &i, || false)
            .fair_select(&mut fair)
            .map_err(|e| e.to_string())?;
        if over_net {
            net.push(i);
        } else {
            // Keep the local channel from filling up, and make room for
            // the next round to choose either way.
            let v = lr.read().map_err(|e| e.to_string())?;
            if v != i {
                return Err(format!("local channel held {v}, expected {i}"));
            }
        }
    }
    let local: Vec<u32> = (0..n).filter(|i| !net.contains(i)).collect();
    Ok((net, local))
}

#[test]
fn alternations_in_two_processes_meet_on_a_network_channel_exactly_once() {
    watchdog(LIMIT, || {
        const N: u32 = 120;
        let c = Cluster::new();
        let s = c.config().open().unwrap();
        let chan: NetChannel<u32> = NetChannel::home(&s, "meet").unwrap();
        let net = chan.reader().unwrap();
        let local = Channel::<u32>::new().unwrap();
        let (lr, lw) = (local.reader(), local.writer());
        let feeder = std::thread::spawn(move || {
            for i in 0..N {
                lw.write(&(1000 + i)).unwrap();
            }
        });
        let writer = host_process(alternating_writer, (c.endpoint.clone(), N));
        let mut fair = Fair::new();
        let (mut from_net, mut from_local) = (Vec::new(), Vec::new());
        loop {
            let r = Alternation::new()
                .net_input(&net, |x| (true, x))
                .input(&lr, |x| (false, x))
                .timeout(Duration::from_secs(20), || panic!("stalled"))
                .fair_select(&mut fair);
            match r {
                Ok((true, x)) => from_net.push(x),
                Ok((false, x)) => from_local.push(x),
                // Both writers gone.
                Err(ChannelError::Retired) => break,
                Err(e) => panic!("{e}"),
            }
        }
        feeder.join().unwrap();
        let (sent_net, _) = writer.join().unwrap().unwrap();
        // What the writer's alternation says went over the network is
        // exactly what this one received from it, once each.
        assert_eq!(from_net, sent_net);
        assert_eq!(from_local, (1000..1000 + N).collect::<Vec<_>>());
        assert!(!sent_net.is_empty());
    });
}

fn named_home_host((endpoint, name): (String, String)) {
    let s = client(&endpoint);
    let _chan: NetChannel<i64> = NetChannel::home(&s, &name).unwrap();
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn a_lost_home_ends_a_waiting_alternation_with_channel_lost() {
    watchdog(LIMIT, || {
        let c = Cluster::new();
        let s = c.config().open().unwrap();
        let home = host_process(named_home_host, (c.endpoint.clone(), "alt-home".into()));
        let net = loop {
            match NetReader::<i64>::open(&s, "alt-home") {
                Ok(r) => break r,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let waiting = std::thread::spawn(move || {
            let local = Channel::<i64>::new().unwrap();
            let (lr, _lw) = (local.reader(), local.writer());
            Alternation::new()
                .net_input(&net, |x| x)
                .input(&lr, |x| x)
                .select()
        });
        std::thread::sleep(Duration::from_millis(1500));
        let started = Instant::now();
        home.kill().unwrap();
        let r = waiting.join().unwrap();
        assert!(matches!(r, Err(ChannelError::Lost(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(20));
    });
}

// ---- two routers ----

/// A router of its own (another host): listens on `listen`, joins the
/// router at `connect`, and serves until killed.
fn relay_router((listen, connect): (String, String)) {
    let _session = ClusterConfig::listen(listen)
        .and_connect(connect)
        .credentials(USER, PASSWORD)
        .lease(LEASE)
        .open()
        .unwrap();
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn a_router_killed_between_two_routers_the_map_completes_through_the_other() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        let pool = c.pool(c.config().task_retries(2));
        // Two relay routers joined to the driver's, one worker behind each.
        let (ep1, ep2) = (
            format!("tcp/127.0.0.1:{}", free_port()),
            format!("tcp/127.0.0.1:{}", free_port()),
        );
        let r1 = host_process(relay_router, (ep1.clone(), c.endpoint.clone()));
        let r2 = host_process(relay_router, (ep2.clone(), c.endpoint.clone()));
        let driver_endpoint = std::mem::replace(&mut c.endpoint, ep1);
        let w1 = c.worker();
        c.endpoint = ep2;
        let w2 = c.worker();
        c.endpoint = driver_endpoint;
        assert_eq!(pool.wait_for_workers(2, Duration::from_secs(30)), 2);
        let r = pool
            .map_async_chunked(pid_after, vec![200u64; 30], 1)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        // The router between the driver and `w1` dies: `w1`'s running task
        // is lost and retried, the rest go through the other router.
        r1.kill().unwrap();
        let results = r.into_results();
        let pids: Vec<u32> = results
            .iter()
            .map(|r| {
                *r.as_ref()
                    .unwrap_or_else(|e| panic!("{e:?} in {results:?}"))
            })
            .collect();
        assert_eq!(pids.len(), 30);
        assert!(pids.contains(&w1), "{pids:?}");
        assert!(pids.contains(&w2), "{pids:?}");
        // After the kill, only `w2` is left.
        assert!(eventually(Duration::from_secs(10), || pool.workers().len() == 1));
        assert_eq!(pool.map(square, 0..10u64).unwrap()[9], 81);
        let _ = r1.join();
        r2.kill().unwrap();
        let _ = r2.join();
    });
}

// ---- TLS ----

/// A directory of PEM files made with the `openssl` tool: a certificate
/// authority, a router certificate it signed (for `localhost` and
/// 127.0.0.1) and its key, and a second, unrelated authority. Removed on
/// drop.
struct Pki {
    dir: std::path::PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("multiproc-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        let d = pki.dir.as_path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=multiproc test {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                ],
            );
        }
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "router.key",
                "-out",
                "router.csr",
            ],
        );
        std::fs::write(
            d.join("router.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "router.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "router.ext",
                "-out",
                "router.pem",
            ],
        );
        pki
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_writer((endpoint, ca): (String, std::path::PathBuf)) -> Result<(), String> {
    let s = ClusterConfig::connect(endpoint)
        .credentials(USER, PASSWORD)
        .tls_ca(ca)
        .lease(LEASE)
        .open()
        .map_err(|e| e.to_string())?;
    let w: NetWriter<String> = NetWriter::open(&s, "sealed").map_err(|e| e.to_string())?;
    w.write(&"over TLS".to_string()).map_err(|e| e.to_string())
}

#[test]
fn a_tls_listener_serves_sessions_that_trust_its_authority_and_refuses_others() {
    watchdog(LIMIT, || {
        let pki = Pki::new();
        let endpoint = format!("tls/localhost:{}", free_port());
        let router = ClusterConfig::listen(endpoint.clone())
            .credentials(USER, PASSWORD)
            .tls_identity(pki.path("router.pem"), pki.path("router.key"))
            .lease(LEASE)
            .open()
            .expect("a TLS router");
        // A session trusting the authority works, from another process.
        let chan: NetChannel<String> = NetChannel::home(&router, "sealed").unwrap();
        let r = chan.reader().unwrap();
        let writer = host_process(tls_writer, (endpoint.clone(), pki.path("ca.pem")));
        assert_eq!(r.read().unwrap(), "over TLS");
        assert_eq!(writer.join().unwrap(), Ok(()));
        // Plain TCP to the TLS port: refused.
        let plain = ClusterConfig::connect(endpoint.replacen("tls/", "tcp/", 1))
            .credentials(USER, PASSWORD)
            .connect_timeout(Duration::from_secs(2))
            .open();
        assert!(matches!(plain, Err(ClusterError::Connect(_))), "{plain:?}");
        // A session trusting another authority: refused.
        let stranger = ClusterConfig::connect(endpoint.clone())
            .credentials(USER, PASSWORD)
            .tls_ca(pki.path("other-ca.pem"))
            .connect_timeout(Duration::from_secs(2))
            .open();
        assert!(
            matches!(stranger, Err(ClusterError::Connect(_))),
            "{stranger:?}"
        );
        // The right authority but no credentials: refused as well.
        let anonymous = ClusterConfig::connect(endpoint)
            .tls_ca(pki.path("ca.pem"))
            .connect_timeout(Duration::from_secs(2))
            .open();
        assert!(
            matches!(anonymous, Err(ClusterError::Connect(_))),
            "{anonymous:?}"
        );
    });
}

#[test]
fn a_tls_listener_without_a_certificate_or_with_a_missing_file_is_a_config_error() {
    let e = ClusterConfig::listen("tls/127.0.0.1:0").open().unwrap_err();
    assert!(matches!(e, ClusterError::Config(_)), "{e}");
    let e = ClusterConfig::connect("tls/127.0.0.1:1")
        .tls_ca("/nonexistent/ca.pem")
        .open()
        .unwrap_err();
    assert!(matches!(e, ClusterError::Config(_)), "{e}");
}

#[test]
fn network_ends_may_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<multiproc::cluster::NetReader<u64>>();
    shared::<multiproc::cluster::NetWriter<u64>>();
}

#[test]
fn a_worker_with_a_bad_prefetch_or_give_back_exits_with_a_config_error() {
    watchdog(LIMIT, || {
        let mut c = Cluster::new();
        c.worker_with(&[(multiproc::cluster::ENV_PREFETCH, "lots")]);
        c.worker_with(&[(multiproc::cluster::ENV_GIVE_BACK_MS, "soon")]);
        for worker in &mut c.workers {
            assert_eq!(worker.wait().expect("wait for the worker").code(), Some(2));
        }
    });
}
