//! Python's manager protocol, both ways: [`connect`] is a client for a
//! Python manager (a Rust process creates and uses the shared objects of a
//! Python `multiprocessing.managers.SyncManager`, or of any `BaseManager`
//! with `register`ed typeids, as Python's proxies do), and [`serve`] is a
//! server that Python clients use for `list`, `dict` and `Namespace`.
//!
//! The protocol is the one of CPython's `Lib/multiprocessing/managers.py`,
//! over [`Connection`]s with the pickle codec ([`crate::codec::pickle`]):
//!
//! - every control request (`create`, `incref`, `decref`, `shutdown`,
//!   `number_of_objects`) opens a connection, authenticates, sends the
//!   pickle of `(None, name, args, {})` and reads `(kind, result)`;
//! - method calls go over one long-lived connection, opened with
//!   `accept_connection`, as `(ident, method, args, {})`;
//! - a reply is `('#RETURN', value)`, `('#PROXY', (exposed, token))` for a
//!   method whose result is itself a shared object, `('#ERROR', exception)`
//!   when the method raised, or `('#TRACEBACK', text)` /
//!   `('#UNSERIALIZABLE', text)` when the server failed.
//!
//! `create` leaves the new object with one reference, which the returned
//! [`PyProxy`] owns: dropping it sends `decref`.
//!
//! # Class references in replies
//!
//! A `#PROXY` reply holds a pickled `multiprocessing.managers.Token`, and
//! an `#ERROR` reply a pickled exception. The decoder refuses class
//! references in general ([`PickleError::Global`]); here it also accepts
//! `multiprocessing.managers.Token` and `RemoteError`, the built-in
//! exception classes (`builtins.*Error`, `*Exception`, `*Warning`,
//! `StopIteration`) and `queue.Empty`/`queue.Full`. None is ever
//! instantiated: the scanner only checks the names, and `serde-pickle`
//! reads such an instance as plain data, its constructor arguments or its
//! state (a `Token` becomes the tuple `(typeid, address, id)`, an exception
//! the tuple of its arguments). A reply naming any other class is refused
//! with [`PickleError::Global`], so a method returning an instance of a
//! user's class cannot be read here; return plain data instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::pickle::{self, HashableValue, PickleError, Value};
use crate::connection::{Address, Client, Connection, ToAddress};
use crate::error::{ConnectError, RecvError, SendError};
use crate::local_lock::lock;
use crate::wait::SLICE;

