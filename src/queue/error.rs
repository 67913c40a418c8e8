//! Errors of queue operations, one type per operation and waiting mode, in
//! the style of crossbeam-channel's `err.rs`: the put errors hand the value
//! back, the timed forms have their own `Timeout` variant.
//!
//! The three put errors and the three get errors differ only in the
//! variant of their waiting mode (none for the blocking calls), so each
//! family is written once, as a macro, together with its mapping from the
//! queue's internal failures ([`PutCall::failed`], [`GetCall::failed`]).

use std::fmt;
use std::io;

use crate::error::CodecError;

/// What a blocking call that failed to wait reports (it only fails to
/// lock or wait on paths it does not take).
fn interrupted() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "queue wait interrupted")
}

/// A put call's error, built from the queue's failure and the value.
pub(super) trait PutCall<T> {
    fn failed(v: T, f: PutFailure) -> Self;
}

/// A get call's error, built from the queue's failure.
pub(super) trait GetCall: From<io::Error> + From<CodecError> {
    fn failed(f: GetFailure) -> Self;
}

/// One put error type: `Closed`, `TooLarge`, `Encode`, `Io`, and the
/// variant `$wait` of its waiting mode, if it has one (a failed wait is an
/// `Io` error for a call without one).
macro_rules! put_error {
    (
        $(#[$doc:meta])*
        $name:ident { $($(#[$wdoc:meta])* $wait:ident => $wait_msg:literal)? }
    ) => {
        $(#[$doc])*
        pub enum $name<T> {
            $($(#[$wdoc])* $wait(T),)?
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
                    $($name::$wait(v) |)?
                    $name::Closed(v)
                    | $name::TooLarge(v)
                    | $name::Encode(v, _)
                    | $name::Io(v, _) => v,
                }
            }
        }

        impl<T> PutCall<T> for $name<T> {
            fn failed(v: T, f: PutFailure) -> Self {
                match f {
                    PutFailure::Full | PutFailure::Timeout => {
                        put_error!(@wait $name, v $(, $wait)?)
                    }
                    PutFailure::Closed => $name::Closed(v),
                    PutFailure::TooLarge => $name::TooLarge(v),
                    PutFailure::Encode(e) => $name::Encode(v, e),
                    PutFailure::Io(e) => $name::Io(v, e),
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$wait(_) => f.write_str(concat!(stringify!($wait), "(..)")),)?
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
                    $($name::$wait(_) => f.write_str($wait_msg),)?
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
    (@wait $name:ident, $v:ident, $wait:ident) => { $name::$wait($v) };
    (@wait $name:ident, $v:ident) => { $name::Io($v, interrupted()) };
}

/// One get error type: `Closed`, `Disconnected`, `Decode`, `Io`, and the
/// variant `$wait` of its waiting mode, if it has one (a failed wait is an
/// `Io` error for a call without one).
macro_rules! get_error {
    (
        $(#[$doc:meta])*
        $name:ident { $($(#[$wdoc:meta])* $wait:ident => $wait_msg:literal)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, thiserror::Error)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$wdoc])* #[error($wait_msg)] $wait,)?
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

        impl GetCall for $name {
            fn failed(f: GetFailure) -> Self {
                match f {
                    GetFailure::Empty | GetFailure::Timeout => get_error!(@wait $name $(, $wait)?),
                    GetFailure::Disconnected => $name::Disconnected,
                    GetFailure::Io(e) => $name::Io(e),
                }
            }
        }
    };
    (@wait $name:ident, $wait:ident) => { $name::$wait };
    (@wait $name:ident) => { $name::Io(interrupted()) };
}

put_error! {
    /// Why [`Queue::put`](crate::Queue::put) failed.
    ///
    /// `put` waits while the queue is full, so it has no `Full` variant.
    #[non_exhaustive]
    PutError {}
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

get_error! {
    /// Why [`Queue::get`](crate::Queue::get) failed.
    GetError {}
}

get_error! {
    /// Why [`Queue::get_nowait`](crate::Queue::get_nowait) failed.
    TryGetError {
        /// Nothing is queued.
        Empty => "the queue is empty"
    }
}

get_error! {
    /// Why [`Queue::get_timeout`](crate::Queue::get_timeout) failed.
    GetTimeoutError {
        /// No message arrived within the timeout.
        Timeout => "no message arrived within the timeout"
    }
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

// ---- the queue's internal failures, before they become a call's error ----

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
