//! A shared segment that starts with a robust lock
//! ([`SharedMutex`]), bound to a `lock_api::Mutex` so that acquisitions
//! produce `lock_api` guards. The common base of `Lock`, `RLock`,
//! `Condition`, `Value` and `Array`.
//!
//! Payload layout: `[SharedMutex][padding][data]`, the data 64-byte (or
//! more, if its type needs it) aligned.

#![allow(unsafe_code)]

use std::io;
use std::mem::ManuallyDrop;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::lock_error::LockError;
use super::raw_mutex::{RawRobustMutex, SharedMutex};
use super::{Kind, PAYLOAD, Segment, align_up, check_align};
use crate::codec::SharedFd;
use crate::sys::robust_mutex::{LockFailed, Locked};

/// A held lock, as a `lock_api` guard over the data-less binding.
pub(crate) type Guard<'a> = lock_api::MutexGuard<'a, RawRobustMutex, ()>;

pub(crate) struct MutexSegment {
    seg: ManuallyDrop<Segment>,
    lock: lock_api::Mutex<RawRobustMutex, ()>,
    data_offset: usize,
}

/// Offset of the data from the payload, so that it is `align`-aligned
/// (the mapping itself is page aligned).
fn data_offset(align: usize) -> usize {
    align_up(PAYLOAD + std::mem::size_of::<SharedMutex>(), align.max(64)) - PAYLOAD
}

