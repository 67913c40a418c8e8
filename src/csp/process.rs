//! CSP processes and their composition: [`CspProcess`], [`parallel`],
//! [`sequence`], [`spawn`].
//!
//! A process runs as a thread by default, as a lightweight process (many
//! of them multiplexed on a few threads, see `light/`) or as an OS process
//! (the crate's [`Process`](crate::Process)) when asked. Its body returns
//! `Result<R, ChannelError>`, so `?` on a channel operation ends it. As in
//! PyCSP, a process that ends by poison poisons every channel whose ends
//! it was given as arguments; one that ends by retire has retired them
//! (its ends were dropped); one that panics or fails otherwise poisons
//! them too, so the rest of the network shuts down instead of hanging.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::chan::Chan;
use super::channel::{Held, channels_in};
use super::error::{ChannelError, ProcessError};
use super::light::{self, Completion, TaskBody};
use crate::error::{CodecError, JoinError};
use crate::process::fn_ref::FnRef;
use crate::process::{Process, StartMethod, get_start_method};

mod tuple;
pub use tuple::Parallel;

/// How a CSP process ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<R> {
    /// It returned a value.
    Done(R),
    /// It ended by poison (and poisoned the channels it held).
    Poisoned,
    /// It ended by retire (its ends are retired).
    Retired,
}

impl<R> Outcome<R> {
    /// The returned value, if it returned one.
    pub fn value(self) -> Option<R> {
        match self {
            Outcome::Done(r) => Some(r),
            _ => None,
        }
    }
}

/// How a process ended, as it is handed over: the error boxed (a million
/// lightweight processes each keep one until joined), its `name` left
/// empty (the joiner fills it in, see [`named`]).
type Ending<R> = Result<Outcome<R>, Box<ProcessError>>;
type Launch<R> =
    Box<dyn FnOnce(&Name, Option<StartMethod>, bool) -> Result<Launched<R>, ProcessError> + Send>;

/// A process's name: given, or `CspProcess-N`, formatted only when it is
/// shown (a million lightweight processes need no text).
#[derive(Debug, Clone)]
enum Name {
    Given(String),
    Numbered(usize),
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Given(s) => f.write_str(s),
            Name::Numbered(n) => write!(f, "CspProcess-{n}"),
        }
    }
}

/// `e` with its process's name, which the joiner knows (the process
/// itself does not keep it).
fn named(e: ProcessError, name: &Name) -> ProcessError {
    let name = name.to_string();
    match e {
        ProcessError::Panicked { message, .. } => ProcessError::Panicked { name, message },
        ProcessError::Channel { error, .. } => ProcessError::Channel { name, error },
        ProcessError::NotAFunction { .. } => ProcessError::NotAFunction { name },
        ProcessError::Start { error, .. } => ProcessError::Start { name, error },
        ProcessError::Join { error, .. } => ProcessError::Join { name, error },
        ProcessError::Thread { error, .. } => ProcessError::Thread { name, error },
    }
}

/// A process just launched: a thread or a lightweight process, or an OS
/// process not yet watched.
enum Launched<R> {
    Running(Running<R>),
    /// A started OS process; the closure starts the thread that waits for it.
    Os(Watch<R>),
}

type Watch<R> = Box<dyn FnOnce(&Name) -> Result<Running<R>, ProcessError> + Send>;

/// A running process: how it will end, and its thread if it has one of
/// its own (a lightweight process has none). Waiting parks a waiting
/// lightweight process instead of blocking its worker.
struct Running<R> {
    done: Arc<Completion<Ending<R>>>,
    thread: Option<JoinHandle<()>>,
}

impl<R> Running<R> {
    /// `run` on a thread of its own called `thread`, for the process
    /// `name`; `run` sets `done`.
    fn on_thread(
        done: Arc<Completion<Ending<R>>>,
        name: &Name,
        thread: String,
        run: impl FnOnce() + Send + 'static,
    ) -> Result<Running<R>, ProcessError> {
        let t = std::thread::Builder::new()
            .name(thread)
            .spawn(run)
            .map_err(|error| ProcessError::Thread {
                name: name.to_string(),
                error,
            })?;
        Ok(Running {
            done,
            thread: Some(t),
        })
    }

