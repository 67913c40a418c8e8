//! The process pool end to end, with real workers, real kills and both
//! start methods: results in order and out of order, panics, workers that
//! exit, abort or are SIGKILLed mid-task or while sending their result,
//! results that do not decode, initializers that fail, worker recycling,
//! terminate/close/join, progress, timeouts and handles as arguments.
//!
//! Every scenario runs twice (see `both_methods!`): with the spawn method
//! under a watchdog, and with the fork method in a single-threaded spawned
//! child.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Method, wait_gone};
use multiproc::pool::Progress;
use multiproc::{Connection, Pool, PoolError, TaskError, WorkerExit, pipe};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- targets

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: i32, b: i32) -> i32 {
    a + b
}

fn sum3(a: i64, b: i64, c: u8) -> i64 {
    a + b + i64::from(c)
}

#[allow(clippy::too_many_arguments)]
fn sum12(
    a: u8,
    b: u16,
    c: u32,
    d: u64,
    e: i8,
    f: i16,
    g: i32,
    h: i64,
    i: usize,
    j: isize,
    k: u8,
    l: u8,
) -> i64 {
    [
        a as i64, b as i64, c as i64, d as i64, e as i64, f as i64, g as i64, h,
    ]
    .iter()
    .sum::<i64>()
        + i as i64
        + j as i64
        + k as i64
        + l as i64
}

fn panic_on_three(x: i32) -> i32 {
    if x == 3 {
        common::quiet_panics();
        panic!("three is not allowed");
    }
    x * 10
}

/// `x`, but task 19 first sleeps 300 ms and then panics.
fn late_panic_on_nineteen(x: u64) -> u64 {
    if x == 19 {
        std::thread::sleep(Duration::from_millis(300));
        common::quiet_panics();
        panic!("nineteen panicked late");
    }
    x
}

/// `(x, trigger, code)`: exits the worker with `code` when `x == trigger`.
fn exit_on((x, trigger, code): (u32, u32, i32)) -> u32 {
    if x == trigger {
        std::process::exit(code);
    }
    x
}

fn abort_on((x, trigger): (u32, u32)) -> u32 {
    if x == trigger {
        std::process::abort();
    }
    x
}

/// Writes the worker's pid to `path` when `x == trigger`, then sleeps long
/// enough to be killed from outside.
fn report_and_hang((x, trigger, path): (u32, u32, PathBuf)) -> u32 {
    if x == trigger {
        std::fs::write(&path, std::process::id().to_string()).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }
    x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Sleeps `ms` milliseconds; returns `ms` and when it ended (nanoseconds
/// of the wall clock, which every process on the machine shares).
fn sleep_stamp(ms: u64) -> (u64, u128) {
    std::thread::sleep(Duration::from_millis(ms));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (ms, now.as_nanos())
}

fn my_pid(_: u32) -> u32 {
    std::process::id()
}

/// A result whose encoding kills the worker: it dies while sending it.
struct DiesWhenSent;

impl Serialize for DiesWhenSent {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        std::process::exit(42)
    }
}

impl<'de> Deserialize<'de> for DiesWhenSent {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(DiesWhenSent)
    }
}

fn dies_when_sent(_: ()) -> DiesWhenSent {
    DiesWhenSent
}

/// Returns a large result and has a thread SIGKILL the worker while the
/// result is being encoded and written.
fn killed_while_sending(len: usize) -> Vec<u8> {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(2));
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(60));
    });
    vec![7u8; len]
}

/// Decodes only from even numbers.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "u32")]
struct Even(u32);

impl TryFrom<u32> for Even {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if v.is_multiple_of(2) {
            Ok(Even(v))
        } else {
            Err(format!("{v} is odd"))
        }
    }
}

fn even_identity(x: u32) -> Even {
    Even(x)
}

/// Encodes only from even numbers.
#[derive(Debug, PartialEq, Deserialize)]
struct EncodesIfEven(u32);

impl Serialize for EncodesIfEven {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(2) {
            s.serialize_u32(self.0)
        } else {
            Err(serde::ser::Error::custom(format!("{} is odd", self.0)))
        }
    }
}

fn encodes_if_even(x: u32) -> EncodesIfEven {
    EncodesIfEven(x)
}

fn init_panics(_: ()) {
    common::quiet_panics();
    panic!("initializer refuses");
}

fn init_exits(code: i32) {
    std::process::exit(code);
}

/// Fails (exits) only for the first worker to run it: the one that creates
/// the marker file.
fn init_fails_once(marker: PathBuf) {
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok()
    {
        std::process::exit(9);
    }
}

fn send_on(conn: Connection) -> u32 {
    conn.send(&"from the worker").unwrap();
    1
}

// ---------------------------------------------------------------- helpers

fn pool(m: Method, n: usize) -> Pool {
    Pool::builder()
        .processes(n)
        .start_method(m.start())
        .build()
        .expect("build the pool")
}

fn temp_path(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "multiproc-pool-{tag}-{}-{nanos}",
        std::process::id()
    ))
}

