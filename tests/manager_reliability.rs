//! A manager's server under failure: the server killed, clients killed
//! mid-call or without cleaning up, and unauthenticated, garbage, oversize
//! and truncated requests. Every scenario uses real processes and a
//! watchdog.

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use common::{LONG, both, ensure, eventually, join, start, watchdog};
use multiproc::manager::ManagerBuilder;
use multiproc::{
    BarrierProxy, Client, ConditionProxy, ConnectError, Connection, JoinError, LockProxy, Manager,
    ManagerError, Namespace, Process, QueueProxy, RecvError,
};

fn kill(pid: i32) {
    signal("-KILL", pid);
}

/// Sends `sig` (`"-INT"`, `"-KILL"`) to process `pid`.
fn signal(sig: &str, pid: i32) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Checks that the server still serves: a round of operations on a fresh
/// object.
fn still_serving(m: &Manager) {
    let list = m.list(vec![1, 2, 3]).expect("create after the incident");
    list.append(&4).expect("append after the incident");
    assert_eq!(list.to_vec().unwrap(), [1, 2, 3, 4]);
}

// ---- child targets -----------------------------------------------------------

/// Blocks on the queue; reports how the call ended.
fn blocked_getter((q, ns): (QueueProxy<i32>, Namespace)) -> String {
    ns.set("ready", &true).expect("ready");
    match q.get() {
        Ok(x) => format!("got {x}"),
        Err(ManagerError::Disconnected) => "disconnected".into(),
        Err(e) => format!("other: {e}"),
    }
}

/// Connects as an unrelated client, creates objects, holds a lock, and
/// waits to be killed.
fn hoarder((address, key, lock, ready): (String, Vec<u8>, LockProxy, Connection)) {
    let m = Manager::connect(&address, Some(&key)).expect("connect");
    let keep = (
        m.list(vec![1]).unwrap(),
        m.dict([(1, 2)]).unwrap(),
        m.namespace().unwrap(),
    );
    lock.acquire().expect("acquire");
    ready.send(&()).expect("ready");
    thread::sleep(Duration::from_secs(600));
    drop(keep);
}

/// Waits on `cond` for `ms` milliseconds, after setting `flag` in `ns`
/// (while holding the condition's lock); whether it was notified.
fn condition_waiter(
    (cond, ns, flag, ms): (ConditionProxy, Namespace, String, u64),
) -> Result<bool, String> {
    let e = |e: ManagerError| e.to_string();
    cond.acquire().map_err(e)?;
    ns.set(&flag, &true).map_err(e)?;
    let woken = cond.wait_timeout(Duration::from_millis(ms)).map_err(e)?;
    cond.release().map_err(e)?;
    Ok(woken)
}

fn barrier_waiter(b: BarrierProxy) -> String {
    match b.wait_timeout(LONG) {
        Ok(i) => format!("passed {i}"),
        Err(e) => format!("{e:?}"),
    }
}

/// Starts a manager in this process, sends its server's pid, and waits to
/// be killed.
fn manager_owner(pids: Connection) {
    // On TCP: a process killed by a signal leaves no socket file behind.
    let m = ManagerBuilder::new()
        .address("127.0.0.1:0")
        .and_then(ManagerBuilder::start)
        .expect("start a manager");
    pids.send(&m.pid().expect("the server's pid"))
        .expect("send the pid");
    thread::sleep(Duration::from_secs(600));
}

/// Kills `p` and reaps it.
fn kill_and_join<R: serde::de::DeserializeOwned + std::fmt::Debug>(
    p: &mut Process<R>,
) -> Result<(), String> {
    p.kill().map_err(|e| e.to_string())?;
    let joined = p.join_timeout(LONG);
    ensure(
        matches!(joined, Err(JoinError::Killed { .. })),
        format!("join of the killed child: {joined:?}"),
    )
}

// ---- scenarios (both start methods) -----------------------------------------

