//! The lower layer that `shm/` and `sync/` both sit on: a process-shared
//! segment, the robust mutex that may live in it (`raw_mutex.rs`, under
//! `lock_api`: a model for new primitives), a segment holding one
//! (`mutex.rs`), and the error of acquiring it (`lock_error.rs`).
//!
//! The shared memory behind every [`Value`](crate::Value),
//! [`Array`](crate::Array) and synchronization primitive: one anonymous
//! memory file (memfd, sealed against resizing, so a peer cannot make our
//! mapping fault) mapped shared, starting with a small header that names
//! what the segment holds.
//!
//! Layout: `[Header][padding to PAYLOAD][payload]`. The creator writes the
//! header once before the segment is shared; every process that attaches
//! checks it and keeps its own copy of the fields, so nothing read from the
//! header later can be changed under it.
//!
//! A segment travels to other processes as its descriptor (a
//! [`SharedFd`]); the receiving handle type checks the header's kind and
//! element type before using the memory.

#![allow(unsafe_code)]

pub(crate) mod lock_error;
pub(crate) mod mutex;
pub(crate) mod raw_mutex;

use std::io;
use std::os::fd::AsFd;

use serde::{Deserialize, Deserializer};

use crate::codec::SharedFd;
use crate::sys::shm::{self, InPlace, Mapping};

pub use lock_error::LockError;

/// Offset of the payload from the start of the segment.
pub(crate) const PAYLOAD: usize = 64;

const MAGIC: u64 = u64::from_le_bytes(*b"mpseg\0\x01\0");

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Value = 1,
    RawValue,
    Array,
    RawArray,
    Lock,
    RLock,
    Semaphore,
    Event,
    Condition,
    Barrier,
}

#[repr(C)]
struct Header {
    magic: u64,
    kind: u32,
    _reserved: u32,
    type_tag: u64,
    len: u64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= PAYLOAD);

/// A mapped segment. Process-local: clones of a handle share one through
/// an `Arc`.
#[derive(Debug)]
pub(crate) struct Segment {
    fd: SharedFd,
    map: Mapping,
    len: u64,
}

impl Segment {
    /// A new zeroed segment with `payload` bytes after the header. `len`
    /// is the handle's own count (elements of an array, parties of a
    /// barrier…), kept in the header.
    pub fn create(kind: Kind, type_tag: u64, len: u64, payload: usize) -> io::Result<Segment> {
        let total = PAYLOAD
            .checked_add(payload)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        let fd = shm::memfd(&format!("multiproc-{kind:?}"), total)?;
        let map = Mapping::map(fd.as_fd(), total)?;
        let header = Header {
            magic: MAGIC,
            kind: kind as u32,
            _reserved: 0,
            type_tag,
            len,
        };
        // SAFETY: the mapping is at least PAYLOAD bytes long, page aligned,
        // and not yet visible to any other process or thread.
        unsafe { map.as_ptr().cast::<Header>().write(header) };
        Ok(Segment {
            fd: SharedFd::new(fd),
            map,
            len,
        })
    }

    /// Attaches to a segment received from another process, checking that
    /// it holds a `kind` for `type_tag` and that `payload_for(len)` bytes of
    /// payload are there.
    pub fn open(
        fd: SharedFd,
        kind: Kind,
        type_tag: u64,
        payload_for: impl Fn(u64) -> Option<usize>,
    ) -> Result<Segment, String> {
        let total = shm::size(fd.fd()).map_err(|e| e.to_string())?;
        if total < PAYLOAD {
            return Err(format!("shared segment of {total} bytes has no header"));
        }
        let map = Mapping::map(fd.fd(), total).map_err(|e| e.to_string())?;
        // SAFETY: the mapping holds at least PAYLOAD bytes; the header's
        // fields are integers, valid at any bit pattern; it is copied out
        // with a volatile read because other processes share the memory.
        let h = unsafe { map.as_ptr().cast::<Header>().read_volatile() };
        if h.magic != MAGIC {
            return Err("descriptor is not a multiproc shared segment".into());
        }
        if h.kind != kind as u32 {
            return Err(format!(
                "shared segment holds a {}, expected a {kind:?}",
                kind_name(h.kind)
            ));
        }
        if h.type_tag != type_tag {
            return Err(format!(
                "shared {kind:?} was created for another element type"
            ));
        }
        match payload_for(h.len) {
            Some(need) if need <= total - PAYLOAD => Ok(Segment {
                fd,
                map,
                len: h.len,
            }),
            _ => Err(format!(
                "shared {kind:?} segment is too small for its header"
            )),
        }
    }

    /// [`open`](Self::open) as a serde step: the descriptor is read from
    /// `d`, and a refusal is `d`'s error. How a handle is received.
    pub fn receive<'de, D: Deserializer<'de>>(
        d: D,
        kind: Kind,
        type_tag: u64,
        payload_for: impl Fn(u64) -> Option<usize>,
    ) -> Result<Segment, D::Error> {
        Segment::open(SharedFd::deserialize(d)?, kind, type_tag, payload_for)
            .map_err(serde::de::Error::custom)
    }

    /// The first `T` of a payload that holds only `T`s (a raw value or
    /// array, created with `raw_data_offset` bytes before its data).
    pub fn raw_data<T>(&self) -> *mut T {
        // In bounds: creation and attachment checked that the payload holds
        // the offset plus the data.
        self.payload()
            .wrapping_add(raw_data_offset(std::mem::align_of::<T>()))
            .cast()
    }

    /// The count given at creation.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The first byte of the payload (64-byte aligned).
    pub fn payload(&self) -> *mut u8 {
        // In bounds or one past: the mapping is at least PAYLOAD bytes long
        // (checked at creation and attachment).
        self.map.as_ptr().wrapping_add(PAYLOAD)
    }

    /// The shared `T` at byte offset `off` of the payload, in place
    /// (panics outside the mapping or misaligned).
    #[inline]
    pub fn payload_at<T: InPlace>(&self, off: usize) -> &T {
        self.map.at(PAYLOAD + off)
    }

    /// The descriptor, to send along with a handle.
    pub fn fd(&self) -> &SharedFd {
        &self.fd
    }
}

fn kind_name(k: u32) -> String {
    const KINDS: [Kind; 10] = [
        Kind::Value,
        Kind::RawValue,
        Kind::Array,
        Kind::RawArray,
        Kind::Lock,
        Kind::RLock,
        Kind::Semaphore,
        Kind::Event,
        Kind::Condition,
        Kind::Barrier,
    ];
    KINDS
        .iter()
        .find(|&&kind| kind as u32 == k)
        .map(|kind| format!("{kind:?}"))
        .unwrap_or_else(|| format!("unknown kind {k}"))
}

/// `offset` rounded up to a multiple of `align` (a power of two).
pub(crate) const fn align_up(offset: usize, align: usize) -> usize {
    (offset + align - 1) & !(align - 1)
}

/// Data is placed relative to a page-aligned mapping, so any alignment up
/// to a page can be honoured.
pub(crate) fn check_align(align: usize) -> Result<(), String> {
    if align.is_power_of_two() && align <= 4096 {
        Ok(())
    } else {
        Err(format!(
            "alignment {align} is not supported in shared memory (at most 4096)"
        ))
    }
}

/// Offset from the payload of data aligned to `align` when the payload
/// holds nothing else.
pub(crate) fn raw_data_offset(align: usize) -> usize {
    align_up(PAYLOAD, align.max(64)) - PAYLOAD
}