/// A call to a Python manager failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PyManagerError {
    /// Connecting or authenticating failed.
    #[error("cannot reach the Python manager: {0}")]
    Connect(#[from] ConnectError),
    /// Sending a request failed.
    #[error("cannot send to the Python manager: {0}")]
    Send(#[from] SendError),
    /// Receiving a reply failed.
    #[error("cannot receive from the Python manager: {0}")]
    Recv(#[from] RecvError),
    /// A request or reply could not be pickled or unpickled as asked.
    #[error("{0}")]
    Pickle(#[from] PickleError),
    /// The method raised a Python exception.
    #[error("the Python method raised {exception}{args}")]
    Raised {
        /// The exception class, e.g. `KeyError` or `queue.Empty`.
        exception: String,
        /// Its arguments.
        args: Value,
    },
    /// The server failed; the Python traceback (`#TRACEBACK`) or the
    /// reason a result could not be pickled (`#UNSERIALIZABLE`).
    #[error("the Python manager failed: {0}")]
    Remote(String),
    /// The server answered something the protocol does not allow.
    #[error("unexpected reply from the Python manager: {0}")]
    Protocol(String),
}

/// Connects to the Python manager listening at `address` with `authkey`
/// (its `BaseManager(address, authkey)`), checking it answers.
///
/// ```no_run
/// use multiproc::manager::python;
///
/// // A Python SyncManager started with
/// //   SyncManager(address=("127.0.0.1", 50000), authkey=b"secret")
/// let manager = python::connect("127.0.0.1:50000", b"secret")?;
/// let list = manager.list(&[1, 2, 3])?;
/// list.call::<()>("append", (4,))?;
/// assert_eq!(list.call::<usize>("__len__", ())?, 4);
/// let all: Vec<i32> = list.value()?;
/// # Ok::<(), python::PyManagerError>(())
/// ```
pub fn connect(address: impl ToAddress, authkey: &[u8]) -> Result<PyManager, PyManagerError> {
    let address = address.to_address()?;
    let inner = Inner {
        address,
        authkey: authkey.to_vec(),
        calls: Mutex::new(None),
    };
    // `BaseManager.connect` sends 'dummy' the same way.
    inner.control("dummy", Vec::new())?;
    Ok(PyManager {
        inner: Arc::new(inner),
    })
}

/// A connection to a Python manager (see [`connect`]).
#[derive(Clone)]
pub struct PyManager {
    inner: Arc<Inner>,
}

struct Inner {
    address: Address,
    authkey: Vec<u8>,
    /// The method-call connection, opened on first use.
    calls: Mutex<Option<Connection>>,
}

/// A shared object living in a Python manager. Dropping it releases the
/// reference it holds (`decref`).
pub struct PyProxy {
    inner: Arc<Inner>,
    typeid: String,
    id: String,
    exposed: Vec<String>,
}

impl std::fmt::Debug for PyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the authkey.
        f.debug_struct("PyManager")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PyProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyProxy")
            .field("typeid", &self.typeid)
            .field("id", &self.id)
            .finish()
    }
}

impl PyManager {
    /// Creates a shared object of the registered `typeid`, passing `args`
    /// (a tuple; `()` for none) to its constructor, as Python's
    /// `manager.<typeid>(*args)`.
    pub fn create(&self, typeid: &str, args: impl Serialize) -> Result<PyProxy, PyManagerError> {
        let mut all = vec![Value::String(typeid.into())];
        all.extend(args_tuple(&args)?);
        let reply = self.inner.control("create", all)?;
        let (id, exposed) = pair(reply)
            .map_err(|other| PyManagerError::Protocol(format!("create returned {other}")))?;
        Ok(PyProxy {
            inner: Arc::clone(&self.inner),
            typeid: typeid.to_string(),
            id: string(id, "an object id")?,
            exposed: strings(exposed)?,
        })
    }

    /// `manager.list(items)`.
    pub fn list<T: Serialize>(&self, items: &[T]) -> Result<PyProxy, PyManagerError> {
        self.create("list", (items,))
    }

    /// `manager.dict()`, empty.
    pub fn dict(&self) -> Result<PyProxy, PyManagerError> {
        self.create("dict", ())
    }

    /// `manager.Namespace()`; use [`PyProxy::getattr`] and [`PyProxy::setattr`].
    pub fn namespace(&self) -> Result<PyProxy, PyManagerError> {
        self.create("Namespace", ())
    }

    /// `manager.Value(typecode, value)`, e.g. `("i", 5)`; methods `get`, `set`.
    pub fn value<T: Serialize>(&self, typecode: &str, value: T) -> Result<PyProxy, PyManagerError> {
        self.create("Value", (typecode, value))
    }

    /// `manager.Queue()`; methods `put`, `get`, `get_nowait`, `qsize`, …
    pub fn queue(&self) -> Result<PyProxy, PyManagerError> {
        self.create("Queue", ())
    }

    /// `manager.Lock()`; methods `acquire`, `release`.
    pub fn lock(&self) -> Result<PyProxy, PyManagerError> {
        self.create("Lock", ())
    }

    /// `manager.Event()`; methods `set`, `clear`, `is_set`, `wait`.
    pub fn event(&self) -> Result<PyProxy, PyManagerError> {
        self.create("Event", ())
    }

    /// How many shared objects the server holds references to.
    pub fn number_of_objects(&self) -> Result<usize, PyManagerError> {
        let n = self.inner.control("number_of_objects", Vec::new())?;
        from_value(n)
    }

    /// Asks the server process to shut down (Python's `manager.shutdown()`
    /// for a server this process did not start).
    pub fn shutdown(&self) -> Result<(), PyManagerError> {
        self.inner.control("shutdown", Vec::new())?;
        Ok(())
    }
}

impl PyProxy {
    /// Calls the exposed `method` with `args` (a tuple; `()` for none) and
    /// converts the result to `R`, as Python's `proxy._callmethod`.
    ///
    /// A method registered to return a shared object (`method_to_typeid`)
    /// is called with [`call_proxy`](Self::call_proxy) instead.
    pub fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<R, PyManagerError> {
        match self.call_raw(method, args_tuple(&args)?)? {
            Reply::Value(v) => from_value(v),
            Reply::Proxy { typeid, .. } => Err(PyManagerError::Protocol(format!(
                "{method} returned a shared {typeid}; use call_proxy"
            ))),
        }
    }

    /// Calls `method` and returns the result as a dynamic [`Value`].
    pub fn call_value(&self, method: &str, args: Vec<Value>) -> Result<Value, PyManagerError> {
        match self.call_raw(method, args)? {
            Reply::Value(v) => Ok(v),
            Reply::Proxy { typeid, .. } => Err(PyManagerError::Protocol(format!(
                "{method} returned a shared {typeid}; use call_proxy"
            ))),
        }
    }

    /// Calls a method whose result is itself a shared object (a
    /// `method_to_typeid` entry on the Python side) and returns its proxy.
    pub fn call_proxy(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<PyProxy, PyManagerError> {
        match self.call_raw(method, args_tuple(&args)?)? {
            Reply::Proxy {
                typeid,
                id,
                exposed,
            } => Ok(PyProxy {
                inner: Arc::clone(&self.inner),
                typeid,
                id,
                exposed,
            }),
            Reply::Value(v) => Err(PyManagerError::Protocol(format!(
                "{method} returned {v}, not a shared object"
            ))),
        }
    }

    /// A copy of the whole object (`proxy._getvalue()`).
    pub fn value<R: DeserializeOwned>(&self) -> Result<R, PyManagerError> {
        self.call("#GETVALUE", ())
    }

    /// An attribute of a `Namespace` (`ns.name`).
    pub fn getattr<R: DeserializeOwned>(&self, name: &str) -> Result<R, PyManagerError> {
        self.call("__getattribute__", (name,))
    }

    /// Sets an attribute of a `Namespace` (`ns.name = value`).
    pub fn setattr<T: Serialize>(&self, name: &str, value: T) -> Result<(), PyManagerError> {
        self.call("__setattr__", (name, value))
    }

    /// The registered typeid (`"list"`, `"Queue"`, …).
    pub fn typeid(&self) -> &str {
        &self.typeid
    }

    /// The server's id of the object.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The methods the server lets this proxy call.
    pub fn exposed(&self) -> &[String] {
        &self.exposed
    }

    fn call_raw(&self, method: &str, args: Vec<Value>) -> Result<Reply, PyManagerError> {
        let mut slot = lock(&self.inner.calls);
        if slot.is_none() {
            let conn = self.inner.open()?;
            let name = format!("multiproc-{}", std::process::id());
            request(
                &conn,
                None,
                "accept_connection",
                vec![Value::String(name)],
                None,
            )?;
            *slot = Some(conn);
        }
        let conn = slot.as_ref().expect("opened above");
        let res = request(conn, Some(&self.id), method, args, None);
        if matches!(res, Err(PyManagerError::Send(_) | PyManagerError::Recv(_))) {
            // The stream may be out of step; the next call reconnects.
            *slot = None;
        }
        res
    }
}

impl Drop for PyProxy {
    fn drop(&mut self) {
        // The server may already be gone; the reference dies with it then.
        // A stopped or wedged server must not hang the drop.
        let _ = self.inner.control_within(
            "decref",
            vec![Value::String(self.id.clone())],
            Some(DROP_TIMEOUT),
        );
    }
}

/// How long dropping a proxy waits for the server to take its `decref`.
const DROP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Inner {
    fn open(&self) -> Result<Connection, PyManagerError> {
        Ok(Client::connect(&self.address, Some(&self.authkey))?)
    }

    /// One control request on a connection of its own.
    fn control(&self, name: &str, args: Vec<Value>) -> Result<Value, PyManagerError> {
        self.control_within(name, args, None)
    }

    /// [`control`](Self::control), giving up after `timeout` in all.
    fn control_within(
        &self,
        name: &str,
        args: Vec<Value>,
        timeout: Option<std::time::Duration>,
    ) -> Result<Value, PyManagerError> {
        let conn = match timeout {
            None => self.open()?,
            Some(t) => Client::connect_timeout(&self.address, Some(&self.authkey), t)?,
        };
        match request(&conn, None, name, args, timeout)? {
            Reply::Value(v) => Ok(v),
            Reply::Proxy { .. } => {
                Err(PyManagerError::Protocol(format!("{name} returned a proxy")))
            }
        }
    }
}

enum Reply {
    Value(Value),
    Proxy {
        typeid: String,
        id: String,
        exposed: Vec<String>,
    },
}

/// Sends `(ident, name, args, {})` and reads the `(kind, result)` reply.
fn request(
    conn: &Connection,
    ident: Option<&str>,
    name: &str,
    args: Vec<Value>,
    timeout: Option<std::time::Duration>,
) -> Result<Reply, PyManagerError> {
    let msg = Value::Tuple(vec![
        ident.map_or(Value::None, |s| Value::String(s.into())),
        Value::String(name.into()),
        Value::Tuple(args),
        Value::Dict(Default::default()),
    ]);
    conn.send_bytes(&pickle::value_to_vec(&msg)?)?;
    let bytes = match timeout {
        None => conn.recv_bytes()?,
        Some(t) => conn.recv_bytes_timeout(t)?,
    };
    let (reply, globals) = pickle::value_from_slice_allowing(&bytes, &manager_global)?;
    let (kind, result) =
        pair(reply).map_err(|other| PyManagerError::Protocol(format!("{other}")))?;
    match string(kind, "a reply kind")?.as_str() {
        "#RETURN" => Ok(Reply::Value(result)),
        "#PROXY" => {
            // (exposed, Token) with the token read as (typeid, address, id).
            let Value::Tuple(v) = result else {
                return Err(PyManagerError::Protocol(format!("#PROXY {result}")));
            };
            let [exposed, Value::Tuple(token)] = <[Value; 2]>::try_from(v)
                .map_err(|v| PyManagerError::Protocol(format!("#PROXY {v:?}")))?
            else {
                return Err(PyManagerError::Protocol("#PROXY without a token".into()));
            };
            let [typeid, _address, id] = <[Value; 3]>::try_from(token)
                .map_err(|t| PyManagerError::Protocol(format!("token {t:?}")))?;
            Ok(Reply::Proxy {
                typeid: string(typeid, "a typeid")?,
                id: string(id, "an object id")?,
                exposed: strings(exposed)?,
            })
        }
        "#ERROR" => {
            // The exception class is the last global named (an exception's
            // arguments may name others before it only inside them).
            let exception = globals
                .iter()
                .rev()
                .find(|(m, n)| manager_global(m, n) && *n != "Token")
                .map(|(m, n)| {
                    if m == "builtins" {
                        n.clone()
                    } else {
                        format!("{m}.{n}")
                    }
                })
                .unwrap_or_else(|| "an exception".into());
            Err(PyManagerError::Raised {
                exception,
                args: result,
            })
        }
        "#TRACEBACK" | "#UNSERIALIZABLE" => Err(PyManagerError::Remote(match result {
            Value::String(s) => s,
            other => other.to_string(),
        })),
        other => Err(PyManagerError::Protocol(format!("reply kind {other:?}"))),
    }
}

/// The classes a manager's replies may name, read as plain data.
fn manager_global(module: &str, name: &str) -> bool {
    match module {
        "multiprocessing.managers" => matches!(name, "Token" | "RemoteError"),
        "builtins" => {
            name.ends_with("Error")
                || name.ends_with("Exception")
                || name.ends_with("Warning")
                || name == "StopIteration"
        }
        "queue" | "_queue" => matches!(name, "Empty" | "Full"),
        _ => false,
    }
}

/// `args` as the positional arguments of a call: a tuple or a list is
/// spread, `()` means none, anything else is the one argument.
fn args_tuple<A: Serialize + ?Sized>(args: &A) -> Result<Vec<Value>, PyManagerError> {
    let v = serde_pickle::to_value(args).map_err(|e| PickleError::Encode(e.to_string()))?;
    Ok(match v {
        Value::None => Vec::new(),
        Value::Tuple(items) => items,
        other => vec![other],
    })
}

fn from_value<R: DeserializeOwned>(v: Value) -> Result<R, PyManagerError> {
    serde_pickle::from_value(v).map_err(|e| {
        let text = e.to_string();
        PyManagerError::Pickle(if text.contains("integer") {
            PickleError::IntOverflow(text)
        } else {
            PickleError::Type(text)
        })
    })
}

/// The two elements of a 2-tuple, or the value back if it is not one.
fn pair(v: Value) -> Result<(Value, Value), Value> {
    match v {
        Value::Tuple(v) if v.len() == 2 => {
            let mut it = v.into_iter();
            Ok((
                it.next().unwrap_or(Value::None),
                it.next().unwrap_or(Value::None),
            ))
        }
        other => Err(other),
    }
}

fn string(v: Value, what: &str) -> Result<String, PyManagerError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(PyManagerError::Protocol(format!(
            "expected {what}, got {other}"
        ))),
    }
}

