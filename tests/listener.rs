//! `Listener` / `Client` over Unix socket paths and TCP loopback, with and
//! without an authkey, against well-behaved, silent and hostile peers. (The
//! default authkey and the refusals are in `tests/security.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use common::{LONG, watchdog};
use multiproc::{
    Address, Client, ConnectError, Connection, Listener, Process, RecvError, SendError, pipe,
};
use serde::{Deserialize, Serialize};

const KEY: &[u8] = b"the shared secret";
/// A fresh socket path in the temp directory, unique per test.
fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "multiproc-listener-{}-{name}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn tcp_loopback() -> Address {
    "127.0.0.1:0".parse().unwrap()
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Job {
    id: u32,
    name: String,
    data: Vec<i64>,
    extra: Option<(f64, bool)>,
}

impl Job {
    fn sample(id: u32) -> Job {
        Job {
            id,
            name: format!("job {id}"),
            data: vec![1, -2, 3, i64::MAX / 4],
            extra: Some((0.5, true)),
        }
    }

    fn answered(&self) -> Job {
        Job {
            id: self.id,
            name: self.name.to_uppercase(),
            data: self.data.iter().map(|x| x * 2).collect(),
            extra: None,
        }
    }
}

// ---- child process targets ------------------------------------------------

/// Connects with `key`, or without authenticating for `None`.
fn connect(address: &str, key: Option<&[u8]>) -> Result<Connection, ConnectError> {
    match key {
        Some(key) => Client::connect_timeout(address, Some(key), LONG),
        None => Client::connect_unauthenticated_timeout(address, LONG),
    }
}

/// Connects, answers one job, waits for "bye", returns the job's id.
fn echo_client((address, key): (String, Option<Vec<u8>>)) -> Result<u32, String> {
    let conn = connect(&address, key.as_deref()).map_err(|e| e.to_string())?;
    let job: Job = conn.recv_timeout(LONG).map_err(|e| e.to_string())?;
    conn.send(&job.answered()).map_err(|e| e.to_string())?;
    let bye: String = conn.recv_timeout(LONG).map_err(|e| e.to_string())?;
    if bye != "bye" {
        return Err(format!("expected bye, got {bye:?}"));
    }
    Ok(job.id)
}

/// Connects with a (wrong) key; reports how connecting ended. Should it
/// get through, it sends a message the listener must never deliver.
fn wrong_key_client((address, key): (String, Vec<u8>)) -> String {
    match Client::connect_timeout(&address, Some(&key), LONG) {
        Ok(conn) => {
            let _ = conn.send("leaked");
            "connected".into()
        }
        Err(ConnectError::Auth(_)) => "auth".into(),
        Err(e) => format!("other error: {e}"),
    }
}

/// Connects without a key to a listener that wants one and sends an
/// application message; returns the two frames it gets back.
fn keyless_client(address: String) -> Result<(Vec<u8>, Vec<u8>), String> {
    let conn = connect(&address, None).map_err(|e| e.to_string())?;
    conn.send("leaked").map_err(|e| e.to_string())?;
    let first = conn.recv_bytes_timeout(LONG).map_err(|e| e.to_string())?;
    let second = conn.recv_bytes_timeout(LONG).map_err(|e| e.to_string())?;
    Ok((first, second))
}

/// Receives a connection over the listener connection and talks on it.
fn handle_client((address, key): (String, Option<Vec<u8>>)) -> Result<String, String> {
    let conn = connect(&address, key.as_deref()).map_err(|e| e.to_string())?;
    let passed: Connection = conn.recv_timeout(LONG).map_err(|e| e.to_string())?;
    passed
        .send("over the passed connection")
        .map_err(|e| e.to_string())?;
    let back: String = passed.recv_timeout(LONG).map_err(|e| e.to_string())?;
    Ok(back)
}

// ---- helpers ----------------------------------------------------------------

fn start_echo_client(listener: &Listener, key: Option<&[u8]>) -> Process<Result<u32, String>> {
    let mut p = Process::new(
        echo_client,
        (listener.address().to_string(), key.map(<[u8]>::to_vec)),
    );
    p.start().unwrap();
    p
}

/// Serves one echo client on an accepted connection.
fn serve_echo(conn: &Connection, id: u32) {
    let job = Job::sample(id);
    conn.send(&job).unwrap();
    let back: Job = conn.recv_timeout(LONG).unwrap();
    assert_eq!(back, job.answered());
    conn.send("bye").unwrap();
}

