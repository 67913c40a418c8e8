//! [`Channel`] and its typed ends [`Reader`] and [`Writer`]: one public
//! handle per end over a private transport flavor.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::chan::{self, Chan, Geometry, fast};
use super::error::ChannelError;
use super::light;
use super::memory::Memory;
use super::spill::{self, Outgoing};
use crate::codec::{self, SharedFd};
use crate::macros::setters;
use crate::sys;
use crate::wait::Deadline;

/// Default largest encoded message: 512 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 512 * 1024 * 1024;
/// Default largest encoded message carried inside the channel's own memory
/// (larger ones travel through a shared-memory segment of their own): 64 KiB.
pub const DEFAULT_SLOT_SIZE: usize = 64 * 1024;
/// Default number of parties that can wait on one channel at once.
pub const DEFAULT_WAITERS: usize = 64;

/// The transport behind an end. Both flavors run the protocol of
/// `chan.rs`; they differ in where its memory lives and so in who can reach
/// it. A network flavor would be a third variant.
#[derive(Clone)]
pub(crate) enum Flavor {
    /// Private heap memory: threads of this process only.
    Threads(Arc<Chan>),
    /// A shared memfd: threads, and OS processes the end is passed to.
    Processes(Arc<Chan>),
}

impl Flavor {
    pub(crate) fn chan(&self) -> &Arc<Chan> {
        match self {
            Flavor::Threads(c) | Flavor::Processes(c) => c,
        }
    }
}

/// Builds a [`Channel`] with non-default settings.
///
/// ```
/// use multiproc::csp::Channel;
/// let ch: Channel<Vec<u8>> = Channel::builder()
///     .buffer(16)
///     .slot_size(4096)
///     .max_message(1 << 30)
///     .build()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it builds"]
pub struct ChannelBuilder {
    capacity: usize,
    max_message: usize,
    slot_size: usize,
    waiters: usize,
    threads_only: bool,
}

impl ChannelBuilder {
    setters! {
        /// Buffers up to `n` messages (0, the default: rendezvous, a write
        /// completes when a reader has taken the value).
        buffer(n: usize) => capacity = n;

        /// The largest encoded message the channel carries (default
        /// [`DEFAULT_MAX_MESSAGE`]); a larger one is refused with
        /// [`ChannelError::TooLarge`], and a reader never accepts more.
        max_message(bytes: usize) => max_message = bytes;

        /// The largest encoded message carried inside the channel's own memory
        /// (default [`DEFAULT_SLOT_SIZE`]). Each waiting party and each buffer
        /// slot reserves this much (only touched pages cost anything); a larger
        /// message travels through a named shared-memory segment of its own
        /// (`/dev/shm/multiproc-csp-…`), created by the writer and unlinked by
        /// the reader, which costs a few system calls more. The slot then
        /// carries the segment's name (about 80 bytes): below that, larger
        /// messages cannot spill and a write of one fails with
        /// [`ChannelError::TooLarge`].
        slot_size(bytes: usize) => slot_size = bytes;

        /// How many parties (blocked readers and writers, alternations) can
        /// wait on the channel at once (default [`DEFAULT_WAITERS`]); more wait
        /// for a free place.
        waiters(n: usize) => waiters = n;
    }

    /// Keeps the channel in private memory: a little cheaper to create and
    /// uses no file descriptor, but its ends cannot be passed to another
    /// process (encoding one fails).
    pub fn threads_only(mut self) -> Self {
        self.threads_only = true;
        self
    }

    /// Creates the channel.
    pub fn build<T>(self) -> io::Result<Channel<T>> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        let geo = Geometry {
            capacity: u32::try_from(self.capacity).map_err(|_| bad("buffer too large"))?,
            nrecords: u32::try_from(self.waiters.max(2)).map_err(|_| bad("too many waiters"))?,
            slot: u32::try_from(self.slot_size.max(32)).map_err(|_| bad("slot_size too large"))?,
            max_message: self.max_message as u64,
            private: self.threads_only,
        };
        if geo.size() == usize::MAX || geo.size() > isize::MAX as usize {
            return Err(bad("channel too large (buffer × slot_size)"));
        }
        let flavor = if self.threads_only {
            Flavor::Threads(Arc::new(Chan::create(Memory::heap(geo.size()), geo)))
        } else {
            Flavor::Processes(Arc::new(Chan::create(Memory::shared(geo.size())?, geo)))
        };
        Ok(Channel {
            flavor,
            _t: PhantomData,
        })
    }
}

