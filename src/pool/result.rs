//! Handles on work submitted without waiting: [`AsyncResult`] for one task,
//! [`MapResult`] for a whole map (Python's `ApplyResult` and `MapResult`).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::engine::{Shared, Slot, expand};
use super::error::{PoolError, TaskError};
use super::progress::Progress;
use crate::wait::Deadline;

/// The results of a [`Pool::map_async`](crate::Pool::map_async), in input
/// order once complete.
///
/// Waiting on it (`get`, `wait`, `ready`…) also drives the pool when no
/// other thread does. Dropping it does not cancel the tasks (as in Python);
/// their results are discarded.
pub struct MapResult<R> {
    shared: Arc<Shared>,
    job: u64,
    total: usize,
    taken: AtomicBool,
    /// Set when the results are taken: 1 all succeeded, 2 some failed.
    outcome: std::sync::atomic::AtomicU8,
    progress: Mutex<Option<Box<dyn Progress>>>,
    reported: AtomicUsize,
    _r: PhantomData<fn() -> R>,
}

fn first_error<R>(results: Vec<Result<R, TaskError>>) -> Result<Vec<R>, PoolError> {
    let mut out = Vec::with_capacity(results.len());
    for (index, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => out.push(v),
            Err(error) => return Err(PoolError::Task { index, error }),
        }
    }
    Ok(out)
}

impl<R: DeserializeOwned> MapResult<R> {
    pub(crate) fn new(shared: Arc<Shared>, job: u64, total: usize) -> Self {
        MapResult {
            shared,
            job,
            total,
            taken: AtomicBool::new(false),
            outcome: std::sync::atomic::AtomicU8::new(0),
            progress: Mutex::new(None),
            reported: AtomicUsize::new(usize::MAX),
            _r: PhantomData,
        }
    }

    /// Reports progress to `sink` while this handle is waited on
    /// (`get`, `wait`…), and once more when the job is complete: one
    /// update per task, counting from 0 to [`len`](Self::len). Workers
    /// return a chunk of tasks at a time, so the updates for a chunk arrive
    /// together (`map_async_chunked` with a smaller chunk size makes them
    /// steadier).
    pub fn with_progress(self, sink: impl Progress + 'static) -> Self {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(sink));
        self
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether there are no tasks.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Tasks finished so far, and the total.
    pub fn progress(&self) -> (usize, usize) {
        let st = self.shared.lock();
        let done = st.jobs.get(&self.job).map_or(self.total, |j| j.done_items);
        (done, self.total)
    }

    fn report(&self, done: usize, complete: bool) {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = p.as_mut() {
            // Tasks finish a chunk at a time; the sink still hears of every
            // task, one count per update and in order, as from an `Imap`.
            let last = self.reported.swap(done, Ordering::Relaxed);
            let first = if last == usize::MAX { 0 } else { last + 1 };
            for n in first..=done {
                p.update(n, Some(self.total));
            }
            if complete {
                p.finish();
            }
        }
        if complete {
            *p = None;
        }
    }

    /// Waits until complete or `deadline`; whether it is complete.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let job = self.job;
        loop {
            let watching = self
                .progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            let reported = self.reported.load(Ordering::Relaxed);
            let (st, _) = self.shared.wait_until(
                |st| match st.jobs.get(&job) {
                    None => true,
                    Some(j) => j.complete() || (watching && j.done_items != reported),
                },
                deadline,
            );
            let (done, complete) = st
                .jobs
                .get(&job)
                .map_or((self.total, true), |j| (j.done_items, j.complete()));
            drop(st);
            if watching {
                self.report(done, complete);
            }
            if complete {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
        }
    }

    /// Whether every task has finished (never blocks; drives the pool one
    /// step if no other thread does).
    pub fn ready(&self) -> bool {
        self.wait_until(Some(Instant::now()))
    }

    /// Waits until every task has finished.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits up to `timeout`; whether every task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(timeout).instant())
    }

