//! Shared memory: typed [`Value`]s and [`Array`]s of [`Plain`] data (with
//! a robust lock, or raw), and named [`SharedMemory`] segments.
//!
//! A `Value` or `Array` lives in its own anonymous memory file (memfd),
//! sealed against resizing so no process can make another's mapping fault,
//! and reaches other processes only as a descriptor: passed as a
//! [`Process`](crate::Process) argument (either start method) or inside a
//! message. Nothing is left behind in the file system, and the memory goes
//! away with the last handle in any process. Named segments, for programs
//! that find each other by name, are [`SharedMemory`].
//!
//! ```
//! use multiproc::{Array, Process, Value};
//!
//! fn child((num, arr): (Value<f64>, Array<i32>)) {
//!     num.set(3.1415927).unwrap();
//!     for x in arr.get_lock().unwrap().iter_mut() {
//!         *x = -*x;
//!     }
//! }
//!
//! let num = Value::new(0.0)?;
//! let arr = Array::from_iter(0..10)?;
//! let mut p = Process::new(child, (num.clone(), arr.clone()));
//! p.start()?;
//! p.join()?;
//! assert_eq!(num.get().unwrap(), 3.1415927);
//! assert_eq!(arr.to_vec().unwrap(), [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// `Deref`, `DerefMut` and `Debug` to `$target` for a lock guard that
/// wraps a mapped guard of it (the guards of [`Value`] and [`Array`]).
macro_rules! guard_derefs_to {
    ($guard:ident, $target:ty) => {
        impl<T: Plain> std::ops::Deref for $guard<'_, T> {
            type Target = $target;
            fn deref(&self) -> &$target {
                &self.0
            }
        }

        impl<T: Plain> std::ops::DerefMut for $guard<'_, T> {
            fn deref_mut(&mut self) -> &mut $target {
                &mut self.0
            }
        }

        impl<T: Plain + std::fmt::Debug> std::fmt::Debug for $guard<'_, T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&**self, f)
            }
        }
    };
}

mod array;
mod error;
mod plain;
mod shareable_list;
mod shared_memory;
mod shm_manager;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use error::{ArrayError, IndexError, ShareableListError, ShmError};
pub use plain::{Plain, PlainAtomic};
pub use shareable_list::{ShareableItem, ShareableList};
pub use shared_memory::SharedMemory;
pub use shm_manager::SharedMemoryManager;
pub use value::{RawValue, Value, ValueGuard};
