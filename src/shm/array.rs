//! [`Array`] (with a lock) and [`RawArray`] (without): a fixed-length
//! array of plain values in shared memory (Python's
//! `multiprocessing.Array` / `RawArray`).
//!
//! Layout: an [`Array`] is a lock segment (see `segment::mutex`) whose data
//! is the elements; a [`RawArray`] is a segment holding just the elements.
//! The header records the element type and the length.
//!
//! Whole-slice access costs one lock acquisition: the guard of
//! [`Array::lock`] dereferences to `&mut [T]`, so summing a million
//! elements runs at the speed of summing a `Vec`, where Python's per-item
//! access takes the lock a million times.

#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{ArrayError, IndexError};
use super::plain::{Plain, PlainAtomic, create_locked, receive_raw, type_tag};
use crate::segment::LockError;
use crate::segment::mutex::{DataGuard, MutexSegment, acquire_methods, map_result};
use crate::segment::{Kind, Segment, check_align, raw_data_offset};

fn bytes_for<T>(len: u64) -> Option<usize> {
    usize::try_from(len)
        .ok()?
        .checked_mul(std::mem::size_of::<T>())
}

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "array too large")
}

fn check_index(index: usize, len: usize) -> Result<(), IndexError> {
    if index < len {
        Ok(())
    } else {
        Err(IndexError { index, len })
    }
}

/// What [`Array`] and [`RawArray`] share, for an array type with `len`,
/// `new(len)` and `ptr()`: building from values, the length, `Debug`.
macro_rules! array_common {
    ($array:ident) => {
        impl<T: Plain> $array<T> {
            /// A new array holding a copy of `values`.
            pub fn from_slice(values: &[T]) -> io::Result<$array<T>> {
                let a = Self::new(values.len())?;
                // SAFETY: the fresh data area holds `len` aligned `T`s and is not
                // yet shared with anyone.
                unsafe {
                    std::ptr::copy_nonoverlapping(values.as_ptr(), a.ptr(), values.len());
                }
                Ok(a)
            }

            /// A new array holding the items of `iter`.
            #[allow(clippy::should_implement_trait)]
            pub fn from_iter(iter: impl IntoIterator<Item = T>) -> io::Result<$array<T>> {
                Self::from_slice(&iter.into_iter().collect::<Vec<T>>())
            }

            /// The number of elements.
            pub fn len(&self) -> usize {
                self.len
            }

            /// Whether it has no elements.
            pub fn is_empty(&self) -> bool {
                self.len == 0
            }
        }

        impl<T: Plain> fmt::Debug for $array<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($array))
                    .field("type", &std::any::type_name::<T>())
                    .field("len", &self.len)
                    .finish()
            }
        }
    };
}