    fn wait(self, name: &Name) -> Result<Outcome<R>, ProcessError> {
        let ending = self.done.take();
        if let Some(t) = self.thread {
            // It set its ending as its last act.
            let _ = t.join();
        }
        match ending {
            Some(Ok(outcome)) => Ok(outcome),
            Some(Err(e)) => Err(named(*e, name)),
            None => Err(ProcessError::Panicked {
                name: name.to_string(),
                message: "the process ended without a result".into(),
            }),
        }
    }
}

/// A process of a CSP network, not yet started.
///
/// ```
/// use multiproc::csp::{Channel, ChannelError, CspProcess, Reader, Writer, parallel};
///
/// fn producer(out: Writer<u32>) -> Result<(), ChannelError> {
///     for i in 0..3 {
///         out.write(&i)?;
///     }
///     out.poison();
///     Ok(())
/// }
///
/// fn consumer(inp: Reader<u32>) -> Result<u32, ChannelError> {
///     let mut sum = 0;
///     loop {
///         match inp.read() {
///             Ok(x) => sum += x,
///             Err(ChannelError::Poisoned) => return Ok(sum),
///             Err(e) => return Err(e),
///         }
///     }
/// }
///
/// let ch = Channel::new()?;
/// let out = parallel([
///     CspProcess::new(|w| producer(w).map(|_| 0), ch.writer()),
///     CspProcess::new(consumer, ch.reader()),
/// ])?;
/// assert_eq!(out[1].clone().value(), Some(3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a CSP process does nothing until it is run by `parallel`, `sequence` or `spawn`"]
pub struct CspProcess<R> {
    name: Name,
    channels: Vec<(Arc<Chan>, u32)>,
    method: Option<StartMethod>,
    light: bool,
    launch: Launch<R>,
}

impl<R> std::fmt::Debug for CspProcess<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CspProcess")
            .field("name", &self.name)
            .field("channels", &self.channels.len())
            .field("start_method", &self.method)
            .field("lightweight", &self.light)
            .finish_non_exhaustive()
    }
}

static COUNT: AtomicUsize = AtomicUsize::new(0);

fn default_name() -> Name {
    Name::Numbered(COUNT.fetch_add(1, Ordering::Relaxed) + 1)
}