/// A good client in a child process is accepted and served.
fn round_trip(listener: &Listener, key: Option<&[u8]>, id: u32) {
    let mut child = start_echo_client(listener, key);
    let conn = listener.accept_timeout(LONG).unwrap();
    serve_echo(&conn, id);
    assert_eq!(child.join_timeout(LONG).unwrap(), Ok(id));
}

/// A good client on a thread of this process is accepted and served.
fn round_trip_in_thread(listener: &Listener, key: Option<&'static [u8]>, id: u32) {
    let address = listener.address().clone();
    let client = thread::spawn(move || echo_client((address.to_string(), key.map(<[u8]>::to_vec))));
    let conn = listener.accept_timeout(LONG).unwrap();
    serve_echo(&conn, id);
    assert_eq!(client.join().unwrap(), Ok(id));
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A raw stream to a listener, for speaking out of protocol.
enum Raw {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Raw {
    fn connect(address: &Address) -> Raw {
        match address {
            Address::Unix(path) => Raw::Unix(UnixStream::connect(path).unwrap()),
            Address::Tcp(addr) => Raw::Tcp(TcpStream::connect(addr).unwrap()),
        }
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Raw::Unix(s) => s,
            Raw::Tcp(s) => s,
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Raw::Unix(s) => s.shutdown(Shutdown::Write),
            Raw::Tcp(s) => s.shutdown(Shutdown::Write),
        };
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_frame(r: &mut dyn Read) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let mut body = vec![0u8; i32::from_be_bytes(header) as usize];
    r.read_exact(&mut body)?;
    Ok(body)
}

// ---- round trips --------------------------------------------------------------

#[test]
fn unix_round_trip_without_key() {
    watchdog(Duration::from_secs(60), || {
        let path = socket_path("plain");
        let listener = Listener::builder().no_authkey().bind(&path).unwrap();
        assert_eq!(listener.address(), &Address::Unix(path.clone()));
        round_trip(&listener, None, 1);
        round_trip(&listener, None, 2);
    });
}

#[test]
fn unix_round_trip_with_key() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::bind(socket_path("keyed"), Some(KEY)).unwrap();
        assert!(listener.authenticates());
        round_trip(&listener, Some(KEY), 3);
        round_trip(&listener, Some(KEY), 4);
    });
}

#[test]
fn tcp_round_trip_without_key() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::builder()
            .no_authkey()
            .bind(tcp_loopback())
            .unwrap();
        match listener.address() {
            Address::Tcp(addr) => assert_ne!(addr.port(), 0, "the real port is reported"),
            other => panic!("not TCP: {other:?}"),
        }
        round_trip(&listener, None, 5);
    });
}

#[test]
fn tcp_round_trip_with_key() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::bind(("127.0.0.1", 0), Some(KEY)).unwrap();
        round_trip(&listener, Some(KEY), 6);
        round_trip(&listener, Some(KEY), 7);
    });
}

#[test]
fn several_clients_at_once() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::bind(socket_path("several"), Some(KEY)).unwrap();
        let mut children: Vec<_> = (0..4)
            .map(|_| start_echo_client(&listener, Some(KEY)))
            .collect();
        for id in 10..14 {
            let conn = listener.accept_timeout(LONG).unwrap();
            serve_echo(&conn, id);
        }
        let mut ids: Vec<u32> = children
            .iter_mut()
            .map(|c| c.join_timeout(LONG).unwrap().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, vec![10, 11, 12, 13]);
    });
}

// ---- wrong keys ---------------------------------------------------------------

/// Runs `f` on another thread while this one keeps accepting (each accept
/// must give nothing: no peer in these cases may be accepted), and returns
/// what `f` returned. Handshakes only progress while someone accepts.
fn while_accepting<T: Send>(listener: &Listener, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        let done = s.spawn(f);
        while !done.is_finished() {
            match listener.accept_timeout(Duration::from_millis(50)) {
                Err(ConnectError::Timeout) => {}
                Ok(_) => panic!("a peer that failed its handshake was accepted"),
                Err(e) => panic!("accept failed: {e:?}"),
            }
        }
        done.join().unwrap()
    })
}

