//! The `tokio` feature for CSP channel ends: `Reader::read_async` and
//! `Writer::write_async` against threads and real child processes (spawn
//! and fork), poison and retire as typed errors, cancelled futures (no
//! message lost or delivered twice), and many tasks on one channel.

#![cfg(feature = "tokio")]

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use common::aio::run;
use common::{LIMIT, LONG, Method, watchdog};
use multiproc::Process;
use multiproc::csp::{Channel, ChannelError, Reader, Writer};

fn threads_chan<T>() -> Channel<T> {
    Channel::builder().threads_only().build().expect("channel")
}

/// Runs `a` and `b` together; both outputs.
async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready((ra.take().unwrap(), rb.take().unwrap()))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Whether `fut` is still pending after `ms` milliseconds (it is dropped
/// then: a cancellation).
async fn still_pending<F: Future>(fut: F, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), fut)
        .await
        .is_err()
}

#[test]
fn rendezvous_with_a_thread() {
    watchdog(LIMIT, || {
        let ch = threads_chan::<u64>();
        let back = threads_chan::<Vec<u8>>();
        let (r, w) = (ch.reader(), ch.writer());
        let (br, bw) = (back.reader(), back.writer());
        // A reader that stays (the channel must not retire with `br`).
        let idle = back.reader();
        let t = std::thread::spawn(move || {
            for i in 0..200u64 {
                w.write(&i).unwrap();
            }
            // A large message (spilled past the inline slot), then small ones.
            let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
            assert_eq!(br.read().unwrap(), big);
            for i in 0..100u8 {
                assert_eq!(br.read().unwrap(), vec![i]);
            }
        });
        run(async {
            for i in 0..200u64 {
                assert_eq!(r.read_async().await.unwrap(), i);
            }
            let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
            bw.write_async(&big).await.unwrap();
            for i in 0..100u8 {
                bw.write_async(&vec![i]).await.unwrap();
            }
        });
        t.join().unwrap();
        // Rendezvous: a write with no reader stays pending, and once
        // dropped it did not happen.
        run(async {
            assert!(still_pending(bw.write_async(&vec![9]), 100).await);
        });
        assert!(matches!(
            idle.read_timeout(Duration::from_millis(200)),
            Err(ChannelError::Timeout)
        ));
    });
}

/// Doubles what it reads on `a` and writes it to `b`, until poisoned.
fn doubler((a, b): (Reader<u64>, Writer<u64>)) {
    while let Ok(v) = a.read() {
        if b.write(&(v * 2)).is_err() {
            return;
        }
    }
}

fn rendezvous_with_a_process(method: Method) {
    let a = Channel::<u64>::new().unwrap();
    let b = Channel::<u64>::new().unwrap();
    // Started before the first async operation waits (the waiting thread
    // it starts would make fork unavailable).
    let mut p = Process::new(doubler, (a.reader(), b.writer())).start_method(method.start());
    p.start().unwrap();
    let (w, r) = (a.writer(), b.reader());
    run(async {
        for i in 0..300u64 {
            w.write_async(&i).await.unwrap();
            assert_eq!(r.read_async().await.unwrap(), 2 * i);
        }
        // The read first: it waits for the child's write.
        let (got, wrote) = join2(r.read_async(), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            w.write_async(&1000).await
        })
        .await;
        wrote.unwrap();
        assert_eq!(got.unwrap(), 2000);
    });
    w.poison();
    p.join_timeout(LONG).unwrap();
}

/// Echoes one value from `a` to `b`, then poisons `c` a moment later.
fn echo_once_then_poison((a, b, c): (Reader<u64>, Writer<u64>, Reader<u64>)) {
    let v = a.read().unwrap();
    b.write(&v).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    c.poison();
}

/// Over channels shared with a child process: a dropped async read leaves
/// the write to the child; the child's poison ends a pending async read.
fn cancel_and_poison_across_processes(method: Method) {
    let (a, b, c) = (
        Channel::<u64>::new().unwrap(),
        Channel::<u64>::new().unwrap(),
        Channel::<u64>::new().unwrap(),
    );
    let mut p = Process::new(echo_once_then_poison, (a.reader(), b.writer(), c.reader()))
        .start_method(method.start());
    p.start().unwrap();
    let (ar, aw, br, cr) = (a.reader(), a.writer(), b.reader(), c.reader());
    run(async {
        // Our read is dropped while the child's read also waits: the
        // write then goes to the child, which echoes it.
        assert!(still_pending(ar.read_async(), 100).await);
        aw.write_async(&42).await.unwrap();
        assert_eq!(br.read_async().await.unwrap(), 42);
        let e = cr.read_async().await;
        assert!(matches!(e, Err(ChannelError::Poisoned)), "{e:?}");
    });
    p.join_timeout(LONG).unwrap();
}

both_methods!(
    rendezvous_with_a_process,
    cancel_and_poison_across_processes
);