/// Implements the atomic element operations (which never take a lock) for
/// an array type with `len` and `ptr()`.
macro_rules! element_atomics {
    ($(#[$doc:meta])* $array:ident) => {
        $(#[$doc])*
        impl<T: PlainAtomic> $array<T> {
            fn at(&self, index: usize) -> Result<*mut T, IndexError> {
                check_index(index, self.len)?;
                // SAFETY: `index < len`, so the element is inside the data area.
                Ok(unsafe { self.ptr().add(index) })
            }

            /// Reads element `index` atomically.
            pub fn load(&self, index: usize) -> Result<T, IndexError> {
                let p = self.at(index)?;
                // SAFETY: an aligned element in mapped memory.
                Ok(unsafe { T::atomic_load(p) })
            }

            /// Writes element `index` atomically.
            pub fn store(&self, index: usize, value: T) -> Result<(), IndexError> {
                let p = self.at(index)?;
                // SAFETY: as in `load`.
                unsafe { T::atomic_store(p, value) };
                Ok(())
            }

            /// Adds to element `index` atomically (wrapping); returns the old
            /// value.
            pub fn fetch_add(&self, index: usize, delta: T) -> Result<T, IndexError> {
                let p = self.at(index)?;
                // SAFETY: as in `load`.
                Ok(unsafe { T::atomic_fetch_add(p, delta) })
            }

            /// Subtracts from element `index` atomically (wrapping); returns the
            /// old value.
            pub fn fetch_sub(&self, index: usize, delta: T) -> Result<T, IndexError> {
                let p = self.at(index)?;
                // SAFETY: as in `load`.
                Ok(unsafe { T::atomic_fetch_sub(p, delta) })
            }

            /// Replaces element `index` atomically; returns the old value.
            pub fn swap(&self, index: usize, value: T) -> Result<T, IndexError> {
                let p = self.at(index)?;
                // SAFETY: as in `load`.
                Ok(unsafe { T::atomic_swap(p, value) })
            }

            /// Stores `new` in element `index` if it holds `current`; the inner
            /// result is the previous value, `Ok` if it was `current`.
            pub fn compare_exchange(
                &self,
                index: usize,
                current: T,
                new: T,
            ) -> Result<Result<T, T>, IndexError> {
                let p = self.at(index)?;
                // SAFETY: as in `load`.
                Ok(unsafe { T::atomic_compare_exchange(p, current, new) })
            }
        }
    };
}

/// A fixed-length array of plain `T` in shared memory, with a robust lock
/// (Python's `multiprocessing.Array`).
///
/// [`lock`](Self::lock) (Python's `get_lock`) gives the whole slice under one
/// acquisition; [`get`](Self::get), [`set`](Self::set) and
/// [`to_vec`](Self::to_vec) take the lock once each. Integer elements also
/// have lock-free atomic operations ([`fetch_add`](Self::fetch_add)…).
///
/// ```
/// use multiproc::{Array, Process};
///
/// fn negate(a: Array<i32>) {
///     for x in a.lock().unwrap().iter_mut() {
///         *x = -*x;
///     }
/// }
///
/// let a = Array::from_iter(0..5)?;
/// let mut p = Process::new(negate, a.clone());
/// p.start()?;
/// p.join()?;
/// assert_eq!(a.to_vec().unwrap(), [0, -1, -2, -3, -4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Array<T: Plain> {
    inner: Arc<MutexSegment>,
    len: usize,
    _t: PhantomData<T>,
}

/// The lock of an [`Array`], held: dereferences to the elements.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Plain>(DataGuard<'a, [T]>);

impl<T: Plain> Array<T> {
    /// A new array of `len` zero elements (all-zero bytes are a valid `T`
    /// by the [`Plain`] contract).
    pub fn new(len: usize) -> io::Result<Array<T>> {
        let bytes = bytes_for::<T>(len as u64).ok_or_else(too_large)?;
        let seg = create_locked::<T>(Kind::Array, len as u64, bytes)?;
        Ok(Array {
            inner: Arc::new(seg),
            len,
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
    ) -> Result<ArrayGuard<'_, T>, LockError<ArrayGuard<'_, T>>> {
        let len = self.len;
        // SAFETY: the data area holds `len` aligned elements; any bit
        // pattern there is a valid `T` (`Plain`).
        let r = unsafe {
            self.inner.lock_data(timeout, |data| {
                std::ptr::slice_from_raw_parts_mut(data.cast::<T>(), len)
            })
        };
        map_result(r, ArrayGuard)
    }

    acquire_methods!(lock_with -> ArrayGuard<'_, T>;
        /// Acquires the lock, waiting as long as it takes; the guard
        /// dereferences to `&mut [T]` (the lock is released when it drops).
        lock,
        /// Acquires the lock, waiting at most `timeout`.
        lock_timeout,
        /// Acquires the lock if it is free.
        try_lock,
    );

    /// Python's name for [`lock`](Self::lock) (`with a.get_lock():`).
    pub fn get_lock(&self) -> Result<ArrayGuard<'_, T>, LockError<ArrayGuard<'_, T>>> {
        self.lock()
    }

    /// Element `index`, read under the lock (Python's `a[i]`).
    pub fn get(&self, index: usize) -> Result<T, ArrayError<T>> {
        check_index(index, self.len)?;
        Ok(map_result(self.lock(), |g| g[index])?)
    }

    /// Sets element `index` under the lock (Python's `a[i] = x`); done
    /// even when [`LockError::OwnerDied`] is returned.
    pub fn set(&self, index: usize, value: T) -> Result<(), ArrayError<()>> {
        check_index(index, self.len)?;
        Ok(map_result(self.lock(), |mut g| g[index] = value)?)
    }

    /// A copy of every element, under one acquisition (Python's `a[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>, LockError<Vec<T>>> {
        map_result(self.lock(), |g| g.to_vec())
    }

    /// Overwrites every element from `src`, of the same length, under one
    /// acquisition (Python's `a[:] = src`).
    pub fn copy_from_slice(&self, src: &[T]) -> Result<(), ArrayError<()>> {
        if src.len() != self.len {
            return Err(ArrayError::Length {
                expected: self.len,
                got: src.len(),
            });
        }
        Ok(map_result(self.lock(), |mut g| g.copy_from_slice(src))?)
    }
}

array_common!(Array);
element_atomics!(
    /// Atomic element operations; they do not take the lock.
    Array
);

guard_derefs_to!(ArrayGuard, [T]);

/// An `Array` travels to another process as its shared memory's
/// descriptor; the receiver checks the element type and length.
impl<T: Plain> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.segment().fd().serialize(s)
    }
}

