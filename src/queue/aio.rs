//! [`AsyncQueue`]: `get().await` and `put().await` on a shared-memory
//! queue, woken through tokio's reactor.
//!
//! # The doorbell
//!
//! Blocking waiters sleep on futex words, which no reactor can watch. An
//! async waiter needs a descriptor that becomes readable, in every process
//! that waits, when the queue changes. The queue already has one: its
//! *hang-up socket pair* (`fifo.rs`), whose `watch` end every handle holds
//! and whose `writer` end every producer holds. So:
//!
//! * **Data.** An async consumer registers (a duplicate of) `watch` with the
//!   reactor, sets the ring's `aio[0]` flag, checks the queue once more and
//!   waits for `watch` to become readable. A `put` that finds `aio[0]` set
//!   swaps it to `0` and writes one byte into its process's `writer`
//!   descriptor: `watch` turns readable in every process, and every
//!   registered reactor gets an edge. The same descriptor reports the
//!   hang-up when the last producer anywhere is gone (`POLLHUP`), so an
//!   async consumer learns that at once too, with no `poll` of its own.
//! * **Space** (a bounded queue that is full). The other direction: an async
//!   producer registers a duplicate of its `writer` descriptor and sets
//!   `aio[1]`; a `get` that finds it set writes one byte into `watch`.
//!   That duplicate exists only while the `put` waits (a descriptor of the
//!   `writer` end counts as a producer for the hang-up), and a child made
//!   by `fork` closes the ones it inherited ([`after_fork`]).
//!
//! The flag and the commit words form Dekker's pattern, as the futex event
//! count's flag does (`wait.rs`): the waiter stores the flag (SeqCst, then
//! a SeqCst fence) and then looks at the queue; the other side commits (a
//! SeqCst store) and then loads the flag (SeqCst). Either the waiter sees the change or the other side
//! sees the flag. So the blocking hot path pays one load per `put` and per
//! `get` (only with the `tokio` feature), and the system call only when an
//! async task waits. A waiter drains the bytes that woke it, so at most one
//! byte per waiting round is ever buffered. Bytes are written with
//! `MSG_DONTWAIT` and failures ignored: a full buffer is readable anyway.
//!
//! Every waiter re-checks at least every [`SLICE`]: that covers a process
//! killed between its commit and its doorbell, and a producer that left
//! without a hang-up bump. No thread is started: any number of tasks wait
//! on one runtime thread (each wake-up wakes every task waiting on the
//! same queue in the process; they race for the message as blocking
//! waiters do).
//!
//! Alternatives weighed: an eventfd doorbell per queue would carry one more
//! descriptor in every handle and every message; a helper thread waiting on
//! many futex words (`futex_waitv`, 128 per call) adds a thread hop to every
//! wake-up (futex → helper → runtime), where the socket wakes the runtime's
//! `epoll_wait` directly, and learns nothing of hang-ups.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::error::{GetError, PutError, TryGetError, TryPutError};
use super::fifo::{Queue, Shared};
use super::simple::SimpleQueue;
use crate::codec::SharedFd;
use crate::sys;
use crate::wait::SLICE;

/// A descriptor as the reactor sees it; [`BELLS`] keeps it open.
struct Raw(RawFd);

impl AsRawFd for Raw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The duplicates the bells of this process hold, by key. They live here
/// rather than in the bells so that a child made by `fork` can close them
/// ([`after_fork`]): a `writer` duplicate left open there would keep the
/// queue connected for as long as the child lives.
static BELLS: Mutex<Option<HashMap<u64, Arc<OwnedFd>>>> = Mutex::new(None);
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);
/// Whether [`BELLS`] was ever given an entry: a forked child of a process
/// that made no bell leaves the lock (and its page) untouched.
static ANY: AtomicBool = AtomicBool::new(false);

