//! Processes end to end, with real children and both start methods: return
//! values, exit codes, signals, panics, identities, start errors, and the
//! process tree's lifetime rules (children die with their parent, daemons
//! are terminated and the others waited for when a parent finishes, a child
//! started from a short-lived thread survives that thread).

#[macro_use]
mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{LIMIT, Method, in_child, pattern, wait_gone, watchdog};
use multiproc::codec::SharedFd;
use multiproc::{
    Connection, JoinError, Process, RecvError, StartError, StartMethod, active_children, cpu_count,
    current_process, parent_process, pipe,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- targets

fn add_one(x: i64) -> i64 {
    x + 1
}

fn shout(s: String) -> String {
    s.to_uppercase()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u32,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
    nested: (i8, Vec<u16>),
}

fn make_record(id: u32) -> Record {
    Record {
        id,
        name: format!("record {id}"),
        tags: vec!["a".into(), "bb".into()],
        score: Some(id as f64 / 2.0),
        nested: (-3, vec![1, 2, 65535]),
    }
}

fn big_vec(len: usize) -> Vec<u8> {
    pattern(len)
}

fn checksum(v: Vec<u8>) -> (usize, u64) {
    (v.len(), v.iter().map(|&b| b as u64).sum())
}

/// Returns one end of a pipe it made, after writing to the other end.
fn hand_back_a_pipe(greeting: String) -> (String, Connection) {
    let (mine, yours) = pipe().unwrap();
    mine.send(&greeting).unwrap();
    ("kept".into(), yours)
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn panic_with(message: String) {
    common::quiet_panics();
    panic!("{message}")
}

fn panic_static(_: ()) {
    common::quiet_panics();
    panic!("a static message")
}

/// Blocks until told to stop or until the other end goes away.
fn wait_on(conn: Connection) {
    let _ = conn.recv::<()>();
}

/// Says it is running, then blocks like [`wait_on`].
fn ready_then_wait(conn: Connection) {
    conn.send(&"ready").unwrap();
    let _ = conn.recv::<()>();
}

#[derive(Debug, Serialize, Deserialize)]
struct Who {
    name: String,
    pid: i32,
    daemon: bool,
    parent: Option<(String, i32)>,
}

fn whoami(_: ()) -> Who {
    let me = current_process();
    Who {
        name: me.name,
        pid: me.pid,
        daemon: me.daemon,
        parent: parent_process().map(|p| (p.name, p.pid)),
    }
}

/// Starts a grandchild with the default name; returns (own name, its name,
/// what the grandchild says about itself).
fn name_grandchild(m: Method) -> (String, String, Who) {
    let mut g = Process::new(whoami, ()).start_method(m.start());
    g.start().unwrap();
    let gname = g.get_name().unwrap().to_string();
    (current_process().name, gname, g.join().unwrap())
}

// -------------------------------------------------------------- scenarios

fn join_returns_values(m: Method) {
    let mut p = Process::new(add_one, 41).start_method(m.start());
    assert_eq!(p.pid(), None);
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
    assert!(matches!(p.join(), Err(JoinError::NotStarted)));
    p.start().unwrap();
    assert!(p.pid().unwrap() > 0);
    assert_eq!(p.join().unwrap(), 42);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert!(matches!(p.join(), Err(JoinError::AlreadyJoined)));

    let mut p = Process::new(shout, "hello, child".to_string()).start_method(m.start());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), "HELLO, CHILD");

    let mut p = Process::new(make_record, 7).start_method(m.start());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), make_record(7));

    // Far larger than a socket buffer: the child blocks sending it until
    // join reads.
    let len = 3 << 20;
    let mut p = Process::new(big_vec, len).start_method(m.start());
    p.start().unwrap();
    let got = p.join().unwrap();
    assert_eq!(got.len(), len);
    assert!(got == pattern(len), "large result corrupted");

    // Large arguments.
    let arg = pattern(len);
    let sum = arg.iter().map(|&b| b as u64).sum();
    let mut p = Process::new(checksum, arg).start_method(m.start());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (len, sum));

    // A handle inside the result.
    let mut p =
        Process::new(hand_back_a_pipe, "from the child".to_string()).start_method(m.start());
    p.start().unwrap();
    let (word, conn) = p.join().unwrap();
    assert_eq!(word, "kept");
    assert_eq!(conn.recv::<String>().unwrap(), "from the child");
    assert!(matches!(
        conn.recv::<String>(),
        Err(RecvError::Disconnected)
    ));

    // A large result collected by many short join_timeouts.
    let mut p = Process::new(big_vec, len).start_method(m.start());
    p.start().unwrap();
    let got = loop {
        match p.join_timeout(Duration::from_millis(1)) {
            Ok(v) => break v,
            Err(JoinError::Timeout(_)) => {}
            Err(e) => panic!("join_timeout: {e}"),
        }
    };
    assert!(got == pattern(len), "large result corrupted");

    // A large result polled by is_alive while it arrives.
    let mut p = Process::new(big_vec, len).start_method(m.start());
    p.start().unwrap();
    while p.is_alive() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(p.join().unwrap() == pattern(len), "large result corrupted");
}

