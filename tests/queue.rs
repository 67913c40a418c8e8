//! Functional tests of Queue, SimpleQueue and JoinableQueue across threads
//! and real processes (spawn, and fork from a single-threaded spawned
//! child). Scenarios follow CPython's `test_multiprocessing` queue tests
//! (FIFO order, maxsize, timeouts, JoinableQueue accounting, the child
//! that puts and exits before anyone reads), rewritten for this crate.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::watchdog;
use multiproc::*;

/// What an idle queue may hold after a backlog of `backlog` bytes: its
/// ring, the segment its consumers stand in, the header and bitmap pages (two bitmaps),
/// and 8 bytes of segment table per 64 KiB segment the backlog reached.
fn idle_bound(ring: usize, backlog: usize) -> usize {
    ring + (64 << 10) + (16 << 10) + (backlog / 8192).next_multiple_of(4096)
}

/// A deterministic byte pattern for message `n` of `len` bytes.
fn pattern(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn fifo_order_qsize_and_empty() {
    watchdog(Duration::from_secs(30), || {
        let q: Queue<(u32, String)> = Queue::new().unwrap();
        assert!(q.empty());
        assert_eq!(q.maxsize(), 0);
        for i in 0..1000 {
            q.put((i, format!("m{i}"))).unwrap();
        }
        assert_eq!(q.qsize(), 1000);
        assert!(!q.full());
        for i in 0..1000 {
            assert_eq!(q.get().unwrap(), (i, format!("m{i}")));
        }
        assert!(q.empty());
        assert!(matches!(q.get_nowait(), Err(TryGetError::Empty)));
        assert!(matches!(
            q.get_timeout(Duration::from_millis(20)),
            Err(GetTimeoutError::Timeout)
        ));
    });
}

#[test]
fn bounded_queue_hands_values_back_and_blocks() {
    watchdog(Duration::from_secs(30), || {
        let q: Queue<String> = Queue::with_maxsize(2).unwrap();
        q.put("a".into()).unwrap();
        q.put_nowait("b".into()).unwrap();
        assert!(q.full());
        match q.put_nowait("c".into()) {
            Err(TryPutError::Full(v)) => assert_eq!(v, "c"),
            other => panic!("expected Full, got {other:?}"),
        }
        match q.put_timeout("d".into(), Duration::from_millis(30)) {
            Err(e @ PutTimeoutError::Timeout(_)) => assert_eq!(e.into_inner(), "d"),
            other => panic!("expected Timeout, got {other:?}"),
        }
        // A blocked put goes through once a consumer thread makes room.
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            q2.get().unwrap()
        });
        q.put("e".into()).unwrap();
        assert_eq!(t.join().unwrap(), "a");
        assert_eq!(q.get().unwrap(), "b");
        assert_eq!(q.get().unwrap(), "e");
    });
}

#[test]
fn many_threads_each_message_once() {
    watchdog(Duration::from_secs(60), || {
        let q: Queue<u64> = Queue::builder().maxsize(64).build().unwrap();
        const PRODUCERS: u64 = 4;
        const PER: u64 = 20_000;
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        q.put(p * PER + i).unwrap();
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Ok(v) = q.get_timeout(Duration::from_millis(500)) {
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all = HashSet::new();
        for c in consumers {
            let got = c.join().unwrap();
            // Each consumer sees each producer's messages in order.
            for p in 0..PRODUCERS {
                let mine: Vec<_> = got.iter().filter(|&&v| v / PER == p).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]));
            }
            for v in got {
                assert!(all.insert(v), "duplicate {v}");
            }
        }
        assert_eq!(all.len() as u64, PRODUCERS * PER);
    });
}

#[test]
fn per_producer_order_is_kept_for_one_consumer() {
    watchdog(Duration::from_secs(60), || {
        let q: Queue<(u8, u32)> = Queue::new().unwrap();
        let producers: Vec<_> = (0..3u8)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        q.put((p, i)).unwrap();
                    }
                })
            })
            .collect();
        let mut next = [0u32; 3];
        for _ in 0..30_000 {
            let (p, i) = q.get().unwrap();
            assert_eq!(i, next[p as usize]);
            next[p as usize] += 1;
        }
        for p in producers {
            p.join().unwrap();
        }
    });
}

