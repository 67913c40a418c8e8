//! [`Imap`]: results as an iterator, in input order or as they finish
//! (Python's `imap` and `imap_unordered`).

use std::collections::VecDeque;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::engine::{Job, Payload, Shared, Slot, State, expand};
use super::error::{PoolError, TaskError};
use super::progress::Progress;
use crate::connection::RawFrame;
use crate::wait::Deadline;

/// What an imap needs from the pool running its job: the local pool's
/// engine ([`Shared`]) or a cluster pool's driver. The iterator itself
/// ([`Stream`]) is written once, over this.
pub(crate) trait Jobs {
    /// One chunk as an imap's input feed encodes it: its task count and
    /// its encoding (or the error encoding it gave).
    type Chunk;

    /// Adds `chunks` to `job`, sealing it when `last`.
    fn add_chunks(&self, job: u64, chunks: Vec<Self::Chunk>, last: bool);

    /// Whether `job` can take no more chunks (the pool was terminated).
    fn stopped(&self, job: u64) -> bool;

    /// The table of jobs, under the pool's lock.
    type State;
    /// One job in it.
    type Job;
    /// A finished chunk taken out of its job, not yet decoded.
    type Taken;

    /// Waits until `done` holds or `deadline`; the locked table and
    /// whether `done` held.
    fn wait_until(
        &self,
        done: impl FnMut(&mut Self::State) -> bool,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'_, Self::State>, bool);

    /// Job `job` in the table, if it is there.
    fn job(st: &mut Self::State, job: u64) -> Option<&mut Self::Job>;

    /// Whether chunk `ordinal` of `job` has finished and is not taken.
    fn is_done(job: &Self::Job, ordinal: usize) -> bool;

    /// The finished chunks of a job consumed out of order, oldest first.
    fn finished(job: &mut Self::Job) -> &mut VecDeque<usize>;

    /// Takes chunk `ordinal`'s result out of `job` if it has finished.
    fn take(job: &mut Self::Job, ordinal: usize) -> Option<Self::Taken>;

    /// Decodes a taken chunk into its tasks' results (outside the lock).
    fn decode<R: DeserializeOwned>(&self, taken: Self::Taken) -> Vec<Result<R, TaskError>>;

    /// The job's handle is gone: its results are dropped as they come.
    fn abandon(&self, job: u64);
}

/// Pulls the next chunk from an imap's input and encodes it, or `None`
/// when the input is exhausted.
pub(crate) type Feed<J> = Box<dyn FnMut(&J) -> Option<<J as Jobs>::Chunk> + Send>;

/// An imap's iterator over the job of a pool of either kind: feeds the
/// input lazily, keeping at most `ahead` chunks in flight, and yields the
/// results in input order or as they finish.
pub(crate) struct Stream<J: Jobs, R> {
    jobs: Arc<J>,
    job: u64,
    ordered: bool,
    feed: Option<Feed<J>>,
    /// Chunks handed to the pool and not yet consumed.
    in_flight: usize,
    next: usize,
    buffer: VecDeque<Result<R, TaskError>>,
    total: Option<usize>,
    yielded: usize,
    ahead: usize,
    progress: Option<Box<dyn Progress>>,
    done: bool,
}

impl<J: Jobs, R: DeserializeOwned> Stream<J, R> {
    pub(crate) fn new(
        jobs: Arc<J>,
        job: u64,
        ordered: bool,
        feed: Feed<J>,
        total: Option<usize>,
        ahead: usize,
    ) -> Self {
        let mut me = Stream {
            jobs,
            job,
            ordered,
            feed: Some(feed),
            in_flight: 0,
            next: 0,
            buffer: VecDeque::new(),
            total,
            yielded: 0,
            ahead: ahead.max(1),
            progress: None,
            done: false,
        };
        me.top_up();
        me
    }

    /// The pool this job runs on.
    #[cfg(feature = "tokio")]
    pub(crate) fn jobs(&self) -> &Arc<J> {
        &self.jobs
    }

    /// The input's length, when its iterator knew it exactly.
    pub(crate) fn total(&self) -> Option<usize> {
        self.total
    }

    /// Chunks handed to the pool and not yet consumed.
    #[cfg(feature = "zenoh")]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Reports progress to `sink` from now on.
    pub(crate) fn set_progress(&mut self, sink: impl Progress + 'static) {
        let mut sink: Box<dyn Progress> = Box::new(sink);
        sink.update(self.yielded, self.total);
        self.progress = Some(sink);
    }

    /// Sends chunks until `ahead` are in flight or the input ends.
    fn top_up(&mut self) {
        let Some(feed) = self.feed.as_mut() else {
            return;
        };
        let mut batch = Vec::new();
        let mut exhausted = false;
        while self.in_flight + batch.len() < self.ahead {
            match feed(&self.jobs) {
                Some(chunk) => batch.push(chunk),
                None => {
                    exhausted = true;
                    break;
                }
            }
        }
        exhausted |= self.jobs.stopped(self.job);
        if batch.is_empty() && !exhausted {
            return;
        }
        self.in_flight += batch.len();
        self.jobs.add_chunks(self.job, batch, exhausted);
        if exhausted {
            self.feed = None;
        }
    }

    /// The next result, or `None` at `deadline`.
    pub(crate) fn next_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> Option<Option<Result<R, TaskError>>> {
        loop {
            if let Some(item) = self.buffer.pop_front() {
                self.yielded += 1;
                if let Some(p) = self.progress.as_mut() {
                    p.update(self.yielded, self.total);
                }
                return Some(Some(item));
            }
            if self.done {
                return Some(None);
            }
            self.top_up();
            if self.feed.is_none() && self.in_flight == 0 {
                self.done = true;
                if let Some(p) = self.progress.as_mut() {
                    p.finish();
                }
                return Some(None);
            }
            match self.take_chunk(deadline)? {
                Some(results) => {
                    self.in_flight -= 1;
                    if self.ordered {
                        self.next += 1;
                    }
                    self.buffer.extend(results);
                }
                None => {
                    // The job is gone (cannot happen while this handle
                    // lives); end rather than spin.
                    self.done = true;
                }
            }
        }
    }

