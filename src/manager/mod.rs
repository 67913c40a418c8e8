//! Managers: a server process that owns shared objects — lists, dicts,
//! namespaces, values, queues, locks… — and proxies through which any
//! process manipulates them (Python's `multiprocessing.Manager()`).
//!
//! An update made through a proxy by any process is seen by all: every
//! proxy call is a request to the server, which holds the only copy.
//!
//! ```
//! use multiproc::{Manager, ListProxy, Process};
//!
//! fn insert_record(records: ListProxy<(String, i32)>) {
//!     records.append(&("English".into(), 3)).unwrap();
//! }
//!
//! let manager = Manager::start()?;
//! let records = manager.list(vec![("Computers".to_string(), 1), ("Histoty".to_string(), 5)])?;
//! let mut p = Process::new(insert_record, records.clone());
//! p.start()?;
//! p.join()?;
//! assert_eq!(records.len()?, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! * [`Manager::start`] spawns the server (a copy of the running
//!   executable), listening on a fresh name in Linux's abstract Unix
//!   socket namespace (no file to leave behind, whatever happens to the
//!   processes); [`ManagerBuilder::bind`] serves on any TCP address or path
//!   in the current process, for [`Manager::connect`] from unrelated
//!   processes.
//! * Clients must hold the server's authkey: the one given to the builder,
//!   or else this process's [`authkey`](crate::authkey), which every child
//!   inherits (Python's `current_process().authkey`). A server without a
//!   key is made only on request ([`ManagerBuilder::no_authkey`],
//!   [`ManagerBuilder::allow_unauthenticated`]).
//! * Connections are the crate's [`Listener`] /
//!   [`Client`](crate::Client), authenticated with the authkey (Python
//!   3.12's HMAC handshake). The server runs a thread per connection, so a
//!   blocking call (a queue `get`, a lock `acquire`) blocks only its own
//!   connection.
//! * On the same host (a Unix socket), each connection also gets a
//!   shared-memory mailbox: requests and answers cross in shared memory,
//!   with a brief spin and then a futex wait, so a proxy call costs a few
//!   microseconds instead of a socket round trip and a wake-up. The socket
//!   stays open beside it, carrying what does not fit (messages over
//!   64 KiB) and telling each side when the other is gone.
//! * The server stores values as [`AnyValue`] trees, so any serde type works
//!   without registering it and containers nest. Typed proxies
//!   ([`ListProxy<T>`](crate::ListProxy), …) convert at the client.
//! * A proxy is a handle: cloneable and usable from any thread (each call
//!   borrows a connection from a per-process pool), and serialisable, so
//!   it can be a [`Process`] argument (either start
//!   method) or travel in a message; the receiving process opens its own
//!   connections.
//! * Objects are reference-counted across processes and freed when the
//!   last proxy goes, including when a process dies without cleaning up:
//!   see the server's reference-counting rule in [`ManagerServer`].
//!
//! # Better than Python, on purpose
//!
//! * Atomic read-modify-write on the server: [`Namespace::add`](crate::Namespace::add),
//!   [`DictProxy::add`](crate::DictProxy::add), [`ValueProxy::add`](crate::ValueProxy::add)
//!   (and `mul`): two processes incrementing one counter lose nothing.
//! * Nested containers as live proxies: [`DictProxy::list_at`](crate::DictProxy::list_at)
//!   reaches a list stored in a dict, and its changes stick.
//! * [`Batch`]: many operations in one round trip.
//! * A lock held by a process that dies is released.
//! * A client that dies while waiting takes nothing with it: a `notify`
//!   reaches a waiter that is still there, and a barrier party killed while
//!   waiting breaks the barrier for the next arrival at once.
//! * The server process of [`Manager::start`] ignores `SIGINT` (as
//!   Python's does), so a Ctrl-C in the terminal, which reaches the whole
//!   process group, leaves it to its owner; it still dies with the owner.

//! # Limits
//!
//! * A proxy stored *as a value* inside a managed container is a
//!   one-time handle (the first process to read it back claims its
//!   reference); nest containers instead ([`DictProxy::list_at`](crate::DictProxy::list_at)).
//! * A view on a nested container addresses it by path (key or index): a
//!   list view at index 2 follows whatever is at index 2.
//! * Calls that do not block by nature (list append, dict get…) have no
//!   timeout: a server that is alive but stopped (`SIGSTOP`) holds them.
//!   A server that is gone fails them within a few tenths of a second.
//! * A path into a nested container is at most 64 keys long, and a value
//!   sent to the server at most [`MAX_DEPTH`] levels deep; a tree built
//!   deeper than [`MAX_DEPTH`] by nesting cannot be read back in one piece.
//! * Semaphore permits of a dead process are not given back (only locks
//!   have owners); `notify` does not check that the caller holds the
//!   condition's lock.