/// Waits for `path` to hold something, calling `drive` meanwhile (a fork
/// pool advances only while someone waits on it).
fn wait_for_file(path: &PathBuf, drive: impl Fn()) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        drive();
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_workers_back(p: &Pool, dead: i32) {
    // A later job runs on a full set of workers, none of them the dead one.
    assert_eq!(p.map(square, 0..8u64).unwrap()[7], 49);
    let pids = p.worker_pids();
    assert_eq!(pids.len(), p.processes(), "{pids:?}");
    assert!(!pids.contains(&dead), "{pids:?} still lists {dead}");
}

// ---------------------------------------------------------------- scenarios

fn results_in_every_form(m: Method) {
    let p = pool(m, 2);
    let expected: Vec<u64> = (0..100).map(|x| x * x).collect();
    assert_eq!(p.map(square, 0..100).unwrap(), expected);
    assert_eq!(p.map_chunked(square, 0..100, 1).unwrap(), expected);
    assert_eq!(p.map_chunked(square, 0..100, 7).unwrap(), expected);
    assert_eq!(p.map(square, Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
    let ordered: Vec<u64> = p
        .imap(square, 0..100)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ordered, expected);
    let chunked: Vec<u64> = p
        .imap_chunked(square, 0..100, 9)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(chunked, expected);
    let mut unordered: Vec<u64> = p
        .imap_unordered(square, 0..100)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, expected);
    // An endless input is read lazily.
    let first: Vec<u64> = p
        .imap(square, 0..)
        .unwrap()
        .take(5)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, vec![0, 1, 4, 9, 16]);
    assert_eq!(p.starmap(add, [(1, 2), (30, 40)]).unwrap(), vec![3, 70]);
    // Any arity from 1 to 12, and closures that capture nothing.
    assert_eq!(p.starmap(square, [(3u64,)]).unwrap(), vec![9]);
    assert_eq!(
        p.starmap(sum3, [(1, 2, 3u8), (4, 5, 6)]).unwrap(),
        vec![6, 15]
    );
    let twelve = (
        1u8, 2u16, 3u32, 4u64, 5i8, 6i16, 7i32, 8i64, 9usize, 10isize, 11u8, 12u8,
    );
    assert_eq!(p.starmap(sum12, vec![twelve; 3]).unwrap(), vec![78; 3]);
    let neg = p.starmap(|a: i32, b: i32| -(a * b), [(2, 3)]).unwrap();
    assert_eq!(neg, vec![-6]);
    let r = p.starmap_async(sum3, [(1, 1, 1u8)]).unwrap();
    assert_eq!(r.get().unwrap(), vec![3]);
    assert_eq!(p.apply(square, 9).unwrap(), 81);
    let handles: Vec<_> = (0..10u64)
        .map(|i| p.apply_async(square, i).unwrap())
        .collect();
    let got: Vec<u64> = handles.iter().map(|h| h.get().unwrap()).collect();
    assert_eq!(got, (0..10u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(handles[3].successful(), Some(true));
    assert_eq!(handles[3].get().unwrap(), 9);
    let m = p.map_async(square, 0..10).unwrap();
    m.wait();
    assert!(m.ready());
    assert_eq!(m.successful(), Some(true));
    assert_eq!(m.progress(), (10, 10));
    assert_eq!(m.get().unwrap()[9], 81);
}

fn a_panic_fails_only_its_task(m: Method) {
    let p = pool(m, 2);
    let before = p.worker_pids();
    let results = p.map_results(panic_on_three, 0..8).unwrap();
    for (i, r) in results.iter().enumerate() {
        if i == 3 {
            assert!(
                matches!(r, Err(TaskError::Panicked { message }) if message == "three is not allowed"),
                "{r:?}"
            );
        } else {
            assert_eq!(r, &Ok(i as i32 * 10));
        }
    }
    match p.map_chunked(panic_on_three, 0..8, 1) {
        Err(PoolError::Task {
            index: 3,
            error: TaskError::Panicked { .. },
        }) => {}
        other => panic!("expected task 3's panic, got {other:?}"),
    }
    let r = p.apply_async(panic_on_three, 3).unwrap();
    r.wait();
    assert_eq!(r.successful(), Some(false));
    // Panics do not cost a worker.
    assert_eq!(p.worker_pids().len(), 2);
    let mut after = p.worker_pids();
    let mut before = before;
    after.sort_unstable();
    before.sort_unstable();
    assert_eq!(before, after);
}

fn exit_mid_task_fails_that_task(m: Method) {
    let p = pool(m, 2);
    let items: Vec<(u32, u32, i32)> = (0..20).map(|x| (x, 5, 7)).collect();
    let results = p.map_chunked(exit_on, items.clone(), 1).map(|_| ());
    let results_all = match results {
        Err(PoolError::Task { index: 5, error }) => error,
        other => panic!("expected task 5 to fail, got {other:?}"),
    };
    let TaskError::WorkerDied { pid, exit } = results_all else {
        panic!("expected a worker death, got {results_all:?}");
    };
    assert_eq!(exit, WorkerExit::Code(7));
    assert!(wait_gone(pid, Duration::from_secs(10)));
    // Every other task completed.
    let all = p
        .map_async_chunked(exit_on, items, 1)
        .unwrap()
        .get_results()
        .unwrap();
    for (i, r) in all.iter().enumerate() {
        if i == 5 {
            assert!(
                matches!(
                    r,
                    Err(TaskError::WorkerDied {
                        exit: WorkerExit::Code(7),
                        ..
                    })
                ),
                "{r:?}"
            );
        } else {
            assert_eq!(r, &Ok(i as u32));
        }
    }
    assert_workers_back(&p, pid);
}

fn abort_mid_task_names_the_signal(m: Method) {
    let p = pool(m, 2);
    let results = p.map_results(abort_on, (0..10).map(|x| (x, 4))).unwrap();
    // The default chunk size here is 2: task 4 shares its chunk with 5.
    for (i, r) in results.iter().enumerate() {
        if i == 4 || i == 5 {
            match r {
                Err(
                    e @ TaskError::WorkerDied {
                        exit: WorkerExit::Signal(6),
                        ..
                    },
                ) => {
                    assert!(e.to_string().contains("SIGABRT"), "{e}")
                }
                other => panic!("task {i}: {other:?}"),
            }
        } else {
            assert_eq!(r, &Ok(i as u32));
        }
    }
}

fn sigkill_from_outside_mid_task(m: Method) {
    let p = pool(m, 2);
    let path = temp_path("kill");
    let items: Vec<(u32, u32, PathBuf)> = (0..12).map(|x| (x, 6, path.clone())).collect();
    let job = p.map_async_chunked(report_and_hang, items, 1).unwrap();
    let pid: i32 = wait_for_file(&path, || {
        job.ready();
    })
    .trim()
    .parse()
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let results = job.get_results().unwrap();
    let _ = std::fs::remove_file(&path);
    for (i, r) in results.iter().enumerate() {
        if i == 6 {
            match r {
                Err(
                    e @ TaskError::WorkerDied {
                        pid: p2,
                        exit: WorkerExit::Signal(9),
                    },
                ) => {
                    assert_eq!(*p2, pid);
                    assert!(e.to_string().contains("SIGKILL"), "{e}");
                }
                other => panic!("task 6: {other:?}"),
            }
        } else {
            assert_eq!(r, &Ok(i as u32));
        }
    }
    assert_workers_back(&p, pid);
}

/// A terminal's Ctrl-C reaches the whole foreground process group: the
/// workers ignore it (the pool's owner decides), busy or idle.
fn sigint_leaves_the_workers_to_the_pool(m: Method) {
    let p = pool(m, 2);
    assert_eq!(p.map(square, 0..4u64).unwrap(), [0, 1, 4, 9]);
    let mut pids = p.worker_pids();
    let job = p.map_async_chunked(sleep_ms, vec![300u64; 4], 1).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for pid in &pids {
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let results = job.get_results().unwrap();
    assert!(results.iter().all(|r| r == &Ok(300)), "{results:?}");
    let mut after = p.worker_pids();
    pids.sort_unstable();
    after.sort_unstable();
    assert_eq!(pids, after);
}

fn a_death_fails_the_whole_chunk_only(m: Method) {
    let p = pool(m, 2);
    let items: Vec<(u32, u32, i32)> = (0..16).map(|x| (x, 5, 3)).collect();
    let results = p
        .map_async_chunked(exit_on, items, 4)
        .unwrap()
        .get_results()
        .unwrap();
    for (i, r) in results.iter().enumerate() {
        if (4..8).contains(&i) {
            assert!(
                matches!(
                    r,
                    Err(TaskError::WorkerDied {
                        exit: WorkerExit::Code(3),
                        ..
                    })
                ),
                "{i}: {r:?}"
            );
        } else {
            assert_eq!(r, &Ok(i as u32), "{i}");
        }
    }
}

fn dying_while_sending_the_result(m: Method) {
    let p = pool(m, 2);
    match p.apply(dies_when_sent, ()) {
        Err(PoolError::Task {
            error:
                TaskError::WorkerDied {
                    exit: WorkerExit::Code(42),
                    ..
                },
            ..
        }) => {}
        other => panic!("expected a death with code 42, got {:?}", other.map(|_| ())),
    }
    match p.apply(killed_while_sending, 32 << 20) {
        Err(PoolError::Task {
            error:
                TaskError::WorkerDied {
                    exit: WorkerExit::Signal(9),
                    ..
                },
            ..
        }) => {}
        other => panic!("expected a SIGKILL death, got {:?}", other.map(|v| v.len())),
    }
    assert_eq!(p.map(square, 0..4).unwrap(), vec![0, 1, 4, 9]);
}

fn an_undecodable_result_fails_its_task(m: Method) {
    let p = pool(m, 2);
    // `Even(x)` with an odd `x` encodes (as a u32) but does not decode:
    // alone in its chunk, and among others that do.
    let alone = p.map_results(even_identity, 0..6u32).unwrap();
    let together = p
        .map_async_chunked(even_identity, 0..40u32, 10)
        .unwrap()
        .into_results()
        .unwrap();
    for results in [alone, together] {
        for (i, r) in results.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(r, &Ok(Even(i as u32)));
            } else {
                assert!(matches!(r, Err(TaskError::Decode(_))), "{i}: {r:?}");
            }
        }
    }
}