    /// `None` until ready; then whether every task returned a value.
    pub fn successful(&self) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        match self.outcome.load(Ordering::Relaxed) {
            1 => return Some(true),
            2 => return Some(false),
            _ => {}
        }
        let st = self.shared.lock();
        st.jobs.get(&self.job).map(|j| !j.any_failed)
    }

    fn take(&self) -> Result<Vec<Result<R, TaskError>>, PoolError> {
        if self.taken.swap(true, Ordering::Relaxed) {
            return Err(PoolError::AlreadyTaken);
        }
        let job = self.shared.lock().jobs.remove(&self.job);
        let Some(job) = job else {
            return Err(PoolError::AlreadyTaken);
        };
        self.outcome
            .store(if job.any_failed { 2 } else { 1 }, Ordering::Relaxed);
        let mut out = Vec::with_capacity(job.items);
        for (slot, len) in job.slots.into_iter().zip(job.sizes) {
            match slot {
                Slot::Done(r) => out.extend(expand::<R>(r, len)),
                _ => out.extend(
                    std::iter::repeat_with(|| {
                        Err(TaskError::Broken("the result went missing".into()))
                    })
                    .take(len),
                ),
            }
        }
        Ok(out)
    }

    /// Waits for every task and returns each one's result, in input order.
    pub fn get_results(&self) -> Result<Vec<Result<R, TaskError>>, PoolError> {
        self.wait();
        self.take()
    }

    /// Like [`get_results`](Self::get_results), giving up with
    /// [`PoolError::Timeout`] after `timeout` (the handle stays usable).
    pub fn get_results_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError> {
        if !self.wait_timeout(timeout) {
            return Err(PoolError::Timeout(timeout));
        }
        self.take()
    }

    /// Waits for every task and returns the values in input order, or the
    /// error of the failed task with the lowest index.
    pub fn get(&self) -> Result<Vec<R>, PoolError> {
        first_error(self.get_results()?)
    }

    /// Like [`get`](Self::get), giving up with [`PoolError::Timeout`] after
    /// `timeout` (the handle stays usable).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, PoolError> {
        first_error(self.get_results_timeout(timeout)?)
    }
}

impl<R> Drop for MapResult<R> {
    fn drop(&mut self) {
        if !self.taken.load(Ordering::Relaxed) {
            self.shared.abandon(self.job);
        }
    }
}

impl<R> std::fmt::Debug for MapResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapResult")
            .field("job", &self.job)
            .field("tasks", &self.total)
            .finish()
    }
}

/// The result of one task submitted with
/// [`Pool::apply_async`](crate::Pool::apply_async).
///
/// ```
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2)?;
/// let r = pool.apply_async(square, 7)?;
/// assert_eq!(r.get()?, 49);
/// assert_eq!(r.successful(), Some(true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AsyncResult<R>(MapResult<R>);

impl<R: DeserializeOwned> AsyncResult<R> {
    pub(crate) fn new(inner: MapResult<R>) -> Self {
        AsyncResult(inner)
    }

    fn one(results: Vec<Result<R, TaskError>>) -> Result<R, PoolError> {
        match results.into_iter().next() {
            Some(Ok(v)) => Ok(v),
            Some(Err(error)) => Err(PoolError::Task { index: 0, error }),
            None => Err(PoolError::Task {
                index: 0,
                error: TaskError::Broken("the result went missing".into()),
            }),
        }
    }

    /// Waits for the task and returns its value or its error.
    pub fn get(&self) -> Result<R, PoolError> {
        Self::one(self.0.get_results()?)
    }

    /// Like [`get`](Self::get), giving up with [`PoolError::Timeout`] after
    /// `timeout` (the handle stays usable).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, PoolError> {
        Self::one(self.0.get_results_timeout(timeout)?)
    }

    /// Whether the task has finished (never blocks).
    pub fn ready(&self) -> bool {
        self.0.ready()
    }

    /// `None` until ready; then whether the task returned a value.
    pub fn successful(&self) -> Option<bool> {
        self.0.successful()
    }

    /// Waits until the task has finished.
    pub fn wait(&self) {
        self.0.wait()
    }

    /// Waits up to `timeout`; whether the task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.0.wait_timeout(timeout)
    }
}