impl<R: Send + 'static> CspProcess<R> {
    /// A process with the default settings, holding `channels`, that
    /// `launch` starts.
    fn with_launch(channels: Vec<(Arc<Chan>, u32)>, launch: Launch<R>) -> Self {
        CspProcess {
            name: default_name(),
            channels,
            method: None,
            light: false,
            launch,
        }
    }

    /// A process running `body(args)` in a thread. The channel ends inside
    /// `args` (found through serde, in any position) are the ones poison
    /// propagates to; `body` may also capture anything else.
    pub fn new<A, F>(body: F, args: A) -> Self
    where
        A: Serialize + Send + 'static,
        F: FnOnce(A) -> Result<R, ChannelError> + Send + 'static,
    {
        let channels = channels_in(&args);
        let held = channels.clone();
        let launch: Launch<R> = Box::new(move |name, method, lightweight| {
            if method.is_some() {
                return Err(ProcessError::NotAFunction {
                    name: name.to_string(),
                });
            }
            in_place(name, held, lightweight, move || body(args)).map(Launched::Running)
        });
        CspProcess::with_launch(channels, launch)
    }

    /// A process running the function `target(args)`: in a thread unless
    /// [`os`](Self::os) or [`start_method`](Self::start_method) asks for
    /// an OS process, which then receives `args` (channel ends included)
    /// through the crate's codec.
    pub fn function<A>(target: fn(A) -> Result<R, ChannelError>, args: A) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        let channels = channels_in(&args);
        let held = channels.clone();
        let launch: Launch<R> = Box::new(move |name, method, lightweight| match method {
            None => in_place(name, held, lightweight, move || target(args)).map(Launched::Running),
            Some(method) => {
                let call = OsCall {
                    target: FnRef::new(target),
                    args,
                };
                let mut p = Process::new(os_entry::<A, R>, call)
                    .name(name.to_string())
                    .start_method(method);
                p.start().map_err(|error| ProcessError::Start {
                    name: name.to_string(),
                    error,
                })?;
                let p = Box::new(p);
                Ok(Launched::Os(Box::new(move |name: &Name| {
                    watch_os(name, held, p)
                })))
            }
        });
        CspProcess::with_launch(channels, launch)
    }

    /// A lightweight process running the closure `body(args)`: one of many
    /// multiplexed on a few worker threads (one per CPU), switched away
    /// from when it waits on a channel. It costs a few hundred bytes and
    /// its live stack while it waits, so networks of a million processes
    /// fit in memory; it talks to threads and OS processes over the same
    /// channels. A blocking call outside the crate stalls the other
    /// processes of its worker: wrap it in [`io`](super::io). The processes
    /// one [`parallel`]/[`spawn`] call starts share a worker (the calling
    /// lightweight process's own, if any), so their communication never
    /// crosses threads.
    ///
    /// ```
    /// use multiproc::csp::{Channel, ChannelError, CspProcess, Reader, Writer, parallel};
    ///
    /// let ch = Channel::builder().threads_only().build::<u32>()?;
    /// let out = parallel([
    ///     CspProcess::light(|w: Writer<u32>| w.write(&7).map(|_| 0), ch.writer()),
    ///     CspProcess::light(|r: Reader<u32>| r.read(), ch.reader()),
    /// ])?;
    /// assert_eq!(out[1].clone().value(), Some(7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn light<A, F>(body: F, args: A) -> Self
    where
        A: Serialize + Send + 'static,
        F: FnOnce(A) -> Result<R, ChannelError> + Send + 'static,
    {
        Self::new(body, args).lightweight()
    }

    /// Runs it as a lightweight process (see [`light`](Self::light))
    /// instead of a thread; an OS start method, if also asked, wins.
    pub fn lightweight(mut self) -> Self {
        self.light = true;
        self
    }

    /// A process running the closure `body(args)` in a thread: the same as
    /// [`new`](Self::new), under the name that says where it runs.
    ///
    /// ```
    /// use multiproc::csp::{CspProcess, parallel};
    /// let offset = 10;
    /// let out = parallel([CspProcess::thread(move |x: u32| Ok(x + offset), 1)])?;
    /// assert_eq!(out[0].clone().value(), Some(11));
    /// # Ok::<(), multiproc::csp::ProcessError>(())
    /// ```
    pub fn thread<A, F>(body: F, args: A) -> Self
    where
        A: Serialize + Send + 'static,
        F: FnOnce(A) -> Result<R, ChannelError> + Send + 'static,
    {
        Self::new(body, args)
    }

    /// A process running the function `target(args)` as an OS process
    /// started with the default start method: the same as
    /// [`function(target, args).os()`](Self::function). Its arguments
    /// (channel ends included) and its result travel through the crate's
    /// codec; [`start_method`](Self::start_method) picks another method.
    ///
    /// ```
    /// use multiproc::csp::{ChannelError, CspProcess, parallel};
    ///
    /// fn double(x: u32) -> Result<u32, ChannelError> {
    ///     Ok(x * 2)
    /// }
    ///
    /// let out = parallel([CspProcess::os_process(double, 21)])?;
    /// assert_eq!(out[0].clone().value(), Some(42));
    /// # Ok::<(), multiproc::csp::ProcessError>(())
    /// ```
    pub fn os_process<A>(target: fn(A) -> Result<R, ChannelError>, args: A) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        Self::function(target, args).os()
    }

    /// Names the process (default `CspProcess-N`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Name::Given(name.into());
        self
    }

    /// Runs it as an OS process with the default start method (only for
    /// processes built with [`function`](Self::function)).
    pub fn os(self) -> Self {
        let m = get_start_method();
        self.start_method(m)
    }

    /// Runs it as an OS process started with `method`.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    fn launch(self) -> (Name, Result<Launched<R>, ProcessError>) {
        let CspProcess {
            name,
            channels,
            method,
            light,
            launch,
        } = self;
        let launched = launch(&name, method, light);
        if launched.is_err() {
            poison_all(&channels);
        }
        (name, launched)
    }

    fn start(self) -> Started<R> {
        let (name, launched) = self.launch();
        Started::from(name, launched)
    }
}