#[test]
fn poison_ends_pending_reads_and_writes() {
    watchdog(LIMIT, || {
        let ch = threads_chan::<u32>();
        let (r, w) = (ch.reader(), ch.writer());
        let w2 = ch.writer();
        let poisoner = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            w2.poison();
        });
        run(async {
            let e = r.read_async().await;
            assert!(matches!(e, Err(ChannelError::Poisoned)), "{e:?}");
            // Already poisoned: at once, both directions.
            assert!(matches!(
                w.write_async(&1).await,
                Err(ChannelError::Poisoned)
            ));
            assert!(matches!(r.read_async().await, Err(ChannelError::Poisoned)));
        });
        poisoner.join().unwrap();

        let ch = threads_chan::<u32>();
        let w = ch.writer();
        let r = ch.reader();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            r.poison();
        });
        let e = run(w.write_async(&5));
        assert!(matches!(e, Err(ChannelError::Poisoned)), "{e:?}");
        t.join().unwrap();
    });
}

#[test]
fn retire_ends_pending_reads_and_writes() {
    watchdog(LIMIT, || {
        // The only writer retires while a read waits.
        let ch = threads_chan::<u32>();
        let r = ch.reader();
        let w = ch.writer();
        drop(ch);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            w.retire();
        });
        let e = run(r.read_async());
        assert!(matches!(e, Err(ChannelError::Retired)), "{e:?}");
        t.join().unwrap();

        // The only reader retires while a write waits.
        let ch = threads_chan::<u32>();
        let r = ch.reader();
        let w = ch.writer();
        drop(ch);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            r.retire();
        });
        let e = run(w.write_async(&1));
        assert!(matches!(e, Err(ChannelError::Retired)), "{e:?}");
        t.join().unwrap();
    });
}

#[test]
fn a_dropped_read_withdraws_its_offer() {
    watchdog(LIMIT, || {
        let ch = threads_chan::<u32>();
        let (r1, r2, w) = (ch.reader(), ch.reader(), ch.writer());
        run(async {
            assert!(still_pending(r1.read_async(), 100).await);
            assert_eq!(r1.waiting(), (0, 0), "the dropped read left an offer");
        });
        // The write goes to the other reader, not to the dropped future.
        let t = std::thread::spawn(move || r2.read_timeout(LONG));
        w.write(&42).unwrap();
        assert_eq!(t.join().unwrap().unwrap(), 42);
        assert!(matches!(
            r1.read_timeout(Duration::from_millis(100)),
            Err(ChannelError::Timeout)
        ));
    });
}

#[test]
fn cancelled_operations_lose_and_duplicate_nothing() {
    watchdog(LIMIT, || {
        const N: u64 = 2000;
        let ch = threads_chan::<u64>();
        let (r, w) = (ch.reader(), ch.writer());
        let writer = std::thread::spawn(move || {
            for i in 0..N {
                w.write(&i).unwrap();
                // Pauses far longer than the reads' timeouts, so reads
                // are dropped however the threads are scheduled.
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let mut got = Vec::new();
        let mut cancelled = 0;
        run(async {
            let mut n = 0u64;
            while (got.len() as u64) < N {
                // Timeouts of 0 to 99 µs: many reads are dropped, some
                // just as a writer completes them.
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let wait = Duration::from_micros((n >> 33) % 100);
                match tokio::time::timeout(wait, r.read_async()).await {
                    Ok(v) => got.push(v.unwrap()),
                    Err(_) => cancelled += 1,
                }
            }
        });
        writer.join().unwrap();
        let set: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(set.len(), got.len(), "a message was delivered twice");
        assert_eq!(set, (0..N).collect(), "a message was lost");
        // The writer is gone: the channel is retired, and empty.
        let rest = r.read_timeout(Duration::from_millis(50));
        assert!(
            matches!(rest, Err(ChannelError::Retired)),
            "a message was left over: {rest:?}"
        );
        assert!(
            cancelled > 0,
            "no read was cancelled: the test tested nothing"
        );

        // Writes: a dropped write either happened or did not; the reader
        // sees each value at most once and every value that was reported
        // written.
        let ch = threads_chan::<u64>();
        let (r, w) = (ch.reader(), ch.writer());
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Ok(v) = r.read() {
                seen.push(v);
            }
            seen
        });
        let mut written = Vec::new();
        run(async {
            let mut n = 7u64;
            let mut i = 0u64;
            while (written.len() as u64) < N {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let wait = Duration::from_micros((n >> 33) % 100);
                if let Ok(v) = tokio::time::timeout(wait, w.write_async(&i)).await {
                    v.unwrap();
                    written.push(i);
                }
                i += 1;
            }
        });
        drop(w);
        drop(ch);
        let seen = reader.join().unwrap();
        let seen_set: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(seen_set.len(), seen.len(), "a write was delivered twice");
        for v in &written {
            assert!(seen_set.contains(v), "write {v} was reported but not read");
        }
    });
}

#[test]
fn cancelled_reads_of_spilled_messages_lose_nothing_and_leave_nothing() {
    watchdog(LIMIT, || {
        // Messages larger than the inline slot travel in segments of their
        // own; a read dropped after taking one gives it back.
        const N: u32 = 300;
        let ch = Channel::builder()
            .slot_size(256)
            .build::<(u32, Vec<u8>)>()
            .unwrap();
        let (r, w) = (ch.reader(), ch.writer());
        let tag = r.spill_tag();
        let writer = std::thread::spawn(move || {
            for i in 0..N {
                w.write(&(i, vec![i as u8; 1000])).unwrap();
            }
        });
        let mut got = BTreeSet::new();
        run(async {
            let mut n = 3u64;
            while (got.len() as u32) < N {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let wait = Duration::from_micros((n >> 33) % 200);
                if let Ok(v) = tokio::time::timeout(wait, r.read_async()).await {
                    let (i, body) = v.unwrap();
                    assert_eq!(body, vec![i as u8; 1000]);
                    assert!(got.insert(i), "message {i} was delivered twice");
                }
            }
        });
        writer.join().unwrap();
        assert_eq!(got, (0..N).collect());
        drop((r, ch));
        let left: Vec<_> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(&tag))
            .collect();
        assert!(left.is_empty(), "spill segments left behind: {left:?}");
    });
}