/// Panics if it runs on 4.
fn panic_on_four(e: Even) -> u32 {
    assert_ne!(e.0, 4, "the task of 4 ran");
    e.0
}

fn an_undecodable_argument_fails_its_chunk_unrun(m: Method) {
    let p = pool(m, 2);
    // Chunks of four: the second holds 5, which does not decode in the
    // worker, so none of its tasks runs (4's would panic): each fails as
    // undecodable. The other chunks run.
    let args = [0, 2, 6, 8, 4, 5, 10, 12, 14, 16, 18, 20];
    let results = p
        .map_async_chunked(panic_on_four, args.map(Even), 4)
        .unwrap()
        .into_results()
        .unwrap();
    for (i, (r, a)) in results.iter().zip(args).enumerate() {
        if (4..8).contains(&i) {
            assert!(matches!(r, Err(TaskError::Decode(_))), "{i}: {r:?}");
        } else {
            assert_eq!(r, &Ok(a), "{i}");
        }
    }
}

fn an_unencodable_result_fails_its_task(m: Method) {
    let p = pool(m, 2);
    let results = p
        .map_async_chunked(encodes_if_even, 0..40u32, 10)
        .unwrap()
        .into_results()
        .unwrap();
    for (i, r) in results.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(r, &Ok(EncodesIfEven(i as u32)));
        } else {
            assert!(
                matches!(r, Err(TaskError::Encode(m)) if m.contains("is odd")),
                "{i}: {r:?}"
            );
        }
    }
}