fn wrong_key_case(address: Address) {
    let listener = Listener::bind(address, Some(KEY)).unwrap();
    let mut child = Process::new(
        wrong_key_client,
        (listener.address().to_string(), b"not the key".to_vec()),
    );
    child.start().unwrap();
    // The listener skips the failed peer (no error from accept); the peer
    // gets the auth error.
    let verdict = while_accepting(&listener, || child.join_timeout(LONG).unwrap());
    assert_eq!(verdict, "auth");
    // The listener still serves, and what it delivers next comes from the
    // good client, not from the rejected one.
    round_trip(&listener, Some(KEY), 20);
}

#[test]
fn wrong_key_fails_on_both_sides_unix() {
    watchdog(Duration::from_secs(60), || {
        wrong_key_case(Address::Unix(socket_path("wrong")))
    });
}

#[test]
fn wrong_key_fails_on_both_sides_tcp() {
    watchdog(Duration::from_secs(60), || wrong_key_case(tcp_loopback()));
}

#[test]
fn keyless_client_is_refused_and_its_message_not_delivered() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::bind(socket_path("keyless"), Some(KEY)).unwrap();
        let mut child = Process::new(keyless_client, listener.address().to_string());
        child.start().unwrap();
        let (challenge, verdict) =
            while_accepting(&listener, || child.join_timeout(LONG).unwrap().unwrap());
        assert!(challenge.starts_with(b"#CHALLENGE#{sha256}"));
        assert_eq!(challenge.len(), b"#CHALLENGE#{sha256}".len() + 40);
        assert_eq!(verdict, b"#FAILURE#");
        round_trip(&listener, Some(KEY), 21);
    });
}

// ---- silent and hostile clients --------------------------------------------

fn silent_case(address: Address) {
    let mut listener = Listener::bind(address, Some(KEY)).unwrap();
    listener.set_handshake_timeout(Duration::from_secs(1));
    let mut silent = Raw::connect(listener.address());
    let mut good = start_echo_client(&listener, Some(KEY));
    // The good client, connected after the silent peer, is served without
    // waiting for the silent peer's handshake to time out.
    let conn = listener.accept_timeout(LONG).unwrap();
    serve_echo(&conn, 30);
    assert_eq!(good.join_timeout(LONG).unwrap(), Ok(30));
    // The silent peer got its challenge, then the listener hung up.
    let rest = while_accepting(&listener, || {
        let stream = silent.stream();
        let challenge = read_frame(stream).unwrap();
        assert!(challenge.starts_with(b"#CHALLENGE#"));
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        rest
    });
    assert!(rest.is_empty());
}

#[test]
fn silent_client_does_not_block_others_unix() {
    watchdog(Duration::from_secs(60), || {
        silent_case(Address::Unix(socket_path("silent")))
    });
}

#[test]
fn silent_client_does_not_block_others_tcp() {
    watchdog(Duration::from_secs(60), || silent_case(tcp_loopback()));
}

/// Whether an error is the one expected.
type Expect = fn(&ConnectError) -> bool;

/// What a hostile client writes, and whether the listener answers it with
/// a `#FAILURE#` verdict (a well-formed but wrong response) before hanging
/// up, or hangs up at once (a broken frame, which leaves nothing to judge).
struct Garbage {
    name: &'static str,
    bytes: Vec<u8>,
    judged: bool,
}

fn garbage_cases() -> Vec<Garbage> {
    let mut four_gib = (-1i32).to_be_bytes().to_vec();
    four_gib.extend_from_slice(&(4u64 << 30).to_be_bytes());
    let mut over_cap = frame(&[b'x'; 257]);
    over_cap.truncate(100);
    let mut truncated = frame(&[b'y'; 40]);
    truncated.truncate(4 + 10);
    let case = |name, bytes, judged| Garbage {
        name,
        bytes,
        judged,
    };
    vec![
        case(
            "not a response",
            frame(b"hello, this is not a digest"),
            true,
        ),
        case(
            "unsupported digest",
            frame(&[b"{sha3_256}".as_slice(), &[0u8; 32]].concat()),
            true,
        ),
        case(
            "sha384, wrong digest",
            frame(&[b"{sha384}".as_slice(), &[0u8; 48]].concat()),
            true,
        ),
        case("legacy md5, wrong digest", frame(&[0u8; 16]), true),
        case(
            "right shape, wrong digest",
            frame(&[b"{sha256}".as_slice(), &[0u8; 32]].concat()),
            true,
        ),
        case("empty frame", frame(b""), true),
        case(
            "malformed header",
            b"\xff\xff\xff\xfeGARBAGE GARBAGE".to_vec(),
            false,
        ),
        case("4 GiB length prefix", four_gib, false),
        case("257 bytes, over the handshake cap", over_cap, false),
        case("truncated frame", truncated, false),
        case("truncated header", vec![0, 0], false),
        case("nothing, then close", Vec::new(), false),
    ]
}