mod batch;
mod client;
mod error;
mod factory;
pub(crate) mod handle;
mod mailbox;
mod protocol;
mod proxy;
pub mod python;
mod registry;
mod server;
mod transport;
mod value;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use batch::Batch;
use client::Endpoint;
pub use error::ManagerError;
pub use factory::Factory;
use protocol::Request;
pub use proxy::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy,
    JoinableQueueProxy, ListProxy, LockGuard, LockProxy, Namespace, QueueProxy, RLockProxy,
    RemoteObject, SemaphoreProxy, ValueProxy,
};
use registry::Registry;
pub use registry::{Constructor, Served};
pub use server::ManagerServer;
pub use value::{ConvertError, Dict, MAX_DEPTH, Value as AnyValue, from_value, to_value};

/// The earlier name of [`AnyValue`], kept for code written against it.
#[deprecated(note = "renamed `AnyValue`, so that it is not confused with `multiproc::Value`")]
pub type Value = AnyValue;

use crate::connection::ListenerBuilder;
use crate::connection::{Address, Connection, Listener, ToAddress};
use crate::error::{ConnectError, StartError};
use crate::process::fn_ref::FnRef;
use crate::process::{Process, StartMethod};

/// Default cap on one request the server accepts: 64 MiB.
pub const DEFAULT_MAX_REQUEST: usize = 64 << 20;
/// How long [`Manager::start`] waits for the server to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the server to exit before killing it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a manager's server, and the factory of its objects
/// (Python's `SyncManager`).
///
/// A manager made by [`start`](Self::start) owns its server process and
/// shuts it down when dropped (Python's `with Manager() as manager:`). One
/// made by [`connect`](Self::connect) only talks to a server that runs
/// elsewhere.
pub struct Manager {
    factory: Factory,
    server: Option<Process<()>>,
    /// The process that started the server (a forked copy of the manager
    /// must not stop it).
    owner: i32,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.endpoint().address)
            .field("owns_server", &self.server.is_some())
            .finish()
    }
}

/// Configures a manager before it starts: address, authkey, registered
/// types.
///
/// By default clients must hold this process's [`authkey`](crate::authkey)
/// (children inherit it); [`authkey`](Self::authkey) sets another. A server
/// that lets anyone connect is made only on request:
/// [`no_authkey`](Self::no_authkey) on a Unix socket or loopback TCP,
/// [`allow_unauthenticated`](Self::allow_unauthenticated) on any address.
/// Its requests are typed values, not code (Python's manager protocol
/// runs pickles), but whoever connects can read, change and free every
/// object it holds and stop it: an open port is still an open port.
///
/// ```
/// use multiproc::manager::{AnyValue, ManagerBuilder, Served};
///
/// struct Echo;
/// impl Served for Echo {
///     fn call(&mut self, method: &str, args: AnyValue) -> Result<AnyValue, String> {
///         Ok(AnyValue::Tuple(vec![AnyValue::Str(method.into()), args]))
///     }
/// }
/// fn new_echo(_: AnyValue) -> Result<Box<dyn Served>, String> {
///     Ok(Box::new(Echo))
/// }
///
/// let manager = ManagerBuilder::new().register("Echo", new_echo).start()?;
/// let echo = manager.create("Echo", &())?;
/// let (m, n): (String, i32) = echo.call("hello", &7)?;
/// assert_eq!((m.as_str(), n), ("hello", 7));
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
#[derive(Default)]
#[must_use = "a builder does nothing until it builds"]
pub struct ManagerBuilder {
    address: Option<Address>,
    /// Which key clients must hold (the same choices as a listener's).
    keys: ListenerBuilder,
    registry: Registry,
    max_request: Option<usize>,
}

