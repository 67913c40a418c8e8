//! A client for a Python manager: a Rust process creates and uses the
//! shared objects of a Python `multiprocessing.managers.SyncManager` (or of
//! any `BaseManager` with `register`ed typeids), as Python's proxies do.
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

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::pickle::{self, HashableValue, PickleError, Value};
use crate::connection::{Address, Client, Connection, ToAddress};
use crate::error::{ConnectError, RecvError, SendError};

/// A call to a Python manager failed.
#[derive(Debug, thiserror::Error)]
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
        let (id, exposed) = match reply {
            Value::Tuple(v) if v.len() == 2 => {
                let mut it = v.into_iter();
                (
                    it.next().unwrap_or(Value::None),
                    it.next().unwrap_or(Value::None),
                )
            }
            other => return Err(PyManagerError::Protocol(format!("create returned {other}"))),
        };
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
            request(&conn, None, "accept_connection", vec![Value::String(name)])?;
            *slot = Some(conn);
        }
        let conn = slot.as_ref().expect("opened above");
        let res = request(conn, Some(&self.id), method, args);
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
        let _ = self
            .inner
            .control("decref", vec![Value::String(self.id.clone())]);
    }
}

impl Inner {
    fn open(&self) -> Result<Connection, PyManagerError> {
        Ok(Client::connect(&self.address, Some(&self.authkey))?)
    }

    /// One control request on a connection of its own.
    fn control(&self, name: &str, args: Vec<Value>) -> Result<Value, PyManagerError> {
        let conn = self.open()?;
        match request(&conn, None, name, args)? {
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
) -> Result<Reply, PyManagerError> {
    let msg = Value::Tuple(vec![
        ident.map_or(Value::None, |s| Value::String(s.into())),
        Value::String(name.into()),
        Value::Tuple(args),
        Value::Dict(Default::default()),
    ]);
    conn.send_bytes(&pickle::value_to_vec(&msg)?)?;
    let bytes = conn.recv_bytes()?;
    let (reply, globals) = pickle::value_from_slice_allowing(&bytes, &manager_global)?;
    let (kind, result) = match reply {
        Value::Tuple(v) if v.len() == 2 => {
            let mut it = v.into_iter();
            (
                it.next().unwrap_or(Value::None),
                it.next().unwrap_or(Value::None),
            )
        }
        other => return Err(PyManagerError::Protocol(format!("{other}"))),
    };
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