fn bells() -> std::sync::MutexGuard<'static, Option<HashMap<u64, Arc<OwnedFd>>>> {
    BELLS.lock().unwrap_or_else(|e| e.into_inner())
}

/// In a child made by `fork`: closes the duplicates the parent's bells
/// held. The parent's tasks never run in the child.
pub(crate) fn after_fork() {
    if ANY.load(Ordering::Acquire) {
        bells().take();
    }
}

/// A duplicate of one end of a queue's hang-up socket, registered with the
/// current runtime's reactor: readable when the doorbell rang (or, for
/// `watch`, when every producer is gone).
struct Bell {
    io: Option<AsyncFd<Raw>>,
    key: u64,
    fd: Weak<OwnedFd>,
}

impl Bell {
    fn new(end: &SharedFd) -> io::Result<Bell> {
        let fd = Arc::new(sys::socket::dup(end.fd())?);
        let raw = fd.as_raw_fd();
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(&fd);
        bells().get_or_insert_with(HashMap::new).insert(key, fd);
        ANY.store(true, Ordering::Release);
        // Made after the entry, so that on failure `drop` removes it.
        let mut bell = Bell {
            io: None,
            key,
            fd: weak,
        };
        // SAFETY: `raw` stays open while the `AsyncFd` lives: its owner in
        // `BELLS` is removed only by `drop`, after the `AsyncFd` is gone
        // (or by a forked child, where the parent's tasks never run again).
        let io = unsafe { AsyncFd::register_with_interest(Raw(raw), Interest::READABLE) };
        bell.io = Some(io.map_err(|e| e.into_parts().1)?);
        Ok(bell)
    }

    fn io(&self) -> &AsyncFd<Raw> {
        self.io.as_ref().expect("registered until dropped")
    }

    /// Reads what rang (a few bytes at most).
    fn drain(&self) {
        if let Some(fd) = self.fd.upgrade() {
            let mut buf = [0u8; 64];
            while matches!(sys::socket::read(fd.as_fd(), &mut buf, true), Ok(n) if n == buf.len()) {
            }
        }
    }

