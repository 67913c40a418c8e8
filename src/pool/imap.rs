//! [`Imap`]: results as an iterator, in input order or as they finish
//! (Python's `imap` and `imap_unordered`).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::engine::{Shared, expand};
use super::error::{PoolError, TaskError};
use super::progress::Progress;
use crate::connection::RawFrame;
use crate::wait::Deadline;

/// Pulls the next chunk from the input and frames it: (tasks, number,
/// frame), or `None` when the input is exhausted.
pub(crate) type Feed =
    Box<dyn FnMut(&Shared) -> Option<(usize, u64, Result<RawFrame, TaskError>)> + Send>;

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
pub struct Imap<R> {
    shared: Arc<Shared>,
    job: u64,
    ordered: bool,
    feed: Option<Feed>,
    submitted: usize,
    consumed: usize,
    next: usize,
    buffer: VecDeque<Result<R, TaskError>>,
    total: Option<usize>,
    yielded: usize,
    ahead: usize,
    progress: Option<Box<dyn Progress>>,
    done: bool,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Imap<R> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        job: u64,
        ordered: bool,
        feed: Feed,
        total: Option<usize>,
        ahead: usize,
    ) -> Self {
        let mut me = Imap {
            shared,
            job,
            ordered,
            feed: Some(feed),
            submitted: 0,
            consumed: 0,
            next: 0,
            buffer: VecDeque::new(),
            total,
            yielded: 0,
            ahead: ahead.max(1),
            progress: None,
            done: false,
            _r: PhantomData,
        };
        me.top_up();
        me
    }

    /// Reports progress (results yielded so far, and the input's length if
    /// known) to `sink` as the iterator advances.
    pub fn with_progress(mut self, sink: impl Progress + 'static) -> Self {
        let mut sink: Box<dyn Progress> = Box::new(sink);
        sink.update(self.yielded, self.total);
        self.progress = Some(sink);
        self
    }

    /// The pool this job runs on.
    #[cfg(feature = "tokio")]
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The input's length, when its iterator knew it exactly.
    pub fn total(&self) -> Option<usize> {
        self.total
    }

    /// Sends chunks until `ahead` are in flight or the input ends.
    fn top_up(&mut self) {
        let Some(feed) = self.feed.as_mut() else {
            return;
        };
        let mut batch = Vec::new();
        let mut exhausted = false;
        while self.submitted + batch.len() - self.consumed < self.ahead {
            match feed(&self.shared) {
                Some(chunk) => batch.push(chunk),
                None => {
                    exhausted = true;
                    break;
                }
            }
        }
        let stopped = {
            let st = self.shared.lock();
            st.terminated || !st.jobs.contains_key(&self.job)
        };
        exhausted |= stopped;
        if batch.is_empty() && !exhausted {
            return;
        }
        self.submitted += batch.len();
        self.shared.add_chunks(self.job, batch, exhausted);
        if exhausted {
            self.feed = None;
        }
    }
}

impl<R: DeserializeOwned> Imap<R> {
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
        self.next_until(Deadline::after(timeout).instant())
            .ok_or(PoolError::Timeout(timeout))
    }

    /// The next result, or `None` at `deadline`.
    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Option<Result<R, TaskError>>> {
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
            if self.feed.is_none() && self.consumed == self.submitted {
                self.done = true;
                if let Some(p) = self.progress.as_mut() {
                    p.finish();
                }
                return Some(None);
            }
            let (job, ordered, next) = (self.job, self.ordered, self.next);
            let (mut st, ready) = self.shared.wait_until(
                |st| match st.jobs.get(&job) {
                    None => true,
                    Some(j) if ordered => {
                        matches!(j.slots.get(next), Some(super::engine::Slot::Done(_)))
                    }
                    Some(j) => !j.finished.is_empty(),
                },
                deadline,
            );
            if !ready {
                return None;
            }
            let taken = st.jobs.get_mut(&job).and_then(|j| {
                let ordinal = if ordered {
                    next
                } else {
                    j.finished.pop_front()?
                };
                let r = j.take(ordinal)?;
                Some((r, j.sizes[ordinal]))
            });
            drop(st);
            match taken {
                Some((r, len)) => {
                    self.consumed += 1;
                    if ordered {
                        self.next += 1;
                    }
                    self.buffer.extend(expand::<R>(r, len));
                }
                None => {
                    // The job is gone (cannot happen while this handle
                    // lives); end rather than spin.
                    self.done = true;
                }
            }
        }
    }
}

impl<R: DeserializeOwned> Iterator for Imap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(None).flatten()
    }
}

impl<R> Drop for Imap<R> {
    fn drop(&mut self) {
        self.shared.abandon(self.job);
    }
}

impl<R> std::fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("job", &self.job)
            .field("ordered", &self.ordered)
            .field("yielded", &self.yielded)
            .finish()
    }
}
