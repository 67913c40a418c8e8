//! Iterating over queues and learning that every producer is gone: `iter`,
//! `try_iter`, `for msg in &queue`, `close`, and disconnection when the last
//! producer handle is dropped, closed, or dies with its process (SIGKILL
//! included), with both start methods.
//!
//! The `close` cases follow CPython's `test_multiprocessing` queue tests
//! (`test_closed_queue_put_get_exceptions`): putting on a closed queue is
//! an error (here a typed one that hands the value back).

mod common;

use std::time::{Duration, Instant};

use common::{LIMIT, both, ensure, join, start, watchdog};
use multiproc::*;
use serde::{Deserialize, Serialize};

/// A user's message type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    seq: u32,
    value: f64,
}

fn reading(seq: u32) -> Reading {
    Reading {
        sensor: format!("s{}", seq % 3),
        seq,
        value: f64::from(seq) / 2.0,
    }
}

/// Puts `n` readings, then returns (dropping its handle).
fn produce(args: (Queue<Reading>, u32)) -> u32 {
    let (q, n) = args;
    for i in 0..n {
        q.put(reading(i)).unwrap();
    }
    n
}

/// Puts readings until killed.
fn produce_forever(q: Queue<Reading>) {
    let mut i = 0;
    loop {
        q.put(reading(i)).unwrap();
        i += 1;
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn iteration_ends_after_producer_exits_scenario(fork: bool) -> Result<(), String> {
    let q: Queue<Reading> = Queue::new().map_err(|e| e.to_string())?;
    let mut p = start(produce, (q.clone(), 500), fork)?;
    q.close();
    let got: Vec<Reading> = (&q).into_iter().collect();
    ensure(got.len() == 500, format!("got {} readings", got.len()))?;
    for (i, r) in got.iter().enumerate() {
        ensure(*r == reading(i as u32), format!("reading {i} is {r:?}"))?;
    }
    ensure(join(&mut p)? == 500, "producer's result")?;
    ensure(
        matches!(q.get(), Err(GetError::Disconnected)),
        "get after the end",
    )
}

#[test]
fn iteration_ends_after_producer_exits() {
    both(iteration_ends_after_producer_exits_scenario);
}

/// Small xorshift, seeded from the clock and the pid.
fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ (u64::from(std::process::id()) << 32) | 1
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn iteration_ends_after_producer_killed_scenario(fork: bool) -> Result<(), String> {
    let mut rng = random_seed();
    for round in 0..6 {
        let q: Queue<Reading> = Queue::new().map_err(|e| e.to_string())?;
        let mut p = start(produce_forever, q.clone(), fork)?;
        q.close();
        // Kill at a random moment: sometimes before the child has even
        // received its handle, sometimes mid-stream.
        let delay = match round {
            0 => 0,
            _ => next(&mut rng) % 30_000,
        };
        std::thread::sleep(Duration::from_micros(delay));
        p.kill().map_err(|e| e.to_string())?;
        // Consume concurrently with the kill: the loop must end by itself.
        for (n, r) in q.iter().enumerate() {
            ensure(
                r == reading(n as u32),
                format!("round {round}: reading {n} is {r:?}"),
            )?;
        }
        ensure(
            matches!(q.get_nowait(), Err(TryGetError::Disconnected)),
            format!("round {round}: get_nowait after the end"),
        )?;
        match p.join_timeout(common::LONG) {
            Err(JoinError::Killed { signal }) if signal == libc::SIGKILL => {}
            other => return Err(format!("round {round}: join gave {other:?}")),
        }
    }
    Ok(())
}

#[test]
fn iteration_ends_after_producer_killed() {
    both(iteration_ends_after_producer_killed_scenario);
}

/// Closes its handle, tells the parent, then waits (alive) for `release`.
fn close_then_wait(args: (Queue<Reading>, Queue<()>)) {
    let (q, release) = args;
    q.put(reading(0)).unwrap();
    q.close();
    assert!(matches!(q.put(reading(1)), Err(PutError::Closed(_))));
    let _ = release.get_timeout(Duration::from_secs(60));
}

fn iteration_ends_after_close_scenario(fork: bool) -> Result<(), String> {
    let q: Queue<Reading> = Queue::new().map_err(|e| e.to_string())?;
    let release: Queue<()> = Queue::new().map_err(|e| e.to_string())?;
    let mut p = start(close_then_wait, (q.clone(), release.clone()), fork)?;
    q.close();
    // The child is alive but closed its handle: the loop ends.
    let got: Vec<Reading> = q.iter().collect();
    ensure(got == [reading(0)], format!("got {got:?}"))?;
    release.put(()).map_err(|e| e.to_string())?;
    join(&mut p)
}

#[test]
fn iteration_ends_after_close() {
    both(iteration_ends_after_close_scenario);
}

/// Puts `n` readings numbered from `first`, waits for `gate`, puts one more.
fn produce_gated(args: (Queue<Reading>, Queue<()>, u32, u32)) {
    let (q, gate, first, n) = args;
    for i in first..first + n {
        q.put(reading(i)).unwrap();
    }
    gate.get_timeout(Duration::from_secs(60)).unwrap();
    q.put(reading(first + n)).unwrap();
}

fn multiple_producers_scenario(fork: bool) -> Result<(), String> {
    let q: Queue<Reading> = Queue::new().map_err(|e| e.to_string())?;
    let gate: Queue<()> = Queue::new().map_err(|e| e.to_string())?;
    let mut quick = Vec::new();
    for k in 0..2 {
        quick.push(start(produce, (q.clone(), 100 + k), fork)?);
    }
    let mut slow = start(produce_gated, (q.clone(), gate.clone(), 1000, 10), fork)?;
    q.close();
    for p in &mut quick {
        join(p)?;
    }
    // 201 from the quick ones, 10 from the slow one before its gate.
    let mut got = Vec::new();
    while got.len() < 211 {
        match q.get_timeout(common::LONG) {
            Ok(r) => got.push(r),
            Err(e) => return Err(format!("after {} readings: {e}", got.len())),
        }
    }
    // One producer is still alive: no disconnection, just nothing yet.
    match q.get_timeout(Duration::from_millis(300)) {
        Err(GetTimeoutError::Timeout) => {}
        other => return Err(format!("expected a timeout, got {other:?}")),
    }
    gate.put(()).map_err(|e| e.to_string())?;
    got.extend(&q);
    ensure(got.len() == 212, format!("got {} readings", got.len()))?;
    ensure(
        got.contains(&reading(1010)),
        "the slow producer's last reading",
    )?;
    join(&mut slow)
}

#[test]
fn iteration_ends_only_when_all_producers_are_gone() {
    both(multiple_producers_scenario);
}

/// Consumes in a child until the producers are gone; returns the count.
fn consume(q: Queue<Reading>) -> u32 {
    q.close();
    q.iter().count() as u32
}

fn consumer_child_scenario(fork: bool) -> Result<(), String> {
    let q: Queue<Reading> = Queue::new().map_err(|e| e.to_string())?;
    let mut c = start(consume, q.clone(), fork)?;
    for i in 0..300 {
        q.put(reading(i)).map_err(|e| e.to_string())?;
    }
    // A forked consumer inherited this process's memory, this handle
    // included: that copy must not keep the queue connected.
    drop(q);
    let n = join(&mut c)?;
    ensure(n == 300, format!("the consumer counted {n}"))
}

#[test]
fn consumer_child_loop_ends_when_parent_drops_its_handle() {
    both(consumer_child_scenario);
}

#[test]
fn try_iter_drains_without_blocking() {
    watchdog(LIMIT, || {
        let q: Queue<u32> = Queue::new().unwrap();
        assert_eq!(q.try_iter().count(), 0);
        for i in 0..5 {
            q.put(i).unwrap();
        }
        // `q` is still a producer: `iter` would wait, `try_iter` does not.
        let got: Vec<u32> = q.try_iter().collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert!(matches!(q.get_nowait(), Err(TryGetError::Empty)));
        assert!(matches!(
            q.get_timeout(Duration::from_millis(50)),
            Err(GetTimeoutError::Timeout)
        ));
        // Same through the other queue kinds.
        let s: SimpleQueue<u32> = SimpleQueue::new().unwrap();
        s.put(7).unwrap();
        assert_eq!(s.try_iter().collect::<Vec<_>>(), [7]);
        let j: JoinableQueue<u32> = JoinableQueue::new().unwrap();
        j.put(8).unwrap();
        assert_eq!(j.try_iter().collect::<Vec<_>>(), [8]);
    });
}

#[test]
fn threads_dropping_their_handles_end_the_loop() {
    watchdog(LIMIT, || {
        let q: Queue<u32> = Queue::new().unwrap();
        let producers: Vec<_> = (0..4)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        q.put(t * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        q.close();
        let mut got: Vec<u32> = q.iter().collect();
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        let want: Vec<u32> = (0..4)
            .flat_map(|t| (0..250).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(got, want);
    });
}

#[test]
fn disconnected_is_its_own_error() {
    watchdog(LIMIT, || {
        let q: Queue<u32> = Queue::new().unwrap();
        let rx = q.clone();
        rx.close();
        q.put(1).unwrap();
        drop(q);
        // The queued message still comes first.
        assert_eq!(rx.get().unwrap(), 1);
        assert!(matches!(rx.get(), Err(GetError::Disconnected)));
        assert!(matches!(rx.get_nowait(), Err(TryGetError::Disconnected)));
        let t = Instant::now();
        assert!(matches!(
            rx.get_timeout(Duration::from_secs(30)),
            Err(GetTimeoutError::Disconnected)
        ));
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "did not wait out the timeout"
        );
        assert!(matches!(
            rx.get_bytes_timeout(Duration::from_secs(30)),
            Err(GetTimeoutError::Disconnected)
        ));
        assert_eq!(
            GetError::Disconnected.to_string(),
            "the queue is empty and every producer is gone"
        );
        assert_eq!(rx.iter().count(), 0);
        assert_eq!((&rx).into_iter().count(), 0);
        assert_eq!(rx.into_iter().count(), 0);
    });
}

#[test]
fn a_blocked_consumer_wakes_when_the_last_producer_goes() {
    watchdog(LIMIT, || {
        let q: Queue<u32> = Queue::new().unwrap();
        let rx = q.clone();
        rx.close();
        let waiter = std::thread::spawn(move || rx.get());
        std::thread::sleep(Duration::from_millis(100));
        q.close();
        assert!(matches!(
            waiter.join().unwrap(),
            Err(GetError::Disconnected)
        ));
    });
}

// ----- Python parity of close (CPython's test_closed_queue_put_get_exceptions)

#[test]
fn put_after_close_is_a_typed_error() {
    watchdog(LIMIT, || {
        let q: Queue<String> = Queue::new().unwrap();
        q.put("before".into()).unwrap();
        assert!(!q.is_closed());
        q.close();
        assert!(q.is_closed());
        q.close(); // closing twice is fine, as in Python
        match q.put("after".into()) {
            Err(PutError::Closed(v)) => assert_eq!(v, "after"),
            other => panic!("expected Closed, got {other:?}"),
        }
        assert!(matches!(
            q.put_nowait("x".into()),
            Err(TryPutError::Closed(_))
        ));
        assert!(matches!(
            q.put_timeout("x".into(), Duration::from_secs(1)),
            Err(PutTimeoutError::Closed(_))
        ));
        assert!(matches!(q.put_bytes(b"x"), Err(PutError::Closed(()))));
        assert_eq!(
            PutError::Closed(()).to_string(),
            "the queue handle is closed"
        );
        // A clone of a closed handle is closed; the message put before stays.
        let c = q.clone();
        assert!(c.is_closed());
        assert!(matches!(c.put("y".into()), Err(PutError::Closed(_))));
        assert_eq!(q.get().unwrap(), "before");

        let s: SimpleQueue<u8> = SimpleQueue::new().unwrap();
        s.close();
        assert!(s.is_closed());
        assert!(matches!(s.put(1), Err(PutError::Closed(1))));
        let j: JoinableQueue<u8> = JoinableQueue::new().unwrap();
        j.close();
        assert!(matches!(j.put(1), Err(PutError::Closed(1))));
        assert_eq!(j.unfinished_tasks(), 0);
    });
}

/// Reports whether the handle it received is closed and whether `put`
/// through it works.
fn closed_in_child(q: Queue<u8>) -> (bool, bool) {
    (q.is_closed(), q.put(1).is_ok())
}

fn closed_handle_travels_closed_scenario(fork: bool) -> Result<(), String> {
    let q: Queue<u8> = Queue::new().map_err(|e| e.to_string())?;
    let closed = q.clone();
    closed.close();
    let mut p = start(closed_in_child, closed, fork)?;
    ensure(join(&mut p)? == (true, false), "closed handle in the child")?;
    let mut p = start(closed_in_child, q.clone(), fork)?;
    ensure(join(&mut p)? == (false, true), "open handle in the child")?;
    ensure(q.get_nowait().ok() == Some(1), "the open child's message")
}

#[test]
fn closed_handle_travels_closed() {
    both(closed_handle_travels_closed_scenario);
}

/// The newcomer's program: a queue of a user's serde struct between two
/// spawned processes, consumed with `for` in a child, ending by itself.
fn sum_readings(q: Queue<Reading>) -> (u32, f64) {
    q.close();
    let mut n = 0;
    let mut total = 0.0;
    for r in &q {
        n += 1;
        total += r.value;
    }
    (n, total)
}

fn two_children_scenario(fork: bool) -> Result<(), String> {
    let q: Queue<Reading> = Queue::new().map_err(|e| e.to_string())?;
    let mut consumer = start(sum_readings, q.clone(), fork)?;
    let mut producer = start(produce, (q, 100), fork)?;
    join(&mut producer)?;
    let (n, total) = join(&mut consumer)?;
    ensure(n == 100, format!("consumer saw {n}"))?;
    ensure(
        total == (0..100).map(|i| f64::from(i) / 2.0).sum::<f64>(),
        "total",
    )
}

#[test]
fn two_children_producer_and_consumer() {
    both(two_children_scenario);
}

/// Only `Serialize`: `put` needs nothing more.
#[derive(Serialize)]
struct Outgoing<'a> {
    name: &'a str,
}

#[test]
fn put_needs_only_serialize() {
    watchdog(LIMIT, || {
        let q: Queue<Outgoing<'static>> = Queue::new().unwrap();
        q.put(Outgoing { name: "borrowed" }).unwrap();
        let bytes = q.get_bytes().unwrap();
        let back: String = postcard_string(&bytes);
        assert_eq!(back, "borrowed");
    });
}

/// Decodes a one-field struct holding a string (postcard: length, bytes).
fn postcard_string(bytes: &[u8]) -> String {
    let len = bytes[0] as usize;
    String::from_utf8(bytes[1..1 + len].to_vec()).unwrap()
}

#[test]
fn a_handle_in_flight_keeps_the_queue_connected() {
    watchdog(LIMIT, || {
        let q: Queue<u32> = Queue::new().unwrap();
        let rx = q.clone();
        rx.close();
        // The only producer travels in a socket: nobody holds it, the
        // kernel does.
        let (a, b) = pipe().unwrap();
        a.send(&q).unwrap();
        drop(q);
        assert!(matches!(
            rx.get_timeout(Duration::from_millis(300)),
            Err(GetTimeoutError::Timeout)
        ));
        let arrived: Queue<u32> = b.recv().unwrap();
        assert!(!arrived.is_closed());
        arrived.put(5).unwrap();
        drop(arrived);
        assert_eq!(rx.iter().collect::<Vec<_>>(), [5]);

        // Sent and never received: when the receiving end goes, so does
        // the handle in it.
        let rx: Queue<u32> = Queue::new().unwrap();
        let q = rx.clone();
        rx.close();
        let (a, b) = pipe().unwrap();
        a.send(&q).unwrap();
        drop(q);
        assert!(matches!(rx.get_nowait(), Err(TryGetError::Empty)));
        drop(b);
        drop(a);
        assert!(matches!(
            rx.get_timeout(Duration::from_secs(30)),
            Err(GetTimeoutError::Disconnected)
        ));
    });
}