fn strings(v: Value) -> Result<Vec<String>, PyManagerError> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .into_iter()
            .map(|s| string(s, "a method name"))
            .collect(),
        Value::Set(items) | Value::FrozenSet(items) => items
            .into_iter()
            .map(|s| match s {
                HashableValue::String(s) => Ok(s),
                other => Err(PyManagerError::Protocol(format!(
                    "expected a method name, got {other:?}"
                ))),
            })
            .collect(),
        other => Err(PyManagerError::Protocol(format!(
            "expected method names, got {other}"
        ))),
    }
}

/// A manager server that Python clients use: `BaseManager(address,
/// authkey).connect()` (or `SyncManager`), then `manager.list(...)`,
/// `manager.dict()`, `manager.Namespace()` and their proxies, as against a
/// Python manager. [`connect`] works against it too, so Rust and Python
/// processes can share the same objects.
///
/// This is a server mode of its own: the crate's [`Manager`](crate::Manager)
/// speaks the crate's protocol (its codec, handles), this one speaks
/// Python's (pickles). It holds the objects as pickle [`Value`]s in this
/// process, serves each connection on a thread, and stops when dropped.
/// Differences from a Python manager: only the typeids `list`, `dict` and
/// `Namespace`; a method that fails answers `#TRACEBACK`, so the Python
/// caller sees `RemoteError` (e.g. `RemoteError('KeyError: ...')`) rather
/// than the original exception class; `keys()`, `values()` and `items()`
/// return lists; a request holding anything but plain data is refused.
///
/// ```
/// use multiproc::manager::python;
///
/// let server = python::serve("127.0.0.1:0", b"secret")?;
/// let client = python::connect(server.address(), b"secret")?;
/// let list = client.list(&[1, 2])?;
/// list.call::<()>("append", (3,))?;
/// assert_eq!(list.value::<Vec<i32>>()?, [1, 2, 3]);
/// # Ok::<(), python::PyManagerError>(())
/// ```
pub fn serve(address: impl ToAddress, authkey: &[u8]) -> Result<PyServer, PyManagerError> {
    let listener = crate::connection::Listener::bind(address, Some(authkey))?;
    let address = listener.address().clone();
    let shared = Arc::new(Served {
        objects: Mutex::new(std::collections::HashMap::new()),
        next_id: std::sync::atomic::AtomicU64::new(1),
        stop: std::sync::atomic::AtomicBool::new(false),
    });
    let s = Arc::clone(&shared);
    let accepter = std::thread::Builder::new()
        .name("python-manager".into())
        .spawn(move || accept_loop(listener, s))
        .map_err(|e| PyManagerError::Connect(ConnectError::Io(e)))?;
    Ok(PyServer {
        address,
        shared,
        accepter: Some(accepter),
    })
}

