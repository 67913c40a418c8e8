//! The manager's server: a listener, a thread per client connection (as in
//! Python's `multiprocessing.managers.Server`), and the table of objects
//! with their reference counts.
//!
//! # Reference counting
//!
//! Each object counts references per *session* (one per client process)
//! and per *transit token* (a handle serialised to travel to another
//! process, not yet claimed there). An object is freed when its total
//! reaches zero. A session's references are dropped when its anchor
//! connection closes (each client process keeps one per server, open and
//! idle, for as long as it holds proxies of that server), which is what
//! happens when a client process exits or is killed without cleaning up. A transit reference lives until it is
//! claimed or the server stops.

mod data;
mod queue;
mod sync;
mod wait;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::wait::Caller;
use super::mailbox::{Mailbox, Way};
use super::protocol::{DataKind, Fault, Kind, Op, Path, Reply, Request};
use super::registry::{Registry, Served};
use super::transport::Transport;
use super::value::Value;
use crate::connection::auth::{self, Side};
use crate::connection::{Address, Connection, Listener};
use crate::error::RecvError;
use crate::local_lock::lock;

/// How long a new connection has to authenticate and say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest path into a value tree. With values at most
/// [`MAX_DEPTH`](super::value::MAX_DEPTH) deep on the wire, this bounds how
/// deep a stored tree can grow (and so the recursion that clones, compares
/// and drops it on a connection thread's stack).
const MAX_PATH: usize = 64;
/// Stack of a connection thread.
const STACK: usize = 512 << 10;

/// The answer frame: one reply, or one per operation of a batch.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) enum Answer {
    One(Reply),
    Many(Vec<Reply>),
}

/// A served object.
pub(crate) enum Object {
    Data { kind: DataKind, value: Mutex<Value> },
    Queue(queue::Queue),
    Lock(sync::Lock),
    RLock(sync::RLock),
    Semaphore(sync::Semaphore),
    Condition(sync::Condition),
    Event(sync::Event),
    Barrier(sync::Barrier),
    Custom(Mutex<Box<dyn Served>>),
}

impl Object {
    fn new(kind: Kind, registry: &Registry) -> Result<Object, Fault> {
        Ok(match kind {
            Kind::Data(kind, value) => Object::Data {
                kind,
                value: Mutex::new(value),
            },
            Kind::Queue { maxsize, joinable } => {
                Object::Queue(queue::Queue::new(maxsize, joinable))
            }
            Kind::Lock => Object::Lock(sync::Lock::default()),
            Kind::RLock => Object::RLock(sync::RLock::default()),
            Kind::Semaphore { value, bounded } => {
                Object::Semaphore(sync::Semaphore::new(value, bounded))
            }
            Kind::Condition => Object::Condition(sync::Condition::default()),
            Kind::Event => Object::Event(sync::Event::default()),
            Kind::Barrier { parties } => {
                if parties == 0 {
                    return Err(Fault::Type("a barrier needs at least one party".into()));
                }
                Object::Barrier(sync::Barrier::new(parties))
            }
            Kind::Custom { typeid, args } => {
                let ctor = registry.get(&typeid).ok_or_else(|| {
                    Fault::Unsupported(format!("no type registered as {typeid:?}"))
                })?;
                Object::Custom(Mutex::new(ctor(args).map_err(Fault::Remote)?))
            }
        })
    }

    fn apply(&self, path: &[Value], op: Op, caller: &Caller<'_>) -> Reply {
        if !path.is_empty() && !matches!(self, Object::Data { .. }) {
            return Err(Fault::Type("only lists, dicts and namespaces nest".into()));
        }
        if path.len() > MAX_PATH {
            return Err(Fault::Type(format!(
                "paths into an object are at most {MAX_PATH} keys long"
            )));
        }
        match self {
            Object::Data { kind, value } => data::apply(&mut lock(value), *kind, path, op),
            Object::Queue(q) => q.apply(op, caller),
            Object::Lock(l) => l.apply(op, caller),
            Object::RLock(l) => l.apply(op, caller),
            Object::Semaphore(s) => s.apply(op, caller),
            Object::Condition(c) => c.apply(op, caller),
            Object::Event(e) => e.apply(op, caller),
            Object::Barrier(b) => b.apply(op, caller),
            Object::Custom(obj) => match op {
                Op::Method(name, args) => lock(obj).call(&name, args).map_err(Fault::Remote),
                other => Err(Fault::Unsupported(format!(
                    "{other:?} on a registered object"
                ))),
            },
        }
    }