/// Waiter A (long timeout) and waiter B (short) wait on a condition; A is
/// killed and reaped; a `notify(1)` right after must wake B, not the dead
/// A. Several rounds, as a notify used to reach the dead waiter whenever it
/// came before the server's periodic check of A's connection. Every other
/// round the notify comes first and reaches A alive, which is killed
/// before it returns: the wake-up must pass on to B.
fn notify_skips_a_killed_waiter(fork: bool) -> Result<(), String> {
    let e = |e: ManagerError| e.to_string();
    let m = Manager::start().map_err(e)?;
    for round in 0..6 {
        let cond = m.condition().map_err(e)?;
        let ns = m.namespace().map_err(e)?;
        let args = |flag: &str, ms: u64| (cond.clone(), ns.clone(), flag.to_string(), ms);
        let mut a = start(condition_waiter, args("a", 30_000), fork)?;
        ensure(
            eventually(LONG, || ns.has("a").unwrap_or(false)),
            "waiter A never came",
        )?;
        let mut b = start(condition_waiter, args("b", 5_000), fork)?;
        ensure(
            eventually(LONG, || ns.has("b").unwrap_or(false)),
            "waiter B never came",
        )?;
        // Each set its flag holding the lock and frees it by waiting: once
        // the lock is ours, both wait, A first.
        ensure(cond.acquire_timeout(LONG).map_err(e)?, "lock never freed")?;
        cond.release().map_err(e)?;
        if round % 2 == 0 {
            kill_and_join(&mut a)?;
            cond.acquire().map_err(e)?;
            cond.notify(1).map_err(e)?;
            cond.release().map_err(e)?;
        } else {
            // The notify reaches A, alive; A dies before it can return
            // (it waits for the lock, held here): B gets the wake-up.
            cond.acquire().map_err(e)?;
            cond.notify(1).map_err(e)?;
            kill_and_join(&mut a)?;
            cond.release().map_err(e)?;
        }
        let woken = join(&mut b)?;
        ensure(
            woken == Ok(true),
            format!("round {round}: the live waiter got {woken:?}"),
        )?;
    }
    Ok(())
}

/// A party killed (and reaped) while counted at a manager barrier: the
/// next arrival must see a broken barrier at once, never pass with the
/// dead party; `broken` and `n_waiting` agree. Several rounds, as the
/// server used to notice the death only at its periodic check.
fn barrier_arrival_after_a_party_died(fork: bool) -> Result<(), String> {
    let e = |e: ManagerError| e.to_string();
    let m = Manager::start().map_err(e)?;
    for round in 0..6 {
        let b = m.barrier(2).map_err(e)?;
        let mut child = start(barrier_waiter, b.clone(), fork)?;
        ensure(
            eventually(LONG, || b.n_waiting().unwrap_or(0) == 1),
            "the child never arrived",
        )?;
        kill_and_join(&mut child)?;
        if round % 2 == 1 {
            // Asked first, the state already shows the death.
            let (broken, n) = (b.broken().map_err(e)?, b.n_waiting().map_err(e)?);
            ensure(
                broken && n == 0,
                format!("round {round}: broken {broken}, n_waiting {n}"),
            )?;
        }
        let mine = b.wait_timeout(Duration::from_secs(5));
        ensure(
            matches!(mine, Err(ManagerError::BrokenBarrier)),
            format!("round {round}: wait after the death: {mine:?}"),
        )?;
        let (broken, n) = (b.broken().map_err(e)?, b.n_waiting().map_err(e)?);
        ensure(
            broken && n == 0,
            format!("round {round}: after: broken {broken}, n_waiting {n}"),
        )?;
    }
    Ok(())
}

/// A terminal's Ctrl-C reaches the whole foreground process group: the
/// manager's server ignores it, and still dies with its owner (here the
/// owner dies of the same SIGINT).
fn ctrl_c_to_owner_and_server(fork: bool) -> Result<(), String> {
    let (ours, theirs) = multiproc::pipe().map_err(|e| e.to_string())?;
    let mut owner = start(manager_owner, theirs, fork)?;
    let server: i32 = ours.recv_timeout(LONG).map_err(|e| e.to_string())?;
    signal("-INT", server);
    thread::sleep(Duration::from_millis(300));
    ensure(!common::is_gone(server), "SIGINT stopped the server")?;
    signal("-INT", owner.pid().unwrap_or(0));
    let joined = owner.join_timeout(LONG);
    ensure(
        matches!(joined, Err(JoinError::Killed { signal: 2 })),
        format!("the owner: {joined:?}"),
    )?;
    ensure(
        common::wait_gone(server, LONG),
        "the server outlived its owner",
    )
}

#[test]
fn a_notify_goes_to_a_live_waiter_not_a_killed_one() {
    both(notify_skips_a_killed_waiter);
}

#[test]
fn a_barrier_party_killed_while_waiting_breaks_the_barrier_at_once() {
    both(barrier_arrival_after_a_party_died);
}

#[test]
fn ctrl_c_leaves_the_server_to_its_owner() {
    both(ctrl_c_to_owner_and_server);
}

// ---- tests ------------------------------------------------------------------

