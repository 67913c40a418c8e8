//! Starting a child in one call, in the shape of `std::thread`: [`spawn`],
//! [`Builder`] and the [`JoinHandle`] they return.
//!
//! Everything runs on [`Process`]: a `JoinHandle` is a started `Process`
//! whose `join` consumes it, so "joined twice" cannot be written.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Process, StartMethod};
use crate::error::{JoinError, StartError};
use crate::sys::process::ChildSetup;
use crate::wait::Deadline;

/// Starts `f(arg)` in a child process at once and returns its handle, like
/// `std::thread::spawn`. The child starts with the default
/// [`start_method()`](crate::start_method); use a [`Builder`] to choose
/// another, a name, the environment or the standard streams.
///
/// # Panics
///
/// If the child cannot be started (the OS refuses, the argument cannot be
/// encoded, or the fork start method is the default while this process
/// runs several threads). [`Builder::spawn`] returns these as a
/// [`StartError`] instead.
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// let child = multiproc::spawn(square, 12);
/// assert_eq!(child.join()?, 144);
/// # Ok::<(), multiproc::JoinError>(())
/// ```
pub fn spawn<A, R>(f: fn(A) -> R, arg: A) -> JoinHandle<R>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    match Builder::new().spawn(f, arg) {
        Ok(handle) => handle,
        Err(e) => panic!("multiproc::spawn: failed to start a child process: {e}"),
    }
}

/// What a child's standard stream is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stdio {
    /// The parent's stream (the default).
    #[default]
    Inherit,
    /// `/dev/null`: reads see end of file, writes vanish.
    Null,
}

/// Settings for a child process before it starts, like
/// `std::thread::Builder`: name, daemon flag, start method, environment
/// variables and standard streams. Setters take and return the builder;
/// [`spawn`](Self::spawn) starts the child.
///
/// ```
/// use multiproc::{Builder, StartMethod, Stdio};
///
/// fn greet(who: String) -> String {
///     let me = multiproc::current_process();
///     let lang = std::env::var("GREETING_LANG").unwrap_or_default();
///     format!("{} greets {who} in {lang}", me.name())
/// }
///
/// let child = Builder::new()
///     .name("greeter")
///     .start_method(StartMethod::Spawn)
///     .env("GREETING_LANG", "Rust")
///     .stdout(Stdio::Null)
///     .spawn(greet, "you".to_string())?;
/// assert_eq!(child.name(), "greeter");
/// assert_eq!(child.join()?, "greeter greets you in Rust");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `spawn` or `process` is called"]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    setup: ChildSetup,
}

impl Builder {
    /// Default settings: named `Process-N`, not a daemon, the default start
    /// method, the parent's environment and standard streams.
    pub fn new() -> Self {
        Self::default()
    }

    super::launch_setters! {
        /// Names the child (default `Process-N`); the child sees it as
        /// [`current_process().name()`](crate::ProcessInfo::name).
    }

    /// Sets environment variable `key` to `value` in the child (replacing an
    /// inherited one), under either start method. The parent's environment
    /// is not changed. A name that is empty or holds `=` or NUL, or a value
    /// holding NUL, makes `spawn` fail with
    /// [`ErrorKind::InvalidInput`](std::io::ErrorKind::InvalidInput).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let key = key.as_ref().to_os_string();
        self.setup.env.retain(|(k, _)| *k != key);
        self.setup.env.push((key, value.as_ref().to_os_string()));
        self
    }

    /// Connects the child's standard input.
    pub fn stdin(mut self, stdio: Stdio) -> Self {
        self.setup.null_stdio[0] = stdio == Stdio::Null;
        self
    }

    /// Connects the child's standard output.
    pub fn stdout(mut self, stdio: Stdio) -> Self {
        self.setup.null_stdio[1] = stdio == Stdio::Null;
        self
    }

    /// Connects the child's standard error (where the one-line report of a
    /// panic goes; the panic message still reaches [`JoinHandle::join`]).
    pub fn stderr(mut self, stdio: Stdio) -> Self {
        self.setup.null_stdio[2] = stdio == Stdio::Null;
        self
    }

    /// Starts `f(arg)` in a child with these settings.
    ///
    /// ```
    /// fn double(x: i32) -> i32 { 2 * x }
    /// let child = multiproc::Builder::new().name("doubler").spawn(double, 21)?;
    /// assert_eq!(child.join()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<A, R>(self, f: fn(A) -> R, arg: A) -> Result<JoinHandle<R>, StartError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        let mut process = self.process(f, arg);
        process.start()?;
        Ok(JoinHandle { process })
    }

    /// A [`Process`] with these settings, not yet started (Python's shape:
    /// [`start`](Process::start) it later).
    ///
    /// ```
    /// fn quiet(_: ()) -> u8 { println!("not seen"); 1 }
    /// let mut p = multiproc::Builder::new()
    ///     .stdout(multiproc::Stdio::Null)
    ///     .process(quiet, ());
    /// p.start()?;
    /// assert_eq!(p.join()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn process<A, R>(self, f: fn(A) -> R, arg: A) -> Process<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        let mut process = Process::new(f, arg).daemon(self.daemon);
        process.name = self.name;
        process.method = self.method;
        process.setup = self.setup;
        process
    }
}

