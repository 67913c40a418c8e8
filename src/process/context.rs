//! Start methods and the crate-wide default (Python's `set_start_method`
//! and `get_start_method`).

use std::sync::atomic::{AtomicU8, Ordering};

/// How a child process is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// Re-execute the current binary and run the target in the fresh copy
    /// (the default). Safe whatever threads the parent runs; about 1 ms.
    #[default]
    Spawn,
    /// `fork` the parent and run the target in the copy. Faster (about
    /// 0.15 ms) and the child sees the parent's memory, but only allowed when
    /// the parent has a single thread: a forked child could otherwise
    /// inherit a lock held by a thread that does not exist in it.
    Fork,
}

static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// Sets the start method used by processes that do not choose one.
///
/// ```
/// use multiproc::{StartMethod, set_start_method, start_method};
/// set_start_method(StartMethod::Spawn);
/// assert_eq!(start_method(), StartMethod::Spawn);
/// ```
pub fn set_start_method(method: StartMethod) {
    DEFAULT.store(method as u8, Ordering::Relaxed);
}

/// The start method used by processes that do not choose one.
///
/// ```
/// assert_eq!(multiproc::start_method(), multiproc::StartMethod::Spawn);
/// ```
pub fn start_method() -> StartMethod {
    match DEFAULT.load(Ordering::Relaxed) {
        1 => StartMethod::Fork,
        _ => StartMethod::Spawn,
    }
}

/// Python's name for [`start_method`].
pub fn get_start_method() -> StartMethod {
    start_method()
}

/// A start method bundled with the constructors that use it (Python's
/// `get_context('fork')`).
///
/// ```
/// use multiproc::{StartMethod, get_context};
/// fn double(x: i32) -> i32 { 2 * x }
/// let ctx = get_context(StartMethod::Spawn);
/// let mut p = ctx.process(double, 21);
/// p.start()?;
/// assert_eq!(p.join()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

/// A [`Context`] for `method` (Python's name for [`Context::new`]).
pub fn get_context(method: StartMethod) -> Context {
    Context::new(method)
}

impl Context {
    /// A context whose processes start with `method`.
    ///
    /// ```
    /// use multiproc::{Context, StartMethod};
    /// assert_eq!(Context::new(StartMethod::Fork).start_method(), StartMethod::Fork);
    /// ```
    pub fn new(method: StartMethod) -> Self {
        Context { method }
    }

    /// A [`Builder`](crate::Builder) whose processes start with this
    /// context's method.
    pub fn builder(&self) -> crate::process::Builder {
        crate::process::Builder::new().start_method(self.method)
    }

    /// Its start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A [`Process`](crate::Process) that will start with this context's method.
    pub fn process<A, R>(&self, target: fn(A) -> R, args: A) -> crate::process::Process<R>
    where
        A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        R: serde::Serialize + serde::de::DeserializeOwned,
    {
        crate::process::Process::new(target, args).start_method(self.method)
    }
}
