//! Child processes that run a Rust function: [`Process`], start methods,
//! and the process tree (Python's `multiprocessing.Process`).
//!
//! A target is a plain function `fn(A) -> R` whose argument and return
//! value are serde types. The arguments are encoded by the crate's codec, so
//! handles inside them (connections, queues, locks…) arrive usable in the
//! child; the return value comes back from [`Process::join`].

mod child;
/// The environment variable that marks a spawned child.
#[cfg(feature = "zenoh")]
pub(crate) use child::ENV_KEY as BOOTSTRAP_ENV_KEY;
mod context;
pub(crate) mod fn_ref;
mod identity;
mod launcher;
mod registry;
mod spawn;
pub(crate) mod target;

/// The launch setters [`Process`] and [`Builder`] share (`name`, `daemon`,
/// `start_method`), written once; each builder keeps the fields `name`,
/// `daemon` and `method` and gives the doc of its `name`.
macro_rules! launch_setters {
    ($(#[$name_doc:meta])*) => {
        $(#[$name_doc])*
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.name = Some(name.into());
            self
        }

        /// Marks it a daemon: terminated, not waited for, when the parent's
        /// `main` returns.
        pub fn daemon(mut self, daemon: bool) -> Self {
            self.daemon = daemon;
            self
        }

        /// Chooses how it starts (default: [`start_method()`](crate::start_method)).
        pub fn start_method(mut self, method: $crate::process::StartMethod) -> Self {
            self.method = Some(method);
            self
        }
    };
}
use launch_setters;

use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, Encoded};
pub(crate) use crate::connection::authkey::forget_authkey;
pub use crate::connection::authkey::{AUTHKEY_LEN, authkey, set_authkey};
use crate::connection::{Connection, FRAME_ROOM};
use crate::error::{CodecError, JoinError, StartError};
use crate::sys;
use crate::sys::process::{ChildSetup, Exit};
use crate::wait::Deadline;
pub use context::start_method;
pub use context::{Context, StartMethod, get_context, get_start_method, set_start_method};
use fn_ref::{FnRef, RawFnRef};
pub use identity::{ProcessInfo, current_process, parent_process};
use registry::Child;
pub use spawn::{Builder, JoinHandle, JoinTimeoutError, Stdio, spawn};

/// Encodes the arguments; kept until the child has started, so a failed
/// `start` can be retried, then dropped so the parent's copies of handles close.
/// In a `Mutex` (only ever reached through `&mut`, so never locked by
/// two) so that `Process` is `Sync` without asking `A: Sync`.
type Payload = std::sync::Mutex<Box<dyn Fn() -> Result<Encoded, CodecError> + Send>>;