/// A CSP channel carrying values of type `T` between any number of
/// readers and writers: threads, or OS processes its ends are passed to.
///
/// Rendezvous by default: a write completes when a reader has taken the
/// value. [`buffered`](Self::buffered) channels hold up to `n` values.
///
/// ```
/// use multiproc::csp::Channel;
///
/// let ch = Channel::<String>::new()?;
/// let (r, w) = (ch.reader(), ch.writer());
/// let t = std::thread::spawn(move || w.write(&"hello".to_string()));
/// assert_eq!(r.read()?, "hello");
/// t.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Channel<T> {
    flavor: Flavor,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Channel<T> {
    /// A rendezvous channel that OS processes can share.
    pub fn new() -> io::Result<Self> {
        Channel::builder().build()
    }

    /// A channel buffering up to `n` values.
    pub fn buffered(n: usize) -> io::Result<Self> {
        Channel::builder().buffer(n).build()
    }

    /// A new reader end (PyCSP's `+channel` / `channel.reader()`).
    pub fn reader(&self) -> Reader<T> {
        Reader {
            end: End::join(self.flavor.clone(), chan::READ),
            _t: PhantomData,
        }
    }

    /// A new writer end (PyCSP's `-channel` / `channel.writer()`).
    pub fn writer(&self) -> Writer<T> {
        Writer {
            end: End::join(self.flavor.clone(), chan::WRITE),
            _t: PhantomData,
        }
    }

    /// Poisons the channel: every blocked and later operation on any end
    /// fails with [`ChannelError::Poisoned`].
    pub fn poison(&self) {
        self.flavor.chan().poison();
    }

    /// Whether it is poisoned.
    pub fn is_poisoned(&self) -> bool {
        self.flavor.chan().is_poisoned()
    }

    /// Whether it is retired.
    pub fn is_retired(&self) -> bool {
        self.flavor.chan().is_retired()
    }

    /// A dump of the channel's shared words, for diagnosing tests. Not
    /// part of the API.
    #[doc(hidden)]
    pub fn debug_state(&self) -> String {
        self.flavor.chan().debug_state()
    }
}

impl Channel<()> {
    /// Settings beyond the defaults; the message type is chosen by
    /// [`ChannelBuilder::build`].
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder {
            capacity: 0,
            max_message: DEFAULT_MAX_MESSAGE,
            slot_size: DEFAULT_SLOT_SIZE,
            waiters: DEFAULT_WAITERS,
            threads_only: false,
        }
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.flavor.chan().id())
            .finish()
    }
}

/// One counted end, typed by the caller.
pub(crate) struct End {
    flavor: Flavor,
    dir: u32,
    /// The process that counted this end. A copy inherited by a forked
    /// child (which may drop the parent's objects it copied) is not the
    /// child's end and must not retire anything.
    pid: i32,
}

impl End {
    fn join(flavor: Flavor, dir: u32) -> End {
        flavor.chan().add_end(dir);
        End {
            flavor,
            dir,
            pid: sys::process::getpid(),
        }
    }

    pub(crate) fn chan(&self) -> &Arc<Chan> {
        self.flavor.chan()
    }
}

impl Clone for End {
    fn clone(&self) -> End {
        End::join(self.flavor.clone(), self.dir)
    }
}

impl Drop for End {
    fn drop(&mut self) {
        if sys::process::getpid() == self.pid {
            self.flavor.chan().remove_end(self.dir);
        }
    }
}

pub(crate) use super::chan::op_error;

