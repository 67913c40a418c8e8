//! Alternation behaviours from PyCSP's test suite (`selecttest.py`,
//! `guardtest.py`, `buffertest.py`'s alting readers and writers,
//! `poisontest.py`'s `Any_Alting2Any_Alting`), rewritten as Rust tests
//! over threads for both in-memory flavors.

mod common;
mod csp_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::watchdog;
use csp_common::{FLAVORS, channel};
use multiproc::csp::{Alternation, ChannelError, Fair, Reader, Writer};

fn writer(out: Writer<(u32, u32)>, id: u32, n: u32) {
    for i in 0..n {
        out.write(&(id, i)).unwrap();
    }
}

#[test]
fn any_to_one_alting_reader_gets_every_message_once() {
    for flavor in FLAVORS {
        for buffer in [0, 3] {
            watchdog(Duration::from_secs(60), move || {
                let chans: Vec<_> = (0..4)
                    .map(|_| channel::<(u32, u32)>(flavor, buffer))
                    .collect();
                let ts: Vec<_> = chans
                    .iter()
                    .enumerate()
                    .map(|(id, c)| {
                        let w = c.writer();
                        std::thread::spawn(move || writer(w, id as u32, 50))
                    })
                    .collect();
                let rs: Vec<Reader<(u32, u32)>> = chans.iter().map(|c| c.reader()).collect();
                let mut got = Vec::new();
                for _ in 0..200 {
                    let v = Alternation::new()
                        .input(&rs[0], |v| v)
                        .input(&rs[1], |v| v)
                        .input(&rs[2], |v| v)
                        .input(&rs[3], |v| v)
                        .select()
                        .unwrap();
                    got.push(v);
                }
                for t in ts {
                    t.join().unwrap();
                }
                let set: BTreeSet<_> = got.iter().copied().collect();
                assert_eq!(set.len(), 200, "{flavor:?}/{buffer}");
                // Per writer, values arrive in order.
                for id in 0..4 {
                    let seq: Vec<u32> = got.iter().filter(|v| v.0 == id).map(|v| v.1).collect();
                    assert_eq!(seq, (0..50).collect::<Vec<_>>());
                }
            });
        }
    }
}

#[test]
fn pri_select_takes_the_first_ready_guard_in_order() {
    for flavor in FLAVORS {
        let a = channel::<u32>(flavor, 1);
        let b = channel::<u32>(flavor, 1);
        let (ra, rb) = (a.reader(), b.reader());
        a.writer().write(&1).unwrap();
        b.writer().write(&2).unwrap();
        let first = Alternation::new()
            .input(&rb, |x| x)
            .input(&ra, |x| x)
            .pri_select()
            .unwrap();
        assert_eq!(first, 2);
        let second = Alternation::new()
            .input(&rb, |x| x)
            .input(&ra, |x| x)
            .pri_select()
            .unwrap();
        assert_eq!(second, 1);
    }
}

#[test]
fn fair_select_serves_every_ready_guard() {
    for flavor in FLAVORS {
        // Three channels that stay ready: pri_select would always take the
        // first; fair_select takes them in turn.
        let chans: Vec<_> = (0..3).map(|_| channel::<u32>(flavor, 100)).collect();
        let ws: Vec<_> = chans.iter().map(|c| c.writer()).collect();
        for (i, w) in ws.iter().enumerate() {
            for _ in 0..100 {
                w.write(&(i as u32)).unwrap();
            }
        }
        let rs: Vec<_> = chans.iter().map(|c| c.reader()).collect();
        let mut fair = Fair::new();
        let mut picks = Vec::new();
        for _ in 0..90 {
            let i = Alternation::new()
                .input(&rs[0], |x| x)
                .input(&rs[1], |x| x)
                .input(&rs[2], |x| x)
                .fair_select(&mut fair)
                .unwrap();
            picks.push(i);
        }
        let expect: Vec<u32> = (0..90).map(|k| k % 3).collect();
        assert_eq!(picks, expect);
        let first = Alternation::new()
            .input(&rs[0], |x| x)
            .input(&rs[1], |x| x)
            .pri_select()
            .unwrap();
        assert_eq!(first, 0);
    }
}

