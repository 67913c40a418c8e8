//! Handles on work submitted without waiting: [`AsyncResult`] for one task,
//! [`MapResult`] for a whole map (Python's `ApplyResult` and `MapResult`).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::engine::{Callback, Hook, Job, Shared, Slot, expand};
use super::error::{PoolError, TaskError, first_error};
use super::progress::Progress;
use crate::wait::Deadline;

/// A job's results once taken out of the pool: kept in the handle, so they
/// can be read again (as in Python).
pub(crate) enum Results<R> {
    /// Every task returned a value.
    Values(Vec<R>),
    /// Some task failed.
    Mixed(Vec<Result<R, TaskError>>),
}

impl<R> Results<R> {
    fn new(results: Vec<Result<R, TaskError>>) -> Self {
        if results.iter().all(Result::is_ok) {
            Results::Values(results.into_iter().filter_map(Result::ok).collect())
        } else {
            Results::Mixed(results)
        }
    }

    fn first_error(&self) -> Option<(usize, &TaskError)> {
        match self {
            Results::Values(_) => None,
            Results::Mixed(v) => v
                .iter()
                .enumerate()
                .find_map(|(i, r)| r.as_ref().err().map(|e| (i, e))),
        }
    }

    fn values(self) -> Result<Vec<R>, PoolError> {
        match self {
            Results::Values(v) => Ok(v),
            Results::Mixed(v) => first_error(v),
        }
    }

    fn results(self) -> Vec<Result<R, TaskError>> {
        match self {
            Results::Values(v) => v.into_iter().map(Ok).collect(),
            Results::Mixed(v) => v,
        }
    }
}

impl<R: Clone> Results<R> {
    fn cloned_values(&self) -> Result<Vec<R>, PoolError> {
        match (self, self.first_error()) {
            (Results::Values(v), _) => Ok(v.clone()),
            (_, Some((index, e))) => Err(PoolError::Task {
                index,
                error: e.clone(),
            }),
            (Results::Mixed(v), None) => {
                Ok(v.iter().filter_map(|r| r.as_ref().ok().cloned()).collect())
            }
        }
    }

    fn cloned_results(&self) -> Vec<Result<R, TaskError>> {
        match self {
            Results::Values(v) => v.iter().cloned().map(Ok).collect(),
            Results::Mixed(v) => v.clone(),
        }
    }
}

type Cell<R> = Arc<OnceLock<Results<R>>>;

/// A user's callback on a job's results.
type OnResults<R> = Box<dyn FnOnce(&Results<R>) + Send>;

/// Decodes a job's results, taking them out of it.
fn decode_job<R: DeserializeOwned>(job: &mut Job) -> Results<R> {
    decode_rest(job, Early::default())
}

/// The values of a job's first chunks, decoded while the later ones still
/// run (see [`MapResult::take_early`]).
struct Early<R> {
    /// The values of chunks `0..chunks`, all of which returned values.
    values: Vec<R>,
    chunks: usize,
}

impl<R> Default for Early<R> {
    fn default() -> Self {
        Early {
            values: Vec::new(),
            chunks: 0,
        }
    }
}

/// Decodes a complete job's results after the chunks `early` holds,
/// taking them out of it.
fn decode_rest<R: DeserializeOwned>(job: &mut Job, mut early: Early<R>) -> Results<R> {
    if job_values(job, early.chunks, &mut early.values) {
        return Results::Values(early.values);
    }
    let mut out: Vec<Result<R, TaskError>> = Vec::with_capacity(job.items);
    out.extend(early.values.into_iter().map(Ok));
    decode_outcomes(job, early.chunks, &mut out);
    Results::new(out)
}

/// Appends the values of a job's chunks from `first` on to `out`, if
/// every task of theirs returned one, decoded straight into `out` (no
/// `Result` per task); otherwise `false` and `out` as it was.
fn job_values<R: DeserializeOwned>(job: &Job, first: usize, out: &mut Vec<R>) -> bool {
    if job.any_failed {
        return false;
    }
    let start = out.len();
    out.reserve(job.items.saturating_sub(start));
    for (slot, &len) in job.slots.iter().zip(&job.sizes).skip(first) {
        match slot {
            Slot::Done(Ok(p)) if p.values_into::<R>(len, out) => {}
            _ => {
                out.truncate(start);
                return false;
            }
        }
    }
    true
}