/// Results of every size around the largest a forked child sends without
/// asking its parent to read as it sends (2 KiB), up to several socket
/// buffers: each arrives whole, by `join` and while `is_alive` polls; a long
/// panic message too.
fn results_around_the_quiet_size(m: Method) {
    for len in [0, 1, 1990, 2030, 2048, 2049, 2100, 4700, 70_000, 600_000] {
        let mut p = Process::new(big_vec, len).start_method(m.start());
        p.start().unwrap();
        let got = p.join().unwrap();
        assert!(got == pattern(len), "result of {len} bytes corrupted");

        let mut p = Process::new(big_vec, len).start_method(m.start());
        p.start().unwrap();
        while p.is_alive() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            p.join().unwrap() == pattern(len),
            "result of {len} bytes corrupted"
        );
    }
    for len in [2040, 9000] {
        let message = "m".repeat(len);
        let mut p = Process::new(panic_with, message.clone()).start_method(m.start());
        p.start().unwrap();
        match p.join() {
            Err(JoinError::Panicked { message: got }) => assert!(got == message),
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
}

fn join_timeout_then_join(m: Method) {
    let mut p = Process::new(sleep_ms, 600).start_method(m.start());
    p.start().unwrap();
    let short = Duration::from_millis(30);
    match p.join_timeout(short) {
        Err(JoinError::Timeout(t)) => assert_eq!(t, short),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    // The longest timeout means no limit.
    assert_eq!(p.join_timeout(Duration::MAX).unwrap(), 600);
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
}

fn exit_codes(m: Method) {
    for code in [3, 0, 255] {
        let mut p = Process::new(exit_with, code).start_method(m.start());
        p.start().unwrap();
        match p.join() {
            Err(JoinError::Exited { code: c }) => assert_eq!(c, code),
            other => panic!("exit({code}): expected Exited, got {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(code));
    }
}

fn kill_and_terminate(m: Method) {
    for (sig, code) in [(9, -9), (15, -15)] {
        let (here, there) = pipe().unwrap();
        let mut p = Process::new(ready_then_wait, there).start_method(m.start());
        p.start().unwrap();
        assert_eq!(here.recv_timeout::<String>(LIMIT).unwrap(), "ready");
        assert!(p.is_alive());
        if sig == 9 {
            p.kill().unwrap();
        } else {
            p.terminate().unwrap();
        }
        // exitcode() notices the end on its own.
        while p.exitcode().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(p.exitcode(), Some(code));
        match p.join_timeout(LIMIT) {
            Err(JoinError::Killed { signal }) => assert_eq!(signal, sig),
            other => panic!("expected Killed by {sig}, got {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(code));
        assert!(!p.is_alive());
        // Signalling a reaped child is harmless.
        p.kill().unwrap();
        p.terminate().unwrap();
        assert!(matches!(here.recv::<()>(), Err(RecvError::Disconnected)));
    }
}

fn panics_are_reported(m: Method) {
    let mut p = Process::new(panic_with, "boom 17".to_string()).start_method(m.start());
    p.start().unwrap();
    match p.join() {
        Err(JoinError::Panicked { message }) => assert_eq!(message, "boom 17"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(1));

    let mut p = Process::new(panic_static, ()).start_method(m.start());
    p.start().unwrap();
    match p.join() {
        Err(JoinError::Panicked { message }) => assert_eq!(message, "a static message"),
        other => panic!("expected Panicked, got {other:?}"),
    }
}

/// `(write end of a pipe, RUST_BACKTRACE)`: sends this child's stderr into
/// the pipe, sets the variable, then panics (with the crate's own report).
fn panic_into_pipe((stderr, backtrace): (SharedFd, String)) {
    // SAFETY: descriptor 2 is replaced by a duplicate of a descriptor this
    // function owns; nothing holds a borrow of the old stderr.
    let replaced = unsafe { libc::dup2(stderr.fd().as_raw_fd(), 2) };
    assert_eq!(replaced, 2, "dup2 onto stderr");
    drop(stderr);
    // SAFETY: this child runs no other thread that reads or writes the
    // environment.
    unsafe { std::env::set_var("RUST_BACKTRACE", backtrace) };
    panic!("boom on stderr")
}

fn a_panic_is_reported_in_one_line(m: Method) {
    for (backtrace, lines_wanted) in [("0", 1..2), ("1", 2..usize::MAX)] {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let args = (SharedFd::new(writer.into()), backtrace.to_string());
        let mut p = Process::new(panic_into_pipe, args).start_method(m.start());
        p.start().unwrap();
        match p.join() {
            Err(JoinError::Panicked { message }) => assert_eq!(message, "boom on stderr"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        // The child is gone and the process handle with it: the pipe ends.
        drop(p);
        let mut stderr = String::new();
        reader.read_to_string(&mut stderr).unwrap();
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("multiproc: Process-")
                && first.contains(" panicked at tests/process.rs:")
                && first.ends_with(": boom on stderr"),
            "RUST_BACKTRACE={backtrace}: {stderr}"
        );
        assert!(
            lines_wanted.contains(&stderr.lines().count()),
            "RUST_BACKTRACE={backtrace}: {stderr}"
        );
        assert_eq!(
            stderr.contains("stack backtrace:"),
            backtrace != "0",
            "{stderr}"
        );
    }
}

fn identities(m: Method) {
    let me = current_process();
    assert_eq!(me.pid, std::process::id() as i32);

    let mut p = Process::new(whoami, ()).start_method(m.start());
    p.start().unwrap();
    let default_name = p.get_name().unwrap().to_string();
    let number = default_name
        .strip_prefix("Process-")
        .unwrap_or_else(|| panic!("default name {default_name:?}"));
    let last = number.rsplit(':').next().unwrap();
    assert!(last.parse::<u32>().is_ok(), "default name {default_name:?}");
    let pid = p.pid().unwrap();
    let who = p.join().unwrap();
    assert_eq!(who.name, default_name);
    assert_eq!(who.pid, pid);
    assert!(!who.daemon);
    assert_eq!(who.parent, Some((me.name.clone(), me.pid)));

    let mut p = Process::new(whoami, ())
        .name("worker")
        .daemon(true)
        .start_method(m.start());
    assert_eq!(p.get_name(), Some("worker"));
    p.start().unwrap();
    let who = p.join().unwrap();
    assert_eq!(who.name, "worker");
    assert!(who.daemon);

    // A grandchild is named after its parent: Process-N:1.
    let mut p = Process::new(name_grandchild, m).start_method(m.start());
    p.start().unwrap();
    let (child_name, grandchild_name, gwho) = p.join().unwrap();
    assert_eq!(grandchild_name, format!("{child_name}:1"));
    assert_eq!(gwho.name, grandchild_name);
    assert_eq!(gwho.parent.unwrap().0, child_name);
}

fn active_children_lists_running(m: Method) {
    let (here, there) = pipe().unwrap();
    let mut p = Process::new(ready_then_wait, there)
        .name("listed")
        .start_method(m.start());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert_eq!(here.recv_timeout::<String>(LIMIT).unwrap(), "ready");
    let listed = active_children();
    let entry = listed.iter().find(|c| c.pid == pid).expect("child listed");
    assert_eq!(entry.name, "listed");
    here.send(&()).unwrap();
    p.join_timeout(LIMIT).unwrap();
    assert!(active_children().iter().all(|c| c.pid != pid));
}

fn start_twice(m: Method) {
    let mut p = Process::new(add_one, 1).start_method(m.start());
    p.start().unwrap();
    assert!(matches!(p.start(), Err(StartError::AlreadyStarted)));
    assert_eq!(p.join().unwrap(), 2);
    assert!(matches!(p.start(), Err(StartError::AlreadyStarted)));
}

/// A thread that starts a child and ends at once: the child must live on
/// (it would be killed with the thread if that thread were its parent).
fn survives_short_lived_thread(m: Method) {
    // Only spawn can start from a second thread; `m` only says how this
    // scenario itself runs.
    let _ = m;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut p = Process::new(sleep_ms, 400).start_method(StartMethod::Spawn);
        p.start().unwrap();
        tx.send(p).unwrap();
    })
    .join()
    .unwrap();
    let mut p = rx.recv().unwrap();
    assert_eq!(p.join_timeout(LIMIT).unwrap(), 400);
}

both_methods!(
    join_returns_values,
    results_around_the_quiet_size,
    join_timeout_then_join,
    exit_codes,
    kill_and_terminate,
    panics_are_reported,
    a_panic_is_reported_in_one_line,
    identities,
    active_children_lists_running,
    start_twice,
    survives_short_lived_thread,
);

// ---------------------------------------------------------- single tests

#[test]
fn cpu_count_is_positive() {
    assert!(cpu_count() > 0);
}

#[test]
fn main_process_identity() {
    assert_eq!(current_process().name, "MainProcess");
    assert!(parent_process().is_none());
}

/// Tries to fork while a second thread runs.
fn fork_with_a_thread(_: ()) -> usize {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let mut p = Process::new(add_one, 1).start_method(StartMethod::Fork);
    let threads = match p.start() {
        Err(StartError::ForkWithThreads { threads }) => threads,
        other => panic!("expected ForkWithThreads, got {other:?}"),
    };
    assert!(threads >= 2, "reported {threads} threads");
    assert!(matches!(p.join(), Err(JoinError::NotStarted)));
    drop(tx);
    t.join().unwrap();
    threads
}

#[test]
fn fork_refused_with_threads() {
    watchdog(LIMIT, || fork_with_a_thread(()));
    // Also from a process whose main thread is the only other one.
    assert!(in_child(fork_with_a_thread, ()) >= 2);
}

/// Forks work in a single-threaded child, from the main thread.
fn fork_allowed_single_threaded(_: ()) -> i64 {
    let mut p = Process::new(add_one, 9).start_method(StartMethod::Fork);
    p.start().unwrap();
    p.join().unwrap()
}

#[test]
fn fork_allowed_when_single_threaded() {
    assert_eq!(in_child(fork_allowed_single_threaded, ()), 10);
}

/// Forked children one after another, each kind of ending followed by a
/// plain child (the socket pair of a child reaped clean is reused by the
/// next): every value arrives whole, and the sockets held afterwards are no
/// more than before plus one spare pair. Then a process forked by other
/// means than the crate (holding a copy of that spare) starts and joins
/// children of its own while this one does too.
fn forked_children_in_a_row(_: ()) -> Result<(), String> {
    let plain = |x: i64| -> Result<(), String> {
        let mut p = Process::new(add_one, x).start_method(StartMethod::Fork);
        p.start().map_err(|e| e.to_string())?;
        match p.join() {
            Ok(v) if v == x + 1 => Ok(()),
            other => Err(format!("plain child after {x}: {other:?}")),
        }
    };
    let before = common::socket_inodes().len();
    for round in 0..3 {
        plain(round)?;
        let len = 1 << 20;
        let mut p = Process::new(big_vec, len).start_method(StartMethod::Fork);
        p.start().map_err(|e| e.to_string())?;
        if p.join().map_err(|e| e.to_string())? != pattern(len) {
            return Err("large result corrupted".into());
        }
        plain(10 + round)?;
        let mut p =
            Process::new(hand_back_a_pipe, "in a row".to_string()).start_method(StartMethod::Fork);
        p.start().map_err(|e| e.to_string())?;
        let (_, conn) = p.join().map_err(|e| e.to_string())?;
        if conn.recv::<String>().map_err(|e| e.to_string())? != "in a row" {
            return Err("the returned handle lost its message".into());
        }
        drop(conn);
        plain(20 + round)?;
        let mut p =
            Process::new(panic_with, "in a row".to_string()).start_method(StartMethod::Fork);
        p.start().map_err(|e| e.to_string())?;
        if !matches!(p.join(), Err(JoinError::Panicked { .. })) {
            return Err("a panic was not reported".into());
        }
        plain(30 + round)?;
        let (there, here) = pipe().map_err(|e| e.to_string())?;
        let mut p = Process::new(ready_then_wait, there).start_method(StartMethod::Fork);
        p.start().map_err(|e| e.to_string())?;
        here.recv::<String>().map_err(|e| e.to_string())?;
        p.kill().map_err(|e| e.to_string())?;
        if !matches!(p.join(), Err(JoinError::Killed { signal: 9 })) {
            return Err("a killed child was not reported".into());
        }
        plain(40 + round)?;
        // Two at once, joined in the other order.
        let mut a = Process::new(add_one, 50).start_method(StartMethod::Fork);
        let mut b = Process::new(add_one, 60).start_method(StartMethod::Fork);
        a.start().map_err(|e| e.to_string())?;
        b.start().map_err(|e| e.to_string())?;
        if (b.join().ok(), a.join().ok()) != (Some(61), Some(51)) {
            return Err("two children at once mixed their values".into());
        }
    }
    let after = common::socket_inodes().len();
    if after > before + 2 {
        return Err(format!("sockets held: {before} before, {after} after"));
    }
    // SAFETY: this scenario's process has one thread; the child below only
    // starts and joins processes, then leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = (0..3).all(|x| plain(100 + x).is_ok());
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    for x in 0..3 {
        plain(200 + x)?;
    }
    let mut status = 0;
    // SAFETY: `pid` is this process's child; `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid || status != 0 {
        return Err(format!(
            "the otherwise forked process ended with status {status}"
        ));
    }
    plain(300)
}

#[test]
fn forked_children_reuse_clean_sockets() {
    in_child(forked_children_in_a_row, ()).unwrap();
}

// ------------------------------------------------------- process lifetimes

/// Starts sleeping grandchildren in every way there is, reports their pids
/// and waits to be killed. Each grandchild blocks on a connection whose
/// other end the test holds, so a survivor still ends with the test.
fn doomed_parent((report, mut holds): (Connection, Vec<Connection>)) {
    let mut kids = Vec::new();
    for (method, daemon) in [
        (StartMethod::Fork, false),
        (StartMethod::Fork, true),
        (StartMethod::Spawn, false),
        (StartMethod::Spawn, true),
    ] {
        let mut p = Process::new(wait_on, holds.pop().unwrap())
            .daemon(daemon)
            .start_method(method);
        p.start().unwrap();
        kids.push(p);
    }
    // One more from a thread that ends at once (through the launcher).
    let hold = holds.pop().unwrap();
    let p = std::thread::spawn(move || {
        let mut p = Process::new(wait_on, hold).start_method(StartMethod::Spawn);
        p.start().unwrap();
        p
    })
    .join()
    .unwrap();
    kids.push(p);
    let pids: Vec<i32> = kids.iter().map(|p| p.pid().unwrap()).collect();
    report.send(&pids).unwrap();
    let _ = report.recv::<()>();
}

#[test]
fn grandchildren_die_with_killed_parent() {
    watchdog(LIMIT, || {
        let (report, report_child) = pipe().unwrap();
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..5 {
            let (a, b) = pipe().unwrap();
            ours.push(a);
            theirs.push(b);
        }
        let mut parent = Process::new(doomed_parent, (report_child, theirs));
        parent.start().unwrap();
        let pids: Vec<i32> = report.recv_timeout(LIMIT).unwrap();
        assert_eq!(pids.len(), 5);
        for &pid in &pids {
            assert!(!common::is_gone(pid), "grandchild {pid} not running");
        }
        parent.kill().unwrap();
        assert!(matches!(
            parent.join_timeout(LIMIT),
            Err(JoinError::Killed { signal: 9 })
        ));
        let survivors: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&pid| !wait_gone(pid, Duration::from_secs(10)))
            .collect();
        assert!(
            survivors.is_empty(),
            "grandchildren still alive: {survivors:?}"
        );
        drop(ours);
    });
}

/// Sleeps, then says "done" (so the test learns it ran to the end).
fn finish_late(done: Connection) {
    std::thread::sleep(Duration::from_millis(300));
    done.send(&"done").unwrap();
}

fn sleep_long(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts a daemon grandchild and a non-daemon one, then returns (or calls
/// `exit(exit_code)`) without joining them.
fn leaves_grandchildren((m, done, exit_code): (Method, Connection, Option<i32>)) -> (i32, i32) {
    let mut daemon = Process::new(sleep_long, ())
        .daemon(true)
        .start_method(m.start());
    daemon.start().unwrap();
    let mut worker = Process::new(finish_late, done).start_method(m.start());
    worker.start().unwrap();
    let pids = (daemon.pid().unwrap(), worker.pid().unwrap());
    if let Some(code) = exit_code {
        std::process::exit(code);
    }
    pids
}

fn daemon_terminated_worker_waited(m: Method, exit_code: Option<i32>) {
    watchdog(LIMIT, move || {
        let (done, done_child) = pipe().unwrap();
        let mut child = Process::new(leaves_grandchildren, (m, done_child, exit_code));
        child.start().unwrap();
        let (daemon, worker) = match (child.join_timeout(LIMIT), exit_code) {
            (Ok(pids), None) => pids,
            (Err(JoinError::Exited { code }), Some(c)) if code == c => (0, 0),
            (other, _) => panic!("unexpected outcome {other:?}"),
        };
        // The child waited for the worker before ending: its message is
        // there (had it been killed with the child, it would not be).
        assert_eq!(done.recv_timeout::<String>(LIMIT).unwrap(), "done");
        assert!(matches!(
            done.recv_timeout::<String>(LIMIT),
            Err(RecvError::Disconnected)
        ));
        if exit_code.is_none() {
            assert!(wait_gone(worker, Duration::from_secs(10)));
            // The daemon (which sleeps a minute) was not waited for, and is
            // gone.
            assert!(wait_gone(daemon, Duration::from_secs(10)));
        }
    });
}

#[test]
fn daemon_terminated_worker_waited_spawn() {
    daemon_terminated_worker_waited(Method::Spawn, None);
}

#[test]
fn daemon_terminated_worker_waited_fork() {
    daemon_terminated_worker_waited(Method::Fork, None);
}

/// `exit()` in a child runs the exit handler that waits for its own
/// children.
#[test]
fn exit_waits_for_worker_spawn() {
    daemon_terminated_worker_waited(Method::Spawn, Some(4));
}

#[test]
fn exit_waits_for_worker_fork() {
    daemon_terminated_worker_waited(Method::Fork, Some(4));
}

fn nap_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// `sentinel` becomes readable when the child ends; `multiproc::wait`
/// takes processes, connections and descriptors together and says which
/// are ready; `close` refuses a running child and releases a finished one.
fn sentinel_wait_and_close(m: Method) {
    use multiproc::{Waitable, wait};
    let mut short = multiproc::Process::new(nap_ms, 50).start_method(m.start());
    let mut long = multiproc::Process::new(nap_ms, 60_000).start_method(m.start());
    assert!(short.sentinel().is_none());
    assert_eq!(
        wait(&[&short], Some(Duration::ZERO)).unwrap(),
        Vec::<usize>::new()
    );
    short.start().unwrap();
    long.start().unwrap();
    let (a, b) = multiproc::pipe().unwrap();
    {
        let objects: [&dyn Waitable; 3] = [&a, &long, &short];
        assert_eq!(
            wait(&objects, Some(Duration::from_secs(30))).unwrap(),
            vec![2]
        );
        b.send(&1u8).unwrap();
        assert_eq!(
            wait(&objects, Some(Duration::from_secs(30))).unwrap(),
            vec![0, 2]
        );
        let fd = short.sentinel().unwrap();
        assert_eq!(wait(&[&fd], Some(Duration::ZERO)).unwrap(), vec![0]);
        let fd = long.sentinel().unwrap();
        assert_eq!(
            wait(&[&fd], Some(Duration::ZERO)).unwrap(),
            Vec::<usize>::new()
        );
    }
    let err = long.close().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy);
    assert!(long.pid().is_some());
    long.kill().unwrap();
    assert!(long.join_timeout(Duration::from_secs(30)).is_err());
    long.close().unwrap();
    assert_eq!(short.join_timeout(Duration::from_secs(30)).unwrap(), 50);
    short.close().unwrap();
    assert_eq!((short.pid(), short.exitcode()), (None, None));
    assert!(short.sentinel().is_none());
    assert!(matches!(short.join(), Err(JoinError::NotStarted)));
    // Never started: nothing to release.
    multiproc::Process::new(nap_ms, 1).close().unwrap();
}

both_methods!(sentinel_wait_and_close);