impl std::fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("address", &self.address)
            .field("registered", &self.registry.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The arguments of the spawned server process.
#[derive(Serialize, Deserialize)]
struct ServerArgs {
    address: String,
    authkey: Option<Vec<u8>>,
    registry: Vec<(String, FnRef<Constructor>)>,
    max_request: u64,
    ready: Connection,
}

/// The server process's target.
fn run_server(args: ServerArgs) {
    // Ctrl-C in a terminal reaches the whole process group: the server
    // stays for its owner (as Python's does), and dies with it.
    let _ = crate::sys::process::ignore_interrupt();
    let bound = args
        .address
        .parse::<Address>()
        .and_then(|a| server::bind(&a));
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            let _ = args.ready.send(&Err::<String, String>(e.to_string()));
            return;
        }
    };
    let server = ManagerServer::new(
        listener,
        registry::from_refs(args.registry),
        args.authkey,
        usize::try_from(args.max_request).unwrap_or(usize::MAX),
    );
    if args
        .ready
        .send(&Ok::<String, String>(server.address().to_string()))
        .is_err()
    {
        return;
    }
    drop(args.ready);
    server.serve_forever();
}

/// A fresh name in the abstract Unix socket namespace: nothing on the
/// file system, gone with the server's socket.
fn fresh_address() -> Result<Address, std::io::Error> {
    let name = format!("\0multiproc-mgr-{}", crate::sys::random::hex(16)?);
    Ok(Address::Unix(name.into()))
}

impl ManagerBuilder {
    /// The address to serve on, and the key to ask clients for.
    fn address_and_key(&self) -> Result<(Address, Option<Vec<u8>>), ConnectError> {
        let address = match &self.address {
            Some(a) => a.clone(),
            None => fresh_address()?,
        };
        let key = self.keys.key_for(&address)?;
        Ok((address, key))
    }
}

impl ManagerBuilder {
    /// A builder with the defaults: a fresh abstract Unix socket name, this
    /// process's [`authkey`](crate::authkey), no registered types.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves on `address` (a Unix socket path or `host:port`; port 0
    /// picks a free port).
    pub fn address(mut self, address: impl ToAddress) -> Result<Self, ManagerError> {
        self.address = Some(address.to_address()?);
        Ok(self)
    }

