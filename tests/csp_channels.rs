//! Channel behaviours from PyCSP's test suite (`commtest.py`,
//! `buffertest.py`, `poisontest.py`: one-to-one, any-to-any, buffered,
//! poison and retire), rewritten as Rust tests over threads, for both the
//! private and the shared-memory flavor.

mod common;
mod csp_common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::watchdog;
use csp_common::{FLAVORS, channel};
use multiproc::csp::{Channel, ChannelError, Reader, Writer};

fn writer(out: Writer<(u32, u32)>, id: u32, n: u32) -> Result<(), ChannelError> {
    for i in 0..n {
        out.write(&(id, i))?;
    }
    Ok(())
}

fn reader_until_retired(inp: Reader<(u32, u32)>) -> Vec<(u32, u32)> {
    let mut got = Vec::new();
    loop {
        match inp.read() {
            Ok(v) => got.push(v),
            Err(ChannelError::Retired) => return got,
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[test]
fn one_to_one_in_order() {
    for flavor in FLAVORS {
        for buffer in [0, 1, 5] {
            watchdog(Duration::from_secs(30), move || {
                let ch = channel::<(u32, u32)>(flavor, buffer);
                let (r, w) = (ch.reader(), ch.writer());
                let t = std::thread::spawn(move || writer(w, 1, 100));
                let got = reader_until_retired(r);
                t.join().unwrap().unwrap();
                assert_eq!(
                    got,
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
        for buffer in [0, 20] {
            watchdog(Duration::from_secs(60), move || {
                let ch = channel::<(u32, u32)>(flavor, buffer);
                let mut ts = Vec::new();
                for id in 0..4 {
                    let w = ch.writer();
                    ts.push(std::thread::spawn(move || writer(w, id, 200).unwrap()));
                }
                let readers: Vec<_> = (0..4)
                    .map(|_| {
                        let r = ch.reader();
                        std::thread::spawn(move || reader_until_retired(r))
                    })
                    .collect();
                drop(ch);
                for t in ts {
                    t.join().unwrap();
                }
                let mut all = Vec::new();
                for r in readers {
                    all.extend(r.join().unwrap());
                }
                let set: BTreeSet<_> = all.iter().copied().collect();
                assert_eq!(all.len(), 800, "{flavor:?}/{buffer}");
                assert_eq!(set.len(), 800, "duplicates: {flavor:?}/{buffer}");
                // Each writer's values arrive in its own order per reader.
                for id in 0..4 {
                    assert!(set.contains(&(id, 199)));
                }
            });
        }
    }
}

#[test]
fn rendezvous_write_waits_for_a_reader() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let ch = channel::<u8>(flavor, 0);
            let w = ch.writer();
            let _r = ch.reader();
            assert!(matches!(
                w.write_timeout(&1, Duration::from_millis(50)),
                Err(ChannelError::Timeout)
            ));
        });
    }
}

#[test]
fn buffered_write_completes_until_full() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let ch = channel::<u8>(flavor, 3);
            let (r, w) = (ch.reader(), ch.writer());
            for i in 0..3 {
                w.write(&i).unwrap();
            }
            assert!(matches!(
                w.write_timeout(&9, Duration::from_millis(50)),
                Err(ChannelError::Timeout)
            ));
            assert_eq!(r.read().unwrap(), 0);
            w.write(&3).unwrap();
            assert_eq!(
                (r.read().unwrap(), r.read().unwrap(), r.read().unwrap()),
                (1, 2, 3)
            );
            assert!(matches!(
                r.read_timeout(Duration::from_millis(20)),
                Err(ChannelError::Timeout)
            ));
        });
    }
}

#[test]
fn poison_wakes_blocked_readers_and_writers() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let ch = channel::<u32>(flavor, 0);
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    let r = ch.reader();
                    std::thread::spawn(move || r.read())
                })
                .collect();
            let other = channel::<u32>(flavor, 0);
            let _keep = other.reader();
            let w = other.writer();
            let wt = std::thread::spawn(move || w.write(&5));
            std::thread::sleep(Duration::from_millis(50));
            ch.writer().poison();
            other.poison();
            for r in readers {
                assert!(matches!(r.join().unwrap(), Err(ChannelError::Poisoned)));
            }
            assert!(matches!(wt.join().unwrap(), Err(ChannelError::Poisoned)));
            // Every later operation fails too, on every end.
            assert!(matches!(ch.reader().read(), Err(ChannelError::Poisoned)));
            assert!(matches!(ch.writer().write(&1), Err(ChannelError::Poisoned)));
            assert!(ch.is_poisoned());
        });
    }
}

