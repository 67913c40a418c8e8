//! A Rust client of a Python manager: list, dict, Namespace, Value, Queue,
//! Lock and Event proxies served by a real Python `SyncManager`, and a
//! user's `BaseManager` with a registered typeid (exposed methods called by
//! name, a method returning a shared object, a raising method, a result
//! naming a class). The server is started with `python -c`; Python 3.8
//! (legacy handshake), 3.11 and 3.13 where installed, else a printed note.

mod common;
mod python_common;

use std::collections::HashMap;

use common::{LIMIT, watchdog};
use multiproc::ConnectError;
use multiproc::codec::pickle::{PickleError, Value};
use multiproc::manager::python::{self, PyManagerError};
use python_common::{Python, Script, interpreters};

const VERSIONS: [&str; 3] = ["3.8", "3.11", "3.13"];
const KEY: &str = "manager secret";

const SYNC_SERVER: &str = r#"
import sys
from multiprocessing.managers import SyncManager
m = SyncManager(address=('127.0.0.1', 0), authkey=sys.argv[1].encode())
s = m.get_server()
print(s.address[1], flush=True)
s.serve_forever()
"#;

const USER_SERVER: &str = r#"
import sys
from multiprocessing.managers import BaseManager
class Counter:
    def __init__(self, start=0):
        self.n = start
    def incr(self, by=1):
        self.n += by
        return self.n
    def get(self):
        return self.n
    def child(self):
        return Counter(self.n * 10)
    def fail(self):
        raise ValueError('no good')
    def me(self):
        return self
    def secret(self):
        return 'not exposed'
class M(BaseManager):
    pass
M.register('Counter', Counter, exposed=('incr', 'get', 'fail', 'me'),
           method_to_typeid={'child': 'Child'})
M.register('Child', None, exposed=('incr', 'get'), create_method=False)
m = M(address=('127.0.0.1', 0), authkey=sys.argv[1].encode())
s = m.get_server()
print(s.address[1], flush=True)
s.serve_forever()
"#;

fn start(py: &Python, script: &str) -> (Script, String) {
    let mut s = Script::start(py, script, &[KEY]);
    let port = s.line();
    (s, format!("127.0.0.1:{port}"))
}

fn raised(res: Result<impl std::fmt::Debug, PyManagerError>) -> (String, Value) {
    match res {
        Err(PyManagerError::Raised { exception, args }) => (exception, args),
        other => panic!("expected a Python exception, got {other:?}"),
    }
}