    /// Requires clients to prove they hold `key` (instead of this
    /// process's [`authkey`](crate::authkey)).
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.keys = self.keys.authkey(key);
        self
    }

    /// Lets clients in without an authkey (they connect with
    /// [`Manager::connect_unauthenticated`]). Only on a Unix socket or a
    /// loopback TCP address: serving another TCP address this way is
    /// refused with [`ConnectError::Unauthenticated`] (see
    /// [`allow_unauthenticated`](Self::allow_unauthenticated)).
    ///
    /// ```
    /// use multiproc::manager::{Manager, ManagerBuilder, ManagerError};
    /// use multiproc::ConnectError;
    ///
    /// let open = ManagerBuilder::new().address("0.0.0.0:0")?.no_authkey().bind();
    /// assert!(matches!(open, Err(ManagerError::Connect(ConnectError::Unauthenticated(_)))));
    ///
    /// let m = ManagerBuilder::new().no_authkey().start()?;
    /// let other = Manager::connect_unauthenticated(m.address())?;
    /// assert_eq!(other.list([1, 2])?.len()?, 2);
    /// # Ok::<(), ManagerError>(())
    /// ```
    pub fn no_authkey(mut self) -> Self {
        self.keys = self.keys.no_authkey();
        self
    }

    /// Lets clients in without an authkey on any address, a public TCP
    /// address included: every host that can reach the port can read,
    /// change and free the server's objects and stop it. Say so only on a
    /// network where that is meant.
    pub fn allow_unauthenticated(mut self) -> Self {
        self.keys = self.keys.allow_unauthenticated();
        self
    }

    /// Caps the size of one request (default [`DEFAULT_MAX_REQUEST`]); a
    /// larger one closes the client's connection.
    pub fn max_request(mut self, bytes: usize) -> Self {
        self.max_request = Some(bytes);
        self
    }

    /// Registers a type the server can build by name with
    /// [`Factory::create`] (Python's `BaseManager.register`). Register
    /// before starting; the constructor must be a plain function of this
    /// executable.
    pub fn register(mut self, typeid: &str, constructor: Constructor) -> Self {
        self.registry.insert(typeid.to_string(), constructor);
        self
    }

    /// Starts the server in a new process (spawn start method) and
    /// connects to it.
    pub fn start(self) -> Result<Manager, ManagerError> {
        let (address, authkey) = self.address_and_key().map_err(|e| match e {
            // The OS random source failed (for the name or the key).
            ConnectError::Io(e) => ManagerError::Start(StartError::Io(e)),
            e => ManagerError::Connect(e),
        })?;
        let (ours, theirs) =
            crate::connection::pipe().map_err(|e| ManagerError::Server(e.to_string()))?;
        let args = ServerArgs {
            address: address.to_string(),
            authkey: authkey.clone(),
            registry: registry::to_refs(&self.registry),
            max_request: self.max_request.unwrap_or(DEFAULT_MAX_REQUEST) as u64,
            ready: theirs,
        };
        let mut process = Process::new(run_server, args)
            .name("SyncManager")
            .daemon(true)
            .start_method(StartMethod::Spawn);
        process.start()?;
        let bound = match ours.recv_timeout::<Result<String, String>>(START_TIMEOUT) {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                let _ = process.join_timeout(STOP_TIMEOUT);
                return Err(ManagerError::Server(e));
            }
            Err(e) => {
                let _ = process.kill();
                let _ = process.join_timeout(STOP_TIMEOUT);
                return Err(ManagerError::Server(format!("did not start: {e}")));
            }
        };
        let address: Address = bound.parse()?;
        Ok(Manager {
            factory: Factory::new(Endpoint::get(address, authkey)),
            server: Some(process),
            owner: crate::sys::process::getpid(),
        })
    }

    /// Binds a server in this process, to be run with
    /// [`ManagerServer::serve_forever`] (Python's
    /// `BaseManager.get_server()`). Clients must hold the key (see the
    /// type's documentation); a Unix socket file is made owner-only (mode
    /// 0600, whatever the umask).
    ///
    /// ```
    /// use multiproc::manager::{Manager, ManagerBuilder};
    ///
    /// let server = ManagerBuilder::new().address("127.0.0.1:0")?.authkey(b"secret").bind()?;
    /// let address = server.address().clone();
    /// let serving = std::thread::spawn(move || server.serve_forever());
    ///
    /// let client = Manager::connect(&address, Some(b"secret"))?;
    /// let ns = client.namespace()?;
    /// ns.set("x", &1)?;
    /// assert_eq!(ns.to_string(), "Namespace(x=1)");
    /// drop(ns);
    /// client.shutdown_server()?;
    /// serving.join().unwrap();
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn bind(self) -> Result<ManagerServer, ManagerError> {
        let (address, authkey) = self.address_and_key()?;
        let listener = Listener::bind_raw(&address)?;
        Ok(ManagerServer::new(
            listener,
            self.registry,
            authkey,
            self.max_request.unwrap_or(DEFAULT_MAX_REQUEST),
        ))
    }
}

/// A manager makes objects: `manager.list(…)`, `manager.queue(…)`, … are
/// [`Factory`] methods.
impl std::ops::Deref for Manager {
    type Target = Factory;

    fn deref(&self) -> &Factory {
        &self.factory
    }
}

impl Manager {
    fn endpoint(&self) -> &Arc<Endpoint> {
        &self.factory.endpoint
    }

    /// Starts a manager with the defaults (Python's
    /// `multiprocessing.Manager()`); see [`ManagerBuilder`] for options.
    pub fn start() -> Result<Manager, ManagerError> {
        ManagerBuilder::new().start()
    }