fn garbage_case(address: Address) {
    let listener = Listener::bind(address, Some(KEY)).unwrap();
    for (i, case) in garbage_cases().into_iter().enumerate() {
        let mut raw = Raw::connect(listener.address());
        raw.stream().write_all(&case.bytes).unwrap();
        raw.shutdown_write();
        // Not accepted; challenged, maybe judged, then hung up on.
        let (challenge, rest) = while_accepting(&listener, || {
            let stream = raw.stream();
            let challenge = read_frame(stream).unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            (challenge, rest)
        });
        assert!(challenge.starts_with(b"#CHALLENGE#"), "{}", case.name);
        let expected = if case.judged {
            frame(b"#FAILURE#")
        } else {
            Vec::new()
        };
        assert_eq!(rest, expected, "{}", case.name);
        drop(raw);
        round_trip_in_thread(&listener, Some(KEY), 40 + i as u32);
    }
    // And a good client in another process at the end.
    round_trip(&listener, Some(KEY), 99);
}

#[test]
fn garbage_handshakes_are_closed_and_skipped_unix() {
    watchdog(Duration::from_secs(60), || {
        garbage_case(Address::Unix(socket_path("garbage")))
    });
}

#[test]
fn garbage_handshakes_are_closed_and_skipped_tcp() {
    watchdog(Duration::from_secs(60), || garbage_case(tcp_loopback()));
}

// ---- the client against hostile listeners ----------------------------------

/// Runs a fake listener doing `serve` with the first peer, and connects a
/// `Client` to it.
fn against_fake<T: Send + 'static>(
    serve: impl FnOnce(UnixStream) -> T + Send + 'static,
    timeout: Duration,
    name: &str,
) -> (Result<Connection, ConnectError>, T) {
    let path = socket_path(name);
    let fake = UnixListener::bind(&path).unwrap();
    let server = thread::spawn(move || serve(fake.accept().unwrap().0));
    let res = Client::connect_timeout(&path, Some(KEY), timeout);
    let out = server.join().unwrap();
    let _ = std::fs::remove_file(&path);
    (res, out)
}

#[test]
fn client_refuses_bad_challenges() {
    watchdog(Duration::from_secs(60), || {
        let mut four_gib = (-1i32).to_be_bytes().to_vec();
        four_gib.extend_from_slice(&(4u64 << 30).to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
            ("not a challenge", frame(b"welcome!"), |e| {
                matches!(e, ConnectError::Auth(_))
            }),
            (
                "legacy md5 challenge, answered, then no verdict",
                frame(&[b"#CHALLENGE#".as_slice(), &[1; 20]].concat()),
                |e| matches!(e, ConnectError::Handshake(RecvError::Disconnected)),
            ),
            (
                "sha3 challenge",
                frame(&[b"#CHALLENGE#{sha3_256}".as_slice(), &[1; 40]].concat()),
                |e| matches!(e, ConnectError::Auth(_)),
            ),
            ("short challenge", frame(b"#CHALLENGE#short"), |e| {
                matches!(e, ConnectError::Auth(_))
            }),
            ("4 GiB frame", four_gib, |e| {
                matches!(e, ConnectError::Handshake(RecvError::TooLarge { .. }))
            }),
            ("hang up", Vec::new(), |e| {
                matches!(e, ConnectError::Handshake(RecvError::Disconnected))
            }),
        ];
        for (i, (name, bytes, expect)) in cases.into_iter().enumerate() {
            let (res, ()) = against_fake(
                move |mut s| {
                    s.write_all(&bytes).unwrap();
                },
                LONG,
                &format!("fake{i}"),
            );
            match res {
                Err(e) => assert!(expect(&e), "{name}: unexpected error {e:?}"),
                Ok(_) => panic!("{name}: connected"),
            }
        }
    });
}