fn sync_manager(py: &Python) {
    let label = &py.label;
    let (script, address) = start(py, SYNC_SERVER);
    assert!(
        matches!(
            python::connect(address.as_str(), b"wrong key"),
            Err(PyManagerError::Connect(ConnectError::Auth(_)))
        ),
        "{label}"
    );
    let m = python::connect(address.as_str(), KEY.as_bytes()).unwrap();

    let list = m.list(&[1, 2, 3]).unwrap();
    list.call::<()>("append", (4,)).unwrap();
    assert_eq!(list.call::<usize>("__len__", ()).unwrap(), 4, "{label}");
    assert_eq!(list.call::<i32>("__getitem__", (0,)).unwrap(), 1);
    assert_eq!(list.value::<Vec<i32>>().unwrap(), [1, 2, 3, 4]);
    let (exc, _) = raised(list.call::<i32>("__getitem__", (99,)));
    assert_eq!(exc, "IndexError", "{label}");

    let dict = m.dict().unwrap();
    dict.call::<()>("__setitem__", ("a", 1)).unwrap();
    dict.call::<()>("update", (HashMap::from([("b", 2)]),))
        .unwrap();
    assert_eq!(dict.call::<Option<i32>>("get", ("a",)).unwrap(), Some(1));
    assert_eq!(dict.call::<Option<i32>>("get", ("zz",)).unwrap(), None);
    let (exc, args) = raised(dict.call::<i32>("__getitem__", ("zz",)));
    assert_eq!(exc, "KeyError", "{label}");
    assert_eq!(args, Value::Tuple(vec![Value::String("zz".into())]));
    assert_eq!(
        dict.value::<HashMap<String, i32>>().unwrap(),
        HashMap::from([("a".into(), 1), ("b".into(), 2)])
    );

    let ns = m.namespace().unwrap();
    ns.setattr("x", 5).unwrap();
    ns.setattr("name", "rust").unwrap();
    assert_eq!(ns.getattr::<i32>("x").unwrap(), 5);
    assert_eq!(ns.getattr::<String>("name").unwrap(), "rust");
    assert_eq!(raised(ns.getattr::<i32>("missing")).0, "AttributeError");

    let value = m.value("i", 5).unwrap();
    assert_eq!(value.call::<i32>("get", ()).unwrap(), 5);
    value.call::<()>("set", (7,)).unwrap();
    assert_eq!(value.call::<i32>("get", ()).unwrap(), 7);

    let queue = m.queue().unwrap();
    queue.call::<()>("put", ("hello",)).unwrap();
    queue.call::<()>("put", (42,)).unwrap();
    assert_eq!(queue.call::<usize>("qsize", ()).unwrap(), 2);
    assert_eq!(queue.call::<String>("get", ()).unwrap(), "hello");
    assert_eq!(queue.call::<i32>("get_nowait", ()).unwrap(), 42);
    let (exc, _) = raised(queue.call::<i32>("get_nowait", ()));
    assert!(exc.ends_with("Empty"), "{label}: {exc}");

    let lock = m.lock().unwrap();
    assert!(lock.call::<bool>("acquire", (false,)).unwrap());
    assert!(!lock.call::<bool>("acquire", (false,)).unwrap());
    lock.call::<()>("release", ()).unwrap();
    assert!(lock.call::<bool>("acquire", (false,)).unwrap());
    lock.call::<()>("release", ()).unwrap();

    let event = m.event().unwrap();
    assert!(!event.call::<bool>("is_set", ()).unwrap());
    event.call::<()>("set", ()).unwrap();
    assert!(event.call::<bool>("wait", (5.0,)).unwrap());
    event.call::<()>("clear", ()).unwrap();
    assert!(!event.call::<bool>("is_set", ()).unwrap());

    assert_eq!(m.number_of_objects().unwrap(), 7, "{label}");
    drop((list, dict, ns, value, queue, lock, event));
    assert_eq!(m.number_of_objects().unwrap(), 0, "{label}: decref on drop");
    m.shutdown().unwrap();
    let (ok, err) = script.finish();
    assert!(ok, "{label}: {err}");
}

fn user_manager(py: &Python) {
    let label = &py.label;
    let (script, address) = start(py, USER_SERVER);
    let m = python::connect(address.as_str(), KEY.as_bytes()).unwrap();
    let counter = m.create("Counter", (5,)).unwrap();
    assert_eq!(counter.typeid(), "Counter");
    assert!(counter.exposed().iter().any(|e| e == "child"), "{label}");
    assert_eq!(counter.call::<i64>("incr", (2,)).unwrap(), 7);
    assert_eq!(counter.call::<i64>("incr", ()).unwrap(), 8);
    let child = counter.call_proxy("child", ()).unwrap();
    assert_eq!(child.typeid(), "Child");
    assert_eq!(child.call::<i64>("get", ()).unwrap(), 80, "{label}");
    let (exc, args) = raised(counter.call::<()>("fail", ()));
    assert_eq!(exc, "ValueError");
    assert_eq!(args, Value::Tuple(vec![Value::String("no good".into())]));
    // `me` returns the Counter itself, pickled as a reference to
    // __main__.Counter: refused, never instantiated.
    match counter.call::<Value>("me", ()) {
        Err(PyManagerError::Pickle(PickleError::Global { module, name })) => {
            assert_eq!((module.as_str(), name.as_str()), ("__main__", "Counter"))
        }
        other => panic!("{label}: {other:?}"),
    }
    // Not exposed: the server refuses with a traceback.
    assert!(matches!(
        counter.call::<String>("secret", ()),
        Err(PyManagerError::Remote(t)) if t.contains("not in exposed")
    ));
    // The connection is still in step after the errors.
    assert_eq!(counter.call::<i64>("get", ()).unwrap(), 8);
    assert_eq!(m.number_of_objects().unwrap(), 2);
    drop((counter, child));
    assert_eq!(m.number_of_objects().unwrap(), 0, "{label}");
    m.shutdown().unwrap();
    let (ok, err) = script.finish();
    assert!(ok, "{label}: {err}");
}

