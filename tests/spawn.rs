//! `spawn`, `Builder` and `JoinHandle` end to end, with real children and
//! both start methods: return values, panics, the child's name, daemon
//! flag, environment and standard streams, `join_timeout` handing the handle
//! back, kill/terminate, sentinels, and the failure modes of `spawn` and
//! `Builder::spawn`.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{LONG, Method, in_child, quiet_panics, watchdog};
use multiproc::{
    Builder, JoinError, JoinHandle, JoinTimeoutError, StartError, StartMethod, Stdio,
    current_process,
};

// ---------------------------------------------------------------- targets

fn add_one(x: i64) -> i64 {
    x + 1
}

fn nap_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn panic_with(message: String) {
    quiet_panics();
    panic!("{message}")
}

/// (name, daemon) as the child sees itself.
fn who(_: ()) -> (String, bool) {
    let me = current_process();
    (me.name().to_string(), me.daemon())
}

/// The values of `keys` in the child's environment, and how many times
/// each appears in it.
fn read_env(keys: Vec<String>) -> BTreeMap<String, (Option<String>, usize)> {
    keys.into_iter()
        .map(|k| {
            let count = std::env::vars_os().filter(|(name, _)| *name == *k).count();
            let value = std::env::var(&k).ok();
            (k, (value, count))
        })
        .collect()
}

/// What descriptors 0, 1 and 2 refer to, after (if `write`) writing to
/// stdout and stderr, which `Stdio::Null` streams swallow.
fn stdio_targets(write: bool) -> Vec<String> {
    use std::io::Write;
    if write {
        let _ = writeln!(std::io::stdout(), "multiproc spawn test: silenced stdout");
        let _ = std::io::stdout().flush();
        let _ = writeln!(std::io::stderr(), "multiproc spawn test: silenced stderr");
    }
    (0..3).map(fd_target).collect()
}

fn fd_target(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("({e})"))
}

fn builder(m: Method) -> Builder {
    Builder::new().start_method(m.start())
}

// -------------------------------------------------------------- scenarios

fn join_returns_the_value(m: Method) {
    let child = builder(m).spawn(add_one, 41).unwrap();
    assert!(child.pid() > 0);
    assert_eq!(child.join().unwrap(), 42);

    // The default start method, in one call.
    let child: JoinHandle<i64> = multiproc::spawn(add_one, -1);
    assert_eq!(child.join().unwrap(), 0);

    // join_timeout returns the value when the child ends in time.
    let child = builder(m).spawn(add_one, 1).unwrap();
    assert_eq!(child.join_timeout(LONG).unwrap(), 2);
}

