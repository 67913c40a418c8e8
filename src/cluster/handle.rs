//! Handles on work submitted to a [`ClusterPool`](super::ClusterPool):
//! the cluster's `MapResult`, `AsyncResult` and `Imap`.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::driver::{Chunk, Driver, Job, Settled, State};
use crate::pool::error::first_error;
use crate::pool::imap::{Jobs, Stream};
use crate::pool::remote;
use crate::pool::{PoolError, Progress, TaskError};

/// A job's results once taken out of the driver (`None` once handed
/// over by `into_values`).
type Taken<R> = Mutex<Option<Vec<Result<R, TaskError>>>>;

fn expand<R: DeserializeOwned>(s: Settled, cap: usize) -> Vec<Result<R, TaskError>> {
    let (len, r) = s;
    match r {
        Ok(items) => items
            .into_iter()
            .map(|o| remote::item::<R>(o, cap))
            .collect(),
        Err(e) => std::iter::repeat_n(e, len).map(Err).collect(),
    }
}

/// The results of a [`ClusterPool::map_async`](super::ClusterPool::map_async),
/// in input order once complete. Dropping it discards its results (the
/// tasks still run).
#[must_use = "the results are discarded unless waited for"]
pub struct ClusterMapResult<R> {
    driver: Arc<Driver>,
    job: u64,
    total: usize,
    cell: OnceLock<Taken<R>>,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ClusterMapResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMapResult")
            .field("job", &self.job)
            .field("total", &self.total)
            .finish()
    }
}

impl<R: DeserializeOwned> ClusterMapResult<R> {
    pub(crate) fn new(driver: Arc<Driver>, job: u64, total: usize) -> Self {
        ClusterMapResult {
            driver,
            job,
            total,
            cell: OnceLock::new(),
            _r: PhantomData,
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Items finished so far, and the total.
    pub fn progress(&self) -> (usize, usize) {
        if self.cell.get().is_some() {
            return (self.total, self.total);
        }
        let st = self.driver.lock();
        let done = st.jobs.get(&self.job).map_or(self.total, |j| j.done_items);
        (done, self.total)
    }

    /// Waits until complete or `deadline`, reporting progress to `sink`;
    /// whether complete.
    fn wait_until(&self, deadline: Option<Instant>, mut sink: Option<&mut dyn Progress>) -> bool {
        if self.cell.get().is_some() {
            return true;
        }
        let job = self.job;
        let mut reported = usize::MAX;
        loop {
            let (mut st, ready) = self.driver.wait_until(
                |st| match st.jobs.get(&job) {
                    None => true,
                    Some(j) => j.complete() || (sink.is_some() && j.done_items != reported),
                },
                deadline,
            );
            let (done, complete) = st
                .jobs
                .get(&job)
                .map_or((self.total, true), |j| (j.done_items, j.complete()));
            if complete {
                let taken = st.jobs.remove(&job);
                drop(st);
                let cap = self.driver.cap;
                let mut slots: Vec<(usize, Settled)> = taken
                    .map(|j| j.done.into_iter().collect())
                    .unwrap_or_default();
                slots.sort_unstable_by_key(|(o, _)| *o);
                let results: Vec<Result<R, TaskError>> = slots
                    .into_iter()
                    .flat_map(|(_, s)| expand::<R>(s, cap))
                    .collect();
                let _ = self.cell.set(Mutex::new(Some(results)));
                if let Some(s) = sink.as_mut() {
                    s.update(self.total, Some(self.total));
                    s.finish();
                }
                return true;
            }
            drop(st);
            if let Some(s) = sink.as_mut()
                && done != reported
            {
                reported = done;
                s.update(done, Some(self.total));
            }
            if !ready && deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
        }
    }

    /// Whether every task has finished (never blocks).
    pub fn ready(&self) -> bool {
        self.wait_until(Some(Instant::now()), None)
    }

    /// Waits until every task has finished.
    pub fn wait(&self) {
        self.wait_until(None, None);
    }

    /// Waits up to `timeout`; whether every task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout), None)
    }

    /// Waits, reporting each change of the finished count to `sink`.
    pub fn wait_with_progress(&self, mut sink: impl Progress) {
        self.wait_until(None, Some(&mut sink));
    }

    fn take(&self) -> Vec<Result<R, TaskError>> {
        self.wait();
        self.cell
            .get()
            .and_then(|m| m.lock().unwrap_or_else(|e| e.into_inner()).take())
            .unwrap_or_default()
    }

    /// Waits, then every item's own result.
    pub fn into_results(self) -> Vec<Result<R, TaskError>> {
        self.take()
    }

    /// Waits, then the values, or the error of the failed item with the
    /// lowest index.
    pub fn into_values(self) -> Result<Vec<R>, PoolError> {
        first_error(self.take())
    }

    /// Like [`into_values`](Self::into_values), keeping the handle (the
    /// values are copied; `get` can be called again).
    pub fn get(&self) -> Result<Vec<R>, PoolError>
    where
        R: Clone,
    {
        self.wait();
        self.cloned()
    }

    /// Like [`get`](Self::get), giving up with [`PoolError::Timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, PoolError>
    where
        R: Clone,
    {
        if !self.wait_timeout(timeout) {
            return Err(PoolError::Timeout(timeout));
        }
        self.cloned()
    }

    fn cloned(&self) -> Result<Vec<R>, PoolError>
    where
        R: Clone,
    {
        let m = self.cell.get().ok_or(PoolError::AlreadyTaken)?;
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        let v = g.as_ref().ok_or(PoolError::AlreadyTaken)?;
        first_error(v.clone())
    }
}

impl<R> Drop for ClusterMapResult<R> {
    fn drop(&mut self) {
        if self.cell.get().is_none() {
            self.driver.abandon(self.job);
        }
    }
}

/// The result of [`ClusterPool::apply_async`](super::ClusterPool::apply_async).
#[must_use = "the result is discarded unless waited for"]
#[derive(Debug)]
pub struct ClusterAsyncResult<R>(ClusterMapResult<R>);

impl<R: DeserializeOwned> ClusterAsyncResult<R> {
    pub(crate) fn new(inner: ClusterMapResult<R>) -> Self {
        ClusterAsyncResult(inner)
    }