#[test]
fn skip_guard_is_chosen_when_nothing_is_ready() {
    for flavor in FLAVORS {
        let a = channel::<u32>(flavor, 0);
        let _w = a.writer();
        let r = a.reader();
        let got = Alternation::new()
            .input(&r, |_| "input")
            .skip(|| "skip")
            .pri_select()
            .unwrap();
        assert_eq!(got, "skip");
        // A ready guard before the skip guard wins.
        let b = channel::<u32>(flavor, 1);
        let rb = b.reader();
        b.writer().write(&3).unwrap();
        let got = Alternation::new()
            .input(&rb, |_| "input")
            .skip(|| "skip")
            .pri_select()
            .unwrap();
        assert_eq!(got, "input");
    }
}

#[test]
fn timeout_guard_fires_and_nothing_is_taken() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let a = channel::<u32>(flavor, 0);
            let (r, w) = (a.reader(), a.writer());
            let start = Instant::now();
            let got = Alternation::new()
                .input(&r, |_| "input")
                .timeout(Duration::from_millis(100), || "timeout")
                .pri_select()
                .unwrap();
            assert_eq!(got, "timeout");
            assert!(start.elapsed() >= Duration::from_millis(100));
            // The alternation left nothing behind: a write still needs a
            // reader.
            assert!(matches!(
                w.write_timeout(&1, Duration::from_millis(30)),
                Err(ChannelError::Timeout)
            ));
        });
    }
}

#[test]
fn timeout_guard_loses_to_a_writer_that_comes_in_time() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let a = channel::<u32>(flavor, 0);
            let (r, w) = (a.reader(), a.writer());
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                w.write(&9)
            });
            let got = Alternation::new()
                .input(&r, Some)
                .timeout(Duration::from_secs(20), || None)
                .pri_select()
                .unwrap();
            assert_eq!(got, Some(9));
            t.join().unwrap().unwrap();
        });
    }
}

#[test]
fn preconditions_disable_guards() {
    for flavor in FLAVORS {
        let a = channel::<u32>(flavor, 1);
        let b = channel::<u32>(flavor, 1);
        let (ra, rb) = (a.reader(), b.reader());
        a.writer().write(&1).unwrap();
        b.writer().write(&2).unwrap();
        let got = Alternation::new()
            .input_if(false, &ra, |x| x)
            .input_if(true, &rb, |x| x)
            .pri_select()
            .unwrap();
        assert_eq!(got, 2);
        let got = Alternation::new()
            .input_if(false, &ra, |x| x)
            .skip_if(false, || 0)
            .timeout_if(true, Duration::from_millis(1), || 99)
            .pri_select()
            .unwrap();
        assert_eq!(got, 99);
        let none: Result<u32, _> = Alternation::new().input_if(false, &ra, |x| x).pri_select();
        assert!(matches!(none, Err(ChannelError::NoGuard)));
        // The disabled guard's value is still there.
        assert_eq!(ra.read().unwrap(), 1);
    }
}

#[test]
fn output_guards_write_exactly_the_chosen_value() {
    for flavor in FLAVORS {
        for buffer in [0, 1] {
            watchdog(Duration::from_secs(30), move || {
                let chans: Vec<_> = (0..4).map(|_| channel::<u32>(flavor, buffer)).collect();
                let ws: Vec<_> = chans.iter().map(|c| c.writer()).collect();
                let readers: Vec<_> = chans
                    .iter()
                    .map(|c| {
                        let r = c.reader();
                        std::thread::spawn(move || {
                            let mut got = Vec::new();
                            while let Ok(v) = r.read() {
                                got.push(v);
                            }
                            got
                        })
                    })
                    .collect();
                for i in 0..100u32 {
                    Alternation::new()
                        .output(&ws[0], &i, || ())
                        .output(&ws[1], &i, || ())
                        .output(&ws[2], &i, || ())
                        .output(&ws[3], &i, || ())
                        .select()
                        .unwrap();
                }
                drop(ws);
                let mut all: Vec<u32> = readers
                    .into_iter()
                    .flat_map(|r| r.join().unwrap())
                    .collect();
                all.sort();
                assert_eq!(all, (0..100).collect::<Vec<_>>(), "{flavor:?}/{buffer}");
            });
        }
    }
}