#[test]
fn sigint_does_not_stop_the_manager_server() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let ns = m.namespace().unwrap();
        ns.set("x", &1).unwrap();
        let q = m.queue::<i32>(0).unwrap();
        let pid = m.pid().unwrap();
        signal("-INT", pid);
        thread::sleep(Duration::from_millis(300));
        assert!(!common::is_gone(pid), "SIGINT stopped the server");
        assert_eq!(ns.get::<i32>("x").unwrap(), 1);
        q.put(&7).unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), 7);
        still_serving(&m);
    });
}

#[test]
fn killing_the_server_fails_pending_and_later_calls_promptly() {
    watchdog(Duration::from_secs(60), || {
        let mut m = Manager::start().unwrap();
        let q = m.queue::<i32>(0).unwrap();
        let ns = m.namespace().unwrap();
        let list = m.list(vec![1]).unwrap();
        // A call pending in a child process and one in a thread here.
        let mut child = Process::new(blocked_getter, (q.clone(), ns.clone()));
        child.start().unwrap();
        assert!(eventually(LONG, || ns.has("ready").unwrap_or(false)));
        let waiter = {
            let q = q.clone();
            thread::spawn(move || q.get())
        };
        thread::sleep(Duration::from_millis(200));
        kill(m.pid().unwrap());
        assert!(matches!(
            waiter.join().unwrap(),
            Err(ManagerError::Disconnected)
        ));
        assert_eq!(child.join_timeout(LONG).unwrap(), "disconnected");
        // Later calls, on pooled connections or new ones.
        assert!(matches!(list.len(), Err(ManagerError::Disconnected)));
        assert!(matches!(
            ns.get::<bool>("ready"),
            Err(ManagerError::Disconnected)
        ));
        assert!(matches!(m.namespace(), Err(ManagerError::Disconnected)));
        // Shutting down a dead server is not an error, and removes the
        // socket file it left.
        m.shutdown().unwrap();
        if let multiproc::Address::Unix(path) = m.address() {
            assert!(!path.exists());
        }
    });
}

#[test]
fn a_client_killed_mid_call_does_not_disturb_the_others() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let q = m.queue::<i32>(0).unwrap();
        let ns = m.namespace().unwrap();
        let mut child = Process::new(blocked_getter, (q.clone(), ns.clone()));
        child.start().unwrap();
        assert!(eventually(LONG, || ns.has("ready").unwrap()));
        thread::sleep(Duration::from_millis(200));
        child.kill().unwrap();
        let _ = child.join_timeout(LONG);
        // The dead client's pending get must not take this item.
        q.put(&1).unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), 1);
        still_serving(&m);
    });
}

#[test]
fn a_client_that_dies_without_cleaning_up_leaks_nothing() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let lock = m.lock().unwrap();
        let before = m.object_count().unwrap();
        let (ready, theirs) = multiproc::pipe().unwrap();
        let mut child = Process::new(
            hoarder,
            (
                m.address().to_string(),
                m.authkey().unwrap().to_vec(),
                lock.clone(),
                theirs,
            ),
        );
        child.start().unwrap();
        ready.recv_timeout::<()>(LONG).unwrap();
        assert_eq!(m.object_count().unwrap(), before + 3);
        assert!(!lock.try_acquire().unwrap());
        child.kill().unwrap();
        let _ = child.join_timeout(LONG);
        // Its objects are freed and its lock released.
        assert!(eventually(LONG, || m.object_count().unwrap() == before));
        assert!(lock.acquire_timeout(LONG).unwrap());
        lock.release().unwrap();
        still_serving(&m);
    });
}

#[test]
fn a_wrong_authkey_is_refused_and_the_server_goes_on() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let res = Manager::connect(m.address(), Some(b"not the key"));
        assert!(matches!(
            res,
            Err(ManagerError::Connect(ConnectError::Auth(_)))
        ));
        // No key at all: the server's challenge is all this peer gets.
        let conn = Client::connect_unauthenticated_timeout(m.address(), LONG).unwrap();
        let _ = conn.send_bytes(b"let me in");
        let mut closed = false;
        for _ in 0..4 {
            match conn.recv_bytes_timeout(LONG) {
                Ok(_) => continue,
                Err(RecvError::Disconnected) => {
                    closed = true;
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(closed, "the server kept an unauthenticated connection");
        still_serving(&m);
    });
}

/// Opens an authenticated connection and returns a raw stream on it.
fn raw(m: &Manager) -> (Connection, UnixStream) {
    let conn = Client::connect_timeout(m.address(), m.authkey(), LONG).unwrap();
    let fd = conn.as_fd().try_clone_to_owned().unwrap();
    (conn, UnixStream::from(fd))
}

