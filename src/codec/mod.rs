//! The message codec: serde values as compact bytes (postcard), with any
//! file descriptors they hold carried *out of band*.
//!
//! A handle type (a [`Connection`](crate::Connection) today; queues, shared
//! memory and locks later) holds its descriptor in a [`SharedFd`]. When a
//! value is encoded, every `SharedFd` inside it is collected into
//! [`Encoded::fds`] and written as its index in that list; the transport sends
//! the descriptors beside the bytes (`SCM_RIGHTS`, or inheritance across
//! `fork`), and decoding puts them back by index. So any serde type that
//! contains handles can be a `Process` argument or a message, with no special
//! case per handle type. This side table is the model for anything a
//! message must carry beside its bytes: a new kind of handle holds a
//! `SharedFd` and needs no change to the codec or any transport.
//!
//! Encoded layout: `[n: u8][postcard bytes]`, where `n` is the number of
//! descriptors that travel with the message (at most [`MAX_FDS`]).
//!
//! This module is the only place that knows the encoding: besides whole
//! messages ([`encode`], [`decode`]) it offers the pieces other parts need
//! without touching the format themselves: a value's bytes appended to a
//! buffer (`append_to`) or written into a sink piece by piece
//! (`encode_into`, how a queue encodes straight into shared memory), a
//! bare value decoded (`decode_value`, `decode_whole`), and one message
//! made of two values in a row (`Encoded::then`), and runs of many
//! values of one type (`append_seq`, `decode_seq`), written at a fixed
//! width when they are plain numbers (see `plain`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CodecError;

mod explain;
pub mod pickle;
mod plain;
pub(crate) mod prim;
pub(crate) mod serializer;
pub use crate::sys::socket::MAX_FDS_PER_MSG as MAX_FDS;
pub(crate) use explain::encode_error;

thread_local! {
    static ENCODING: RefCell<Option<Vec<Arc<OwnedFd>>>> = const { RefCell::new(None) };
    static DECODING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// A value in its wire form: bytes plus the descriptors it refers to.
pub struct Encoded {
    /// `room` reserved bytes (for a transport header), the descriptor count,
    /// then the postcard bytes.
    pub bytes: Vec<u8>,
    /// Descriptors to send beside `bytes`, in index order.
    pub fds: Vec<Arc<OwnedFd>>,
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("bytes", &self.bytes.len())
            .field("fds", &self.fds.len())
            .finish()
    }
}

impl Encoded {
    /// The descriptors, borrowed for a `sendmsg`.
    pub fn borrowed_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.fds.iter().map(|f| f.as_fd()).collect()
    }

    /// The encoded value: the bytes after the `room` the message was
    /// encoded with and the descriptor count.
    #[inline]
    pub(crate) fn payload(&self, room: usize) -> &[u8] {
        &self.bytes[room + 1..]
    }

    /// Puts the value of `next` (encoded with no room) after this
    /// message's (encoded with `room`), with `next`'s descriptors: one
    /// message whose payload holds the two values in a row, decoded in
    /// order with [`decode_payload`] (the descriptors go to the second).
    ///
    /// Panics if this message carries descriptors of its own: `next`'s are
    /// numbered from 0.
    pub(crate) fn then(&mut self, room: usize, next: Encoded) {
        assert!(
            self.fds.is_empty(),
            "the first of two values in one message carries no descriptors"
        );
        self.bytes[room] = next.bytes[0];
        self.bytes.extend_from_slice(next.payload(0));
        self.fds = next.fds;
    }
}

/// Encodes `value`, leaving `room` zero bytes at the front for a header.
pub fn encode<T: Serialize + ?Sized>(value: &T, room: usize) -> Result<Encoded, CodecError> {
    encode_in(Vec::with_capacity(room + 64), value, room)
}

