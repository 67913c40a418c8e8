//! Is a given process still running? Answered from `/proc/<pid>/stat`,
//! comparing the process's start time so that a recycled pid (pids wrap
//! after `/proc/sys/kernel/pid_max`, often only 32768) is not mistaken for
//! the original process, and treating zombies (killed, not yet reaped) as
//! dead.

use std::sync::OnceLock;

/// A process identity that survives pid reuse: its pid and its start time
/// (clock ticks after boot, field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: i32,
    /// When it started, in clock ticks after boot.
    pub start: u64,
}

/// The start time of `pid`, or `None` when no such process runs (it never
/// existed, was reaped, or is a zombie).
pub fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    match parse_start(&stat) {
        ThreadStart::Running(start) => Some(start),
        ThreadStart::Gone | ThreadStart::Unknown => None,
    }
}

/// The start time in a `/proc/<id>/stat` text ([`ThreadStart::Gone`] for
/// a zombie).
fn parse_start(stat: &[u8]) -> ThreadStart {
    // "pid (comm) S ppid ...": comm may contain spaces and parentheses, so
    // split after the last ')'.
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return ThreadStart::Unknown;
    };
    let Ok(rest) = std::str::from_utf8(&stat[close + 1..]) else {
        return ThreadStart::Unknown;
    };
    let mut fields = rest.split_ascii_whitespace();
    match fields.next() {
        Some("Z" | "X" | "x") => ThreadStart::Gone,
        // `state` was field 3; starttime is field 22.
        Some(_) => fields
            .nth(22 - 4)
            .and_then(|f| f.parse().ok())
            .map_or(ThreadStart::Unknown, ThreadStart::Running),
        None => ThreadStart::Unknown,
    }
}

/// This process's identity (computed once).
pub fn me() -> ProcessId {
    static ME: OnceLock<(i32, u64)> = OnceLock::new();
    let pid = super::process::getpid();
    let &(cached_pid, start) = ME.get_or_init(|| (pid, start_time(pid).unwrap_or(0)));
    if cached_pid == pid {
        ProcessId { pid, start }
    } else {
        // A forked child inherited the parent's cache.
        ProcessId {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }
}

/// Whether the process `id` still runs.
pub fn is_running(id: ProcessId) -> bool {
    start_time(id.pid) == Some(id.start)
}

/// Whether thread `tid` of process `pid` is running or waiting for a CPU
/// (state `R` in `/proc/<pid>/task/<tid>/stat`): not asleep on something,
/// not stopped, not gone.
pub fn thread_runnable(pid: i32, tid: i32) -> bool {
    if pid <= 0 || tid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read(format!("/proc/{pid}/task/{tid}/stat")) else {
        return false;
    };
    // "tid (comm) S ...": split after the last ')' (see `start_time`).
    stat.iter()
        .rposition(|&b| b == b')')
        .and_then(|close| stat[close + 1..].iter().find(|b| !b.is_ascii_whitespace()))
        == Some(&b'R')
}

/// What `/proc` says about a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadStart {
    /// It runs (or sleeps), started at this many clock ticks after boot.
    Running(u64),
    /// No such thread: it ended (a zombie counts as ended) or never was.
    Gone,
    /// `/proc` could not tell (not mounted, no permission, odd contents).
    Unknown,
}

/// The start time of thread `tid` of any process (`None`: the calling
/// thread), read from `/proc/<tid>/stat`, which the kernel answers for
/// any thread id, not only a process's main thread.
pub fn thread_start(tid: Option<i32>) -> ThreadStart {
    let path = match tid {
        None => "/proc/thread-self/stat".to_owned(),
        Some(t) if t > 0 => format!("/proc/{t}/stat"),
        Some(_) => return ThreadStart::Gone,
    };
    let stat = match std::fs::read(path) {
        Ok(s) => s,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            return tid.map_or(ThreadStart::Unknown, hidden_or_gone);
        }
        Err(_) => return ThreadStart::Unknown,
    };
    parse_start(&stat)
}

/// A thread `/proc` does not list: gone, unless the kernel still knows
/// its id (`/proc` mounted with `hidepid` hides other users' processes),
/// which `pidfd_open(tid, PIDFD_THREAD)` tells without permission.
fn hidden_or_gone(tid: i32) -> ThreadStart {
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    /// `PIDFD_THREAD` (Linux 6.9): a pidfd for any thread, not only a
    /// process's main one.
    const PIDFD_THREAD: u32 = libc::O_EXCL as u32;
    let Some(pid) = Pid::from_raw(tid) else {
        return ThreadStart::Gone;
    };
    match pidfd_open(pid, PidfdFlags::from_bits_retain(PIDFD_THREAD)) {
        Ok(_) => ThreadStart::Unknown,
        // ESRCH: no such thread; any other error (an older kernel without
        // PIDFD_THREAD) leaves `/proc`'s answer standing.
        Err(_) => ThreadStart::Gone,
    }
}
