//! Error values that say what went wrong: the message of a `Serialize` impl
//! that refuses a value reaches the user (postcard alone drops it), a
//! child's return value that does not encode is an encode error, a client
//! without the authkey of a keyed manager hears about the key, and a closure
//! asked to run as an OS process is told which constructor to use.

mod common;

use std::time::Duration;

use common::{LIMIT, Method, watchdog};
use multiproc::csp::{CspProcess, ProcessError, parallel};
use multiproc::{
    CodecError, ConnectError, Connection, JoinError, Manager, ManagerError, PoolError, Process,
    PutError, Queue, SendError, TaskError,
};
use serde::{Deserialize, Serialize, Serializer};

/// A value whose `Serialize` impl refuses, with a message of its own.
#[derive(Debug, Deserialize)]
struct Refuses;

const REFUSAL: &str = "Refuses: this value stays in its process";

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(REFUSAL))
    }
}

fn encode_message(e: &CodecError) -> &str {
    match e {
        CodecError::Encode(m) => m,
        other => panic!("expected an encode error, got {other:?}"),
    }
}

#[test]
fn a_connection_put_into_a_queue_says_what_and_why() {
    watchdog(LIMIT, || {
        let (a, _b) = multiproc::pipe().unwrap();
        let q = Queue::<Connection>::new().unwrap();
        let Err(PutError::Encode(_, e)) = q.put(a) else {
            panic!("a Connection went into a Queue");
        };
        let m = encode_message(&e);
        assert!(!m.contains("Serde Serialization Error"), "{m}");
        assert!(
            m.contains("Connection") && m.contains("file descriptor"),
            "{m}"
        );
        assert!(
            e.to_string().starts_with("cannot encode the value: "),
            "{e}"
        );

        // A user's own refusal, deep inside a value, through the queue and
        // through a connection.
        let q = Queue::<(u8, Vec<Option<Refuses>>)>::new().unwrap();
        let Err(PutError::Encode(_, e)) = q.put((1, vec![None, Some(Refuses)])) else {
            panic!("the refused value was queued");
        };
        assert_eq!(encode_message(&e), REFUSAL);
        let (a, _b) = multiproc::pipe().unwrap();
        let Err(SendError::Codec(e)) = a.send(&("x", Refuses)) else {
            panic!("the refused value was sent");
        };
        assert_eq!(encode_message(&e), REFUSAL);
    });
}

fn make_refuses(_: ()) -> Refuses {
    Refuses
}

fn refuse_in_task(_: u32) -> Refuses {
    Refuses
}

fn child_result_is_an_encode_error(method: Method) {
    let mut p = Process::new(make_refuses, ()).start_method(method.start());
    p.start().unwrap();
    match p.join_timeout(Duration::from_secs(30)) {
        Err(JoinError::Codec(CodecError::Encode(m))) => {
            assert!(m.contains(REFUSAL), "{m}");
            assert!(m.contains("return value"), "{m}");
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    // The same through a pool task (its own error type).
    let pool = multiproc::Pool::builder()
        .processes(1)
        .start_method(method.start())
        .build()
        .unwrap();
    match pool.apply(refuse_in_task, 1) {
        Err(PoolError::Task {
            error: TaskError::Encode(m),
            ..
        }) => assert!(m.contains(REFUSAL), "{m}"),
        other => panic!("expected a task encode error, got {other:?}"),
    }
}

#[test]
fn a_return_value_that_does_not_encode_is_an_encode_error_spawn() {
    watchdog(LIMIT, || child_result_is_an_encode_error(Method::Spawn));
}

#[test]
fn a_return_value_that_does_not_encode_is_an_encode_error_fork() {
    watchdog(LIMIT, || {
        common::in_child(child_result_is_an_encode_error, Method::Fork);
    });
}

#[test]
fn connecting_without_the_key_of_a_keyed_manager_is_an_auth_error() {
    watchdog(LIMIT, || {
        for tcp in [false, true] {
            let builder = Manager::builder().authkey(b"the key");
            let builder = if tcp {
                builder.address("127.0.0.1:0").unwrap()
            } else {
                builder
            };
            let mut m = builder.start().unwrap();
            match Manager::connect(m.address().clone(), None) {
                Err(ManagerError::Connect(ConnectError::Auth(why))) => {
                    assert!(why.contains("authkey"), "{why}")
                }
                Err(e) => panic!("tcp={tcp}: expected an authentication error, got {e:?}"),
                Ok(_) => panic!("tcp={tcp}: connected without the key"),
            }
            // The server is unharmed, and the right key still works.
            let other = Manager::connect(m.address().clone(), Some(b"the key")).unwrap();
            let list = other.list([1u8, 2]).unwrap();
            assert_eq!(list.len().unwrap(), 2);
            drop(list);
            drop(other);
            m.shutdown().unwrap();
        }
    });
}

#[test]
fn a_closure_as_an_os_process_names_the_right_constructor() {
    let r = parallel([CspProcess::new(|x: u32| Ok(x), 1).os()]);
    let Err(e @ ProcessError::NotAFunction { .. }) = r else {
        panic!("expected NotAFunction, got {r:?}");
    };
    let m = e.to_string();
    assert!(m.contains("CspProcess::function"), "{m}");
    assert!(!m.contains("CspProcess::new"), "{m}");
}
