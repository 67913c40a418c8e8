//! Connections end to end: handles travelling as process arguments and
//! inside messages under both start methods, descriptors not leaking into
//! grandchildren, and the faults a reader must survive (peer closed or
//! killed, truncated, oversized, negative and undecodable frames, timeouts
//! with partial messages, small buffers, frame caps, huge and empty
//! messages). Raw bytes are written with std's `UnixStream` on the far side
//! of a socket wrapped by `Connection::from_unix_stream`.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use common::{LIMIT, Method, pattern, socket_inodes, watchdog};
use multiproc::{
    CodecError, Connection, JoinError, Process, RecvError, SendError, pipe, pipe_simplex, wait,
};
use serde::{Deserialize, Serialize};

/// A connection whose peer is a raw socket.
fn raw_pair() -> (UnixStream, Connection) {
    let (raw, theirs) = UnixStream::pair().unwrap();
    (raw, Connection::from_unix_stream(theirs).unwrap())
}

/// A short frame header.
fn header(len: i32) -> [u8; 4] {
    len.to_be_bytes()
}

/// A long frame header (`-1`, then 8 bytes).
fn long_header(len: u64) -> Vec<u8> {
    let mut h = (-1i32).to_be_bytes().to_vec();
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// A typed message as the crate encodes it: descriptor count, postcard.
fn typed_frame(fd_count: u8, postcard: &[u8]) -> Vec<u8> {
    let mut f = header(postcard.len() as i32 + 1).to_vec();
    f.push(fd_count);
    f.extend_from_slice(postcard);
    f
}

// ------------------------------------------------------- handles as args

/// Echoes typed strings until told to stop; returns how many. (Not until
/// end of stream: a forked child holds copies of all its parent's
/// descriptors, the other end included, as with Python's fork.)
fn echo(conn: Connection) -> usize {
    let mut n = 0;
    loop {
        match conn.recv::<String>().as_deref() {
            Ok("stop") | Err(_) => return n,
            Ok(s) => conn.send(&format!("echo {s}")).unwrap(),
        }
        n += 1;
    }
}

#[derive(Serialize, Deserialize)]
struct Ends {
    label: String,
    first: Connection,
    many: Vec<Connection>,
    pair: (u8, Connection),
    maybe: Option<Connection>,
}

/// Answers on every connection it was given, naming which one it is.
fn answer_all(ends: Ends) -> String {
    ends.first.send(&"first").unwrap();
    for (i, c) in ends.many.iter().enumerate() {
        c.send(&format!("many {i}")).unwrap();
    }
    ends.pair.1.send(&format!("pair {}", ends.pair.0)).unwrap();
    ends.maybe.unwrap().send(&"maybe").unwrap();
    ends.label
}

/// Receives a connection inside a message and talks over it; then makes a
/// pipe of its own and sends one end back.
fn conn_in_message(ctl: Connection) {
    let (n, got): (u32, Connection) = ctl.recv().unwrap();
    got.send(&format!("via the received end {n}")).unwrap();
    let (mine, yours) = pipe().unwrap();
    ctl.send(&vec![yours]).unwrap();
    let question: String = mine.recv().unwrap();
    mine.send(&format!("answer to {question}")).unwrap();
}

/// One-way ends keep their direction in the child.
fn one_way((reader, writer): (Connection, Connection)) -> (bool, bool) {
    let reader_refuses = matches!(reader.send(&1u8), Err(SendError::NotWritable));
    let writer_refuses = matches!(writer.recv::<u8>(), Err(RecvError::NotReadable));
    let x: u32 = reader.recv().unwrap();
    writer.send(&(x * 2)).unwrap();
    (reader_refuses, writer_refuses)
}

fn connections_as_arguments(m: Method) {
    // A single connection.
    let (here, there) = pipe().unwrap();
    let mut p = Process::new(echo, there).start_method(m.start());
    p.start().unwrap();
    for i in 0..3 {
        here.send(&format!("m{i}")).unwrap();
        assert_eq!(here.recv::<String>().unwrap(), format!("echo m{i}"));
    }
    here.send(&"stop").unwrap();
    assert_eq!(p.join().unwrap(), 3);

    // Several, inside a struct, a Vec, a tuple and an Option.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..7 {
        let (a, b) = pipe().unwrap();
        ours.push(a);
        theirs.push(b);
    }
    let maybe = theirs.pop();
    let pair = (9, theirs.pop().unwrap());
    let first = theirs.remove(0);
    let ends = Ends {
        label: "label".into(),
        first,
        many: theirs,
        pair,
        maybe,
    };
    let mut p = Process::new(answer_all, ends).start_method(m.start());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), "label");
    let got: Vec<String> = ours
        .iter()
        .map(|c| c.recv_timeout(LIMIT).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "first", "many 0", "many 1", "many 2", "many 3", "pair 9", "maybe"
        ]
    );

    // Connections inside messages, both ways.
    let (ctl, ctl_child) = pipe().unwrap();
    let mut p = Process::new(conn_in_message, ctl_child).start_method(m.start());
    p.start().unwrap();
    let (x, y) = pipe().unwrap();
    ctl.send(&(5u32, y)).unwrap();
    assert_eq!(
        x.recv_timeout::<String>(LIMIT).unwrap(),
        "via the received end 5"
    );
    let mut back: Vec<Connection> = ctl.recv_timeout(LIMIT).unwrap();
    let back = back.pop().unwrap();
    back.send(&"life").unwrap();
    assert_eq!(
        back.recv_timeout::<String>(LIMIT).unwrap(),
        "answer to life"
    );
    p.join().unwrap();
    // Every copy of y was closed when the child ended.
    assert!(matches!(
        x.recv_timeout::<String>(LIMIT),
        Err(RecvError::Disconnected)
    ));

    // One-way ends.
    let (r1, w1) = pipe_simplex().unwrap();
    let (r2, w2) = pipe_simplex().unwrap();
    let mut p = Process::new(one_way, (r1, w2)).start_method(m.start());
    p.start().unwrap();
    w1.send(&21u32).unwrap();
    assert_eq!(r2.recv_timeout::<u32>(LIMIT).unwrap(), 42);
    assert_eq!(p.join().unwrap(), (true, true));
}