/// A child process running `fn(A) -> R`, in Python's shape: made first,
/// started later, joined through `&mut self`.
///
/// To start a child in one call, as `std::thread::spawn` does, use
/// [`spawn`](crate::spawn) or a [`Builder`]; they return a [`JoinHandle`]
/// and run on this same machinery.
///
/// Build it with [`Process::new`] (or [`Builder::process`], which can also
/// set the child's environment and standard streams), adjust it with
/// [`name`](Self::name), [`daemon`](Self::daemon) and
/// [`start_method`](Self::start_method) (builder-style, like the keywords
/// of Python's constructor), then [`start`](Self::start) and
/// [`join`](Self::join) it.
///
/// ```
/// use multiproc::Process;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let mut p = Process::new(square, 12);
/// p.start()?;
/// assert_eq!(p.join()?, 144);
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Dropping a `Process` does not stop the child. A child dies with its
/// parent (`PR_SET_PDEATHSIG`); when the parent's `main` returns, daemon
/// children are terminated and the others waited for, as in Python.
///
/// A child, daemon or not, handles signals as its own program: a
/// terminal's Ctrl-C, sent to the whole foreground process group, kills
/// it unless its target says otherwise, as in Python (where it raises
/// `KeyboardInterrupt` in the child). The helper processes the crate runs
/// itself, a manager's server and pool workers, ignore `SIGINT` and leave
/// Ctrl-C to their owner.
#[must_use = "a process does nothing until `start` is called"]
pub struct Process<R> {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    setup: ChildSetup,
    trampoline: FnRef<target::Trampoline>,
    target: RawFnRef,
    payload: Option<Payload>,
    child: Option<Arc<Child>>,
    joined: bool,
    _ret: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Process<R> {
    /// A process that will run `target(args)`. Nothing starts until
    /// [`start`](Self::start).
    pub fn new<A>(target: fn(A) -> R, args: A) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize,
    {
        // The target's type lives on in the trampoline it is paired with.
        let trampoline: target::Trampoline = target::trampoline::<A, R>;
        Process {
            name: None,
            daemon: false,
            method: None,
            setup: ChildSetup::default(),
            trampoline: FnRef::new(trampoline),
            target: FnRef::new(target).erase(),
            payload: Some(std::sync::Mutex::new(Box::new(move || {
                codec::encode(&args, 0)
            }))),
            child: None,
            joined: false,
            _ret: PhantomData,
        }
    }

    launch_setters! {
        /// Names the process (default `Process-N`).
    }

    /// Starts the child.
    pub fn start(&mut self) -> Result<(), StartError> {
        let payload = self
            .payload
            .as_mut()
            .ok_or(StartError::AlreadyStarted)?
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        check_env(&self.setup.env)?;
        let method = self.method.unwrap_or_else(context::start_method);
        if method == StartMethod::Fork {
            let threads = sys::process::thread_count();
            if threads > 1 {
                return Err(StartError::ForkWithThreads { threads });
            }
        }
        let args = payload()?;
        let authkey = if method == StartMethod::Fork {
            // Drawn now if this is its first use, so that the forked child
            // shares it; it holds it then, and need not free a copy.
            crate::connection::authkey::ensure_authkey()?;
            Vec::new()
        } else {
            authkey()?
        };
        let (identity, default_name) = identity::next_child();
        let name = self.name.clone().unwrap_or(default_name);
        let me = current_process();
        let meta = identity::Meta {
            trampoline: self.trampoline,
            target: self.target,
            fingerprint: fn_ref::binary_fingerprint(),
            name: name.clone(),
            identity,
            daemon: self.daemon,
            parent_pid: me.pid,
            parent_name: me.name,
            authkey,
        };
        let child = match method {
            StartMethod::Spawn => self.spawn(meta, args)?,
            StartMethod::Fork => self.fork(meta, args)?,
        };
        registry::register(child.clone());
        self.child = Some(child);
        self.payload = None;
        Ok(())
    }

    fn spawn(&self, meta: identity::Meta, args: Encoded) -> Result<Arc<Child>, StartError> {
        let (ours, theirs) = sys::socket::stream_pair()?;
        let conn = Connection::from_fd(ours, true, true, true);
        let pid = launcher::spawn_self(theirs, child::ENV_KEY, self.setup.clone())?;
        let pidfd = sys::process::pidfd_open(pid)?;
        let (name, daemon) = (meta.name.clone(), meta.daemon);
        // One message: [fd count][meta][args], the arguments' descriptors
        // attached.
        let mut msg = codec::encode(&meta, FRAME_ROOM)?;
        msg.then(FRAME_ROOM, args);
        // A child that died at once is reported by join(), not here.
        let _ = conn.send_encoded(msg);
        Ok(Child::new(pid, name, daemon, pidfd, conn, None))
    }

    fn fork(&mut self, meta: identity::Meta, mut args: Encoded) -> Result<Arc<Child>, StartError> {
        use std::io::Write;
        // Both ends' connections and room for the outcome are made before
        // the fork, so that the child reaches its target without calling
        // the allocator (every page it writes is a page copied).
        let (ours, theirs) = registry::connection_pair()?;
        let out = Vec::with_capacity(target::OUTCOME_ROOM);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        match sys::process::fork()? {
            sys::process::Forked::Child => {
                // `ours` stays open: it is the bell (see `Child::new`).
                // The child's copy of the arguments would keep the handles'
                // descriptors open beside the ones the target receives.
                self.payload = None;
                registry::clear_after_fork();
                crate::queue::after_fork();
                #[cfg(feature = "tokio")]
                crate::queue::aio_after_fork();
                let _ = sys::process::die_with_parent();
                if sys::process::getppid() != meta.parent_pid {
                    sys::process::exit_now(70);
                }
                if self.setup.apply_single_threaded().is_err() {
                    sys::process::exit_now(70);
                }
                // Its authkey is the parent's already (drawn before the fork).
                identity::set_after_start(meta, false);
                // The argument descriptors were inherited: take them over, so
                // that dropping a handle in the child really closes it. Only
                // a descriptor still shared with another object of this
                // (copied) memory is duplicated instead.
                let fds = if args.fds.is_empty() {
                    Vec::new()
                } else {
                    std::mem::take(&mut args.fds)
                        .into_iter()
                        .filter_map(|f| {
                            Arc::try_unwrap(f)
                                .or_else(|f| sys::socket::dup(f.as_fd()))
                                .ok()
                        })
                        .collect()
                };
                let reply = child::Reply {
                    conn: theirs,
                    bell: Some(ours),
                    out,
                };
                child::run_target(
                    self.trampoline.get(),
                    self.target,
                    args.payload(0),
                    fds,
                    reply,
                )
            }
            sys::process::Forked::Parent(pid) => {
                drop(out);
                let pidfd = sys::process::pidfd_open(pid)?;
                // The parent keeps the child's end open as the bell.
                Ok(Child::new(
                    pid,
                    meta.name,
                    meta.daemon,
                    pidfd,
                    ours,
                    Some(theirs),
                ))
            }
        }
    }

    /// Waits for the child to end and returns the target's return value.
    ///
    /// A panic in the child gives [`JoinError::Panicked`] with its message;
    /// a child killed by a signal gives [`JoinError::Killed`]; one that
    /// exited before returning gives [`JoinError::Exited`].
    pub fn join(&mut self) -> Result<R, JoinError> {
        self.join_until(Deadline::NEVER)
    }

    /// Like [`join`](Self::join), but gives up with
    /// [`JoinError::Timeout`] after `timeout` (the child keeps running and
    /// can be joined again).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R, JoinError> {
        // A timeout too long to represent means no limit.
        self.join_until(Deadline::after(timeout))
            .map_err(|e| match e {
                JoinError::Timeout(_) => JoinError::Timeout(timeout),
                e => e,
            })
    }