fn initializer_panics_always(m: Method) {
    let p = Pool::builder()
        .processes(2)
        .start_method(m.start())
        .initializer(init_panics, ())
        .build()
        .unwrap();
    let results = p.map_results(square, 0..5).unwrap();
    for r in &results {
        assert!(
            matches!(r, Err(TaskError::Initializer { message }) if message.contains("initializer refuses")),
            "{r:?}"
        );
    }
    // No worker is restarted for ever: the pool stopped trying.
    assert!(p.worker_pids().is_empty());
    assert!(matches!(
        p.apply(square, 1),
        Err(PoolError::Task {
            error: TaskError::Initializer { .. },
            ..
        })
    ));
}

fn initializer_exits_always(m: Method) {
    let p = Pool::builder()
        .processes(2)
        .start_method(m.start())
        .initializer(init_exits, 5)
        .build()
        .unwrap();
    match p.apply(square, 3) {
        Err(PoolError::Task {
            error: TaskError::Initializer { message },
            ..
        }) => assert!(message.contains("exited with code 5"), "{message}"),
        other => panic!("expected an initializer failure, got {other:?}"),
    }
}

fn initializer_failing_once_costs_a_restart(m: Method) {
    let marker = temp_path("init-once");
    let p = Pool::builder()
        .processes(2)
        .start_method(m.start())
        .initializer(init_fails_once, marker.clone())
        .build()
        .unwrap();
    let expected: Vec<u64> = (0..40).map(|x| x * x).collect();
    assert_eq!(p.map_chunked(square, 0..40, 1).unwrap(), expected);
    assert!(marker.exists());
    let _ = std::fs::remove_file(&marker);
}

fn maxtasksperchild_recycles_workers(m: Method) {
    let p = Pool::builder()
        .processes(2)
        .start_method(m.start())
        .maxtasksperchild(2)
        .build()
        .unwrap();
    let pids = p.map_chunked(my_pid, 0..20, 1).unwrap();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert!(
        distinct.len() >= 10,
        "{} workers for 20 tasks",
        distinct.len()
    );
    for pid in &distinct {
        assert!(pids.iter().filter(|p| *p == pid).count() <= 2);
    }
}

fn terminate_with_pending_tasks(m: Method) {
    let p = pool(m, 2);
    let pids = p.worker_pids();
    let job = p
        .map_async_chunked(sleep_ms, vec![20_000u64; 50], 1)
        .unwrap();
    let one = p.apply_async(sleep_ms, 20_000).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    p.terminate();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "terminate took {:?}",
        start.elapsed()
    );
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "worker {pid} survived"
        );
    }
    let results = job.get_results().unwrap();
    assert!(results.iter().all(|r| r == &Err(TaskError::Terminated)));
    assert!(matches!(
        one.get(),
        Err(PoolError::Task {
            error: TaskError::Terminated,
            ..
        })
    ));
    assert!(matches!(p.apply(square, 1), Err(PoolError::Closed)));
    assert!(p.worker_pids().is_empty());
}

