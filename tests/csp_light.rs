//! Lightweight CSP processes (`CspProcess::light`): PyCSP's channel and
//! alternation behaviours (`commtest.py`, `buffertest.py`,
//! `poisontest.py`, `alttest.py`, as in `csp_channels.rs` and
//! `csp_alternation.rs`) run by processes multiplexed on the worker
//! threads, networks mixing them with threads and OS processes, a panic,
//! and a network of 100,000 processes.

mod common;
mod csp_common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::watchdog;
use csp_common::{FLAVORS, channel};
use multiproc::csp::{
    Alternation, Channel, ChannelError, CspProcess, Fair, Outcome, ProcessError, Reader, Writer,
    io, parallel, sequence, sleep, spawn,
};

const LIMIT: Duration = Duration::from_secs(60);

fn writer((out, id, n): (Writer<(u32, u32)>, u32, u32)) -> Result<Vec<(u32, u32)>, ChannelError> {
    for i in 0..n {
        out.write(&(id, i))?;
    }
    Ok(Vec::new())
}

fn reader_until_retired(inp: Reader<(u32, u32)>) -> Result<Vec<(u32, u32)>, ChannelError> {
    let mut got = Vec::new();
    loop {
        match inp.read() {
            Ok(v) => got.push(v),
            Err(ChannelError::Retired) => return Ok(got),
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn one_to_one_in_order() {
    for flavor in FLAVORS {
        for buffer in [0, 1, 5] {
            watchdog(LIMIT, move || {
                let ch = channel::<(u32, u32)>(flavor, buffer);
                let out = parallel([
                    CspProcess::light(writer, (ch.writer(), 1, 100)),
                    CspProcess::light(reader_until_retired, ch.reader()),
                ])
                .unwrap();
                drop(ch);
                assert_eq!(
                    out[1].clone().value().unwrap(),
                    (0..100).map(|i| (1, i)).collect::<Vec<_>>(),
                    "{flavor:?}/{buffer}"
                );
            });
        }
    }
}

#[test]
fn any_to_any_delivers_everything_once() {
    for flavor in FLAVORS {
        for buffer in [0, 3] {
            watchdog(LIMIT, move || {
                let ch = channel::<(u32, u32)>(flavor, buffer);
                let mut procs = Vec::new();
                for id in 0..5 {
                    procs.push(CspProcess::light(writer, (ch.writer(), id, 200)));
                }
                for _ in 0..4 {
                    procs.push(CspProcess::light(reader_until_retired, ch.reader()));
                }
                drop(ch);
                let out = parallel(procs).unwrap();
                let mut all = Vec::new();
                for o in out {
                    all.extend(o.value().unwrap());
                }
                let set: BTreeSet<_> = all.iter().copied().collect();
                assert_eq!(all.len(), 1000, "{flavor:?}/{buffer}");
                assert_eq!(set.len(), 1000, "{flavor:?}/{buffer}");
            });
        }
    }
}

#[test]
fn rendezvous_write_waits_for_a_reader() {
    for flavor in FLAVORS {
        watchdog(LIMIT, move || {
            let ch = channel::<u32>(flavor, 0);
            let flag = Channel::builder().threads_only().build::<u32>().unwrap();
            // The writer reports after its write returned; the reader
            // checks that no report came before it read.
            let out = parallel([
                CspProcess::light(
                    |(w, done): (Writer<u32>, Writer<u32>)| {
                        w.write(&1)?;
                        done.write(&1)?;
                        Ok(true)
                    },
                    (ch.writer(), flag.writer()),
                ),
                CspProcess::light(
                    |(r, done): (Reader<u32>, Reader<u32>)| {
                        sleep(Duration::from_millis(50));
                        let early = Alternation::new()
                            .input(&done, |_| true)
                            .skip(|| false)
                            .pri_select()?;
                        let v = r.read()?;
                        done.read()?;
                        Ok(!early && v == 1)
                    },
                    (ch.reader(), flag.reader()),
                ),
            ])
            .unwrap();
            assert_eq!(out[1], Outcome::Done(true), "{flavor:?}");
        });
    }
}

#[test]
fn buffered_write_completes_until_full() {
    for flavor in FLAVORS {
        watchdog(LIMIT, move || {
            let ch = channel::<u32>(flavor, 3);
            let out = parallel([CspProcess::light(
                |w: Writer<u32>| {
                    for i in 0..3 {
                        w.write(&i)?;
                    }
                    // Full: a fourth write times out.
                    Ok(w.write_timeout(&3, Duration::from_millis(30)))
                },
                ch.writer(),
            )])
            .unwrap();
            assert!(
                matches!(out[0], Outcome::Done(Err(ChannelError::Timeout))),
                "{flavor:?}"
            );
            let r = ch.reader();
            for i in 0..3 {
                assert!(matches!(r.read(), Ok(v) if v == i));
            }
        });
    }
}

fn blocked_reader(r: Reader<u32>) -> Result<u32, ChannelError> {
    r.read()
}

fn blocked_writer(w: Writer<u32>) -> Result<u32, ChannelError> {
    w.write(&1).map(|_| 0)
}

#[test]
fn poison_wakes_blocked_readers_and_writers() {
    for flavor in FLAVORS {
        watchdog(LIMIT, move || {
            let a = channel::<u32>(flavor, 0);
            let b = channel::<u32>(flavor, 0);
            let running = spawn([
                CspProcess::light(blocked_reader, a.reader()),
                CspProcess::light(blocked_reader, a.reader()),
                CspProcess::light(blocked_writer, b.writer()),
            ]);
            sleep(Duration::from_millis(50));
            a.poison();
            b.poison();
            let out = running.join().unwrap();
            assert!(
                out.iter().all(|o| *o == Outcome::Poisoned),
                "{flavor:?}: {out:?}"
            );
        });
    }
}

#[test]
fn poison_propagates_through_a_pipeline() {
    // source -> stage -> stage -> sink; the sink poisons its input after
    // 10 values, and every process ends by poison.
    fn stage((r, w): (Reader<u32>, Writer<u32>)) -> Result<u32, ChannelError> {
        loop {
            w.write(&(r.read()? + 1))?;
        }
    }
    for flavor in FLAVORS {
        watchdog(LIMIT, move || {
            let ch: Vec<Channel<u32>> = (0..4).map(|_| channel(flavor, 0)).collect();
            let out = parallel([
                CspProcess::light(
                    |w: Writer<u32>| loop {
                        w.write(&0)?;
                    },
                    ch[0].writer(),
                ),
                CspProcess::light(stage, (ch[0].reader(), ch[1].writer())),
                CspProcess::light(stage, (ch[1].reader(), ch[2].writer())),
                CspProcess::light(stage, (ch[2].reader(), ch[3].writer())),
                CspProcess::light(
                    |r: Reader<u32>| {
                        for _ in 0..10 {
                            assert_eq!(r.read()?, 3);
                        }
                        r.poison();
                        Ok(10)
                    },
                    ch[3].reader(),
                ),
            ])
            .unwrap();
            assert_eq!(out[4], Outcome::Done(10));
            assert!(out[..4].iter().all(|o| *o == Outcome::Poisoned), "{out:?}");
        });
    }
}

#[test]
fn retire_propagates_and_readers_drain_first() {
    for flavor in FLAVORS {
        watchdog(LIMIT, move || {
            let ch = channel::<(u32, u32)>(flavor, 4);
            let out = parallel([
                CspProcess::light(writer, (ch.writer(), 1, 50)),
                CspProcess::light(writer, (ch.writer(), 2, 50)),
                CspProcess::light(reader_until_retired, ch.reader()),
            ])
            .unwrap();
            assert_eq!(out[2].clone().value().unwrap().len(), 100, "{flavor:?}");
            // Every reader retired: a writer now fails at once.
            assert!(matches!(
                ch.writer().write(&(0, 0)),
                Err(ChannelError::Retired)
            ));
        });
    }
}

#[test]
fn alternation_with_every_guard_kind() {
    for flavor in FLAVORS {
        watchdog(LIMIT, move || {
            let inp = channel::<u32>(flavor, 0);
            let out = channel::<u32>(flavor, 0);
            let res = parallel([
                CspProcess::light(
                    |(i, o): (Reader<u32>, Writer<u32>)| {
                        let mut log = Vec::new();
                        // Skip: nothing ready yet.
                        log.push(
                            Alternation::new()
                                .input(&i, |_| 0)
                                .skip(|| 1)
                                .pri_select()?,
                        );
                        // Timeout: nothing comes in 20 ms.
                        log.push(
                            Alternation::new()
                                .input_if(false, &i, |_| 0)
                                .timeout(Duration::from_millis(20), || 2)
                                .pri_select()?,
                        );
                        // Input, then output, each with a partner waiting.
                        for _ in 0..2 {
                            log.push(
                                Alternation::new()
                                    .input(&i, |v| 10 + v)
                                    .output(&o, &7, || 20)
                                    .timeout(Duration::from_secs(20), || 99)
                                    .select()?,
                            );
                        }
                        Ok(log)
                    },
                    (inp.reader(), out.writer()),
                ),
                CspProcess::light(
                    |(w, r): (Writer<u32>, Reader<u32>)| {
                        sleep(Duration::from_millis(60));
                        w.write(&5)?;
                        assert_eq!(r.read()?, 7);
                        Ok(Vec::new())
                    },
                    (inp.writer(), out.reader()),
                ),
            ])
            .unwrap();
            let mut log = res[0].clone().value().unwrap();
            assert_eq!(&log[..2], &[1, 2], "{flavor:?}");
            log[2..].sort();
            assert_eq!(&log[2..], &[15, 20], "{flavor:?}");
        });
    }
}

fn always_writing((out, id): (Writer<u32>, u32)) -> Result<Vec<u32>, ChannelError> {
    loop {
        out.write(&id)?;
    }
}

#[test]
fn priority_and_fair_selection() {
    for flavor in FLAVORS {
        watchdog(LIMIT, move || {
            let a = channel::<u32>(flavor, 0);
            let b = channel::<u32>(flavor, 0);
            let out = parallel([
                CspProcess::light(always_writing, (a.writer(), 0)),
                CspProcess::light(always_writing, (b.writer(), 1)),
                CspProcess::light(
                    |(a, b): (Reader<u32>, Reader<u32>)| {
                        let mut pri = [0u32; 2];
                        for _ in 0..200 {
                            let k = Alternation::new()
                                .input(&a, |v| v)
                                .input(&b, |v| v)
                                .pri_select()?;
                            pri[k as usize] += 1;
                        }
                        let mut fair = [0u32; 2];
                        let mut f = Fair::new();
                        for _ in 0..200 {
                            let k = Alternation::new()
                                .input(&a, |v| v)
                                .input(&b, |v| v)
                                .fair_select(&mut f)?;
                            fair[k as usize] += 1;
                        }
                        a.poison();
                        b.poison();
                        Ok(vec![pri[0], pri[1], fair[0], fair[1]])
                    },
                    (a.reader(), b.reader()),
                ),
            ])
            .unwrap();
            let c = out[2].clone().value().unwrap();
            // Both writers offer all the time: priority serves the first,
            // fair selection both about equally.
            assert!(c[0] >= 190, "{flavor:?}: priority {c:?}");
            assert!(c[2] >= 80 && c[3] >= 80, "{flavor:?}: fair {c:?}");
        });
    }
}

fn os_doubler((r, w): (Reader<u32>, Writer<u32>)) -> Result<u32, ChannelError> {
    let mut n = 0;
    loop {
        match r.read() {
            Ok(x) => w.write(&(2 * x))?,
            Err(ChannelError::Retired) => return Ok(n),
            Err(e) => return Err(e),
        }
        n += 1;
    }
}

#[test]
fn mixed_network_of_lightweight_processes_threads_and_an_os_process() {
    // light source -> thread (+1) -> OS process (×2) -> light sink.
    watchdog(LIMIT, || {
        let a = Channel::<u32>::new().unwrap();
        let b = Channel::<u32>::new().unwrap();
        let c = Channel::<u32>::new().unwrap();
        let out = parallel([
            CspProcess::light(
                |w: Writer<u32>| {
                    for i in 0..100 {
                        w.write(&i)?;
                    }
                    Ok(0)
                },
                a.writer(),
            ),
            CspProcess::thread(
                |(r, w): (Reader<u32>, Writer<u32>)| {
                    while let Ok(x) = r.read() {
                        w.write(&(x + 1))?;
                    }
                    Ok(0)
                },
                (a.reader(), b.writer()),
            ),
            CspProcess::function(os_doubler, (b.reader(), c.writer()))
                .start_method(multiproc::StartMethod::Spawn),
            CspProcess::light(
                |r: Reader<u32>| {
                    let mut sum = 0;
                    while let Ok(x) = r.read() {
                        sum += x;
                    }
                    Ok(sum)
                },
                c.reader(),
            ),
        ])
        .unwrap();
        drop((a, b, c));
        assert_eq!(out[2], Outcome::Done(100));
        assert_eq!(out[3], Outcome::Done((1..=100).map(|x| 2 * x).sum()));
    });
}

#[test]
fn a_lightweight_process_waits_for_a_thread_and_an_os_process() {
    // A lightweight process runs a nested network of a thread and an OS
    // process and joins it without stalling its worker: a sibling
    // lightweight process on the same worker keeps answering meanwhile.
    watchdog(LIMIT, || {
        let ping = Channel::builder().threads_only().build::<u32>().unwrap();
        let out = parallel([
            CspProcess::light(
                |w: Writer<u32>| {
                    let inner = Channel::<u32>::new().unwrap();
                    let got = parallel([
                        CspProcess::function(
                            |w: Writer<u32>| {
                                std::thread::sleep(Duration::from_millis(50));
                                w.write(&41).map(|_| 0)
                            },
                            inner.writer(),
                        )
                        .start_method(multiproc::StartMethod::Spawn),
                        CspProcess::thread(|r: Reader<u32>| r.read(), inner.reader()),
                    ])
                    .map_err(|e| {
                        ChannelError::Codec(multiproc::error::CodecError::Decode(e.to_string()))
                    })?;
                    for i in 0..10 {
                        w.write(&i)?;
                    }
                    Ok(got[1].clone().value().unwrap() + 1)
                },
                ping.writer(),
            ),
            CspProcess::light(
                |r: Reader<u32>| {
                    let mut n = 0;
                    while r.read().is_ok() {
                        n += 1;
                    }
                    Ok(n)
                },
                ping.reader(),
            ),
        ])
        .unwrap();
        assert_eq!(out, [Outcome::Done(42), Outcome::Done(10)]);
    });
}

fn panicker(_ends: (Reader<u32>, Writer<u32>)) -> Result<u32, ChannelError> {
    common::quiet_panics();
    panic!("boom in a lightweight process")
}

fn counting_sink(r: Reader<u32>) -> Result<u32, ChannelError> {
    let mut n = 0;
    while r.read().is_ok() {
        n += 1;
    }
    Ok(n)
}

#[test]
fn a_panic_becomes_an_error_and_poisons_the_network() {
    for flavor in FLAVORS {
        watchdog(LIMIT, move || {
            let c = channel::<u32>(flavor, 0);
            let d = channel::<u32>(flavor, 0);
            let r = parallel([
                CspProcess::light(panicker, (c.reader(), d.writer())).name("boomer"),
                CspProcess::light(blocked_writer, c.writer()),
                CspProcess::light(counting_sink, d.reader()),
            ]);
            match r {
                Err(ProcessError::Panicked { name, message }) => {
                    assert_eq!(name, "boomer");
                    assert!(message.contains("boom"), "{message}");
                }
                other => panic!("{flavor:?}: expected a panic error, got {other:?}"),
            }
            assert!(c.is_poisoned() && d.is_poisoned());
        });
    }
}

#[test]
fn io_hands_blocking_calls_off_the_worker() {
    // Eight lightweight processes block in `io` on a barrier that only
    // opens when a ninth party arrives: a sink that must first receive
    // 1000 values from a writer, both lightweight processes of the same
    // worker. Were `io` to block the worker, the sink could never run and
    // the watchdog would fire.
    watchdog(LIMIT, || {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(9));
        let ch = Channel::builder().threads_only().build::<u32>().unwrap();
        let mut procs: Vec<CspProcess<u32>> = (0..8)
            .map(|i| {
                let b = barrier.clone();
                CspProcess::light(
                    move |()| {
                        Ok(io(move || {
                            b.wait();
                            i
                        }))
                    },
                    (),
                )
            })
            .collect();
        procs.push(CspProcess::light(
            |w: Writer<u32>| {
                for i in 0..1000 {
                    w.write(&i)?;
                }
                Ok(0)
            },
            ch.writer(),
        ));
        let b = barrier.clone();
        procs.push(CspProcess::light(
            move |r: Reader<u32>| {
                let n = counting_sink(r)?;
                io(move || b.wait());
                Ok(n)
            },
            ch.reader(),
        ));
        let out = parallel(procs).unwrap();
        drop(ch);
        assert_eq!(out[9], Outcome::Done(1000));
        let ids: Vec<u32> = out[..8]
            .iter()
            .map(|o| o.clone().value().unwrap())
            .collect();
        assert_eq!(ids, (0..8).collect::<Vec<_>>());
        // A panic inside `io` resumes in the process.
        let r = parallel([CspProcess::light(
            |()| {
                common::quiet_panics();
                Ok(io(|| -> u32 { panic!("io boom") }))
            },
            (),
        )]);
        assert!(
            matches!(r, Err(ProcessError::Panicked { message, .. }) if message.contains("io boom"))
        );
    });
}

#[test]
fn sequence_and_nested_parallel() {
    watchdog(LIMIT, || {
        let out = sequence([
            CspProcess::light(|x: u32| Ok(x), 1),
            CspProcess::light(
                |x: u32| {
                    let inner =
                        parallel((0..10).map(|i| CspProcess::light(move |y: u32| Ok(y + i), x)))
                            .map_err(|e| {
                                ChannelError::Codec(multiproc::error::CodecError::Decode(
                                    e.to_string(),
                                ))
                            })?;
                    Ok(inner.into_iter().filter_map(|o| o.value()).sum())
                },
                2,
            ),
        ])
        .unwrap();
        assert_eq!(out, [Outcome::Done(1), Outcome::Done(20 + 45)]);
    });
}

#[test]
fn a_network_of_100_000_processes_terminates_by_retire() {
    // A chain of 100,000 lightweight processes: each forwards what it
    // reads and retires when its input retires; the source sends 3 values
    // and returns (its end retires), and the retirement travels the chain.
    const N: usize = 100_000;
    watchdog(Duration::from_secs(300), || {
        fn relay((r, w): (Reader<u32>, Writer<u32>)) -> Result<u32, ChannelError> {
            loop {
                w.write(&(r.read()? + 1))?;
            }
        }
        let small = || {
            Channel::builder()
                .threads_only()
                .waiters(2)
                .slot_size(16)
                .build::<u32>()
                .unwrap()
        };
        let chans: Vec<Channel<u32>> = (0..=N).map(|_| small()).collect();
        let mut procs = Vec::with_capacity(N + 2);
        procs.push(CspProcess::light(
            |w: Writer<u32>| {
                for i in 0..3 {
                    w.write(&i)?;
                }
                Ok(0)
            },
            chans[0].writer(),
        ));
        for k in 0..N {
            procs.push(CspProcess::light(
                relay,
                (chans[k].reader(), chans[k + 1].writer()),
            ));
        }
        procs.push(CspProcess::light(
            |r: Reader<u32>| {
                let mut sum = 0;
                while let Ok(x) = r.read() {
                    sum += x;
                }
                Ok(sum)
            },
            chans[N].reader(),
        ));
        drop(chans);
        let out = parallel(procs).unwrap();
        assert_eq!(out[N + 1], Outcome::Done(3 * N as u32 + 3));
        assert!(out[1..=N].iter().all(|o| *o == Outcome::Retired));
    });
}