    /// A builder for a manager with options.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::new()
    }

    /// Connects to a server that runs elsewhere (started by
    /// [`ManagerBuilder::bind`] in another program, or by another
    /// process's [`start`](Self::start)), checking that it answers. The
    /// server must hold `authkey`, or with `None` this process's
    /// [`authkey`](crate::authkey) (Python's default too).
    pub fn connect(
        address: impl ToAddress,
        authkey: Option<&[u8]>,
    ) -> Result<Manager, ManagerError> {
        let address = address.to_address()?;
        let key = match authkey {
            Some(k) => k.to_vec(),
            None => crate::connection::authkey::authkey().map_err(ConnectError::Io)?,
        };
        Self::connect_with(address, Some(key))
    }

    /// Connects to a server that asks for no authkey (made with
    /// [`ManagerBuilder::no_authkey`] or
    /// [`allow_unauthenticated`](ManagerBuilder::allow_unauthenticated)).
    pub fn connect_unauthenticated(address: impl ToAddress) -> Result<Manager, ManagerError> {
        Self::connect_with(address.to_address()?, None)
    }

    fn connect_with(address: Address, key: Option<Vec<u8>>) -> Result<Manager, ManagerError> {
        let endpoint = Endpoint::get(address, key);
        endpoint.call(&Request::Stats)?;
        Ok(Manager {
            factory: Factory::new(endpoint),
            server: None,
            owner: crate::sys::process::getpid(),
        })
    }

    /// The server's address.
    pub fn address(&self) -> &Address {
        &self.endpoint().address
    }

    /// The authkey clients must hold (to hand to
    /// [`connect`](Self::connect) in another program); `None` for a server
    /// that asks for none.
    pub fn authkey(&self) -> Option<&[u8]> {
        self.endpoint().authkey.as_deref()
    }

    /// The server process's id, for a manager that started one.
    pub fn pid(&self) -> Option<i32> {
        self.server.as_ref().and_then(Process::pid)
    }

    /// A factory whose objects are *named* on the server: the first call
    /// for a name creates the object (from the arguments given then), and
    /// every later call, from any process, returns the same object. The
    /// server keeps a named object until [`forget`](Self::forget) or until
    /// it stops. This is how separate programs share objects through a
    /// remote manager (Python registers a function returning a global
    /// object for that).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let jobs = manager.named("jobs").queue::<String>(0)?;
    /// jobs.put(&"first".into())?;
    /// // Elsewhere (another process, another program connected to it):
    /// let same = manager.named("jobs").queue::<String>(0)?;
    /// assert_eq!(same.get()?, "first");
    /// // A name holds one kind of object.
    /// assert!(manager.named("jobs").list::<i32>([]).is_err());
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn named(&self, name: &str) -> Factory {
        Factory {
            endpoint: self.factory.endpoint.clone(),
            name: Some(name.to_string()),
        }
    }

    /// Drops the server's reference to the object named `name` (it is
    /// freed once no proxy holds it); `Ok(false)` if no such name.
    pub fn forget(&self, name: &str) -> Result<bool, ManagerError> {
        proxy::flag(self.endpoint().call(&Request::Unname(name.to_string()))?)
    }

    /// An empty [`Batch`] for this manager.
    pub fn batch(&self) -> Batch {
        Batch::new(self.endpoint().clone())
    }

    /// How many objects the server holds now (freed ones excluded).
    pub fn object_count(&self) -> Result<usize, ManagerError> {
        match self.endpoint().call(&Request::Stats)? {
            AnyValue::Tuple(v) if v.len() == 3 => proxy::count(v[0].clone()),
            _ => Err(ManagerError::Protocol("malformed stats".into())),
        }
    }

    /// Asks the server to stop, whoever started it. Its objects are gone
    /// and later calls through any proxy fail with
    /// [`ManagerError::Disconnected`].
    pub fn shutdown_server(&self) -> Result<(), ManagerError> {
        self.endpoint().call(&Request::Shutdown).map(drop)
    }

    /// Stops the server this manager started and waits for it to exit
    /// (killing it if it does not within 5 s). Dropping the manager does
    /// the same. For a [`connect`](Self::connect)ed manager, or a copy
    /// inherited by a forked child, this does nothing; see
    /// [`shutdown_server`](Self::shutdown_server).
    pub fn shutdown(&mut self) -> Result<(), ManagerError> {
        if self.owner != crate::sys::process::getpid() {
            // A copy inherited across fork: the server is the parent's.
            std::mem::forget(self.server.take());
            return Ok(());
        }
        let Some(mut process) = self.server.take() else {
            return Ok(());
        };
        let asked = self.endpoint().call(&Request::Shutdown);
        let joined = process.join_timeout(STOP_TIMEOUT);
        // A server that was killed leaves its socket file behind (an
        // abstract name has none).
        if let Address::Unix(path) = &self.endpoint().address
            && !self.endpoint().address.is_abstract()
            && !matches!(joined, Err(crate::error::JoinError::Timeout(_)))
        {
            let _ = std::fs::remove_file(path);
        }
        match joined {
            Ok(()) => Ok(()),
            Err(crate::error::JoinError::Timeout(_)) => {
                let _ = process.kill();
                let _ = process.join_timeout(STOP_TIMEOUT);
                if let Address::Unix(path) = &self.endpoint().address
                    && !self.endpoint().address.is_abstract()
                {
                    let _ = std::fs::remove_file(path);
                }
                Err(ManagerError::Server(
                    "did not stop in time and was killed".into(),
                ))
            }
            // Killed from outside, or already gone.
            Err(e) => match asked {
                Err(ManagerError::Disconnected) => Ok(()),
                _ => Err(e.into()),
            },
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
