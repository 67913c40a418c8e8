//! [`Listener`] and [`Client`]: [`Connection`]s between unrelated processes,
//! over a Unix socket (a path or an abstract name) or TCP, authenticated
//! with a shared key (Python's `multiprocessing.connection.Listener` /
//! `Client`): the one given, else this process's
//! [`authkey`](crate::authkey); going without needs an explicit opt-out.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::handshake::{self, Handshakes};
use super::{Connection, auth};
use crate::error::ConnectError;
use crate::macros::from_variants;
use crate::sys;
use crate::wait::Deadline;

/// Where a [`Listener`] listens: a Unix socket path or a TCP address.
///
/// A Unix "path" whose first byte is NUL (`"\0name"`, as in Python) is a
/// name in Linux's abstract socket namespace: no file is created, nothing
/// is left behind when the listener goes, and file permissions do not
/// apply (any local process in the same network namespace can connect, so
/// the authkey is what keeps others out). [`Manager::start`](crate::Manager::start)
/// listens on such a name.
///
/// Parsed from a string (see [`FromStr`](#impl-FromStr-for-Address)) and
/// printed back in the same form, so an address can travel to another
/// process as a `String`.
///
/// ```
/// use multiproc::Address;
/// let tcp: Address = "127.0.0.1:6000".parse()?;
/// assert!(matches!(tcp, Address::Tcp(_)));
/// let unix: Address = "/tmp/app.sock".parse()?;
/// assert_eq!(unix, Address::Unix("/tmp/app.sock".into()));
/// assert_eq!(tcp.to_string().parse::<Address>()?, tcp);
/// # Ok::<(), multiproc::ConnectError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix-domain socket file. Connections over it can carry handles
    /// (other connections, …) inside messages.
    Unix(PathBuf),
    /// A TCP address. Connections over it carry bytes only.
    Tcp(SocketAddr),
}

impl Address {
    /// Whether this is a Unix socket path.
    pub fn is_unix(&self) -> bool {
        matches!(self, Address::Unix(_))
    }

    /// Whether this is a name in the abstract Unix socket namespace (a
    /// path starting with NUL), which leaves no file behind.
    ///
    /// ```
    /// use multiproc::Address;
    /// let a: Address = "\0my-service".parse()?;
    /// assert!(a.is_unix() && a.is_abstract());
    /// assert!(!"/tmp/app.sock".parse::<Address>()?.is_abstract());
    /// # Ok::<(), multiproc::ConnectError>(())
    /// ```
    pub fn is_abstract(&self) -> bool {
        matches!(self, Address::Unix(p) if sys::socket::is_abstract(p))
    }
}

/// Parses `host:port` (`127.0.0.1:80`, `[::1]:80`, `localhost:80`; a host
/// name is resolved and its first address taken) as TCP, and anything else
/// as a Unix socket path. A string containing `/` is always a path, so a
/// relative path that looks like `host:port` can be written `./name:80`.
/// A leading NUL makes an abstract name (see [`Address`]); a NUL anywhere
/// else is refused.
///
/// ```
/// use multiproc::{Address, ConnectError};
/// assert!(matches!("localhost:80".parse(), Ok(Address::Tcp(_))));
/// assert!(matches!("./name:80".parse(), Ok(Address::Unix(_))));
/// assert!(matches!("".parse::<Address>(), Err(ConnectError::BadAddress(_))));
/// ```
impl FromStr for Address {
    type Err = ConnectError;

    fn from_str(s: &str) -> Result<Self, ConnectError> {
        let bad = || ConnectError::BadAddress(s.to_string());
        if let Some(name) = s.strip_prefix('\0') {
            if name.is_empty() || name.contains('\0') {
                return Err(bad());
            }
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        if s.is_empty() || s.contains('\0') {
            return Err(bad());
        }
        if s.contains('/') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(addr));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => s
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .map(Address::Tcp)
                .ok_or_else(bad),
            _ => Ok(Address::Unix(PathBuf::from(s))),
        }
    }
}

/// Prints `ip:port` for TCP and the path for Unix (non-UTF-8 bytes of a
/// path are replaced, so such a path does not print back exactly; an
/// abstract name prints with its leading NUL).
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

