//! Errors of queue operations, one type per operation and waiting mode, in
//! the style of crossbeam-channel's `err.rs`: the put errors hand the value
//! back, the timed forms have their own `Timeout` variant.

use std::fmt;
use std::io;

use crate::error::CodecError;

macro_rules! put_error {
    (
        $(#[$doc:meta])*
        $name:ident { $(#[$wdoc:meta])* $wait:ident => $wait_msg:literal }
    ) => {
        $(#[$doc])*
        pub enum $name<T> {
            $(#[$wdoc])*
            $wait(T),
            /// This handle was closed with `close`.
            Closed(T),
            /// The message is larger than the queue can ever hold (its
            /// capacity less two segments).
            TooLarge(T),
            /// The value could not be serialised; nothing was queued.
            Encode(T, CodecError),
            /// The OS failed (out of memory with nothing queued, or corrupt
            /// shared state); nothing was queued.
            Io(T, io::Error),
        }

        impl<T> $name<T> {
            /// The value that was not queued.
            pub fn into_inner(self) -> T {
                match self {
                    $name::$wait(v)
                    | $name::Closed(v)
                    | $name::TooLarge(v)
                    | $name::Encode(v, _)
                    | $name::Io(v, _) => v,
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$wait(_) => f.write_str(concat!(stringify!($wait), "(..)")),
                    $name::Closed(_) => f.write_str("Closed(..)"),
                    $name::TooLarge(_) => f.write_str("TooLarge(..)"),
                    $name::Encode(_, e) => f.debug_tuple("Encode").field(&"..").field(e).finish(),
                    $name::Io(_, e) => f.debug_tuple("Io").field(&"..").field(e).finish(),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$wait(_) => f.write_str($wait_msg),
                    $name::Closed(_) => f.write_str("the queue handle is closed"),
                    $name::TooLarge(_) => f.write_str("the message is larger than the queue's capacity"),
                    $name::Encode(_, e) => write!(f, "cannot put the value: {e}"),
                    $name::Io(_, e) => write!(f, "cannot put the value: {e}"),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Encode(_, e) => Some(e),
                    $name::Io(_, e) => Some(e),
                    _ => None,
                }
            }
        }
    };
}

/// Why [`Queue::put`](crate::Queue::put) failed.
///
/// `put` waits while the queue is full, so it has no `Full` variant.
#[non_exhaustive]
pub enum PutError<T> {
    /// This handle was closed with `close`.
    Closed(T),
    /// The message is larger than the queue can ever hold (its capacity
    /// less two segments).
    TooLarge(T),
    /// The value could not be serialised; nothing was queued.
    Encode(T, CodecError),
    /// The OS failed (out of memory with nothing queued, or corrupt shared
    /// state); nothing was queued.
    Io(T, io::Error),
}

impl<T> PutError<T> {
    /// The value that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Closed(v)
            | PutError::TooLarge(v)
            | PutError::Encode(v, _)
            | PutError::Io(v, _) => v,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::TooLarge(_) => f.write_str("TooLarge(..)"),
            PutError::Encode(_, e) => f.debug_tuple("Encode").field(&"..").field(e).finish(),
            PutError::Io(_, e) => f.debug_tuple("Io").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Closed(_) => f.write_str("the queue handle is closed"),
            PutError::TooLarge(_) => f.write_str("the message is larger than the queue's capacity"),
            PutError::Encode(_, e) => write!(f, "cannot put the value: {e}"),
            PutError::Io(_, e) => write!(f, "cannot put the value: {e}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PutError::Encode(_, e) => Some(e),
            PutError::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

put_error! {
    /// Why [`Queue::put_nowait`](crate::Queue::put_nowait) failed.
    TryPutError {
        /// The queue is full (`maxsize` messages, or its storage is
        /// exhausted for now).
        Full => "the queue is full"
    }
}

put_error! {
    /// Why [`Queue::put_timeout`](crate::Queue::put_timeout) failed.
    PutTimeoutError {
        /// The queue stayed full for the whole timeout.
        Timeout => "the queue stayed full until the timeout"
    }
}

/// Why [`Queue::get`](crate::Queue::get) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// Not returned any more: a closed handle still gets (`close` only
    /// ends putting). Kept so that existing matches compile.
    #[error("the queue handle is closed")]
    Closed,
    /// The queue is empty and no producer handle is left anywhere: every
    /// one was dropped or closed, or its process ended (see
    /// [`Queue`](crate::Queue#producers-close-and-the-end-of-the-messages)).
    /// Nothing will ever arrive.
    #[error("the queue is empty and every producer is gone")]
    Disconnected,
    /// A message was taken but does not decode as the requested type (it
    /// is consumed all the same, so one bad message cannot block the
    /// queue).
    #[error(transparent)]
    Decode(#[from] CodecError),
    /// The OS failed, or the shared state is corrupt.
    #[error("cannot get from the queue: {0}")]
    Io(#[from] io::Error),
}

/// Why [`Queue::get_nowait`](crate::Queue::get_nowait) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TryGetError {
    /// Nothing is queued.
    #[error("the queue is empty")]
    Empty,
    /// Not returned any more: a closed handle still gets (`close` only
    /// ends putting). Kept so that existing matches compile.
    #[error("the queue handle is closed")]
    Closed,
    /// The queue is empty and no producer handle is left anywhere: every
    /// one was dropped or closed, or its process ended (see
    /// [`Queue`](crate::Queue#producers-close-and-the-end-of-the-messages)).
    /// Nothing will ever arrive.
    #[error("the queue is empty and every producer is gone")]
    Disconnected,
    /// A message was taken but does not decode (it is consumed).
    #[error(transparent)]
    Decode(#[from] CodecError),
    /// The OS failed, or the shared state is corrupt.
    #[error("cannot get from the queue: {0}")]
    Io(#[from] io::Error),
}

/// Why [`Queue::get_timeout`](crate::Queue::get_timeout) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetTimeoutError {
    /// No message arrived within the timeout.
    #[error("no message arrived within the timeout")]
    Timeout,
    /// Not returned any more: a closed handle still gets (`close` only
    /// ends putting). Kept so that existing matches compile.
    #[error("the queue handle is closed")]
    Closed,
    /// The queue is empty and no producer handle is left anywhere: every
    /// one was dropped or closed, or its process ended (see
    /// [`Queue`](crate::Queue#producers-close-and-the-end-of-the-messages)).
    /// Nothing will ever arrive.
    #[error("the queue is empty and every producer is gone")]
    Disconnected,
    /// A message was taken but does not decode (it is consumed).
    #[error(transparent)]
    Decode(#[from] CodecError),
    /// The OS failed, or the shared state is corrupt.
    #[error("cannot get from the queue: {0}")]
    Io(#[from] io::Error),
}

/// [`JoinableQueue::task_done`](crate::JoinableQueue::task_done) was called
/// more times than messages were put (Python's `ValueError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called more times than there were items put")]
pub struct TaskDoneError;

/// [`JoinableQueue::join_timeout`](crate::JoinableQueue::join_timeout)
/// gave up with tasks still unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{unfinished} tasks still unfinished at the timeout")]
pub struct TasksPending {
    /// Messages put and not yet marked done when the timeout passed.
    pub unfinished: usize,
}

// ---- from the queue's internal failures to the errors of each call ----

/// A failed put, before the value is attached.
pub(super) enum PutFailure {
    Full,
    Timeout,
    Closed,
    TooLarge,
    Encode(CodecError),
    Io(io::Error),
}

/// A failed get.
pub(super) enum GetFailure {
    Empty,
    Timeout,
    Disconnected,
    Io(io::Error),
}

pub(super) fn put_error<T>(v: T, f: PutFailure) -> PutError<T> {
    match f {
        // Blocking puts only fail to lock or wait on closed/timeout paths
        // they do not take; keep the value in an error all the same.
        PutFailure::Full | PutFailure::Timeout => PutError::Io(
            v,
            io::Error::new(io::ErrorKind::TimedOut, "queue wait interrupted"),
        ),
        PutFailure::Closed => PutError::Closed(v),
        PutFailure::TooLarge => PutError::TooLarge(v),
        PutFailure::Encode(e) => PutError::Encode(v, e),
        PutFailure::Io(e) => PutError::Io(v, e),
    }
}

pub(super) fn try_put_error<T>(v: T, f: PutFailure) -> TryPutError<T> {
    match f {
        PutFailure::Full | PutFailure::Timeout => TryPutError::Full(v),
        PutFailure::Closed => TryPutError::Closed(v),
        PutFailure::TooLarge => TryPutError::TooLarge(v),
        PutFailure::Encode(e) => TryPutError::Encode(v, e),
        PutFailure::Io(e) => TryPutError::Io(v, e),
    }
}

pub(super) fn put_timeout_error<T>(v: T, f: PutFailure) -> PutTimeoutError<T> {
    match f {
        PutFailure::Full | PutFailure::Timeout => PutTimeoutError::Timeout(v),
        PutFailure::Closed => PutTimeoutError::Closed(v),
        PutFailure::TooLarge => PutTimeoutError::TooLarge(v),
        PutFailure::Encode(e) => PutTimeoutError::Encode(v, e),
        PutFailure::Io(e) => PutTimeoutError::Io(v, e),
    }
}

pub(super) fn get_error(f: GetFailure) -> GetError {
    match f {
        GetFailure::Disconnected => GetError::Disconnected,
        GetFailure::Io(e) => GetError::Io(e),
        GetFailure::Empty | GetFailure::Timeout => GetError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "queue wait interrupted",
        )),
    }
}

pub(super) fn try_get_error(f: GetFailure) -> TryGetError {
    match f {
        GetFailure::Empty | GetFailure::Timeout => TryGetError::Empty,
        GetFailure::Disconnected => TryGetError::Disconnected,
        GetFailure::Io(e) => TryGetError::Io(e),
    }
}

pub(super) fn get_timeout_error(f: GetFailure) -> GetTimeoutError {
    match f {
        GetFailure::Empty | GetFailure::Timeout => GetTimeoutError::Timeout,
        GetFailure::Disconnected => GetTimeoutError::Disconnected,
        GetFailure::Io(e) => GetTimeoutError::Io(e),
    }
}