    fn join_until(&mut self, deadline: Deadline) -> Result<R, JoinError> {
        let child = self.child.as_ref().ok_or(JoinError::NotStarted)?;
        if self.joined {
            return Err(JoinError::AlreadyJoined);
        }
        let Some(exit) = child.pump(deadline)? else {
            return Err(JoinError::Timeout(Duration::ZERO));
        };
        self.joined = true;
        match child.take_outcome() {
            Some((payload, fds)) => decode_outcome(&payload, fds),
            None => Err(match exit {
                Exit::Signal(signal) => JoinError::Killed { signal },
                Exit::Code(code) => JoinError::Exited { code },
            }),
        }
    }
}

impl<R> Process<R> {
    /// Whether the child has started and not yet ended.
    pub fn is_alive(&self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| matches!(c.poll_exit(), Ok(None)))
    }

    /// The child's process id, once started.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// Its name: the one given, or once started the default `Process-N`.
    /// (Not `name()`: on a `Process`, [`name`](Self::name) sets it, as
    /// Python's constructor keyword; [`JoinHandle::name`] gets.)
    pub fn get_name(&self) -> Option<&str> {
        self.child
            .as_ref()
            .map(|c| c.name.as_str())
            .or(self.name.as_deref())
    }

    /// How it ended: `None` while running (or not started), its exit code
    /// once it exited, `-N` when signal `N` killed it (as in Python).
    ///
    /// ```
    /// fn three(_: ()) { std::process::exit(3) }
    /// let mut p = multiproc::Process::new(three, ());
    /// p.start()?;
    /// let _ = p.join();
    /// assert_eq!(p.code(), Some(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn code(&self) -> Option<i32> {
        self.exitcode()
    }

    /// Python's name for [`code`](Self::code).
    pub fn exitcode(&self) -> Option<i32> {
        match self.child.as_ref()?.poll_exit() {
            Ok(Some(Exit::Code(c))) => Some(c),
            Ok(Some(Exit::Signal(s))) => Some(-s),
            _ => None,
        }
    }

    /// Asks the child to stop (`SIGTERM`).
    pub fn terminate(&self) -> std::io::Result<()> {
        self.child
            .as_ref()
            .map_or(Ok(()), |c| c.signal(sys::process::SIGTERM))
    }

    /// The child's pidfd (readable once it has exited), once started.
    pub(crate) fn pidfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.child.as_ref().map(|c| c.pidfd())
    }

    /// A descriptor that becomes readable when the child ends (Python's
    /// `sentinel`; a pidfd), once started. Pass it to `poll`/`epoll`, or the
    /// process itself to [`wait`](crate::wait).
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// let mut p = multiproc::Process::new(nap, 10);
    /// assert!(p.sentinel().is_none());
    /// p.start()?;
    /// assert!(p.sentinel().is_some());
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sentinel(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.pidfd()
    }

    /// Releases what the handle holds (its pidfd, its connection to the
    /// child; Python's `close`). Fails with
    /// [`ErrorKind::ResourceBusy`](std::io::ErrorKind::ResourceBusy) while
    /// the child still runs. Afterwards the handle knows nothing of the
    /// child: `pid`, `exitcode` and `sentinel` give `None`, `join` gives
    /// [`JoinError::NotStarted`]. A process never started can be closed.
    ///
    /// ```
    /// fn one(_: ()) -> u8 { 1 }
    /// let mut p = multiproc::Process::new(one, ());
    /// p.start()?;
    /// assert_eq!(p.join()?, 1);
    /// p.close()?;
    /// assert_eq!(p.pid(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&mut self) -> std::io::Result<()> {
        if let Some(c) = &self.child {
            if c.poll_exit()?.is_none() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    "cannot close a process that is still running",
                ));
            }
            // Reaped: the registry no longer lists it, so dropping the last
            // handle closes its pidfd.
            drop(c.take_outcome());
        }
        self.child = None;
        self.payload = None;
        Ok(())
    }

    /// Stops the child at once (`SIGKILL`).
    pub fn kill(&self) -> std::io::Result<()> {
        self.child
            .as_ref()
            .map_or(Ok(()), |c| c.signal(sys::process::SIGKILL))
    }
}