#[test]
fn a_slot_too_small_for_a_spill_descriptor_is_a_typed_error() {
    // The descriptor naming a spilled message's segment is larger than
    // this slot: the write fails at once, and leaves no segment.
    let ch = Channel::builder().slot_size(40).build::<Vec<u8>>().unwrap();
    let (r, w) = (ch.reader(), ch.writer());
    let tag = r.spill_tag();
    let e = run(w.write_async(&vec![1; 1000]));
    assert!(matches!(e, Err(ChannelError::TooLarge { .. })), "{e:?}");
    assert!(matches!(
        w.write(&vec![1; 1000]),
        Err(ChannelError::TooLarge { .. })
    ));
    let left = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&tag))
        .count();
    assert_eq!(left, 0, "a spill segment was left behind");
}

#[test]
fn many_tasks_on_one_channel() {
    watchdog(LIMIT, || {
        // Two threads with a runtime each, 100 tasks on each: more waiting
        // readers than one futex_waitv call can watch.
        const TASKS: u64 = 100;
        const EACH: u64 = 5;
        const TOTAL: u64 = 2 * TASKS * EACH;
        let ch = threads_chan::<u64>();
        let out = threads_chan::<u64>();
        let w = ch.writer();
        let writer = std::thread::spawn(move || {
            for i in 0..TOTAL {
                w.write(&i).unwrap();
            }
        });
        let r = out.reader();
        let collector =
            std::thread::spawn(move || (0..TOTAL).map(|_| r.read().unwrap()).collect::<Vec<_>>());
        let runners: Vec<_> = (0..2)
            .map(|_| {
                let ends: Vec<_> = (0..TASKS).map(|_| (ch.reader(), out.writer())).collect();
                std::thread::spawn(move || {
                    run(async move {
                        let tasks: Vec<_> = ends
                            .into_iter()
                            .map(|(r, w)| {
                                tokio::spawn(async move {
                                    let mut mine = Vec::new();
                                    for _ in 0..EACH {
                                        let v = r.read_async().await.unwrap();
                                        // Many writers on the other channel too.
                                        w.write_async(&v).await.unwrap();
                                        mine.push(v);
                                    }
                                    mine
                                })
                            })
                            .collect();
                        let mut all = Vec::new();
                        for t in tasks {
                            all.extend(t.await.unwrap());
                        }
                        all
                    })
                })
            })
            .collect();
        let got: Vec<u64> = runners
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        writer.join().unwrap();
        let collected = collector.join().unwrap();
        let want: BTreeSet<u64> = (0..TOTAL).collect();
        assert_eq!(got.len() as u64, TOTAL);
        assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), want);
        assert_eq!(collected.iter().copied().collect::<BTreeSet<_>>(), want);
    });
}

/// Reads polled once and then dropped (each first poll posts an offer on
/// the polling thread, spins, and withdraws it or hands it to the helper
/// thread) while a thread writes as fast as it can: every value arrives
/// exactly once (a given-back value may come after later ones).
#[test]
fn reads_dropped_after_one_poll_race_a_busy_writer_without_loss() {
    watchdog(LIMIT, || {
        const N: u64 = 3000;
        let ch = threads_chan::<u64>();
        let (r, w) = (ch.reader(), ch.writer());
        let t = std::thread::spawn(move || {
            for i in 0..N {
                w.write(&i).unwrap();
            }
        });
        let mut got = Vec::new();
        run(async {
            while (got.len() as u64) < N {
                if got.len() % 2 == 0 {
                    let mut fut = std::pin::pin!(r.read_async());
                    let once =
                        std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx)))
                            .await;
                    if let std::task::Poll::Ready(v) = once {
                        got.push(v.unwrap());
                    }
                } else {
                    got.push(r.read_async().await.unwrap());
                }
            }
        });
        t.join().unwrap();
        got.sort_unstable();
        assert_eq!(got, (0..N).collect::<Vec<_>>());
    });
}
