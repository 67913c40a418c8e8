//! The direct hand-over between lightweight processes (`light/fast.rs`):
//! its edge cases, where a channel leaves it for the general path
//! (alternation, an OS process, a thread) while parties are parked on it,
//! poison and retirement of parked parties, timeouts, and buffered
//! channels (which never take it).

mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::StartMethod;
use multiproc::csp::{
    Alternation, Channel, ChannelError, CspProcess, Outcome, Reader, Writer, parallel, sleep, spawn,
};

const LIMIT: Duration = Duration::from_secs(60);

/// Waits (as a lightweight process) until `n` writers are parked on the
/// channel of `r`.
fn until_writers(r: &Reader<u32>, n: usize) {
    while r.waiting().1 < n {
        sleep(Duration::from_millis(1));
    }
}

/// Waits until `n` readers are parked on the channel of `w`.
fn until_readers(w: &Writer<u32>, n: usize) {
    while w.waiting().0 < n {
        sleep(Duration::from_millis(1));
    }
}

fn count_up((w, from, to): (Writer<u32>, u32, u32)) -> Result<u32, ChannelError> {
    for i in from..to {
        w.write(&i)?;
    }
    Ok(to - from)
}

fn count_up_vec(args: (Writer<u32>, u32, u32)) -> Result<Vec<u32>, ChannelError> {
    count_up(args).map(|_| Vec::new())
}