fn a_panic_is_an_error(m: Method) {
    let child = builder(m)
        .stderr(Stdio::Null)
        .spawn(panic_with, "boom 23".to_string())
        .unwrap();
    match child.join() {
        Err(JoinError::Panicked { message }) => assert_eq!(message, "boom 23"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The same through join_timeout.
    let child = builder(m).spawn(panic_with, "boom 24".to_string()).unwrap();
    match child.join_timeout(LONG) {
        Err(JoinTimeoutError::Join(JoinError::Panicked { message })) => {
            assert_eq!(message, "boom 24")
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

fn name_and_daemon_reach_the_child(m: Method) {
    let child = builder(m).name("worker-7").spawn(who, ()).unwrap();
    assert_eq!(child.name(), "worker-7");
    assert_eq!(child.join().unwrap(), ("worker-7".to_string(), false));

    let child = builder(m).daemon(true).spawn(who, ()).unwrap();
    let default_name = child.name().to_string();
    assert!(
        default_name.starts_with("Process-"),
        "default name {default_name:?}"
    );
    assert_eq!(child.join().unwrap(), (default_name, true));
}

fn env_reaches_the_child(m: Method) {
    let keys = vec![
        "MULTIPROC_SPAWN_TEST_A".to_string(),
        "MULTIPROC_SPAWN_TEST_B".to_string(),
        "PATH".to_string(),
    ];
    let child = builder(m)
        .env("MULTIPROC_SPAWN_TEST_A", "first")
        .env("MULTIPROC_SPAWN_TEST_A", "alpha")
        .env("MULTIPROC_SPAWN_TEST_B", "")
        .env("PATH", "/nowhere")
        .spawn(read_env, keys)
        .unwrap();
    let seen = child.join().unwrap();
    assert_eq!(seen["MULTIPROC_SPAWN_TEST_A"], (Some("alpha".into()), 1));
    assert_eq!(seen["MULTIPROC_SPAWN_TEST_B"], (Some(String::new()), 1));
    // An inherited variable is replaced, not doubled.
    assert_eq!(seen["PATH"], (Some("/nowhere".into()), 1));
    // The parent's environment is untouched.
    assert!(std::env::var_os("MULTIPROC_SPAWN_TEST_A").is_none());
    assert_ne!(std::env::var("PATH").ok().as_deref(), Some("/nowhere"));

    // Without settings the child inherits the parent's environment.
    let child = builder(m)
        .spawn(read_env, vec!["PATH".to_string()])
        .unwrap();
    assert_eq!(child.join().unwrap()["PATH"].0, std::env::var("PATH").ok());
}

fn stdio_null_silences_the_child(m: Method) {
    let child = builder(m)
        .stdin(Stdio::Null)
        .stdout(Stdio::Null)
        .stderr(Stdio::Null)
        .spawn(stdio_targets, true)
        .unwrap();
    assert_eq!(child.join().unwrap(), vec!["/dev/null"; 3]);

    // One stream only; the others are the parent's (the child writes
    // nothing this time, to keep the test run quiet).
    let child = builder(m)
        .stdout(Stdio::Null)
        .stderr(Stdio::Inherit)
        .spawn(stdio_targets, false)
        .unwrap();
    let got = child.join().unwrap();
    assert_eq!(got[0], fd_target(0));
    assert_eq!(got[1], "/dev/null");
    assert_eq!(got[2], fd_target(2));
}

fn join_timeout_gives_the_handle_back(m: Method) {
    let child = builder(m).spawn(nap_ms, 60_000).unwrap();
    let pid = child.pid();
    let child = match child.join_timeout(Duration::from_millis(20)) {
        Err(JoinTimeoutError::Timeout(child)) => child,
        other => panic!("expected a timeout, got {other:?}"),
    };
    assert_eq!(child.pid(), pid);
    assert!(!child.is_finished());
    assert_eq!(child.code(), None);
    child.kill().unwrap();
    // The sentinel becomes readable once the child has ended.
    assert_eq!(
        multiproc::wait(&[&child.sentinel()], Some(LONG)).unwrap(),
        vec![0]
    );
    assert!(child.is_finished());
    assert_eq!(child.code(), Some(-9));
    assert!(matches!(child.join(), Err(JoinError::Killed { signal: 9 })));

    let child = builder(m).spawn(nap_ms, 60_000).unwrap();
    child.terminate().unwrap();
    assert_eq!(multiproc::wait(&[&child], Some(LONG)).unwrap(), vec![0]);
    assert!(matches!(
        child.join_timeout(Duration::MAX),
        Err(JoinTimeoutError::Join(JoinError::Killed { signal: 15 }))
    ));
}

both_methods!(
    join_returns_the_value,
    a_panic_is_an_error,
    name_and_daemon_reach_the_child,
    env_reaches_the_child,
    stdio_null_silences_the_child,
    join_timeout_gives_the_handle_back,
);

/// In a child with a second thread and fork as its default start method:
/// `Builder::spawn` returns the refusal, `spawn` panics with it.
fn refused_fork(_: ()) -> (bool, String) {
    multiproc::set_start_method(StartMethod::Fork);
    let (stop, wait) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _ = wait.recv();
    });
    let refused = matches!(
        Builder::new().spawn(add_one, 1),
        Err(StartError::ForkWithThreads { .. })
    );
    quiet_panics();
    let panic = std::panic::catch_unwind(|| multiproc::spawn(add_one, 1)).unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    drop(stop);
    thread.join().unwrap();
    (refused, message)
}

#[test]
fn spawn_panics_where_builder_returns_an_error() {
    let (refused, message) = in_child(refused_fork, ());
    assert!(refused, "Builder::spawn did not return ForkWithThreads");
    assert!(
        message.starts_with("multiproc::spawn: failed to start a child process: refusing to fork"),
        "panic message {message:?}"
    );
}

/// A child started by one test thread is joined from another thread: the
/// handle is `Send`.
#[test]
fn a_handle_moves_between_threads() {
    watchdog(common::LIMIT, || {
        let child = multiproc::spawn(add_one, 9);
        let joined = std::thread::spawn(move || child.join().unwrap());
        assert_eq!(joined.join().unwrap(), 10);
    });
}

/// Variables no process can hold are refused before anything starts.
#[test]
fn bad_environment_is_a_start_error() {
    for (key, value) in [("", "x"), ("A=B", "x"), ("A\0B", "x"), ("OK_NAME", "x\0y")] {
        match Builder::new().env(key, value).spawn(add_one, 1) {
            Err(StartError::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{key:?}")
            }
            other => panic!("{key:?}={value:?}: expected InvalidInput, got {other:?}"),
        }
    }
}