fn dropping_the_pool_terminates_it(m: Method) {
    let p = pool(m, 2);
    let pids = p.worker_pids();
    let job = p.apply_async(sleep_ms, 20_000).unwrap();
    drop(p);
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "worker {pid} survived"
        );
    }
    assert!(matches!(
        job.get_timeout(Duration::from_secs(10)),
        Err(PoolError::Task {
            error: TaskError::Terminated,
            ..
        })
    ));
}

fn close_then_join_finishes_the_work(m: Method) {
    let p = pool(m, 2);
    assert!(matches!(p.join(), Err(PoolError::NotClosed)));
    let pids = p.worker_pids();
    let job = p.map_async_chunked(sleep_ms, vec![20u64; 10], 1).unwrap();
    p.close();
    assert!(matches!(p.apply(square, 1), Err(PoolError::Closed)));
    p.join_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(job.get().unwrap(), vec![20u64; 10]);
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "worker {pid} still runs"
        );
    }
    assert!(p.worker_pids().is_empty());
}

fn progress_and_timeouts(m: Method) {
    let p = pool(m, 2);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let got = p
        .map_async_chunked(sleep_ms, vec![5u64; 12], 1)
        .unwrap()
        .with_progress(move |done, total| s.lock().unwrap().push((done, total)))
        .get()
        .unwrap();
    assert_eq!(got.len(), 12);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.last(), Some(&(12, Some(12))), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");

    // Default chunks hold many tasks; the sink still sees every count once.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let got = p
        .map_async(square, 0..1000u64)
        .unwrap()
        .with_progress(move |done, total| s.lock().unwrap().push((done, total)))
        .get()
        .unwrap();
    assert_eq!(got[999], 999 * 999);
    let seen = seen.lock().unwrap().clone();
    let want: Vec<_> = (0..=1000).map(|n| (n, Some(1000))).collect();
    assert_eq!(seen, want);

    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>, bool);
    impl Progress for Count {
        fn update(&mut self, done: usize, _: Option<usize>) {
            self.0.store(done, std::sync::atomic::Ordering::SeqCst);
        }
        fn finish(&mut self) {
            self.1 = true;
            self.0.fetch_add(1000, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let items: Vec<u64> = p
        .imap(square, 0..7u64)
        .unwrap()
        .with_progress(Count(n.clone(), false))
        .map(Result::unwrap)
        .collect();
    assert_eq!(items.len(), 7);
    assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1007);

    let slow = p.apply_async(sleep_ms, 300).unwrap();
    assert!(matches!(
        slow.get_timeout(Duration::from_millis(1)),
        Err(PoolError::Timeout(_))
    ));
    assert!(!slow.wait_timeout(Duration::ZERO) || slow.ready());
    assert_eq!(slow.get_timeout(Duration::from_secs(30)).unwrap(), 300);
}

fn handles_travel_as_arguments(m: Method) {
    let p = pool(m, 2);
    let (mine, theirs) = pipe().unwrap();
    assert_eq!(p.apply(send_on, theirs).unwrap(), 1);
    let msg: String = mine.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(msg, "from the worker");
}

fn echo_len(v: Vec<u8>) -> (usize, Vec<u8>) {
    (v.len(), v)
}

fn large_arguments_and_results(m: Method) {
    // Several megabytes each way, many in flight: the pool must keep
    // writing chunks while workers write results, without deadlock.
    let p = pool(m, 2);
    let items: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1 << 20]).collect();
    let out = p.map_chunked(echo_len, items, 1).unwrap();
    for (i, (len, v)) in out.iter().enumerate() {
        assert_eq!(*len, 1 << 20);
        assert!(v.iter().all(|&b| b == i as u8));
    }
}

fn bytes_of(n: usize) -> Vec<u8> {
    vec![7; n]
}

fn large_results_among_tiny_ones(m: Method) {
    // A result too large for the shared-memory ring goes on the socket,
    // and the tiny results after it wait in the ring behind it: the pool
    // must read the large one even while replies in the ring are due
    // (once, it spun on them and never polled the socket).
    let p = pool(m, 2);
    let items: Vec<usize> = (0..200)
        .map(|i| if i % 16 == 5 { 150_000 } else { i % 7 })
        .collect();
    for _ in 0..20 {
        let out = p.map_chunked(bytes_of, items.clone(), 1).unwrap();
        assert_eq!(out.len(), items.len());
        for (v, &n) in out.iter().zip(&items) {
            assert!(v.len() == n && v.iter().all(|&b| b == 7));
        }
    }
}

fn dropped_imap_then_close_and_join(m: Method) {
    let p = pool(m, 2);
    let mut it = p.imap(sleep_ms, vec![5u64; 100]).unwrap();
    assert_eq!(it.next(), Some(Ok(5)));
    drop(it);
    let mut endless = p.imap_unordered(square, 0..).unwrap();
    assert!(endless.next().unwrap().is_ok());
    drop(endless);
    p.close();
    p.join_timeout(Duration::from_secs(30)).unwrap();
    assert!(p.worker_pids().is_empty());
}