#[test]
fn messages_larger_than_the_ring() {
    watchdog(Duration::from_secs(60), || {
        // A 128 KiB ring: these messages straddle many segments, spill into
        // cold ones, and must come back intact.
        let q: Queue<String> = Queue::builder().ring_size(128 << 10).build().unwrap();
        let sizes = [
            0usize,
            1,
            7,
            8,
            65_528,
            65_536,
            65_537,
            300_000,
            3 << 20,
            10 << 20,
        ];
        for (n, &len) in sizes.iter().enumerate() {
            q.put_bytes(&pattern(n as u64, len)).unwrap();
        }
        for (n, &len) in sizes.iter().enumerate() {
            let got = q.get_bytes().unwrap();
            assert_eq!(got.len(), len);
            assert!(got == pattern(n as u64, len), "message {n} corrupted");
        }
        // Typed values too, including one that straddles segments.
        let big: String = "x".repeat(200_000);
        q.put(big.clone()).unwrap();
        q.put("small".into()).unwrap();
        assert_eq!(q.get().unwrap(), big);
        assert_eq!(q.get().unwrap(), "small");
        // A producer thread far ahead of a slow consumer, through the small
        // ring.
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            for n in 0..200u64 {
                q2.put_bytes(&pattern(n, 10_000 + n as usize * 997))
                    .unwrap();
            }
        });
        let mut buf = Vec::new();
        for n in 0..200u64 {
            let len = q.get_bytes_into(&mut buf, None).unwrap();
            assert_eq!(len, 10_000 + n as usize * 997);
            assert!(buf == pattern(n, len));
        }
        t.join().unwrap();
    });
}

#[test]
fn message_larger_than_capacity_is_refused() {
    watchdog(Duration::from_secs(30), || {
        let q: Queue<()> = Queue::builder()
            .ring_size(128 << 10)
            .capacity(1 << 20)
            .build()
            .unwrap();
        let max = q.max_message_size();
        assert!(max < 1 << 20);
        assert!(matches!(
            q.put_bytes(&vec![1u8; max + 1]),
            Err(PutError::TooLarge(()))
        ));
        q.put_bytes(&vec![2u8; max - 8]).unwrap();
        assert_eq!(q.get_bytes().unwrap().len(), max - 8);
        // A full unbounded queue (capacity exhausted) makes put_nowait fail
        // with Full, and a timed put time out.
        q.put_bytes(&vec![3u8; 600 << 10]).unwrap();
        assert!(matches!(
            q.put_bytes_nowait(&vec![4u8; 600 << 10]),
            Err(TryPutError::Full(()))
        ));
        assert!(matches!(
            q.put_bytes_timeout(&vec![4u8; 600 << 10], Duration::from_millis(30)),
            Err(PutTimeoutError::Timeout(()))
        ));
        assert_eq!(q.get_bytes().unwrap().len(), 600 << 10);
        q.put_bytes(&vec![4u8; 600 << 10]).unwrap();
    });
}

#[test]
fn close_and_bad_values() {
    watchdog(Duration::from_secs(30), || {
        let q: Queue<Connection> = Queue::new().unwrap();
        let (a, _b) = pipe().unwrap();
        // Handles cannot travel through a queue; the value comes back.
        match q.put(a) {
            Err(PutError::Encode(conn, _)) => drop(conn),
            other => panic!("expected Encode, got {other:?}"),
        }
        assert!(q.empty());

        let q: Queue<String> = Queue::new().unwrap();
        // Bytes that are not a String are consumed and reported.
        q.put_bytes(&[0xff, 0xff, 0xff]).unwrap();
        q.put("fine".into()).unwrap();
        assert!(matches!(q.get(), Err(GetError::Decode(_))));
        assert_eq!(q.get().unwrap(), "fine");

        // `close` closes this handle only, and only its putting side.
        let other = q.clone();
        q.close();
        assert!(q.is_closed() && !other.is_closed());
        assert!(matches!(q.put("x".into()), Err(PutError::Closed(_))));
        other.put("y".into()).unwrap();
        assert_eq!(q.get_nowait().unwrap(), "y");
        assert!(matches!(q.get_nowait(), Err(TryGetError::Empty)));
    });
}