/// Appends every task's outcome of a job's chunks from `first` on to
/// `out`, taking them out of it.
fn decode_outcomes<R: DeserializeOwned>(
    job: &mut Job,
    first: usize,
    out: &mut Vec<Result<R, TaskError>>,
) {
    let slots = std::mem::take(&mut job.slots);
    let sizes = std::mem::take(&mut job.sizes);
    for (slot, len) in slots.into_iter().zip(sizes).skip(first) {
        match slot {
            Slot::Done(r) => out.extend(expand::<R>(r, len)),
            _ => out.extend(
                std::iter::repeat_with(|| Err(TaskError::Broken("the result went missing".into())))
                    .take(len),
            ),
        }
    }
}

/// The hook of a job submitted with callbacks: decodes its results into
/// `cell` (under the pool's lock) and returns the call of `call` on them.
fn hook<R>(cell: Cell<R>, call: OnResults<R>) -> Hook
where
    R: DeserializeOwned + Send + Sync + 'static,
{
    Box::new(move |job: &mut Job| -> Callback {
        let _ = cell.set(decode_job::<R>(job));
        Box::new(move || {
            if let Some(r) = cell.get() {
                call(r);
            }
        })
    })
}

/// The results of a [`Pool::map_async`](crate::Pool::map_async), in input
/// order once complete.
///
/// Waiting on it (`get`, `wait`, `ready`…) also drives the pool when no
/// other thread does. The results stay in the handle once they arrived, so
/// `get` can be called again (as in Python); [`into_values`](Self::into_values)
/// and [`into_results`](Self::into_results) hand them over without a copy.
/// Dropping it does not cancel the tasks (as in Python); their results are
/// discarded (its callbacks, if it has any, still run).
#[must_use = "the results are discarded unless waited for"]
pub struct MapResult<R> {
    shared: Arc<Shared>,
    job: u64,
    total: usize,
    cell: Cell<R>,
    /// Values decoded while the job still runs (not for a job with
    /// callbacks: its hook decodes every result).
    early: Option<Mutex<Early<R>>>,
    progress: Mutex<Option<Box<dyn Progress>>>,
    reported: AtomicUsize,
    _r: PhantomData<fn() -> R>,
}

/// What `callback` and `error_callback` of a map receive.
pub(crate) fn map_hook<R>(
    callback: impl FnOnce(&[R]) + Send + 'static,
    error_callback: impl FnOnce(&PoolError) + Send + 'static,
) -> impl FnOnce(&Results<R>) + Send + 'static {
    move |r: &Results<R>| match r {
        Results::Values(v) => callback(v),
        Results::Mixed(_) => {
            if let Some((index, e)) = r.first_error() {
                error_callback(&PoolError::Task {
                    index,
                    error: e.clone(),
                });
            }
        }
    }
}

impl<R: DeserializeOwned> MapResult<R> {
    pub(crate) fn new(shared: Arc<Shared>, job: u64, total: usize) -> Self {
        let mut r = Self::with_cell(shared, job, total, Arc::new(OnceLock::new()));
        r.early = Some(Mutex::new(Early::default()));
        r
    }

    fn with_cell(shared: Arc<Shared>, job: u64, total: usize, cell: Cell<R>) -> Self {
        MapResult {
            shared,
            job,
            total,
            cell,
            early: None,
            progress: Mutex::new(None),
            reported: AtomicUsize::new(usize::MAX),
            _r: PhantomData,
        }
    }

    /// A handle whose job calls `call` on its results once complete (in the
    /// thread driving the pool); returns the hook to open the job with.
    pub(crate) fn with_callback(
        shared: Arc<Shared>,
        total: usize,
        call: impl FnOnce(&Results<R>) + Send + 'static,
        submit: impl FnOnce(Hook) -> Result<u64, PoolError>,
    ) -> Result<Self, PoolError>
    where
        R: Send + Sync + 'static,
    {
        let cell: Cell<R> = Arc::new(OnceLock::new());
        let job = submit(hook(cell.clone(), Box::new(call)))?;
        Ok(Self::with_cell(shared, job, total, cell))
    }