#[test]
fn poison_discards_buffered_values() {
    for flavor in FLAVORS {
        let ch = channel::<u32>(flavor, 4);
        let (r, w) = (ch.reader(), ch.writer());
        w.write(&1).unwrap();
        w.poison();
        assert!(matches!(r.read(), Err(ChannelError::Poisoned)));
    }
}

#[test]
fn retiring_all_writers_lets_readers_drain_then_retires() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let ch = channel::<u32>(flavor, 5);
            let r = ch.reader();
            let w1 = ch.writer();
            let w2 = w1.clone();
            w1.write(&1).unwrap();
            w2.write(&2).unwrap();
            w1.retire();
            assert!(!ch.is_retired(), "one writer is left");
            w2.write(&3).unwrap();
            drop(w2);
            assert!(ch.is_retired());
            assert_eq!(r.read().unwrap(), 1);
            assert_eq!(r.read().unwrap(), 2);
            assert_eq!(r.read().unwrap(), 3);
            assert!(matches!(r.read(), Err(ChannelError::Retired)));
        });
    }
}

#[test]
fn retiring_all_readers_fails_writers_at_once() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let ch = channel::<u32>(flavor, 0);
            let r = ch.reader();
            let w = ch.writer();
            let t = std::thread::spawn(move || w.write(&1));
            std::thread::sleep(Duration::from_millis(30));
            r.retire();
            assert!(matches!(t.join().unwrap(), Err(ChannelError::Retired)));
        });
    }
}

#[test]
fn retire_wakes_a_blocked_reader() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let ch = channel::<u32>(flavor, 0);
            let r = ch.reader();
            let w = ch.writer();
            let t = std::thread::spawn(move || r.read());
            std::thread::sleep(Duration::from_millis(30));
            drop(w);
            assert!(matches!(t.join().unwrap(), Err(ChannelError::Retired)));
        });
    }
}

#[test]
fn too_large_messages_are_refused_with_the_limit() {
    let ch: Channel<Vec<u8>> = Channel::builder().max_message(1000).build().unwrap();
    let w = ch.writer();
    match w.write(&vec![0u8; 5000]) {
        Err(ChannelError::TooLarge { len, max }) => {
            assert!(len > 5000);
            assert_eq!(max, 1000);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn large_messages_within_the_limit_travel_whole() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let ch: Channel<Vec<u8>> = match flavor {
                csp_common::Flavor::Threads => Channel::builder()
                    .max_message(4 << 20)
                    .threads_only()
                    .build(),
                csp_common::Flavor::Shared => {
                    Channel::builder().max_message(4 << 20).buffer(2).build()
                }
            }
            .unwrap();
            let (r, w) = (ch.reader(), ch.writer());
            let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
            let expect = big.clone();
            let t = std::thread::spawn(move || w.write(&big));
            assert_eq!(r.read().unwrap(), expect);
            t.join().unwrap().unwrap();
        });
    }
}

#[test]
fn threads_only_ends_refuse_to_travel() {
    let ch: Channel<u8> = Channel::builder().threads_only().build().unwrap();
    fn child(_r: Reader<u8>) {}
    let mut p = multiproc::Process::new(child, ch.reader());
    assert!(matches!(p.start(), Err(multiproc::StartError::Codec(_))));
}

#[test]
fn many_waiters_beyond_the_record_table_still_complete() {
    watchdog(Duration::from_secs(60), || {
        let ch: Channel<u32> = Channel::builder().waiters(2).build().unwrap();
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let w = ch.writer();
                std::thread::spawn(move || w.write(&i))
            })
            .collect();
        let r = ch.reader();
        let mut got: Vec<u32> = (0..8).map(|_| r.read().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        for w in writers {
            w.join().unwrap().unwrap();
        }
    });
}
