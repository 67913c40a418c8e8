//! Security defaults: keys come from the OS random source (a failure is an
//! error, never a predictable key), every process has an authkey that its
//! children inherit and that listeners, clients and managers use when given
//! none, nothing listens unauthenticated unless asked (and never on a
//! public address without a second, explicit opt-out), socket files and
//! shared-memory segments are owner-only whatever the umask, and a manager
//! left running at `exit` leaves no file behind.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::{LONG, both, ensure, in_child, join, start, wait_gone, watchdog};
use multiproc::__test_hooks;
use multiproc::csp::Channel;
use multiproc::manager::{ManagerBuilder, ManagerError};
use multiproc::{
    Client, ConnectError, Connection, Listener, Lock, Manager, Pool, Process, Queue, SharedMemory,
    SimpleQueue, StartError, Value, authkey, current_process, pipe,
};

/// Held by the tests here that look for files in `/tmp` and `/dev/shm`, so
/// that they do not see each other's.
static FILES: Mutex<()> = Mutex::new(());

fn files_lock() -> std::sync::MutexGuard<'static, ()> {
    FILES.lock().unwrap_or_else(|e| e.into_inner())
}

fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "multiproc-security-{}-{name}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn mode(path: &Path) -> std::io::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

// ---- 1. the OS random source fails: errors, not predictable keys -----------

fn nothing(_: ()) {}

/// Runs in a child of its own: the failure hook acts on the whole process.
fn random_failure_scenario(_: ()) -> Result<(), String> {
    // A listener made while the source still works, to see the failure in
    // its handshake later.
    let keyed = Listener::bind("127.0.0.1:0", Some(b"key")).map_err(err)?;
    __test_hooks::forget_authkey();
    __test_hooks::random_fails(true);

    ensure(authkey().is_err(), "authkey() made a key")?;
    ensure(
        current_process().authkey().is_err(),
        "current_process().authkey() made a key",
    )?;
    match Manager::start() {
        Err(ManagerError::Start(StartError::Io(_))) => {}
        other => return Err(format!("Manager::start: {other:?}")),
    }
    // With a key given, the fresh socket name still needs random bytes.
    match ManagerBuilder::new().authkey(b"k").start() {
        Err(ManagerError::Start(StartError::Io(_))) => {}
        other => return Err(format!("Manager::start with a key: {other:?}")),
    }
    match ManagerBuilder::new()
        .address("127.0.0.1:0")
        .map_err(err)?
        .bind()
    {
        Err(ManagerError::Connect(ConnectError::Io(_))) => {}
        other => return Err(format!("ManagerBuilder::bind: {other:?}")),
    }
    match Manager::connect(keyed.address(), None) {
        Err(ManagerError::Connect(ConnectError::Io(_))) => {}
        other => return Err(format!("Manager::connect: {other:?}")),
    }
    match Listener::bind(socket_path("nokey"), None) {
        Err(ConnectError::Io(_)) => {}
        other => return Err(format!("Listener::bind: {other:?}")),
    }
    match Client::connect(keyed.address(), None) {
        Err(ConnectError::Io(_)) => {}
        other => return Err(format!("Client::connect: {other:?}")),
    }
    let mut p = Process::new(nothing, ());
    match p.start() {
        Err(StartError::Io(_)) => {}
        other => return Err(format!("Process::start: {other:?}")),
    }
    ensure(
        SharedMemory::new(64).is_err(),
        "SharedMemory::new named a segment",
    )?;
    // The challenge of a handshake.
    let peer = Client::connect_unauthenticated_timeout(keyed.address(), LONG).map_err(err)?;
    match keyed.accept_timeout(LONG) {
        Err(ConnectError::Io(_)) => {}
        other => return Err(format!("the listener's challenge: {other:?}")),
    }
    drop(peer);
    // A large CSP message cannot name its spill segment.
    let c: Channel<Vec<u8>> = Channel::builder()
        .slot_size(1024)
        .buffer(2)
        .build()
        .map_err(err)?;
    ensure(
        c.writer().write(&vec![7u8; 100_000]).is_err(),
        "a spilled CSP message was named",
    )?;

    // Once the source works again, so does everything.
    __test_hooks::random_fails(false);
    let key = authkey().map_err(err)?;
    ensure(key.len() == 32 && key != [0; 32], "a poor default key")?;
    let m = Manager::start().map_err(err)?;
    ensure(m.authkey() == Some(key.as_slice()), "the manager's key")?;
    ensure(
        m.list([1, 2]).map_err(err)?.len().map_err(err)? == 2,
        "list",
    )?;
    Ok(())
}

