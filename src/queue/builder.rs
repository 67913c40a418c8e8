//! [`QueueBuilder`]: the sizes of a new queue.

use std::io;

use super::fifo::Queue;
use super::joinable::JoinableQueue;
use super::ring::{Geometry, MAX_CAPACITY, Ring, SEG};
use super::simple::SimpleQueue;
use crate::macros::setters;

/// Default ring size: 4 MiB, the memory of free segments a queue keeps for
/// reuse. Enough that messages of 1 MiB flow with several in flight and no
/// page faults, and that a standing backlog recycles its segments instead
/// of faulting fresh ones; small enough for hundreds of queues. Segments
/// are touched lazily (64 KiB at a time, as the traffic requires), so a
/// queue that only ever carried small messages holds a couple of them.
pub const DEFAULT_RING_SIZE: usize = 4 << 20;

/// Default capacity (address space for queued data): 16 GiB. It is a sparse
/// reservation that costs nothing until used; it bounds how much an
/// unbounded queue can hold.
pub const DEFAULT_CAPACITY: usize = 16 << 30;

/// Sizes for a new queue.
///
/// ```
/// use multiproc::Queue;
///
/// let q: Queue<String> = Queue::builder()
///     .maxsize(100)
///     .ring_size(256 << 10)
///     .capacity(1 << 30)
///     .build()?;
/// assert_eq!(q.maxsize(), 100);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it builds"]
pub struct QueueBuilder {
    maxsize: usize,
    ring: usize,
    capacity: usize,
}

impl Default for QueueBuilder {
    fn default() -> Self {
        QueueBuilder::new()
    }
}

impl QueueBuilder {
    /// Defaults: unbounded, [`DEFAULT_RING_SIZE`], [`DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        QueueBuilder {
            maxsize: 0,
            ring: DEFAULT_RING_SIZE,
            capacity: DEFAULT_CAPACITY,
        }
    }

    setters! {
        /// At most `maxsize` messages queued (`put` waits while full); 0 means
        /// unbounded. At most `2^31 - 1`.
        maxsize(maxsize: usize) => maxsize = maxsize;

        /// Bytes of free segments kept in memory for reuse (rounded up to
        /// 64 KiB segments, at least two): what an idle queue may hold. Larger
        /// backlogs take memory beyond it and give it back once consumed.
        ring_size(bytes: usize) => ring = bytes;

        /// Address space for queued data (rounded up to 64 KiB, at most
        /// 31 GiB): the most bytes the queue can hold at once.
        capacity(bytes: usize) => capacity = bytes;
    }

    fn ring(&self) -> io::Result<Ring> {
        if self.maxsize > i32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "maxsize must be below 2^31",
            ));
        }
        if self.capacity > MAX_CAPACITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "capacity must be at most 31 GiB",
            ));
        }
        Ring::create(Geometry {
            maxsize: self.maxsize as u32,
            ring: self.ring.max(2 * SEG),
            capacity: self.capacity.max(self.ring).max(4 * SEG),
        })
    }

    /// Creates a [`Queue`].
    pub fn build<T>(&self) -> io::Result<Queue<T>> {
        Queue::from_ring(self.ring()?)
    }

    /// Creates a [`JoinableQueue`].
    pub fn build_joinable<T>(&self) -> io::Result<JoinableQueue<T>> {
        Ok(JoinableQueue::from_queue(self.build()?))
    }

    /// Creates a [`SimpleQueue`] (`maxsize` is ignored: simple queues are
    /// unbounded).
    pub fn build_simple<T>(&self) -> io::Result<SimpleQueue<T>> {
        Ok(SimpleQueue::from_queue(self.clone().maxsize(0).build()?))
    }
}

impl<T> Queue<T> {
    /// A new unbounded queue: `put` never waits (up to the capacity, 16 GiB
    /// by default). Python's `Queue()`.
    pub fn new() -> io::Result<Self> {
        QueueBuilder::new().build()
    }

    /// A new queue holding at most `maxsize` messages (`put` waits while it
    /// is full); 0 means unbounded. Python's `Queue(maxsize)`.
    ///
    /// ```
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// q.put(1u8)?;
    /// assert!(q.full());
    /// assert!(matches!(q.put_nowait(2), Err(multiproc::TryPutError::Full(2))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> io::Result<Self> {
        QueueBuilder::new().maxsize(maxsize).build()
    }
}

impl Queue<()> {
    /// A builder for queues with a `maxsize`, a ring size or a capacity
    /// other than the defaults; the element type is chosen by
    /// [`build`](QueueBuilder::build).
    pub fn builder() -> QueueBuilder {
        QueueBuilder::new()
    }
}
