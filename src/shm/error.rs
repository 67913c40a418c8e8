//! Errors of shared values, arrays and named segments.

use std::fmt;
use std::io;

use crate::segment::LockError;

/// An index or range outside an array or segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("index {index} out of range for length {len}")]
pub struct IndexError {
    /// The index asked for (for a range: its end).
    pub index: usize,
    /// The length.
    pub len: usize,
}

/// An [`Array`](crate::Array) convenience method failed.
#[non_exhaustive]
pub enum ArrayError<G> {
    /// The index is out of range.
    Index(IndexError),
    /// A slice of the wrong length was given.
    Length {
        /// The array's length.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// Acquiring the array's lock did not go normally (including
    /// [`LockError::OwnerDied`], which carries the result).
    Lock(LockError<G>),
}

impl<G> ArrayError<G> {
    /// Takes the result despite a dead previous holder of the lock (see
    /// [`LockError::recover`]).
    pub fn recover(self) -> Result<G, Self> {
        match self {
            ArrayError::Lock(LockError::OwnerDied(g)) => Ok(g),
            e => Err(e),
        }
    }
}

impl<G> From<LockError<G>> for ArrayError<G> {
    fn from(e: LockError<G>) -> Self {
        ArrayError::Lock(e)
    }
}

impl<G> From<IndexError> for ArrayError<G> {
    fn from(e: IndexError) -> Self {
        ArrayError::Index(e)
    }
}

impl<G> fmt::Debug for ArrayError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArrayError::Index(e) => f.debug_tuple("Index").field(e).finish(),
            ArrayError::Length { expected, got } => f
                .debug_struct("Length")
                .field("expected", expected)
                .field("got", got)
                .finish(),
            ArrayError::Lock(e) => f.debug_tuple("Lock").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for ArrayError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArrayError::Index(e) => e.fmt(f),
            ArrayError::Length { expected, got } => {
                write!(
                    f,
                    "slice of length {got} given for an array of length {expected}"
                )
            }
            ArrayError::Lock(e) => e.fmt(f),
        }
    }
}

impl<G> std::error::Error for ArrayError<G> {}

/// A [`SharedMemory`](crate::SharedMemory) operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// Names are 1 to 200 bytes, without `/` (a leading `/` is dropped)
    /// or NUL.
    #[error("invalid shared memory name {0:?}")]
    InvalidName(String),
    /// A segment needs at least one byte.
    #[error("shared memory size must be at least 1 byte")]
    ZeroSize,
    /// `create` found a segment of that name whose creator still runs.
    #[error("shared memory segment {0:?} already exists")]
    Exists(String),
    /// `attach` found no segment of that name.
    #[error("no shared memory segment named {0:?}")]
    NotFound(String),
    /// A read or write outside the segment.
    #[error(transparent)]
    OutOfBounds(#[from] IndexError),
    /// A [`SharedMemoryManager`](crate::SharedMemoryManager) could not
    /// start, or its tracking process is gone.
    #[error("shared memory manager: {0}")]
    Manager(String),
    /// Any other OS error.
    #[error("shared memory failed: {0}")]
    Io(#[from] io::Error),
}

/// A [`ShareableList`](crate::ShareableList) operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShareableListError {
    /// Creating, opening or accessing the segment failed.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// The index is past the end of the list.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A string or byte string does not fit the item's slot (Python's
    /// `ValueError: bytes/str item exceeds available storage`).
    #[error("item {index}: {len} bytes exceed the slot's {capacity}")]
    TooLong {
        /// The item.
        index: usize,
        /// The UTF-8 or byte length given.
        len: usize,
        /// The slot's size, fixed at creation.
        capacity: usize,
    },
    /// A string or byte string too long for the format (Python's limit:
    /// its slot size must be at most 7 digits).
    #[error("item {index}: {len} bytes are too many for a shareable list")]
    ItemTooLarge {
        /// The item.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A string item is not valid UTF-8 (Python's `UnicodeDecodeError`).
    #[error("item {index}: the string is not valid UTF-8")]
    Utf8 {
        /// The item.
        index: usize,
    },
    /// The segment does not hold a shareable list in Python's layout (or
    /// a reader raced with a writer of the same item).
    #[error("not a valid shareable list: {0}")]
    Corrupt(String),
}
