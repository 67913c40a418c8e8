//! The `tokio` feature: `AsyncConnection` and `AsyncQueue` against real
//! child processes (spawn and fork), bad frames, killed peers, many
//! waiting tasks on one runtime thread, and cancelled futures.

#![cfg(feature = "tokio")]

#[macro_use]
mod common;

use std::collections::HashSet;
use std::future::{Future, IntoFuture};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::aio::{rt, run};
use common::{LIMIT, LONG, Method, in_child, watchdog};
use multiproc::*;
use serde::{Deserialize, Serialize};

/// Runs `a` and `b` together until `a` finishes.
async fn first<A: Future>(a: A, b: impl Future<Output = ()>) -> A::Output {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
            return std::task::Poll::Ready(v);
        }
        let _ = b.as_mut().poll(cx);
        std::task::Poll::Pending
    })
    .await
}

/// Threads of this process.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads line")
}

fn bytes(n: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 ^ n).wrapping_mul(31) as u8)
        .collect()
}

#[derive(Serialize, Deserialize)]
enum Msg {
    Data(u32, Vec<u8>),
    /// A connection to answer on: the descriptor travels in the message.
    Answer(Connection),
    /// The end (a forked child holds a copy of the parent's end too, so
    /// it would never see the hang-up).
    Stop,
}

/// Echoes every message until the parent hangs up; answers on connections
/// it is sent.
fn echo(c: Connection) {
    while let Ok(m) = c.recv::<Msg>() {
        match m {
            Msg::Data(n, v) => {
                if c.send(&Msg::Data(n, v)).is_err() {
                    return;
                }
            }
            Msg::Answer(other) => {
                let _ = other.send(&"answered");
            }
            Msg::Stop => return,
        }
    }
}

fn connection_round_trip(method: Method) {
    let (ours, theirs) = pipe().unwrap();
    let mut p = Process::new(echo, theirs).start_method(method.start());
    p.start().unwrap();
    run(async {
        let c = ours.into_async().unwrap();
        // Small and large messages (a large one takes many writes and
        // reads through the reactor), with the echo running in between.
        for (n, len) in [(0, 0), (1, 10), (2, 3 << 20), (3, 100), (4, 70_000)] {
            c.send(&Msg::Data(n, bytes(n, len))).await.unwrap();
            match c.recv::<Msg>().await.unwrap() {
                Msg::Data(m, v) => {
                    assert_eq!(m, n);
                    assert!(v == bytes(n, len), "message {n} came back changed");
                }
                _ => panic!("unexpected message"),
            }
        }
        // Pipelined: many sends before the replies are read.
        for n in 0..200 {
            c.send(&Msg::Data(n, bytes(n, 500))).await.unwrap();
        }
        for n in 0..200 {
            assert!(matches!(c.recv::<Msg>().await.unwrap(), Msg::Data(m, _) if m == n));
        }
        // A descriptor in a message, and the answer read async.
        let (a, b) = pipe().unwrap();
        c.send(&Msg::Answer(b)).await.unwrap();
        let a = a.into_async().unwrap();
        assert_eq!(a.recv::<String>().await.unwrap(), "answered");
        c.send(&Msg::Stop).await.unwrap();
    });
    p.join_timeout(LONG).unwrap();
}

fn sleeper(c: Connection) {
    let _keep = c;
    std::thread::sleep(Duration::from_secs(600));
}

fn killed_peer(method: Method) {
    let (ours, theirs) = pipe().unwrap();
    let mut p = Process::new(sleeper, theirs).start_method(method.start());
    p.start().unwrap();
    run(async {
        let c = ours.into_async().unwrap();
        let kill = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.kill().unwrap();
            std::future::pending::<()>().await;
        };
        let r = first(c.recv::<u32>(), kill).await;
        assert!(matches!(r, Err(RecvError::Disconnected)), "{r:?}");
        // Sending to the dead peer fails typed too (the first write may
        // still be taken by the kernel: keep writing).
        let mut sent = 0;
        let e = loop {
            match c.send_bytes(&[0u8; 4096]).await {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 1000, "sends to a dead peer kept succeeding");
        };
        assert!(matches!(e, SendError::Disconnected), "{e:?}");
    });
    let _ = p.join_timeout(LONG);
}

/// Consumes from `jobs` (blocking) and answers each on `answers`.
fn queue_echo(args: (Queue<u64>, Queue<u64>)) {
    let (jobs, answers) = args;
    jobs.close();
    while let Ok(n) = jobs.get() {
        answers.put(n * 2).unwrap();
    }
}