#[test]
fn get_bytes_with_reads_in_place_and_keeps_message_on_panic() {
    watchdog(Duration::from_secs(30), || {
        let q: Queue<()> = Queue::new().unwrap();
        q.put_bytes(b"first").unwrap();
        q.put_bytes(b"second").unwrap();
        let q2 = q.clone();
        let r = std::thread::spawn(move || {
            q2.get_bytes_with(None, |_bytes| -> () { panic!("consumer failed") })
        })
        .join();
        assert!(r.is_err());
        // The message was not consumed, and the lock was released.
        assert_eq!(q.qsize(), 2);
        let n = q
            .get_bytes_with(Some(Duration::from_secs(1)), |b| b.to_vec())
            .unwrap();
        assert_eq!(n, b"first");
        assert_eq!(q.get_bytes().unwrap(), b"second");
    });
}

#[test]
fn idle_queue_costs_at_most_its_ring() {
    watchdog(Duration::from_secs(60), || {
        let ring = 256 << 10;
        let q: Queue<()> = Queue::builder().ring_size(ring).build().unwrap();
        let fresh = q.memory_usage().unwrap();
        assert!(fresh <= ring, "fresh queue holds {fresh} bytes");
        // A 64 MiB backlog spills beyond the ring...
        for n in 0..64u64 {
            q.put_bytes(&pattern(n, 1 << 20)).unwrap();
        }
        let full = q.memory_usage().unwrap();
        assert!(full >= 64 << 20, "backlog holds only {full} bytes");
        for n in 0..64u64 {
            assert!(q.get_bytes().unwrap() == pattern(n, 1 << 20));
        }
        // ...and is given back once consumed (the ring stays).
        let idle = q.memory_usage().unwrap();
        assert!(
            idle <= idle_bound(ring, 64 << 20),
            "idle queue holds {idle} bytes"
        );
        // Steady traffic afterwards stays within the ring.
        for n in 0..2000u64 {
            q.put_bytes(&pattern(n, 1000)).unwrap();
            assert!(q.get_bytes().unwrap().len() == 1000);
        }
        let steady = q.memory_usage().unwrap();
        assert!(
            steady <= idle_bound(ring, 64 << 20),
            "steady queue holds {steady} bytes"
        );
    });
}

/// Serialises `.0` bytes, then fails: a `put` that writes into the ring
/// and is abandoned.
struct FailsLate(usize);

impl serde::Serialize for FailsLate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&vec![7u8; self.0])?;
        t.serialize_element(&Refuse)?;
        t.end()
    }
}

struct Refuse;

impl serde::Serialize for Refuse {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refused after writing"))
    }
}

impl<'de> serde::Deserialize<'de> for FailsLate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <Vec<u8>>::deserialize(d).map(|v| FailsLate(v.len()))
    }
}

impl std::fmt::Debug for FailsLate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FailsLate({})", self.0)
    }
}