    /// Whether the task has finished (never blocks).
    pub fn ready(&self) -> bool {
        self.0.ready()
    }

    /// Waits until the task has finished.
    pub fn wait(&self) {
        self.0.wait()
    }

    /// Waits up to `timeout`; whether the task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.0.wait_timeout(timeout)
    }

    /// Waits, then the value or the task's error.
    pub fn into_value(self) -> Result<R, PoolError> {
        one(self.0.into_values()?)
    }

    /// Waits, then a copy of the value or the task's error.
    pub fn get(&self) -> Result<R, PoolError>
    where
        R: Clone,
    {
        one(self.0.get()?)
    }

    /// Like [`get`](Self::get), giving up with [`PoolError::Timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, PoolError>
    where
        R: Clone,
    {
        one(self.0.get_timeout(timeout)?)
    }
}

fn one<R>(v: Vec<R>) -> Result<R, PoolError> {
    v.into_iter().next().ok_or(PoolError::AlreadyTaken)
}

/// The results of [`ClusterPool::imap`](super::ClusterPool::imap) or
/// [`imap_unordered`](super::ClusterPool::imap_unordered), one
/// `Result<R, TaskError>` per input item.
///
/// The input is read lazily and at most a fixed number of tasks are in
/// flight ahead of the consumer, so a ten-million-item input never holds
/// ten million tasks in memory, at the driver or anywhere else. Dropping
/// it stops feeding; tasks already sent still run and their results are
/// dropped.
#[must_use = "iterators do nothing unless consumed"]
pub struct ClusterImap<R>(Stream<Driver, R>);

impl<R> std::fmt::Debug for ClusterImap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.debug("ClusterImap", f)
    }
}

impl<R: DeserializeOwned> ClusterImap<R> {
    pub(crate) fn new(stream: Stream<Driver, R>) -> Self {
        ClusterImap(stream)
    }

    /// Reports progress (results yielded, and the input's length if known)
    /// to `sink` as the iterator advances.
    pub fn with_progress(mut self, sink: impl Progress + 'static) -> Self {
        self.0.set_progress(sink);
        self
    }

    /// Tasks (chunks) handed to the driver and not yet consumed: never
    /// more than the imap's window.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight()
    }

    /// Like [`next`](Iterator::next), giving up with
    /// [`PoolError::Timeout`] after `timeout` (the iterator stays usable).
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Result<R, TaskError>>, PoolError> {
        self.0.next_timeout(timeout)
    }
}

impl<R: DeserializeOwned> Iterator for ClusterImap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_until(None).flatten()
    }
}

impl Jobs for Driver {
    type Chunk = Chunk;

    fn add_chunks(&self, job: u64, chunks: Vec<Chunk>, last: bool) {
        Driver::add_chunks(self, job, chunks, last);
    }

    fn stopped(&self, _job: u64) -> bool {
        false
    }

    type State = State;
    type Job = Job;
    type Taken = Settled;

    fn wait_until(
        &self,
        done: impl FnMut(&mut State) -> bool,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'_, State>, bool) {
        Driver::wait_until(self, done, deadline)
    }

    fn job(st: &mut State, job: u64) -> Option<&mut Job> {
        st.jobs.get_mut(&job)
    }

    fn is_done(job: &Job, ordinal: usize) -> bool {
        job.done.contains_key(&ordinal)
    }

    fn finished(job: &mut Job) -> &mut VecDeque<usize> {
        &mut job.finished
    }

    fn take(job: &mut Job, ordinal: usize) -> Option<Settled> {
        job.done.remove(&ordinal)
    }

    fn decode<R: DeserializeOwned>(&self, taken: Settled) -> Vec<Result<R, TaskError>> {
        expand::<R>(taken, self.cap)
    }

    fn abandon(&self, job: u64) {
        Driver::abandon(self, job);
    }
}
