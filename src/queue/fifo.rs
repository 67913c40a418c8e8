//! [`Queue`]: the multi-producer, multi-consumer FIFO shared by threads and
//! processes (Python's `multiprocessing.Queue`), over the ring.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{
    GetCall, GetError, GetFailure, GetTimeoutError, PutCall, PutError, PutFailure, PutTimeoutError,
    TryGetError, TryPutError,
};
use super::ring::{GetFail, PutFail, Record, Ring, Writer};
use crate::codec::{self, SharedFd};
use crate::error::CodecError;
use crate::sys;
use crate::wait::{Deadline, SLICE};

/// How long an operation may wait.
#[derive(Clone, Copy)]
enum Mode {
    /// Until the deadline (which may be never).
    Wait(Deadline),
    /// Not at all: full or empty is reported as such, not as a timeout.
    NoWait,
}

impl Mode {
    const BLOCK: Mode = Mode::Wait(Deadline::NEVER);

    fn timeout(t: Duration) -> Mode {
        Mode::Wait(Deadline::after(t))
    }

    fn lock_deadline(self) -> Option<Instant> {
        match self {
            Mode::Wait(d) => d.instant(),
            Mode::NoWait => None,
        }
    }
}

/// What one process holds for a queue, shared by the clones of a handle:
/// the mapped ring and this process's part in the producer count.
///
/// # Counting producers
///
/// Every queue has a *hang-up socket pair*, made with it. Every process
/// that holds at least one producer handle holds a descriptor of the
/// `writer` end (a handle passed to another process carries it along, so
/// a handle in flight in a socket counts too); every handle holds the
/// `watch` end. When the last `writer` descriptor anywhere is closed — its
/// holders dropped or closed their handles, or exited, or were killed —
/// the kernel reports `POLLHUP` on `watch`. The count is the kernel's, so
/// it survives any death and needs no repair.
///
/// Inside a process, `producers` counts the producer handles: every
/// clone of a producer adds one (a process-local atomic, never touched by
/// `put` or `get`); the last one to go closes this process's descriptor
/// and bumps the ring's `hangups` word so that sleeping consumers look at
/// `watch` at once (a killed process bumps nothing: sleepers look at least
/// every [`SLICE`](crate::wait::SLICE)).
///
/// A consumer looks (one `poll`) only when it finds the queue empty, and
/// then at most once per `hangups` change or per slice. Once every writer
/// is gone no new producer can appear (a producer handle can only be made
/// from one), so `gone` is final.
pub(super) struct Shared {
    pub(super) ring: Ring,
    /// Producer handles of this queue in this process.
    producers: AtomicUsize,
    /// This process's `writer` descriptor while it has producer handles.
    pub(super) writer: Mutex<Option<SharedFd>>,
    /// The consumers' end of the hang-up socket.
    pub(super) watch: SharedFd,
    /// `hangups` when `watch` was last looked at (`u64::MAX`: never).
    looked_seq: AtomicU64,
    /// When `watch` was last looked at (nanoseconds after [`epoch`]).
    looked_at: AtomicU64,
    /// Every producer is gone, for good.
    gone: AtomicBool,
}

/// Zero for `looked_at`.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Every `Shared` of this process, for [`after_fork`].
static ALL: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
/// Whether [`ALL`] was ever given an entry: a forked child of a process
/// that made no queue leaves the lock (and its page) untouched.
static ANY: AtomicBool = AtomicBool::new(false);