#[test]
fn a_failing_random_source_is_an_error_not_a_predictable_key() {
    let _files = files_lock();
    in_child(random_failure_scenario, ()).unwrap();
}

// ---- 2. the default authkey --------------------------------------------------

fn child_key(_: ()) -> Result<Vec<u8>, String> {
    current_process().authkey().map_err(err)
}

/// Connects with the default key and returns what the listener says.
fn default_client(address: String) -> Result<String, String> {
    let conn = Client::connect_timeout(&address, None, LONG).map_err(err)?;
    conn.recv_timeout::<String>(LONG).map_err(err)
}

/// Connects without authenticating; how the attempt ended.
fn unauthenticated_client(address: String) -> String {
    match Client::connect_unauthenticated_timeout(&address, LONG) {
        Ok(conn) => {
            let _ = conn.send("let me in");
            match conn.recv_bytes_timeout(LONG) {
                Ok(first) if first.starts_with(b"#CHALLENGE#") => "challenged".into(),
                other => format!("{other:?}"),
            }
        }
        Err(e) => e.to_string(),
    }
}

/// Uses a manager through the default key.
fn manager_client(address: String) -> Result<usize, String> {
    let m = Manager::connect(&address, None).map_err(err)?;
    let list = m.named("shared").list::<i32>([]).map_err(err)?;
    list.append(&5).map_err(err)?;
    list.len().map_err(err)
}

/// Sets a new key, then reports the key of a child started after that.
fn set_then_start(fork: bool) -> Result<(Vec<u8>, Vec<u8>), String> {
    multiproc::set_authkey(b"a key set by hand");
    let mut p = start(child_key, (), fork)?;
    Ok((authkey().map_err(err)?, join(&mut p)??))
}

fn default_key_scenario(fork: bool) -> Result<(), String> {
    let key = authkey().map_err(err)?;
    ensure(key.len() == multiproc::AUTHKEY_LEN, "key length")?;
    ensure(current_process().authkey().map_err(err)? == key, "same key")?;

    // Children inherit it.
    let mut p = start(child_key, (), fork)?;
    ensure(join(&mut p)?? == key, "a child has another key")?;

    // A listener given no key asks for it; a child given none holds it.
    let path = socket_path(&format!("default-{fork}"));
    for address in [path.to_string_lossy().into_owned(), "127.0.0.1:0".into()] {
        let listener = Listener::bind(address, None).map_err(err)?;
        ensure(listener.authenticates(), "the default listener is open")?;
        let address = listener.address().to_string();
        let mut good = start(default_client, address.clone(), fork)?;
        let conn = listener.accept_timeout(LONG).map_err(err)?;
        conn.send("welcome").map_err(err)?;
        ensure(join(&mut good)?? == "welcome", "the good client")?;
        // A peer that does not authenticate gets a challenge, and no
        // connection: the listener closes and skips it.
        let mut bad = start(unauthenticated_client, address, fork)?;
        while bad.is_alive() {
            match listener.accept_timeout(Duration::from_millis(50)) {
                Err(ConnectError::Timeout) => {}
                other => return Err(format!("an unauthenticated peer: {other:?}")),
            }
        }
        ensure(join(&mut bad)? == "challenged", "the refused client")?;
    }

    // A manager started with no key uses it; a child connects with none.
    let m = Manager::start().map_err(err)?;
    ensure(m.authkey() == Some(key.as_slice()), "the manager's key")?;
    ensure(m.address().is_abstract(), "the manager's address")?;
    let mut p = start(manager_client, m.address().to_string(), fork)?;
    ensure(join(&mut p)?? == 1, "the child's append")?;
    ensure(
        Manager::connect_unauthenticated(m.address()).is_err(),
        "a client without the key got in",
    )?;
    ensure(
        Manager::connect(m.address(), Some(b"wrong")).is_err(),
        "a wrong key got in",
    )?;

    // A key set by hand is what children get from then on (in a child, so
    // the rest of this process keeps its key).
    let mut p = start(set_then_start, fork, fork)?;
    let (set, inherited) = join(&mut p)??;
    ensure(set == b"a key set by hand", "set_authkey")?;
    ensure(inherited == set, "a child did not inherit the key set")?;
    ensure(authkey().map_err(err)? == key, "the parent's key changed")?;

    // A server bound in this process, with no key given, asks for it too.
    let server = ManagerBuilder::new()
        .address("127.0.0.1:0")
        .map_err(err)?
        .bind()
        .map_err(err)?;
    let address = server.address().clone();
    let serving = std::thread::spawn(move || server.serve_forever());
    ensure(
        Manager::connect_unauthenticated(&address).is_err(),
        "an unauthenticated client reached a bound server",
    )?;
    let client = Manager::connect(&address, None).map_err(err)?;
    client.shutdown_server().map_err(err)?;
    serving.join().map_err(|_| "the server thread panicked")?;
    Ok(())
}