/// PyCSP's Any_Alting2Any_Alting: alting writers against alting readers
/// over four shared channels. Every value is delivered exactly once.
#[test]
fn alting_writers_meet_alting_readers_exactly_once() {
    for flavor in FLAVORS {
        for buffer in [0, 2] {
            watchdog(Duration::from_secs(120), move || {
                let chans: Vec<_> = (0..4).map(|_| channel::<u32>(flavor, buffer)).collect();
                let writers: Vec<_> = (0..4u32)
                    .map(|id| {
                        let ws: Vec<_> = chans.iter().map(|c| c.writer()).collect();
                        std::thread::spawn(move || {
                            for i in 0..100u32 {
                                let v = id * 1000 + i;
                                Alternation::new()
                                    .output(&ws[0], &v, || ())
                                    .output(&ws[1], &v, || ())
                                    .output(&ws[2], &v, || ())
                                    .output(&ws[3], &v, || ())
                                    .select()
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                let count = Arc::new(AtomicUsize::new(0));
                let readers: Vec<_> = (0..4)
                    .map(|_| {
                        let rs: Vec<_> = chans.iter().map(|c| c.reader()).collect();
                        let count = count.clone();
                        std::thread::spawn(move || {
                            let mut got = Vec::new();
                            loop {
                                let r = Alternation::new()
                                    .input(&rs[0], |v: u32| v)
                                    .input(&rs[1], |v| v)
                                    .input(&rs[2], |v| v)
                                    .input(&rs[3], |v| v)
                                    .select();
                                match r {
                                    Ok(v) => {
                                        got.push(v);
                                        count.fetch_add(1, Ordering::SeqCst);
                                    }
                                    Err(ChannelError::Retired) => return got,
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        })
                    })
                    .collect();
                drop(chans);
                for w in writers {
                    w.join().unwrap();
                }
                let mut all: Vec<u32> = readers
                    .into_iter()
                    .flat_map(|r| r.join().unwrap())
                    .collect();
                all.sort();
                let expect: Vec<u32> = (0..4)
                    .flat_map(|id| (0..100).map(move |i| id * 1000 + i))
                    .collect();
                assert_eq!(all, expect, "{flavor:?}/{buffer}");
            });
        }
    }
}

#[test]
fn poison_ends_a_waiting_alternation() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let a = channel::<u32>(flavor, 0);
            let b = channel::<u32>(flavor, 0);
            let (ra, rb) = (a.reader(), b.reader());
            let _wa = a.writer();
            let wb = b.writer();
            let t = std::thread::spawn(move || {
                Alternation::new()
                    .input(&ra, |x| x)
                    .input(&rb, |x| x)
                    .pri_select()
            });
            std::thread::sleep(Duration::from_millis(30));
            wb.poison();
            assert!(matches!(t.join().unwrap(), Err(ChannelError::Poisoned)));
        });
    }
}

#[test]
fn retire_ends_a_waiting_alternation_after_the_buffer_drains() {
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(30), move || {
            let a = channel::<u32>(flavor, 2);
            let ra = a.reader();
            let wa = a.writer();
            wa.write(&1).unwrap();
            drop(wa);
            let first = Alternation::new().input(&ra, |x| x).pri_select();
            assert_eq!(first.unwrap(), 1);
            let second = Alternation::new().input(&ra, |x| x).pri_select();
            assert!(matches!(second, Err(ChannelError::Retired)));
        });
    }
}

#[test]
fn alternation_and_plain_reader_compete_for_one_writer() {
    // Each value goes to exactly one of them.
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(60), move || {
            let a = channel::<u32>(flavor, 0);
            let w = a.writer();
            let plain = a.reader();
            let alting = a.reader();
            let t1 = std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(v) = plain.read() {
                    got.push(v);
                }
                got
            });
            let t2 = std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match Alternation::new()
                        .input(&alting, |v: u32| v)
                        .timeout(Duration::from_secs(30), || u32::MAX)
                        .pri_select()
                    {
                        Ok(v) => got.push(v),
                        Err(_) => return got,
                    }
                }
            });
            for i in 0..500 {
                w.write(&i).unwrap();
            }
            drop(w);
            let mut all = t1.join().unwrap();
            all.extend(t2.join().unwrap());
            all.sort();
            assert_eq!(all, (0..500).collect::<Vec<_>>());
        });
    }
}

