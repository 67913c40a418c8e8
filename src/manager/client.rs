//! The client side of the protocol: an [`Endpoint`] per server, with a
//! per-process pool of authenticated connections shared by every proxy of
//! that server.
//!
//! A call takes a connection from the pool (or opens one), sends one
//! request, waits for the answer and puts the connection back, so proxies
//! are usable from any number of threads at once, each blocking call
//! holding its own connection. After `fork` the child finds the pool
//! belongs to another process and starts its own (with its own session).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::error::ManagerError;
use super::mailbox::{Mailbox, Way};
use super::protocol::{Fault, Reply, Request};
use super::server::Answer;
use super::transport::Transport;
use super::value::Value;
use crate::codec;
use crate::connection::auth;
use crate::connection::{Address, Client, Connection};
use crate::error::{ConnectError, RecvError, SendError};
use crate::local_lock::lock;
use crate::sys;

/// How long a broken call waits to see whether the whole server is gone.
const ANCHOR_GRACE: Duration = Duration::from_millis(200);
/// How long opening a connection to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// This process's session number: random, and new after `fork`. Fails
/// only if the OS random source does.
pub(crate) fn session() -> io::Result<u64> {
    static SESSION: Mutex<(i32, u64)> = Mutex::new((0, 0));
    let pid = sys::process::getpid();
    let mut s = lock(&SESSION);
    if s.0 != pid || s.1 == 0 {
        *s = (pid, sys::random::u64()? | 1);
    }
    Ok(s.1)
}

/// A number for the calling thread, unique in this process (with the
/// session, the owner of a lock).
pub(crate) fn thread_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ME: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ME.with(|n| *n)
}

struct Pool {
    pid: i32,
    /// Held open, never used for requests: the server ends this process's
    /// session (dropping its references) when it closes.
    anchor: Option<Connection>,
    /// Request connections not in use, each with its mailbox when the
    /// server is on this host (a Unix socket).
    idle: Vec<Transport>,
}

/// A server as seen from this process.
pub(crate) struct Endpoint {
    pub address: Address,
    pub authkey: Option<Vec<u8>>,
    pool: Mutex<Pool>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .finish()
    }
}

/// Endpoints by address, so that every proxy of one server in this process
/// shares one pool.
static ENDPOINTS: Mutex<Option<HashMap<String, Weak<Endpoint>>>> = Mutex::new(None);

fn disconnected_on_connect(e: ConnectError) -> ManagerError {
    match &e {
        ConnectError::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ) =>
        {
            ManagerError::Disconnected
        }
        ConnectError::Handshake(_) => ManagerError::Disconnected,
        _ => ManagerError::Connect(e),
    }
}