/// Encodes a message for `chan`, checking its size and that it carries no
/// descriptors; spills it to a segment of its own if it exceeds the slot.
#[inline(never)] // keeps the serializer's state out of a writer's parked frame
pub(crate) fn encode<T: Serialize + ?Sized>(
    chan: &Chan,
    value: &T,
) -> Result<Outgoing, ChannelError> {
    let enc = codec::encode(value, 0)?;
    if !enc.fds.is_empty() {
        return Err(ChannelError::HandlesNotSupported);
    }
    let len = enc.bytes.len();
    if len as u64 > chan.max_message() {
        return Err(ChannelError::TooLarge {
            len,
            max: chan.max_message() as usize,
        });
    }
    if len <= chan.slot() {
        return Ok(Outgoing::inline(enc.bytes));
    }
    chan.mark_spilled();
    let out = Outgoing::spill(&enc.bytes, &chan.spill_tag()).map_err(|e| {
        ChannelError::Codec(crate::error::CodecError::Encode(format!(
            "cannot spill a message of {len} bytes to shared memory: {e}"
        )))
    })?;
    // The descriptor naming the segment must itself fit the slot (a slot
    // set below it cannot carry spilled messages): the segment goes with
    // `out`.
    if out.bytes.len() > chan.slot() {
        return Err(ChannelError::TooLarge {
            len,
            max: chan.slot(),
        });
    }
    Ok(out)
}

/// Decodes a message received from `chan` (fetching it from its segment if
/// it was spilled).
#[inline(never)] // keeps the deserializer's state out of a reader's parked frame
pub(crate) fn decode<T: DeserializeOwned>(chan: &Chan, bytes: Vec<u8>) -> Result<T, ChannelError> {
    let bytes = spill::take(bytes, chan.max_message())
        .map_err(|e| ChannelError::Codec(crate::error::CodecError::Decode(e)))?;
    Ok(codec::decode(&bytes, &mut VecDeque::new())?)
}

/// The reading end of a [`Channel`]. Clone it for more readers; dropping
/// (or [`retire`](Self::retire)) retires this end.
pub struct Reader<T> {
    pub(crate) end: End,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Reader<T> {
    /// Takes the next value, waiting for a writer.
    pub fn read(&self) -> Result<T, ChannelError> {
        self.read_until(Deadline::NEVER)
    }

    /// Like [`read`](Self::read), giving up with
    /// [`ChannelError::Timeout`] after `timeout` (nothing is taken then).
    pub fn read_timeout(&self, timeout: Duration) -> Result<T, ChannelError> {
        self.read_until(Deadline::after(timeout))
    }

    /// The fast path, else the general one.
    #[inline(always)] // `read` stays one function on the hot path
    fn read_until(&self, deadline: Deadline) -> Result<T, ChannelError> {
        let chan = self.end.chan();
        let deadline = deadline.instant();
        match fast::read(chan, deadline) {
            fast::Path::Done(r) => r,
            fast::Path::General(mig) => read_general(chan, deadline, mig),
        }
    }
}

/// A read on the general path (a frame of its own: the caller's stays
/// small, and a lightweight process parked on the fast path keeps only
/// the caller's).
#[inline(never)]
fn read_general<T: DeserializeOwned>(
    chan: &Chan,
    deadline: Option<std::time::Instant>,
    mig: fast::Migration<'_>,
) -> Result<T, ChannelError> {
    decode(chan, chan.read_migrating(deadline, mig).map_err(op_error)?)
}

/// The writing end of a [`Channel`]. Clone it for more writers; dropping
/// (or [`retire`](Self::retire)) retires this end.
pub struct Writer<T> {
    pub(crate) end: End,
    _t: PhantomData<fn(T)>,
}

impl<T: Serialize> Writer<T> {
    /// Writes a value, waiting until a reader has taken it (or, buffered,
    /// until it is in the buffer). What happens to it when that reader is
    /// killed is described in the [module docs](super#failure-a-party-killed-inside-a-channel).
    pub fn write(&self, value: &T) -> Result<(), ChannelError> {
        self.write_until(value, Deadline::NEVER)
    }

    /// Like [`write`](Self::write), giving up with
    /// [`ChannelError::Timeout`] after `timeout` (nothing was written then).
    pub fn write_timeout(&self, value: &T, timeout: Duration) -> Result<(), ChannelError> {
        self.write_until(value, Deadline::after(timeout))
    }