impl<'de, T: Plain> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = MutexSegment::receive(
            d,
            Kind::Array,
            type_tag::<T>(),
            bytes_for::<T>,
            std::mem::align_of::<T>(),
            false,
        )?;
        let len = usize::try_from(seg.segment().len()).map_err(serde::de::Error::custom)?;
        Ok(Array {
            inner: Arc::new(seg),
            len,
            _t: PhantomData,
        })
    }
}

/// A fixed-length array of plain `T` in shared memory without a lock
/// (Python's `multiprocessing.RawArray`).
///
/// Element reads and writes are single copies; bulk copies
/// ([`to_vec`](Self::to_vec), [`copy_from_slice`](Self::copy_from_slice))
/// may interleave with other processes' writes element by element or
/// within an element, which [`Plain`] makes harmless but not meaningful.
/// Integer elements have atomic operations.
///
/// ```
/// let a = multiproc::RawArray::from_slice(&[1u8, 2, 3])?;
/// a.set(0, 9)?;
/// assert_eq!(a.get(0), Some(9));
/// assert_eq!(a.to_vec(), [9, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RawArray<T: Plain> {
    seg: Arc<Segment>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Plain> RawArray<T> {
    /// A new array of `len` zero elements.
    pub fn new(len: usize) -> io::Result<RawArray<T>> {
        let align = std::mem::align_of::<T>();
        check_align(align).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let bytes = bytes_for::<T>(len as u64)
            .and_then(|b| b.checked_add(raw_data_offset(align)))
            .ok_or_else(too_large)?;
        let seg = Segment::create(Kind::RawArray, type_tag::<T>(), len as u64, bytes)?;
        Ok(RawArray {
            seg: Arc::new(seg),
            len,
            _t: PhantomData,
        })
    }

    fn ptr(&self) -> *mut T {
        self.seg.raw_data()
    }

    /// Element `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        check_index(index, self.len).ok()?;
        let elem = self.ptr().wrapping_add(index);
        // SAFETY: an aligned element inside the mapped data; any bit
        // pattern is a valid `T`; volatile as other processes write it.
        Some(unsafe { elem.read_volatile() })
    }

    /// Sets element `index`.
    pub fn set(&self, index: usize, value: T) -> Result<(), IndexError> {
        check_index(index, self.len)?;
        let elem = self.ptr().wrapping_add(index);
        // SAFETY: as in `get`.
        unsafe { elem.write_volatile(value) };
        Ok(())
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        let mut v = Vec::with_capacity(self.len);
        // SAFETY: `len` elements are mapped and any bit pattern is a valid
        // `T`, so a copy racing with writers still yields valid values; `v`
        // has room for `len`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(), v.as_mut_ptr(), self.len) };
        // SAFETY: the copy initialised all `len` elements.
        unsafe { v.set_len(self.len) };
        v
    }

    /// Overwrites every element from `src`, of the same length.
    pub fn copy_from_slice(&self, src: &[T]) -> Result<(), ArrayError<()>> {
        if src.len() != self.len {
            return Err(ArrayError::Length {
                expected: self.len,
                got: src.len(),
            });
        }
        // SAFETY: `len` mapped elements; `src` is process-local memory, so
        // the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr(), self.len) };
        Ok(())
    }

    /// The elements as a slice.
    ///
    /// # Safety
    ///
    /// While the slice lives, no thread of any process may write the
    /// array (nothing here enforces that; use an [`Array`] for a lock).
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: `len` aligned, mapped elements; the caller excludes
        // writers for the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }

    /// The elements as a mutable slice.
    ///
    /// # Safety
    ///
    /// While the slice lives, no other thread of any process may read or
    /// write the array, and no other slice of it may exist in this one.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: as in `as_slice`, with exclusive access promised.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }
}

array_common!(RawArray);
element_atomics!(
    /// Atomic element operations.
    RawArray
);

/// A `RawArray` travels to another process as its shared memory's
/// descriptor; the receiver checks the element type and length.
impl<T: Plain> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.seg.fd().serialize(s)
    }
}

impl<'de, T: Plain> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = receive_raw::<T, D>(d, Kind::RawArray, bytes_for::<T>)?;
        let len = usize::try_from(seg.len()).map_err(serde::de::Error::custom)?;
        Ok(RawArray {
            seg: Arc::new(seg),
            len,
            _t: PhantomData,
        })
    }
}