thread_local! {
    /// The worker the lightweight processes being launched go to (set by
    /// `spawn` and the tuple launch, so one network shares a worker).
    static PLACE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Makes the lightweight processes launched until the guard drops go to
/// one worker (if any of `lights` is lightweight).
pub(super) fn place(any_light: bool) -> impl Drop {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            PLACE.with(|p| p.set(self.0));
        }
    }
    let before = PLACE.with(|p| p.get());
    if any_light && before.is_none() {
        PLACE.with(|p| p.set(Some(light::pick_worker())));
    }
    Restore(before)
}

/// Runs `body` in this process: in a thread, or as a lightweight process.
fn in_place<R: Send + 'static>(
    name: &Name,
    ends: Vec<(Arc<Chan>, u32)>,
    lightweight: bool,
    body: impl FnOnce() -> Result<R, ChannelError> + Send + 'static,
) -> Result<Running<R>, ProcessError> {
    let done = Completion::new();
    let start = Box::new(Start {
        ends,
        body,
        done: done.clone(),
    });
    if lightweight {
        let worker = PLACE.with(|p| p.get()).unwrap_or_else(light::pick_worker);
        light::spawn_task(worker, start);
        return Ok(Running { done, thread: None });
    }
    Running::on_thread(done, name, name.to_string(), move || TaskBody::run(start))
}

/// What a process of this process starts with: the ends it was given, its
/// body, and where its ending goes. On the heap until the process runs:
/// a lightweight process's stack, copied aside whenever it parks, then
/// holds only `body` (its arguments) and `done` below the body's own
/// frames.
struct Start<R, F> {
    ends: Vec<(Arc<Chan>, u32)>,
    body: F,
    done: Arc<Completion<Ending<R>>>,
}

impl<R, F> TaskBody for Start<R, F>
where
    R: Send,
    F: FnOnce() -> Result<R, ChannelError> + Send,
{
    /// Runs the process's body, turning its ending into an [`Outcome`]
    /// handed to `done`, and poisoning the channels of `ends` at once when
    /// it ends by poison, an error or a panic (before its ends, dropped on
    /// return, retire them). A panic before or after the body (while
    /// counting or releasing the ends) is reported as the process's panic.
    fn run(self: Box<Self>) {
        let Some((body, held, done)) = self.open() else {
            return;
        };
        let r = call_body(body);
        conclude(held, r, &done);
    }
}

impl<R, F> Start<R, F> {
    /// Counts the process's ends (a panic there is its panic) and frees
    /// the box, keeping the body and `done`.
    #[inline(never)]
    #[allow(clippy::type_complexity, clippy::boxed_local)] // the box is freed here
    fn open(self: Box<Self>) -> Option<(F, Held, Arc<Completion<Ending<R>>>)> {
        let Start { ends, body, done } = *self;
        match catch_unwind(AssertUnwindSafe(|| Held::new(&ends))) {
            Ok(held) => Some((body, held, done)),
            Err(panic) => {
                set_panicked(&done, panic);
                None
            }
        }
    }
}

/// The body, its panic caught (a frame of its own, small).
#[inline(never)]
fn call_body<R>(
    body: impl FnOnce() -> Result<R, ChannelError>,
) -> std::thread::Result<Result<R, ChannelError>> {
    catch_unwind(AssertUnwindSafe(body))
}

/// Turns what the body returned into its ending: poisons the held
/// channels unless it ended well or by retire, then hands the ending over
/// (a panic doing so is the process's panic).
#[inline(never)]
fn conclude<R>(
    held: Held,
    r: std::thread::Result<Result<R, ChannelError>>,
    done: &Completion<Ending<R>>,
) {
    let handed = catch_unwind(AssertUnwindSafe(|| {
        let ending = match r {
            Ok(Ok(r)) => Ok(Outcome::Done(r)),
            Ok(Err(ChannelError::Poisoned)) => Ok(Outcome::Poisoned),
            Ok(Err(ChannelError::Retired)) => Ok(Outcome::Retired),
            Ok(Err(error)) => Err(Box::new(ProcessError::Channel {
                name: String::new(),
                error,
            })),
            Err(panic) => Err(Box::new(ProcessError::Panicked {
                name: String::new(),
                message: panic_message(&*panic),
            })),
        };
        if !matches!(ending, Ok(Outcome::Done(_)) | Ok(Outcome::Retired)) {
            held.poison();
        }
        drop(held);
        done.set(ending);
    }));
    if let Err(panic) = handed {
        set_panicked(done, panic);
    }
}

