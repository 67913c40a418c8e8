//! [`Queue`]: the multi-producer, multi-consumer FIFO shared by threads and
//! processes (Python's `multiprocessing.Queue`), over the ring.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::builder::QueueBuilder;
use super::error::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, TryGetError, TryPutError,
};
use super::ring::{GetFail, PutFail, Record, Ring, Writer};
use crate::codec::{self, SharedFd};
use crate::error::CodecError;
use crate::wait::Deadline;

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

/// A failed put, before the value is attached.
enum PutFailure {
    Full,
    Timeout,
    Closed,
    TooLarge,
    Encode(CodecError),
    Io(io::Error),
}

/// A failed get.
enum GetFailure {
    Empty,
    Timeout,
    Closed,
    Io(io::Error),
}

/// What one process holds for a queue: the mapped ring and this
/// process's `close` flag, shared by every clone of the handle.
pub(super) struct Shared {
    pub(super) ring: Ring,
    closed: AtomicBool,
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
/// Values are encoded with the crate's codec (postcard) straight into
/// shared memory. Values holding handles (connections, queues) cannot be
/// put: they fail with [`PutError::Encode`]; pass those as process
/// arguments or over a `Connection`.
pub struct Queue<T> {
    pub(super) shared: Arc<Shared>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            shared: self.shared.clone(),
            _t: PhantomData,
        }
    }
}

/// The serialiser's output: the ring itself.
struct RingFlavor<'w, 'r>(&'w mut Writer<'r>);

impl postcard::ser_flavors::Flavor for RingFlavor<'_, '_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.0.write(data) {
            Ok(())
        } else {
            Err(postcard::Error::SerializeBufferFull)
        }
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// Where a message that straddles segments is gathered for decoding.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Scratch buffers above this size are not kept between gets.
const SCRATCH_KEEP: usize = 1 << 20;

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(CodecError::Decode(format!(
            "{} bytes left over after the value",
            rest.len()
        ))),
        Err(e) => Err(CodecError::Decode(e.to_string())),
    }
}