#[test]
fn client_times_out_on_a_silent_listener() {
    watchdog(Duration::from_secs(60), || {
        let (res, ()) = against_fake(
            |s| {
                // Hold the connection open, say nothing, until the client
                // gives up and closes.
                let mut s = s;
                let _ = s.read_to_end(&mut Vec::new());
            },
            Duration::from_millis(300),
            "mute",
        );
        assert!(
            matches!(res, Err(ConnectError::HandshakeTimeout)),
            "{res:?}"
        );
    });
}

/// A listener that accepts any answer to its own challenge but cannot
/// answer the client's: the client must refuse it (the check is mutual).
#[test]
fn client_refuses_an_impostor_listener() {
    watchdog(Duration::from_secs(60), || {
        let (res, verdict) = against_fake(
            |mut s| {
                let challenge = [b"#CHALLENGE#{sha256}".as_slice(), &[7u8; 40]].concat();
                s.write_all(&frame(&challenge)).unwrap();
                read_frame(&mut s).unwrap();
                s.write_all(&frame(b"#WELCOME#")).unwrap();
                let theirs = read_frame(&mut s).unwrap();
                assert!(theirs.starts_with(b"#CHALLENGE#{sha256}"));
                s.write_all(&frame(&[b"{sha256}".as_slice(), &[0u8; 32]].concat()))
                    .unwrap();
                read_frame(&mut s).unwrap()
            },
            LONG,
            "impostor",
        );
        assert!(matches!(res, Err(ConnectError::Auth(_))), "{res:?}");
        assert_eq!(verdict, b"#FAILURE#");
    });
}

// ---- handles over listener connections --------------------------------------

#[test]
fn connection_passes_over_unix_listener() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::bind(socket_path("handles"), Some(KEY)).unwrap();
        let mut child = Process::new(
            handle_client,
            (listener.address().to_string(), Some(KEY.to_vec())),
        );
        child.start().unwrap();
        let conn = listener.accept_timeout(LONG).unwrap();
        let (mine, theirs) = pipe().unwrap();
        conn.send(&theirs).unwrap();
        drop(theirs);
        let got: String = mine.recv_timeout(LONG).unwrap();
        assert_eq!(got, "over the passed connection");
        mine.send("and back").unwrap();
        assert_eq!(
            child.join_timeout(LONG).unwrap(),
            Ok("and back".to_string())
        );
    });
}

#[test]
fn connection_does_not_pass_over_tcp() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::bind(tcp_loopback(), Some(KEY)).unwrap();
        let address = listener.address().clone();
        let client = thread::spawn(move || {
            let conn = Client::connect_timeout(&address, Some(KEY), LONG).unwrap();
            conn.recv_timeout::<String>(LONG).unwrap()
        });
        let conn = listener.accept_timeout(LONG).unwrap();
        let (_mine, theirs) = pipe().unwrap();
        assert!(matches!(
            conn.send(&theirs),
            Err(SendError::HandlesNotSupported)
        ));
        // Nothing was sent; the connection is still in step.
        conn.send("plain data still flows").unwrap();
        assert_eq!(client.join().unwrap(), "plain data still flows");
    });
}

// ---- addresses and the socket file -----------------------------------------

#[test]
fn addresses_parse_and_print() {
    // Parsing a host name resolves it.
    watchdog(Duration::from_secs(60), addresses_parse_and_print_body);
}

fn addresses_parse_and_print_body() {
    let cases = [
        ("127.0.0.1:8080", true),
        ("[::1]:9", true),
        ("localhost:80", true),
        ("/tmp/some.sock", false),
        ("relative.sock", false),
        ("./name:80", false),
    ];
    for (text, tcp) in cases {
        let a: Address = text.parse().unwrap();
        assert_eq!(!a.is_unix(), tcp, "{text}");
        if text != "localhost:80" {
            assert_eq!(a.to_string(), text);
            assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        }
    }
    assert!(matches!(
        "".parse::<Address>(),
        Err(ConnectError::BadAddress(_))
    ));
    assert!(matches!(
        "no.such.host.invalid:80".parse::<Address>(),
        Err(ConnectError::BadAddress(_))
    ));
}