/// Reports a panic outside the body (the body's own are caught in
/// [`call_body`]).
#[cold]
#[inline(never)]
fn set_panicked<R>(done: &Completion<Ending<R>>, panic: Box<dyn std::any::Any + Send>) {
    done.set(Err(Box::new(ProcessError::Panicked {
        name: String::new(),
        message: panic_message(&*panic),
    })));
}

/// Waits for an OS process on a thread of its own, so that its death is
/// noticed (and its channels poisoned) as soon as it happens.
fn watch_os<R>(
    name: &Name,
    held: Vec<(Arc<Chan>, u32)>,
    mut p: Box<Process<OsResult<R>>>,
) -> Result<Running<R>, ProcessError>
where
    R: Send + DeserializeOwned + 'static,
{
    let done = Completion::new();
    let d = done.clone();
    Running::on_thread(done, name, format!("{name}-watch"), move || {
        let name = String::new();
        let ending = match p.join() {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(remote)) => Err(ProcessError::Channel {
                name,
                error: remote.into_error(),
            }),
            Err(JoinError::Panicked { message }) => Err(ProcessError::Panicked { name, message }),
            Err(error) => Err(ProcessError::Join { name, error }),
        };
        let ending = ending.map_err(Box::new);
        propagate(&ending, &held);
        d.set(ending);
    })
}

/// Poison ends the network on poison, panic, failure or death (a killed
/// OS process cannot do it itself).
fn propagate<R>(ending: &Ending<R>, held: &[(Arc<Chan>, u32)]) {
    if !matches!(ending, Ok(Outcome::Done(_)) | Ok(Outcome::Retired)) {
        poison_all(held);
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    light::panic_text(p)
}

fn poison_all(channels: &[(Arc<Chan>, u32)]) {
    for (c, _) in channels {
        c.poison();
    }
}

/// A started process.
struct Started<R> {
    name: Name,
    /// The error boxed: a million of these wait for their join.
    running: Result<Running<R>, Box<ProcessError>>,
}

impl<R: Send + 'static> Started<R> {
    fn from(name: Name, launched: Result<Launched<R>, ProcessError>) -> Started<R> {
        let running = launched
            .and_then(|l| match l {
                Launched::Running(r) => Ok(r),
                Launched::Os(watch) => watch(&name),
            })
            .map_err(Box::new);
        Started { name, running }
    }

    /// Waits for it.
    fn wait(self) -> Result<Outcome<R>, ProcessError> {
        match self.running {
            Err(e) => Err(*e),
            Ok(r) => r.wait(&self.name),
        }
    }
}

/// Runs the processes concurrently and waits for all of them (PyCSP's
/// `Parallel`). Returns their outcomes in order, or the first error in
/// list order once every process has ended.
///
/// ```
/// use multiproc::csp::{CspProcess, parallel};
/// let outcomes = parallel([
///     CspProcess::new(|x: u32| Ok(x * 2), 1),
///     CspProcess::new(|x: u32| Ok(x * 2), 2),
/// ])?;
/// let values: Vec<u32> = outcomes.into_iter().filter_map(|o| o.value()).collect();
/// assert_eq!(values, [2, 4]);
/// # Ok::<(), multiproc::csp::ProcessError>(())
/// ```
pub fn parallel<R: Send + 'static>(
    processes: impl IntoIterator<Item = CspProcess<R>>,
) -> Result<Vec<Outcome<R>>, ProcessError> {
    spawn(processes).join()
}

/// Runs the processes one after another, each finishing before the next
/// starts (PyCSP's `Sequence`). Stops at the first error.
pub fn sequence<R: Send + 'static>(
    processes: impl IntoIterator<Item = CspProcess<R>>,
) -> Result<Vec<Outcome<R>>, ProcessError> {
    processes
        .into_iter()
        .map(|p| {
            let _place = place(p.light);
            p.start().wait()
        })
        .collect()
}

