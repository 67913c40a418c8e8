//! [`StarFn`]: what [`Pool::starmap`](crate::Pool::starmap) accepts, a
//! function of 1 to 12 arguments called with the fields of each input
//! tuple (Python's `starmap`), implemented by a macro for every arity as
//! the standard library does for tuples.
//!
//! A worker must find the function in its own copy of the executable. A
//! `fn(A) -> R` pointer travels as a function reference (see
//! `process::fn_ref`); here the function is a *function item* (or a closure
//! that captures nothing): a type with no bytes, whose one value is the
//! function. The worker runs a runner monomorphised for that type, which
//! makes its own copy of the value (nothing to copy: the type is
//! zero-sized and `Copy`) and calls it with the tuple's fields.

use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{self, Runner};
use crate::codec::Encoded;
use crate::process::fn_ref::{self, RawFnRef};

mod sealed {
    pub trait Sealed<Args> {}
}

/// A function taking the fields of an `Args` tuple (1 to 12 of them), run
/// by [`Pool::starmap`](crate::Pool::starmap). Implemented for function
/// items and for closures that capture nothing; not for function pointers
/// or capturing closures (a worker could not find them): using one is a
/// compile-time error ("starmap needs a function item"):
///
/// ```compile_fail
/// fn add(a: i32, b: i32) -> i32 { a + b }
/// let pool = multiproc::Pool::new(1).unwrap();
/// let pointer: fn(i32, i32) -> i32 = add;
/// pool.starmap(pointer, [(1, 2)]).unwrap();
/// ```
pub trait StarFn<Args>: sealed::Sealed<Args> + Copy + Send + 'static {
    /// What the function returns.
    type Output: Serialize + DeserializeOwned;

    /// The worker-side runner for this function.
    #[doc(hidden)]
    fn runner(self) -> Runner;

    /// The runner for this function in a cluster worker.
    #[cfg(feature = "zenoh")]
    #[doc(hidden)]
    fn cluster_runner(self) -> super::remote::Runner;
}

macro_rules! star_fn {
    ($($a:ident)+) => {
        impl<F, R, $($a,)+> sealed::Sealed<($($a,)+)> for F where F: Fn($($a),+) -> R + Copy {}

        impl<F, R, $($a,)+> StarFn<($($a,)+)> for F
        where
            F: Fn($($a),+) -> R + Copy + Send + 'static,
            R: Serialize + DeserializeOwned,
            $($a: Serialize + DeserializeOwned + Send + 'static,)+
        {
            type Output = R;

            fn runner(self) -> Runner {
                #[allow(non_snake_case)]
                fn run<F, R, $($a,)+>(
                    _target: RawFnRef,
                    chunk: u64,
                    message: &wire::Message,
                    fds: Vec<OwnedFd>,
                ) -> Encoded
                where
                    F: Fn($($a),+) -> R + Copy,
                    R: Serialize,
                    $($a: DeserializeOwned,)+
                {
                    // The pool holds a value of `F` (the function passed to
                    // `starmap`, which made this runner).
                    let f: F = fn_ref::fn_item::<F>();
                    wire::run_each(chunk, message, fds, |($($a,)+): ($($a,)+)| f($($a),+))
                }
                const { assert!(size_of::<F>() == 0, "starmap needs a function item") };
                run::<F, R, $($a,)+>
            }

            #[cfg(feature = "zenoh")]
            fn cluster_runner(self) -> super::remote::Runner {
                #[allow(non_snake_case)]
                fn run<F, R, $($a,)+>(
                    _target: RawFnRef,
                    args: &[u8],
                    cap: usize,
                ) -> super::remote::ChunkOutcome
                where
                    F: Fn($($a),+) -> R + Copy,
                    R: Serialize,
                    $($a: DeserializeOwned,)+
                {
                    // The driver holds a value of `F` (the function passed
                    // to `starmap`, which made this runner); the worker
                    // checked that the task comes from its own build.
                    let f: F = fn_ref::fn_item::<F>();
                    super::remote::run_each(args, cap, |($($a,)+): ($($a,)+)| f($($a),+))
                }
                const { assert!(size_of::<F>() == 0, "starmap needs a function item") };
                run::<F, R, $($a,)+>
            }
        }
    };
}

star_fn!(A);
star_fn!(A B);
star_fn!(A B C);
star_fn!(A B C D);
star_fn!(A B C D E);
star_fn!(A B C D E G);
star_fn!(A B C D E G H);
star_fn!(A B C D E G H I);
star_fn!(A B C D E G H I J);
star_fn!(A B C D E G H I J K);
star_fn!(A B C D E G H I J K L);
star_fn!(A B C D E G H I J K L M);
