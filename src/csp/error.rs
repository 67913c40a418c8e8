//! Errors of channel operations, alternations and CSP processes.

use crate::error::{CodecError, JoinError, StartError};

/// A channel operation (read, write, alternation) did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The channel is poisoned: every operation on any of its ends fails.
    #[error("the channel is poisoned")]
    Poisoned,
    /// The channel is retired: every end of one side has retired. Readers
    /// still receive what was buffered before the writers retired.
    #[error("the channel is retired")]
    Retired,
    /// The operation did not complete within its timeout (only from the
    /// `*_timeout` forms); it did not happen.
    #[error("the channel operation timed out")]
    Timeout,
    /// The encoded message is larger than the channel's message limit
    /// (set with [`ChannelBuilder::max_message`](super::ChannelBuilder::max_message)).
    #[error("message of {len} bytes exceeds the channel's limit of {max} bytes")]
    TooLarge {
        /// The encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message travelling through shared memory cannot carry handles
    /// (connections, channel ends…); pass those as process arguments.
    #[error("a channel message cannot carry handles (file descriptors)")]
    HandlesNotSupported,
    /// An alternation had no enabled guard: it could never choose one.
    #[error("the alternation has no enabled guard")]
    NoGuard,
    /// The value could not be encoded, or the message did not decode as
    /// the reader's type.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A network channel's home, or every end of the other side, was lost
    /// (liveliness token gone: process, host or link down); PyCSP's
    /// `ChannelLostException`. See [`crate::cluster::NetChannel`].
    #[cfg(feature = "zenoh")]
    #[error("the network channel was lost: {0}")]
    Lost(String),
}

impl ChannelError {
    /// Whether this is the poison or retire that ends a CSP network
    /// normally (a process ending with it is not a failure).
    pub fn is_shutdown(&self) -> bool {
        matches!(self, ChannelError::Poisoned | ChannelError::Retired)
    }
}

/// Running CSP processes with [`parallel`](super::parallel),
/// [`sequence`](super::sequence) or [`spawn`](super::spawn) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// A process panicked (its channels were poisoned).
    #[error("process {name} panicked: {message}")]
    Panicked {
        /// The process's name.
        name: String,
        /// The panic message.
        message: String,
    },
    /// A process ended with a channel error other than poison or retire.
    #[error("process {name} failed: {error}")]
    Channel {
        /// The process's name.
        name: String,
        /// What went wrong.
        error: ChannelError,
    },
    /// A process ran as a closure but was asked to run as an OS process;
    /// only `fn(A) -> …` targets can.
    #[error(
        "process {name} is a closure and cannot run as an OS process; build it with CspProcess::function"
    )]
    NotAFunction {
        /// The process's name.
        name: String,
    },
    /// An OS process could not be started (its channels were poisoned).
    #[error("process {name} could not start: {error}")]
    Start {
        /// The process's name.
        name: String,
        /// Why.
        error: StartError,
    },
    /// An OS process died or its result was lost (its channels were
    /// poisoned).
    #[error("process {name} did not finish: {error}")]
    Join {
        /// The process's name.
        name: String,
        /// Why.
        error: JoinError,
    },
    /// A thread for a process could not be created.
    #[error("cannot start a thread for process {name}: {error}")]
    Thread {
        /// The process's name.
        name: String,
        /// Why.
        error: std::io::Error,
    },
}