impl Endpoint {
    /// The endpoint for `address` in this process, made on first use.
    pub fn get(address: Address, authkey: Option<Vec<u8>>) -> Arc<Endpoint> {
        let key = address.to_string();
        let mut all = lock(&ENDPOINTS);
        let map = all.get_or_insert_with(HashMap::new);
        if let Some(ep) = map.get(&key).and_then(Weak::upgrade)
            && ep.authkey == authkey
        {
            return ep;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let ep = Arc::new(Endpoint {
            address,
            authkey,
            pool: Mutex::new(Pool {
                pid: sys::process::getpid(),
                anchor: None,
                idle: Vec::new(),
            }),
        });
        map.insert(key, Arc::downgrade(&ep));
        ep
    }

    fn connect(&self, anchor: bool) -> Result<Connection, ManagerError> {
        let session = session().map_err(|e| ManagerError::Connect(ConnectError::Io(e)))?;
        let conn = Client::open(
            self.address.clone(),
            self.authkey.as_deref(),
            Some(CONNECT_TIMEOUT),
        )
        .map_err(disconnected_on_connect)?;
        conn.send(&Request::Hello {
            session,
            pid: sys::process::getpid(),
            anchor,
        })
        .map_err(|_| ManagerError::Disconnected)?;
        if anchor {
            // Read as bytes first: a keyed server answers a client without
            // the key with its challenge (then hangs up), which must read
            // as a refused key, not as a gone server.
            let frame = match conn.recv_bytes_timeout(CONNECT_TIMEOUT) {
                Ok(frame) => frame,
                Err(_) => return Err(ManagerError::Disconnected),
            };
            if self.authkey.is_none() && auth::is_challenge(&frame) {
                return Err(ManagerError::Connect(ConnectError::Auth(
                    "the manager's server requires an authkey, and none was given".into(),
                )));
            }
            match codec::decode::<Answer>(&frame, &mut VecDeque::new()) {
                Ok(Answer::One(Ok(_))) => {}
                Ok(_) => return Err(ManagerError::Protocol("unexpected answer to Hello".into())),
                Err(_) => return Err(ManagerError::Disconnected),
            }
        }
        Ok(conn)
    }

    /// A request connection, with a mailbox over a Unix socket (if the
    /// server takes it).
    fn open_link(&self) -> Result<Transport, ManagerError> {
        let mut link = Transport::new(self.connect(false)?);
        // (Without one, the connection works on as it is.)
        if matches!(self.address, Address::Unix(_))
            && let Ok((mb, fd)) = Mailbox::create()
        {
            link.conn
                .send(&Request::Mailbox(fd))
                .map_err(|_| ManagerError::Disconnected)?;
            match link.conn.recv_timeout::<Answer>(CONNECT_TIMEOUT) {
                Ok(Answer::One(Ok(_))) => link.use_mailbox(mb),
                Ok(_) => {}
                Err(_) => return Err(ManagerError::Disconnected),
            }
        }
        Ok(link)
    }

    fn take(&self) -> Result<Transport, ManagerError> {
        {
            let mut pool = lock(&self.pool);
            let pid = sys::process::getpid();
            if pool.pid != pid {
                // Inherited across fork: these are the parent's
                // connections. Close our copies; the parent keeps its own.
                pool.idle.clear();
                pool.anchor = None;
                pool.pid = pid;
            }
            if pool.anchor.is_none() {
                // Opened under the pool lock, so it exists before any
                // request of this process reaches the server.
                pool.anchor = Some(self.connect(true)?);
            }
            if let Some(link) = pool.idle.pop() {
                return Ok(link);
            }
        }
        self.open_link()
    }

    fn give(&self, link: Transport) {
        let mut pool = lock(&self.pool);
        if pool.pid == sys::process::getpid() {
            pool.idle.push(link);
        }
    }

    /// Sends one request and waits for its answer.
    pub fn exchange(&self, request: &Request) -> Result<Answer, ManagerError> {
        let link = self.take()?;
        match link.send(Way::Request, request) {
            Ok(()) => {}
            Err(SendError::Codec(e)) => {
                self.give(link);
                return Err(ManagerError::Convert(super::ConvertError(e.to_string())));
            }
            Err(SendError::TooLarge { len, max }) => {
                self.give(link);
                return Err(ManagerError::Protocol(format!(
                    "request of {len} bytes exceeds the frame cap of {max} bytes"
                )));
            }
            Err(_) => return Err(self.broken()),
        }
        match link.recv::<Answer>(Way::Answer) {
            Ok(answer) => {
                self.give(link);
                Ok(answer)
            }
            Err(RecvError::Codec(e)) => Err(ManagerError::Protocol(e.to_string())),
            Err(_) => Err(self.broken()),
        }
    }

    /// The error for a connection that broke mid-call: the server is gone,
    /// or (its anchor still open) it hung up on this request.
    fn broken(&self) -> ManagerError {
        if self.forget_if_server_gone() {
            ManagerError::Disconnected
        } else {
            ManagerError::Protocol(
                "the server closed the connection on this request (too large or malformed)".into(),
            )
        }
    }

    /// After a broken connection: if the anchor is broken too, the server
    /// is gone; forget every connection so that a server started again at
    /// the same address gets a fresh session. (A connection the server
    /// closed for a bad request leaves the anchor, and the session, alone.)
    fn forget_if_server_gone(&self) -> bool {
        let mut pool = lock(&self.pool);
        let gone = pool
            .anchor
            .as_ref()
            // A dying server's sockets close one by one: give the anchor a
            // moment to show its end of stream.
            .is_none_or(|a| a.poll(ANCHOR_GRACE).unwrap_or(true));
        if gone {
            pool.anchor = None;
            pool.idle.clear();
        }
        gone
    }

    /// Sends one request and returns its single reply.
    pub fn call(&self, request: &Request) -> Result<Value, ManagerError> {
        match self.exchange(request)? {
            Answer::One(reply) => reply.map_err(ManagerError::from),
            Answer::Many(_) => Err(ManagerError::Protocol("unexpected batch answer".into())),
        }
    }

    /// Sends a batch and returns one reply per operation.
    pub fn call_many(&self, request: &Request) -> Result<Vec<Reply>, ManagerError> {
        match self.exchange(request)? {
            Answer::Many(replies) => Ok(replies),
            Answer::One(Err(f)) => Err(f.into()),
            Answer::One(Ok(_)) => Err(ManagerError::Protocol("expected a batch answer".into())),
        }
    }
}

/// The reply as an object id.
pub(crate) fn as_id(v: Value) -> Result<u64, ManagerError> {
    match v {
        Value::Int(i) => u64::try_from(i).map_err(|_| ManagerError::Protocol("bad id".into())),
        _ => Err(ManagerError::Protocol("expected an object id".into())),
    }
}

/// A fault from a batch entry.
pub(crate) fn fault(f: Fault) -> ManagerError {
    f.into()
}
