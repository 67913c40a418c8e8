//! [`Value`] (with a lock) and [`RawValue`] (without): one plain value in
//! shared memory (Python's `multiprocessing.Value` / `RawValue`).
//!
//! Layout: a [`Value`] is a lock segment (see `segment::mutex`) whose data is
//! one `T`; a [`RawValue`] is a segment holding just the `T`. Either way
//! the header records the element type, so a handle never attaches to a
//! value of another type.

#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::plain::{Plain, PlainAtomic, create_locked, receive_raw, type_tag};
use crate::segment::LockError;
use crate::segment::mutex::{DataGuard, MutexSegment, acquire_methods, map_result};
use crate::segment::{Kind, Segment, check_align, raw_data_offset};

/// Implements the atomic operations (which never take a lock) for a value
/// type with `ptr()`. `$how` ends the first sentence of `load` and
/// `store`, `$counter` follows `fetch_add`'s.
macro_rules! value_atomics {
    ($value:ident, $how:literal, $counter:literal) => {
        impl<T: PlainAtomic> $value<T> {
            #[doc = concat!("Reads the value atomically", $how, ".")]
            pub fn load(&self) -> T {
                // SAFETY: the data is an aligned `T` in mapped memory,
                // accessed atomically by every atomic operation.
                unsafe { T::atomic_load(self.ptr()) }
            }

            #[doc = concat!("Writes the value atomically", $how, ".")]
            pub fn store(&self, value: T) {
                // SAFETY: as in `load`.
                unsafe { T::atomic_store(self.ptr(), value) }
            }

            /// Replaces the value atomically; returns the old one.
            pub fn swap(&self, value: T) -> T {
                // SAFETY: as in `load`.
                unsafe { T::atomic_swap(self.ptr(), value) }
            }

            #[doc = concat!("Adds atomically (wrapping); returns the old value.", $counter)]
            pub fn fetch_add(&self, delta: T) -> T {
                // SAFETY: as in `load`.
                unsafe { T::atomic_fetch_add(self.ptr(), delta) }
            }

            /// Subtracts atomically (wrapping); returns the old value.
            pub fn fetch_sub(&self, delta: T) -> T {
                // SAFETY: as in `load`.
                unsafe { T::atomic_fetch_sub(self.ptr(), delta) }
            }

            /// Stores `new` if the value is `current`; returns the previous value,
            /// `Ok` if it was `current`.
            pub fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
                // SAFETY: as in `load`.
                unsafe { T::atomic_compare_exchange(self.ptr(), current, new) }
            }
        }
    };
}

/// A value of plain type `T` in shared memory, with a robust lock
/// (Python's `multiprocessing.Value`).
///
/// [`lock`](Self::lock) (Python's `get_lock`) returns a guard giving `&mut T`;
/// [`get`](Self::get) and [`set`](Self::set) take the lock for one read or
/// write. For integer types, [`fetch_add`](Self::fetch_add) and the other
/// atomic operations work without the lock.
///
/// Clones share the value; a `Value` passed to a child
/// [`Process`](crate::Process) is the same value there.
///
/// ```
/// use multiproc::{Process, Value};
///
/// fn child(v: Value<i64>) {
///     *v.lock().unwrap() += 41;
///     v.fetch_add(1);
/// }
///
/// let v = Value::new(0i64)?;
/// let mut p = Process::new(child, v.clone());
/// p.start()?;
/// p.join()?;
/// assert_eq!(v.get().unwrap(), 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Mixing the atomic operations with writes through the lock is allowed
/// but pointless: the lock does not stop an atomic operation, so an update
/// may then be lost.
#[derive(Clone)]
pub struct Value<T: Plain> {
    inner: Arc<MutexSegment>,
    _t: PhantomData<T>,
}

/// The lock of a [`Value`], held: dereferences to the value.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Plain>(DataGuard<'a, T>);

impl<T: Plain> Value<T> {
    /// A new shared value holding `value`.
    pub fn new(value: T) -> io::Result<Value<T>> {
        let seg = create_locked::<T>(Kind::Value, 1, std::mem::size_of::<T>())?;
        // SAFETY: the data area holds a suitably aligned `T` and is not yet
        // shared with anyone.
        unsafe { seg.data().cast::<T>().write(value) };
        Ok(Value {
            inner: Arc::new(seg),
            _t: PhantomData,
        })
    }

    fn ptr(&self) -> *mut T {
        self.inner.data().cast()
    }