fn decode_record<T: DeserializeOwned>(rec: &Record<'_>) -> Result<T, GetFailureOr> {
    if let Some(bytes) = rec.contiguous() {
        return decode(bytes).map_err(GetFailureOr::Decode);
    }
    SCRATCH.with(|s| {
        let mut buf = s.borrow_mut();
        buf.clear();
        let r = rec
            .copy_to(&mut buf)
            .map_err(GetFailureOr::Io)
            .and_then(|_| decode(&buf).map_err(GetFailureOr::Decode));
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

impl<T> Queue<T> {
    pub(super) fn from_ring(ring: Ring) -> Self {
        Queue {
            shared: Arc::new(Shared {
                ring,
                closed: AtomicBool::new(false),
            }),
            _t: PhantomData,
        }
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

    /// Closes this process's handle (and its clones): later `put`s and
    /// `get`s through it fail with `Closed`. Other processes are not
    /// affected, and queued messages stay. Python's `close`; there is no
    /// feeder thread to flush, so nothing else happens.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
    }

    /// Whether [`close`](Self::close) was called on this handle.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    fn put_raw(
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
                Mode::Wait(d) => match d.instant() {
                    None => {
                        ring.wait_get(seen, None);
                    }
                    Some(d) => {
                        if !ring.wait_get(seen, Some(d)) {
                            return Err(PutFailure::Timeout);
                        }
                    }
                },
            }
        }
    }

    fn get_raw<R>(&self, mode: Mode, body: impl FnOnce(&Record<'_>) -> R) -> Result<R, GetFailure> {
        let ring = self.ring();
        let mut body = Some(body);
        loop {
            if self.is_closed() {
                return Err(GetFailure::Closed);
            }
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
            match mode {
                Mode::NoWait => return Err(GetFailure::Empty),
                Mode::Wait(d) => match d.instant() {
                    None => {
                        ring.wait_data(None);
                    }
                    Some(d) => {
                        if !ring.wait_data(Some(d)) {
                            return Err(GetFailure::Timeout);
                        }
                    }
                },
            }
        }
    }

    /// Puts raw bytes as one message, without encoding; waits while the
    /// queue is full. Read them back with the `get_bytes` family.
    pub fn put_bytes(&self, data: &[u8]) -> Result<(), PutError<()>> {
        self.put_raw(Mode::BLOCK, |w| bytes_into(w, data))
            .map_err(|f| put_error((), f))
    }

    /// Like [`put_bytes`](Self::put_bytes), waiting at most `timeout` for
    /// room.
    pub fn put_bytes_timeout(
        &self,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<()>> {
        self.put_raw(Mode::timeout(timeout), |w| bytes_into(w, data))
            .map_err(|f| put_timeout_error((), f))
    }

    /// Like [`put_bytes`](Self::put_bytes), failing with `Full` instead of
    /// waiting.
    pub fn put_bytes_nowait(&self, data: &[u8]) -> Result<(), TryPutError<()>> {
        self.put_raw(Mode::NoWait, |w| bytes_into(w, data))
            .map_err(|f| try_put_error((), f))
    }

    /// Takes the oldest message as raw bytes, waiting for one.
    pub fn get_bytes(&self) -> Result<Vec<u8>, GetError> {
        self.get_raw(Mode::BLOCK, record_to_vec)
            .map_err(get_error)?
            .map_err(GetError::Io)
    }

    /// Like [`get_bytes`](Self::get_bytes), waiting at most `timeout`.
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetTimeoutError> {
        self.get_raw(Mode::timeout(timeout), record_to_vec)
            .map_err(get_timeout_error)?
            .map_err(GetTimeoutError::Io)
    }

    /// Like [`get_bytes`](Self::get_bytes), failing with `Empty` instead of
    /// waiting for a message.
    pub fn get_bytes_nowait(&self) -> Result<Vec<u8>, TryGetError> {
        self.get_raw(Mode::NoWait, record_to_vec)
            .map_err(try_get_error)?
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
        .map_err(get_timeout_error)?
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
        .map_err(get_timeout_error)?
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

fn put_error<T>(v: T, f: PutFailure) -> PutError<T> {
    match f {
        // Blocking puts only fail to lock or wait on closed/timeout paths
        // they do not take; keep the value in an error all the same.
        PutFailure::Full | PutFailure::Timeout => PutError::Io(
            v,
            io::Error::new(io::ErrorKind::TimedOut, "queue wait interrupted"),
        ),
        PutFailure::Closed => PutError::Closed(v),
        PutFailure::TooLarge => PutError::TooLarge(v),
        PutFailure::Encode(e) => PutError::Encode(v, e),
        PutFailure::Io(e) => PutError::Io(v, e),
    }
}

fn try_put_error<T>(v: T, f: PutFailure) -> TryPutError<T> {
    match f {
        PutFailure::Full | PutFailure::Timeout => TryPutError::Full(v),
        PutFailure::Closed => TryPutError::Closed(v),
        PutFailure::TooLarge => TryPutError::TooLarge(v),
        PutFailure::Encode(e) => TryPutError::Encode(v, e),
        PutFailure::Io(e) => TryPutError::Io(v, e),
    }
}

fn put_timeout_error<T>(v: T, f: PutFailure) -> PutTimeoutError<T> {
    match f {
        PutFailure::Full | PutFailure::Timeout => PutTimeoutError::Timeout(v),
        PutFailure::Closed => PutTimeoutError::Closed(v),
        PutFailure::TooLarge => PutTimeoutError::TooLarge(v),
        PutFailure::Encode(e) => PutTimeoutError::Encode(v, e),
        PutFailure::Io(e) => PutTimeoutError::Io(v, e),
    }
}

fn get_error(f: GetFailure) -> GetError {
    match f {
        GetFailure::Closed => GetError::Closed,
        GetFailure::Io(e) => GetError::Io(e),
        GetFailure::Empty | GetFailure::Timeout => GetError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "queue wait interrupted",
        )),
    }
}

fn try_get_error(f: GetFailure) -> TryGetError {
    match f {
        GetFailure::Empty | GetFailure::Timeout => TryGetError::Empty,
        GetFailure::Closed => TryGetError::Closed,
        GetFailure::Io(e) => TryGetError::Io(e),
    }
}

fn get_timeout_error(f: GetFailure) -> GetTimeoutError {
    match f {
        GetFailure::Empty | GetFailure::Timeout => GetTimeoutError::Timeout,
        GetFailure::Closed => GetTimeoutError::Closed,
        GetFailure::Io(e) => GetTimeoutError::Io(e),
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
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

    fn encode_into(value: &T) -> impl FnMut(&mut Writer<'_>) -> Result<(), String> + '_ {
        move |w| {
            postcard::serialize_with_flavor(value, RingFlavor(w))
                .map_err(|e| codec::encode_error(value, e))
        }
    }

    /// Puts `value` at the back of the queue, waiting while the queue is
    /// full (only a queue with a `maxsize`, or one whose storage is
    /// exhausted, is ever full). The value is handed back on error.
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        match self.put_raw(Mode::BLOCK, Self::encode_into(&value)) {
            Ok(()) => Ok(()),
            Err(f) => Err(put_error(value, f)),
        }
    }

    /// Like [`put`](Self::put), waiting at most `timeout` for room.
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        match self.put_raw(Mode::timeout(timeout), Self::encode_into(&value)) {
            Ok(()) => Ok(()),
            Err(f) => Err(put_timeout_error(value, f)),
        }
    }

    /// Like [`put`](Self::put), but hands the value back in
    /// [`TryPutError::Full`] instead of waiting.
    pub fn put_nowait(&self, value: T) -> Result<(), TryPutError<T>> {
        match self.put_raw(Mode::NoWait, Self::encode_into(&value)) {
            Ok(()) => Ok(()),
            Err(f) => Err(try_put_error(value, f)),
        }
    }

    /// Takes the message at the front of the queue, waiting for one.
    pub fn get(&self) -> Result<T, GetError> {
        match self
            .get_raw(Mode::BLOCK, decode_record::<T>)
            .map_err(get_error)?
        {
            Ok(v) => Ok(v),
            Err(GetFailureOr::Decode(e)) => Err(GetError::Decode(e)),
            Err(GetFailureOr::Io(e)) => Err(GetError::Io(e)),
        }
    }

    /// Like [`get`](Self::get), waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        match self
            .get_raw(Mode::timeout(timeout), decode_record::<T>)
            .map_err(get_timeout_error)?
        {
            Ok(v) => Ok(v),
            Err(GetFailureOr::Decode(e)) => Err(GetTimeoutError::Decode(e)),
            Err(GetFailureOr::Io(e)) => Err(GetTimeoutError::Io(e)),
        }
    }

    /// Like [`get`](Self::get), failing with [`TryGetError::Empty`] instead
    /// of waiting for a message. (It may still wait briefly for another
    /// consumer's `get` in progress.)
    pub fn get_nowait(&self) -> Result<T, TryGetError> {
        match self
            .get_raw(Mode::NoWait, decode_record::<T>)
            .map_err(try_get_error)?
        {
            Ok(v) => Ok(v),
            Err(GetFailureOr::Decode(e)) => Err(TryGetError::Decode(e)),
            Err(GetFailureOr::Io(e)) => Err(TryGetError::Io(e)),
        }
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
#[derive(Serialize, Deserialize)]
struct Wire {
    fd: SharedFd,
}

/// A `Queue` can be sent to another process (as a `Process` argument or
/// inside a message over a Unix-domain connection); the receiver maps the
/// same shared memory.
impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            fd: self.ring().fd().clone(),
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let ring = Ring::attach(w.fd).map_err(serde::de::Error::custom)?;
        Ok(Queue::from_ring(ring))
    }
}