    /// The fast path, else the general one.
    #[inline(always)] // `write` stays one function on the hot path
    fn write_until(&self, value: &T, deadline: Deadline) -> Result<(), ChannelError> {
        let chan = self.end.chan();
        let deadline = deadline.instant();
        match fast::write(chan, value, deadline) {
            fast::Path::Done(r) => r,
            fast::Path::General(mig) => write_general(chan, value, deadline, mig),
        }
    }
}

/// A write on the general path (a frame of its own, as for
/// [`read_general`]).
#[inline(never)]
fn write_general<T: Serialize>(
    chan: &Chan,
    value: &T,
    deadline: Option<std::time::Instant>,
    mig: fast::Migration<'_>,
) -> Result<(), ChannelError> {
    let out = encode(chan, value)?;
    chan.write_migrating(&out.bytes, deadline, mig)
        .map_err(op_error)?;
    out.delivered();
    Ok(())
}

/// The methods a [`Reader`] and a [`Writer`] share: both are an [`End`]
/// of a channel, seen from one side.
macro_rules! end_methods {
    ($end:ident, $dir:expr, $what:literal) => {
        impl<T> $end<T> {
            /// The part of the names of the channel's spill segments that names
            /// the channel (tests look for leftovers). Not part of the API.
            #[doc(hidden)]
            pub fn spill_tag(&self) -> String {
                self.end.chan().spill_tag()
            }

            /// How many readers and writers wait on the channel right now (a hint
            /// for tests that must order parties). Not part of the API.
            #[doc(hidden)]
            pub fn waiting(&self) -> (usize, usize) {
                let c = self.end.chan();
                (c.waiting(chan::READ), c.waiting(chan::WRITE))
            }

            /// Poisons the channel (see [`Channel::poison`]).
            pub fn poison(&self) {
                self.end.chan().poison();
            }

            /// Whether the channel is poisoned.
            pub fn is_poisoned(&self) -> bool {
                self.end.chan().is_poisoned()
            }
        }

        impl<T> Clone for $end<T> {
            fn clone(&self) -> Self {
                $end {
                    end: self.end.clone(),
                    _t: PhantomData,
                }
            }
        }

        impl<T> fmt::Debug for $end<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($end))
                    .field("channel", &self.end.chan().id())
                    .finish()
            }
        }

        #[doc = concat!("A ", $what, " can be a [`Process`](crate::Process) argument (or travel \
            in a message over a Unix-domain [`Connection`](crate::Connection)); a \
            `threads_only` one cannot.")]
        impl<T> Serialize for $end<T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.end.serialize(s)
            }
        }

        impl<'de, T> Deserialize<'de> for $end<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let end = End::deserialize(d)?;
                if end.dir != $dir {
                    return Err(serde::de::Error::custom(concat!(
                        "expected a ",
                        $what,
                        " end"
                    )));
                }
                Ok($end {
                    end,
                    _t: PhantomData,
                })
            }
        }
    };
}

end_methods!(Reader, chan::READ, "reader");
end_methods!(Writer, chan::WRITE, "writer");

impl<T> Reader<T> {
    /// Retires this end at once. When every reader has retired the
    /// channel is retired and writers get [`ChannelError::Retired`].
    /// Dropping the end does the same, except inside a CSP process that
    /// was given it as an argument, where a dropped end retires when the
    /// process ends (after it propagated poison, if it ended by poison).
    pub fn retire(self) {
        Held::release_one(self.end.chan(), chan::READ);
    }
}

impl<T> Writer<T> {
    /// Retires this end at once. When every writer has retired, the
    /// channel is retired: readers get what is buffered, then
    /// [`ChannelError::Retired`]. Dropping the end does the same, except
    /// inside a CSP process that was given it as an argument, where a
    /// dropped end retires when the process ends.
    pub fn retire(self) {
        Held::release_one(self.end.chan(), chan::WRITE);
    }
}

// ---- passing ends to other processes ---------------------------------------

thread_local! {
    /// While set, serialising an end records its channel and side here
    /// instead of producing a wire form (used to find the ends a process
    /// holds).
    static COLLECT: RefCell<Option<Vec<EndRef>>> = const { RefCell::new(None) };
}

/// A channel and a side, uncounted.
pub(crate) type EndRef = (Arc<Chan>, u32);

/// The channels (and sides) of every end inside `value` (any serde type).
pub(crate) fn channels_in<A: Serialize + ?Sized>(value: &A) -> Vec<EndRef> {
    let previous = COLLECT.with(|c| c.borrow_mut().replace(Vec::new()));
    let _ = codec::encode(value, 0);
    COLLECT
        .with(|c| std::mem::replace(&mut *c.borrow_mut(), previous))
        .unwrap_or_default()
}

