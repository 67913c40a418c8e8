//! The shared-memory path of `pipe()` pairs: messages in the rings beside
//! the socket keep their order with those that still take the socket
//! (descriptors, large frames), survive many wraps of the ring, and a peer
//! killed mid-exchange surfaces as a typed error, never a hang.

#[macro_use]
mod common;

use common::{LIMIT, Method, pattern, watchdog};
use multiproc::{Connection, JoinError, Process, RecvError, SendError, pipe};

/// Echoes every message (as bytes) until the connection ends.
fn echo_forever(conn: Connection) {
    while let Ok(b) = conn.recv_bytes() {
        if conn.send_bytes(&b).is_err() {
            return;
        }
    }
}

fn killed_mid_exchange(m: Method) {
    let (here, there) = pipe().unwrap();
    let mut p = Process::new(echo_forever, there).start_method(m.start());
    p.start().unwrap();
    // Ring-sized and socket-sized messages, one after the other.
    for len in [1, 100, 70_000, 16, 1 << 20, 0] {
        here.send_bytes(&pattern(len)).unwrap();
        assert!(here.recv_bytes_timeout(LIMIT).unwrap() == pattern(len));
    }
    // Messages in flight both ways when the peer dies.
    for _ in 0..50 {
        here.send_bytes(&pattern(1000)).unwrap();
    }
    p.kill().unwrap();
    // The echoes that were sent arrive whole, then the end.
    let mut echoed = 0;
    loop {
        match here.recv_bytes_timeout(LIMIT) {
            Ok(b) => {
                assert!(b == pattern(1000), "an echo came back damaged");
                echoed += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("expected Disconnected, got {e:?}"),
        }
    }
    assert!(echoed <= 50);
    // Sending: at most what the ring holds is taken, then Disconnected.
    let mut sent = 0;
    loop {
        match here.send_bytes(&pattern(1000)) {
            Ok(()) => {
                sent += 1;
                assert!(sent < 10_000, "sends to a dead peer never failed");
            }
            Err(SendError::Disconnected) => break,
            Err(e) => panic!("expected Disconnected, got {e:?}"),
        }
    }
    assert!(matches!(
        p.join_timeout(LIMIT),
        Err(JoinError::Killed { signal: 9 })
    ));
}

/// Receives a number, a connection, a large blob and a small one, in that
/// order, and answers on the connection it received.
fn mixed(conn: Connection) -> usize {
    let a: u32 = conn.recv().unwrap();
    let inner: Connection = conn.recv().unwrap();
    let big = conn.recv_bytes().unwrap();
    let small = conn.recv_bytes().unwrap();
    inner.send(&(a, big == pattern(200_000), small)).unwrap();
    conn.send(&"done").unwrap();
    big.len()
}

fn descriptors_keep_their_place(m: Method) {
    let (here, there) = pipe().unwrap();
    let (reply_here, reply_there) = pipe().unwrap();
    let mut p = Process::new(mixed, there).start_method(m.start());
    p.start().unwrap();
    here.send(&7u32).unwrap();
    here.send(&reply_there).unwrap();
    drop(reply_there);
    here.send_bytes(&pattern(200_000)).unwrap();
    here.send_bytes(b"tail").unwrap();
    let got: (u32, bool, Vec<u8>) = reply_here.recv_timeout(LIMIT).unwrap();
    assert_eq!(got, (7, true, b"tail".to_vec()));
    assert_eq!(here.recv_timeout::<String>(LIMIT).unwrap(), "done");
    assert_eq!(p.join_timeout(LIMIT).unwrap(), 200_000);
}

both_methods!(killed_mid_exchange, descriptors_keep_their_place);

/// Sizes around the ring's record limit (64 KiB with its header) and
/// the padding, so that records wrap at every offset.
const SIZES: [usize; 10] = [0, 1, 3, 4, 8, 100, 4000, 65_532, 65_533, 70_000];

#[test]
fn many_sizes_stay_in_order_across_wraps() {
    watchdog(LIMIT, || {
        let (a, b) = pipe().unwrap();
        let n = 3000;
        let writer = std::thread::spawn(move || {
            for i in 0..n {
                let len = SIZES[i % SIZES.len()];
                let mut m = pattern(len);
                if let Some(first) = m.first_mut() {
                    *first = i as u8;
                }
                a.send_bytes(&m).unwrap();
                if i % 7 == 0 {
                    a.send(&(i as u64)).unwrap();
                }
            }
            a
        });
        let mut buf = vec![0u8; 70_000];
        for i in 0..n {
            let len = SIZES[i % SIZES.len()];
            let mut want = pattern(len);
            if let Some(first) = want.first_mut() {
                *first = i as u8;
            }
            if i % 2 == 0 {
                assert!(b.recv_bytes().unwrap() == want, "message {i} differs");
            } else {
                let got = b.recv_bytes_into(&mut buf).unwrap();
                assert!(buf[..got] == want[..], "message {i} differs");
            }
            if i % 7 == 0 {
                assert_eq!(b.recv::<u64>().unwrap(), i as u64);
            }
        }
        drop(writer.join().unwrap());
        assert!(matches!(b.recv_bytes(), Err(RecvError::Disconnected)));
    });
}

#[test]
fn a_small_buffer_leaves_a_ring_message_queued() {
    watchdog(LIMIT, || {
        let (a, b) = pipe().unwrap();
        a.send_bytes(&pattern(100)).unwrap();
        assert!(matches!(
            b.recv_bytes_into(&mut [0; 10]),
            Err(RecvError::BufferTooSmall {
                len: 100,
                capacity: 10
            })
        ));
        assert!(b.poll(std::time::Duration::ZERO).unwrap());
        assert!(b.recv_bytes().unwrap() == pattern(100));
        assert!(!b.poll(std::time::Duration::ZERO).unwrap());
        assert!(matches!(
            b.recv_bytes_timeout(std::time::Duration::from_millis(20)),
            Err(RecvError::Timeout)
        ));
    });
}