    /// Waits for a ring (or a hang-up), at most [`SLICE`]; whether the
    /// other side of the socket is gone.
    async fn wait(&self) -> io::Result<bool> {
        match tokio::time::timeout(SLICE, self.io().readable()).await {
            Ok(Ok(mut ready)) => {
                let closed = ready.ready().is_read_closed();
                // Cleared before the caller looks at the queue again: a
                // ring after this is a new event.
                ready.clear_ready();
                self.drain();
                Ok(closed)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }
}

impl Drop for Bell {
    fn drop(&mut self) {
        // Out of the reactor first, while the descriptor is still open.
        drop(self.io.take());
        if let Some(map) = bells().as_mut() {
            map.remove(&self.key);
        }
    }
}

/// Rings the data doorbell if an async consumer waits. Call after a
/// successful put (whose commit store is SeqCst).
pub(super) fn ring_data(shared: &Shared) {
    let flag = &shared.ring.aio_flags()[0];
    // SeqCst: the load half of Dekker's pattern with the waiter's flag
    // store (module docs); the swap keeps one ring per waiting round.
    if flag.load(Ordering::SeqCst) != 0 && flag.swap(0, Ordering::SeqCst) != 0 {
        let writer = shared.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = writer.as_ref() {
            let _ = sys::socket::try_send(w.fd(), &[IoSlice::new(&[1])], &[]);
        }
    }
}

/// Rings the space doorbell if an async producer waits. Call after a
/// successful get (whose commit store is SeqCst).
pub(super) fn ring_space(shared: &Shared) {
    let flag = &shared.ring.aio_flags()[1];
    // SeqCst: as in `ring_data`.
    if flag.load(Ordering::SeqCst) != 0 && flag.swap(0, Ordering::SeqCst) != 0 {
        let _ = sys::socket::try_send(shared.watch.fd(), &[IoSlice::new(&[1])], &[]);
    }
}

/// A [`Queue`] for async code on a tokio runtime: `get().await` and
/// `put(v).await` wait through the runtime's reactor (see the doorbell
/// in the module's source), never with a thread per waiting task.
///
/// It is a queue handle like any other: a producer until
/// [`close`](Self::close)d or dropped, interchangeable with blocking
/// handles in this and other processes. Clones share one registration
/// with the reactor. Make it inside a runtime with I/O and time enabled
/// (`enable_all`) and use it on that runtime.
///
/// A `get` future dropped while it waits loses no message: a message is
/// taken only when the future returns it.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// let q = multiproc::Queue::<String>::new()?;
/// let producer = q.clone(); // a blocking handle, here in a thread
/// rt.block_on(async {
///     let q = q.into_async()?;
///     let t = std::thread::spawn(move || producer.put("hi".to_string()));
///     assert_eq!(q.get().await?, "hi");
///     t.join().unwrap()?;
///     q.put("again".to_string()).await?;
///     assert_eq!(q.get().await?, "again");
///     Ok(())
/// })
/// # }
/// ```
pub struct AsyncQueue<T> {
    queue: Queue<T>,
    data: Arc<Bell>,
}

impl<T> Clone for AsyncQueue<T> {
    fn clone(&self) -> Self {
        AsyncQueue {
            queue: self.queue.clone(),
            data: self.data.clone(),
        }
    }
}

impl<T> Queue<T> {
    /// Makes this handle async (see [`AsyncQueue`]). Must be called inside
    /// a tokio runtime with I/O enabled.
    pub fn into_async(self) -> io::Result<AsyncQueue<T>> {
        AsyncQueue::new(self)
    }
}

impl<T> SimpleQueue<T> {
    /// Makes this handle async (see [`AsyncQueue`]); `get().await` and
    /// `put(v).await` behave as on a `SimpleQueue`.
    pub fn into_async(self) -> io::Result<AsyncQueue<T>> {
        AsyncQueue::new(self.into_queue())
    }
}

fn get_error(e: TryGetError) -> GetError {
    match e {
        TryGetError::Disconnected => GetError::Disconnected,
        TryGetError::Decode(e) => GetError::Decode(e),
        TryGetError::Io(e) => GetError::Io(e),
        TryGetError::Closed => GetError::Closed,
        e => GetError::Io(io::Error::other(e.to_string())),
    }
}

fn put_error<T>(e: TryPutError<T>) -> PutError<T> {
    match e {
        TryPutError::Closed(v) => PutError::Closed(v),
        TryPutError::TooLarge(v) => PutError::TooLarge(v),
        TryPutError::Encode(v, e) => PutError::Encode(v, e),
        TryPutError::Io(v, e) => PutError::Io(v, e),
        TryPutError::Full(v) => PutError::Io(v, io::ErrorKind::WouldBlock.into()),
    }
}

impl<T> AsyncQueue<T> {
    /// Registers `queue`'s doorbell with the current runtime's reactor.
    /// Outside a runtime this fails with an error; in a runtime built
    /// without I/O it panics (tokio's rule).
    pub fn new(queue: Queue<T>) -> io::Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "an async queue must be made inside a tokio runtime",
            ));
        }
        let data = Arc::new(Bell::new(&queue.shared.watch)?);
        Ok(AsyncQueue { queue, data })
    }

    /// The blocking handle underneath (for `qsize`, `get_timeout`,
    /// `close`…).
    pub fn get_ref(&self) -> &Queue<T> {
        &self.queue
    }

    /// Back to a blocking handle.
    pub fn into_inner(self) -> Queue<T> {
        self.queue
    }

    /// Declares that this handle will put no more (see [`Queue::close`]).
    pub fn close(&self) {
        self.queue.close()
    }

    /// Takes a message with `op` (one that does not wait), waiting through
    /// the reactor while the queue is empty.
    async fn wait_data<R>(
        &self,
        op: impl Fn(&Queue<T>) -> Result<R, TryGetError>,
    ) -> Result<R, GetError> {
        let ring = &self.queue.shared.ring;
        let mut spun = false;
        loop {
            match op(&self.queue) {
                Err(TryGetError::Empty) => {}
                r => return r.map_err(get_error),
            }
            // Spin as a blocking `get` does (adaptive, at most 20 µs, none
            // on one CPU): a consumer just behind its producer then pays
            // no wake-up.
            if !spun {
                spun = true;
                if ring.spin_data(crate::wait::Deadline::NEVER) {
                    continue;
                }
            }
            // SeqCst store and fence: the store half of Dekker's pattern
            // (module docs); the fence orders it before the look, whose
            // loads of the commit word are Acquire.
            ring.aio_flags()[0].store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            match op(&self.queue) {
                Err(TryGetError::Empty) => {}
                r => return r.map_err(get_error),
            }
            if self.data.wait().await? {
                // Every producer is gone, for good: one last look.
                return match op(&self.queue) {
                    Err(TryGetError::Empty) => Err(GetError::Disconnected),
                    r => r.map_err(get_error),
                };
            }
        }
    }

    /// Puts with `op` (one that does not wait), waiting through the
    /// reactor while the queue is full.
    async fn wait_space<V>(
        &self,
        mut value: V,
        op: impl Fn(&Queue<T>, V) -> Result<(), TryPutError<V>>,
    ) -> Result<(), PutError<V>> {
        let ring = &self.queue.shared.ring;
        let mut bell: Option<Bell> = None;
        loop {
            match op(&self.queue, value) {
                Err(TryPutError::Full(v)) => value = v,
                r => return r.map_err(put_error),
            }
            if bell.is_none() {
                let writer = self
                    .queue
                    .shared
                    .writer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match writer {
                    Some(w) => match Bell::new(&w) {
                        Ok(b) => bell = Some(b),
                        Err(e) => return Err(PutError::Io(value, e)),
                    },
                    // No producer end here (this handle was closed
                    // meanwhile): the next try reports it.
                    None => continue,
                }
            }
            // SeqCst store and fence: as in `wait_data`.
            ring.aio_flags()[1].store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            match op(&self.queue, value) {
                Err(TryPutError::Full(v)) => value = v,
                r => return r.map_err(put_error),
            }
            if let Some(b) = &bell
                && let Err(e) = b.wait().await
            {
                return Err(PutError::Io(value, e));
            }
        }
    }
}