impl MutexSegment {
    /// A new segment with a fresh lock and `data_bytes` zeroed bytes of
    /// data aligned to `data_align`.
    pub fn create(
        kind: Kind,
        type_tag: u64,
        len: u64,
        data_bytes: usize,
        data_align: usize,
        recursive: bool,
    ) -> io::Result<MutexSegment> {
        check_align(data_align).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let offset = data_offset(data_align);
        let payload = offset
            .checked_add(data_bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        let seg = Segment::create(kind, type_tag, len, payload)?;
        let shared = seg.payload().cast::<SharedMutex>();
        // SAFETY: the payload is zeroed, 64-byte aligned, large enough, and
        // not yet shared with anyone; the mapping stays while `seg` lives.
        unsafe { SharedMutex::init(shared)? };
        Ok(Self::bind(seg, offset, recursive))
    }

    /// Attaches to a received segment; `data_bytes(len)` is how many data
    /// bytes a segment with header count `len` must have.
    pub fn open(
        fd: SharedFd,
        kind: Kind,
        type_tag: u64,
        data_bytes: impl Fn(u64) -> Option<usize>,
        data_align: usize,
        recursive: bool,
    ) -> Result<MutexSegment, String> {
        check_align(data_align)?;
        let offset = data_offset(data_align);
        let seg = Segment::open(fd, kind, type_tag, |len| {
            data_bytes(len).and_then(|b| b.checked_add(offset))
        })?;
        Ok(Self::bind(seg, offset, recursive))
    }

    /// [`open`](Self::open) as a serde step, like [`Segment::receive`].
    pub fn receive<'de, D: Deserializer<'de>>(
        d: D,
        kind: Kind,
        type_tag: u64,
        data_bytes: impl Fn(u64) -> Option<usize>,
        data_align: usize,
        recursive: bool,
    ) -> Result<MutexSegment, D::Error> {
        let fd = SharedFd::deserialize(d)?;
        MutexSegment::open(fd, kind, type_tag, data_bytes, data_align, recursive)
            .map_err(serde::de::Error::custom)
    }

    fn bind(seg: Segment, data_offset: usize, recursive: bool) -> MutexSegment {
        // SAFETY: the payload starts with a SharedMutex initialised by the
        // creator (the header check vouches for the segment's kind); `seg`
        // is kept in the same struct, and dropped after `lock`, so the
        // memory outlives the binding.
        let raw = unsafe { RawRobustMutex::bind(seg.payload().cast(), recursive) };
        MutexSegment {
            seg: ManuallyDrop::new(seg),
            lock: lock_api::Mutex::from_raw(raw, ()),
            data_offset,
        }
    }

    /// The segment (for its descriptor and header count).
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The first data byte.
    #[inline]
    pub fn data(&self) -> *mut u8 {
        // In bounds: creation and attachment checked that the payload holds
        // `data_offset` plus the data bytes.
        self.seg.payload().wrapping_add(self.data_offset)
    }

    /// The raw lock.
    #[inline]
    pub fn raw(&self) -> &RawRobustMutex {
        // SAFETY: only used to call the binding's own methods, which keep
        // the lock's invariants themselves.
        unsafe { self.lock.raw() }
    }

    /// Acquires the lock, waiting at most `timeout` (`Some(ZERO)`: try
    /// once).
    #[inline]
    pub fn lock(&self, timeout: Option<Duration>) -> Result<Guard<'_>, LockError<Guard<'_>>> {
        let how = self.raw().acquire(timeout).map_err(failed)?;
        // SAFETY: `acquire` succeeded, so this thread holds the lock, as
        // `make_guard_unchecked` requires; the guard releases it on drop.
        let guard = unsafe { self.lock.make_guard_unchecked() };
        match how {
            Locked::Clean => Ok(guard),
            Locked::OwnerDied => Err(LockError::OwnerDied(guard)),
        }
    }
}

/// A held lock, as a `lock_api` guard of the data seen as a `U`.
pub(crate) type DataGuard<'a, U> = lock_api::MappedMutexGuard<'a, RawRobustMutex, U>;

impl MutexSegment {
    /// Acquires the lock like [`lock`](Self::lock); the guard gives the
    /// data as the `U` that `view` makes of a pointer to its first byte.
    ///
    /// # Safety
    ///
    /// `view(data)` points to a valid, aligned `U` inside the data area,
    /// and any bit pattern there is a valid `U`.
    pub unsafe fn lock_data<U: ?Sized>(
        &self,
        timeout: Option<Duration>,
        view: impl FnOnce(*mut u8) -> *mut U,
    ) -> Result<DataGuard<'_, U>, LockError<DataGuard<'_, U>>> {
        let data = self.data();
        map_result(self.lock(timeout), |g| {
            lock_api::MutexGuard::map(g, |_| {
                // SAFETY: the lock is held for the guard's lifetime, so no
                // other locked access exists; the memory stays mapped while
                // `self` is borrowed; the caller vouches for `view`.
                unsafe { &mut *view(data) }
            })
        })
    }
}

/// A failed acquisition as the public error.
pub(crate) fn failed<G>(e: LockFailed) -> LockError<G> {
    match e {
        LockFailed::Timeout => LockError::Timeout,
        LockFailed::Deadlock => LockError::WouldDeadlock,
        LockFailed::Os(e) => LockError::Os(e),
    }
}

/// Applies `f` to the guard inside an acquisition result, error or not.
pub(crate) fn map_result<G, H>(
    r: Result<G, LockError<G>>,
    f: impl FnOnce(G) -> H,
) -> Result<H, LockError<H>> {
    match r {
        Ok(g) => Ok(f(g)),
        Err(e) => Err(e.map(f)),
    }
}

impl Drop for MutexSegment {
    fn drop(&mut self) {
        // SAFETY: `seg` is taken exactly once, here, and not used after.
        // The binding (`lock`) is dropped after this body but never used
        // again; nothing else points into the mapping (see `raw_mutex`).
        drop(unsafe { ManuallyDrop::take(&mut self.seg) });
    }
}

/// The three public ways to take a lock-like handle, written over its
/// private `$take(&self, Option<Duration>)`: `$wait` waits as long as it
/// takes, `$timeout` at most `timeout`, `$try` only takes a free lock
/// (`Some(Duration::ZERO)`). Each name comes with its doc comment.
macro_rules! acquire_methods {
    (
        $take:ident -> $guard:ty;
        $(#[$wait_doc:meta])* $wait:ident,
        $(#[$timeout_doc:meta])* $timeout:ident,
        $(#[$try_doc:meta])* $try:ident $(,)?
    ) => {
        $(#[$wait_doc])*
        #[inline]
        pub fn $wait(&self) -> Result<$guard, $crate::segment::LockError<$guard>> {
            self.$take(None)
        }

        $(#[$timeout_doc])*
        #[inline]
        pub fn $timeout(
            &self,
            timeout: std::time::Duration,
        ) -> Result<$guard, $crate::segment::LockError<$guard>> {
            self.$take(Some(timeout))
        }

        $(#[$try_doc])*
        #[inline]
        pub fn $try(&self) -> Result<$guard, $crate::segment::LockError<$guard>> {
            self.$take(Some(std::time::Duration::ZERO))
        }
    };
}

pub(crate) use acquire_methods;