/// Reports the sockets of this process that also appear in `parents`.
fn shared_sockets(parents: Vec<u64>) -> Vec<u64> {
    socket_inodes()
        .into_iter()
        .filter(|i| parents.contains(i))
        .collect()
}

/// A child that holds connections and starts grandchildren: they must hold
/// none of its descriptors. Then it drops `peer`, whose other end the test
/// watches, while a grandchild is still running: the test must see
/// end-of-stream at once.
fn holds_and_spawns((peer, ctl, extra): (Connection, Connection, Vec<Connection>)) -> Vec<u64> {
    let mine = socket_inodes();
    assert!(mine.len() >= 2 + extra.len());
    let mut g = Process::new(shared_sockets, mine).start_method(multiproc::StartMethod::Spawn);
    g.start().unwrap();
    let leaked = g.join().unwrap();

    let (keep, keep_child) = pipe().unwrap();
    let mut g = Process::new(wait_for_stop, keep_child).start_method(multiproc::StartMethod::Spawn);
    g.start().unwrap();
    assert_eq!(keep.recv::<String>().unwrap(), "ready");
    drop(peer);
    ctl.send(&"dropped").unwrap();
    // Wait until the test has checked, then end the grandchild.
    let _ = ctl.recv_timeout::<()>(LIMIT);
    drop(keep);
    g.join().unwrap();
    drop(extra);
    leaked
}

fn wait_for_stop(conn: Connection) {
    conn.send(&"ready").unwrap();
    let _ = conn.recv::<()>();
}

fn nothing_leaks_into_grandchildren(m: Method) {
    let (watch, peer) = pipe().unwrap();
    let (ctl, ctl_child) = pipe().unwrap();
    let extra: Vec<Connection> = (0..4).map(|_| pipe().unwrap().0).collect();
    let mut p = Process::new(holds_and_spawns, (peer, ctl_child, extra)).start_method(m.start());
    p.start().unwrap();
    assert_eq!(ctl.recv_timeout::<String>(LIMIT).unwrap(), "dropped");
    // The child dropped its end and a grandchild runs: nobody else holds it.
    match watch.recv_timeout::<u8>(Duration::from_secs(10)) {
        Err(RecvError::Disconnected) => {}
        other => {
            // Kill the child (and its grandchildren with it) so the failure
            // is reported now rather than when they give up.
            let _ = p.kill();
            panic!("expected Disconnected, got {other:?}")
        }
    }
    ctl.send(&()).unwrap();
    let leaked = p.join_timeout(LIMIT).unwrap();
    assert!(leaked.is_empty(), "grandchild holds sockets {leaked:?}");
}

/// Says it is ready, then blocks.
fn ready_then_block(conn: Connection) {
    conn.send(&"ready").unwrap();
    let _ = conn.recv::<()>();
}