    /// Waits until `deadline` for a finished chunk (chunk `next` when
    /// ordered, else the first to finish) and takes its results: `None` at
    /// the deadline, `Some(None)` if the job is gone.
    fn take_chunk(&self, deadline: Option<Instant>) -> Option<Option<Vec<Result<R, TaskError>>>> {
        let (job, ordered, next) = (self.job, self.ordered, self.next);
        let (mut st, ready) = self.jobs.wait_until(
            |st| match J::job(st, job) {
                None => true,
                Some(j) if ordered => J::is_done(j, next),
                Some(j) => !J::finished(j).is_empty(),
            },
            deadline,
        );
        if !ready {
            return None;
        }
        let taken = J::job(&mut st, job).and_then(|j| {
            let ordinal = if ordered {
                next
            } else {
                J::finished(j).pop_front()?
            };
            J::take(j, ordinal)
        });
        drop(st);
        Some(taken.map(|t| self.jobs.decode(t)))
    }

    /// Like [`next_until`](Self::next_until) with a timeout, as the public
    /// `next_timeout`s give it.
    pub(crate) fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Result<R, TaskError>>, PoolError> {
        self.next_until(Deadline::after(timeout).instant())
            .ok_or(PoolError::Timeout(timeout))
    }
}

impl<J: Jobs, R> Stream<J, R> {
    /// The fields a handle's `Debug` shows, under the handle's `name`.
    pub(crate) fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("job", &self.job)
            .field("ordered", &self.ordered)
            .field("yielded", &self.yielded)
            .finish()
    }
}

impl<J: Jobs, R> Drop for Stream<J, R> {
    fn drop(&mut self) {
        self.jobs.abandon(self.job);
    }
}

impl Jobs for Shared {
    type Chunk = (usize, u64, Result<RawFrame, TaskError>);

    fn add_chunks(&self, job: u64, chunks: Vec<Self::Chunk>, last: bool) {
        Shared::add_chunks(self, job, chunks, last);
    }

    fn stopped(&self, job: u64) -> bool {
        let st = self.lock();
        st.terminated || !st.jobs.contains_key(&job)
    }

    type State = State;
    type Job = Job;
    type Taken = (Result<Payload, TaskError>, usize);

    fn wait_until(
        &self,
        done: impl FnMut(&mut State) -> bool,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'_, State>, bool) {
        Shared::wait_until(self, done, deadline)
    }

    fn job(st: &mut State, job: u64) -> Option<&mut Job> {
        st.jobs.get_mut(&job)
    }

    fn is_done(job: &Job, ordinal: usize) -> bool {
        matches!(job.slots.get(ordinal), Some(Slot::Done(_)))
    }

    fn finished(job: &mut Job) -> &mut VecDeque<usize> {
        &mut job.finished
    }

    fn take(job: &mut Job, ordinal: usize) -> Option<Self::Taken> {
        Some((job.take(ordinal)?, job.sizes[ordinal]))
    }

    fn decode<R: DeserializeOwned>(&self, (result, len): Self::Taken) -> Vec<Result<R, TaskError>> {
        expand::<R>(result, len)
    }

    fn abandon(&self, job: u64) {
        Shared::abandon(self, job);
    }
}

/// The results of [`Pool::imap`](crate::Pool::imap) or
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered), one
/// `Result<R, TaskError>` per input item.
///
/// The input is consumed lazily: a bounded number of chunks is kept in
/// flight ahead of the consumer, so an endless input works and memory stays
/// bounded. Iterating drives the pool when no other thread does. If the
/// pool is terminated, the iterator yields [`TaskError::Terminated`] for
/// the tasks in flight and then ends, without consuming the rest of the
/// input. Dropping it stops feeding; tasks already sent still run.
#[must_use = "iterators do nothing unless consumed; the tasks run either way"]
pub struct Imap<R>(Stream<Shared, R>);

impl<R: DeserializeOwned> Imap<R> {
    pub(crate) fn new(stream: Stream<Shared, R>) -> Self {
        Imap(stream)
    }

    /// Reports progress (results yielded so far, and the input's length if
    /// known) to `sink` as the iterator advances.
    pub fn with_progress(mut self, sink: impl Progress + 'static) -> Self {
        self.0.set_progress(sink);
        self
    }

    /// The pool this job runs on.
    #[cfg(feature = "tokio")]
    pub(super) fn shared(&self) -> &Arc<Shared> {
        self.0.jobs()
    }

    /// The input's length, when its iterator knew it exactly.
    pub fn total(&self) -> Option<usize> {
        self.0.total()
    }

    /// Like [`next`](Iterator::next), giving up with
    /// [`PoolError::Timeout`] if no result is ready within `timeout`
    /// (Python's `next(timeout)`); the iterator stays usable. `Ok(None)`:
    /// every result was yielded.
    ///
    /// ```
    /// use std::time::Duration;
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let mut it = pool.imap(square, 0..3)?;
    /// assert_eq!(it.next_timeout(Duration::from_secs(30))?, Some(Ok(0)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Result<R, TaskError>>, PoolError> {
        self.0.next_timeout(timeout)
    }
}

impl<R: DeserializeOwned> Iterator for Imap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_until(None).flatten()
    }
}

impl<R> std::fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.debug("Imap", f)
    }
}
