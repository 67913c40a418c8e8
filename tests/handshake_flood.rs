//! An authenticating `Listener` under a flood of unauthenticated peers
//! that connect and then stay silent or answer too slowly: a good client
//! connecting after them is still accepted and served, and dropping the
//! listener closes every socket it held.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::{LONG, socket_inodes, watchdog};
use multiproc::{Address, Client, Listener};

const KEY: &[u8] = b"flood key";
const PEERS: usize = 200;

/// A peer that connected and will not finish its handshake.
trait Idle: Read + Write + Send {
    fn set_read_timeout(&self, t: Duration);
}

impl Idle for TcpStream {
    fn set_read_timeout(&self, t: Duration) {
        TcpStream::set_read_timeout(self, Some(t)).unwrap();
    }
}

impl Idle for UnixStream {
    fn set_read_timeout(&self, t: Duration) {
        UnixStream::set_read_timeout(self, Some(t)).unwrap();
    }
}

fn connect_idle(address: &Address) -> Box<dyn Idle> {
    match address {
        Address::Tcp(addr) => Box::new(TcpStream::connect_timeout(addr, LONG).unwrap()),
        Address::Unix(path) => Box::new(UnixStream::connect(path).unwrap()),
    }
}

/// Reads until the listener hangs up; whether it did within the read
/// timeout (a reset counts as hanging up).
fn hung_up(peer: &mut dyn Idle) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn flood_case(address: Address) {
    let before = socket_inodes();
    let listener = Listener::bind(address, Some(KEY)).unwrap();
    let address = listener.address().clone();
    thread::scope(|s| {
        // The server: one accept, which has to take in the whole flood
        // before the good client's turn comes.
        // Dropping the listener at the end closes every socket it still
        // held in handshake (the oldest were closed already, evicted by the
        // cap).
        let server = s.spawn(move || {
            let conn = listener.accept_timeout(LONG).unwrap();
            let n: u32 = conn.recv().unwrap();
            conn.send(&(n + 1)).unwrap();
            drop(listener);
        });
        // Half the peers stay silent; the other half start an answer (a
        // frame header announcing 40 bytes, and 3 of them) and stall.
        let mut idle: Vec<Box<dyn Idle>> = (0..PEERS)
            .map(|i| {
                let mut peer = connect_idle(&address);
                if i % 2 == 1 {
                    peer.write_all(&[0, 0, 0, 40, b'{', b's', b'h']).unwrap();
                }
                peer
            })
            .collect();
        let start = Instant::now();
        let conn = Client::connect_timeout(&address, Some(KEY), Duration::from_secs(10)).unwrap();
        let authenticated = start.elapsed();
        conn.send(&41u32).unwrap();
        assert_eq!(conn.recv_timeout::<u32>(LONG).unwrap(), 42);
        server.join().unwrap();
        // The figure to report; no assertion on it (the machine may be
        // loaded), liveness is the watchdog's.
        eprintln!(
            "{PEERS} idle peers, then a good client authenticated in {:.1} ms",
            authenticated.as_secs_f64() * 1e3
        );
        drop(conn);
        for (i, peer) in idle.iter_mut().enumerate() {
            peer.set_read_timeout(LONG);
            assert!(hung_up(&mut **peer), "peer {i} was not hung up on");
        }
    });
    assert_eq!(socket_inodes().len(), before.len(), "sockets left open");
}

/// Both transports in one test: the socket count is per process.
#[test]
fn idle_peers_do_not_lock_out_a_good_client() {
    watchdog(Duration::from_secs(120), || {
        flood_case("127.0.0.1:0".parse().unwrap());
        let path: PathBuf =
            std::env::temp_dir().join(format!("multiproc-flood-{}.sock", std::process::id()));
        flood_case(Address::Unix(path));
    });
}
