//! How one manager connection carries its messages: over the socket
//! alone, or through a shared-memory [`Mailbox`] beside it once the client
//! has offered one. The client's calls and the server's connection loop
//! both go through it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::mailbox::{Mailbox, Way};
use crate::connection::Connection;
use crate::error::{RecvError, SendError};
use crate::wait::{self, Spin};

/// How one manager connection carries its messages: the socket alone, or
/// a mailbox beside it (the client's and the server's loops share this).
pub(crate) struct Transport {
    /// (Declared first, so dropped first: the peer stops waiting on the
    /// mailbox before it sees the socket close.)
    mailbox: Option<Mailbox>,
    /// The socket: end of stream, messages too large for the mailbox, and
    /// everything before the mailbox is set up.
    pub conn: Connection,
    /// Polling budget when there is no mailbox.
    spin: Spin,
}

impl Transport {
    /// The socket alone, until [`use_mailbox`](Self::use_mailbox).
    pub fn new(conn: Connection) -> Transport {
        Transport {
            mailbox: None,
            conn,
            spin: Spin::new(&wait::SOCKET),
        }
    }

    /// From now on, messages cross in `mailbox`.
    pub fn use_mailbox(&mut self, mailbox: Mailbox) {
        self.mailbox = Some(mailbox);
    }

    /// Sends `value` one way.
    pub fn send<T: Serialize>(&self, way: Way, value: &T) -> Result<(), SendError> {
        match &self.mailbox {
            Some(mb) => mb.send(way, value, &self.conn),
            None => self.conn.send(value),
        }
    }

    /// Receives the next message coming `way`, polling briefly before
    /// sleeping.
    pub fn recv<T: DeserializeOwned>(&self, way: Way) -> Result<T, RecvError> {
        match &self.mailbox {
            Some(mb) => mb.recv(way, &self.conn),
            None => self.conn.recv_spin(&self.spin),
        }
    }
}