    fn release_session(&self, session: u64) {
        match self {
            Object::Lock(l) => l.release_session(session),
            Object::RLock(l) => l.release_session(session),
            Object::Condition(c) => c.release_session(session),
            _ => {}
        }
    }
}

struct Slot {
    object: Arc<Object>,
    refs: u64,
    /// The kind it was made as (see `Kind::tag`).
    tag: String,
}

#[derive(Default)]
struct Session {
    /// Open anchor connections (one, unless a client reconnects).
    anchors: u64,
    refs: HashMap<u64, u64>,
}

#[derive(Default)]
struct Table {
    objects: HashMap<u64, Slot>,
    sessions: HashMap<u64, Session>,
    /// Transit token → object id.
    transit: HashMap<u64, u64>,
    /// Named objects (each name holds one reference).
    names: HashMap<String, u64>,
    connections: u64,
    next_id: u64,
}

impl Table {
    /// Drops `n` references to `id`; returns the object if it is now free.
    fn release(&mut self, id: u64, n: u64) -> Option<Arc<Object>> {
        let slot = self.objects.get_mut(&id)?;
        slot.refs = slot.refs.saturating_sub(n);
        if slot.refs == 0 {
            return self.objects.remove(&id).map(|s| s.object);
        }
        None
    }

    /// Records a reference held by `session`; refused when the session
    /// has no anchor (its references could never be dropped).
    fn add_session_ref(&mut self, session: u64, id: u64) -> Result<(), Fault> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or_else(|| Fault::Protocol("this session has no anchor connection".into()))?;
        *s.refs.entry(id).or_default() += 1;
        Ok(())
    }
}

/// What the server shares between its threads.
struct Shared {
    table: Mutex<Table>,
    registry: Registry,
    authkey: Option<Vec<u8>>,
    max_request: usize,
    stop: AtomicBool,
    /// The listener's address.
    address: Address,
    /// A duplicate of every open client connection, to cut them all when
    /// the server stops.
    open: Mutex<HashMap<u64, OwnedFd>>,
    next_conn: AtomicU64,
}

/// A manager's server, bound and ready to serve (Python's
/// `BaseManager.get_server()`).
///
/// Made by [`ManagerBuilder::bind`](super::ManagerBuilder::bind); run it
/// with [`serve_forever`](Self::serve_forever) in the process that should
/// own the objects. Clients reach it with
/// [`Manager::connect`](super::Manager::connect).
///
/// # Reference counting
///
/// * Each client process has a *session* with the server, and keeps one
///   idle *anchor* connection open for it. Creating an object gives the
///   session one reference; dropping the last in-process clone of a proxy
///   gives it back. Views on nested containers share their root's
///   reference.
/// * A proxy serialised for another process (a `Process` argument, a
///   message) first takes a *transit* reference on the server, which the
///   receiving process turns into a reference of its own session when it
///   decodes the proxy; so the sender may drop its proxy at once.
/// * When a session's anchor closes — the process exited, was killed, or
///   dropped every proxy of this server — all its references are dropped
///   and the locks it holds are released.
/// * An object is freed when it has no reference left. A transit
///   reference never claimed (a message that was never received) lives
///   until the server stops.
pub struct ManagerServer {
    listener: Listener,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ManagerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerServer")
            .field("address", self.listener.address())
            .finish()
    }
}

impl ManagerServer {
    pub(crate) fn new(
        listener: Listener,
        registry: Registry,
        authkey: Option<Vec<u8>>,
        max_request: usize,
    ) -> Self {
        let address = listener.address().clone();
        ManagerServer {
            listener,
            shared: Arc::new(Shared {
                table: Mutex::default(),
                registry,
                authkey,
                max_request,
                stop: AtomicBool::new(false),
                address,
                open: Mutex::default(),
                next_conn: AtomicU64::new(0),
            }),
        }
    }