/// A running [`serve`] server; dropping it stops accepting and ends the
/// connections as they next ask for something.
pub struct PyServer {
    address: Address,
    shared: Arc<Served>,
    accepter: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for PyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyServer")
            .field("address", &self.address)
            .field("running", &self.accepter.is_some())
            .finish_non_exhaustive()
    }
}

impl PyServer {
    /// Where Python clients connect (with port 0 bound, the port chosen).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// How many objects are alive (referenced by some proxy).
    pub fn number_of_objects(&self) -> usize {
        lock(&self.shared.objects).len()
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.accepter.take() {
            let _ = t.join();
        }
    }
}

struct Served {
    /// id -> (object, reference count)
    objects: Mutex<std::collections::HashMap<String, (Obj, u64)>>,
    next_id: std::sync::atomic::AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

enum Obj {
    List(Vec<Value>),
    Dict(std::collections::BTreeMap<HashableValue, Value>),
    Namespace(std::collections::BTreeMap<String, Value>),
}

const LIST_METHODS: &[&str] = &[
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__len__",
    "__setitem__",
    "append",
    "count",
    "extend",
    "index",
    "insert",
    "pop",
    "remove",
    "reverse",
];
const DICT_METHODS: &[&str] = &[
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__len__",
    "__setitem__",
    "clear",
    "copy",
    "get",
    "items",
    "keys",
    "pop",
    "setdefault",
    "update",
    "values",
];
const NAMESPACE_METHODS: &[&str] = &["__getattribute__", "__setattr__", "__delattr__"];

fn accept_loop(listener: crate::connection::Listener, shared: Arc<Served>) {
    use std::sync::atomic::Ordering;
    let mut workers = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        // A peer with a wrong key or a broken handshake fails alone.
        if let Ok(conn) = listener.accept_timeout(SLICE) {
            let s = Arc::clone(&shared);
            if let Ok(t) = std::thread::Builder::new()
                .name("python-manager-conn".into())
                .spawn(move || serve_connection(conn, s))
            {
                workers.push(t);
            }
        }
        workers.retain(|t| !t.is_finished());
    }
    for t in workers {
        let _ = t.join();
    }
}