fn each(f: fn(&Python)) {
    watchdog(LIMIT, move || {
        let pythons = interpreters(&VERSIONS);
        for py in &pythons {
            f(py);
        }
    });
}

#[test]
fn rust_client_uses_a_python_sync_manager() {
    each(sync_manager);
}

#[test]
fn rust_client_calls_a_user_base_manager() {
    each(user_manager);
}

/// A Python `SyncManager` client against `python::serve`, sharing a list
/// with a Rust client of the same server.
const PY_CLIENT: &str = r#"
import sys
from multiprocessing.managers import SyncManager, ListProxy, Token, RemoteError
port, key, shared_id = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
m = SyncManager(address=('127.0.0.1', port), authkey=key)
m.connect()
l = m.list([1, 2])
l.append(3)
l.extend([4])
assert len(l) == 4 and l[0] == 1 and l[-1] == 4, l._getvalue()
l[1] = 'two'
assert l.pop() == 4
assert 'two' in l and l.index(3) == 2
assert l._getvalue() == [1, 'two', 3], l._getvalue()
d = m.dict()
d['a'] = 1
d.update({'b': [2, 3]})
assert d.get('a') == 1 and d.get('zz') is None and 'b' in d and len(d) == 2
try:
    d['zz']
except RemoteError as e:
    assert 'KeyError' in str(e), e
else:
    raise AssertionError('no error for a missing key')
assert d._getvalue() == {'a': 1, 'b': [2, 3]}, d._getvalue()
ns = m.Namespace()
ns.x = 5
ns.name = 'py'
assert ns.x == 5 and ns.name == 'py'
try:
    ns.missing
except RemoteError:
    pass
else:
    raise AssertionError('no error for a missing attribute')
shared = ListProxy(Token('list', ('127.0.0.1', port), shared_id), 'pickle', authkey=key)
shared.append('from python')
print('ok', flush=True)
"#;

fn python_client(py: &Python) {
    let label = &py.label;
    let server = python::serve("127.0.0.1:0", KEY.as_bytes()).unwrap();
    let port = match server.address() {
        multiproc::Address::Tcp(a) => a.port().to_string(),
        other => panic!("{other:?}"),
    };
    let rust = python::connect(server.address(), KEY.as_bytes()).unwrap();
    let shared = rust.list(&["from rust"]).unwrap();
    let mut script = Script::start(py, PY_CLIENT, &[&port, KEY, shared.id()]);
    assert_eq!(script.line(), "ok", "{label}");
    let (ok, err) = script.finish();
    assert!(ok, "{label}: {err}");
    assert_eq!(
        shared.value::<Vec<String>>().unwrap(),
        ["from rust", "from python"],
        "{label}"
    );
    // Python's proxies released their references when it exited.
    assert_eq!(server.number_of_objects(), 1, "{label}");
    drop(shared);
    assert_eq!(server.number_of_objects(), 0, "{label}");
}

#[test]
fn python_client_uses_a_rust_server() {
    each(python_client);
}

#[test]
fn python_client_with_a_wrong_key_is_refused() {
    watchdog(LIMIT, || {
        let server = python::serve("127.0.0.1:0", KEY.as_bytes()).unwrap();
        let port = match server.address() {
            multiproc::Address::Tcp(a) => a.port().to_string(),
            other => panic!("{other:?}"),
        };
        let script = r#"
import sys
from multiprocessing.managers import SyncManager
m = SyncManager(address=('127.0.0.1', int(sys.argv[1])), authkey=b'wrong')
try:
    m.connect()
except Exception as e:
    print('refused', type(e).__name__, flush=True)
"#;
        let mut s = Script::start(&python_common::python3(), script, &[&port]);
        assert_eq!(s.line(), "refused AuthenticationError");
        // The server still serves the right key.
        let m = python::connect(server.address(), KEY.as_bytes()).unwrap();
        assert_eq!(m.number_of_objects().unwrap(), 0);
    });
}