    /// The address clients connect to (with the real port when bound to
    /// TCP port 0).
    pub fn address(&self) -> &Address {
        self.listener.address()
    }

    /// Serves clients until one of them asks the server to shut down
    /// ([`Manager::shutdown_server`](super::Manager::shutdown_server)).
    /// Every client connection is then cut (their pending and later calls
    /// fail with [`ManagerError::Disconnected`](super::ManagerError::Disconnected))
    /// and the objects are freed as their sessions end.
    pub fn serve_forever(self) {
        while !self.shared.stop.load(Ordering::Acquire) {
            match self.listener.accept_timeout(Duration::from_millis(500)) {
                Ok(_) if self.shared.stop.load(Ordering::Acquire) => break,
                Ok(conn) => {
                    let shared = self.shared.clone();
                    let spawned = std::thread::Builder::new()
                        .name("manager-conn".into())
                        .stack_size(STACK)
                        .spawn(move || serve_connection(&shared, conn));
                    // Out of threads: the connection is dropped (closed)
                    // and the client sees a disconnection.
                    drop(spawned);
                }
                Err(_) => continue,
            }
        }
        // Wake every connection thread: blocked receives see end of
        // stream, blocked waits see their client gone.
        for fd in lock(&self.shared.open).values() {
            let _ = crate::sys::socket::shutdown(fd.as_fd(), true, true);
        }
    }
}

fn serve_connection(shared: &Shared, conn: Connection) {
    let key = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    if let Ok(fd) = crate::sys::socket::dup(conn.as_fd()) {
        lock(&shared.open).insert(key, fd);
    }
    if shared.stop.load(Ordering::Acquire) {
        lock(&shared.open).remove(&key);
        return;
    }
    serve_client(shared, conn);
    lock(&shared.open).remove(&key);
}

fn serve_client(shared: &Shared, mut conn: Connection) {
    if let Some(key) = &shared.authkey
        && auth::handshake(&mut conn, key, Some(HANDSHAKE_TIMEOUT), Side::Listener).is_err()
    {
        return;
    }
    conn.set_max_frame(shared.max_request);
    let (session, anchor) = match conn.recv_timeout::<Request>(HANDSHAKE_TIMEOUT) {
        Ok(Request::Hello {
            session, anchor, ..
        }) => (session, anchor),
        Ok(_) => {
            let _ = conn.send(&Answer::One(Err(Fault::Protocol(
                "a connection must open with Hello".into(),
            ))));
            return;
        }
        Err(_) => return,
    };
    {
        let mut t = lock(&shared.table);
        t.connections += 1;
        if anchor {
            t.sessions.entry(session).or_default().anchors += 1;
        }
    }
    // The client waits for this before any request of its session goes
    // out on another connection.
    if anchor && conn.send(&Answer::One(Ok(Value::None))).is_err() {
        end_connection(shared, session, anchor);
        return;
    }
    // A client making calls in a loop sends its next request within
    // microseconds of our answer: the transport polls briefly first.
    let mut t = Transport::new(conn);
    let mut first = true;
    loop {
        let request = match t.recv::<Request>(Way::Request) {
            Ok(r) => r,
            Err(RecvError::Codec(e)) => {
                // Garbage: say why, then hang up.
                let _ = t.send(
                    Way::Answer,
                    &Answer::One(Err(Fault::Protocol(e.to_string()))),
                );
                break;
            }
            Err(_) => break,
        };
        if first
            && !anchor
            && let Request::Mailbox(fd) = request
        {
            // Answered on the socket; from then on, the mailbox.
            first = false;
            let (mb, reply) = match Mailbox::attach(fd) {
                Ok(mb) => (Some(mb), Ok(Value::None)),
                Err(e) => (None, Err(Fault::Protocol(format!("mailbox refused: {e}")))),
            };
            if t.send(Way::Answer, &Answer::One(reply)).is_err() {
                break;
            }
            if let Some(mb) = mb {
                t.use_mailbox(mb);
            }
            continue;
        }
        first = false;
        let shutdown = matches!(request, Request::Shutdown);
        let caller = Caller {
            session,
            conn: &t.conn,
        };
        let answer = handle(shared, request, &caller);
        if t.send(Way::Answer, &answer).is_err() {
            break;
        }
        if shutdown {
            shared.stop.store(true, Ordering::Release);
            // Wake the accept loop at once: a bare connection (it finds
            // `stop` set and drops it).
            let _ = crate::connection::Client::open(
                shared.address.clone(),
                None,
                Some(HANDSHAKE_TIMEOUT),
            );
            break;
        }
    }
    end_connection(shared, session, anchor);
}

