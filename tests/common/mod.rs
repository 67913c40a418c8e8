//! Helpers shared by the integration tests: a watchdog, running a scenario
//! in a single-threaded spawned child (so that the scenario may use the
//! fork start method, which is refused in libtest's multi-threaded process),
//! and looking at other processes and at descriptors through `/proc`.

#![allow(dead_code, unused_macros)]

#[cfg(feature = "tokio")]
pub mod aio;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use multiproc::{JoinError, Process, StartMethod};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Generous bound for one test body or one scenario child.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Generous bound for one step inside a test (a child's join, a reply).
pub const LONG: Duration = Duration::from_secs(30);

/// A start method that can travel as a `Process` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// [`StartMethod::Spawn`].
    Spawn,
    /// [`StartMethod::Fork`].
    Fork,
}

impl Method {
    /// The crate's start method.
    pub fn start(self) -> StartMethod {
        match self {
            Method::Spawn => StartMethod::Spawn,
            Method::Fork => StartMethod::Fork,
        }
    }
}

/// Runs `f` on its own thread and returns its value; panics if it has not
/// finished within `limit`. A panic in `f` is passed on unchanged.
pub fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("watched".into())
        .spawn(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        })
        .expect("start the watched thread");
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => {
            let _ = handle.join();
            value
        }
        Ok(Err(panic)) => resume_unwind(panic),
        Err(_) => panic!("watchdog: the test body did not finish within {limit:?}"),
    }
}

/// Runs `scenario(args)` in a spawned child, where it is the only thread
/// (so it may fork), and returns its value. A panic in the scenario (a
/// failed assertion) becomes a panic here with the same message; a scenario
/// that does not finish within [`LIMIT`] is killed, together with the
/// processes it started (they die with it).
pub fn in_child<A, R>(scenario: fn(A) -> R, args: A) -> R
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    in_child_within(LIMIT, scenario, args)
}

/// [`in_child`] with another bound than [`LIMIT`].
pub fn in_child_within<A, R>(limit: Duration, scenario: fn(A) -> R, args: A) -> R
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    let mut p = Process::new(scenario, args)
        .name("scenario")
        .start_method(StartMethod::Spawn);
    p.start().expect("start the scenario child");
    match p.join_timeout(limit) {
        Ok(value) => value,
        Err(JoinError::Timeout(t)) => {
            let _ = p.kill();
            let _ = p.join();
            panic!("the scenario child did not finish within {t:?}")
        }
        Err(JoinError::Panicked { message }) => panic!("in the scenario child: {message}"),
        Err(e) => panic!("the scenario child failed: {e}"),
    }
}

// ------------------------------------------- scenarios returning `Result`
//
// A scenario `fn(fork: bool) -> Result<(), String>` reports what went wrong
// instead of panicking, and starts its children with [`start`].

/// The start method for a scenario's `fork` flag.
pub fn method(fork: bool) -> StartMethod {
    if fork {
        StartMethod::Fork
    } else {
        StartMethod::Spawn
    }
}

/// Runs `scenario(false)` here (children spawned) and `scenario(true)`
/// inside a spawned child (children forked), under a watchdog.
pub fn both(scenario: fn(bool) -> Result<(), String>) {
    watchdog(Duration::from_secs(120), move || {
        scenario(false).unwrap_or_else(|e| panic!("spawn: {e}"));
        in_child_within(Duration::from_secs(100), scenario, true)
            .unwrap_or_else(|e| panic!("fork: {e}"));
    });
}

/// Called first by a target that panics on purpose: in a child process it
/// silences the crate's panic report (one line on stderr, with a backtrace
/// under `RUST_BACKTRACE`), so the test run stays quiet; the message still
/// reaches the parent's error value. In the test process itself (a CSP
/// process run as a thread) it does nothing: libtest captures that output.
pub fn quiet_panics() {
    if multiproc::parent_process().is_some() {
        std::panic::set_hook(Box::new(|_| {}));
    }
}

/// `Err(what)` unless `cond`.
pub fn ensure(cond: bool, what: impl Into<String>) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.into()) }
}

/// Starts `f(args)` with the method for `fork`.
pub fn start<A, R>(f: fn(A) -> R, args: A, fork: bool) -> Result<Process<R>, String>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    let mut p = Process::new(f, args).start_method(method(fork));
    p.start().map_err(|e| e.to_string())?;
    Ok(p)
}

/// Joins `p`, waiting at most [`LONG`].
pub fn join<R: DeserializeOwned>(p: &mut Process<R>) -> Result<R, String> {
    p.join_timeout(LONG).map_err(|e| e.to_string())
}

/// Defines, for each scenario `fn name(Method)`, a module `name` with two
/// tests: `spawn` runs the scenario in the test process under a watchdog
/// (children started with the spawn method from libtest's threads), `fork`
/// runs it in a single-threaded spawned child with the fork method.
macro_rules! both_methods {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use crate::common::{LIMIT, Method, in_child, watchdog};

                #[test]
                fn spawn() {
                    watchdog(LIMIT, || super::$name(Method::Spawn))
                }

                #[test]
                fn fork() {
                    in_child(super::$name, Method::Fork)
                }
            }
        )*
    };
}

/// Whether process `pid` has ended: no `/proc/<pid>`, or a zombie nobody
/// reaped yet (an orphan's new parent may be slow to, or never, reap it).
pub fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            matches!(state, Some("Z") | Some("X") | None)
        }
    }
}

/// Waits up to `limit` for `f` to hold; whether it did.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits up to `limit` for process `pid` to end; whether it did.
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    eventually(limit, || is_gone(pid))
}

/// The inode numbers of the sockets this process has open
/// (`/proc/self/fd/*` pointing at `socket:[N]`).
pub fn socket_inodes() -> Vec<u64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd") {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(n) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    out
}

/// A byte pattern of `len` bytes that differs from any shifted copy of
/// itself, so misplaced bytes are noticed.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// The seed of a random stress test: the hexadecimal value of the
/// environment variable `var` (to replay a failed run), or else the clock.
pub fn stress_seed(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}