/// The values of a map's first chunks are decoded while later ones still
/// run; a failure in a later chunk still fails only its own task, with
/// both results and values in order.
fn early_chunks_decoded_before_a_late_failure(m: Method) {
    let p = pool(m, 2);
    let r = p
        .map_async_chunked(late_panic_on_nineteen, 0..20u64, 2)
        .unwrap();
    let results = r.into_results().unwrap();
    assert_eq!(results.len(), 20);
    for (i, r) in results.iter().enumerate() {
        if i == 19 {
            assert!(
                matches!(r, Err(TaskError::Panicked { message }) if message == "nineteen panicked late"),
                "{r:?}"
            );
        } else {
            assert_eq!(r, &Ok(i as u64));
        }
    }
    match p.map_chunked(late_panic_on_nineteen, 0..20u64, 2) {
        Err(PoolError::Task { index: 19, .. }) => {}
        other => panic!("expected task 19's panic, got {other:?}"),
    }
    // And when every task returns, the early values and the rest join up.
    let r = p
        .map_async_chunked(sleep_ms, (0..20u64).map(|i| i % 3), 2)
        .unwrap();
    r.wait();
    assert_eq!(
        r.get().unwrap(),
        (0..20u64).map(|i| i % 3).collect::<Vec<_>>()
    );
    assert_eq!(r.get().unwrap().len(), 20, "the results can be read again");
}

/// The input of a map is read a chunk at a time while chunks already run:
/// an input that panics midway leaves no half-submitted job behind (the
/// pool still closes and joins).
fn an_input_that_panics_midway_leaves_the_pool_usable(m: Method) {
    let p = pool(m, 2);
    // `inspect` keeps the exact length (so the input is read lazily);
    // `resume_unwind` skips the panic hook (no message on stderr).
    let input = (0..1000u64).inspect(|&x| {
        if x == 700 {
            std::panic::resume_unwind(Box::new("the input broke"));
        }
    });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.map_chunked(square, input, 100)
    }));
    assert!(r.is_err(), "the input's panic reaches the caller");
    assert_eq!(p.map(square, 0..4).unwrap(), vec![0, 1, 4, 9]);
    p.close();
    p.join_timeout(Duration::from_secs(30)).unwrap();
    assert!(p.worker_pids().is_empty());
}

/// A blocking map of large chunks reads its input as chunks finish (a
/// few chunks in flight, their frames used again): its values, a worker's
/// death and an input that panics midway are as when the whole input is
/// handed over at once.
fn a_map_of_large_chunks_reads_its_input_as_chunks_finish(m: Method) {
    let p = pool(m, 2);
    // 10 chunks of 4000 `u64`s: frames of 32 KB.
    let v = p.map_chunked(square, 0..40_000u64, 4_000).unwrap();
    assert_eq!(v, (0..40_000u64).map(square).collect::<Vec<_>>());
    // The default chunk size: 8 chunks of 5000.
    let v = p.map(square, 0..40_000u64).unwrap();
    assert_eq!(v, (0..40_000u64).map(square).collect::<Vec<_>>());
    // A worker dies in the third chunk: its tasks fail, the others run.
    let items = (0..10_000u32).map(|x| (x, 2_500, 3));
    match p.map_chunked(exit_on, items, 1_000) {
        Err(PoolError::Task {
            index: 2_000,
            error:
                TaskError::WorkerDied {
                    exit: WorkerExit::Code(3),
                    ..
                },
        }) => {}
        other => panic!("expected the death of task 2000's worker, got {other:?}"),
    }
    let input = (0..40_000u64).inspect(|&x| {
        if x == 30_000 {
            std::panic::resume_unwind(Box::new("the input broke"));
        }
    });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.map_chunked(square, input, 4_000)
    }));
    assert!(r.is_err(), "the input's panic reaches the caller");
    assert_eq!(p.map(square, 0..4).unwrap(), vec![0, 1, 4, 9]);
    p.close();
    p.join_timeout(Duration::from_secs(30)).unwrap();
    assert!(p.worker_pids().is_empty());
}

/// Asserts that every task but the first (the long one) ended before it.
fn short_ones_ended_first(results: &[(u64, u128)]) {
    let (long_ms, long_end) = results[0];
    let late: Vec<usize> = (1..results.len())
        .filter(|&i| results[i].1 >= long_end)
        .collect();
    assert!(
        late.is_empty(),
        "tasks {late:?} of {} ended after the {long_ms} ms one",
        results.len() - 1
    );
}

/// Python's pool: no task waits behind a busy worker while another is
/// idle. Two workers, one 2 s task and twenty 10 ms ones: all the short
/// ones end while the long one still runs.
fn no_task_waits_behind_a_long_one(m: Method) {
    let p = pool(m, 2);
    let mut input = vec![2000u64];
    input.extend([10u64; 20]);
    let results = p.map_chunked(sleep_stamp, input.clone(), 1).unwrap();
    short_ones_ended_first(&results);
    // The same, one `apply_async` per task.
    let handles: Vec<_> = input
        .iter()
        .map(|&ms| p.apply_async(sleep_stamp, ms).unwrap())
        .collect();
    let results: Vec<(u64, u128)> = handles.iter().map(|h| h.get().unwrap()).collect();
    short_ones_ended_first(&results);
}