fn queue_round_trip(method: Method) {
    // A bounded job queue, so that the async put waits for space that the
    // child's gets make.
    let jobs: Queue<u64> = Queue::with_maxsize(2).unwrap();
    let answers: Queue<u64> = Queue::new().unwrap();
    let mut p =
        Process::new(queue_echo, (jobs.clone(), answers.clone())).start_method(method.start());
    p.start().unwrap();
    run(async {
        let jobs = jobs.into_async().unwrap();
        let answers = answers.into_async().unwrap();
        answers.close(); // only the child answers
        // One at a time (the async get waits for each answer)…
        for n in 0..200 {
            jobs.put(n).await.unwrap();
            assert_eq!(answers.get().await.unwrap(), 2 * n);
        }
        // …and a burst that fills the bounded queue many times over.
        let put_all = tokio::spawn(async move {
            for n in 0..2000 {
                jobs.put(n).await.unwrap();
            }
            // The child's loop ends once the queue is empty.
            drop(jobs);
        });
        let mut sum = 0;
        for _ in 0..2000 {
            sum += answers.get().await.unwrap();
        }
        put_all.await.unwrap();
        assert_eq!(sum, 2 * (0..2000).sum::<u64>());
        // The child exits: every producer of `answers` is gone.
        let end = answers.get().await;
        assert!(matches!(end, Err(GetError::Disconnected)), "{end:?}");
    });
    p.join_timeout(LONG).unwrap();
}

/// Holds a producer handle, puts one message, and sleeps until killed.
fn producer_then_sleep(q: Queue<u32>) {
    q.put(1).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

fn killed_producer(method: Method) {
    let q: Queue<u32> = Queue::new().unwrap();
    let mut p = Process::new(producer_then_sleep, q.clone()).start_method(method.start());
    p.start().unwrap();
    run(async {
        let q = q.into_async().unwrap();
        q.close(); // the child is the only producer
        assert_eq!(q.get().await.unwrap(), 1);
        let kill = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.kill().unwrap();
            std::future::pending::<()>().await;
        };
        // Woken by the kernel's hang-up on the queue's socket, not by a
        // message: the typed end, not a hang.
        let r = first(q.get(), kill).await;
        assert!(matches!(r, Err(GetError::Disconnected)), "{r:?}");
    });
    let _ = p.join_timeout(LONG);
}

both_methods!(
    connection_round_trip,
    killed_peer,
    queue_round_trip,
    killed_producer
);

#[test]
fn oversize_and_garbage_frames_are_typed_errors() {
    watchdog(LIMIT, || {
        run(async {
            // An announced length over the cap: refused before allocating.
            let (mut raw, theirs) = UnixStream::pair().unwrap();
            let mut c = Connection::from_unix_stream(theirs)
                .unwrap()
                .into_async()
                .unwrap();
            c.set_max_frame(1024);
            raw.write_all(&1_000_000i32.to_be_bytes()).unwrap();
            let e = c.recv_bytes().await;
            assert!(
                matches!(
                    e,
                    Err(RecvError::TooLarge {
                        len: 1_000_000,
                        max: 1024
                    })
                ),
                "{e:?}"
            );
            // Sending over the cap is refused too, before writing.
            let e = c.send_bytes(&[0u8; 2000]).await;
            assert!(
                matches!(
                    e,
                    Err(SendError::TooLarge {
                        len: 2000,
                        max: 1024
                    })
                ),
                "{e:?}"
            );

            // A negative length other than -1 is garbage.
            let (mut raw, theirs) = UnixStream::pair().unwrap();
            let c = Connection::from_unix_stream(theirs)
                .unwrap()
                .into_async()
                .unwrap();
            raw.write_all(&(-7i32).to_be_bytes()).unwrap();
            let e = c.recv::<u32>().await;
            assert!(matches!(e, Err(RecvError::BadFrame)), "{e:?}");

            // Bytes that do not decode as the type asked for.
            let (mut raw, theirs) = UnixStream::pair().unwrap();
            let c = Connection::from_unix_stream(theirs)
                .unwrap()
                .into_async()
                .unwrap();
            raw.write_all(&[0, 0, 0, 3, 9, 9, 9]).unwrap();
            let e = c.recv::<String>().await;
            assert!(matches!(e, Err(RecvError::Codec(_))), "{e:?}");

            // A frame cut short by the peer's close.
            let (mut raw, theirs) = UnixStream::pair().unwrap();
            let c = Connection::from_unix_stream(theirs)
                .unwrap()
                .into_async()
                .unwrap();
            raw.write_all(&[0, 0, 0, 10, 1, 2]).unwrap();
            drop(raw);
            let e = c.recv_bytes().await;
            assert!(
                matches!(
                    e,
                    Err(RecvError::Truncated {
                        expected: 14,
                        got: 6
                    })
                ),
                "{e:?}"
            );
        })
    });
}

#[test]
fn made_outside_a_runtime_is_an_error_not_a_panic() {
    let (a, _b) = pipe().unwrap();
    assert!(a.into_async().is_err());
    assert!(Queue::<u8>::new().unwrap().into_async().is_err());
}

