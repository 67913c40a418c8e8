//! Iterators over a queue's messages: [`Iter`] waits for each message and
//! ends when the producers are gone, [`TryIter`] takes what is queued now,
//! [`IntoIter`] is `Iter` owning its handle.

use std::fmt;

use serde::de::DeserializeOwned;

use super::fifo::Queue;

/// Waits for each message; ends when the queue is empty and every producer
/// is gone ([`GetError::Disconnected`](crate::GetError::Disconnected)), or at the first other error
/// (a message that does not decode, an OS failure): call
/// [`Queue::get`] to see those. Made by [`Queue::iter`] and
/// `for msg in &queue`.
#[must_use = "iterators do nothing unless consumed"]
pub struct Iter<'a, T> {
    queue: &'a Queue<T>,
}

impl<T: DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        next_blocking(self.queue)
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

/// Takes the messages queued now, without waiting; ends when the queue is
/// empty (or at the first error, as [`Iter`]). Made by
/// [`Queue::try_iter`].
#[must_use = "iterators do nothing unless consumed"]
pub struct TryIter<'a, T> {
    queue: &'a Queue<T>,
}

impl<T: DeserializeOwned> Iterator for TryIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.queue.get_nowait().ok()
    }
}

impl<T> fmt::Debug for TryIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TryIter").finish_non_exhaustive()
    }
}

/// [`Iter`] owning its handle: made by `for msg in queue`.
#[must_use = "iterators do nothing unless consumed"]
pub struct IntoIter<T> {
    queue: Queue<T>,
}

impl<T: DeserializeOwned> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        next_blocking(&self.queue)
    }
}

impl<T> fmt::Debug for IntoIter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoIter").finish_non_exhaustive()
    }
}

fn next_blocking<T: DeserializeOwned>(queue: &Queue<T>) -> Option<T> {
    queue.get().ok()
}

impl<'a, T: DeserializeOwned> IntoIterator for &'a Queue<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T: DeserializeOwned> IntoIterator for Queue<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter { queue: self }
    }
}

/// The iterators of a queue (the get side needs only `T: DeserializeOwned`).
impl<T: DeserializeOwned> Queue<T> {
    /// An iterator that waits for each message and ends when the queue is
    /// empty and every producer is gone (or at the first other error; see
    /// [`Iter`]). `for msg in &queue` does the same.
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// for word in ["a", "b"] {
    ///     q.put(word.to_string())?;
    /// }
    /// q.close(); // the only producer: the loop ends once the queue is empty
    /// let words: Vec<String> = q.iter().collect();
    /// assert_eq!(words, ["a", "b"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { queue: self }
    }

    /// An iterator over the messages queued now: it never waits, and ends
    /// when the queue is empty (see [`TryIter`]).
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert_eq!(q.try_iter().sum::<i32>(), 3);
    /// assert!(q.empty()); // `q` is still a producer: more may come later
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { queue: self }
    }
}