/// Serves requests on one connection until the peer hangs up or the
/// server stops.
fn serve_connection(conn: Connection, shared: Arc<Served>) {
    use std::sync::atomic::Ordering;
    loop {
        let bytes = match conn.recv_bytes_timeout(SLICE) {
            Ok(b) => b,
            Err(RecvError::Timeout) if !shared.stop.load(Ordering::Acquire) => continue,
            Err(_) => return,
        };
        let reply = match pickle::value_from_slice(&bytes) {
            Ok(request) => handle(&shared, request),
            Err(e) => Err(format!("the request is refused: {e}")),
        };
        let (kind, value) = match reply {
            Ok(v) => ("#RETURN", v),
            Err(text) => ("#TRACEBACK", Value::String(text)),
        };
        let msg = Value::Tuple(vec![Value::String(kind.into()), value]);
        let Ok(out) = pickle::value_to_vec(&msg) else {
            return;
        };
        if conn.send_bytes(&out).is_err() {
            return;
        }
    }
}

/// One request `(ident, name, args, kwds)`; the error is the text of a
/// `#TRACEBACK` reply.
fn handle(shared: &Served, request: Value) -> Result<Value, String> {
    let Value::Tuple(parts) = request else {
        return Err("a request is a 4-tuple".into());
    };
    let Ok([ident, name, args, kwds]) = <[Value; 4]>::try_from(parts) else {
        return Err("a request is a 4-tuple".into());
    };
    let Value::String(name) = name else {
        return Err("the method name is not a string".into());
    };
    let args = match args {
        Value::Tuple(a) | Value::List(a) => a,
        Value::None => Vec::new(),
        other => return Err(format!("arguments {other} are not a tuple")),
    };
    let kwds = match kwds {
        Value::Dict(d) => d,
        _ => Default::default(),
    };
    match ident {
        Value::None => control(shared, &name, args, kwds),
        Value::String(id) => {
            let mut objects = lock(&shared.objects);
            let Some((obj, _)) = objects.get_mut(&id) else {
                return Err(format!("KeyError: {id:?} (no such shared object)"));
            };
            call_method(obj, &name, args)
        }
        other => Err(format!("bad object id {other}")),
    }
}