#[test]
fn a_frame_arriving_in_pieces_is_received_whole() {
    watchdog(LIMIT, || {
        let (mut raw, theirs) = UnixStream::pair().unwrap();
        let c = Connection::from_unix_stream(theirs).unwrap();
        let writer = std::thread::spawn(move || {
            let body = bytes(9, 200_000);
            let mut frame = (body.len() as i32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            for piece in frame.chunks(7_919) {
                raw.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            raw
        });
        run(async {
            let c = c.into_async().unwrap();
            assert!(c.recv_bytes().await.unwrap() == bytes(9, 200_000));
        });
        drop(writer.join().unwrap());
    });
}

/// 1,000 tasks wait on ten queues on one runtime thread; the process has
/// no more threads while they wait than before; every task gets its
/// message. Runs in a spawned child so that the thread count is its own.
fn many_waiters(_: ()) -> Result<(), String> {
    let queues: Vec<Queue<u32>> = (0..10).map(|_| Queue::new().unwrap()).collect();
    let before = threads();
    rt().block_on(async {
        let aq: Vec<AsyncQueue<u32>> = queues
            .iter()
            .map(|q| q.clone().into_async().unwrap())
            .collect();
        let mut tasks = Vec::new();
        for i in 0..1000 {
            let q = aq[i % 10].clone();
            tasks.push(tokio::spawn(async move { q.get().await }));
        }
        // Let every task start waiting.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let during = threads();
        if during > before {
            return Err(format!(
                "{before} threads before, {during} while 1000 tasks wait"
            ));
        }
        for i in 0..1000u32 {
            queues[i as usize % 10].put(i).unwrap();
        }
        let mut got = HashSet::new();
        for t in tasks {
            let v = tokio::time::timeout(LONG, t)
                .await
                .map_err(|_| "a waiting task was never woken".to_string())?
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            got.insert(v);
        }
        if got.len() != 1000 {
            return Err(format!("{} distinct messages of 1000", got.len()));
        }
        Ok(())
    })
}

#[test]
fn many_waiting_tasks_share_one_thread() {
    in_child(many_waiters, ()).unwrap();
}

#[test]
fn dropped_get_loses_no_message() {
    watchdog(LIMIT, || {
        let q: Queue<u32> = Queue::new().unwrap();
        let producer = q.clone();
        run(async {
            let aq = q.into_async().unwrap();
            // A get that waits and is dropped.
            let r = tokio::time::timeout(Duration::from_millis(30), aq.get()).await;
            assert!(r.is_err(), "nothing was put");
            producer.put(7).unwrap();
            assert_eq!(aq.get().await.unwrap(), 7);

            // Gets cancelled at random points while a thread puts.
            const N: u32 = 3000;
            let p = producer.clone();
            let t = std::thread::spawn(move || {
                for i in 0..N {
                    p.put(i).unwrap();
                    // Pauses longer than the consumer's timeouts, so that
                    // some gets are cancelled while they wait.
                    if i % 100 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
            let mut got = Vec::new();
            let mut cancelled = 0u32;
            let mut k = 0u64;
            while got.len() < N as usize {
                k = k
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let wait = Duration::from_micros(k >> 53);
                match tokio::time::timeout(wait, aq.get()).await {
                    Ok(v) => got.push(v.unwrap()),
                    Err(_) => cancelled += 1,
                }
            }
            t.join().unwrap();
            assert!(cancelled > 0, "no get was cancelled");
            assert_eq!(got, (0..N).collect::<Vec<_>>());
            assert!(q_empty(&aq));
        });
    });
}

fn q_empty(q: &AsyncQueue<u32>) -> bool {
    q.get_ref().empty()
}

#[test]
fn async_put_waits_for_space_and_simple_queue_works() {
    watchdog(LIMIT, || {
        let q: Queue<u32> = Queue::with_maxsize(1).unwrap();
        let consumer = q.clone();
        run(async {
            let aq = q.into_async().unwrap();
            aq.put(1).await.unwrap();
            // Full: the second put waits until a blocking get elsewhere.
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let a = consumer.get().unwrap();
                let b = consumer.get().unwrap();
                (a, b)
            });
            aq.put(2).await.unwrap();
            assert_eq!(t.join().unwrap(), (1, 2));

            let s: SimpleQueue<String> = SimpleQueue::new().unwrap();
            let s = s.into_async().unwrap();
            s.put("simple".into()).await.unwrap();
            assert_eq!(s.get().await.unwrap(), "simple");
            s.put_bytes(b"raw").await.unwrap();
            assert_eq!(s.get_bytes().await.unwrap(), b"raw");
            s.close();
            assert!(matches!(s.get().await, Err(GetError::Disconnected)));
        });
    });
}

fn square(x: u64) -> u64 {
    x * x
}

fn slow_double(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(x % 7));
    2 * x
}

fn fails(_: u64) -> u64 {
    common::quiet_panics();
    panic!("task failed on purpose")
}

/// Pool results awaited from one runtime thread: single results, maps,
/// imap as an async sequence, a failing task, and 200 results awaited at
/// once with no thread added per waiter.
fn pool_results(method: Method) {
    let pool = Pool::builder()
        .processes(2)
        .start_method(method.start())
        .build()
        .unwrap();
    run(async {
        let r = pool.apply_async(square, 12).unwrap();
        assert_eq!(r.await.unwrap(), 144);
        let m = pool.map_async(slow_double, 0..40).unwrap();
        assert_eq!(m.await.unwrap(), (0..40).map(|x| 2 * x).collect::<Vec<_>>());
        let bad = pool.apply_async(fails, 1).unwrap();
        assert!(matches!(bad.await, Err(PoolError::Task { index: 0, .. })));

        let mut it = pool.imap(slow_double, 0..30).unwrap();
        let mut got = Vec::new();
        while let Some(r) = it.next_async().await {
            got.push(r.unwrap());
        }
        assert_eq!(got, (0..30).map(|x| 2 * x).collect::<Vec<_>>());

        let threads_before = threads();
        let handles: Vec<_> = (0..200u64)
            .map(|x| pool.apply_async(slow_double, x).unwrap())
            .collect();
        let tasks: Vec<_> = handles
            .into_iter()
            .map(|h| tokio::spawn(h.into_future()))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(threads() <= threads_before, "a thread per waiting task");
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap().unwrap();
        }
        assert_eq!(sum, 2 * (0..200).sum::<u64>());
    });
    pool.close();
    pool.join_timeout(LONG).unwrap();
}

both_methods!(pool_results);

#[test]
fn a_cancelled_send_is_finished_by_the_next_one() {
    watchdog(LIMIT, || {
        let (a, b) = pipe().unwrap();
        run(async {
            let a = a.into_async().unwrap();
            let big = bytes(5, 8 << 20);
            // Nobody reads yet: the socket fills and the send is dropped
            // with part of its frame written.
            let r = tokio::time::timeout(Duration::from_millis(50), a.send_bytes(&big)).await;
            assert!(r.is_err(), "an 8 MiB send completed with no reader");
            let reader = std::thread::spawn(move || {
                let first = b.recv_bytes().unwrap();
                let second = b.recv::<String>().unwrap();
                (first, second)
            });
            a.send(&"after").await.unwrap();
            let (first, second) = tokio::task::spawn_blocking(move || reader.join().unwrap())
                .await
                .unwrap();
            assert!(first == big, "the cancelled frame arrived changed");
            assert_eq!(second, "after");
        });
    });
}

/// Sizes cycling through ring records and frames too large for one (those
/// go on the socket, announced in the ring).
fn mixed_len(i: u32) -> usize {
    [10, 70_000, 30_000, 0, 60_000, 40][i as usize % 6]
}

#[test]
fn sends_stay_in_order_past_a_full_ring_and_socket_frames() {
    watchdog(LIMIT, || {
        const PER_TASK: u32 = 120;
        let (a, b) = pipe().unwrap();
        // A slow reader: the ring fills, later sends wait in the outbox
        // and must not be overtaken by ones that find room again. First
        // two tasks' `send_bytes`, then two tasks' `send`.
        let reader = std::thread::spawn(move || {
            for serde in [false, true] {
                let mut next = [0u32; 2];
                for k in 0..2 * PER_TASK {
                    if k % 40 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let (task, i, v) = if serde {
                        b.recv::<(u8, u32, Vec<u8>)>().unwrap()
                    } else {
                        let m = b.recv_bytes().unwrap();
                        let i = u32::from_le_bytes(m[1..5].try_into().unwrap());
                        (m[0], i, m[5..].to_vec())
                    };
                    let task = task as usize;
                    assert_eq!(i, next[task], "task {task}: message {i} out of order");
                    assert!(v == bytes(i, mixed_len(i)), "message {i} changed");
                    next[task] += 1;
                }
            }
        });
        run(async {
            let a = std::sync::Arc::new(a.into_async().unwrap());
            for serde in [false, true] {
                let tasks: Vec<_> = (0..2u8)
                    .map(|task| {
                        let a = a.clone();
                        tokio::spawn(async move {
                            for i in 0..PER_TASK {
                                let v = bytes(i, mixed_len(i));
                                if serde {
                                    a.send(&(task, i, v)).await.unwrap();
                                } else {
                                    let mut m = vec![task];
                                    m.extend_from_slice(&i.to_le_bytes());
                                    m.extend_from_slice(&v);
                                    a.send_bytes(&m).await.unwrap();
                                }
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            }
        });
        reader.join().unwrap();
    });
}
