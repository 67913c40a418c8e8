//! [`Plain`]: the types that may live in memory shared between processes,
//! and [`PlainAtomic`]: those of them with lock-free atomic operations.

#![allow(unsafe_code)]

use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32,
    AtomicU64, AtomicUsize, Ordering,
};

use serde::Deserializer;

use crate::segment::mutex::MutexSegment;
use crate::segment::{Kind, Segment, check_align, raw_data_offset};

/// Plain data that can be stored in a shared [`Value`](crate::Value) or
/// [`Array`](crate::Array) and read and written by several processes.
///
/// # Safety
///
/// Implement this only for a type that satisfies all of:
///
/// 1. **Self-contained.** No pointers, references, boxes, `String`s,
///    `Vec`s, file descriptors or other handles: an address or a number
///    that only means something in one process is garbage in another.
/// 2. **Any bit pattern another process may write is a valid value.**
///    Integers, floats, and arrays and `#[repr(C)]` structs made only of
///    them qualify; so does an all-zero value, which is how new arrays
///    start. `bool` (and `char`) have invalid bit patterns, but only code
///    holding a handle of the same element type can write into a segment
///    (a handle refuses to attach to a segment created for another type),
///    and that code only ever stores valid values; a `#[repr(C)]` struct
///    whose fields are all `Plain` qualifies by the same argument.
/// 3. **The same layout in every process.** All processes run the same
///    binary, or the type is `#[repr(C)]` / `#[repr(transparent)]`.
/// 4. No `Drop` (implied by `Copy`) and no interior mutability.
///
/// ```
/// use multiproc::{Plain, Value};
///
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
/// // SAFETY: two f64s; every bit pattern is a valid Point.
/// unsafe impl Plain for Point {}
///
/// let p = Value::new(Point { x: 1.0, y: 2.0 })?;
/// p.get_lock().unwrap().x = 5.0;
/// assert_eq!(p.get().unwrap(), Point { x: 5.0, y: 2.0 });
/// # Ok::<(), std::io::Error>(())
/// ```
pub unsafe trait Plain: Copy + Send + Sync + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: a primitive without pointers; see the trait's rule 2 for
        // `bool` and `char`.
        unsafe impl Plain for $t {}
    )* };
}

plain!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool, char
);

// SAFETY: an array of plain elements is plain: no pointers, any pattern of
// valid elements is valid, and its layout is fixed by the element's.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

mod sealed {
    pub trait Sealed {}
}

/// The integer types of [`Plain`] with lock-free atomic operations
/// ([`Value::fetch_add`](crate::Value::fetch_add) and friends), usable
/// from several processes at once without a lock.
///
/// Sealed: implemented for the integer types of 8 to 64 bits.
pub trait PlainAtomic: Plain + PartialEq + sealed::Sealed {
    #[doc(hidden)]
    /// # Safety
    /// `p` is valid, aligned for the atomic type and stays so during the
    /// call.
    unsafe fn atomic_load(p: *mut Self) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As for `atomic_load`.
    unsafe fn atomic_store(p: *mut Self, v: Self);
    #[doc(hidden)]
    /// # Safety
    /// As for `atomic_load`.
    unsafe fn atomic_swap(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As for `atomic_load`.
    unsafe fn atomic_fetch_add(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As for `atomic_load`.
    unsafe fn atomic_fetch_sub(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As for `atomic_load`.
    unsafe fn atomic_compare_exchange(p: *mut Self, current: Self, new: Self)
    -> Result<Self, Self>;
}

macro_rules! plain_atomic {
    ($($t:ty => $a:ty),*) => { $(
        impl sealed::Sealed for $t {}
        impl PlainAtomic for $t {
            unsafe fn atomic_load(p: *mut Self) -> Self {
                // SAFETY: the caller guarantees `p` is valid and aligned;
                // the atomic type has the size of `$t`.
                unsafe { <$a>::from_ptr(p) }.load(Ordering::SeqCst)
            }
            unsafe fn atomic_store(p: *mut Self, v: Self) {
                // SAFETY: as in `atomic_load`.
                unsafe { <$a>::from_ptr(p) }.store(v, Ordering::SeqCst)
            }
            unsafe fn atomic_swap(p: *mut Self, v: Self) -> Self {
                // SAFETY: as in `atomic_load`.
                unsafe { <$a>::from_ptr(p) }.swap(v, Ordering::SeqCst)
            }
            unsafe fn atomic_fetch_add(p: *mut Self, v: Self) -> Self {
                // SAFETY: as in `atomic_load`.
                unsafe { <$a>::from_ptr(p) }.fetch_add(v, Ordering::SeqCst)
            }
            unsafe fn atomic_fetch_sub(p: *mut Self, v: Self) -> Self {
                // SAFETY: as in `atomic_load`.
                unsafe { <$a>::from_ptr(p) }.fetch_sub(v, Ordering::SeqCst)
            }
            unsafe fn atomic_compare_exchange(
                p: *mut Self,
                current: Self,
                new: Self,
            ) -> Result<Self, Self> {
                // SAFETY: as in `atomic_load`.
                unsafe { <$a>::from_ptr(p) }.compare_exchange(
                    current,
                    new,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
            }
        }
        // Segments place data 64-byte aligned and elements at a stride of
        // their size, so the atomic's alignment (its size) always holds.
        const _: () = assert!(std::mem::size_of::<$t>() == std::mem::size_of::<$a>());
    )* };
}

plain_atomic!(
    u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64, usize => AtomicUsize,
    i8 => AtomicI8, i16 => AtomicI16, i32 => AtomicI32, i64 => AtomicI64, isize => AtomicIsize
);

/// A received segment whose payload holds only `data_bytes(len)` bytes
/// of `T`s, aligned (a [`RawValue`](super::RawValue) or
/// [`RawArray`](super::RawArray); see [`Segment::raw_data`]).
pub(super) fn receive_raw<'de, T: Plain, D: Deserializer<'de>>(
    d: D,
    kind: Kind,
    data_bytes: impl Fn(u64) -> Option<usize>,
) -> Result<Segment, D::Error> {
    let align = std::mem::align_of::<T>();
    check_align(align).map_err(serde::de::Error::custom)?;
    Segment::receive(d, kind, type_tag::<T>(), |len| {
        data_bytes(len).and_then(|b| b.checked_add(raw_data_offset(align)))
    })
}

/// A new locked segment for `len` `T`s in `data_bytes` bytes (a
/// [`Value`](super::Value) or [`Array`](super::Array)).
pub(super) fn create_locked<T: Plain>(
    kind: Kind,
    len: u64,
    data_bytes: usize,
) -> std::io::Result<MutexSegment> {
    let align = std::mem::align_of::<T>();
    MutexSegment::create(kind, type_tag::<T>(), len, data_bytes, align, false)
}

/// A fingerprint of `T` (name, size, alignment) stored in a segment's
/// header, so that a handle refuses to attach to memory made for another
/// element type.
pub(crate) fn type_tag<T: 'static>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let name = std::any::type_name::<T>();
    let size = std::mem::size_of::<T>() as u64;
    let align = std::mem::align_of::<T>() as u64;
    for b in name
        .bytes()
        .chain(size.to_le_bytes())
        .chain(align.to_le_bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