/// After a warm-up with tiny tasks the pool sends many chunks ahead; a
/// long task among them must not hold back the tiny ones queued behind it.
fn no_task_waits_behind_a_long_one_after_warm_up(m: Method) {
    let p = pool(m, 2);
    for _ in 0..3 {
        assert_eq!(
            p.map_chunked(square, 0..20_000u64, 1).unwrap().len(),
            20_000
        );
    }
    let mut input = vec![1000u64];
    input.extend([0u64; 255]);
    let results = p.map_chunked(sleep_stamp, input, 1).unwrap();
    short_ones_ended_first(&results);
    // The pool still works as before afterwards.
    assert_eq!(p.map(square, 0..100u64).unwrap()[99], 99 * 99);
}

/// As in Python, a result can be read again, and `ready`, `successful`
/// and `wait_timeout` keep answering; the consuming forms hand it over.
fn results_can_be_read_again(m: Method) {
    let p = pool(m, 2);
    let r = p.apply_async(square, 6).unwrap();
    for _ in 0..3 {
        assert_eq!(r.get().unwrap(), 36);
        assert_eq!(r.get_timeout(Duration::ZERO).unwrap(), 36);
        assert!(r.ready());
        assert!(r.wait_timeout(Duration::ZERO));
        assert_eq!(r.successful(), Some(true));
    }
    assert_eq!(r.into_value().unwrap(), 36);

    let bad = p.apply_async(panic_on_three, 3).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            bad.get(),
            Err(PoolError::Task {
                index: 0,
                error: TaskError::Panicked { .. }
            })
        ));
        assert_eq!(bad.successful(), Some(false));
    }

    let all = p.map_async(square, 0..20u64).unwrap();
    let first = all.get().unwrap();
    assert_eq!(all.get().unwrap(), first);
    assert_eq!(all.get_results().unwrap()[19], Ok(361));
    assert_eq!(all.successful(), Some(true));
    assert_eq!(all.into_values().unwrap(), first);

    let mixed = p.map_async(panic_on_three, 0..5).unwrap();
    assert!(matches!(mixed.get(), Err(PoolError::Task { index: 3, .. })));
    assert!(matches!(mixed.get(), Err(PoolError::Task { index: 3, .. })));
    let results = mixed.into_results().unwrap();
    assert_eq!(results[4], Ok(40));
    assert!(results[3].is_err());
}

/// Python's `callback` / `error_callback`: called in the parent once the
/// result is there, before the handle reports it ready; still called when
/// the handle was dropped.
fn callbacks_run_when_results_arrive(m: Method) {
    use std::sync::mpsc;
    let p = pool(m, 2);
    let long = Duration::from_secs(30);

    let (tx, rx) = mpsc::channel();
    let (etx, erx) = mpsc::channel::<TaskError>();
    let r = p
        .apply_async_with(
            square,
            7,
            move |v: &u64| tx.send(*v).unwrap(),
            move |e| etx.send(e.clone()).unwrap(),
        )
        .unwrap();
    if m == Method::Spawn {
        // A spawn pool has its own thread: nobody needs to wait.
        assert_eq!(rx.recv_timeout(long).unwrap(), 49);
    }
    assert_eq!(r.get().unwrap(), 49);
    // The callback ran before `get` returned.
    if m == Method::Fork {
        assert_eq!(rx.try_recv().unwrap(), 49);
    }
    assert!(erx.try_recv().is_err());

    let (tx, rx) = mpsc::channel::<i32>();
    let (etx, erx) = mpsc::channel();
    let r = p
        .apply_async_with(
            panic_on_three,
            3,
            move |v| tx.send(*v).unwrap(),
            move |e| etx.send(e.clone()).unwrap(),
        )
        .unwrap();
    assert!(r.get().is_err());
    assert!(matches!(
        erx.try_recv().unwrap(),
        TaskError::Panicked { .. }
    ));
    assert!(rx.try_recv().is_err());

    let (tx, rx) = mpsc::channel();
    let r = p
        .map_async_with(
            square,
            0..5u64,
            move |v: &[u64]| tx.send(v.to_vec()).unwrap(),
            |_| panic!("no task failed"),
        )
        .unwrap();
    r.wait();
    assert_eq!(rx.try_recv().unwrap(), vec![0, 1, 4, 9, 16]);
    assert_eq!(r.get().unwrap(), vec![0, 1, 4, 9, 16]);

    let (etx, erx) = mpsc::channel();
    let r = p
        .map_async_with(
            panic_on_three,
            0..6,
            |_: &[i32]| panic!("a task failed"),
            move |e| etx.send(e.to_string()).unwrap(),
        )
        .unwrap();
    r.wait();
    assert!(erx.try_recv().unwrap().contains("task 3 failed"));

    // A dropped handle's callback still runs.
    let (tx, rx) = mpsc::channel();
    drop(
        p.apply_async_with(sleep_ms, 50, move |v: &u64| tx.send(*v).unwrap(), |_| {})
            .unwrap(),
    );
    if m == Method::Fork {
        // A fork pool moves while someone waits on it.
        assert_eq!(p.apply(sleep_ms, 100).unwrap(), 100);
    }
    assert_eq!(rx.recv_timeout(long).unwrap(), 50);
}