from_variants!(Address {
    SocketAddr => Tcp,
    PathBuf => Unix,
});

impl From<&Path> for Address {
    fn from(path: &Path) -> Self {
        Address::Unix(path.to_path_buf())
    }
}

/// `key`, or this process's authkey.
fn key_or_default(key: Option<&[u8]>) -> Result<Vec<u8>, ConnectError> {
    Ok(match key {
        Some(k) => k.to_vec(),
        None => crate::connection::authkey::authkey()?,
    })
}

/// Anything [`Listener::bind`] and [`Client::connect`] accept as an
/// address: an [`Address`], a string (parsed as by
/// [`Address::from_str`](#impl-FromStr-for-Address)), a [`SocketAddr`], a
/// `(host, port)` pair, or a [`Path`] (always a Unix socket path).
pub trait ToAddress {
    /// The address meant.
    fn to_address(&self) -> Result<Address, ConnectError>;
}

impl ToAddress for Address {
    fn to_address(&self) -> Result<Address, ConnectError> {
        Ok(self.clone())
    }
}

impl ToAddress for str {
    fn to_address(&self) -> Result<Address, ConnectError> {
        self.parse()
    }
}

impl ToAddress for String {
    fn to_address(&self) -> Result<Address, ConnectError> {
        self.parse()
    }
}

impl ToAddress for SocketAddr {
    fn to_address(&self) -> Result<Address, ConnectError> {
        Ok(Address::Tcp(*self))
    }
}

impl ToAddress for (&str, u16) {
    fn to_address(&self) -> Result<Address, ConnectError> {
        let bad = || ConnectError::BadAddress(format!("{}:{}", self.0, self.1));
        self.to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .map(Address::Tcp)
            .ok_or_else(bad)
    }
}

impl ToAddress for Path {
    fn to_address(&self) -> Result<Address, ConnectError> {
        Ok(Address::Unix(self.to_path_buf()))
    }
}

impl ToAddress for PathBuf {
    fn to_address(&self) -> Result<Address, ConnectError> {
        Ok(Address::Unix(self.clone()))
    }
}

impl<T: ToAddress + ?Sized> ToAddress for &T {
    fn to_address(&self) -> Result<Address, ConnectError> {
        (**self).to_address()
    }
}

enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// The socket file a Unix listener created, removed again on drop by the
/// process that created it, if it is still the same file.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    pid: u32,
}

/// A bound socket accepting [`Connection`]s (Python's
/// `multiprocessing.connection.Listener`).
///
/// Every accepted peer must prove it holds the listener's authkey (and the
/// listener proves it to the peer) before `accept` returns its
/// connection: a mutual HMAC challenge/response, message for message the
/// one of Python 3.12's `multiprocessing.connection` (the listener
/// challenges with SHA-256 and accepts the bare HMAC-MD5 answer of Python
/// 3.11 and older, so every Python 3 peer with the key gets in), bounded
/// by [`handshake_timeout`](Self::handshake_timeout). The key is the one
/// given to [`bind`](Self::bind), or else this process's
/// [`authkey`](crate::authkey) (which children inherit, so a listener and
/// the clients in its process family agree without passing a key). A
/// listener without a key is made only on request:
/// [`ListenerBuilder::no_authkey`] (Unix sockets and loopback TCP) or
/// [`ListenerBuilder::allow_unauthenticated`] (any address).
///
/// Handshakes run concurrently, driven from inside `accept`: peers that
/// connect and stay silent cannot hold up a good client behind them. At
/// most 128 handshakes are in progress at once; a new peer beyond that
/// closes the oldest one. A peer that fails its handshake (wrong key,
/// silence, garbage) is closed and never returned, so one bad peer cannot
/// end a server's accept loop; the peer itself gets the error
/// ([`ConnectError::Auth`], …).
///
/// A Unix socket file is created owner-only (mode 0600, whatever the
/// umask).
///
/// ```
/// use multiproc::{Client, Listener};
///
/// let listener = Listener::bind("127.0.0.1:0", Some(b"secret"))?;
/// let address = listener.address().clone(); // the real port
/// let client = std::thread::spawn(move || -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
///     let conn = Client::connect(&address, Some(b"secret"))?;
///     Ok(conn.recv::<String>()?)
/// });
/// let conn = listener.accept()?;
/// conn.send("hello")?;
/// assert_eq!(client.join().unwrap().unwrap(), "hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A Unix listener removes its socket file when dropped (only the process
/// that bound it, and only if the file was not replaced meanwhile).
pub struct Listener {
    socket: Socket,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    socket_file: Option<SocketFile>,
    handshakes: Handshakes,
}