/// In a child made by `fork`: closes the `writer` descriptors inherited
/// with the parent's memory. The parent's handles in this copy are never
/// used by the child (it runs the target with the arguments it was given,
/// which carry their own descriptors), and left open they would keep the
/// queue connected for as long as the child lives: a forked consumer
/// would wait for itself.
#[inline]
pub(crate) fn after_fork() {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    for shared in all.iter().filter_map(Weak::upgrade) {
        shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

impl Shared {
    fn new(ring: Ring, watch: SharedFd, writer: Option<SharedFd>) -> Arc<Shared> {
        let producers = usize::from(writer.is_some());
        let shared = Arc::new(Shared {
            ring,
            producers: AtomicUsize::new(producers),
            writer: Mutex::new(writer),
            watch,
            looked_seq: AtomicU64::new(u64::MAX),
            looked_at: AtomicU64::new(0),
            gone: AtomicBool::new(false),
        });
        let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&shared));
        ANY.store(true, Ordering::Release);
        shared
    }

    /// One producer handle of this process went away.
    fn release_producer(&self) {
        // AcqRel: the last one sees every other handle's release.
        if self.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            self.ring.note_hangup();
        }
    }

    /// Whether every producer handle, in every process, is gone. Looks at
    /// the hang-up socket only if the ring's `hangups` moved, or a slice
    /// passed, since the last look.
    fn producers_gone(&self) -> io::Result<bool> {
        if self.gone.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let seq = u64::from(self.ring.hangups());
        let now = epoch().elapsed().as_nanos() as u64;
        let slice = SLICE.as_nanos() as u64;
        if self.looked_seq.load(Ordering::Relaxed) == seq
            && now.saturating_sub(self.looked_at.load(Ordering::Relaxed)) < slice
        {
            return Ok(false);
        }
        self.looked_seq.store(seq, Ordering::Relaxed);
        self.looked_at.store(now, Ordering::Relaxed);
        let gone = sys::poll::hung_up(self.watch.fd())?;
        if gone {
            self.gone.store(true, Ordering::Relaxed);
        }
        Ok(gone)
    }
}

/// A first-in first-out queue of `T` shared by any number of producers and
/// consumers, threads and processes alike.
///
/// The messages live in shared memory (see the [module docs](crate::queue)):
/// no feeder thread, no pipe, and a process's exit never waits for what it
/// put to be read. Handles are cheap to clone and can be passed to child
/// processes (as [`Process`](crate::Process) arguments, or inside messages
/// sent over a [`Connection`](crate::Connection)).
///
/// ```
/// use multiproc::{Process, Queue};
///
/// fn child(q: Queue<(i32, Option<i32>, String)>) {
///     q.put((42, None, "hello".into())).unwrap();
/// }
///
/// let q = Queue::new()?;
/// let mut p = Process::new(child, q.clone());
/// p.start()?;
/// assert_eq!(q.get()?, (42, None, "hello".to_string()));
/// p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Values are encoded with the crate's codec straight into
/// shared memory. Values holding handles (connections, queues) cannot be
/// put: they fail with [`PutError::Encode`]; pass those as process
/// arguments or over a `Connection`.
///
/// # Producers, `close` and the end of the messages
///
/// Every handle is a *producer* until it is [closed](Self::close) or
/// dropped: its clones are producers too, and so is the handle a child
/// process receives from it (as an argument or inside a message). When
/// the queue is empty and no producer is left anywhere — dropped, closed,
/// or gone with a process that exited or was killed, even by `SIGKILL` —
/// `get` fails with [`GetError::Disconnected`] instead of waiting
/// forever, and iterating over the queue ([`iter`](Self::iter), `for msg
/// in &queue`) ends.
///
/// A consumer's own handle counts as a producer too: close it first, so
/// that the loop ends once the others are gone. A closed handle still
/// gets; it only puts no more (`put` fails with `Closed`).
///
/// ```
/// use multiproc::{Process, Queue};
///
/// fn produce(q: Queue<u32>) {
///     for i in 1..=3 {
///         q.put(i).unwrap();
///     }
/// } // `q` is dropped: this producer is gone
///
/// let q = Queue::new()?;
/// let mut p = Process::new(produce, q.clone());
/// p.start()?;
/// q.close(); // this process only consumes
/// let got: Vec<u32> = q.iter().collect(); // ends when `produce` is done
/// assert_eq!(got, [1, 2, 3]);
/// p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    pub(super) shared: Arc<Shared>,
    /// This handle is a producer (not closed): it holds one count in
    /// `shared.producers`.
    producer: AtomicBool,
    _t: PhantomData<fn(T) -> T>,
}

/// A clone of a producer is a producer; a clone of a closed handle is
/// closed.
impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        // Relaxed: like `Arc::clone`, the new count is covered by ours. A
        // count already at zero means that another thread closed this very
        // handle meanwhile, and this process's producer end is gone: the
        // clone is closed too.
        let producer = self.producer.load(Ordering::Relaxed)
            && self
                .shared
                .producers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n > 0).then(|| n + 1)
                })
                .is_ok();
        Queue {
            shared: self.shared.clone(),
            producer: AtomicBool::new(producer),
            _t: PhantomData,
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        if *self.producer.get_mut() {
            self.shared.release_producer();
        }
    }
}