/// [`encode`] into the allocation of `bytes` (emptied first): a value that
/// fits allocates nothing.
pub(crate) fn encode_in<T: Serialize + ?Sized>(
    bytes: Vec<u8>,
    value: &T,
    room: usize,
) -> Result<Encoded, CodecError> {
    encode_with(bytes, room, |out| {
        append_to(value, out).map_err(CodecError::Encode)
    })
}

/// Encodes one message whose payload `write` appends to the bytes it is
/// given (with [`append_to`], value after value), into the allocation of
/// `bytes` (emptied first), leaving `room` zero bytes at the front for a
/// header. The descriptors of every value appended go into the message's
/// table, as with [`encode`]. For a message too long to build as one value
/// cheaply (a pool worker's reply: one value per task).
pub(crate) fn encode_with(
    mut bytes: Vec<u8>,
    room: usize,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), CodecError>,
) -> Result<Encoded, CodecError> {
    bytes.clear();
    bytes.resize(room + 1, 0);
    let previous = ENCODING.with(|e| e.borrow_mut().replace(Vec::new()));
    let result = write(&mut bytes);
    let fds = ENCODING
        .with(|e| std::mem::replace(&mut *e.borrow_mut(), previous))
        .unwrap_or_default();
    result?;
    if fds.len() > MAX_FDS {
        return Err(CodecError::TooManyHandles(fds.len()));
    }
    bytes[room] = fds.len() as u8;
    Ok(Encoded { bytes, fds })
}

/// [`append_to`] on an owned `out`, returned (for tests).
#[cfg(test)]
pub(crate) fn append_value<T: Serialize + ?Sized>(
    value: &T,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, String> {
    append_to(value, &mut out).map(|()| out)
}

/// Appends the bytes of `value` alone (no descriptor count) to `out`. Its
/// descriptors join the table of the message being encoded around it (a
/// value encoded inside [`encode`] or [`encode_with`]), if any; elsewhere
/// a value holding one fails. The error says why, in words; `out` is then
/// left as it was.
pub(crate) fn append_to<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    let len = out.len();
    postcard::serialize_with_flavor(value, VecOut(out)).map_err(|e| {
        out.truncate(len);
        encode_error(value, e)
    })
}

/// The serialiser's output for [`append_to`]: a `Vec`, with the short
/// pieces a serialiser writes most (varints, small fields) copied in line
/// rather than through a `memcpy` call each, which costs more than the
/// encoding of a small value.
struct VecOut<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecOut<'_> {
    type Output = ();

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        extend_short(self.0, data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `data` to `out`; a slice of up to 10 bytes (a varint's most) by
/// a copy of constant length, which the compiler writes in line.
#[inline(always)]
fn extend_short(out: &mut Vec<u8>, data: &[u8]) {
    macro_rules! by_length {
        ($($n:literal)*) => {
            match data.len() {
                $($n => {
                    let fixed: &[u8; $n] = data.try_into().expect("the length was matched");
                    out.extend_from_slice(fixed);
                })*
                _ => out.extend_from_slice(data),
            }
        };
    }
    by_length!(1 2 3 4 5 6 7 8 9 10)
}

/// Encodes the bytes of `value` alone (as [`append_to`] does) into
/// `sink`, piece by piece: `sink` returns `false` when it has no room, which
/// ends the encoding with an error. The error says why, in words.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    sink: impl FnMut(&[u8]) -> bool,
) -> Result<(), String> {
    postcard::serialize_with_flavor(value, Sink(sink)).map_err(|e| encode_error(value, e))
}

/// The serialiser's output for [`encode_into`].
struct Sink<F>(F);

impl<F: FnMut(&[u8]) -> bool> postcard::ser_flavors::Flavor for Sink<F> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if (self.0)(data) {
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

/// Decodes one value from the front of `bytes` (made by [`append_to`]
/// or [`encode_into`]); returns it and the bytes after it. Its descriptors
/// come from the table of the message being decoded around it, if any.
/// The error says why, in words.
// Inlined: the pool decodes one per task, and the returned `Result`
// otherwise goes through memory.
#[inline]
pub(crate) fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), String> {
    postcard::take_from_bytes::<T>(bytes).map_err(|e| e.to_string())
}

/// The value of a decoded `(value, rest)`, or an error if bytes are left
/// over after it.
fn whole<T>((value, rest): (T, &[u8])) -> Result<T, CodecError> {
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(CodecError::Decode(format!(
            "{} bytes left over after the value",
            rest.len()
        )))
    }
}