fn killed_peer_disconnects(m: Method) {
    let (here, there) = pipe().unwrap();
    let mut p = Process::new(ready_then_block, there).start_method(m.start());
    p.start().unwrap();
    assert_eq!(here.recv_timeout::<String>(LIMIT).unwrap(), "ready");
    p.kill().unwrap();
    match here.recv_timeout::<u8>(LIMIT) {
        Err(RecvError::Disconnected) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(here.poll(Duration::ZERO).unwrap());
    assert!(matches!(
        p.join_timeout(LIMIT),
        Err(JoinError::Killed { signal: 9 })
    ));
    assert!(matches!(here.send(&1u8), Err(SendError::Disconnected)));
}

/// Receives a message of raw bytes and sends it back.
fn echo_bytes(conn: Connection) -> usize {
    let b = conn.recv_bytes().unwrap();
    conn.send_bytes(&b).unwrap();
    b.len()
}

fn huge_and_empty_across_processes(m: Method) {
    for len in [0, 64 << 20] {
        let (here, there) = pipe().unwrap();
        let mut p = Process::new(echo_bytes, there).start_method(m.start());
        p.start().unwrap();
        let data = pattern(len);
        here.send_bytes(&data).unwrap();
        let back = here.recv_bytes_timeout(LIMIT).unwrap();
        assert!(back == data, "{len}-byte message came back different");
        assert_eq!(p.join().unwrap(), len);
    }
}

both_methods!(
    connections_as_arguments,
    nothing_leaks_into_grandchildren,
    killed_peer_disconnects,
    huge_and_empty_across_processes,
);

// -------------------------------------------------------------- faults

#[test]
fn peer_closed_gives_disconnected() {
    watchdog(LIMIT, || {
        let (a, b) = pipe().unwrap();
        drop(b);
        assert!(matches!(a.recv::<u8>(), Err(RecvError::Disconnected)));
        assert!(matches!(a.recv_bytes(), Err(RecvError::Disconnected)));
        assert!(a.poll(Duration::ZERO).unwrap());
        assert!(matches!(a.send(&1u8), Err(SendError::Disconnected)));

        // A message sent before closing is delivered first.
        let (a, b) = pipe().unwrap();
        b.send(&7u8).unwrap();
        b.close();
        assert_eq!(a.recv::<u8>().unwrap(), 7);
        assert!(matches!(a.recv::<u8>(), Err(RecvError::Disconnected)));

        // Same through a raw socket.
        let (raw, conn) = raw_pair();
        drop(raw);
        assert!(matches!(
            conn.recv_timeout::<u8>(LIMIT),
            Err(RecvError::Disconnected)
        ));
    });
}

#[test]
fn truncated_frames() {
    watchdog(LIMIT, || {
        // Inside the header.
        let (mut raw, conn) = raw_pair();
        raw.write_all(&[0, 0]).unwrap();
        drop(raw);
        match conn.recv_bytes() {
            Err(RecvError::Truncated { expected, got }) => assert_eq!((expected, got), (4, 2)),
            other => panic!("expected Truncated, got {other:?}"),
        }

        // Inside a small body.
        let (mut raw, conn) = raw_pair();
        raw.write_all(&header(100)).unwrap();
        raw.write_all(&[1; 10]).unwrap();
        drop(raw);
        match conn.recv::<Vec<u8>>() {
            Err(RecvError::Truncated { expected, got }) => assert_eq!((expected, got), (104, 14)),
            other => panic!("expected Truncated, got {other:?}"),
        }
        assert!(matches!(conn.recv_bytes(), Err(RecvError::Broken)));

        // Inside a large body (read into its own allocation).
        let (mut raw, conn) = raw_pair();
        let writer = std::thread::spawn(move || {
            raw.write_all(&header(1 << 20)).unwrap();
            raw.write_all(&pattern(300_000)).unwrap();
        });
        match conn.recv_bytes() {
            Err(RecvError::Truncated { expected, got }) => {
                assert_eq!((expected, got), ((1 << 20) + 4, 300_004))
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
        writer.join().unwrap();
        assert!(matches!(conn.recv_bytes(), Err(RecvError::Broken)));
    });
}

#[test]
fn oversized_frames_are_refused_without_allocating() {
    watchdog(LIMIT, || {
        let cap = multiproc::DEFAULT_MAX_FRAME;
        for (bytes, len) in [
            (long_header(4 << 30), 4u64 << 30),
            (long_header(1 << 62), 1 << 62),
            (long_header(u64::MAX), u64::MAX),
            (header(i32::MAX).to_vec(), i32::MAX as u64),
        ] {
            let (mut raw, conn) = raw_pair();
            raw.write_all(&bytes).unwrap();
            match conn.recv_bytes() {
                Err(RecvError::TooLarge { len: l, max }) => assert_eq!((l, max), (len, cap)),
                other => panic!("{len}: expected TooLarge, got {other:?}"),
            }
            // The stream cannot be resynchronised.
            raw.write_all(&typed_frame(0, &[1])).unwrap();
            assert!(matches!(conn.recv::<u8>(), Err(RecvError::Broken)));
        }
    });
}

/// With no cap at all, an absurd announced length still gives an error
/// rather than an allocation failure (which would abort the process, so
/// this runs in a child).
fn absurd_length_without_cap(len: u64) -> String {
    let (mut raw, mut conn) = raw_pair();
    conn.set_max_frame(usize::MAX);
    raw.write_all(&long_header(len)).unwrap();
    raw.write_all(&[0; 16]).unwrap();
    drop(raw);
    match conn.recv_bytes() {
        Ok(v) => format!("received {} bytes", v.len()),
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn absurd_length_without_cap_is_an_error() {
    // 2^62 fits the largest possible allocation but no memory: the buffer
    // grows with the bytes that arrive, so the 16 sent are received and the
    // end of stream reported. The others exceed any allocation at all.
    for (len, expected) in [
        (1u64 << 62, "Truncated"),
        ((isize::MAX as u64) + 1, "TooLarge"),
        (u64::MAX, "TooLarge"),
    ] {
        let mut p = Process::new(absurd_length_without_cap, len);
        p.start().unwrap();
        match p.join_timeout(LIMIT) {
            Ok(s) => assert!(s.contains(expected), "{len}: {s}"),
            other => panic!("{len}: the receiving process failed: {other:?}"),
        }
    }
}

#[test]
fn negative_length_is_a_bad_frame() {
    watchdog(LIMIT, || {
        for len in [-2, -1000, i32::MIN] {
            let (mut raw, conn) = raw_pair();
            raw.write_all(&header(len)).unwrap();
            assert!(matches!(conn.recv_bytes(), Err(RecvError::BadFrame)));
            assert!(matches!(conn.recv_bytes(), Err(RecvError::Broken)));
        }
    });
}

#[test]
fn undecodable_message_leaves_connection_usable() {
    watchdog(LIMIT, || {
        let (mut raw, conn) = raw_pair();
        // A string whose length prefix is absurd.
        raw.write_all(&typed_frame(0, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]))
            .unwrap();
        // Bytes left over after a valid value.
        raw.write_all(&typed_frame(0, &[2, b'h', b'i', 7])).unwrap();
        // Three handles announced, none sent.
        raw.write_all(&typed_frame(3, &[0])).unwrap();
        // An empty frame is not a typed message.
        raw.write_all(&header(0)).unwrap();
        // Then a good one.
        raw.write_all(&typed_frame(0, &[2, b'o', b'k'])).unwrap();

        assert!(matches!(
            conn.recv::<String>(),
            Err(RecvError::Codec(CodecError::Decode(_)))
        ));
        assert!(matches!(
            conn.recv::<String>(),
            Err(RecvError::Codec(CodecError::Decode(_)))
        ));
        assert!(matches!(
            conn.recv::<Connection>(),
            Err(RecvError::Codec(CodecError::MissingHandles {
                expected: 3,
                received: 0
            }))
        ));
        assert!(matches!(conn.recv::<String>(), Err(RecvError::Codec(_))));
        assert_eq!(conn.recv::<String>().unwrap(), "ok");

        // A well-formed message of another type.
        let (a, b) = pipe().unwrap();
        a.send(&"not a number").unwrap();
        a.send(&5u64).unwrap();
        assert!(matches!(b.recv::<u64>(), Err(RecvError::Codec(_))));
        assert_eq!(b.recv::<u64>().unwrap(), 5);
    });
}

#[test]
fn timeouts_keep_partial_messages() {
    watchdog(LIMIT, || {
        let (a, b) = pipe().unwrap();
        let t = Duration::from_millis(20);
        assert!(matches!(b.recv_timeout::<u8>(t), Err(RecvError::Timeout)));
        assert!(matches!(b.recv_bytes_timeout(t), Err(RecvError::Timeout)));
        assert!(!b.poll(t).unwrap());
        a.send(&3u8).unwrap();
        assert_eq!(b.recv_timeout::<u8>(t).unwrap(), 3);
        // A zero timeout takes what is queued and never waits.
        let z = Duration::ZERO;
        assert!(matches!(b.recv_timeout::<u8>(z), Err(RecvError::Timeout)));
        a.send(&4u8).unwrap();
        a.send_bytes(b"five").unwrap();
        assert_eq!(b.recv_timeout::<u8>(z).unwrap(), 4);
        assert_eq!(b.recv_bytes_timeout(z).unwrap(), b"five");
        assert!(matches!(b.recv_bytes_timeout(z), Err(RecvError::Timeout)));

        // Small message in pieces: header, part of the body, the rest.
        let (mut raw, conn) = raw_pair();
        raw.write_all(&[0, 0]).unwrap();
        assert!(matches!(
            conn.recv_bytes_timeout(t),
            Err(RecvError::Timeout)
        ));
        raw.write_all(&[0, 5, b'h', b'e']).unwrap();
        assert!(matches!(
            conn.recv_bytes_timeout(t),
            Err(RecvError::Timeout)
        ));
        // Part of a message is not a message.
        assert!(!conn.poll(t).unwrap());
        assert!(wait(&[&conn], Some(t)).unwrap().is_empty());
        raw.write_all(b"llo").unwrap();
        assert!(conn.poll(t).unwrap());
        assert_eq!(conn.recv_bytes_timeout(LIMIT).unwrap(), b"hello");

        // A typed message likewise.
        let frame = typed_frame(0, &[5, b'w', b'o', b'r', b'l', b'd']);
        raw.write_all(&frame[..6]).unwrap();
        assert!(matches!(
            conn.recv_timeout::<String>(t),
            Err(RecvError::Timeout)
        ));
        raw.write_all(&frame[6..]).unwrap();
        assert_eq!(conn.recv_timeout::<String>(LIMIT).unwrap(), "world");

        // A large message: half of it, a timeout, then the rest.
        let len = 1 << 20;
        let data = pattern(len);
        let (half_tx, half_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            raw.write_all(&header(len as i32)).unwrap();
            raw.write_all(&sent[..len / 2]).unwrap();
            half_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            raw.write_all(&sent[len / 2..]).unwrap();
            raw
        });
        loop {
            assert!(matches!(
                conn.recv_bytes_timeout(t),
                Err(RecvError::Timeout)
            ));
            if half_rx.try_recv().is_ok() {
                break;
            }
        }
        // Everything written so far is drained; still no message.
        assert!(matches!(
            conn.recv_bytes_timeout(t),
            Err(RecvError::Timeout)
        ));
        assert!(!conn.poll(t).unwrap());
        go_tx.send(()).unwrap();
        let got = conn.recv_bytes_timeout(LIMIT).unwrap();
        assert!(got == data, "large message reassembled wrongly");
        let mut raw = writer.join().unwrap();
        // The stream is still in step.
        raw.write_all(&typed_frame(0, &[9])).unwrap();
        assert_eq!(conn.recv_timeout::<u8>(LIMIT).unwrap(), 9);
    });
}

/// A large frame cut short after a receive timed out in its middle: the
/// error still counts the header, as for a frame cut in one receive.
#[test]
fn truncated_after_timeout() {
    watchdog(LIMIT, || {
        let (mut raw, conn) = raw_pair();
        let (half_tx, half_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            raw.write_all(&header(1 << 20)).unwrap();
            raw.write_all(&pattern(200_000)).unwrap();
            half_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        });
        let t = Duration::from_millis(20);
        loop {
            assert!(matches!(
                conn.recv_bytes_timeout(t),
                Err(RecvError::Timeout)
            ));
            if half_rx.try_recv().is_ok() {
                break;
            }
        }
        go_tx.send(()).unwrap();
        writer.join().unwrap();
        match conn.recv_bytes_timeout(LIMIT) {
            Err(RecvError::Truncated { expected, got }) => {
                assert_eq!((expected, got), ((1 << 20) + 4, 200_004))
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
        assert!(matches!(conn.recv_bytes(), Err(RecvError::Broken)));
    });
}

#[test]
fn recv_bytes_into_small_buffer_keeps_message() {
    watchdog(LIMIT, || {
        let (a, b) = pipe().unwrap();
        let msg = pattern(100);
        a.send_bytes(&msg).unwrap();
        let mut small = [0u8; 10];
        match b.recv_bytes_into(&mut small) {
            Err(RecvError::BufferTooSmall { len, capacity }) => {
                assert_eq!((len, capacity), (100, 10))
            }
            other => panic!("expected BufferTooSmall, got {other:?}"),
        }
        assert!(b.poll(Duration::ZERO).unwrap());
        let mut big = [0u8; 200];
        assert_eq!(b.recv_bytes_into(&mut big).unwrap(), 100);
        assert_eq!(&big[..100], &msg[..]);

        // Larger than the read buffer, sent from another thread.
        let len = 300_000;
        let writer = std::thread::spawn(move || {
            a.send_bytes(&pattern(len)).unwrap();
            a.send_bytes(b"next").unwrap();
            a
        });
        let mut small = vec![0u8; len - 1];
        assert!(matches!(
            b.recv_bytes_into(&mut small),
            Err(RecvError::BufferTooSmall { len: 300_000, .. })
        ));
        let mut exact = vec![0u8; len];
        assert_eq!(b.recv_bytes_into(&mut exact).unwrap(), len);
        assert!(exact == pattern(len));
        let mut buf = [0u8; 4];
        assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"next");
        drop(writer.join().unwrap());
    });
}

#[test]
fn one_way_pipe_refuses_the_wrong_direction() {
    watchdog(LIMIT, || {
        let (reader, writer) = pipe_simplex().unwrap();
        assert!(reader.readable() && !reader.writable());
        assert!(writer.writable() && !writer.readable());
        assert!(matches!(reader.send(&1u8), Err(SendError::NotWritable)));
        assert!(matches!(
            reader.send_bytes(b"x"),
            Err(SendError::NotWritable)
        ));
        assert!(matches!(writer.recv::<u8>(), Err(RecvError::NotReadable)));
        assert!(matches!(writer.recv_bytes(), Err(RecvError::NotReadable)));
        assert!(matches!(
            writer.recv_bytes_into(&mut [0; 4]),
            Err(RecvError::NotReadable)
        ));
        assert!(!writer.poll(Duration::ZERO).unwrap());
        writer.send(&8u8).unwrap();
        assert_eq!(reader.recv::<u8>().unwrap(), 8);
        drop(reader);
        assert!(matches!(writer.send(&1u8), Err(SendError::Disconnected)));
    });
}

#[test]
fn poll_and_wait_on_several() {
    watchdog(LIMIT, || {
        let pairs: Vec<(Connection, Connection)> = (0..3).map(|_| pipe().unwrap()).collect();
        let readers: Vec<&Connection> = pairs.iter().map(|p| &p.0).collect();
        let t = Duration::from_millis(20);
        assert!(wait(&readers, Some(t)).unwrap().is_empty());
        for r in &readers {
            assert!(!r.poll(Duration::ZERO).unwrap());
        }
        pairs[1].1.send(&1u8).unwrap();
        pairs[2].1.send(&2u8).unwrap();
        assert_eq!(wait(&readers, Some(LIMIT)).unwrap(), vec![1, 2]);
        assert!(!readers[0].poll(Duration::ZERO).unwrap());
        assert!(readers[1].poll(Duration::ZERO).unwrap());
        assert_eq!(readers[1].recv::<u8>().unwrap(), 1);
        assert_eq!(wait(&readers, Some(LIMIT)).unwrap(), vec![2]);
        assert_eq!(readers[2].recv::<u8>().unwrap(), 2);
        assert!(wait(&readers, Some(t)).unwrap().is_empty());

        // A buffered message is reported without touching the socket.
        pairs[0].1.send(&10u8).unwrap();
        pairs[0].1.send(&11u8).unwrap();
        assert_eq!(readers[0].recv::<u8>().unwrap(), 10);
        assert_eq!(wait(&readers, Some(t)).unwrap(), vec![0]);
        assert_eq!(readers[0].recv::<u8>().unwrap(), 11);

        // Waiting with no limit, a message arriving later.
        let (a, b) = pipe().unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            b.send(&"late").unwrap();
            b
        });
        let all = [readers[0], readers[1], &a];
        assert_eq!(wait(&all, None).unwrap(), vec![2]);
        assert_eq!(a.recv::<String>().unwrap(), "late");

        // A closed peer counts as ready (recv reports it at once).
        drop(sender.join().unwrap());
        assert_eq!(wait(&all, Some(LIMIT)).unwrap(), vec![2]);
        assert!(matches!(a.recv::<u8>(), Err(RecvError::Disconnected)));

        // A write-only end is never ready and does not stop the wait.
        let (r, w) = pipe_simplex().unwrap();
        let (c, d) = pipe().unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            d.send(&1u8).unwrap();
            d
        });
        assert_eq!(wait(&[&w, &c], Some(LIMIT)).unwrap(), vec![1]);
        assert!(wait(&[&w], Some(t)).unwrap().is_empty());
        drop(sender.join().unwrap());
        drop(r);
    });
}

