//! Processes: re-executing the current binary, `fork`, pidfds, exit status,
//! signals, ids and counts.

#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit(code)`.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

/// What a child gets besides a copy of its parent: environment variables
/// set (or replaced) and standard streams sent to `/dev/null`.
#[derive(Debug, Clone, Default)]
pub struct ChildSetup {
    /// Variables to set in the child, replacing inherited ones of the same name.
    pub env: Vec<(OsString, OsString)>,
    /// For descriptors 0, 1 and 2: whether to open `/dev/null` there.
    pub null_stdio: [bool; 3],
}

impl ChildSetup {
    /// Applies the setup in a forked child. Only call while the process
    /// has a single thread (right after `fork`).
    pub fn apply_single_threaded(&self) -> io::Result<()> {
        for (key, value) in &self.env {
            // SAFETY: called right after fork in a child that has a single
            // thread, so nothing can read the environment concurrently.
            unsafe { std::env::set_var(key, value) };
        }
        if self.null_stdio.iter().any(|&n| n) {
            let null = rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            for (target, _) in self.null_stdio.iter().enumerate().filter(|(_, n)| **n) {
                // SAFETY: dup2 onto 0, 1 or 2 only replaces what that standard
                // descriptor referred to; `null` is open for the call.
                if unsafe { libc::dup2(null.as_raw_fd(), target as libc::c_int) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// Starts a fresh copy of the running executable (`/proc/self/exe`) with
/// `posix_spawn`, the current environment plus `setup.env` plus
/// `env_key=<descriptor number>`, `keep` open at that number (every other
/// descriptor is `O_CLOEXEC`) and the standard streams `setup` asks for
/// opened on `/dev/null`.
pub fn spawn_self(keep: BorrowedFd<'_>, env_key: &str, setup: &ChildSetup) -> io::Result<i32> {
    let fd = keep.as_raw_fd();
    let fd_text = fd.to_string();
    let extra_env = (env_key, fd_text.as_str());
    let path = CString::new("/proc/self/exe").expect("no NUL");
    let argv0 = std::env::args_os()
        .next()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_else(|_| path.clone()))
        .unwrap_or_else(|| path.clone());
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k.as_bytes() != extra_env.0.as_bytes())
        .filter(|(k, _)| setup.env.iter().all(|(key, _)| key != k))
        .chain(setup.env.iter().cloned())
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{}={}", extra_env.0, extra_env.1)).map_err(io::Error::other)?);
    let argv: [*mut libc::c_char; 2] = [argv0.as_ptr() as *mut _, std::ptr::null_mut()];
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|s| s.as_ptr() as *mut _).collect();
    envp.push(std::ptr::null_mut());

    let dev_null = CString::new("/dev/null").expect("no NUL");
    let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    // SAFETY: `actions` is initialised by posix_spawn_file_actions_init before
    // any other use and destroyed below on every path.
    unsafe {
        check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
    }
    let mut pid: libc::pid_t = 0;
    let acts = actions.as_mut_ptr();
    // dup2(fd, fd) clears O_CLOEXEC on `fd` in the child only (glibc >= 2.29).
    // SAFETY: `actions` was initialised above.
    let mut r = check(unsafe { libc::posix_spawn_file_actions_adddup2(acts, fd, fd) });
    for (target, _) in setup.null_stdio.iter().enumerate().filter(|(_, n)| **n) {
        let flags = if target == 0 {
            libc::O_RDONLY
        } else {
            libc::O_WRONLY
        };
        r = r.and_then(|_| {
            // SAFETY: `actions` was initialised above; `dev_null` is a
            // NUL-terminated string that outlives the call.
            check(unsafe {
                libc::posix_spawn_file_actions_addopen(
                    acts,
                    target as libc::c_int,
                    dev_null.as_ptr(),
                    flags,
                    0,
                )
            })
        });
    }
    let res = r.and_then(|_| {
        // SAFETY: `actions` was initialised above; `path`, `argv` and `envp`
        // are NUL-terminated strings and NULL-terminated arrays that outlive
        // the call.
        check(unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                acts,
                std::ptr::null(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        })
    });
    // SAFETY: `actions` was initialised above and is not used again.
    unsafe { libc::posix_spawn_file_actions_destroy(acts) };
    res.map(|_| pid)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Which side of a `fork` we are on.
pub enum Forked {
    /// The original process; the child has this pid.
    Parent(i32),
    /// The new process.
    Child,
}

/// `fork(2)`. Only call it when the process has a single thread: the child
/// then owns a consistent copy of every lock and allocator.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the caller has checked that this process has one thread, so no
    // other thread can hold a lock (allocator, stdio) that the child would
    // inherit locked; the child goes on to run ordinary Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// A pidfd for `pid`: readable once the process has exited.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// Reaps the child behind `pidfd` if it has exited (`block` waits for it).
/// `Ok(None)`: still running.
pub fn wait_exit(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<Exit>> {
    let mut opts = WaitIdOptions::EXITED;
    if !block {
        opts |= WaitIdOptions::NOHANG;
    }
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd), opts) {
            Ok(None) => return Ok(None),
            Ok(Some(st)) => {
                if let Some(code) = st.exit_status() {
                    return Ok(Some(Exit::Code(code)));
                }
                if let Some(sig) = st.terminating_signal() {
                    return Ok(Some(Exit::Signal(sig)));
                }
                return Ok(None);
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends signal number `sig` to the process behind `pidfd`. A process that
/// has already exited is not an error.
pub fn signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: `sig` comes from the crate's own SIGTERM/SIGKILL constants.
    let sig = unsafe { Signal::from_raw_unchecked(sig) };
    match rustix::process::pidfd_send_signal(pidfd, sig) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `SIGTERM`'s number.
pub const SIGTERM: i32 = libc::SIGTERM;
/// `SIGKILL`'s number.
pub const SIGKILL: i32 = libc::SIGKILL;

/// This process's id, cached: proxies and pools compare it on every call
/// to notice that they were inherited across `fork`, and the system call
/// costs about as much as a shared-memory round trip. A `pthread_atfork`
/// handler clears the cache in every child forked through libc's `fork`
/// (which is how this crate, std and every wrapper fork); a process
/// cloned by a raw `clone` system call would see its parent's id.
pub fn getpid() -> i32 {
    static PID: AtomicI32 = AtomicI32::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget_in_child() {
        PID.store(0, Ordering::Relaxed);
    }
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    HOOK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic (async-
        // signal-safe, as a handler run in a forked child must be).
        unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// The calling thread's id, cached per thread (and taken again in a
/// forked child, whose thread has a new id).
pub fn gettid() -> i32 {
    use std::cell::Cell;
    thread_local! {
        static TID: Cell<(i32, i32)> = const { Cell::new((0, 0)) };
    }
    let pid = getpid();
    TID.with(|t| {
        let (cached_pid, tid) = t.get();
        if cached_pid == pid {
            return tid;
        }
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        t.set((pid, tid));
        tid
    })
}

/// The parent's id (0 when there is none).
pub fn getppid() -> i32 {
    rustix::process::getppid()
        .map(|p| p.as_raw_nonzero().get())
        .unwrap_or(0)
}

/// How many threads this process has right now.
///
/// procfs gives `/proc/self/task` a link count of 2 plus the number of
/// threads, computed when asked. The directory is opened once and kept
/// open (close-on-exec), so that each count is one `fstat` of it rather
/// than a path walk through procfs, which matters on the fork start path;
/// a `stat` of the path serves when that cannot be used. Should the count
/// look wrong, the directory's entries are counted instead.
pub fn thread_count() -> usize {
    const TASKS: &str = "/proc/self/task";
    let links = task_dir_links().or_else(|| rustix::fs::stat(TASKS).ok().map(|st| st.st_nlink));
    match links {
        Some(n) if n > 2 => (n - 2) as usize,
        _ => std::fs::read_dir(TASKS).map(|d| d.count()).unwrap_or(1),
    }
}

/// The open `/proc/self/task` directory of [`thread_count`]: the process
/// that opened it, the descriptor, and the directory's device and inode
/// (which tell it apart from whatever else might come to hold that
/// descriptor number, should the program close it behind our back).
struct TaskDir {
    pid: i32,
    fd: OwnedFd,
    id: (u64, u64),
}

static TASK_DIR: std::sync::Mutex<Option<TaskDir>> = std::sync::Mutex::new(None);

/// The link count of this process's `/proc/self/task`, through the
/// directory kept open; `None` if it cannot be had that way.
fn task_dir_links() -> Option<u64> {
    use rustix::fs::{Mode, OFlags};
    let id = |st: &rustix::fs::Stat| (st.st_dev, st.st_ino);
    let pid = getpid();
    // Never waits: a thread of the parent may have held the lock when
    // this process was forked (the lock then stays held here for good),
    // and a thread counting at the same moment may use the path instead.
    let mut slot = match TASK_DIR.try_lock() {
        Ok(slot) => slot,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return None,
    };
    if let Some(dir) = slot.take() {
        match rustix::fs::fstat(&dir.fd) {
            Ok(st) if id(&st) == dir.id && dir.pid == pid => {
                *slot = Some(dir);
                return Some(st.st_nlink);
            }
            // The parent's directory, inherited through `fork`: closed.
            Ok(st) if id(&st) == dir.id => drop(dir.fd),
            // The number now names something else: not ours to close.
            _ => std::mem::forget(dir.fd),
        }
    }
    let fd = rustix::fs::open(
        "/proc/self/task",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    *slot = Some(TaskDir {
        pid,
        fd,
        id: id(&st),
    });
    Some(st.st_nlink)
}

/// Number of CPUs online (like Python's `os.cpu_count()`).
pub fn cpu_count() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as usize } else { 1 }
}

/// How many CPUs this thread may run on (its affinity mask), which can be
/// fewer than [`cpu_count`] under `taskset` or a cgroup; at least 1.
pub fn affinity_cpus() -> usize {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (set.count() as usize).max(1),
        Err(_) => cpu_count(),
    }
}

/// The one CPU this thread may run on, if its affinity mask has exactly
/// one.
pub fn pinned_cpu() -> Option<usize> {
    let set = rustix::thread::sched_getaffinity(None).ok()?;
    if set.count() != 1 {
        return None;
    }
    (0..rustix::thread::CpuSet::MAX_CPU).find(|&c| set.is_set(c))
}

/// Ends the process at once with `code`, without running exit handlers
/// (used by children, whose exit handlers belong to the parent's program).
/// Ends this process at once with `SIGKILL`, as an outside killer would
/// (the crash points of tests use it).
pub fn kill_self() -> ! {
    // SIGKILL cannot be caught, so nothing runs after it.
    let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
    exit_now(137)
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Removes an environment variable. Only call while the process has a single
/// thread (the child bootstrap, before `main`).
pub fn remove_env_single_threaded(key: &str) {
    // SAFETY: called before `main` by the child bootstrap, when no other
    // thread exists that could read the environment concurrently.
    unsafe { std::env::remove_var(key) }
}

/// Takes ownership of descriptor `raw`, inherited across `exec`, and marks
/// it `O_CLOEXEC` again so it does not leak further.
pub fn adopt_inherited_fd(raw: i32) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: the parent passed `raw` open across exec for this process alone
    // (see `spawn_self`) and nothing else in this process owns it; `fstat`
    // below fails cleanly if it is not open.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Err(e) = rustix::fs::fstat(&fd) {
        std::mem::forget(fd);
        return Err(e.into());
    }
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(fd)
}

/// Asks the kernel to SIGKILL this process when the thread that created it
/// exits (`PR_SET_PDEATHSIG`).
pub fn die_with_parent() -> io::Result<()> {
    Ok(rustix::process::set_parent_process_death_signal(Some(
        Signal::KILL,
    ))?)
}

/// Makes this process ignore `SIGINT`, the signal a terminal's Ctrl-C
/// sends to its whole foreground process group. For the helper processes
/// the crate runs on its user's behalf (a manager's server, pool workers):
/// their owner decides what Ctrl-C means, and they die with it.
pub fn ignore_interrupt() -> io::Result<()> {
    // SAFETY: installing `SIG_IGN` runs no handler code; it only changes
    // the signal's disposition for the whole process.
    let old = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    if old == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Freed memory up to this much stays in the heap of a process that
/// [`keeps_freed_memory`]…
#[cfg(target_env = "gnu")]
const KEEP_FREED: i32 = 16 << 20;
/// …and allocations smaller than this come from that heap.
#[cfg(target_env = "gnu")]
const HEAP_UP_TO: i32 = 4 << 20;

/// Has the C allocator keep memory freed by this process for its next
/// allocations (up to [`KEEP_FREED`] bytes), rather than hand it back to
/// the kernel after every large `free` and take it again page fault by
/// page fault at the next `malloc`. For the helper processes the crate
/// runs (a pool worker allocates and frees the same few buffers of up to
/// a few MiB for every chunk). Only with glibc (elsewhere, nothing).
pub fn keeps_freed_memory() {
    #[cfg(target_env = "gnu")]
    for (param, value) in [
        (libc::M_TRIM_THRESHOLD, KEEP_FREED),
        (libc::M_MMAP_THRESHOLD, HEAP_UP_TO),
    ] {
        // SAFETY: `mallopt` only changes one of the allocator's tuning
        // parameters (it takes the allocator's own lock to do so).
        unsafe { libc::mallopt(param, value) };
    }
}

/// Whether the calling thread is the process's main thread.
pub fn is_main_thread() -> bool {
    rustix::thread::gettid() == rustix::process::getpid()
}

/// Registers `f` to run when the process exits normally (`atexit`).
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function with the C ABI that atexit expects.
    unsafe {
        libc::atexit(f);
    }
}

/// The usual name of signal `sig` (`"SIGKILL"`), if it has one.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}