/// Decodes `bytes` holding exactly one value (as [`decode_value`], with no
/// bytes left over).
pub(crate) fn decode_whole<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    whole(decode_value(bytes).map_err(CodecError::Decode)?)
}

/// How many descriptors the encoded message `body` (without header room)
/// says it carries.
pub fn fd_count(body: &[u8]) -> usize {
    body.first().copied().unwrap_or(0) as usize
}

/// Decodes a message body produced by [`encode`] (without its header room),
/// taking the descriptors it carries from the front of `fds`.
pub fn decode<T: DeserializeOwned>(
    body: &[u8],
    fds: &mut VecDeque<OwnedFd>,
) -> Result<T, CodecError> {
    let (fds, payload) = take_fds(body, fds)?;
    whole(decode_payload(payload, fds)?)
}

/// Splits a message body into its descriptors (taken from the front of
/// `fds`) and its postcard payload.
pub fn take_fds<'a>(
    body: &'a [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> Result<(Vec<OwnedFd>, &'a [u8]), CodecError> {
    let Some((&n, payload)) = body.split_first() else {
        return Err(CodecError::Decode("empty message".into()));
    };
    let n = n as usize;
    if n > fds.len() {
        return Err(CodecError::MissingHandles {
            expected: n,
            received: fds.len(),
        });
    }
    Ok((fds.drain(..n).collect(), payload))
}

/// Decodes one value from the front of a postcard `payload`, with `fds` as
/// the descriptor table; returns the value and the bytes after it.
/// Descriptors the value does not claim are closed.
#[inline]
pub fn decode_payload<T: DeserializeOwned>(
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(T, &[u8]), CodecError> {
    decode_with(fds, || decode_value(payload)).map_err(CodecError::Decode)
}

/// Runs `decode` (which decodes values with [`decode_value`] and the like)
/// with `fds` as the descriptor table of the message being decoded.
/// Descriptors no value claims are closed.
pub(crate) fn decode_with<R>(fds: Vec<OwnedFd>, decode: impl FnOnce() -> R) -> R {
    let table: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let previous = DECODING.with(|d| d.borrow_mut().replace(table));
    let result = decode();
    DECODING.with(|d| *d.borrow_mut() = previous);
    result
}

/// Decodes `count` values written back to back (each with [`append_to`])
/// from the front of `bytes`, appending them to `out`; returns the bytes
/// after them. On an error, the values decoded before it stay in `out`.
pub(crate) fn decode_seq_into<'a, T: DeserializeOwned>(
    bytes: &'a [u8],
    count: usize,
    out: &mut Vec<T>,
) -> Result<&'a [u8], String> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    // No more room than the bytes can fill: a value takes at least a byte
    // (but `()`, which needs no room).
    out.reserve(count.min(bytes.len()));
    for _ in 0..count {
        out.push(T::deserialize(&mut de).map_err(|e| e.to_string())?);
    }
    de.finalize().map_err(|e| e.to_string())
}

/// How [`append_seq`] wrote a run of values: postcard's `Vec<T>`.
const SEQ_POSTCARD: u8 = 0;
/// …or a run of plain values (see `plain`).
const SEQ_PLAIN: u8 = 1;

