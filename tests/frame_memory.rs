//! Memory follows the bytes that arrive, not the length a frame header
//! announces: peers that announce frames of 500 MiB and send one byte do
//! not make the receiving process allocate them, and good traffic on
//! another connection keeps flowing. The receiver runs in a child process
//! so that its resident memory is measured alone.

#[macro_use]
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{LONG, Method, eventually, pattern};
use multiproc::{Client, Connection, Listener, Process, RecvError, pipe};

/// Connections that announce a huge frame and stall.
const STALLED: usize = 20;
/// What each of them announces.
const ANNOUNCED: u32 = 500 << 20;
/// The bound on the receiver's peak resident memory.
const MAX_RSS: u64 = 64 << 20;

/// A value of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib << 10
}

/// Echoes every message on `conn`. With `stalled`, counts itself there the
/// first time a receive times out (by then its frame header has been read
/// and its buffer made).
fn echo(conn: Connection, stalled: Option<Arc<AtomicUsize>>) {
    let mut counted = false;
    loop {
        match conn.recv_bytes_timeout(Duration::from_millis(50)) {
            Ok(bytes) => {
                if conn.send_bytes(&bytes).is_err() {
                    return;
                }
            }
            Err(RecvError::Timeout) => {
                if let Some(stalled) = &stalled
                    && !counted
                {
                    counted = true;
                    stalled.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(_) => return,
        }
    }
}

/// The receiver: a listener without a key, one thread per connection (the
/// first is the good one, the others stall), and on request its peak and
/// current resident memory, once every stalled connection is waiting for
/// its body; then serves until told to stop.
fn receiver(control: Connection) -> Result<(), String> {
    let listener = Listener::builder()
        .no_authkey()
        .bind("127.0.0.1:0")
        .map_err(|e| e.to_string())?;
    control
        .send(&listener.address().to_string())
        .map_err(|e| e.to_string())?;
    let stalled = Arc::new(AtomicUsize::new(0));
    for i in 0..=STALLED {
        let conn = listener.accept_timeout(LONG).map_err(|e| e.to_string())?;
        let counter = (i > 0).then(|| stalled.clone());
        std::thread::spawn(move || echo(conn, counter));
    }
    control.recv::<()>().map_err(|e| e.to_string())?;
    if !eventually(LONG, || stalled.load(Ordering::SeqCst) == STALLED) {
        return Err("the stalled connections never got to their body".into());
    }
    control
        .send(&(status_bytes("VmHWM:"), status_bytes("VmRSS:")))
        .map_err(|e| e.to_string())?;
    control.recv::<()>().map_err(|e| e.to_string())?;
    // The threads still blocked in their receives end with the process.
    Ok(())
}

/// One round trip of `len` bytes on the good connection.
fn echoed(good: &Connection, len: usize) {
    let sent = pattern(len);
    good.send_bytes(&sent).unwrap();
    assert!(
        good.recv_bytes_timeout(LONG).unwrap() == sent,
        "echo of {len} bytes differs"
    );
}

fn announced_but_unsent_frames_do_not_pin_memory(m: Method) {
    let (ours, theirs) = pipe().unwrap();
    let mut p = Process::new(receiver, theirs).start_method(m.start());
    p.start().unwrap();
    let address: String = ours.recv_timeout(LONG).unwrap();
    // The good connection first: it is accepted first.
    let good = Client::connect_unauthenticated_timeout(&address, LONG).unwrap();
    echoed(&good, 10);
    let stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let mut s = TcpStream::connect(&address).unwrap();
            s.write_all(&ANNOUNCED.to_be_bytes()).unwrap();
            s.write_all(&[7]).unwrap();
            s
        })
        .collect();
    // Good traffic flows, small messages and an honest large frame.
    for len in (0..50).map(|i| 1000 + 37 * i) {
        echoed(&good, len);
    }
    echoed(&good, 8 << 20);
    ours.send(&()).unwrap();
    let (peak, now): (u64, u64) = ours.recv_timeout(LONG).unwrap();
    eprintln!(
        "{STALLED} connections announcing {} MiB each: receiver peak RSS {:.1} MiB, now {:.1} MiB",
        ANNOUNCED >> 20,
        peak as f64 / (1 << 20) as f64,
        now as f64 / (1 << 20) as f64
    );
    assert!(peak < MAX_RSS, "the receiver's peak RSS was {peak} bytes");
    // And the good connection is still served, the stalled ones still
    // open.
    echoed(&good, 4096);
    ours.send(&()).unwrap();
    drop(stalled);
    drop(good);
    p.join_timeout(LONG).unwrap().unwrap();
}

both_methods!(announced_but_unsent_frames_do_not_pin_memory);