impl<T: DeserializeOwned> AsyncQueue<T> {
    /// Takes the message at the front of the queue, waiting for one
    /// without blocking the runtime. Fails with [`GetError::Disconnected`]
    /// when the queue is empty and every producer is gone.
    pub async fn get(&self) -> Result<T, GetError> {
        self.wait_data(Queue::get_nowait).await
    }
}

impl<T> AsyncQueue<T> {
    /// Takes the oldest message as raw bytes (see [`Queue::get_bytes`]).
    pub async fn get_bytes(&self) -> Result<Vec<u8>, GetError> {
        self.wait_data(Queue::get_bytes_nowait).await
    }

    /// Puts raw bytes as one message (see [`Queue::put_bytes`]), waiting
    /// while the queue is full.
    pub async fn put_bytes(&self, data: &[u8]) -> Result<(), PutError<()>> {
        self.wait_space((), |q, ()| q.put_bytes_nowait(data)).await
    }
}

impl<T: Serialize> AsyncQueue<T> {
    /// Puts `value` at the back of the queue, waiting without blocking the
    /// runtime while it is full. The value is handed back on error.
    pub async fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.wait_space(value, Queue::put_nowait).await
    }
}

impl<T> std::fmt::Debug for AsyncQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncQueue").field(&self.queue).finish()
    }
}
