//! The manager's wire protocol: one [`Request`] frame from a client, one
//! [`Reply`] frame back, on an ordinary [`Connection`](crate::Connection)
//! (encoded by the crate's codec, length-prefixed, size-capped).
//!
//! Every connection opens with [`Request::Hello`] naming the client's
//! *session* (a random number per client process): the server keeps the
//! references a process holds per session, and drops them when the
//! session's anchor connection closes, so a client that dies without
//! cleaning up leaks nothing. The anchor carries no requests, so a request
//! that breaks its connection (oversize, malformed) cannot end the session
//! of a process that still holds proxies.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::value::Value;

/// What a proxy addresses: an object and a path of keys/indices into it
/// (empty for the object itself).
pub(crate) type Path = Vec<Value>;

/// A client's request.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Request {
    /// First message of every connection. A client process keeps one
    /// *anchor* connection per server open and idle: the session (and
    /// every reference it holds) ends when the anchor closes. Only an
    /// anchor's Hello is answered (once the session is registered).
    Hello {
        session: u64,
        pid: i32,
        anchor: bool,
    },
    /// Creates an object; replies its id, with one reference for this
    /// session.
    Create(Kind),
    /// Returns the object named `name`, creating it from `kind` first if
    /// the name is free; one reference for this session either way.
    Named { name: String, kind: Kind },
    /// Drops the server's reference to the object named `name`; replies
    /// whether the name existed.
    Unname(String),
    /// One operation on an object.
    Call { id: u64, path: Path, op: Op },
    /// Several operations, run in order; replies a list with one
    /// `Value::Tuple([ok: Bool, value-or-fault])` per operation.
    Batch(Vec<(u64, Path, Op)>),
    /// Drops one reference this session holds.
    Decref { id: u64 },
    /// Takes a reference on behalf of a handle in transit to another
    /// process; replies the token that claims it.
    Export { id: u64 },
    /// Turns the reference held by a transit token into one of this
    /// session's.
    Claim { token: u64 },
    /// Replies `(objects, sessions, connections)` (for tests and
    /// monitoring).
    Stats,
    /// Stops the server after replying.
    Shutdown,
    /// Offers a shared-memory mailbox for the rest of this connection's
    /// requests and answers (same host only); answered on the socket.
    Mailbox(crate::codec::SharedFd),
}

/// The kinds of object a manager serves.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum Kind {
    /// A value tree (list, dict, namespace, value, array).
    Data(DataKind, Value),
    Queue {
        maxsize: u64,
        joinable: bool,
    },
    Lock,
    RLock,
    Semaphore {
        value: u64,
        bounded: bool,
    },
    Condition,
    Event,
    Barrier {
        parties: u64,
    },
    /// A registered type, built by its constructor from `args`.
    Custom {
        typeid: String,
        args: Value,
    },
}

impl Kind {
    /// The kind's name, to tell whether a named object is of the kind
    /// asked for.
    pub fn tag(&self) -> String {
        match self {
            Kind::Data(k, _) => format!("{k:?}"),
            Kind::Queue {
                joinable: false, ..
            } => "Queue".into(),
            Kind::Queue { joinable: true, .. } => "JoinableQueue".into(),
            Kind::Lock => "Lock".into(),
            Kind::RLock => "RLock".into(),
            Kind::Semaphore { bounded: false, .. } => "Semaphore".into(),
            Kind::Semaphore { bounded: true, .. } => "BoundedSemaphore".into(),
            Kind::Condition => "Condition".into(),
            Kind::Event => "Event".into(),
            Kind::Barrier { .. } => "Barrier".into(),
            Kind::Custom { typeid, .. } => typeid.clone(),
        }
    }
}

/// How a data object prints.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataKind {
    List,
    Dict,
    Namespace,
    Value,
    Array,
}

/// How long a blocking operation may wait: `None` forever,
/// `Some(Duration::ZERO)` not at all. The server turns it into a
/// [`Deadline`](crate::wait::Deadline), so a duration too long to
/// represent (`Duration::MAX`) is no limit, like `None`.
pub(crate) type Block = Option<Duration>;

/// An operation on an object (or on the part of it a path names).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum Op {
    // ---- value trees ----
    /// The whole value.
    Get,
    /// Replaces the whole value.
    Set(Value),
    Len,
    /// `x[key]` (a list index, negative from the end, or a dict key).
    Item(Value),
    /// `x[key]` for a dict: replies `[]` when missing, `[value]` otherwise.
    Lookup(Value),
    SetItem(Value, Value),
    /// `del x[key]`; replies the removed value, or `[]`/`[value]` as
    /// `Lookup` when `lenient`.
    DelItem {
        key: Value,
        lenient: bool,
    },
    Append(Value),
    Extend(Vec<Value>),
    Insert(i64, Value),
    Pop(Option<i64>),
    Remove(Value),
    Index(Value),
    Count(Value),
    Contains(Value),
    Sort {
        reverse: bool,
    },
    Reverse,
    Clear,
    Keys,
    Values,
    Items,
    Update(Vec<(Value, Value)>),
    SetDefault(Value, Value),
    /// Atomic `x[key] += delta` (or the value itself, key `None`);
    /// replies the new value.
    Add(Option<Value>, Value),
    /// Atomic `x[key] *= factor`; replies the new value.
    Mul(Option<Value>, Value),
    /// Python's repr of the object (Namespace-style for namespaces).
    Repr,

    // ---- queues ----
    Put {
        item: Value,
        block: Block,
    },
    Take {
        block: Block,
    },
    QSize,
    TaskDone,
    Join {
        block: Block,
    },

    // ---- locks, semaphores, conditions ----
    /// Replies `Bool(acquired)`. `thread` names the client thread (with
    /// the connection's session, the owner of an RLock).
    Acquire {
        thread: u64,
        block: Block,
    },
    Release {
        thread: u64,
    },
    /// Condition wait; replies `Bool(notified)`.
    Wait {
        thread: u64,
        block: Block,
    },
    Notify(u64),
    NotifyAll,

    // ---- events ----
    EventSet,
    EventClear,
    EventIsSet,
    EventWait {
        block: Block,
    },

    // ---- barriers ----
    BarrierWait {
        block: Block,
    },
    Abort,
    Reset,
    Parties,
    NWaiting,
    Broken,

    // ---- registered types ----
    Method(String, Value),
}

/// Why an operation failed, as sent back to the client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) enum Fault {
    NoSuchObject(u64),
    Index(String),
    Key(String),
    NotFound(String),
    Type(String),
    Arithmetic(String),
    Empty,
    Full,
    Timeout,
    BrokenBarrier,
    NotOwner(String),
    Remote(String),
    Unsupported(String),
    Protocol(String),
    /// The server itself failed (its OS random source, …).
    Server(String),
    /// The client hung up while the server waited on its behalf.
    ClientGone,
}

/// The answer to one request.
pub(crate) type Reply = Result<Value, Fault>;
