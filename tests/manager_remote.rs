//! Remote managers: a server and its clients as separate programs started
//! independently (this test binary re-executed with a role in the
//! environment), over TCP and over a Unix socket path, with an authkey.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::watchdog;
use multiproc::manager::ManagerBuilder;
use multiproc::{ConnectError, Manager, ManagerError};

const KEY: &[u8] = b"remote manager key";
const ROLE: &str = "MULTIPROC_MANAGER_REMOTE_ROLE";
const ADDRESS: &str = "MULTIPROC_MANAGER_REMOTE_ADDRESS";

/// Runs only when this binary is re-executed with a role: the server, or a
/// client. Otherwise it does nothing.
#[test]
fn remote_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let address = std::env::var(ADDRESS).expect("address");
    match role.as_str() {
        "server" => {
            let server = ManagerBuilder::new()
                .address(address.as_str())
                .unwrap()
                .authkey(KEY)
                .bind()
                .expect("bind");
            println!("SERVING {}", server.address());
            server.serve_forever();
            println!("SERVER STOPPED");
        }
        "client" => {
            let m = Manager::connect(address.as_str(), Some(KEY)).expect("connect");
            let ns = m.namespace().expect("namespace");
            ns.set("from", "client").unwrap();
            ns.add("n", 0).unwrap_err();
            ns.set("n", &1).unwrap();
            ns.add("n", 41).unwrap();
            let list = m.list(vec![1, 2, 3]).unwrap();
            list.append(&4).unwrap();
            // A named object outlives this program.
            let log = m.named("log").list::<String>([]).unwrap();
            log.append(&"client was here".to_string()).unwrap();
            println!("CLIENT {} {:?}", ns, list.to_vec().unwrap());
        }
        other => panic!("unknown role {other}"),
    }
}

fn start(role: &str, address: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "remote_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(ADDRESS, address)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a separate program")
}

/// The first stdout line of `child` that starts with `prefix`.
fn line_with(child: &mut Child, prefix: &str) -> (String, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read");
        assert!(n > 0, "program ended before printing {prefix}");
        // libtest may print "test remote_role ... " before it.
        if let Some(at) = line.find(prefix) {
            return (line[at + prefix.len()..].trim().to_string(), out);
        }
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("program did not exit");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Kills a program that is still running when the test ends (on failure).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn remote_round(address: &str) {
    let mut server = KillOnDrop(start("server", address));
    let server = &mut server.0;
    let (bound, mut server_out) = line_with(server, "SERVING ");

    // A client program started independently.
    let mut client = KillOnDrop(start("client", &bound));
    let (printed, mut client_out) = line_with(&mut client.0, "CLIENT ");
    assert_eq!(printed, "Namespace(from='client', n=42) [1, 2, 3, 4]");
    let _ = std::io::Read::read_to_string(&mut client_out, &mut String::new());
    assert!(wait_exit(&mut client.0).success());

    // The client's objects went with it, except the named one.
    let m = Manager::connect(bound.as_str(), Some(KEY)).unwrap();
    assert_eq!(m.object_count().unwrap(), 1);
    let log = m.named("log").list::<String>([]).unwrap();
    assert_eq!(log.to_vec().unwrap(), ["client was here"]);
    drop(log);
    assert!(m.forget("log").unwrap());
    assert!(!m.forget("log").unwrap());
    assert_eq!(m.object_count().unwrap(), 0);

    // A wrong key is refused; no key at all too.
    assert!(matches!(
        Manager::connect(bound.as_str(), Some(b"wrong")),
        Err(ManagerError::Connect(ConnectError::Auth(_)))
    ));
    assert!(Manager::connect(bound.as_str(), None).is_err());

    // This process is a client too.
    let d = m.dict([("k".to_string(), 1)]).unwrap();
    assert_eq!(d.add(&"k".into(), 1).unwrap(), 2);
    drop(d);

    m.shutdown_server().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut server_out, &mut rest);
    assert!(rest.contains("SERVER STOPPED"), "{rest}");
    assert!(wait_exit(server).success());
    assert!(matches!(m.namespace(), Err(ManagerError::Disconnected)));
}

#[test]
fn a_remote_manager_over_tcp() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    watchdog(Duration::from_secs(90), || remote_round("127.0.0.1:0"));
}

#[test]
fn a_remote_manager_over_a_unix_path() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let path = std::env::temp_dir().join(format!("multiproc-remote-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    watchdog(Duration::from_secs(90), move || {
        remote_round(path.to_str().unwrap())
    });
}