fn control(
    shared: &Served,
    name: &str,
    args: Vec<Value>,
    kwds: std::collections::BTreeMap<HashableValue, Value>,
) -> Result<Value, String> {
    let mut args = args.into_iter();
    match name {
        "dummy" | "accept_connection" => Ok(Value::None),
        "number_of_objects" => Ok(Value::I64(lock(&shared.objects).len() as i64)),
        "create" => {
            let typeid = match args.next() {
                Some(Value::String(t)) => t,
                _ => return Err("create needs a typeid".into()),
            };
            let (obj, exposed) = match typeid.as_str() {
                "list" => (
                    Obj::List(match args.next() {
                        None => Vec::new(),
                        Some(Value::List(v) | Value::Tuple(v)) => v,
                        Some(other) => return Err(format!("TypeError: list({other})")),
                    }),
                    LIST_METHODS,
                ),
                "dict" => {
                    let mut d = match args.next() {
                        None => Default::default(),
                        Some(Value::Dict(d)) => d,
                        Some(other) => return Err(format!("TypeError: dict({other})")),
                    };
                    d.extend(kwds);
                    (Obj::Dict(d), DICT_METHODS)
                }
                "Namespace" => {
                    let mut ns = std::collections::BTreeMap::new();
                    for (k, v) in kwds {
                        if let HashableValue::String(k) = k {
                            ns.insert(k, v);
                        }
                    }
                    (Obj::Namespace(ns), NAMESPACE_METHODS)
                }
                other => return Err(format!("KeyError: {other:?} (typeid not served here)")),
            };
            let id = format!(
                "{:x}",
                shared
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            lock(&shared.objects).insert(id.clone(), (obj, 1));
            Ok(Value::Tuple(vec![
                Value::String(id),
                Value::Tuple(exposed.iter().map(|m| Value::String((*m).into())).collect()),
            ]))
        }
        "incref" | "decref" => {
            let Some(Value::String(id)) = args.next() else {
                return Err(format!("{name} needs an object id"));
            };
            let mut objects = lock(&shared.objects);
            let Some(entry) = objects.get_mut(&id) else {
                return Err(format!("KeyError: {id:?}"));
            };
            if name == "incref" {
                entry.1 += 1;
            } else {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    objects.remove(&id);
                }
            }
            Ok(Value::None)
        }
        "shutdown" => {
            shared
                .stop
                .store(true, std::sync::atomic::Ordering::Release);
            Ok(Value::None)
        }
        other => Err(format!("AssertionError: {other:?} unrecognized")),
    }
}

