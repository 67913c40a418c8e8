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
//! case per handle type.
//!
//! Encoded layout: `[n: u8][postcard bytes]`, where `n` is the number of
//! descriptors that travel with the message (at most [`MAX_FDS`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CodecError;

mod explain;
pub mod pickle;
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
}

/// Encodes `value`, leaving `room` zero bytes at the front for a header.
pub fn encode<T: Serialize + ?Sized>(value: &T, room: usize) -> Result<Encoded, CodecError> {
    let mut bytes = Vec::with_capacity(room + 64);
    bytes.resize(room + 1, 0);
    let previous = ENCODING.with(|e| e.borrow_mut().replace(Vec::new()));
    let result = postcard::to_extend(value, bytes).map_err(|e| encode_error(value, e));
    let fds = ENCODING
        .with(|e| std::mem::replace(&mut *e.borrow_mut(), previous))
        .unwrap_or_default();
    let mut bytes = result.map_err(CodecError::Encode)?;
    if fds.len() > MAX_FDS {
        return Err(CodecError::TooManyHandles(fds.len()));
    }
    bytes[room] = fds.len() as u8;
    Ok(Encoded { bytes, fds })
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
    let (value, rest) = decode_payload(payload, fds)?;
    if !rest.is_empty() {
        return Err(CodecError::Decode(format!(
            "{} bytes left over after the value",
            rest.len()
        )));
    }
    Ok(value)
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
pub fn decode_payload<T: DeserializeOwned>(
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(T, &[u8]), CodecError> {
    let table: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let previous = DECODING.with(|d| d.borrow_mut().replace(table));
    let result = postcard::take_from_bytes::<T>(payload);
    DECODING.with(|d| *d.borrow_mut() = previous);
    result.map_err(|e| CodecError::Decode(e.to_string()))
}

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