#[test]
fn empty_and_huge_messages() {
    watchdog(LIMIT, || {
        let (a, b) = pipe().unwrap();
        a.send_bytes(&[]).unwrap();
        assert_eq!(b.recv_bytes().unwrap(), Vec::<u8>::new());
        a.send_bytes(&[]).unwrap();
        assert_eq!(b.recv_bytes_into(&mut []).unwrap(), 0);
        a.send(&()).unwrap();
        b.recv::<()>().unwrap();

        let len = 64 << 20;
        let writer = std::thread::spawn(move || {
            a.send_bytes(&pattern(len)).unwrap();
            a.send(&String::from("after")).unwrap();
            a
        });
        let got = b.recv_bytes().unwrap();
        assert_eq!(got.len(), len);
        assert!(got == pattern(len));
        assert_eq!(b.recv::<String>().unwrap(), "after");
        drop(writer.join().unwrap());
    });
}

#[test]
fn frame_cap_is_configurable() {
    watchdog(LIMIT, || {
        let (mut a, mut b) = pipe().unwrap();
        a.set_max_frame(1000);
        assert_eq!(a.max_frame(), 1000);
        assert!(matches!(
            a.send_bytes(&[0; 1001]),
            Err(SendError::TooLarge {
                len: 1001,
                max: 1000
            })
        ));
        // The fd-count byte counts too: 999 bytes of postcard + 1 + 2 (len).
        assert!(matches!(
            a.send(&vec![0u8; 999]),
            Err(SendError::TooLarge { max: 1000, .. })
        ));
        a.send_bytes(&[1; 1000]).unwrap();
        assert_eq!(b.recv_bytes().unwrap(), vec![1; 1000]);

        b.set_max_frame(100);
        a.send_bytes(&[2; 100]).unwrap();
        assert_eq!(b.recv_bytes().unwrap(), vec![2; 100]);
        a.send_bytes(&[3; 500]).unwrap();
        assert!(matches!(
            b.recv_bytes(),
            Err(RecvError::TooLarge { len: 500, max: 100 })
        ));
        assert!(matches!(b.recv_bytes(), Err(RecvError::Broken)));
    });
}