#[test]
fn every_process_has_an_authkey_its_children_inherit_and_sockets_use() {
    let _files = files_lock();
    both(default_key_scenario);
}

// ---- 3. no key on a public address needs an explicit opt-out ---------------

#[test]
fn listening_without_a_key_on_a_public_address_is_refused() {
    let _files = files_lock();
    watchdog(LONG, || {
        for public in ["0.0.0.0:0", "[::]:0", "[::ffff:0.0.0.0]:0"] {
            match Listener::builder().no_authkey().bind(public) {
                Err(ConnectError::Unauthenticated(a)) => {
                    assert_eq!(a.to_string(), public);
                    let text = ConnectError::Unauthenticated(a).to_string();
                    assert!(text.contains("allow_unauthenticated"), "{text}");
                }
                other => panic!("{public}: {other:?}"),
            }
            match ManagerBuilder::new()
                .address(public)
                .unwrap()
                .no_authkey()
                .bind()
            {
                Err(ManagerError::Connect(ConnectError::Unauthenticated(_))) => {}
                other => panic!("{public}: {other:?}"),
            }
        }
        // Loopback and Unix sockets may go without a key when asked.
        for local in ["127.0.0.1:0", "127.9.9.9:0"] {
            let l = Listener::builder().no_authkey().bind(local).unwrap();
            assert!(!l.authenticates());
        }
        let path = socket_path("nokey");
        let l = Listener::builder().no_authkey().bind(&path).unwrap();
        assert!(!l.authenticates());
        drop(l);
        let mut m = ManagerBuilder::new().no_authkey().start().unwrap();
        assert_eq!(m.authkey(), None);
        let other = Manager::connect_unauthenticated(m.address()).unwrap();
        assert_eq!(other.list([1]).unwrap().len().unwrap(), 1);
        drop(other);
        m.shutdown().unwrap();

        // The explicit opt-out.
        let open = Listener::builder()
            .allow_unauthenticated()
            .bind("0.0.0.0:0")
            .unwrap();
        assert!(!open.authenticates());
        let port = match open.address() {
            multiproc::Address::Tcp(a) => a.port(),
            other => panic!("{other:?}"),
        };
        let client = Client::connect_unauthenticated_timeout(("127.0.0.1", port), LONG).unwrap();
        let served = open.accept_timeout(LONG).unwrap();
        client.send("in").unwrap();
        assert_eq!(served.recv_timeout::<String>(LONG).unwrap(), "in");
        drop(open);
        let server = ManagerBuilder::new()
            .address("0.0.0.0:0")
            .unwrap()
            .allow_unauthenticated()
            .bind()
            .unwrap();
        drop(server);
        // A public address with a key (the default one, or a given one).
        assert!(Listener::bind("0.0.0.0:0", None).unwrap().authenticates());
        assert!(
            Listener::builder()
                .authkey(b"k")
                .bind("0.0.0.0:0")
                .unwrap()
                .authenticates()
        );
    });
}

// ---- 4. owner-only sockets and segments, whatever the umask ----------------
//
// Socket files (a listener's, a bound manager's), named segments
// (SharedMemory, ShareableList, SharedMemoryManager, CSP spills) and memory
// files (queues, values, arrays, locks, CSP channels, pool boards, manager
// mailboxes), in a child whose umask is 0.