/// Starts the processes and returns at once (PyCSP's `Spawn`); wait for
/// them with [`Spawned::join`].
pub fn spawn<R: Send + 'static>(processes: impl IntoIterator<Item = CspProcess<R>>) -> Spawned<R> {
    // Every OS process starts before any thread does, so that the fork
    // start method (refused once the parent has threads) works from a
    // single-threaded parent.
    let processes: Vec<CspProcess<R>> = processes.into_iter().collect();
    let _place = place(processes.iter().any(|p| p.light && p.method.is_none()));
    let (os, threads): (Vec<_>, Vec<_>) = processes
        .into_iter()
        .enumerate()
        .partition(|(_, p)| p.method.is_some());
    let mut launched: Vec<(usize, Name, Result<Launched<R>, ProcessError>)> = os
        .into_iter()
        .chain(threads)
        .map(|(i, p)| {
            let (name, l) = p.launch();
            (i, name, l)
        })
        .collect();
    launched.sort_by_key(|(i, _, _)| *i);
    Spawned {
        started: launched
            .into_iter()
            .map(|(_, name, l)| Started::from(name, l))
            .collect(),
    }
}

/// Processes started by [`spawn`].
#[must_use = "dropping `Spawned` detaches the processes; call `join` to wait for them"]
pub struct Spawned<R> {
    started: Vec<Started<R>>,
}

impl<R> std::fmt::Debug for Spawned<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.started.iter().map(|s| s.name.to_string()).collect();
        f.debug_struct("Spawned")
            .field("processes", &names)
            .finish()
    }
}

impl<R: Send + 'static> Spawned<R> {
    /// Waits for every process; their outcomes in order, or the first
    /// error in list order.
    pub fn join(self) -> Result<Vec<Outcome<R>>, ProcessError> {
        let results: Vec<_> = self.started.into_iter().map(Started::wait).collect();
        results.into_iter().collect()
    }
}

// ---- OS processes ------------------------------------------------------

/// The type of a CSP process's target.
type Target<A, R> = fn(A) -> Result<R, ChannelError>;

/// What an OS process is started with: the target and its arguments.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: DeserializeOwned"))]
struct OsCall<A, R> {
    target: FnRef<Target<A, R>>,
    args: A,
}

/// A channel error, as it travels back from an OS process.
#[derive(Serialize, Deserialize)]
enum RemoteError {
    Timeout,
    TooLarge { len: u64, max: u64 },
    HandlesNotSupported,
    NoGuard,
    Codec(String),
}

impl RemoteError {
    fn from_error(e: ChannelError) -> RemoteError {
        match e {
            ChannelError::Timeout => RemoteError::Timeout,
            ChannelError::TooLarge { len, max } => RemoteError::TooLarge {
                len: len as u64,
                max: max as u64,
            },
            ChannelError::HandlesNotSupported => RemoteError::HandlesNotSupported,
            ChannelError::NoGuard => RemoteError::NoGuard,
            other => RemoteError::Codec(other.to_string()),
        }
    }

    fn into_error(self) -> ChannelError {
        match self {
            RemoteError::Timeout => ChannelError::Timeout,
            RemoteError::TooLarge { len, max } => ChannelError::TooLarge {
                len: len as usize,
                max: max as usize,
            },
            RemoteError::HandlesNotSupported => ChannelError::HandlesNotSupported,
            RemoteError::NoGuard => ChannelError::NoGuard,
            RemoteError::Codec(m) => ChannelError::Codec(CodecError::Decode(m)),
        }
    }
}

type OsResult<R> = Result<Outcome<R>, RemoteError>;

/// Runs in the OS process: calls the target, propagates poison to the
/// channels of its arguments, reports the outcome.
fn os_entry<A, R>(call: OsCall<A, R>) -> OsResult<R>
where
    A: Serialize + DeserializeOwned,
    R: Serialize,
{
    let target = call.target.get();
    let held = Held::new(&channels_in(&call.args));
    let args = call.args;
    let result = catch_unwind(AssertUnwindSafe(move || target(args)));
    if !matches!(result, Ok(Ok(_)) | Ok(Err(ChannelError::Retired))) {
        held.poison();
    }
    drop(held);
    match result {
        Ok(Ok(r)) => Ok(Outcome::Done(r)),
        Ok(Err(ChannelError::Poisoned)) => Ok(Outcome::Poisoned),
        Ok(Err(ChannelError::Retired)) => Ok(Outcome::Retired),
        Ok(Err(e)) => Err(RemoteError::from_error(e)),
        Err(panic) => resume_unwind(panic),
    }
}