/// Refuses what exceeds the cap it arrived with.
fn capped_receiver(conn: Connection) -> (usize, String) {
    let small = conn.recv_bytes().unwrap();
    let err = conn.recv_bytes().unwrap_err();
    (small.len(), format!("{err:?}"))
}

#[test]
fn frame_cap_travels_with_the_connection() {
    watchdog(LIMIT, || {
        let (a, mut b) = pipe().unwrap();
        b.set_max_frame(64);
        let mut p = Process::new(capped_receiver, b);
        p.start().unwrap();
        a.send_bytes(&[0; 64]).unwrap();
        a.send_bytes(&[0; 65]).unwrap();
        let (n, err) = p.join_timeout(LIMIT).unwrap();
        assert_eq!(n, 64);
        assert!(err.contains("TooLarge"), "{err}");
    });
}

#[test]
fn wraps_a_unix_stream_with_the_documented_framing() {
    watchdog(LIMIT, || {
        let (mut raw, conn) = raw_pair();
        conn.send_bytes(b"abc").unwrap();
        let mut got = [0u8; 7];
        raw.read_exact(&mut got).unwrap();
        assert_eq!(&got, &[0, 0, 0, 3, b'a', b'b', b'c']);
        conn.send(&"hi").unwrap();
        let mut got = [0u8; 8];
        raw.read_exact(&mut got).unwrap();
        assert_eq!(&got, &[0, 0, 0, 4, 0, 2, b'h', b'i']);
        // A non-canonical long header is accepted.
        let mut frame = long_header(2);
        frame.extend_from_slice(b"ok");
        raw.write_all(&frame).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"ok");

        // A non-blocking stream is made blocking.
        let (raw2, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let conn: Connection = theirs.try_into().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let mut raw2 = raw2;
            raw2.write_all(&[0, 0, 0, 1, 42]).unwrap();
            raw2
        });
        assert_eq!(conn.recv_bytes().unwrap(), [42]);
        drop(writer.join().unwrap());
    });
}