fn shm_names(prefixes: &[&str]) -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
                .collect()
        })
        .unwrap_or_default()
}

/// The memory files this process holds open whose name starts with
/// `multiproc-`, each with its mode.
fn memfds() -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(name) = target.strip_prefix("/memfd:multiproc-")
            && let Ok(m) = mode(&entry.path())
        {
            let name = name.trim_end_matches(" (deleted)").to_string();
            out.push((name, m));
        }
    }
    out
}

fn square(x: i32) -> i32 {
    x * x
}

fn modes_scenario(_: ()) -> Result<(), String> {
    rustix::process::umask(rustix::fs::Mode::empty());
    let mut wrong = Vec::new();
    let mut check = |what: &str, m: u32| {
        if m != 0o600 {
            wrong.push(format!("{what}: {m:o}"));
        }
    };

    // Socket files: a listener's, a manager server's.
    let path = socket_path("mode-listener");
    let listener = Listener::bind(&path, None).map_err(err)?;
    check("listener socket", mode(&path).map_err(err)?);
    let open = Listener::builder()
        .no_authkey()
        .bind(socket_path("mode-open"))
        .map_err(err)?;
    if let multiproc::Address::Unix(p) = open.address() {
        check("unauthenticated listener socket", mode(p).map_err(err)?);
    }
    let mpath = socket_path("mode-manager");
    let server = ManagerBuilder::new()
        .address(&mpath)
        .map_err(err)?
        .bind()
        .map_err(err)?;
    check("manager socket", mode(&mpath).map_err(err)?);
    drop(server);
    ensure(!mpath.exists(), "the manager's socket file stayed")?;

    // A started manager's socket is abstract: no file at all.
    let before = std::fs::read_dir(std::env::temp_dir())
        .map_err(err)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect::<BTreeSet<_>>();
    let m = Manager::start().map_err(err)?;
    ensure(
        m.address().is_abstract(),
        "the manager's address has a file",
    )?;
    let list = m.list([1, 2, 3]).map_err(err)?; // a mailbox, in this process
    ensure(list.len().map_err(err)? == 3, "the list")?;
    let after = std::fs::read_dir(std::env::temp_dir())
        .map_err(err)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("multiproc-mgr"))
        .collect::<BTreeSet<_>>();
    ensure(
        after.is_subset(&before),
        format!("the manager made files: {after:?}"),
    )?;

    // Named segments: SharedMemory's, and a spilled CSP message's.
    let shm = SharedMemory::new(4096).map_err(err)?;
    check(
        "SharedMemory::new",
        mode(&Path::new("/dev/shm").join(shm.name())).map_err(err)?,
    );
    let name = format!("multiproc-security-{}", std::process::id());
    let named = SharedMemory::create(&name, 4096).map_err(err)?;
    check(
        "SharedMemory::create",
        mode(&Path::new("/dev/shm").join(named.name())).map_err(err)?,
    );
    let shared_list =
        multiproc::ShareableList::new(vec![multiproc::ShareableItem::Int(1)]).map_err(err)?;
    check(
        "ShareableList::new",
        mode(&Path::new("/dev/shm").join(shared_list.name())).map_err(err)?,
    );
    let smm = multiproc::SharedMemoryManager::start().map_err(err)?;
    let managed = smm.shared_memory(4096).map_err(err)?;
    check(
        "SharedMemoryManager::shared_memory",
        mode(&Path::new("/dev/shm").join(managed.name())).map_err(err)?,
    );
    drop((managed, smm, shared_list));
    let spills_before = shm_names(&["multiproc-csp-"]);
    let c: Channel<Vec<u8>> = Channel::builder()
        .slot_size(1024)
        .buffer(2)
        .build()
        .map_err(err)?;
    c.writer().write(&vec![9u8; 200_000]).map_err(err)?;
    let spills: Vec<_> = shm_names(&["multiproc-csp-"])
        .difference(&spills_before)
        .cloned()
        .collect();
    ensure(!spills.is_empty(), "no spill segment seen")?;
    for s in &spills {
        if let Ok(m) = mode(&Path::new("/dev/shm").join(s)) {
            check(&format!("CSP spill {s}"), m);
        }
    }
    ensure(
        c.reader().read().map_err(err)?.len() == 200_000,
        "the spilled message",
    )?;

    // Memory files: queue, simple queue, values, arrays, locks, CSP
    // channel, pool board, manager mailbox.
    let q = Queue::<i32>::new().map_err(err)?;
    q.put(1).map_err(err)?;
    let sq = SimpleQueue::<i32>::new().map_err(err)?;
    let v = Value::new(5i64).map_err(err)?;
    let a = multiproc::Array::<f64>::new(8).map_err(err)?;
    let lock = Lock::new().map_err(err)?;
    let pool = Pool::new(1).map_err(err)?;
    ensure(pool.apply(square, 3).map_err(err)? == 9, "the pool")?;
    let found = memfds();
    let kinds: BTreeSet<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "queue",
        "Value",
        "Array",
        "Lock",
        "csp-channel",
        "pool-worker",
    ] {
        ensure(
            kinds.contains(expected),
            format!("no multiproc-{expected} memory file among {kinds:?}"),
        )?;
    }
    // The mailbox is only mapped (its descriptor closed): it shows in the
    // maps, made by the same owner-only function (its own mode is checked
    // by the mailbox's unit test).
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(err)?;
    ensure(
        maps.contains("/memfd:multiproc-mailbox"),
        "no manager mailbox mapped",
    )?;
    for (name, m) in &found {
        check(&format!("memory file multiproc-{name}"), *m);
    }
    drop((
        q, sq, v, a, lock, pool, c, list, m, shm, named, open, listener,
    ));
    ensure(wrong.is_empty(), format!("not owner-only: {wrong:?}"))
}

