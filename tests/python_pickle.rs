//! The pickle codec against real Pythons: `conn.send(obj)` in Python and
//! `recv_pickle` here, `send_pickle` here and `conn.recv()` in Python, for
//! the ordinary data types; pickles of protocols 2 to 5; and a real
//! `os.system` payload, refused. Python 3.8, 3.11, 3.12 and 3.13 where
//! installed (a missing one is skipped with a printed note).

mod common;
mod python_common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::{LIMIT, watchdog};
use multiproc::codec::pickle::{HashableValue, PickleError, Value};
use multiproc::{CodecError, Connection, Listener, RecvError};
use python_common::{Python, Script, interpreters};
use serde::{Deserialize, Serialize};

const VERSIONS: [&str; 4] = ["3.8", "3.11", "3.12", "3.13"];

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Job {
    id: u32,
    name: String,
    data: Vec<i64>,
    extra: Option<(f64, bool)>,
}

/// Python connects to `port` and sends these objects, then receives ours
/// and checks them against what it expects.
const PY_PEER: &str = r#"
import os, pickle, sys
from multiprocessing.connection import Client
c = Client(('127.0.0.1', int(sys.argv[1])))
class Evil:
    def __reduce__(self):
        return (os.system, ('echo this must never run',))
for obj in [None, True, False, 12345, -7, 2**100, 1.5, 'héllo', b'\x00\xff', bytearray(b'ab'),
            [1, 2, 3], (1, 'a'), {'a': 1, 'b': 2}, {1, 2, 3}, frozenset({4}),
            {'id': 7, 'name': 'x', 'data': [1, -2], 'extra': (0.5, True)},
            {'id': 8, 'name': 'y', 'data': [], 'extra': None},
            [[1, 2], [3]], {(1, 2): 'pair'}]:
    c.send(obj)
for proto in range(2, 6):
    c.send_bytes(pickle.dumps(([1, 'two', b'three', {4: 5.0}], {6, 7}, bytearray(b'x')), protocol=proto))
c.send(Evil())
expected = [None, True, 12345, 2.5, 'wörld', b'\x01\x02', [4, 5, 6], (7, 'b', None),
            {'k': [1]}, {8, 9}, {'id': 1, 'name': 'r', 'data': [3], 'extra': None}, [], -(2**40)]
got = [c.recv() for _ in expected]
if got != expected:
    print('mismatch', got, flush=True)
    sys.exit(1)
print('ok', flush=True)
"#;

fn codec_err(res: Result<impl std::fmt::Debug, RecvError>) -> PickleError {
    match res {
        Err(RecvError::Codec(CodecError::Pickle(e))) => e,
        other => panic!("expected a pickle error, got {other:?}"),
    }
}