/// Two threads receive into buffers of different sizes from one
/// connection: the size check and the receive must see the same message.
#[test]
fn recv_bytes_into_from_two_threads() {
    watchdog(LIMIT, || {
        let (a, b) = pipe().unwrap();
        let b = std::sync::Arc::new(b);
        let n = 50_000;
        let sender = std::thread::spawn(move || {
            for i in 0..n {
                let len = if i % 2 == 0 { 100 } else { 1000 };
                a.send_bytes(&vec![i as u8; len]).unwrap();
            }
            a
        });
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let receivers: Vec<_> = [500usize, 2000]
            .into_iter()
            .map(|size| {
                let (b, received) = (b.clone(), received.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; size];
                    while received.load(std::sync::atomic::Ordering::SeqCst) < n {
                        match b.recv_bytes_into(&mut buf) {
                            Ok(len) => {
                                assert!(len == 100 || len == 1000);
                                received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Err(RecvError::BufferTooSmall {
                                len: 1000,
                                capacity: 500,
                            }) => std::thread::yield_now(),
                            Err(RecvError::Disconnected) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        let a = sender.join().unwrap();
        // Let a receiver blocked on an empty connection return.
        drop(a);
        for r in receivers {
            r.join().unwrap();
        }
        assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), n);
    });
}

/// `Duration::MAX` means "no limit" rather than an arithmetic overflow.
#[test]
fn longest_timeouts_mean_no_limit() {
    watchdog(LIMIT, || {
        let (a, b) = pipe().unwrap();
        a.send(&1u8).unwrap();
        assert!(b.poll(Duration::MAX).unwrap());
        assert_eq!(wait(&[&b], Some(Duration::MAX)).unwrap(), vec![0]);
        assert_eq!(b.recv_timeout::<u8>(Duration::MAX).unwrap(), 1);
        a.send_bytes(b"x").unwrap();
        assert_eq!(b.recv_bytes_timeout(Duration::MAX).unwrap(), b"x");
    });
}

/// Counts the connections it got and answers on the last one.
fn count_handles(conns: Vec<Connection>) -> usize {
    conns.last().unwrap().send(&"last").unwrap();
    conns.len()
}

/// A connection made from a plain socket (one descriptor, no shared
/// memory beside it).
fn plain_pair() -> (Connection, Connection) {
    let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
    (
        Connection::from_unix_stream(x).unwrap(),
        Connection::from_unix_stream(y).unwrap(),
    )
}

/// A message (or a process's arguments) carries at most 253 handles, the
/// kernel's limit for one `sendmsg`. A `pipe()` end is two: its socket and
/// the memory of its shared-memory path.
#[test]
fn handle_count_limit() {
    watchdog(LIMIT, || {
        let pairs: Vec<(Connection, Connection)> = (0..254).map(|_| plain_pair()).collect();
        let (ours, theirs): (Vec<Connection>, Vec<Connection>) = pairs.into_iter().unzip();
        let (a, b) = pipe().unwrap();
        let ends: Vec<Connection> = (0..127).map(|_| pipe().unwrap().1).collect();
        assert!(matches!(
            a.send(&ends),
            Err(SendError::Codec(CodecError::TooManyHandles(254)))
        ));
        a.send(&ends[1..]).unwrap();
        assert_eq!(b.recv::<Vec<Connection>>().unwrap().len(), 126);
        assert!(matches!(
            a.send(&theirs),
            Err(SendError::Codec(CodecError::TooManyHandles(254)))
        ));
        let mut p = Process::new(count_handles, theirs);
        assert!(matches!(
            p.start(),
            Err(multiproc::StartError::Codec(CodecError::TooManyHandles(
                254
            )))
        ));

        let pairs: Vec<(Connection, Connection)> = (0..253).map(|_| plain_pair()).collect();
        let (ours2, theirs): (Vec<Connection>, Vec<Connection>) = pairs.into_iter().unzip();
        a.send(&theirs).unwrap();
        drop(theirs);
        let got: Vec<Connection> = b.recv().unwrap();
        assert_eq!(got.len(), 253);
        for (i, (o, g)) in ours2.iter().zip(&got).enumerate() {
            o.send(&(i as u32)).unwrap();
            assert_eq!(g.recv::<u32>().unwrap(), i as u32);
        }
        let mut p = Process::new(count_handles, got);
        p.start().unwrap();
        assert_eq!(p.join_timeout(LIMIT).unwrap(), 253);
        assert_eq!(ours2[252].recv_timeout::<String>(LIMIT).unwrap(), "last");
        drop(ours);

        // Two full messages queued back to back arrive whole.
        let mut keep = Vec::new();
        for round in 0..2u32 {
            let pairs: Vec<(Connection, Connection)> = (0..253).map(|_| plain_pair()).collect();
            let (ours, theirs): (Vec<Connection>, Vec<Connection>) = pairs.into_iter().unzip();
            a.send(&(round, theirs)).unwrap();
            keep.push(ours);
        }
        a.send(&"end").unwrap();
        for (round, ours) in keep.iter().enumerate() {
            let (r, got): (u32, Vec<Connection>) = b.recv().unwrap();
            assert_eq!(r as usize, round);
            assert_eq!(got.len(), 253);
            ours[7].send(&r).unwrap();
            assert_eq!(got[7].recv::<u32>().unwrap(), r);
        }
        assert_eq!(b.recv::<String>().unwrap(), "end");
    });
}

/// Large frames are read straight into the returned vector without the
/// descriptors of any frame going astray: a large message carrying a
/// handle, then a large bytes frame directly followed by a message that
/// carries one, over a plain socket and over a `pipe()` pair.
#[test]
fn handles_beside_large_frames() {
    watchdog(LIMIT, || {
        for (a, b) in [plain_pair(), pipe().unwrap()] {
            let len = (1 << 20) + 3;
            let (x, y) = plain_pair();
            let (x2, y2) = plain_pair();
            let writer = std::thread::spawn(move || {
                a.send(&(pattern(len), x)).unwrap();
                a.send_bytes(&pattern(len + 1)).unwrap();
                a.send(&x2).unwrap();
                a
            });
            let (big, x): (Vec<u8>, Connection) = b.recv().unwrap();
            assert!(big == pattern(len), "large typed message garbled");
            let bytes = b.recv_bytes().unwrap();
            assert_eq!(bytes.len(), len + 1);
            assert!(bytes == pattern(len + 1), "large bytes frame garbled");
            let x2: Connection = b.recv().unwrap();
            for (end, peer, v) in [(&x, &y, 1u8), (&x2, &y2, 2)] {
                end.send(&v).unwrap();
                assert_eq!(peer.recv::<u8>().unwrap(), v);
            }
            drop(writer.join().unwrap());
        }
    });
}
