//! Who this process is: its name, its place in the tree, its parent, its
//! authkey (Python's `current_process()` and `parent_process()`).

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::fn_ref::{FnRef, RawFnRef};
use super::target::Trampoline;
use crate::connection::authkey::{authkey, set_authkey};
use crate::sys;

/// A description of a process, as returned by [`current_process`] and
/// [`parent_process`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its name: `MainProcess` for the first process, `Process-N` (or
    /// `Process-N:M` for a grandchild) unless given another.
    pub name: String,
    /// Its process id.
    pub pid: i32,
    /// Whether it was started as a daemon.
    pub daemon: bool,
}

/// What the parent tells a child it starts besides the arguments: which
/// target to run, and who the child is (its identity from then on).
#[derive(Serialize, Deserialize)]
pub struct Meta {
    pub trampoline: FnRef<Trampoline>,
    pub target: RawFnRef,
    pub fingerprint: isize,
    pub name: String,
    pub identity: String,
    pub daemon: bool,
    pub parent_pid: i32,
    pub parent_name: String,
    /// The parent's authkey, this process's from now on.
    pub authkey: Vec<u8>,
}

struct Me {
    name: String,
    identity: String,
    daemon: bool,
    parent: Option<ProcessInfo>,
}

static ME: Mutex<Option<Me>> = Mutex::new(None);
static CHILDREN_STARTED: AtomicUsize = AtomicUsize::new(0);

fn me() -> std::sync::MutexGuard<'static, Option<Me>> {
    ME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records who this process is, once it starts as a child, and takes its
/// parent's authkey (a forked child, which holds it already, passes
/// `with_key: false`).
#[inline]
pub fn set_after_start(meta: Meta, with_key: bool) {
    CHILDREN_STARTED.store(0, Ordering::Relaxed);
    if with_key {
        set_authkey(&meta.authkey);
    }
    *me() = Some(Me {
        name: meta.name,
        identity: meta.identity,
        daemon: meta.daemon,
        parent: Some(ProcessInfo {
            name: meta.parent_name,
            pid: meta.parent_pid,
            daemon: false,
        }),
    });
}

/// The identity (`"3"`, `"3:1"`, …) and default name for the next child.
pub fn next_child() -> (String, String) {
    let n = CHILDREN_STARTED.fetch_add(1, Ordering::Relaxed) + 1;
    let identity = match &*me() {
        Some(m) if !m.identity.is_empty() => format!("{}:{n}", m.identity),
        _ => n.to_string(),
    };
    let name = format!("Process-{identity}");
    (identity, name)
}

/// The process this code runs in.
///
/// ```
/// assert_eq!(multiproc::current_process().name, "MainProcess");
/// ```
pub fn current_process() -> ProcessInfo {
    let pid = sys::process::getpid();
    match &*me() {
        Some(m) => ProcessInfo {
            name: m.name.clone(),
            pid,
            daemon: m.daemon,
        },
        None => ProcessInfo {
            name: "MainProcess".into(),
            pid,
            daemon: false,
        },
    }
}

impl ProcessInfo {
    /// The authkey of the process this code runs in (Python's
    /// `current_process().authkey`); see [`authkey`](crate::authkey). A
    /// child's key is its parent's, so on [`parent_process`] this gives
    /// the key the parent handed down.
    ///
    /// ```
    /// let key = multiproc::current_process().authkey()?;
    /// assert_eq!(key.len(), 32);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn authkey(&self) -> io::Result<Vec<u8>> {
        authkey()
    }
}

/// The process that started this one, or `None` in the main process.
pub fn parent_process() -> Option<ProcessInfo> {
    me().as_ref().and_then(|m| m.parent.clone())
}