#[test]
fn abandoned_puts_do_not_grow_the_idle_queue() {
    watchdog(Duration::from_secs(60), || {
        let ring = 256 << 10;
        let q: Queue<FailsLate> = Queue::builder().ring_size(ring).build().unwrap();
        for round in 0..5u64 {
            // A backlog of 16 segments, half consumed: the ring's worth of
            // the segments left behind stays resident for reuse.
            for n in 0..8u64 {
                q.put_bytes(&pattern(round + n, 128 << 10)).unwrap();
            }
            for n in 0..4u64 {
                assert!(q.get_bytes().unwrap() == pattern(round + n, 128 << 10));
            }
            // A put that writes through those kept segments and then
            // fails: nothing is queued, the value comes back.
            match q.put(FailsLate(192 << 10)) {
                Err(PutError::Encode(v, _)) => assert_eq!(v.0, 192 << 10),
                other => panic!("expected Encode, got {other:?}"),
            }
            assert_eq!(q.qsize(), 4);
            // Draining the rest keeps no more than the ring.
            for n in 4..8u64 {
                assert!(q.get_bytes().unwrap() == pattern(round + n, 128 << 10));
            }
            let idle = q.memory_usage().unwrap();
            assert!(
                idle <= idle_bound(ring, 1 << 20),
                "round {round}: idle queue holds {idle} bytes"
            );
        }
    });
}

// ----- processes -----

fn child_put_hello(q: Queue<(i32, Option<i32>, String)>) {
    q.put((42, None, "hello".into())).unwrap();
}

fn child_echo(args: (Queue<u64>, Queue<u64>)) -> u64 {
    let (input, output) = args;
    let mut sum = 0;
    loop {
        let v = input.get().unwrap();
        if v == u64::MAX {
            return sum;
        }
        sum += v;
        output.put(v * 2).unwrap();
    }
}

#[test]
fn spawn_child_puts_parent_gets() {
    watchdog(Duration::from_secs(60), || {
        let q = Queue::new().unwrap();
        let mut p = Process::new(child_put_hello, q.clone());
        p.start().unwrap();
        assert_eq!(
            q.get_timeout(Duration::from_secs(30)).unwrap(),
            (42, None, "hello".to_string())
        );
        p.join().unwrap();
    });
}

#[test]
fn spawn_child_round_trips() {
    watchdog(Duration::from_secs(60), || {
        let input: Queue<u64> = Queue::with_maxsize(8).unwrap();
        let output: Queue<u64> = Queue::new().unwrap();
        let mut p = Process::new(child_echo, (input.clone(), output.clone()));
        p.start().unwrap();
        for i in 0..5000 {
            input.put(i).unwrap();
        }
        for i in 0..5000 {
            assert_eq!(output.get_timeout(Duration::from_secs(30)).unwrap(), i * 2);
        }
        input.put(u64::MAX).unwrap();
        assert_eq!(p.join().unwrap(), (0..5000).sum::<u64>());
    });
}

fn child_put_10_mib(q: Queue<()>) -> usize {
    let data = pattern(10, 10 << 20);
    q.put_bytes(&data).unwrap();
    for n in 0..100 {
        q.put_bytes(&pattern(n, 1000)).unwrap();
    }
    data.len()
}

#[test]
fn child_puts_10_mib_and_is_joined_before_anyone_reads() {
    watchdog(Duration::from_secs(60), || {
        let q: Queue<()> = Queue::new().unwrap();
        let mut p = Process::new(child_put_10_mib, q.clone());
        p.start().unwrap();
        // Python would deadlock here (the child's feeder thread waits for
        // the pipe to drain); the data is in shared memory already.
        assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), 10 << 20);
        assert!(q.get_bytes().unwrap() == pattern(10, 10 << 20));
        for n in 0..100 {
            assert!(q.get_bytes().unwrap() == pattern(n, 1000));
        }
        assert!(q.empty());
    });
}

fn send_queue_over_connection(conn: Connection) -> String {
    let (input, output): (Queue<String>, Queue<String>) = conn.recv().unwrap();
    let msg = input.get_timeout(Duration::from_secs(30)).unwrap();
    output.put(format!("{msg} back")).unwrap();
    msg
}

#[test]
fn queue_handle_travels_inside_a_message() {
    watchdog(Duration::from_secs(60), || {
        let (a, b) = pipe().unwrap();
        let mut p = Process::new(send_queue_over_connection, b);
        p.start().unwrap();
        let input: Queue<String> = Queue::new().unwrap();
        let output: Queue<String> = Queue::new().unwrap();
        a.send(&(input.clone(), output.clone())).unwrap();
        input.put("there".into()).unwrap();
        assert_eq!(
            output.get_timeout(Duration::from_secs(30)).unwrap(),
            "there back"
        );
        assert_eq!(p.join().unwrap(), "there");
    });
}