/// `Imap::next_timeout` gives up without losing the iterator (Python's
/// `next(timeout)`), in order and unordered.
fn imap_next_timeout(m: Method) {
    let p = pool(m, 2);
    for ordered in [true, false] {
        let input = vec![400u64, 400];
        let mut it = if ordered {
            p.imap(sleep_ms, input).unwrap()
        } else {
            p.imap_unordered(sleep_ms, input).unwrap()
        };
        assert!(matches!(
            it.next_timeout(Duration::ZERO),
            Err(PoolError::Timeout(_))
        ));
        let long = Duration::from_secs(30);
        assert_eq!(it.next_timeout(long).unwrap(), Some(Ok(400)));
        assert_eq!(it.next_timeout(long).unwrap(), Some(Ok(400)));
        assert_eq!(it.next_timeout(long).unwrap(), None);
        assert_eq!(it.next_timeout(Duration::MAX).unwrap(), None);
    }
}

both_methods!(
    imap_next_timeout,
    results_can_be_read_again,
    callbacks_run_when_results_arrive,
    no_task_waits_behind_a_long_one,
    no_task_waits_behind_a_long_one_after_warm_up,
    large_arguments_and_results,
    large_results_among_tiny_ones,
    dropped_imap_then_close_and_join,
    an_input_that_panics_midway_leaves_the_pool_usable,
    a_map_of_large_chunks_reads_its_input_as_chunks_finish,
    early_chunks_decoded_before_a_late_failure,
    results_in_every_form,
    a_panic_fails_only_its_task,
    exit_mid_task_fails_that_task,
    abort_mid_task_names_the_signal,
    sigkill_from_outside_mid_task,
    sigint_leaves_the_workers_to_the_pool,
    a_death_fails_the_whole_chunk_only,
    dying_while_sending_the_result,
    an_undecodable_result_fails_its_task,
    an_unencodable_result_fails_its_task,
    an_undecodable_argument_fails_its_chunk_unrun,
    initializer_panics_always,
    initializer_exits_always,
    initializer_failing_once_costs_a_restart,
    maxtasksperchild_recycles_workers,
    terminate_with_pending_tasks,
    dropping_the_pool_terminates_it,
    close_then_join_finishes_the_work,
    progress_and_timeouts,
    handles_travel_as_arguments,
);

#[test]
fn bad_arguments_are_errors() {
    assert!(matches!(Pool::new(0), Err(PoolError::Invalid(_))));
    assert!(matches!(
        Pool::builder().processes(1).maxtasksperchild(0).build(),
        Err(PoolError::Invalid(_))
    ));
    let p = Pool::new(1).unwrap();
    assert!(matches!(
        p.map_chunked(square, 0..3, 0),
        Err(PoolError::Invalid(_))
    ));
}

#[test]
fn several_threads_share_one_pool() {
    common::watchdog(common::LIMIT, || {
        let p = Pool::new(2).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let p = &p;
                s.spawn(move || {
                    for round in 0..5u64 {
                        let base = t * 1000 + round * 100;
                        let got = p.map_chunked(square, base..base + 50, 3).unwrap();
                        let want: Vec<u64> = (base..base + 50).map(|x| x * x).collect();
                        assert_eq!(got, want);
                        assert_eq!(p.apply(square, base).unwrap(), base * base);
                    }
                });
            }
        });
    })
}

/// Restricts this process to one CPU, then builds a pool of the default
/// size; returns its size and `cpu_count()`.
fn default_pool_under_one_cpu(_: ()) -> (usize, usize, usize) {
    let mine = rustix::thread::sched_getaffinity(None).unwrap();
    let cpu = (0..rustix::thread::CpuSet::MAX_CPU)
        .find(|&c| mine.is_set(c))
        .unwrap();
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpu);
    rustix::thread::sched_setaffinity(None, &one).unwrap();
    let p = Pool::builder().build().unwrap();
    assert_eq!(p.map(square, 0..10u64).unwrap()[9], 81);
    (p.processes(), p.worker_pids().len(), multiproc::cpu_count())
}

#[test]
fn default_size_follows_cpu_affinity() {
    let (processes, pids, cpus) = common::in_child(default_pool_under_one_cpu, ());
    assert_eq!((processes, pids), (1, 1));
    // `cpu_count` stays Python's: the CPUs online, not the usable ones.
    assert_eq!(cpus, multiproc::cpu_count());
    // Without a restriction the default follows the usable CPUs too.
    let usable = std::thread::available_parallelism().unwrap().get();
    let p = Pool::builder().build().unwrap();
    assert_eq!(p.processes(), usable);
}