/// Closes one connection of `session`; closing its anchor ends the
/// session.
fn end_connection(shared: &Shared, session: u64, anchor: bool) {
    let mut freed = Vec::new();
    let ended = {
        let mut t = lock(&shared.table);
        t.connections -= 1;
        if !anchor {
            return;
        }
        let Some(s) = t.sessions.get_mut(&session) else {
            return;
        };
        s.anchors -= 1;
        if s.anchors > 0 {
            return;
        }
        let s = t.sessions.remove(&session).unwrap_or_default();
        for (id, n) in s.refs {
            freed.extend(t.release(id, n));
        }
        t.objects
            .values()
            .map(|slot| slot.object.clone())
            .collect::<Vec<_>>()
    };
    // Outside the table lock: free objects and release the session's locks.
    drop(freed);
    for obj in ended {
        obj.release_session(session);
    }
}

fn find(shared: &Shared, id: u64) -> Result<Arc<Object>, Fault> {
    lock(&shared.table)
        .objects
        .get(&id)
        .map(|s| s.object.clone())
        .ok_or(Fault::NoSuchObject(id))
}

fn handle(shared: &Shared, request: Request, caller: &Caller<'_>) -> Answer {
    Answer::One(match request {
        Request::Call { id, path, op } => call(shared, id, &path, op, caller),
        Request::Batch(ops) => {
            return Answer::Many(
                ops.into_iter()
                    .map(|(id, path, op)| call(shared, id, &path, op, caller))
                    .collect(),
            );
        }
        Request::Create(kind) => create(shared, kind, caller),
        Request::Named { name, kind } => named(shared, name, kind, caller),
        Request::Unname(name) => unname(shared, &name),
        Request::Decref { id } => decref(shared, id, caller),
        Request::Export { id } => export(shared, id),
        Request::Claim { token } => claim(shared, token, caller),
        Request::Stats => stats(shared),
        Request::Shutdown => Ok(Value::None),
        Request::Hello { .. } => Err(Fault::Protocol("Hello sent twice".into())),
        Request::Mailbox(_) => Err(Fault::Protocol(
            "a mailbox is offered once, first, on a request connection".into(),
        )),
    })
}

/// `Call`: one operation on object `id`.
fn call(
    shared: &Shared,
    id: u64,
    path: &Path,
    op: Op,
    caller: &Caller<'_>,
) -> Result<Value, Fault> {
    find(shared, id).and_then(|obj| obj.apply(path, op, caller))
}

impl Table {
    /// Adds a new object holding `refs` references, one of them the
    /// caller's session's; returns its id.
    fn insert_new(
        &mut self,
        session: u64,
        object: Object,
        refs: u64,
        tag: String,
    ) -> Result<u64, Fault> {
        self.next_id += 1;
        let id = self.next_id;
        self.add_session_ref(session, id)?;
        self.objects.insert(
            id,
            Slot {
                object: Arc::new(object),
                refs,
                tag,
            },
        );
        Ok(id)
    }
}

/// `Create`: a new object, referenced by the caller.
fn create(shared: &Shared, kind: Kind, caller: &Caller<'_>) -> Result<Value, Fault> {
    let tag = kind.tag();
    let object = Object::new(kind, &shared.registry)?;
    let id = lock(&shared.table).insert_new(caller.session, object, 1, tag)?;
    Ok(Value::Int(id.into()))
}