fn fork_producer(args: (Queue<u32>, u32)) -> u32 {
    let (q, base) = args;
    for i in 0..1000 {
        q.put(base + i).unwrap();
    }
    base
}

/// Runs in a spawned (single-threaded) child: forks producers and a
/// consumer from there.
fn fork_scenario(q: Queue<u32>) -> u64 {
    let mut producers: Vec<_> = (0..3)
        .map(|k| {
            let mut p =
                Process::new(fork_producer, (q.clone(), k * 1000)).start_method(StartMethod::Fork);
            p.start().unwrap();
            p
        })
        .collect();
    let mut seen = HashSet::new();
    for _ in 0..3000 {
        let v = q.get_timeout(Duration::from_secs(30)).unwrap();
        assert!(seen.insert(v));
    }
    for (k, p) in producers.iter_mut().enumerate() {
        assert_eq!(p.join().unwrap(), k as u32 * 1000);
    }
    seen.iter().map(|&v| u64::from(v)).sum()
}

#[test]
fn fork_start_method_from_a_single_threaded_child() {
    watchdog(Duration::from_secs(60), || {
        let q: Queue<u32> = Queue::new().unwrap();
        let mut p = Process::new(fork_scenario, q.clone());
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), (0..3000u64).sum::<u64>());
        assert!(q.empty());
    });
}

fn process_consumer(q: Queue<u64>) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        match q.get_timeout(Duration::from_secs(30)).unwrap() {
            u64::MAX => return got,
            v => got.push(v),
        }
    }
}

fn process_producer(args: (Queue<u64>, u64, u64)) {
    let (q, from, to) = args;
    for v in from..to {
        q.put(v).unwrap();
    }
}

#[test]
fn processes_many_producers_many_consumers() {
    watchdog(Duration::from_secs(90), || {
        let q: Queue<u64> = Queue::with_maxsize(100).unwrap();
        let mut consumers: Vec<_> = (0..3)
            .map(|_| {
                let mut p = Process::new(process_consumer, q.clone());
                p.start().unwrap();
                p
            })
            .collect();
        let mut producers: Vec<_> = (0..3u64)
            .map(|k| {
                let mut p =
                    Process::new(process_producer, (q.clone(), k * 20_000, (k + 1) * 20_000));
                p.start().unwrap();
                p
            })
            .collect();
        for p in &mut producers {
            p.join().unwrap();
        }
        for _ in 0..3 {
            q.put(u64::MAX).unwrap();
        }
        let mut all = HashSet::new();
        for c in &mut consumers {
            let got = c.join().unwrap();
            // Each consumer sees each producer's messages in order.
            for k in 0..3 {
                let mine: Vec<_> = got.iter().filter(|&&v| v / 20_000 == k).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]));
            }
            for v in got {
                assert!(all.insert(v), "duplicate {v}");
            }
        }
        assert_eq!(all.len(), 60_000);
    });
}

#[test]
fn unbounded_gigabyte_without_consumer() {
    watchdog(Duration::from_secs(120), || {
        let q: Queue<()> = Queue::new().unwrap();
        const N: u64 = 1024;
        let mut msg = vec![0u8; 1 << 20];
        for n in 0..N {
            msg[..8].copy_from_slice(&n.to_le_bytes());
            msg[(1 << 20) - 8..].copy_from_slice(&(!n).to_le_bytes());
            // put_nowait: an unbounded queue never has to wait.
            q.put_bytes_nowait(&msg).unwrap();
        }
        assert_eq!(q.qsize(), N as usize);
        assert!(q.memory_usage().unwrap() >= N as usize * (1 << 20));
        let mut buf = Vec::new();
        for n in 0..N {
            assert_eq!(q.get_bytes_into(&mut buf, None).unwrap(), 1 << 20);
            assert_eq!(buf[..8], n.to_le_bytes());
            assert_eq!(buf[(1 << 20) - 8..], (!n).to_le_bytes());
        }
        assert!(q.empty());
        let idle = q.memory_usage().unwrap();
        assert!(
            idle <= idle_bound(multiproc::queue::DEFAULT_RING_SIZE, 1 << 30),
            "idle queue holds {idle} bytes"
        );
    });
}