impl Listener {
    /// How long a peer has, by default, to complete the authentication
    /// handshake: 5 seconds.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

    /// Binds `address` and listens. Accepted peers must hold `authkey`, or
    /// with `None` this process's [`authkey`](crate::authkey) (see the
    /// type's documentation; [`builder`](Self::builder) makes a listener
    /// without a key).
    ///
    /// A TCP address with port 0 gets a free port, reported by
    /// [`address`](Self::address). A Unix socket path must not exist yet
    /// (binding fails with an I/O error of kind `AddrInUse` otherwise, and
    /// the existing file is left alone).
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("doc-bind-{}.sock", std::process::id()));
    /// let listener = multiproc::Listener::bind(&path, None)?;
    /// assert!(path.exists());
    /// drop(listener);
    /// assert!(!path.exists());
    /// # Ok::<(), multiproc::ConnectError>(())
    /// ```
    pub fn bind(address: impl ToAddress, authkey: Option<&[u8]>) -> Result<Self, ConnectError> {
        let address = address.to_address()?;
        let key = match authkey {
            Some(k) => k.to_vec(),
            None => crate::connection::authkey::authkey()?,
        };
        Self::open(address, Some(key))
    }

    /// A builder, for a listener with options (going without an authkey).
    ///
    /// ```
    /// use multiproc::{Client, Listener};
    ///
    /// // No handshake: allowed on Unix sockets and loopback TCP only.
    /// let listener = Listener::builder().no_authkey().bind("127.0.0.1:0")?;
    /// assert!(!listener.authenticates());
    /// let client = Client::connect_unauthenticated(listener.address())?;
    /// let served = listener.accept()?;
    /// client.send("hi")?;
    /// assert_eq!(served.recv::<String>()?, "hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder::default()
    }

    /// A listener that runs no handshake, whatever the address (for a
    /// server that authenticates on its own threads).
    pub(crate) fn bind_raw(address: &Address) -> Result<Self, ConnectError> {
        Self::open(address.clone(), None)
    }

    fn open(address: Address, authkey: Option<Vec<u8>>) -> Result<Self, ConnectError> {
        let (socket, address, socket_file) = match address {
            Address::Unix(path) => {
                let listener = UnixListener::from(sys::socket::listen_unix(&path)?);
                let file = if sys::socket::is_abstract(&path) {
                    None
                } else {
                    let meta = std::fs::symlink_metadata(&path)?;
                    Some(SocketFile {
                        path: path.clone(),
                        dev: meta.dev(),
                        ino: meta.ino(),
                        pid: std::process::id(),
                    })
                };
                (Socket::Unix(listener), Address::Unix(path), file)
            }
            Address::Tcp(addr) => {
                let listener = TcpListener::bind(addr)?;
                let bound = listener.local_addr()?;
                (Socket::Tcp(listener), Address::Tcp(bound), None)
            }
        };
        let listener = Listener {
            socket,
            address,
            authkey,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            socket_file,
            handshakes: Handshakes::new(),
        };
        // Accepting waits in poll(2), so a peer that vanishes between the
        // wake-up and accept(2), or another thread accepting first, cannot
        // leave accept blocked past its timeout.
        match &listener.socket {
            Socket::Unix(l) => l.set_nonblocking(true)?,
            Socket::Tcp(l) => l.set_nonblocking(true)?,
        }
        Ok(listener)
    }

    /// The address peers connect to; for TCP the bound address, with the
    /// real port when bound to port 0.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Whether accepted peers must authenticate.
    pub fn authenticates(&self) -> bool {
        self.authkey.is_some()
    }

    /// How long one peer's authentication handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Sets how long one peer's authentication handshake may take (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`](Self::DEFAULT_HANDSHAKE_TIMEOUT)),
    /// counted from the moment the peer is accepted. A peer that has not
    /// finished by then is closed (and sees
    /// [`ConnectError::HandshakeTimeout`] on its side, or an error of the
    /// next read or write); `accept` goes on with the other peers. Applies to
    /// peers accepted after the change.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// Waits for the next peer and returns its connection, authenticated if
    /// the listener has an authkey.
    ///
    /// With an authkey, `accept` challenges every new peer at once and
    /// drives all handshakes in progress together, each bounded by
    /// [`handshake_timeout`](Self::handshake_timeout), and returns the first
    /// to complete. A peer that fails its handshake — wrong key, silence
    /// past its deadline, a broken frame — is closed and skipped, not
    /// reported: the errors `accept` returns concern the listener itself
    /// (an I/O error of `accept(2)` or `poll(2)`, such as running out of
    /// descriptors). Handshakes only progress while some thread is inside
    /// `accept`; several threads may accept at once (`accept` takes
    /// `&self`), one of them driving the handshakes for all.
    pub fn accept(&self) -> Result<Connection, ConnectError> {
        self.accept_until(Deadline::NEVER)
    }

    /// Like [`accept`](Self::accept), giving up with
    /// [`ConnectError::Timeout`] if no peer has connected (and, with an
    /// authkey, authenticated) within `timeout`. Handshakes still in
    /// progress then carry on, each within its own
    /// [`handshake_timeout`](Self::handshake_timeout), at the next `accept`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let listener = multiproc::Listener::bind("127.0.0.1:0", None)?;
    /// let res = listener.accept_timeout(Duration::from_millis(10));
    /// assert!(matches!(res, Err(multiproc::ConnectError::Timeout)));
    /// # Ok::<(), multiproc::ConnectError>(())
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection, ConnectError> {
        self.accept_until(Deadline::after(timeout))
    }

    /// Closes the listener (Python's `close`); dropping it does the same.
    pub fn close(self) {}

    fn accept_until(&self, deadline: Deadline) -> Result<Connection, ConnectError> {
        if let Some(key) = &self.authkey {
            return self
                .handshakes
                .accept(self, key, self.handshake_timeout, deadline.instant());
        }
        loop {
            if let Some(conn) = self.try_accept()? {
                return Ok(conn);
            }
            let left = deadline.remaining();
            if left == Some(Duration::ZERO) {
                return Err(ConnectError::Timeout);
            }
            sys::poll::wait_readable(&[self.as_fd()], left)?;
        }
    }

    /// Accepts one pending peer, if there is one.
    fn try_accept(&self) -> io::Result<Option<Connection>> {
        let res = match &self.socket {
            Socket::Unix(l) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(false)?;
                Ok((OwnedFd::from(s), true))
            }),
            Socket::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(false)?;
                Ok((OwnedFd::from(s), false))
            }),
        };
        match res {
            Ok((fd, unix)) => {
                if !unix {
                    sys::socket::set_nodelay(&fd);
                }
                Ok(Some(Connection::from_fd(fd, unix, true, true)))
            }
            // Nothing pending, or the peer gave up before we took it.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl handshake::Accept for Listener {
    fn listening(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    fn try_accept(&self) -> io::Result<Option<Connection>> {
        Listener::try_accept(self)
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Socket::Unix(l) => l.as_fd(),
            Socket::Tcp(l) => l.as_fd(),
        }
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticates", &self.authkey.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let Some(file) = &self.socket_file else {
            return;
        };
        if file.pid != std::process::id() {
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&file.path)
            && meta.dev() == file.dev
            && meta.ino() == file.ino
        {
            let _ = std::fs::remove_file(&file.path);
        }
    }
}