/// `Named`: the object of that name, made if there is none (the name holds
/// a reference of its own).
fn named(shared: &Shared, name: String, kind: Kind, caller: &Caller<'_>) -> Result<Value, Fault> {
    let tag = kind.tag();
    // Under the table lock, so that two processes asking for a new name at
    // once get one object.
    let mut t = lock(&shared.table);
    match t.names.get(&name).copied() {
        Some(id) => match t.objects.get(&id) {
            Some(slot) if slot.tag == tag => t.add_session_ref(caller.session, id).map(|()| {
                if let Some(slot) = t.objects.get_mut(&id) {
                    slot.refs += 1;
                }
                Value::Int(id.into())
            }),
            Some(slot) => Err(Fault::Type(format!(
                "{name:?} names a {}, not a {tag}",
                slot.tag
            ))),
            None => Err(Fault::NoSuchObject(id)),
        },
        None => {
            let object = Object::new(kind, &shared.registry)?;
            let id = t.insert_new(caller.session, object, 2, tag)?;
            t.names.insert(name, id);
            Ok(Value::Int(id.into()))
        }
    }
}

/// `Unname`: forgets a name (and the reference it held).
fn unname(shared: &Shared, name: &str) -> Result<Value, Fault> {
    let freed = {
        let mut t = lock(&shared.table);
        t.names.remove(name).map(|id| t.release(id, 1))
    };
    Ok(Value::Bool(freed.is_some()))
}

/// `Decref`: the caller's session drops one reference to `id` (an object
/// freed by it is dropped outside the table lock).
fn decref(shared: &Shared, id: u64, caller: &Caller<'_>) -> Result<Value, Fault> {
    let freed = {
        let mut t = lock(&shared.table);
        let owned = t
            .sessions
            .get_mut(&caller.session)
            .and_then(|s| {
                let n = s.refs.get_mut(&id)?;
                *n -= 1;
                if *n == 0 {
                    s.refs.remove(&id);
                }
                Some(())
            })
            .is_some();
        if owned { t.release(id, 1) } else { None }
    };
    drop(freed);
    Ok(Value::None)
}

/// `Export`: a transit token holding one reference to `id`, for a handle
/// on its way to another process.
fn export(shared: &Shared, id: u64) -> Result<Value, Fault> {
    let mut t = lock(&shared.table);
    if !t.objects.contains_key(&id) {
        return Err(Fault::NoSuchObject(id));
    }
    let token = loop {
        match crate::sys::random::u64() {
            Ok(n) if n != 0 && !t.transit.contains_key(&n) => break n,
            Ok(_) => continue,
            Err(e) => {
                return Err(Fault::Server(format!("cannot make a transit token: {e}")));
            }
        }
    };
    if let Some(slot) = t.objects.get_mut(&id) {
        slot.refs += 1;
    }
    t.transit.insert(token, id);
    Ok(Value::Int(token.into()))
}

/// `Claim`: the caller's session takes over the reference a transit token
/// holds.
fn claim(shared: &Shared, token: u64, caller: &Caller<'_>) -> Result<Value, Fault> {
    let mut t = lock(&shared.table);
    match t.transit.remove(&token) {
        Some(id) if t.objects.contains_key(&id) => {
            if let Err(f) = t.add_session_ref(caller.session, id) {
                // Keep the transit reference claimable.
                t.transit.insert(token, id);
                return Err(f);
            }
            Ok(Value::Int(id.into()))
        }
        Some(id) => Err(Fault::NoSuchObject(id)),
        None => Err(Fault::Key(format!(
            "no handle in transit with token {token}"
        ))),
    }
}

/// `Stats`: objects, sessions and connections the server holds.
fn stats(shared: &Shared) -> Result<Value, Fault> {
    let t = lock(&shared.table);
    Ok(Value::Tuple(vec![
        Value::Int(t.objects.len() as i128),
        Value::Int(t.sessions.len() as i128),
        Value::Int(t.connections as i128),
    ]))
}

/// Binds the given address; the server runs the handshake itself.
pub(crate) fn bind(address: &Address) -> Result<Listener, crate::error::ConnectError> {
    Listener::bind_raw(address)
}
