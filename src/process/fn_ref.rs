//! Function references: naming a function so that another process running
//! the same binary can call it. This is the one place in the crate where a
//! number becomes a function pointer.
//!
//! A function's address changes from run to run (ASLR), but its distance
//! from any other function of the same binary does not. A [`FnRef`] holds
//! `function - anchor`; the process that calls it adds its own `anchor`.
//! A second distance, [`binary_fingerprint`], lets a spawned child check
//! that it really runs its parent's binary.
//!
//! ## The invariant
//!
//! Turning a distance back into a function pointer ([`FnRef::get`]) is
//! sound only if the distance was taken from a function of the same type in
//! the same binary. The crate keeps this so, and nothing else makes a
//! `FnRef`:
//!
//! * [`FnRef::new`] takes the function itself, with its type `F`.
//! * A decoded `FnRef<F>` arrives in a message of one Rust type at both
//!   ends, from the parent over a private connection (the child bootstrap,
//!   a pool worker's connection, a manager server's arguments). A spawned
//!   child compares [`binary_fingerprint`] with its parent's before it
//!   calls anything (`process::child`); a forked child is the same binary.
//!   A cluster worker (feature `zenoh`) receives its tasks from a driver
//!   over an authenticated Zenoh session and runs one only if the task's
//!   fingerprint is its own (`cluster::worker`).
//! * A [`RawFnRef`] (its type erased, for a target that travels beside the
//!   runner that calls it) is made typed again by [`RawFnRef::typed`] only
//!   in that runner, which was monomorphised for the target's type at the
//!   same place the target was erased: the process trampoline
//!   (`process::target`), the pool's runners (`pool::wire`,
//!   `pool::star`) and the cluster's (`cluster::wire`).
//!
//! On the wire a reference is its distance, an `isize`.

#![allow(unsafe_code)]

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

mod sealed {
    pub trait Sealed: Copy {
        fn addr(self) -> usize;
    }
}

/// A function pointer type. Sealed: implemented here, only for function
/// pointers, which is what makes [`FnRef::get`] sound.
pub trait FnPtr: sealed::Sealed {}

// One argument (every target, initializer and constructor of the crate).
impl<A, R> sealed::Sealed for fn(A) -> R {
    #[inline]
    fn addr(self) -> usize {
        self as usize
    }
}
impl<A, R> FnPtr for fn(A) -> R {}

// The process trampoline.
impl sealed::Sealed for super::target::Trampoline {
    #[inline]
    fn addr(self) -> usize {
        self as usize
    }
}
impl FnPtr for super::target::Trampoline {}

// The pool's chunk runner: `(target, arguments, capacity)`.
impl<A, B: ?Sized, C, R> sealed::Sealed for for<'a> fn(A, &'a B, C) -> R {
    #[inline]
    fn addr(self) -> usize {
        self as usize
    }
}
impl<A, B: ?Sized, C, R> FnPtr for for<'a> fn(A, &'a B, C) -> R {}

// The pool runner's shape: `(target, chunk, payload, descriptors)`.
impl<A, B, C: ?Sized, D, R> sealed::Sealed for for<'a> fn(A, B, &'a C, D) -> R {
    #[inline]
    fn addr(self) -> usize {
        self as usize
    }
}
impl<A, B, C: ?Sized, D, R> FnPtr for for<'a> fn(A, B, &'a C, D) -> R {}

/// A function of type `F`, as its distance from this binary's anchor.
#[derive(Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct FnRef<F> {
    offset: isize,
    #[serde(skip)]
    _f: PhantomData<F>,
}

impl<F> Clone for FnRef<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for FnRef<F> {}

impl<F> std::fmt::Debug for FnRef<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FnRef({:#x})", self.offset)
    }
}

impl<F: FnPtr> FnRef<F> {
    /// The reference to `f`.
    #[inline]
    pub fn new(f: F) -> FnRef<F> {
        FnRef {
            offset: offset_of(f.addr()),
            _f: PhantomData,
        }
    }