/// Which key a listener or a manager's server asks its peers for.
#[derive(Clone, Default)]
pub(crate) enum KeyChoice {
    /// This process's [`authkey`](crate::authkey).
    #[default]
    Default,
    /// A key given by the user.
    Given(Vec<u8>),
    /// None: peers are not authenticated. `anywhere` lifts the refusal on
    /// TCP addresses that are not loopback.
    Without { anywhere: bool },
}

/// Never prints the key.
impl fmt::Debug for KeyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyChoice::Default => f.write_str("the process's authkey"),
            KeyChoice::Given(_) => f.write_str("a given authkey"),
            KeyChoice::Without { anywhere: false } => f.write_str("no authkey, local only"),
            KeyChoice::Without { anywhere: true } => f.write_str("no authkey, any address"),
        }
    }
}

impl KeyChoice {
    /// The key to ask peers of `address` for (`None`: no handshake), or
    /// the refusal to listen on a reachable TCP address without one.
    pub(crate) fn resolve(&self, address: &Address) -> Result<Option<Vec<u8>>, ConnectError> {
        match self {
            KeyChoice::Default => Ok(Some(crate::connection::authkey::authkey()?)),
            KeyChoice::Given(k) => Ok(Some(k.clone())),
            KeyChoice::Without { anywhere } => match address {
                Address::Tcp(addr) if !anywhere && !is_loopback(addr) => {
                    Err(ConnectError::Unauthenticated(*addr))
                }
                _ => Ok(None),
            },
        }
    }
}