#[test]
fn socket_file_is_removed_on_drop_only_if_ours() {
    let path = socket_path("file");
    let listener = Listener::bind(&path, None).unwrap();
    assert!(path.exists());
    // A second listener on the same path fails and leaves the file alone.
    match Listener::bind(&path, None) {
        Err(ConnectError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse),
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    assert!(path.exists());
    drop(listener);
    assert!(!path.exists());

    // A file that replaced ours is not removed.
    let listener = Listener::bind(&path, None).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    drop(listener);
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn accept_and_connect_time_out() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::bind(socket_path("timeout"), Some(KEY)).unwrap();
        assert!(matches!(
            listener.accept_timeout(Duration::from_millis(50)),
            Err(ConnectError::Timeout)
        ));
        // Nobody accepts: the handshake cannot finish.
        assert!(matches!(
            Client::connect_timeout(listener.address(), Some(KEY), Duration::from_millis(50)),
            Err(ConnectError::HandshakeTimeout)
        ));
        // Nobody listens at all.
        let gone = socket_path("nobody");
        assert!(matches!(
            Client::connect(&gone, None),
            Err(ConnectError::Io(_))
        ));
    });
}

#[test]
fn debug_output_hides_the_key() {
    let listener = Listener::bind(tcp_loopback(), Some(KEY)).unwrap();
    let shown = format!("{listener:?}");
    assert!(shown.contains("authenticates: true"));
    assert!(!shown.contains("secret"));
    let builder = format!("{:?}", Listener::builder().authkey(KEY));
    assert!(
        !builder.contains("secret") && !builder.contains("116"),
        "{builder}"
    );
}

// ---- several threads accepting at once ----------------------------------------

/// Threads accepting from one authenticating listener share the
/// handshakes: every client is served by exactly one of them, and a thread
/// waiting with a short timeout returns on time while another drives the
/// handshakes with no timeout at all.
#[test]
fn several_threads_accept_at_once() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::bind(tcp_loopback(), Some(KEY)).unwrap();
        let address = listener.address().clone();
        thread::scope(|s| {
            let acceptors: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..2)
                            .map(|_| {
                                let conn = listener.accept().unwrap();
                                let n: u32 = conn.recv().unwrap();
                                conn.send(&(n * 10)).unwrap();
                                n
                            })
                            .collect::<Vec<u32>>()
                    })
                })
                .collect();
            // Some thread leads with no timeout by now; this one waits
            // and gives up.
            thread::sleep(Duration::from_millis(50));
            assert!(matches!(
                listener.accept_timeout(Duration::from_millis(50)),
                Err(ConnectError::Timeout)
            ));
            let clients: Vec<_> = (0..8u32)
                .map(|n| {
                    let address = address.clone();
                    s.spawn(move || {
                        let conn = Client::connect_timeout(&address, Some(KEY), LONG).unwrap();
                        conn.send(&n).unwrap();
                        assert_eq!(conn.recv_timeout::<u32>(LONG).unwrap(), n * 10);
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
            let mut served: Vec<u32> = acceptors
                .into_iter()
                .flat_map(|a| a.join().unwrap())
                .collect();
            served.sort();
            assert_eq!(served, (0..8).collect::<Vec<_>>());
        });
    });
}

/// Frames larger than the reader's buffer cross TCP whole, in both
/// directions (the TCP reader fills the returned vector directly), and a
/// small message after each still arrives in order.
#[test]
fn tcp_large_frames() {
    watchdog(Duration::from_secs(60), || {
        let listener = Listener::builder()
            .no_authkey()
            .bind(tcp_loopback())
            .unwrap();
        let address = listener.address().to_string();
        let client = thread::spawn(move || {
            let conn = connect(&address, None).unwrap();
            let got = conn.recv_bytes().unwrap();
            let small: String = conn.recv().unwrap();
            conn.send_bytes(&got).unwrap();
            conn.send(&small).unwrap();
            conn
        });
        let conn = listener.accept_timeout(LONG).unwrap();
        let big = common::pattern((3 << 20) + 5);
        conn.send_bytes(&big).unwrap();
        conn.send(&"after").unwrap();
        let back = conn.recv_bytes().unwrap();
        assert_eq!(back.len(), big.len());
        assert!(back == big, "large frame garbled over TCP");
        assert_eq!(conn.recv::<String>().unwrap(), "after");
        drop(client.join().unwrap());
    });
}
