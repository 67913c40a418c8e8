//! The authkey handshake against real Pythons: 3.8 and 3.11 (legacy
//! HMAC-MD5, no digest prefix) and 3.12 and 3.13 (`{sha256}`), both
//! directions (Python `Listener` + our `Client`, our `Listener` + Python
//! `Client`), with the right key and a wrong one. A version not installed
//! is skipped with a printed note.

mod common;
mod python_common;

use common::{LIMIT, watchdog};
use multiproc::{Client, ConnectError, Listener};
use python_common::{Python, Script, interpreters};
use std::time::Duration;

const VERSIONS: [&str; 4] = ["3.8", "3.11", "3.12", "3.13"];
const KEY: &str = "the shared secret";

const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
l = Listener(('127.0.0.1', 0), authkey=sys.argv[1].encode())
print(l.address[1], flush=True)
try:
    c = l.accept()
except Exception as e:
    print('refused', type(e).__name__, flush=True)
else:
    c.send_bytes(c.recv_bytes()[::-1])
    print('served', flush=True)
    try:
        c.recv_bytes()
    except EOFError:
        pass
"#;

const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
try:
    c = Client(('127.0.0.1', int(sys.argv[1])), authkey=sys.argv[2].encode())
except Exception as e:
    print('refused', type(e).__name__, flush=True)
else:
    c.send_bytes(b'from python')
    print('got', c.recv_bytes().decode(), flush=True)
"#;

/// Python listens, we connect.
fn python_listener(py: &Python, our_key: &str) {
    let mut script = Script::start(py, PY_LISTENER, &[KEY]);
    let port: u16 = script.line().parse().expect("a port");
    let res = Client::connect(("127.0.0.1", port), Some(our_key.as_bytes()));
    if our_key == KEY {
        let conn = res.unwrap_or_else(|e| panic!("Python {}: {e}", py.label));
        conn.send_bytes(b"abc").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"cba", "Python {}", py.label);
        assert_eq!(script.line(), "served");
        drop(conn);
        let (ok, err) = script.finish();
        assert!(ok, "Python {}: {err}", py.label);
    } else {
        assert!(
            matches!(res, Err(ConnectError::Auth(_))),
            "Python {}: {res:?}",
            py.label
        );
        assert_eq!(
            script.line(),
            "refused AuthenticationError",
            "Python {}",
            py.label
        );
    }
}

/// We listen, Python connects.
fn rust_listener(py: &Python, our_key: &str) {
    let listener = Listener::bind("127.0.0.1:0", Some(our_key.as_bytes())).unwrap();
    let port = match listener.address() {
        multiproc::Address::Tcp(a) => a.port().to_string(),
        other => panic!("{other:?}"),
    };
    let mut script = Script::start(py, PY_CLIENT, &[&port, KEY]);
    if our_key == KEY {
        let conn = listener
            .accept()
            .unwrap_or_else(|e| panic!("Python {}: {e}", py.label));
        assert_eq!(conn.recv_bytes().unwrap(), b"from python");
        conn.send_bytes(b"from rust").unwrap();
        assert_eq!(script.line(), "got from rust", "Python {}", py.label);
    } else {
        // A peer that fails its handshake is closed and skipped, never
        // returned: `accept` sees nobody and times out.
        let res = listener.accept_timeout(Duration::from_secs(2));
        assert!(
            matches!(res, Err(ConnectError::Timeout)),
            "Python {}: {res:?}",
            py.label
        );
        assert_eq!(
            script.line(),
            "refused AuthenticationError",
            "Python {}",
            py.label
        );
    }
    let (ok, err) = script.finish();
    assert!(ok, "Python {}: {err}", py.label);
}

fn each(f: fn(&Python, &str), key: &'static str) {
    watchdog(LIMIT, move || {
        let pythons = interpreters(&VERSIONS);
        for py in &pythons {
            f(py, key);
        }
    });
}

#[test]
fn python_listener_rust_client_right_key() {
    each(python_listener, KEY);
}

#[test]
fn python_listener_rust_client_wrong_key() {
    each(python_listener, "not the key");
}

#[test]
fn rust_listener_python_client_right_key() {
    each(rust_listener, KEY);
}

#[test]
fn rust_listener_python_client_wrong_key() {
    each(rust_listener, "not the key");
}