#[test]
fn poison_at_any_moment_ends_every_party() {
    // Readers, writers and alternations busy on two channels; poison
    // arrives at varying moments; everyone must come back with an error.
    for flavor in FLAVORS {
        watchdog(Duration::from_secs(120), move || {
            for round in 0..40u64 {
                let a = channel::<u64>(flavor, (round % 3) as usize);
                let b = channel::<u64>(flavor, 0);
                let mut ts = Vec::new();
                for k in 0..2 {
                    let (w, r) = (a.writer(), b.reader());
                    ts.push(std::thread::spawn(move || {
                        loop {
                            if w.write(&k).is_err() || r.read().is_err() {
                                return;
                            }
                        }
                    }));
                    let (ra, rb, wb) = (a.reader(), b.reader(), b.writer());
                    ts.push(std::thread::spawn(move || {
                        loop {
                            let r = Alternation::new()
                                .input(&ra, |_| ())
                                .input(&rb, |_| ())
                                .output(&wb, &7, || ())
                                .select();
                            if r.is_err() {
                                return;
                            }
                        }
                    }));
                }
                std::thread::sleep(Duration::from_micros(round * 50));
                if round % 2 == 0 {
                    a.poison()
                } else {
                    b.poison()
                }
                // Poisoning one channel must end everyone: those blocked on
                // the other one are released by the parties that fail
                // first (they drop their ends, retiring it).
                for t in ts {
                    t.join().unwrap();
                }
            }
        });
    }
}

#[test]
fn one_alternation_over_both_flavors() {
    // The flavors share one protocol, so an alternation can mix them.
    watchdog(Duration::from_secs(30), || {
        let local = channel::<u32>(csp_common::Flavor::Threads, 0);
        let shared = channel::<u32>(csp_common::Flavor::Shared, 0);
        let (wl, ws) = (local.writer(), shared.writer());
        let t = std::thread::spawn(move || {
            ws.write(&2).unwrap();
            wl.write(&1).unwrap();
        });
        let (rl, rs) = (local.reader(), shared.reader());
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(
                Alternation::new()
                    .input(&rl, |x| x)
                    .input(&rs, |x| x)
                    .pri_select()
                    .unwrap(),
            );
        }
        t.join().unwrap();
        assert_eq!(got, vec![2, 1]);
    });
}

#[test]
fn a_ready_guard_before_a_poisoned_one_wins() {
    // PyCSP checks the guards in order and raises poison when it meets a
    // poisoned guard: an earlier ready guard is chosen, a later one is not.
    for flavor in FLAVORS {
        let q = channel::<u32>(flavor, 4);
        let p = channel::<u32>(flavor, 0);
        let (qr, pr, qw) = (q.reader(), p.reader(), q.writer());
        for v in [1, 2, 3] {
            qw.write(&v).unwrap();
        }
        p.poison();
        let got = Alternation::new()
            .input(&qr, |x| x)
            .input(&pr, |x| x)
            .pri_select();
        assert!(matches!(got, Ok(1)), "{flavor:?}");
        let got = Alternation::new()
            .input(&pr, |x| x)
            .input(&qr, |x| x)
            .pri_select();
        assert!(matches!(got, Err(ChannelError::Poisoned)), "{flavor:?}");
        // Fair: the same rule in the fair order (q first, then p first).
        let mut fair = Fair::new();
        let got = Alternation::new()
            .input(&qr, |x| x)
            .input(&pr, |x| x)
            .fair_select(&mut fair);
        assert!(matches!(got, Ok(2)), "{flavor:?}");
        let got = Alternation::new()
            .input(&qr, |x| x)
            .input(&pr, |x| x)
            .fair_select(&mut fair);
        assert!(matches!(got, Err(ChannelError::Poisoned)), "{flavor:?}");
        // An output guard before the poisoned one, with room: written.
        let o = channel::<u32>(flavor, 1);
        let (ow, or) = (o.writer(), o.reader());
        let got = Alternation::new()
            .output(&ow, &9, || 0)
            .input(&pr, |x| x)
            .pri_select();
        assert!(matches!(got, Ok(0)), "{flavor:?}");
        assert!(matches!(or.read(), Ok(9)));
        // Nothing ready but the poisoned guard: poison, at once.
        let got = Alternation::new()
            .output(&ow, &9, || 0)
            .input(&pr, |x| x)
            .pri_select();
        assert!(
            matches!(got, Ok(0)),
            "{flavor:?}: the buffer had room again"
        );
        let got = watchdog(Duration::from_secs(30), move || {
            Alternation::new()
                .output(&ow, &10, || 0)
                .input(&p.reader(), |x| x)
                .pri_select()
        });
        assert!(matches!(got, Err(ChannelError::Poisoned)), "{flavor:?}");
        // q still holds 3.
        assert!(matches!(qr.read(), Ok(3)));
    }
}