    /// The function, in this process.
    #[inline]
    pub fn get(self) -> F {
        const {
            assert!(size_of::<F>() == size_of::<usize>());
        }
        let addr = anchor_addr().wrapping_add_signed(self.offset);
        // SAFETY: `F` is a function pointer type (`FnPtr` is sealed and
        // implemented for function pointers only), the same size as `usize`
        // (checked above), and `addr` is the address of a function of type
        // `F` in this binary, by the module's invariant: the distance was
        // taken from an `F` in this binary, or in a process that runs the
        // same binary.
        unsafe { std::mem::transmute_copy::<usize, F>(&addr) }
    }

    /// The reference with its type erased, to travel beside the runner
    /// that will call it.
    #[inline]
    pub fn erase(self) -> RawFnRef {
        RawFnRef {
            offset: self.offset,
        }
    }
}

/// The value of `F`, a function item or a closure that captures nothing:
/// a zero-sized type whose one value is the function, so a process that
/// never received the value can make its own. Only code monomorphised for
/// `F` where a value of it existed calls this (the pool's `starmap`
/// runners, made by `StarFn::runner(self)`); `F` being zero-sized and
/// `Copy` is checked at compile time.
pub fn fn_item<F: Copy>() -> F {
    const {
        assert!(size_of::<F>() == 0, "starmap needs a function item");
    }
    // SAFETY: `F` has no bytes (checked above): reading one reads nothing,
    // and a dangling pointer is non-null and aligned, all a zero-sized read
    // needs. `F` is `Copy` and has had a value in this binary (the caller's
    // promise above): this is a copy of that value.
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

/// A [`FnRef`] whose type travels elsewhere: in the runner it is paired
/// with, monomorphised for that type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawFnRef {
    offset: isize,
}

impl RawFnRef {
    /// The typed reference again. Only the runner paired with this
    /// reference calls it, with the type the reference was erased from (see
    /// the module's invariant).
    #[inline]
    pub fn typed<F: FnPtr>(self) -> FnRef<F> {
        FnRef {
            offset: self.offset,
            _f: PhantomData,
        }
    }
}

#[inline(never)]
fn anchor() -> u32 {
    std::hint::black_box(0x6d70_0001)
}

#[inline(never)]
fn probe() -> u32 {
    std::hint::black_box(0x6d70_0002)
}

#[inline]
fn anchor_addr() -> usize {
    anchor as fn() -> u32 as usize
}

/// Distance of `addr` from this binary's anchor.
#[inline]
fn offset_of(addr: usize) -> isize {
    addr.wrapping_sub(anchor_addr()) as isize
}

/// The check value a spawned child compares with its parent's: equal only
/// when both run the same binary.
pub fn binary_fingerprint() -> isize {
    offset_of(probe as fn() -> u32 as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    fn with_slice(a: u8, b: u8, c: &[u8], d: Vec<u8>) -> usize {
        a as usize + b as usize + c.len() + d.len()
    }

    #[test]
    fn round_trips_through_the_codec() {
        let r = FnRef::new(double as fn(u32) -> u32);
        let bytes = crate::codec::append_value(&r, Vec::new()).unwrap();
        // On the wire it is only the distance.
        assert_eq!(
            bytes,
            crate::codec::append_value(&r.offset, Vec::new()).unwrap()
        );
        let back: FnRef<fn(u32) -> u32> = crate::codec::decode_whole(&bytes).unwrap();
        assert_eq!((back.get())(21), 42);
    }

    #[test]
    fn erased_and_typed_again() {
        let f: for<'a> fn(u8, u8, &'a [u8], Vec<u8>) -> usize = with_slice;
        let raw = FnRef::new(f).erase();
        let g = raw
            .typed::<for<'a> fn(u8, u8, &'a [u8], Vec<u8>) -> usize>()
            .get();
        assert_eq!(g(1, 2, &[3, 4], vec![5]), 6);
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(binary_fingerprint(), binary_fingerprint());
        assert_ne!(binary_fingerprint(), 0);
    }
}
