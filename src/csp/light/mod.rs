//! Lightweight CSP processes: many processes multiplexed on a few worker
//! threads (one per usable CPU), each a stackful coroutine that the
//! worker switches away from when it would block.
//!
//! They use the same channels, alternations, poison and retire as
//! threads and OS processes, unchanged: every wait of the crate goes
//! through one futex layer (`sys::futex`, `sys::waitv`), which on a worker
//! parks the running process instead of sleeping the thread, and every
//! wake there also wakes the processes parked on the word (see
//! `sched.rs`). So a network can mix the three kinds freely; a channel
//! between a lightweight process and an OS process works, the worker
//! watching the words its processes wait on for wakes from other
//! processes.
//!
//! Between lightweight processes of one worker thread (a network started
//! together runs on one), a rendezvous channel nobody else has used skips
//! that protocol: the writer hands its message straight to a parked
//! reader, or the reader takes it from a parked writer, with no lock
//! (`csp/chan/fast.rs`). The channel turns general for good, its parked
//! parties moving over, as soon as a thread, an alternation, another
//! worker's process or another OS process uses it.
//!
//! Why stackful coroutines and not async tasks: the channel API is
//! blocking (`read()`, `write()`, `select()`), and a process body is
//! ordinary code calling it at any depth; only a coroutine can suspend
//! such code. `corosensei` (maintained, used by Wasmer) switches in a few
//! nanoseconds and supports the architectures Linux runs on.
//!
//! A blocking call that does not go through the crate (file I/O, a
//! foreign lock, `std::thread::sleep`) would stall every process of its
//! worker: wrap it in [`io`], which runs it on a helper thread while the
//! worker goes on (PyCSP's `@io`). [`sleep`] sleeps without a thread.

mod sched;

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::sys;

pub(crate) use sched::{
    TaskBody, Unparker, current_worker, on_task, park_current, pick_worker, run_on, spawn_task,
    thread_worker,
};

/// The extra end counts a CSP process holds beside its own ends (see
/// `csp::channel::Held`): channel, side, and whether already released. The
/// channel is type-erased so that the scheduler, which keeps a parked
/// process's list, sits below the channels.
pub(crate) type HeldList = Vec<(std::sync::Arc<dyn Any + Send + Sync>, u32, bool)>;

thread_local! {
    /// The extra counts of the CSP process running on this thread.
    static HELD: std::cell::RefCell<HeldList> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on the extra counts of the CSP process running on this thread.
pub(crate) fn with_held<R>(f: impl FnOnce(&mut HeldList) -> R) -> R {
    HELD.with(|h| f(&mut h.borrow_mut()))
}

/// Swaps the running process's extra counts with `other`: a worker of
/// lightweight processes switches them with the process it runs.
fn swap_held(other: &mut HeldList) {
    with_held(|h| std::mem::swap(h, other));
}

/// Moves the suspended process's extra counts (if it holds any) from the
/// thread into `saved` (empty: [`swap_held`] took the process's list out
/// of it, or the process had none), leaving the thread with none.
fn save_held(saved: &mut HeldList) {
    with_held(|h| {
        if !h.is_empty() {
            std::mem::swap(h, saved);
        }
    });
}

/// A value handed over once, from any thread to any waiter (a thread, or
/// a lightweight process, which parks while it waits).
pub(crate) struct Completion<T> {
    done: AtomicU32,
    value: Mutex<Option<T>>,
}

impl<T> Completion<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Completion {
            done: AtomicU32::new(0),
            value: Mutex::new(None),
        })
    }

    /// Hands the value over (first call only) and wakes the waiter.
    pub fn set(&self, v: T) {
        {
            let mut slot = self.value.lock().unwrap_or_else(|e| e.into_inner());
            if self.done.load(Ordering::Relaxed) != 0 {
                return;
            }
            *slot = Some(v);
            self.done.store(1, Ordering::Release);
        }
        sys::futex::wake(&self.done, u32::MAX >> 1);
    }

    /// Waits for the value and takes it (`None` if taken already).
    pub fn take(&self) -> Option<T> {
        while self.done.load(Ordering::Acquire) == 0 {
            sys::futex::wait(&self.done, 0, None);
        }
        self.value.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Runs the blocking call `f` without stalling the other lightweight
/// processes: inside one, on a helper thread while the process is parked
/// (PyCSP's `@io`); anywhere else, at once on the calling thread. A panic
/// in `f` resumes in the caller.
///
/// The closure owns what it uses (`'static`): a parked process's stack
/// may be moved aside while another process runs in its place.
///
/// ```
/// use multiproc::csp::{CspProcess, io, parallel};
///
/// let out = parallel([CspProcess::light(
///     |path: String| Ok(io(move || std::fs::metadata(path).is_ok())),
///     "/".to_string(),
/// )])?;
/// assert_eq!(out[0].clone().value(), Some(true));
/// # Ok::<(), multiproc::csp::ProcessError>(())
/// ```
pub fn io<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if !on_task() {
        return f();
    }
    let done: Arc<Completion<std::thread::Result<T>>> = Completion::new();
    let d = done.clone();
    pool().submit(Box::new(move || d.set(catch_unwind(AssertUnwindSafe(f)))));
    match done.take() {
        Some(Ok(v)) => v,
        Some(Err(panic)) => resume_unwind(panic),
        None => unreachable!("the value is taken once"),
    }
}

/// Sleeps for `d`: inside a lightweight process it parks (its worker runs
/// the others meanwhile); anywhere else it is `std::thread::sleep`.
///
/// ```
/// use std::time::Duration;
/// use multiproc::csp::{CspProcess, parallel, sleep};
///
/// parallel([CspProcess::light(|()| Ok(sleep(Duration::from_millis(1))), ())])?;
/// # Ok::<(), multiproc::csp::ProcessError>(())
/// ```
pub fn sleep(d: Duration) {
    let deadline = Instant::now().checked_add(d);
    match deadline {
        Some(at) if sched::sleep_until(at) => {}
        _ => std::thread::sleep(d),
    }
}

// ---- the helper threads of `io` ----------------------------------------------

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run `io` calls: started when none is idle, ending after a
/// while without work.
struct Pool {
    jobs: Mutex<(VecDeque<Job>, usize)>,
    ready: Condvar,
}

const IDLE_END: Duration = Duration::from_secs(10);

fn pool() -> &'static Pool {
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| Pool {
        jobs: Mutex::new((VecDeque::new(), 0)),
        ready: Condvar::new(),
    })
}

impl Pool {
    fn submit(&'static self, job: Job) {
        let mut g = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        g.0.push_back(job);
        if g.1 > 0 {
            g.1 -= 1;
            drop(g);
            self.ready.notify_one();
            return;
        }
        drop(g);
        let started = std::thread::Builder::new()
            .name("csp-io".into())
            .spawn(move || self.work());
        if started.is_err() {
            // No thread to be had: run it here (the worker stalls, but the
            // call completes).
            if let Some(job) = self
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .pop_back()
            {
                job();
            }
        }
    }

    fn work(&self) {
        let mut g = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = g.0.pop_front() {
                drop(g);
                job();
                g = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g.1 += 1;
            let (ng, t) = self
                .ready
                .wait_timeout(g, IDLE_END)
                .unwrap_or_else(|e| e.into_inner());
            g = ng;
            // With a job waiting, the submitter took this thread off the
            // idle count; without, it is still counted.
            if g.0.is_empty() {
                g.1 = g.1.saturating_sub(1);
                if t.timed_out() {
                    return;
                }
            }
        }
    }
}

/// A panic's message, for reports.
pub(crate) fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
