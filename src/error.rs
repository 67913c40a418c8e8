//! Error types, one per kind of operation.

use std::io;
use std::time::Duration;

/// Turning a value into a message, or a message back into a value, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be serialised.
    #[error("cannot encode the value: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the requested type.
    #[error("message does not decode as the requested type: {0}")]
    Decode(String),
    /// A message may carry at most 253 handles.
    #[error("a message can carry at most 253 handles, this one has {0}")]
    TooManyHandles(usize),
    /// The message names more descriptors than arrived with it.
    #[error("message carries {expected} handles but only {received} arrived")]
    MissingHandles {
        /// Handles the message refers to.
        expected: usize,
        /// Descriptors that actually arrived.
        received: usize,
    },
    /// A pickle could not be written or read (the Python codec of
    /// [`Connection::send_pickle`](crate::Connection::send_pickle)).
    #[error(transparent)]
    Pickle(#[from] PickleError),
}

/// Sending on a [`Connection`](crate::Connection) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The other end is closed (or its process died).
    #[error("the other end of the connection is closed")]
    Disconnected,
    /// This end was closed, or opened read-only.
    #[error("this connection is closed or not writable")]
    NotWritable,
    /// The message exceeds the connection's frame cap.
    #[error("message of {len} bytes exceeds the frame cap of {max} bytes")]
    TooLarge {
        /// Size of the message.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Handles (descriptors) can only travel over Unix-domain connections.
    #[error("handles can only be sent over a Unix-domain connection, not TCP")]
    HandlesNotSupported,
    /// The value could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Any other OS error.
    #[error("send failed: {0}")]
    Io(#[from] io::Error),
}

/// Receiving from a [`Connection`](crate::Connection) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The other end closed (or its process died) with no message pending.
    #[error("the other end of the connection is closed")]
    Disconnected,
    /// No message arrived in time (only from the `*_timeout` forms).
    #[error("no message within the timeout")]
    Timeout,
    /// This end was closed, or opened write-only.
    #[error("this connection is closed or not readable")]
    NotReadable,
    /// The peer closed in the middle of a frame.
    #[error("the peer closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame header announced (header included).
        expected: u64,
        /// Bytes that arrived.
        got: u64,
    },
    /// A frame header announced more than the cap; nothing was allocated.
    /// The stream cannot be resynchronised, so the connection is now broken.
    #[error("frame of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// The frame header is malformed (e.g. a negative length).
    #[error("malformed frame header")]
    BadFrame,
    /// An earlier framing error left the stream unusable.
    #[error("the connection is broken by an earlier framing error")]
    Broken,
    /// `recv_bytes_into` was given a buffer smaller than the message; the
    /// message stays queued.
    #[error("buffer of {capacity} bytes is too small for a message of {len} bytes")]
    BufferTooSmall {
        /// Message length.
        len: usize,
        /// Buffer length.
        capacity: usize,
    },
    /// The message arrived whole but is not a valid `T`. The connection
    /// stays usable.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Any other OS error.
    #[error("receive failed: {0}")]
    Io(#[from] io::Error),
}

/// Starting a [`Process`](crate::Process) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `start` was called twice.
    #[error("the process was already started")]
    AlreadyStarted,
    /// The fork start method was asked for while the parent runs several
    /// threads; a forked child could inherit a lock held by another thread.
    #[error(
        "refusing to fork: this process has {threads} threads and a forked child could inherit \
         locks held by them; use the spawn start method"
    )]
    ForkWithThreads {
        /// Threads running at the time.
        threads: usize,
    },
    /// The arguments could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The OS refused.
    #[error("cannot start the process: {0}")]
    Io(#[from] io::Error),
}