/// Appends `items` to `out` as one sequence: at a fixed width per value
/// when they are plain numbers (a copy's speed, no varint per value), as
/// postcard's `Vec<T>` otherwise. `[layout: u8][values]`; read back with
/// [`decode_seq`]. Handles inside them join the table of the message
/// being encoded, as with [`append_to`]. The error says why, in words;
/// `out` is then left as it was.
pub(crate) fn append_seq<T: Serialize>(items: &[T], out: &mut Vec<u8>) -> Result<(), String> {
    out.push(SEQ_PLAIN);
    if plain::append_run(items, out) {
        return Ok(());
    }
    let at = out.len() - 1;
    out[at] = SEQ_POSTCARD;
    append_to(items, out).inspect_err(|_| out.truncate(at))
}

/// Decodes a sequence written by [`append_seq`] from the front of
/// `bytes`; returns its values and the bytes after it. Its descriptors
/// come from the table of the message being decoded around it, if any.
pub(crate) fn decode_seq<T: DeserializeOwned>(bytes: &[u8]) -> Result<(Vec<T>, &[u8]), String> {
    match bytes.split_first() {
        Some((&SEQ_PLAIN, rest)) => {
            let mut out = Vec::new();
            let (_, rest) = plain::decode_run_into(rest, &mut out)?;
            Ok((out, rest))
        }
        Some((&SEQ_POSTCARD, rest)) => decode_value(rest),
        Some((&other, _)) => Err(format!("unknown sequence layout {other}")),
        None => Err("a sequence is missing".into()),
    }
}

/// The width and the values' bytes of a sequence written by
/// [`append_seq`] as a run of plain values (each read with
/// `decode_plain`), or `None` if it was written otherwise or is cut short
/// ([`decode_seq`] then says why).
pub(crate) fn split_plain_seq(bytes: &[u8]) -> Option<(usize, &[u8])> {
    match bytes.split_first() {
        Some((&SEQ_PLAIN, rest)) => plain::split_run(rest)
            .ok()
            .map(|(_, width, values, _)| (width, values)),
        _ => None,
    }
}

pub(crate) use plain::{append_run, decode_one as decode_plain, decode_run_into, split_run};

/// A file descriptor shared by every clone of a handle, sent out of band
/// when the handle is encoded (see the module docs).
///
/// Serialising a `SharedFd` outside [`encode`] (for example to JSON) fails:
/// a descriptor only means something when the OS carries it.
#[derive(Clone, Debug)]
pub struct SharedFd(Arc<OwnedFd>);

impl SharedFd {
    /// Wraps an owned descriptor.
    pub fn new(fd: OwnedFd) -> Self {
        SharedFd(Arc::new(fd))
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Whether no other clone holds the descriptor.
    pub(crate) fn is_unique(&self) -> bool {
        Arc::strong_count(&self.0) == 1 && Arc::weak_count(&self.0) == 0
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Why a handle holding a descriptor fails to encode outside [`encode`].
const NOT_HERE: &str = "a multiproc handle holding a file descriptor (a Connection, or a value \
     containing one) cannot be encoded here: this way carries bytes only, not descriptors (send the \
     handle over a Connection, or pass it to a Process, instead)";

impl Serialize for SharedFd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let index = ENCODING.with(|e| {
            e.borrow_mut().as_mut().map(|fds| {
                fds.push(self.0.clone());
                fds.len() - 1
            })
        });
        match index {
            Some(i) => s.serialize_u32(i as u32),
            None => Err(serde::ser::Error::custom(NOT_HERE)),
        }
    }
}

impl<'de> Deserialize<'de> for SharedFd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(d)? as usize;
        let fd = DECODING.with(|t| {
            t.borrow_mut()
                .as_mut()
                .and_then(|t| t.get_mut(index).and_then(Option::take))
        });
        match fd {
            Some(fd) => Ok(SharedFd::new(fd)),
            None => Err(serde::de::Error::custom(format!(
                "message refers to descriptor #{index}, which did not arrive with it"
            ))),
        }
    }
}