#[test]
fn alternation_on_a_channel_with_a_writer_parked_on_the_fast_path() {
    watchdog(LIMIT, || {
        let a = Channel::<u32>::new().unwrap();
        let b = Channel::<u32>::new().unwrap();
        let out = parallel([
            CspProcess::light(count_up_vec, (a.writer(), 0, 20)),
            CspProcess::light(count_up_vec, (b.writer(), 100, 110)),
            CspProcess::light(
                |(a, b): (Reader<u32>, Reader<u32>)| {
                    let mut got = Vec::new();
                    // Plain reads: the hand-over path.
                    for _ in 0..5 {
                        got.push(a.read()?);
                    }
                    // The writer of `a` parks there; an alternation then
                    // sees it (priority: `a` first).
                    until_writers(&a, 1);
                    let first = Alternation::new()
                        .input(&a, |v| v)
                        .input(&b, |v| v)
                        .pri_select()?;
                    got.push(first);
                    while got.len() < 30 {
                        got.push(
                            Alternation::new()
                                .input(&a, |v| v)
                                .input(&b, |v| v)
                                .select()?,
                        );
                    }
                    Ok(got)
                },
                (a.reader(), b.reader()),
            ),
        ]);
        let got = match &out.unwrap()[2] {
            Outcome::Done(v) => v.clone(),
            o => panic!("the reader ended with {o:?}"),
        };
        assert_eq!(&got[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(got[5], 5, "the parked writer was not served first: {got:?}");
        let from_a: Vec<u32> = got.iter().copied().filter(|&v| v < 100).collect();
        let from_b: Vec<u32> = got.iter().copied().filter(|&v| v >= 100).collect();
        assert_eq!(from_a, (0..20).collect::<Vec<_>>());
        assert_eq!(from_b, (100..110).collect::<Vec<_>>());
    });
}

#[test]
fn output_guard_meets_a_reader_parked_on_the_fast_path() {
    watchdog(LIMIT, || {
        let a = Channel::<u32>::new().unwrap();
        let out = parallel([
            CspProcess::light(
                |r: Reader<u32>| {
                    let mut got = Vec::new();
                    for _ in 0..4 {
                        got.push(r.read()?);
                    }
                    Ok(got)
                },
                a.reader(),
            ),
            CspProcess::light(
                |w: Writer<u32>| {
                    w.write(&1)?;
                    w.write(&2)?;
                    until_readers(&w, 1);
                    let k = Alternation::new()
                        .output(&w, &3, || 3)
                        .skip(|| 0)
                        .pri_select()?;
                    w.write(&4)?;
                    Ok(vec![k])
                },
                a.writer(),
            ),
        ])
        .unwrap();
        assert_eq!(out[0], Outcome::Done(vec![1, 2, 3, 4]));
        assert_eq!(
            out[1],
            Outcome::Done(vec![3]),
            "the parked reader was not seen"
        );
    });
}

#[test]
fn poison_wakes_parties_parked_on_the_fast_path() {
    watchdog(LIMIT, || {
        let a = Channel::<u32>::new().unwrap();
        let b = Channel::<u32>::new().unwrap();
        let out = parallel([
            // Writes two values, then parks with a third.
            CspProcess::light(count_up, (a.writer(), 0, 3)),
            // Parks reading `b`, which nobody writes.
            CspProcess::light(|r: Reader<u32>| r.read(), b.reader()),
            CspProcess::light(
                |(r, b): (Reader<u32>, Writer<u32>)| {
                    let x = r.read()? + r.read()?;
                    until_writers(&r, 1);
                    until_readers(&b, 1);
                    r.poison();
                    b.poison();
                    Ok(x)
                },
                (a.reader(), b.writer()),
            ),
        ])
        .unwrap();
        assert_eq!(
            out,
            [Outcome::Poisoned, Outcome::Poisoned, Outcome::Done(1)]
        );
        // Poisoned for good: later operations fail at once.
        assert!(matches!(a.writer().write(&9), Err(ChannelError::Poisoned)));
    });
}

#[test]
fn retirement_wakes_a_writer_parked_on_the_fast_path() {
    watchdog(LIMIT, || {
        let a = Channel::<u32>::new().unwrap();
        let (r, w) = (a.reader(), a.writer());
        drop(a);
        let out = parallel([
            CspProcess::light(count_up, (w, 0, 3)),
            CspProcess::light(
                |r: Reader<u32>| {
                    let x = r.read()? + r.read()?;
                    until_writers(&r, 1);
                    r.retire();
                    Ok(x)
                },
                r,
            ),
        ])
        .unwrap();
        assert_eq!(out, [Outcome::Retired, Outcome::Done(1)]);
    });
}

#[test]
fn timeouts_on_the_fast_path_lose_nothing() {
    watchdog(LIMIT, || {
        let a = Channel::<u32>::new().unwrap();
        let out = parallel([
            CspProcess::light(
                |r: Reader<u32>| {
                    let mut got = vec![r.read()?];
                    // Nobody writes for a while: times out, dequeued.
                    assert!(matches!(
                        r.read_timeout(Duration::from_millis(20)),
                        Err(ChannelError::Timeout)
                    ));
                    // The writer's timed-out value never arrives.
                    sleep(Duration::from_millis(150));
                    got.push(r.read()?);
                    got.push(r.read_timeout(Duration::from_secs(30))?);
                    Ok(got)
                },
                a.reader(),
            ),
            CspProcess::light(
                |w: Writer<u32>| {
                    w.write(&1)?;
                    sleep(Duration::from_millis(60));
                    // The reader sleeps: nobody reads in time.
                    assert!(matches!(
                        w.write_timeout(&99, Duration::from_millis(20)),
                        Err(ChannelError::Timeout)
                    ));
                    w.write(&2)?;
                    w.write_timeout(&3, Duration::from_secs(30))?;
                    Ok(Vec::new())
                },
                a.writer(),
            ),
        ])
        .unwrap();
        assert_eq!(out[0], Outcome::Done(vec![1, 2, 3]));
    });
}

fn os_count_up((w, from, to): (Writer<u32>, u32, u32)) -> Result<u32, ChannelError> {
    count_up((w, from, to))
}

#[test]
fn a_channel_used_on_the_fast_path_is_then_shared_with_an_os_process() {
    // Spawn: a process running lightweight processes has worker threads,
    // and the crate refuses to fork such a process.
    let method = StartMethod::Spawn;
    watchdog(LIMIT, move || {
        let a = Channel::<u32>::new().unwrap();
        let out = parallel([
            CspProcess::light(
                |r: Reader<u32>| {
                    let mut got = Vec::new();
                    for _ in 0..20 {
                        got.push(r.read()?);
                    }
                    Ok(got)
                },
                a.reader(),
            ),
            CspProcess::light(
                move |w: Writer<u32>| {
                    count_up((w.clone(), 0, 10))?;
                    // The reader is parked on the hand-over path when
                    // the end leaves for the OS process.
                    until_readers(&w, 1);
                    let inner =
                        parallel([CspProcess::function(os_count_up, (w.clone(), 10, 20))
                            .start_method(method)])
                        .map_err(|e| {
                            ChannelError::Codec(multiproc::error::CodecError::Decode(e.to_string()))
                        })?;
                    assert_eq!(inner, [Outcome::Done(10)]);
                    Ok(Vec::new())
                },
                a.writer(),
            ),
        ])
        .unwrap();
        assert_eq!(
            out[0],
            Outcome::Done((0..20).collect::<Vec<_>>()),
            "{method:?}"
        );
    });
}

#[test]
fn a_thread_joins_a_channel_used_on_the_fast_path() {
    watchdog(LIMIT, || {
        let a = Channel::builder().threads_only().build::<u32>().unwrap();
        let out = parallel([
            CspProcess::light(count_up_vec, (a.writer(), 0, 10)),
            CspProcess::light(count_up_vec, (a.writer(), 10, 20)),
            CspProcess::light(
                |r: Reader<u32>| {
                    let mut got = Vec::new();
                    for _ in 0..10 {
                        got.push(r.read()?);
                    }
                    Ok(got)
                },
                a.reader(),
            ),
            CspProcess::thread(
                |r: Reader<u32>| {
                    std::thread::sleep(Duration::from_millis(20));
                    let mut got = Vec::new();
                    for _ in 0..10 {
                        got.push(r.read()?);
                    }
                    Ok(got)
                },
                a.reader(),
            ),
        ])
        .unwrap();
        let mut all: Vec<u32> = out[2..]
            .iter()
            .flat_map(|o| o.clone().value().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
    });
}

#[test]
fn buffered_channels_between_lightweight_processes() {
    watchdog(LIMIT, || {
        let a = Channel::<u32>::buffered(3).unwrap();
        let out = parallel([
            CspProcess::light(
                |w: Writer<u32>| {
                    // Three complete with nobody reading yet; the
                    // buffer is full then.
                    for i in 0..3 {
                        w.write(&i)?;
                    }
                    let full = w.write_timeout(&3, Duration::from_millis(10));
                    count_up((w, 3, 100))?;
                    Ok((matches!(full, Err(ChannelError::Timeout)), Vec::new()))
                },
                a.writer(),
            ),
            CspProcess::light(
                |r: Reader<u32>| {
                    sleep(Duration::from_millis(100));
                    let mut got = Vec::new();
                    while got.len() < 100 {
                        got.push(r.read()?);
                    }
                    Ok((true, got))
                },
                a.reader(),
            ),
        ])
        .unwrap();
        let (_, got) = out[1].clone().value().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(
            out[0],
            Outcome::Done((true, Vec::new())),
            "the fourth write did not wait"
        );
    });
}

#[test]
fn hand_over_between_processes_of_different_workers() {
    // Networks started from outside a worker go to the workers in turn:
    // the writers and the readers run on different worker threads (where
    // there are several) and meet any-to-any (the hand-over path belongs
    // to one worker: the second one to use the channel promotes it).
    watchdog(LIMIT, || {
        let a = Channel::<u32>::new().unwrap();
        let writers = spawn(
            (0..4u32)
                .map(|k| CspProcess::light(count_up_vec, (a.writer(), 1000 * k, 1000 * k + 500)))
                .collect::<Vec<_>>(),
        );
        let readers = spawn(
            (0..3)
                .map(|_| {
                    CspProcess::light(
                        |r: Reader<u32>| {
                            let mut got = Vec::new();
                            loop {
                                match r.read() {
                                    Ok(v) => got.push(v),
                                    Err(ChannelError::Retired) => return Ok(got),
                                    Err(e) => return Err(e),
                                }
                            }
                        },
                        a.reader(),
                    )
                })
                .collect::<Vec<_>>(),
        );
        drop(a);
        assert!(
            writers
                .join()
                .unwrap()
                .iter()
                .all(|o| *o == Outcome::Done(Vec::new()))
        );
        let mut all: Vec<u32> = readers
            .join()
            .unwrap()
            .into_iter()
            .flat_map(|o| o.value().unwrap())
            .collect();
        all.sort();
        let want: Vec<u32> = (0..4).flat_map(|k| 1000 * k..1000 * k + 500).collect();
        assert_eq!(all, want);
    });
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct Meters(f64);

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct Marker;

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct Point {
    x: i16,
    y: i16,
}

/// Sends `values` from one lightweight process to another over a fast
/// channel (each message meets a parked reader or a parked writer, in
/// turn) and returns what arrived.
fn hand_over<T>(values: Vec<T>) -> Vec<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static,
{
    let c = Channel::<T>::new().unwrap();
    let n = values.len();
    let out = parallel([
        CspProcess::light(
            |(w, values): (Writer<T>, Vec<T>)| {
                for v in &values {
                    w.write(v)?;
                }
                Ok(Vec::new())
            },
            (c.writer(), values),
        ),
        CspProcess::light(
            move |r: Reader<T>| (0..n).map(|_| r.read()).collect::<Result<Vec<T>, _>>(),
            c.reader(),
        ),
    ])
    .unwrap();
    match out.into_iter().nth(1) {
        Some(Outcome::Done(got)) => got,
        other => panic!("the reader did not finish: {}", other.is_some()),
    }
}

#[test]
fn every_kind_of_message_crosses_the_fast_path_intact() {
    watchdog(LIMIT, || {
        let ints = vec![0u64, 1, 127, 128, u64::MAX, 42];
        assert_eq!(hand_over(ints.clone()), ints);
        let signed = vec![i8::MIN, -1, 0, 1, i8::MAX];
        assert_eq!(hand_over(signed.clone()), signed);
        let wide = vec![i64::MIN, -300, i64::MAX];
        assert_eq!(hand_over(wide.clone()), wide);
        let floats = vec![0.5f32, -0.0, f32::MAX, f32::MIN_POSITIVE];
        assert_eq!(hand_over(floats.clone()), floats);
        let meters = vec![Meters(1.25), Meters(-3.5), Meters(f64::MAX)];
        assert_eq!(hand_over(meters.clone()), meters);
        let chars = vec!['a', 'é', '∞', '🦀'];
        assert_eq!(hand_over(chars.clone()), chars);
        let flags = vec![true, false, true];
        assert_eq!(hand_over(flags.clone()), flags);
        assert_eq!(hand_over(vec![(), (), ()]).len(), 3);
        assert_eq!(hand_over(vec![Marker, Marker]), vec![Marker, Marker]);
        // Not one primitive: the codec's bytes.
        let points = vec![Point { x: 1, y: -2 }, Point { x: -300, y: 300 }];
        assert_eq!(hand_over(points.clone()), points);
        let words = vec!["one".to_string(), String::new(), "three".into()];
        assert_eq!(hand_over(words.clone()), words);
        let options = vec![Some(1u32), None, Some(u32::MAX)];
        assert_eq!(hand_over(options.clone()), options);
    });
}