fn exchange(py: &Python) {
    let label = &py.label;
    let listener = Listener::builder()
        .no_authkey()
        .bind("127.0.0.1:0")
        .unwrap();
    let port = match listener.address() {
        multiproc::Address::Tcp(a) => a.port().to_string(),
        other => panic!("{other:?}"),
    };
    let script = Script::start(py, PY_PEER, &[&port]);
    let conn: Connection = listener.accept().unwrap();

    assert_eq!(conn.recv_pickle::<Option<i32>>().unwrap(), None, "{label}");
    assert!(conn.recv_pickle::<bool>().unwrap());
    assert!(!conn.recv_pickle::<bool>().unwrap());
    assert_eq!(conn.recv_pickle::<i64>().unwrap(), 12345);
    assert_eq!(conn.recv_pickle::<i8>().unwrap(), -7);
    // 2**100 does not fit an i64: a typed error.
    assert!(matches!(
        codec_err(conn.recv_pickle::<i64>()),
        PickleError::IntOverflow(_)
    ));
    assert_eq!(conn.recv_pickle::<f64>().unwrap(), 1.5);
    assert_eq!(conn.recv_pickle::<String>().unwrap(), "héllo");
    assert_eq!(
        conn.recv_pickle::<Value>().unwrap(),
        Value::Bytes(vec![0, 0xff])
    );
    assert_eq!(
        conn.recv_pickle::<Value>().unwrap(),
        Value::Bytes(b"ab".to_vec())
    );
    assert_eq!(conn.recv_pickle::<Vec<u8>>().unwrap(), [1, 2, 3]);
    assert_eq!(
        conn.recv_pickle::<(i32, String)>().unwrap(),
        (1, "a".to_string())
    );
    assert_eq!(
        conn.recv_pickle::<BTreeMap<String, i32>>().unwrap(),
        BTreeMap::from([("a".into(), 1), ("b".into(), 2)])
    );
    assert_eq!(
        conn.recv_pickle::<HashSet<i32>>().unwrap(),
        HashSet::from([1, 2, 3])
    );
    assert_eq!(
        conn.recv_pickle_value().unwrap(),
        Value::FrozenSet([HashableValue::I64(4)].into())
    );
    assert_eq!(
        conn.recv_pickle::<Job>().unwrap(),
        Job {
            id: 7,
            name: "x".into(),
            data: vec![1, -2],
            extra: Some((0.5, true))
        }
    );
    assert_eq!(conn.recv_pickle::<Job>().unwrap().extra, None);
    assert_eq!(
        conn.recv_pickle::<Vec<Vec<i32>>>().unwrap(),
        [vec![1, 2], vec![3]]
    );
    let keyed: HashMap<(i32, i32), String> = conn.recv_pickle().unwrap();
    assert_eq!(keyed[&(1, 2)], "pair");
    for proto in 2..=5 {
        let got = conn
            .recv_pickle_value()
            .unwrap_or_else(|e| panic!("{label} protocol {proto}: {e}"));
        let expected = Value::Tuple(vec![
            Value::List(vec![
                Value::I64(1),
                Value::String("two".into()),
                Value::Bytes(b"three".to_vec()),
                Value::Dict([(HashableValue::I64(4), Value::F64(5.0))].into()),
            ]),
            Value::Set([HashableValue::I64(6), HashableValue::I64(7)].into()),
            Value::Bytes(b"x".to_vec()),
        ]);
        assert_eq!(got, expected, "{label} protocol {proto}");
    }
    // Evil().__reduce__ names os.system (posix.system): refused, not called.
    match codec_err(conn.recv_pickle_value()) {
        PickleError::Global { module, name } => {
            assert_eq!(
                (module.as_str(), name.as_str()),
                ("posix", "system"),
                "{label}"
            )
        }
        other => panic!("{label}: {other:?}"),
    }

    conn.send_pickle(&()).unwrap();
    conn.send_pickle(&true).unwrap();
    conn.send_pickle(&12345u64).unwrap();
    conn.send_pickle(&2.5f64).unwrap();
    conn.send_pickle("wörld").unwrap();
    conn.send_pickle_value(&Value::Bytes(vec![1, 2])).unwrap();
    conn.send_pickle(&vec![4, 5, 6]).unwrap();
    conn.send_pickle(&(7, "b", None::<i32>)).unwrap();
    conn.send_pickle(&HashMap::from([("k", vec![1])])).unwrap();
    conn.send_pickle_value(&Value::Set(
        [HashableValue::I64(8), HashableValue::I64(9)].into(),
    ))
    .unwrap();
    conn.send_pickle(&Job {
        id: 1,
        name: "r".into(),
        data: vec![3],
        extra: None,
    })
    .unwrap();
    conn.send_pickle(&Vec::<i32>::new()).unwrap();
    conn.send_pickle(&-(1i64 << 40)).unwrap();
    let mut script = script;
    assert_eq!(script.line(), "ok", "{label}");
    let (ok, err) = script.finish();
    assert!(ok, "{label}: {err}");
}

#[test]
fn python_and_rust_exchange_pickles() {
    watchdog(LIMIT, || {
        let pythons = interpreters(&VERSIONS);
        for py in &pythons {
            exchange(py);
        }
    });
}