/// Extra counted ends a running process holds beside its own, so that its
/// ends, dropped when its body returns, cannot retire a channel before the
/// process has propagated poison to it. An explicit `retire()` inside the
/// body releases the matching extra count at once.
///
/// The counts themselves live in the thread's (or lightweight process's)
/// list (`light::with_held`), and only there: a million lightweight processes keep one
/// list each, sized exactly.
pub(crate) struct Held {
    _counted: (),
}

impl Held {
    /// Counts one more end for each of `ends`, on behalf of the process
    /// running on this thread.
    pub fn new(ends: &[(Arc<Chan>, u32)]) -> Held {
        for (c, dir) in ends {
            c.add_end(*dir);
        }
        light::with_held(|h| {
            h.reserve_exact(ends.len());
            h.extend(ends.iter().map(|(c, d)| {
                let c: Arc<dyn Any + Send + Sync> = c.clone();
                (c, *d, false)
            }))
        });
        Held { _counted: () }
    }

    /// Poisons every channel (those released early too).
    pub fn poison(&self) {
        let chans: Vec<Arc<dyn Any + Send + Sync>> =
            light::with_held(|h| h.iter().map(|(c, _, _)| c.clone()).collect());
        for c in &chans {
            if let Some(c) = c.downcast_ref::<Chan>() {
                c.poison();
            }
        }
    }

    /// Releases the extra count for `chan`/`dir`, if this thread's process
    /// holds one not yet released.
    fn release_one(chan: &Arc<Chan>, dir: u32) {
        let found = light::with_held(|h| {
            h.iter_mut()
                .find(|(c, d, released)| {
                    !*released && *d == dir && std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(chan))
                })
                .map(|e| e.2 = true)
                .is_some()
        });
        if found {
            chan.remove_end(dir);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let entries = light::with_held(std::mem::take);
        for (c, dir, released) in entries {
            if let (false, Some(c)) = (released, c.downcast_ref::<Chan>()) {
                c.remove_end(dir);
            }
        }
    }
}

/// The wire form of an end: the segment travels out of band.
#[derive(Serialize, Deserialize)]
struct Wire {
    fd: SharedFd,
    dir: u32,
    /// The sending process, which counted the end in flight.
    from_pid: i32,
    from_start: u64,
}

impl Serialize for End {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let collected = COLLECT.with(|c| {
            c.borrow_mut()
                .as_mut()
                .map(|v| v.push((self.flavor.chan().clone(), self.dir)))
                .is_some()
        });
        if collected {
            return s.serialize_unit();
        }
        // Another process may use the channel from now on.
        self.flavor.chan().fast().promote();
        let Flavor::Processes(chan) = &self.flavor else {
            return Err(serde::ser::Error::custom(
                "this channel was built threads_only and cannot be passed to another process",
            ));
        };
        let Some(fd) = chan.memory().fd() else {
            return Err(serde::ser::Error::custom("channel without a segment"));
        };
        let me = sys::liveness::me();
        let r = Wire {
            fd: fd.clone(),
            dir: self.dir,
            from_pid: me.pid,
            from_start: me.start,
        }
        .serialize(s);
        if r.is_ok() {
            // The end in flight counts as an end of its side until the
            // receiver adopts it, so that dropping the sender's copy
            // meanwhile cannot retire the channel.
            chan.add_end(self.dir);
        }
        r
    }
}

impl<'de> Deserialize<'de> for End {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        if w.dir != chan::READ && w.dir != chan::WRITE {
            return Err(serde::de::Error::custom("bad channel end direction"));
        }
        let mem = Memory::open(w.fd).map_err(serde::de::Error::custom)?;
        let chan = Chan::open(mem).map_err(serde::de::Error::custom)?;
        // Adopts the count the sender added for the end in flight.
        chan.adopt_end(
            w.dir,
            sys::liveness::ProcessId {
                pid: w.from_pid,
                start: w.from_start,
            },
        );
        Ok(End {
            flavor: Flavor::Processes(Arc::new(chan)),
            dir: w.dir,
            pid: sys::process::getpid(),
        })
    }
}