fn joinable_worker(q: JoinableQueue<u32>) -> u32 {
    let mut n = 0;
    while let Ok(v) = q.get_timeout(Duration::from_millis(300)) {
        std::thread::sleep(Duration::from_micros(u64::from(v % 7) * 100));
        n += 1;
        q.task_done().unwrap();
    }
    n
}

#[test]
fn joinable_queue_join_waits_for_task_done() {
    watchdog(Duration::from_secs(60), || {
        let q: JoinableQueue<u32> = JoinableQueue::new().unwrap();
        // Nothing put: join returns at once, task_done is an error.
        q.join();
        assert_eq!(q.task_done(), Err(TaskDoneError));
        q.put(1).unwrap();
        assert_eq!(q.unfinished_tasks(), 1);
        assert_eq!(
            q.join_timeout(Duration::from_millis(20)),
            Err(TasksPending { unfinished: 1 })
        );
        assert_eq!(q.get().unwrap(), 1);
        assert_eq!(q.unfinished_tasks(), 1);
        q.task_done().unwrap();
        q.join();
        assert_eq!(q.task_done(), Err(TaskDoneError));

        let mut workers: Vec<_> = (0..2)
            .map(|_| {
                let mut p = Process::new(joinable_worker, q.clone());
                p.start().unwrap();
                p
            })
            .collect();
        for i in 0..200 {
            q.put(i).unwrap();
        }
        q.join_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(q.unfinished_tasks(), 0);
        let done: u32 = workers.iter_mut().map(|p| p.join().unwrap()).sum();
        assert_eq!(done, 200);
        assert_eq!(q.task_done(), Err(TaskDoneError));
    });
}

fn simple_child(q: SimpleQueue<Vec<String>>) {
    let v = q.get_timeout(Duration::from_secs(30)).unwrap();
    q.put(v.into_iter().rev().collect()).unwrap();
}

#[test]
fn simple_queue_between_processes() {
    watchdog(Duration::from_secs(60), || {
        let q: SimpleQueue<Vec<String>> = SimpleQueue::new().unwrap();
        assert!(q.empty());
        let mut p = Process::new(simple_child, q.clone());
        q.put(vec!["a".into(), "b".into()]).unwrap();
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(q.get().unwrap(), vec!["b".to_string(), "a".to_string()]);
        assert!(q.empty());
    });
}

#[test]
fn a_get_callback_may_put_into_its_own_queue() {
    watchdog(Duration::from_secs(60), || {
        let q: Queue<FailsLate> = Queue::builder().ring_size(256 << 10).build().unwrap();
        // Kept segments to reuse, and a message to take.
        for n in 0..8u64 {
            q.put_bytes(&pattern(n, 128 << 10)).unwrap();
        }
        for n in 0..8u64 {
            assert!(q.get_bytes().unwrap() == pattern(n, 128 << 10));
        }
        q.put_bytes(b"first").unwrap();
        let inner = q.clone();
        let got = q
            .get_bytes_with(Some(Duration::from_secs(5)), move |bytes| {
                // While this get holds its side of the queue: a put that
                // fails half-way (and so tidies the ring), then one that
                // succeeds. Neither may wait for the get to finish.
                let failed = match inner.put(FailsLate(192 << 10)) {
                    Err(PutError::Encode(v, _)) => v.0,
                    other => panic!("expected Encode, got {other:?}"),
                };
                inner.put_bytes(b"second").unwrap();
                (bytes.to_vec(), failed)
            })
            .unwrap();
        assert_eq!(got, (b"first".to_vec(), 192 << 10));
        assert_eq!(q.get_bytes().unwrap(), b"second");
        assert!(q.empty());
    });
}