    /// The pool this job runs on.
    #[cfg(feature = "tokio")]
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
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

    /// Waits until complete (and its callback has returned) or `deadline`;
    /// whether it is complete.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let job = self.job;
        loop {
            if self.cell.get().is_some() && !self.shared.lock().jobs.contains_key(&job) {
                return true;
            }
            let watching = self
                .progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            let reported = self.reported.load(Ordering::Relaxed);
            let (st, _) = self.shared.wait_until(
                |st| match st.jobs.get_mut(&job) {
                    None => true,
                    Some(j) => {
                        self.take_early(j);
                        j.settled() || (watching && j.done_items != reported)
                    }
                },
                deadline,
            );
            let (done, complete) = st
                .jobs
                .get(&job)
                .map_or((self.total, true), |j| (j.done_items, j.settled()));
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

    /// Waits until `chunks` of the job's chunks have finished (or the job
    /// is gone), decoding those at its front meanwhile: a blocking map
    /// that reads its input as chunks finish (`Pool::map_reading`).
    pub(crate) fn wait_chunks(&self, chunks: usize) {
        let job = self.job;
        let (st, _) = self.shared.wait_until(
            |st| match st.jobs.get_mut(&job) {
                None => true,
                Some(j) => {
                    self.take_early(j);
                    j.done_chunks >= chunks
                }
            },
            None,
        );
        drop(st);
    }

    /// Sets the number of tasks, once the input has been read (it was the
    /// input's own estimate until then).
    pub(crate) fn set_len(&mut self, total: usize) {
        self.total = total;
    }

    /// Decodes the chunks at the front of the job that finished with a
    /// value for every task and were not decoded yet, taking them out of
    /// it: the results of a long map are decoded while its later chunks
    /// still run, rather than all at its end. Stops at the first chunk not
    /// finished, or with a failed task (the final decode sorts those out).
    fn take_early(&self, job: &mut Job) {
        let Some(early) = &self.early else {
            return;
        };
        if job.any_failed {
            return;
        }
        let mut early = early.lock().unwrap_or_else(|e| e.into_inner());
        if early.values.capacity() == 0 {
            early.values.reserve(self.total);
        }
        while early.chunks < job.slots.len() {
            let i = early.chunks;
            let len = job.sizes[i];
            let Slot::Done(Ok(p)) = &job.slots[i] else {
                return;
            };
            if !p.values_into::<R>(len, &mut early.values) {
                return;
            }
            job.slots[i] = Slot::Taken;
            early.chunks += 1;
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
        self.fill().map(|r| matches!(r, Results::Values(_)))
    }

    /// Once complete: the results, taken out of the pool into the handle
    /// on first use.
    fn fill(&self) -> Option<&Results<R>> {
        if let Some(r) = self.cell.get() {
            return Some(r);
        }
        let job = self.shared.lock().jobs.remove(&self.job);
        if let Some(mut job) = job {
            let early = self
                .early
                .as_ref()
                .map(|e| std::mem::take(&mut *e.lock().unwrap_or_else(|e| e.into_inner())))
                .unwrap_or_default();
            let _ = self.cell.set(decode_rest::<R>(&mut job, early));
        }
        self.cell.get()
    }

    fn filled(&self) -> Result<&Results<R>, PoolError> {
        // Only missing if a bug lost the job.
        self.fill().ok_or(PoolError::AlreadyTaken)
    }

    fn wait_for(&self, timeout: Duration) -> Result<(), PoolError> {
        if self.wait_timeout(timeout) {
            Ok(())
        } else {
            Err(PoolError::Timeout(timeout))
        }
    }

    /// Waits for every task and hands over each one's result, in input
    /// order (without copying them).
    pub fn into_results(self) -> Result<Vec<Result<R, TaskError>>, PoolError> {
        self.into_inner().map(Results::results)
    }

    /// Waits for every task and hands over the values in input order, or
    /// the error of the failed task with the lowest index.
    pub fn into_values(self) -> Result<Vec<R>, PoolError> {
        self.into_inner()?.values()
    }

    fn into_inner(mut self) -> Result<Results<R>, PoolError> {
        self.wait();
        self.filled()?;
        // The hook's copy of the cell is gone once its callback returned
        // (the job is settled), so the handle is its only owner.
        Arc::get_mut(&mut self.cell)
            .and_then(OnceLock::take)
            .ok_or(PoolError::AlreadyTaken)
    }
}

impl<R: DeserializeOwned + Clone> MapResult<R> {
    /// Waits for every task and returns each one's result, in input order.
    /// Can be called again: the results stay in the handle.
    pub fn get_results(&self) -> Result<Vec<Result<R, TaskError>>, PoolError> {
        self.wait();
        Ok(self.filled()?.cloned_results())
    }

    /// Like [`get_results`](Self::get_results), giving up with
    /// [`PoolError::Timeout`] after `timeout` (the handle stays usable).
    pub fn get_results_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError> {
        self.wait_for(timeout)?;
        Ok(self.filled()?.cloned_results())
    }

    /// Waits for every task and returns the values in input order, or the
    /// error of the failed task with the lowest index. Can be called again.
    pub fn get(&self) -> Result<Vec<R>, PoolError> {
        self.wait();
        self.filled()?.cloned_values()
    }

    /// Like [`get`](Self::get), giving up with [`PoolError::Timeout`] after
    /// `timeout` (the handle stays usable).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, PoolError> {
        self.wait_for(timeout)?;
        self.filled()?.cloned_values()
    }
}

impl<R> Drop for MapResult<R> {
    fn drop(&mut self) {
        if self.cell.get().is_none() {
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
/// As in Python, [`get`](Self::get), [`ready`](Self::ready),
/// [`successful`](Self::successful) and [`wait_timeout`](Self::wait_timeout)
/// can be called any number of times; [`into_value`](Self::into_value) hands
/// the value over without a copy.
///
/// ```
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2)?;
/// let r = pool.apply_async(square, 7)?;
/// assert_eq!(r.get()?, 49);
/// assert_eq!(r.get()?, 49);
/// assert_eq!(r.successful(), Some(true));
/// assert_eq!(r.into_value()?, 49);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "the result is discarded unless waited for"]
pub struct AsyncResult<R>(MapResult<R>);

fn one<R>(results: Vec<Result<R, TaskError>>) -> Result<R, PoolError> {
    match results.into_iter().next() {
        Some(Ok(v)) => Ok(v),
        Some(Err(error)) => Err(PoolError::Task { index: 0, error }),
        None => Err(PoolError::Task {
            index: 0,
            error: TaskError::Broken("the result went missing".into()),
        }),
    }
}

/// What `callback` and `error_callback` of an apply receive.
pub(crate) fn apply_hook<R>(
    callback: impl FnOnce(&R) + Send + 'static,
    error_callback: impl FnOnce(&TaskError) + Send + 'static,
) -> impl FnOnce(&Results<R>) + Send + 'static {
    move |r: &Results<R>| match r {
        Results::Values(v) => {
            if let Some(v) = v.first() {
                callback(v);
            }
        }
        Results::Mixed(v) => {
            if let Some(Err(e)) = v.first() {
                error_callback(e);
            }
        }
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    pub(crate) fn new(inner: MapResult<R>) -> Self {
        AsyncResult(inner)
    }

    /// The one-task map underneath.
    #[cfg(feature = "tokio")]
    pub(super) fn map_result(&self) -> &MapResult<R> {
        &self.0
    }

    /// Waits for the task and hands over its value (or its error).
    pub fn into_value(self) -> Result<R, PoolError> {
        one(self.0.into_results()?)
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

impl<R: DeserializeOwned + Clone> AsyncResult<R> {
    /// Waits for the task and returns its value or its error. Can be
    /// called again.
    pub fn get(&self) -> Result<R, PoolError> {
        one(self.0.get_results()?)
    }

    /// Like [`get`](Self::get), giving up with [`PoolError::Timeout`] after
    /// `timeout` (the handle stays usable).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, PoolError> {
        one(self.0.get_results_timeout(timeout)?)
    }
}
