//! Awaiting pool results from tokio: [`AsyncResult`] and [`MapResult`] are
//! futures (`.await` them), and [`Imap::next_async`] is the async form of
//! the iterator.
//!
//! A waiting task never blocks its runtime thread. It asks the pool to wake
//! it at the next change of its state (the same moment blocking waiters
//! are signalled), then checks without waiting, which also drives the pool
//! one step, without waiting, when no other thread does. A spawn pool has a
//! thread driving it all the time, so that is all. A fork pool has none
//! (it must stay single-threaded to fork replacement workers), so the task
//! also checks again on a timer: every 50 µs at first, backing off to 5 ms
//! while nothing changes.

use std::future::{Future, IntoFuture, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::engine::Shared;
use super::error::{PoolError, TaskError};
use super::imap::Imap;
use super::result::{AsyncResult, MapResult};

/// First and last period of the timer of a task waiting on a fork pool.
const FIRST_TICK: Duration = Duration::from_micros(50);
const LAST_TICK: Duration = Duration::from_millis(5);

/// Waits until `check` gives a value, woken by the pool's changes (and a
/// timer when nothing drives the pool).
async fn until<T>(shared: &Arc<Shared>, mut check: impl FnMut() -> Option<T>) -> T {
    let mut tick = FIRST_TICK;
    loop {
        let once = poll_fn(|cx| {
            // Asked for before the look, so that a change right after the
            // look still wakes this task.
            shared.wake_on_change(cx.waker());
            match check() {
                Some(v) => Poll::Ready(v),
                None => Poll::Pending,
            }
        });
        if shared.background() {
            return once.await;
        }
        match tokio::time::timeout(tick, once).await {
            Ok(v) => return v,
            Err(_) => tick = (tick * 2).min(LAST_TICK),
        }
    }
}

impl<R: DeserializeOwned> MapResult<R> {
    /// Waits, without blocking the runtime thread, until every task has
    /// finished.
    pub async fn wait_async(&self) {
        until(self.shared(), || self.ready().then_some(())).await
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits, without blocking the runtime thread, until the task has
    /// finished.
    pub async fn wait_async(&self) {
        self.map_result().wait_async().await
    }
}

/// `.await` gives the task's value or its error, like
/// [`into_value`](AsyncResult::into_value), without blocking the runtime
/// thread (feature `tokio`).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// fn square(x: u64) -> u64 { x * x }
/// let pool = multiproc::Pool::new(2)?;
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// let r = pool.apply_async(square, 7)?;
/// assert_eq!(rt.block_on(async { r.await })?, 49);
/// let m = pool.map_async(square, 1..4)?;
/// assert_eq!(rt.block_on(async { m.await })?, [1, 4, 9]);
/// # Ok(())
/// # }
/// ```
impl<R: DeserializeOwned + Send + Sync + 'static> IntoFuture for AsyncResult<R> {
    type Output = Result<R, PoolError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.wait_async().await;
            self.into_value()
        })
    }
}

/// `.await` gives the values in input order, like
/// [`into_values`](MapResult::into_values), without blocking the runtime
/// thread (feature `tokio`).
impl<R: DeserializeOwned + Send + Sync + 'static> IntoFuture for MapResult<R> {
    type Output = Result<Vec<R>, PoolError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.wait_async().await;
            self.into_values()
        })
    }
}

impl<R: DeserializeOwned> Imap<R> {
    /// The next result, waiting without blocking the runtime thread;
    /// `None` once every result was yielded (the async form of
    /// [`next`](Iterator::next)).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let mut it = pool.imap(square, 0..4)?;
    /// let got = rt.block_on(async {
    ///     let mut got = Vec::new();
    ///     while let Some(r) = it.next_async().await {
    ///         got.push(r?);
    ///     }
    ///     Ok::<_, multiproc::TaskError>(got)
    /// })?;
    /// assert_eq!(got, [0, 1, 4, 9]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn next_async(&mut self) -> Option<Result<R, TaskError>> {
        let shared = self.shared().clone();
        until(&shared, || self.next_timeout(Duration::ZERO).ok()).await
    }
}