/// A running (or finished) child started by [`spawn`] or
/// [`Builder::spawn`]; [`join`](Self::join) it for the child's return value.
///
/// Dropping the handle does not stop the child (as with a thread's
/// handle): it dies with its parent, and when the parent's `main` returns
/// a daemon child is terminated, another waited for.
///
/// ```
/// use std::time::Duration;
///
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
///
/// let child = multiproc::spawn(nap, 60_000);
/// assert!(!child.is_finished());
/// // On timeout the handle comes back, to wait again or to stop the child.
/// let child = match child.join_timeout(Duration::from_millis(10)) {
///     Err(multiproc::JoinTimeoutError::Timeout(child)) => child,
///     other => panic!("expected a timeout, got {other:?}"),
/// };
/// child.kill()?;
/// assert!(matches!(child.join(), Err(multiproc::JoinError::Killed { signal: 9 })));
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "dropping the handle lets the child run on unjoined"]
pub struct JoinHandle<R> {
    /// Started; never joined (joining consumes the handle).
    process: Process<R>,
}

/// Why [`JoinHandle::join_timeout`] has no value.
#[non_exhaustive]
pub enum JoinTimeoutError<R> {
    /// The child still runs after the timeout; here is its handle back.
    Timeout(JoinHandle<R>),
    /// The child ended without a value (as from [`JoinHandle::join`]).
    Join(JoinError),
}

impl<R: DeserializeOwned> JoinHandle<R> {
    /// Waits for the child to end and returns its target's return value.
    ///
    /// A panic in the child gives [`JoinError::Panicked`] with its message;
    /// a child killed by a signal gives [`JoinError::Killed`]; one that
    /// exited before returning gives [`JoinError::Exited`].
    pub fn join(mut self) -> Result<R, JoinError> {
        self.process.join_until(Deadline::NEVER)
    }

    /// Like [`join`](Self::join), but waits at most `timeout`; if the child
    /// still runs then, gives the handle back in
    /// [`JoinTimeoutError::Timeout`]. A timeout too long to represent means
    /// no limit.
    pub fn join_timeout(mut self, timeout: Duration) -> Result<R, JoinTimeoutError<R>> {
        match self.process.join_until(Deadline::after(timeout)) {
            Ok(value) => Ok(value),
            Err(JoinError::Timeout(_)) => Err(JoinTimeoutError::Timeout(self)),
            Err(e) => Err(JoinTimeoutError::Join(e)),
        }
    }
}

impl<R> JoinHandle<R> {
    /// Whether the child has ended (its value, if any, waits for
    /// [`join`](Self::join)). Does not block.
    pub fn is_finished(&self) -> bool {
        !self.process.is_alive()
    }

    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.child().pid
    }

    /// The child's name (the builder's, or `Process-N`).
    pub fn name(&self) -> &str {
        &self.child().name
    }

    /// Its exit code once it has ended, `-N` when signal `N` killed it;
    /// `None` while it runs.
    pub fn code(&self) -> Option<i32> {
        self.process.exitcode()
    }

    /// Asks the child to stop (`SIGTERM`).
    pub fn terminate(&self) -> std::io::Result<()> {
        self.process.terminate()
    }

    /// Stops the child at once (`SIGKILL`).
    pub fn kill(&self) -> std::io::Result<()> {
        self.process.kill()
    }

    /// A descriptor that becomes readable when the child ends (a pidfd;
    /// Python's `sentinel`). The handle itself also works with
    /// [`wait`](crate::wait).
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.child().pidfd()
    }

    fn child(&self) -> &super::registry::Child {
        self.process
            .child
            .as_deref()
            .expect("a JoinHandle holds a started process")
    }
}

impl<R> crate::connection::Waitable for JoinHandle<R> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.sentinel())
    }
}

impl<R> std::fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("name", &self.name())
            .field("pid", &self.pid())
            .finish()
    }
}

impl<R> std::fmt::Debug for JoinTimeoutError<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinTimeoutError::Timeout(h) => f.debug_tuple("Timeout").field(h).finish(),
            JoinTimeoutError::Join(e) => f.debug_tuple("Join").field(e).finish(),
        }
    }
}

impl<R> std::fmt::Display for JoinTimeoutError<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinTimeoutError::Timeout(h) => {
                write!(
                    f,
                    "the child {} (pid {}) is still running",
                    h.name(),
                    h.pid()
                )
            }
            JoinTimeoutError::Join(e) => e.fmt(f),
        }
    }
}

impl<R> std::error::Error for JoinTimeoutError<R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JoinTimeoutError::Timeout(_) => None,
            JoinTimeoutError::Join(e) => Some(e),
        }
    }
}