/// `Request::Hello { session: 1, pid: 1, anchor: false }` as a frame:
/// length, descriptor count, postcard (variant 0, varint 1, zigzag 1,
/// false).
const HELLO: [u8; 9] = [0, 0, 0, 5, 0, 0, 1, 2, 0];

/// Reads until the server hangs up; fails if it does not.
fn server_hangs_up(conn: &Connection) {
    for _ in 0..4 {
        match conn.recv_bytes_timeout(LONG) {
            Ok(_) => continue,
            Err(RecvError::Disconnected) | Err(RecvError::Truncated { .. }) => return,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    panic!("the server kept a misbehaving connection");
}

#[test]
fn garbage_requests_close_the_connection_and_the_server_goes_on() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        // Garbage instead of Hello.
        let (conn, mut s) = raw(&m);
        s.write_all(&[0, 0, 0, 3, 0, 0xff, 0xff]).unwrap();
        server_hangs_up(&conn);
        // Hello, then a frame that is no request.
        let (conn, mut s) = raw(&m);
        s.write_all(&HELLO).unwrap();
        s.write_all(&[0, 0, 0, 5, 0, 0x7f, 1, 2, 3]).unwrap();
        server_hangs_up(&conn);
        // A malformed frame header (negative length other than -1).
        let (conn, mut s) = raw(&m);
        s.write_all(&HELLO).unwrap();
        s.write_all(&[0xff, 0xff, 0xff, 0xf0]).unwrap();
        server_hangs_up(&conn);
        // A deeply nested value.
        let (conn, mut s) = raw(&m);
        s.write_all(&HELLO).unwrap();
        // Request::Create(Kind::Data(List, Value::List([Value::List([...])])))
        let mut body = vec![0u8, 1, 0, 0];
        for _ in 0..10_000 {
            body.extend([6, 1]); // List, one element
        }
        body.push(0); // None
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        s.write_all(&frame).unwrap();
        server_hangs_up(&conn);
        still_serving(&m);
    });
}

#[test]
fn oversize_and_truncated_requests_close_the_connection() {
    watchdog(Duration::from_secs(60), || {
        let m = ManagerBuilder::new().max_request(1024).start().unwrap();
        // An announced length over the cap: refused before reading it.
        let (conn, mut s) = raw(&m);
        s.write_all(&HELLO).unwrap();
        s.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
        server_hangs_up(&conn);
        // A real frame over the cap.
        let (conn, mut s) = raw(&m);
        s.write_all(&HELLO).unwrap();
        let big = vec![0u8; 4096];
        s.write_all(&(big.len() as u32).to_be_bytes()).unwrap();
        let _ = s.write_all(&big);
        server_hangs_up(&conn);
        // A truncated frame: the client hangs up half-way.
        let (conn, mut s) = raw(&m);
        s.write_all(&HELLO).unwrap();
        s.write_all(&[0, 0, 0, 100, 0, 1, 2]).unwrap();
        drop(s);
        drop(conn);
        // A request over the cap sent through a proxy fails cleanly.
        let list = m.list::<String>([]).unwrap();
        let res = list.append(&"x".repeat(4096));
        assert!(
            matches!(res, Err(ManagerError::Protocol(_))),
            "an oversize request: {res:?}"
        );
        // The process's session (and so the list) survived.
        list.append(&"small".into()).unwrap();
        assert_eq!(list.len().unwrap(), 1);
        still_serving(&m);
        assert!(eventually(LONG, || m.object_count().unwrap() == 1));
    });
}

#[test]
fn a_server_started_again_at_the_same_address_gets_fresh_sessions() {
    watchdog(Duration::from_secs(60), || {
        let path =
            std::env::temp_dir().join(format!("multiproc-restart-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let serve = |path: std::path::PathBuf| {
            let server = ManagerBuilder::new()
                .address(&path)
                .unwrap()
                .authkey(b"k")
                .bind()
                .unwrap();
            thread::spawn(move || server.serve_forever())
        };
        let first = serve(path.clone());
        let m = Manager::connect(&path, Some(b"k")).unwrap();
        let old = m.namespace().unwrap();
        old.set("x", &1).unwrap();
        m.shutdown_server().unwrap();
        first.join().unwrap();
        assert!(matches!(
            old.get::<i32>("x"),
            Err(ManagerError::Disconnected)
        ));

        let second = serve(path.clone());
        let fresh = m.namespace().unwrap();
        fresh.set("y", &2).unwrap();
        assert_eq!(fresh.to_string(), "Namespace(y=2)");
        drop((old, fresh));
        m.shutdown_server().unwrap();
        second.join().unwrap();
    });
}