fn call_method(obj: &mut Obj, name: &str, args: Vec<Value>) -> Result<Value, String> {
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or_else(|| format!("TypeError: {name} takes more arguments"))
    };
    match obj {
        Obj::List(list) => {
            let index = |v: Value, len: usize, insert: bool| -> Result<usize, String> {
                let Value::I64(i) = v else {
                    return Err(format!("TypeError: list indices must be integers, not {v}"));
                };
                let len_i = len as i64;
                let j = if i < 0 { i + len_i } else { i };
                let max = if insert { len_i } else { len_i - 1 };
                if insert {
                    return Ok(j.clamp(0, len_i) as usize);
                }
                if j < 0 || j > max {
                    return Err("IndexError: list index out of range".into());
                }
                Ok(j as usize)
            };
            match name {
                "#GETVALUE" => Ok(Value::List(list.clone())),
                "__len__" => Ok(Value::I64(list.len() as i64)),
                "__contains__" => Ok(Value::Bool(list.contains(&arg(0)?))),
                "__getitem__" => Ok(list[index(arg(0)?, list.len(), false)?].clone()),
                "__setitem__" => {
                    let i = index(arg(0)?, list.len(), false)?;
                    list[i] = arg(1)?;
                    Ok(Value::None)
                }
                "__delitem__" => {
                    let i = index(arg(0)?, list.len(), false)?;
                    list.remove(i);
                    Ok(Value::None)
                }
                "append" => {
                    list.push(arg(0)?);
                    Ok(Value::None)
                }
                "extend" => match arg(0)? {
                    Value::List(v) | Value::Tuple(v) => {
                        list.extend(v);
                        Ok(Value::None)
                    }
                    other => Err(format!("TypeError: cannot extend with {other}")),
                },
                "insert" => {
                    let i = index(arg(0)?, list.len(), true)?;
                    list.insert(i, arg(1)?);
                    Ok(Value::None)
                }
                "pop" => {
                    if list.is_empty() {
                        return Err("IndexError: pop from empty list".into());
                    }
                    let at = args.first().cloned().unwrap_or(Value::I64(-1));
                    let i = index(at, list.len(), false)?;
                    Ok(list.remove(i))
                }
                "remove" | "index" => {
                    let x = arg(0)?;
                    match list.iter().position(|v| *v == x) {
                        Some(i) if name == "index" => Ok(Value::I64(i as i64)),
                        Some(i) => {
                            list.remove(i);
                            Ok(Value::None)
                        }
                        None => Err(format!("ValueError: {x} is not in list")),
                    }
                }
                "count" => {
                    let x = arg(0)?;
                    Ok(Value::I64(list.iter().filter(|v| **v == x).count() as i64))
                }
                "reverse" => {
                    list.reverse();
                    Ok(Value::None)
                }
                other => Err(not_exposed(other, LIST_METHODS)),
            }
        }
        Obj::Dict(dict) => {
            let key = |v: Value| {
                v.into_hashable()
                    .map_err(|_| "TypeError: unhashable key".to_string())
            };
            match name {
                "#GETVALUE" | "copy" => Ok(Value::Dict(dict.clone())),
                "__len__" => Ok(Value::I64(dict.len() as i64)),
                "__contains__" => Ok(Value::Bool(dict.contains_key(&key(arg(0)?)?))),
                "__getitem__" => get_entry(dict, key(arg(0)?)?, key_error),
                "get" => Ok(dict
                    .get(&key(arg(0)?)?)
                    .cloned()
                    .unwrap_or_else(|| args.get(1).cloned().unwrap_or(Value::None))),
                "__setitem__" => {
                    dict.insert(key(arg(0)?)?, arg(1)?);
                    Ok(Value::None)
                }
                "__delitem__" => del_entry(dict, key(arg(0)?)?, key_error),
                "pop" => {
                    let k = key(arg(0)?)?;
                    match (dict.remove(&k), args.get(1)) {
                        (Some(v), _) => Ok(v),
                        (None, Some(d)) => Ok(d.clone()),
                        (None, None) => Err(key_error(k)),
                    }
                }
                "setdefault" => {
                    let default = args.get(1).cloned().unwrap_or(Value::None);
                    Ok(dict.entry(key(arg(0)?)?).or_insert(default).clone())
                }
                "update" => match arg(0)? {
                    Value::Dict(d) => {
                        dict.extend(d);
                        Ok(Value::None)
                    }
                    other => Err(format!("TypeError: cannot update with {other}")),
                },
                "clear" => {
                    dict.clear();
                    Ok(Value::None)
                }
                "keys" => Ok(Value::List(
                    dict.keys().map(|k| k.clone().into_value()).collect(),
                )),
                "values" => Ok(Value::List(dict.values().cloned().collect())),
                "items" => Ok(Value::List(
                    dict.iter()
                        .map(|(k, v)| Value::Tuple(vec![k.clone().into_value(), v.clone()]))
                        .collect(),
                )),
                other => Err(not_exposed(other, DICT_METHODS)),
            }
        }
        Obj::Namespace(ns) => {
            let attr = |v: Value| match v {
                Value::String(s) => Ok(s),
                other => Err(format!(
                    "TypeError: attribute name must be a string, not {other}"
                )),
            };
            match name {
                "#GETVALUE" => Ok(Value::Dict(
                    ns.iter()
                        .map(|(k, v)| (HashableValue::String(k.clone()), v.clone()))
                        .collect(),
                )),
                "__getattribute__" => get_entry(ns, attr(arg(0)?)?, |a| {
                    format!("AttributeError: 'Namespace' object has no attribute {a:?}")
                }),
                "__setattr__" => {
                    ns.insert(attr(arg(0)?)?, arg(1)?);
                    Ok(Value::None)
                }
                "__delattr__" => del_entry(ns, attr(arg(0)?)?, |a| format!("AttributeError: {a}")),
                other => Err(not_exposed(other, NAMESPACE_METHODS)),
            }
        }
    }
}

/// `map[k]` (a dict's item, a namespace's attribute), or the error
/// `missing` words.
fn get_entry<K: Ord>(
    map: &BTreeMap<K, Value>,
    k: K,
    missing: impl FnOnce(K) -> String,
) -> Result<Value, String> {
    map.get(&k).cloned().ok_or_else(|| missing(k))
}

/// `del map[k]`, or the error `missing` words.
fn del_entry<K: Ord>(
    map: &mut BTreeMap<K, Value>,
    k: K,
    missing: impl FnOnce(K) -> String,
) -> Result<Value, String> {
    match map.remove(&k) {
        Some(_) => Ok(Value::None),
        None => Err(missing(k)),
    }
}

fn key_error(k: HashableValue) -> String {
    format!("KeyError: {}", k.into_value())
}

fn not_exposed(method: &str, exposed: &[&str]) -> String {
    format!("AttributeError: method {method:?} is not in exposed={exposed:?}")
}
