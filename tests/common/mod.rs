//! Helpers shared by the integration tests: a watchdog, running a scenario
//! in a single-threaded spawned child (so that the scenario may use the
//! fork start method, which is refused in libtest's multi-threaded process),
//! and looking at other processes and at descriptors through `/proc`.

#![allow(dead_code)]

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use multiproc::{JoinError, Process, StartMethod};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Generous bound for one test body or one scenario child.
pub const LIMIT: Duration = Duration::from_secs(60);

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
    let mut p = Process::new(scenario, args)
        .name("scenario")
        .start_method(StartMethod::Spawn);
    p.start().expect("start the scenario child");
    match p.join_timeout(LIMIT) {
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

/// Waits up to `limit` for process `pid` to end; whether it did.
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if is_gone(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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