thread_local! {
    /// Where a message that straddles segments is gathered for decoding.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Scratch buffers above this size are not kept between gets.
const SCRATCH_KEEP: usize = 1 << 20;

fn decode_record<T: DeserializeOwned>(rec: &Record<'_>) -> Result<T, GetFailureOr> {
    if let Some(bytes) = rec.contiguous() {
        return codec::decode_whole(bytes).map_err(GetFailureOr::Decode);
    }
    SCRATCH.with(|s| {
        let mut buf = s.borrow_mut();
        buf.clear();
        let r = rec
            .copy_to(&mut buf)
            .map_err(GetFailureOr::Io)
            .and_then(|_| codec::decode_whole(&buf).map_err(GetFailureOr::Decode));
        if buf.capacity() > SCRATCH_KEEP {
            *buf = Vec::new();
        }
        r
    })
}

/// A record was taken but could not be turned into the value.
enum GetFailureOr {
    Decode(CodecError),
    Io(io::Error),
}

/// A get's outcome as the error type `E` of the call.
fn finish_get<T, E: GetCall>(r: Result<Result<T, GetFailureOr>, GetFailure>) -> Result<T, E> {
    match r.map_err(E::failed)? {
        Ok(v) => Ok(v),
        Err(GetFailureOr::Decode(e)) => Err(e.into()),
        Err(GetFailureOr::Io(e)) => Err(e.into()),
    }
}

impl<T> Queue<T> {
    pub(super) fn from_ring(ring: Ring) -> io::Result<Self> {
        let (watch, writer) = sys::socket::stream_pair()?;
        Ok(Queue {
            shared: Shared::new(ring, SharedFd::new(watch), Some(SharedFd::new(writer))),
            producer: AtomicBool::new(true),
            _t: PhantomData,
        })
    }

    fn ring(&self) -> &Ring {
        &self.shared.ring
    }

    /// Approximate number of queued messages (exact when nobody else is
    /// putting or getting), like Python's `qsize`.
    pub fn qsize(&self) -> usize {
        self.ring().len() as usize
    }

    /// Whether the queue looks empty (approximate, as in Python).
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue looks full: it has a `maxsize` and holds that many
    /// messages (approximate, as in Python).
    pub fn full(&self) -> bool {
        let max = self.maxsize();
        max != 0 && self.qsize() >= max
    }

    /// The most messages the queue holds; 0 means unbounded.
    pub fn maxsize(&self) -> usize {
        self.ring().maxsize() as usize
    }

    /// The largest message (in encoded bytes) the queue can hold.
    pub fn max_message_size(&self) -> usize {
        self.ring().max_message()
    }

    /// Bytes of memory the queue's shared segment holds right now: the
    /// segments holding queued messages, up to a ring's worth of free ones
    /// kept for reuse, and a few pages of bookkeeping.
    pub fn memory_usage(&self) -> io::Result<usize> {
        self.ring().allocated_bytes()
    }

    /// Declares that this handle will put no more (Python's `close`):
    /// later `put`s through it fail with `Closed`, and it stops counting
    /// as a producer (see [Producers](Self#producers-close-and-the-end-of-the-messages)).
    /// It still gets. Only this handle is closed: its clones, and handles
    /// in other processes, are not. Queued messages stay. There is no
    /// feeder thread to flush, so nothing else happens. Closing twice does
    /// nothing more.
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(1)?;
    /// q.close();
    /// assert!(matches!(q.put(2), Err(multiproc::PutError::Closed(2))));
    /// assert_eq!(q.get()?, 1);
    /// // No producer left and nothing queued: the queue is finished.
    /// assert!(matches!(q.get(), Err(multiproc::GetError::Disconnected)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        if self.producer.swap(false, Ordering::Relaxed) {
            self.shared.release_producer();
        }
    }

    /// Whether [`close`](Self::close) was called on this handle (or it was
    /// made from a closed one).
    pub fn is_closed(&self) -> bool {
        !self.producer.load(Ordering::Relaxed)
    }

    fn put_raw(
        &self,
        mode: Mode,
        write: impl FnMut(&mut Writer<'_>) -> Result<(), String>,
    ) -> Result<(), PutFailure> {
        let r = self.put_ring(mode, write);
        #[cfg(feature = "tokio")]
        if r.is_ok() {
            super::aio::ring_data(&self.shared);
        }
        r
    }

    fn put_ring(
        &self,
        mode: Mode,
        mut write: impl FnMut(&mut Writer<'_>) -> Result<(), String>,
    ) -> Result<(), PutFailure> {
        let ring = self.ring();
        loop {
            if self.is_closed() {
                return Err(PutFailure::Closed);
            }
            match ring.try_put(mode.lock_deadline(), &mut write) {
                Ok(()) => return Ok(()),
                Err(PutFail::Full) => {}
                Err(PutFail::NoSpace(e)) => {
                    if ring.len() == 0 {
                        // Nothing to wait for: nobody will free space.
                        return Err(PutFailure::Io(e.unwrap_or_else(|| {
                            io::Error::new(io::ErrorKind::StorageFull, "queue storage exhausted")
                        })));
                    }
                }
                Err(PutFail::TooLarge) => return Err(PutFailure::TooLarge),
                Err(PutFail::Encode(m)) => return Err(PutFailure::Encode(CodecError::Encode(m))),
                Err(PutFail::LockTimeout) => return Err(PutFailure::Timeout),
                Err(PutFail::Io(e)) => return Err(PutFailure::Io(e)),
            }
            if let Mode::NoWait = mode {
                return Err(PutFailure::Full);
            }
            // Note how many gets happened, then try once more: a get between
            // the failed attempt and this read is not missed, and any later
            // one ends the wait below.
            let seen = ring.get_seq();
            match ring.try_put(mode.lock_deadline(), &mut write) {
                Ok(()) => return Ok(()),
                Err(PutFail::Full) | Err(PutFail::NoSpace(_)) => {}
                Err(PutFail::TooLarge) => return Err(PutFailure::TooLarge),
                Err(PutFail::Encode(m)) => return Err(PutFailure::Encode(CodecError::Encode(m))),
                Err(PutFail::LockTimeout) => return Err(PutFailure::Timeout),
                Err(PutFail::Io(e)) => return Err(PutFailure::Io(e)),
            }
            match mode {
                Mode::NoWait => return Err(PutFailure::Full),
                // Without a limit it returns only once a get committed.
                Mode::Wait(d) => {
                    if !ring.wait_get(seen, d) {
                        return Err(PutFailure::Timeout);
                    }
                }
            }
        }
    }

    fn get_raw<R>(&self, mode: Mode, body: impl FnOnce(&Record<'_>) -> R) -> Result<R, GetFailure> {
        let r = self.get_ring(mode, body);
        #[cfg(feature = "tokio")]
        if r.is_ok() {
            super::aio::ring_space(&self.shared);
        }
        r
    }

    fn get_ring<R>(
        &self,
        mode: Mode,
        body: impl FnOnce(&Record<'_>) -> R,
    ) -> Result<R, GetFailure> {
        let ring = self.ring();
        let mut body = Some(body);
        let mut spun = false;
        loop {
            let got = ring.try_get(mode.lock_deadline(), |rec| body.take().map(|f| f(rec)));
            match got {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {
                    return Err(GetFailure::Io(io::Error::other(
                        "queue callback already used",
                    )));
                }
                Err(GetFail::Empty) => {}
                Err(GetFail::LockTimeout) => return Err(GetFailure::Timeout),
                Err(GetFail::Io(e)) => return Err(GetFailure::Io(e)),
            }
            // Empty. Spin first (before any look at the producers, so that
            // a consumer just behind its producer pays nothing more).
            if let Mode::Wait(d) = mode
                && !spun
            {
                spun = true;
                if ring.spin_data(d) {
                    continue;
                }
            }
            // Read `hangups` before looking at the producers: a producer
            // that leaves after the look bumps it after, which ends the
            // sleep below.
            let hangups = ring.hangups();
            if self.shared.producers_gone().map_err(GetFailure::Io)? {
                // A last message may have been committed just before its
                // producer left: look once more.
                return match ring.try_get(mode.lock_deadline(), |rec| body.take().map(|f| f(rec))) {
                    Ok(Some(r)) => Ok(r),
                    Ok(None) => Err(GetFailure::Io(io::Error::other(
                        "queue callback already used",
                    ))),
                    Err(GetFail::Empty) => Err(GetFailure::Disconnected),
                    Err(GetFail::LockTimeout) => Err(GetFailure::Timeout),
                    Err(GetFail::Io(e)) => Err(GetFailure::Io(e)),
                };
            }
            match mode {
                Mode::NoWait => return Err(GetFailure::Empty),
                Mode::Wait(d) => {
                    // Wake at least once a slice to look at the producers
                    // again (one killed bumps nothing).
                    let until = d.min(Deadline::after(SLICE));
                    if !ring.sleep_data(until, hangups) && d.expired() {
                        return Err(GetFailure::Timeout);
                    }
                }
            }
        }
    }

    /// Puts raw bytes as one message, without encoding; waits while the
    /// queue is full. Read them back with the `get_bytes` family.
    pub fn put_bytes(&self, data: &[u8]) -> Result<(), PutError<()>> {
        self.put_raw(Mode::BLOCK, |w| bytes_into(w, data))
            .map_err(|f| PutError::failed((), f))
    }

    /// Like [`put_bytes`](Self::put_bytes), waiting at most `timeout` for
    /// room.
    pub fn put_bytes_timeout(
        &self,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<()>> {
        self.put_raw(Mode::timeout(timeout), |w| bytes_into(w, data))
            .map_err(|f| PutTimeoutError::failed((), f))
    }

    /// Like [`put_bytes`](Self::put_bytes), failing with `Full` instead of
    /// waiting.
    pub fn put_bytes_nowait(&self, data: &[u8]) -> Result<(), TryPutError<()>> {
        self.put_raw(Mode::NoWait, |w| bytes_into(w, data))
            .map_err(|f| TryPutError::failed((), f))
    }

    /// Takes the oldest message as raw bytes, waiting for one.
    pub fn get_bytes(&self) -> Result<Vec<u8>, GetError> {
        self.get_raw(Mode::BLOCK, record_to_vec)
            .map_err(GetError::failed)?
            .map_err(GetError::Io)
    }

    /// Like [`get_bytes`](Self::get_bytes), waiting at most `timeout`.
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetTimeoutError> {
        self.get_raw(Mode::timeout(timeout), record_to_vec)
            .map_err(GetTimeoutError::failed)?
            .map_err(GetTimeoutError::Io)
    }

    /// Like [`get_bytes`](Self::get_bytes), failing with `Empty` instead of
    /// waiting for a message.
    pub fn get_bytes_nowait(&self) -> Result<Vec<u8>, TryGetError> {
        self.get_raw(Mode::NoWait, record_to_vec)
            .map_err(TryGetError::failed)?
            .map_err(TryGetError::Io)
    }

    /// Takes the oldest message into `buf` (replacing its contents, reusing
    /// its allocation) and returns its length; waits at most `timeout`
    /// (`None`: as long as it takes).
    pub fn get_bytes_into(
        &self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<usize, GetTimeoutError> {
        let mode = timeout.map_or(Mode::BLOCK, Mode::timeout);
        self.get_raw(mode, |rec| {
            buf.clear();
            rec.copy_to(buf).map(|_| buf.len())
        })
        .map_err(GetTimeoutError::failed)?
        .map_err(GetTimeoutError::Io)
    }

    /// Takes the oldest message and lets `f` read it in place, in shared
    /// memory, without a copy when it lies in one segment. The message is
    /// consumed when `f` returns: if `f` panics, or the process dies
    /// before, the message stays queued for the next `get`. Waits at most
    /// `timeout` (`None`: as long as it takes) for a message.
    ///
    /// Other consumers wait while `f` runs, so keep it short; `f` must not
    /// get from the same queue (that fails with an `EDEADLK` error).
    ///
    /// ```
    /// let q = multiproc::Queue::<()>::new()?;
    /// q.put_bytes(b"in place")?;
    /// let n = q.get_bytes_with(None, |bytes| bytes.len())?;
    /// assert_eq!(n, 8);
    /// assert!(q.empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_bytes_with<R>(
        &self,
        timeout: Option<Duration>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, GetTimeoutError> {
        let mode = timeout.map_or(Mode::BLOCK, Mode::timeout);
        self.get_raw(mode, |rec| match rec.contiguous() {
            Some(bytes) => Ok(f(bytes)),
            None => {
                let mut v = Vec::new();
                rec.copy_to(&mut v).map(|_| f(&v))
            }
        })
        .map_err(GetTimeoutError::failed)?
        .map_err(GetTimeoutError::Io)
    }
}

fn bytes_into(w: &mut Writer<'_>, data: &[u8]) -> Result<(), String> {
    if w.write(data) {
        Ok(())
    } else {
        Err("out of room".into())
    }
}

fn record_to_vec(rec: &Record<'_>) -> io::Result<Vec<u8>> {
    let mut v = Vec::with_capacity(rec.len());
    rec.copy_to(&mut v)?;
    Ok(v)
}

/// The put side needs only `T: Serialize`.
impl<T: Serialize> Queue<T> {
    fn encode_into(value: &T) -> impl FnMut(&mut Writer<'_>) -> Result<(), String> + '_ {
        move |w| codec::encode_into(value, |piece| w.write(piece))
    }

    /// Puts `value` at the back of the queue, waiting while the queue is
    /// full (only a queue with a `maxsize`, or one whose storage is
    /// exhausted, is ever full). The value is handed back on error.
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        match self.put_raw(Mode::BLOCK, Self::encode_into(&value)) {
            Ok(()) => Ok(()),
            Err(f) => Err(PutError::failed(value, f)),
        }
    }

    /// Like [`put`](Self::put), waiting at most `timeout` for room.
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        match self.put_raw(Mode::timeout(timeout), Self::encode_into(&value)) {
            Ok(()) => Ok(()),
            Err(f) => Err(PutTimeoutError::failed(value, f)),
        }
    }

    /// Like [`put`](Self::put), but hands the value back in
    /// [`TryPutError::Full`] instead of waiting.
    pub fn put_nowait(&self, value: T) -> Result<(), TryPutError<T>> {
        match self.put_raw(Mode::NoWait, Self::encode_into(&value)) {
            Ok(()) => Ok(()),
            Err(f) => Err(TryPutError::failed(value, f)),
        }
    }
}

/// The get side needs only `T: DeserializeOwned`.
impl<T: DeserializeOwned> Queue<T> {
    /// Takes the message at the front of the queue, waiting for one.
    ///
    /// Fails with [`GetError::Disconnected`] when the queue is empty and no
    /// producer handle is left anywhere (see
    /// [Producers](Self#producers-close-and-the-end-of-the-messages)).
    pub fn get(&self) -> Result<T, GetError> {
        finish_get(self.get_raw(Mode::BLOCK, decode_record::<T>))
    }

    /// Like [`get`](Self::get), waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        finish_get(self.get_raw(Mode::timeout(timeout), decode_record::<T>))
    }

    /// Like [`get`](Self::get), failing with [`TryGetError::Empty`] instead
    /// of waiting for a message. (It may still wait briefly for another
    /// consumer's `get` in progress.)
    pub fn get_nowait(&self) -> Result<T, TryGetError> {
        finish_get(self.get_raw(Mode::NoWait, decode_record::<T>))
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The wire form of a queue handle passed to another process: the memfd
/// travels out of band; the geometry is read back from the segment itself.
///
/// `watch` and `writer` are the ends of the hang-up socket (see
/// [`Shared`]); `writer` travels only with a producer handle, and makes
/// the received handle a producer. A handle in flight keeps its `writer`
/// descriptor open (the kernel holds descriptors in transit), so the queue
/// stays connected until the receiver has it, or dies.
#[derive(Serialize, Deserialize)]
struct Wire {
    fd: SharedFd,
    watch: SharedFd,
    writer: Option<SharedFd>,
}

/// A `Queue` can be sent to another process (as a `Process` argument or
/// inside a message over a Unix-domain connection); the receiver maps the
/// same shared memory.
impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let writer = if self.producer.load(Ordering::Relaxed) {
            // `None` only in a forked child's copy of a parent's handle.
            self.shared
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        } else {
            None
        };
        Wire {
            fd: self.ring().fd().clone(),
            watch: self.shared.watch.clone(),
            writer,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let ring = Ring::attach(w.fd).map_err(serde::de::Error::custom)?;
        let producer = w.writer.is_some();
        Ok(Queue {
            shared: Shared::new(ring, w.watch, w.writer),
            producer: AtomicBool::new(producer),
            _t: PhantomData,
        })
    }
}