/// Refuses environment variables no process can hold (as
/// `std::process::Command` and Python's `os.environ` do): an empty name, a
/// name with `=`, or a NUL byte anywhere.
fn check_env(env: &[(std::ffi::OsString, std::ffi::OsString)]) -> Result<(), StartError> {
    use std::os::unix::ffi::OsStrExt;
    for (key, value) in env {
        let (k, v) = (key.as_bytes(), value.as_bytes());
        if k.is_empty() || k.contains(&b'=') || k.contains(&0) || v.contains(&0) {
            return Err(StartError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid environment variable for the child: {key:?}={value:?}"),
            )));
        }
    }
    Ok(())
}

impl<R> std::fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field(
                "name",
                &self.child.as_ref().map(|c| &c.name).or(self.name.as_ref()),
            )
            .field("pid", &self.child.as_ref().map(|c| c.pid))
            .field("daemon", &self.daemon)
            .field("start_method", &self.method)
            .field("started", &self.child.is_some())
            .finish()
    }
}

fn decode_outcome<R: DeserializeOwned>(
    payload: &[u8],
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<R, JoinError> {
    let (tag, rest) = codec::decode_payload::<u8>(payload, Vec::new())?;
    match tag {
        target::OUTCOME_OK => Ok(codec::decode_payload::<R>(rest, fds)?.0),
        target::OUTCOME_PANIC => {
            let (message, _) = codec::decode_payload::<String>(rest, Vec::new())?;
            Err(JoinError::Panicked { message })
        }
        target::OUTCOME_BAD_RESULT => {
            let (message, _) = codec::decode_payload::<String>(rest, Vec::new())?;
            Err(JoinError::Codec(CodecError::Encode(message)))
        }
        _ => {
            let (message, _) = codec::decode_payload::<String>(rest, Vec::new())?;
            Err(JoinError::Codec(CodecError::Decode(message)))
        }
    }
}

impl ProcessInfo {
    /// Its name (`MainProcess`, `Process-N`, or the one it was given).
    ///
    /// ```
    /// assert_eq!(multiproc::current_process().name(), "MainProcess");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether it was started as a daemon.
    pub fn daemon(&self) -> bool {
        self.daemon
    }
}

/// The children of this process that are still running (finished ones are
/// reaped on the way, as in Python).
pub fn active_children() -> Vec<ProcessInfo> {
    registry::active()
        .into_iter()
        .map(|c| ProcessInfo {
            name: c.name.clone(),
            pid: c.pid,
            daemon: c.daemon,
        })
        .collect()
}

impl<R> crate::connection::Waitable for Process<R> {
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.child.as_ref().map(|c| c.pidfd())
    }
}

/// Number of CPUs online (Python's `cpu_count()`), whether or not this
/// process may use them all.
pub fn cpu_count() -> usize {
    sys::process::cpu_count()
}

/// Number of CPUs this process may actually use: its CPU affinity mask and
/// its cgroup's CPU quota taken into account (the rules of
/// `std::thread::available_parallelism`); at least 1. The default size of a
/// [`Pool`](crate::Pool).
pub(crate) fn usable_cpu_count() -> usize {
    std::thread::available_parallelism().map_or_else(|_| cpu_count(), |n| n.get())
}