/// Why [`Process::join`](crate::Process::join) has no return value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The target panicked in the child.
    #[error("the child panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// A signal killed the child (its `exitcode` is `-signal`).
    #[error("the child was killed by signal {signal}")]
    Killed {
        /// The signal number.
        signal: i32,
    },
    /// The child exited before its target returned.
    #[error("the child exited with code {code} before returning a value")]
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// The child did not end within the timeout (only from `join_timeout`).
    #[error("the child is still running after {0:?}")]
    Timeout(Duration),
    /// The process was never started.
    #[error("the process was not started")]
    NotStarted,
    /// Its value was already taken by an earlier `join` (only from
    /// [`Process`](crate::Process); a [`JoinHandle`](crate::JoinHandle) is
    /// consumed by its `join`).
    #[error("the process was already joined")]
    AlreadyJoined,
    /// The child's arguments or return value did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The OS failed.
    #[error("join failed: {0}")]
    Io(#[from] io::Error),
}

/// Connecting, listening or authenticating failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer does not hold the same authkey, or sent something other
    /// than the expected handshake message (a foreign protocol, an
    /// unsupported digest, garbage).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The handshake did not finish in time.
    #[error("the authentication handshake timed out")]
    HandshakeTimeout,
    /// The handshake broke off below the message level: the peer closed,
    /// or sent a frame that is oversize (more than 256 bytes during the
    /// handshake), truncated or malformed.
    #[error("the authentication handshake broke off: {0}")]
    Handshake(#[source] RecvError),
    /// No peer connected within the timeout (only from the `*_timeout`
    /// forms).
    #[error("no connection within the timeout")]
    Timeout,
    /// The address could not be parsed.
    #[error("bad address {0:?}: expected a Unix socket path or host:port")]
    BadAddress(String),
    /// Listening without an authkey on a TCP address that is not loopback
    /// was refused: every host that can reach the port could connect. Give
    /// an authkey (or keep the default one), or opt out explicitly with
    /// `allow_unauthenticated()` on the listener's or manager's builder.
    #[error(
        "refusing to listen on {0} without an authkey: any host that can reach it could \
         connect; give an authkey, or opt out with allow_unauthenticated()"
    )]
    Unauthenticated(std::net::SocketAddr),
    /// The OS failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
}

/// A pickle could not be written or read (the Python codec,
/// [`codec::pickle`](crate::codec::pickle)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The value could not be written as a pickle.
    #[error("cannot pickle the value: {0}")]
    Encode(String),
    /// The pickle names a class or function; nothing is called.
    #[error("the pickle refers to {module}.{name}, which is not plain data; refused")]
    Global {
        /// The module named.
        module: String,
        /// The global named in it.
        name: String,
    },
    /// The pickle uses a feature this side does not read.
    #[error("the pickle uses {0}, which is not supported")]
    Unsupported(String),
    /// The bytes are not a valid pickle.
    #[error("malformed pickle: {0}")]
    Malformed(String),
    /// The value nests deeper than
    /// [`MAX_DEPTH`](crate::codec::pickle::MAX_DEPTH).
    #[error("the pickled value nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The value would take far more memory than the pickle.
    #[error("the pickled value is too large: {0}")]
    TooLarge(String),
    /// The value contains itself.
    #[error("the pickled value contains itself")]
    Recursive,
    /// An integer does not fit the requested Rust type.
    #[error("integer out of range for the requested type: {0}")]
    IntOverflow(String),
    /// The pickle is valid but holds something other than the requested type.
    #[error("the pickled value does not match the requested type: {0}")]
    Type(String),
}

/// What can go wrong joining or using a cluster (feature `zenoh`, see
/// [`crate::cluster`]).
#[cfg(feature = "zenoh")]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration is unusable (a malformed endpoint, a bad
    /// environment variable…).
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// Listening on a non-loopback address without credentials.
    #[error(
        "refusing to listen on {0} without authentication: set credentials (user and password)"
    )]
    Insecure(String),
    /// The session could not be opened: no endpoint answered, or the
    /// listener refused the credentials.
    #[error("cannot join the cluster: {0}")]
    Connect(String),
    /// A Zenoh operation failed.
    #[error("cluster operation failed: {0}")]
    Zenoh(String),
    /// A payload exceeds the cap.
    #[error("payload of {size} bytes exceeds the cluster's cap of {limit} bytes")]
    TooLarge {
        /// The encoded size.
        size: u64,
        /// The cap.
        limit: u64,
    },
}
