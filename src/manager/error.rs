//! [`ManagerError`]: what a manager, or a call through one of its proxies,
//! can fail with.

use super::protocol::Fault;
use super::value::ConvertError;
use crate::error::{ConnectError, JoinError, StartError};

/// A manager operation failed.
///
/// The variants after [`Convert`](Self::Convert) are the server's answers,
/// named after the Python exceptions they replace (`IndexError`,
/// `KeyError`, `ValueError`, `queue.Empty`, …).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The server is gone (shut down, killed, or the connection broke).
    /// Every call made after the server died, and every call waiting on it
    /// when it died, fails with this.
    #[error("the manager's server is gone")]
    Disconnected,
    /// The server could not be reached or the authkey was refused.
    #[error("cannot connect to the manager: {0}")]
    Connect(#[from] ConnectError),
    /// The server process could not be started.
    #[error("cannot start the manager's server: {0}")]
    Start(#[from] StartError),
    /// The server process failed while starting or stopping, or could not
    /// serve a request for a reason of its own (its OS random source
    /// failed).
    #[error("the manager's server failed: {0}")]
    Server(String),
    /// Joining the server process failed.
    #[error("the manager's server did not end cleanly: {0}")]
    Join(#[from] JoinError),
    /// A value could not be converted to or from the server's form (for
    /// example a stored value read back as the wrong type).
    #[error("value conversion failed: {0}")]
    Convert(#[from] ConvertError),
    /// The object is gone (its last reference was dropped) or never
    /// existed.
    #[error("the manager holds no object #{0}")]
    NoSuchObject(u64),
    /// An index out of range (Python's `IndexError`).
    #[error("index error: {0}")]
    Index(String),
    /// A missing dict key or Namespace attribute (Python's `KeyError` /
    /// `AttributeError`).
    #[error("key error: {0}")]
    Key(String),
    /// A value that is not in the list (Python's `ValueError` from
    /// `remove`/`index`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation does not apply to the value found (Python's
    /// `TypeError`), e.g. `append` on a dict.
    #[error("type error: {0}")]
    Type(String),
    /// Arithmetic on the server failed (overflow, division, mixed types).
    #[error("arithmetic error: {0}")]
    Arithmetic(String),
    /// A queue was empty (`get_nowait`, or `get_timeout` ran out).
    #[error("the queue is empty")]
    Empty,
    /// A bounded queue was full (`put_nowait`, or `put_timeout` ran out).
    #[error("the queue is full")]
    Full,
    /// A wait ran out of time.
    #[error("timed out")]
    Timeout,
    /// The barrier is broken (aborted, reset, or a wait timed out).
    #[error("the barrier is broken")]
    BrokenBarrier,
    /// Releasing a lock that this thread does not hold (or an unheld
    /// lock, or a semaphore beyond its bound).
    #[error("release error: {0}")]
    NotOwner(String),
    /// A registered object's method failed.
    #[error("remote method failed: {0}")]
    Remote(String),
    /// The server does not know the operation, type or method.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The server refused the request as malformed.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<Fault> for ManagerError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::NoSuchObject(id) => ManagerError::NoSuchObject(id),
            Fault::Index(s) => ManagerError::Index(s),
            Fault::Key(s) => ManagerError::Key(s),
            Fault::NotFound(s) => ManagerError::NotFound(s),
            Fault::Type(s) => ManagerError::Type(s),
            Fault::Arithmetic(s) => ManagerError::Arithmetic(s),
            Fault::Empty => ManagerError::Empty,
            Fault::Full => ManagerError::Full,
            Fault::Timeout => ManagerError::Timeout,
            Fault::BrokenBarrier => ManagerError::BrokenBarrier,
            Fault::NotOwner(s) => ManagerError::NotOwner(s),
            Fault::Remote(s) => ManagerError::Remote(s),
            Fault::Unsupported(s) => ManagerError::Unsupported(s),
            Fault::Protocol(s) => ManagerError::Protocol(s),
            Fault::Server(s) => ManagerError::Server(s),
            Fault::ClientGone => ManagerError::Disconnected,
        }
    }
}