/// Whether only this host can reach `addr` (`127.0.0.0/8`, `::1`, or an
/// IPv4-mapped loopback address).
fn is_loopback(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Options for a [`Listener`]: which authkey its peers must hold, or
/// none. Made by [`Listener::builder`].
///
/// Without an authkey, anyone who can reach the address can connect and
/// send messages. On a Unix socket file (mode 0600) that is only this
/// user; on an abstract name or on loopback TCP, any local process; on any
/// other TCP address, any host that can route to it — so binding there
/// without a key is refused ([`ConnectError::Unauthenticated`]) unless
/// [`allow_unauthenticated`](Self::allow_unauthenticated) says it is
/// meant.
///
/// ```
/// use multiproc::{ConnectError, Listener};
///
/// let refused = Listener::builder().no_authkey().bind("0.0.0.0:0");
/// assert!(matches!(refused, Err(ConnectError::Unauthenticated(_))));
/// let keyed = Listener::builder().authkey(b"secret").bind("0.0.0.0:0")?;
/// assert!(keyed.authenticates());
/// # Ok::<(), ConnectError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until it builds"]
pub struct ListenerBuilder {
    key: KeyChoice,
}

impl ListenerBuilder {
    /// A builder with the default: peers must hold this process's
    /// [`authkey`](crate::authkey).
    pub fn new() -> Self {
        Self::default()
    }

    /// Peers must hold `key`.
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.key = KeyChoice::Given(key.to_vec());
        self
    }

    /// No authentication: any peer that can reach the address is accepted.
    /// Only for a Unix socket or a loopback TCP address; binding another
    /// TCP address this way is refused with
    /// [`ConnectError::Unauthenticated`].
    pub fn no_authkey(mut self) -> Self {
        self.key = KeyChoice::Without { anywhere: false };
        self
    }

    /// No authentication, on any address, a public one included: every
    /// host that can reach the port can connect and send messages. Say so
    /// only on a network where that is meant.
    ///
    /// ```
    /// let listener = multiproc::Listener::builder().allow_unauthenticated().bind("0.0.0.0:0")?;
    /// assert!(!listener.authenticates());
    /// # Ok::<(), multiproc::ConnectError>(())
    /// ```
    pub fn allow_unauthenticated(mut self) -> Self {
        self.key = KeyChoice::Without { anywhere: true };
        self
    }

    /// Binds `address` and listens (see [`Listener::bind`]).
    pub fn bind(self, address: impl ToAddress) -> Result<Listener, ConnectError> {
        let address = address.to_address()?;
        let key = self.key_for(&address)?;
        Listener::open(address, key)
    }

    /// The key to ask peers of `address` for (`None`: no handshake), or the
    /// refusal to listen there without one (also what a manager's server
    /// asks its clients for).
    pub(crate) fn key_for(&self, address: &Address) -> Result<Option<Vec<u8>>, ConnectError> {
        self.key.resolve(address)
    }
}