#[test]
fn sockets_and_segments_are_owner_only_whatever_the_umask() {
    let _files = files_lock();
    in_child(modes_scenario, ()).unwrap();
}

// ---- 5. exit with a manager running: no file left -------------------------

/// Crate files in `/tmp` and `/dev/shm`.
fn crate_files() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (dir, prefixes) in [
        (std::env::temp_dir(), &["multiproc-"][..]),
        (PathBuf::from("/dev/shm"), &["multiproc-", "mp-"][..]),
    ] {
        if let Ok(d) = std::fs::read_dir(&dir) {
            for e in d.filter_map(|e| e.ok()) {
                let n = e.file_name().to_string_lossy().into_owned();
                if prefixes.iter().any(|p| n.starts_with(p)) {
                    out.insert(e.path());
                }
            }
        }
    }
    out
}

/// Starts managers (one kept, one leaked), uses them, reports the server
/// pids and leaves with `exit`, running no destructor.
fn exit_with_managers(report: Connection) {
    let kept = Manager::start().unwrap();
    let list = kept.list([1, 2]).unwrap();
    list.append(&3).unwrap();
    let q = kept.queue::<String>(0).unwrap();
    q.put(&"left".into()).unwrap();
    let leaked = Manager::start().unwrap();
    leaked.namespace().unwrap().set("x", &1).unwrap();
    report
        .send(&[kept.pid().unwrap(), leaked.pid().unwrap()])
        .unwrap();
    std::mem::forget(leaked);
    std::process::exit(0);
}

fn exit_scenario(fork: bool) -> Result<(), String> {
    let before = crate_files();
    let (ours, theirs) = pipe().map_err(err)?;
    let mut p = start(exit_with_managers, theirs, fork)?;
    let servers: [i32; 2] = ours.recv_timeout(LONG).map_err(err)?;
    match p.join_timeout(LONG) {
        Err(multiproc::JoinError::Exited { code: 0 }) => {}
        other => return Err(format!("the child: {other:?}")),
    }
    for pid in servers {
        ensure(wait_gone(pid, LONG), "a server outlived its owner")?;
    }
    // Files another program made meanwhile come and go; ours would stay.
    let mut left: Vec<_> = crate_files().difference(&before).cloned().collect();
    if !left.is_empty() {
        std::thread::sleep(Duration::from_secs(2));
        left.retain(|f| f.exists());
    }
    ensure(left.is_empty(), format!("files left behind: {left:?}"))
}

#[test]
fn a_manager_running_at_exit_leaves_no_file() {
    let _files = files_lock();
    both(exit_scenario);
}