    #[inline]
    fn lock_with(
        &self,
        timeout: Option<Duration>,
    ) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        // SAFETY: the data area holds one aligned `T`; any bit pattern
        // there is a valid `T` (`Plain`).
        let r = unsafe { self.inner.lock_data(timeout, |data| data.cast::<T>()) };
        map_result(r, ValueGuard)
    }

    acquire_methods!(lock_with -> ValueGuard<'_, T>;
        /// Acquires the lock, waiting as long as it takes; the guard
        /// dereferences to `&mut T` (the lock is released when it drops).
        lock,
        /// Acquires the lock, waiting at most `timeout`.
        lock_timeout,
        /// Acquires the lock if it is free.
        try_lock,
    );

    /// Python's name for [`lock`](Self::lock) (`with v.get_lock():`).
    pub fn get_lock(&self) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        self.lock()
    }

    /// Reads the value under the lock (Python's `v.value`).
    /// [`LockError::OwnerDied`] carries the value read.
    pub fn get(&self) -> Result<T, LockError<T>> {
        map_result(self.lock(), |g| *g)
    }

    /// Writes the value under the lock (Python's `v.value = x`). The write
    /// happens even when [`LockError::OwnerDied`] is returned.
    pub fn set(&self, value: T) -> Result<(), LockError<()>> {
        map_result(self.lock(), |mut g| *g = value)
    }
}

value_atomics!(
    Value,
    ", without the lock",
    " A counter incremented this way from several processes loses nothing."
);

impl<T: Plain + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A snapshot read without the lock: taking the lock here could
        // swallow an owner-died report meant for the program.
        // SAFETY: an aligned `T` in mapped memory; any bit pattern is a
        // valid `T` (`Plain`); volatile because other processes write it.
        let snapshot = unsafe { self.ptr().read_volatile() };
        f.debug_struct("Value").field("value", &snapshot).finish()
    }
}

guard_derefs_to!(ValueGuard, T);

/// A `Value` travels to another process as its shared memory's
/// descriptor; the receiver checks that it holds a `T`.
impl<T: Plain> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.segment().fd().serialize(s)
    }
}

impl<'de, T: Plain> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = MutexSegment::receive(
            d,
            Kind::Value,
            type_tag::<T>(),
            |len| (len == 1).then_some(std::mem::size_of::<T>()),
            std::mem::align_of::<T>(),
            false,
        )?;
        Ok(Value {
            inner: Arc::new(seg),
            _t: PhantomData,
        })
    }
}

/// A value of plain type `T` in shared memory without a lock (Python's
/// `multiprocessing.RawValue`).
///
/// [`get`](Self::get) and [`set`](Self::set) copy the whole value in one
/// go; concurrent writers of a multi-word `T` may interleave (a read can
/// see half of each write), which `Plain` makes harmless but not
/// meaningful. Integer types also have atomic operations.
///
/// ```
/// let v = multiproc::RawValue::new(1.5f64)?;
/// v.set(2.5);
/// assert_eq!(v.get(), 2.5);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct RawValue<T: Plain> {
    seg: Arc<Segment>,
    _t: PhantomData<T>,
}

impl<T: Plain> RawValue<T> {
    /// A new shared value holding `value`.
    pub fn new(value: T) -> io::Result<RawValue<T>> {
        let align = std::mem::align_of::<T>();
        check_align(align).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let seg = Segment::create(
            Kind::RawValue,
            type_tag::<T>(),
            1,
            raw_data_offset(align) + std::mem::size_of::<T>(),
        )?;
        let v = RawValue {
            seg: Arc::new(seg),
            _t: PhantomData,
        };
        v.set(value);
        Ok(v)
    }

    fn ptr(&self) -> *mut T {
        self.seg.raw_data()
    }

    /// Reads the value.
    pub fn get(&self) -> T {
        // SAFETY: an aligned `T` in mapped memory; any bit pattern is a
        // valid `T` (`Plain`); volatile because other processes write it.
        unsafe { self.ptr().read_volatile() }
    }

    /// Writes the value.
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`.
        unsafe { self.ptr().write_volatile(value) }
    }
}

value_atomics!(RawValue, "", "");

impl<T: Plain + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue")
            .field("value", &self.get())
            .finish()
    }
}

/// A `RawValue` travels to another process as its shared memory's
/// descriptor; the receiver checks that it holds a `T`.
impl<T: Plain> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.seg.fd().serialize(s)
    }
}

impl<'de, T: Plain> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = receive_raw::<T, D>(d, Kind::RawValue, |len| {
            (len == 1).then_some(std::mem::size_of::<T>())
        })?;
        Ok(RawValue {
            seg: Arc::new(seg),
            _t: PhantomData,
        })
    }
}