/// Opens connections to a [`Listener`] (Python's
/// `multiprocessing.connection.Client`).
///
/// ```
/// use multiproc::{Client, Listener};
///
/// let path = std::env::temp_dir().join(format!("doc-client-{}.sock", std::process::id()));
/// // Both sides use this process's authkey: the handshake needs the
/// // listener to accept while the client connects.
/// let listener = Listener::bind(&path, None)?;
/// let serving = std::thread::spawn(move || -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
///     let served = listener.accept()?;
///     Ok(served.recv::<(i32, String)>()?.0)
/// });
/// let conn = Client::connect(&path, None)?;
/// conn.send(&(1, "over a Unix socket"))?;
/// assert_eq!(serving.join().unwrap().unwrap(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub enum Client {}

impl Client {
    /// Connects to the listener at `address` and runs the handshake before
    /// returning: the listener must hold `authkey`, or with `None` this
    /// process's [`authkey`](crate::authkey). A listener without a key is
    /// reached with [`connect_unauthenticated`](Self::connect_unauthenticated).
    ///
    /// Like Python's `Client`, this waits as long as the listener takes to
    /// accept; [`connect_timeout`](Self::connect_timeout) bounds the wait.
    /// A wrong key gives [`ConnectError::Auth`].
    pub fn connect(
        address: impl ToAddress,
        authkey: Option<&[u8]>,
    ) -> Result<Connection, ConnectError> {
        let address = address.to_address()?;
        Self::open(address, Some(&key_or_default(authkey)?), None)
    }

    /// Like [`connect`](Self::connect), giving up after `timeout` in all:
    /// [`ConnectError::Timeout`] if the connection itself was not made in
    /// time, [`ConnectError::HandshakeTimeout`] if the listener did not
    /// accept and authenticate in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Client, ConnectError, Listener};
    ///
    /// // A listener that never calls accept:
    /// let listener = Listener::bind("127.0.0.1:0", Some(b"key"))?;
    /// let res = Client::connect_timeout(listener.address(), Some(b"key"), Duration::from_millis(50));
    /// assert!(matches!(res, Err(ConnectError::HandshakeTimeout)));
    /// # Ok::<(), ConnectError>(())
    /// ```
    pub fn connect_timeout(
        address: impl ToAddress,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection, ConnectError> {
        let address = address.to_address()?;
        Self::open(address, Some(&key_or_default(authkey)?), Some(timeout))
    }

    /// Connects to a listener that runs no handshake (one made with
    /// [`ListenerBuilder::no_authkey`] or
    /// [`allow_unauthenticated`](ListenerBuilder::allow_unauthenticated)).
    pub fn connect_unauthenticated(address: impl ToAddress) -> Result<Connection, ConnectError> {
        Self::open(address.to_address()?, None, None)
    }

    /// Like [`connect_unauthenticated`](Self::connect_unauthenticated),
    /// giving up with [`ConnectError::Timeout`] if the connection is not
    /// made within `timeout`.
    pub fn connect_unauthenticated_timeout(
        address: impl ToAddress,
        timeout: Duration,
    ) -> Result<Connection, ConnectError> {
        Self::open(address.to_address()?, None, Some(timeout))
    }

    /// Connects, running the handshake with `authkey` if there is one.
    pub(crate) fn open(
        address: Address,
        authkey: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<Connection, ConnectError> {
        let deadline = Deadline::from_timeout(timeout);
        let timeout = deadline.remaining();
        let timed_out = |e: io::Error| {
            if e.kind() == io::ErrorKind::TimedOut {
                ConnectError::Timeout
            } else {
                ConnectError::Io(e)
            }
        };
        let mut conn = match &address {
            Address::Unix(path) => {
                let fd = sys::socket::connect_unix(path, timeout).map_err(timed_out)?;
                Connection::from_fd(fd, true, true, true)
            }
            Address::Tcp(addr) => {
                let stream = match timeout {
                    None => TcpStream::connect(addr),
                    // A zero timeout is refused by connect_timeout.
                    Some(t) => TcpStream::connect_timeout(addr, t.max(Duration::from_millis(1))),
                }
                .map_err(timed_out)?;
                let fd = OwnedFd::from(stream);
                sys::socket::set_nodelay(&fd);
                Connection::from_fd(fd, false, true, true)
            }
        };
        if let Some(key) = authkey {
            auth::handshake(&mut conn, key, deadline.remaining(), auth::Side::Client)?;
        }
        Ok(conn)
    }
}
