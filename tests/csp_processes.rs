//! Parallel / Sequence / Spawn and poison/retire propagation, from PyCSP's
//! `poisontest.py`, `spawntest.py`, `autotest.py` and
//! `autotestMultiProcess.py`, rewritten as Rust tests. Every network runs
//! with its processes as threads and as OS processes (spawn start method;
//! fork from inside a single-threaded spawned child), and mixed.

mod common;
mod csp_common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::watchdog;
use multiproc::csp::{
    Alternation, Channel, ChannelError, CspProcess, Outcome, ProcessError, Reader, Writer,
    parallel, sequence, spawn,
};
use multiproc::{Process, StartMethod};

/// How a test runs its processes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Threads,
    Spawn,
    Mixed,
}

fn place<R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
    p: CspProcess<R>,
    mode: Mode,
    k: usize,
) -> CspProcess<R> {
    match mode {
        Mode::Threads => p,
        Mode::Spawn => p.start_method(StartMethod::Spawn),
        Mode::Mixed if k.is_multiple_of(2) => p.start_method(StartMethod::Spawn),
        Mode::Mixed => p,
    }
}

const MODES: [Mode; 3] = [Mode::Threads, Mode::Spawn, Mode::Mixed];

// ---- process bodies (plain functions, so they can run as OS processes) ---

fn ping(ends: (Writer<u32>, Reader<u32>)) -> Result<u32, ChannelError> {
    let (out, inp) = ends;
    out.write(&1)?;
    inp.read()
}

fn pong(ends: (Reader<u32>, Writer<u32>)) -> Result<u32, ChannelError> {
    let (inp, out) = ends;
    let x = inp.read()?;
    out.write(&(x + 1))?;
    Ok(x)
}

fn source(args: (Writer<u32>, u32)) -> Result<(), ChannelError> {
    let (out, n) = args;
    for i in 0..n {
        out.write(&i)?;
    }
    out.poison();
    Ok(())
}

fn identity(ends: (Reader<u32>, Writer<u32>)) -> Result<(), ChannelError> {
    let (inp, out) = ends;
    loop {
        out.write(&inp.read()?)?;
    }
}

fn sink(inp: Reader<u32>) -> Result<u32, ChannelError> {
    let mut n = 0;
    loop {
        match inp.read() {
            Ok(_) => n += 1,
            Err(ChannelError::Poisoned) => return Ok(n),
            Err(e) => return Err(e),
        }
    }
}

/// Reads until the channel is poisoned (ending the process by poison).
fn counting_sink(inp: Reader<u32>) -> Result<u32, ChannelError> {
    loop {
        inp.read()?;
    }
}

fn retiring_writer(args: (Writer<(u32, u32)>, u32, u32)) -> Result<(), ChannelError> {
    let (out, id, n) = args;
    for i in 0..n {
        out.write(&(id, i))?;
    }
    Ok(())
}

fn collecting_reader(inp: Reader<(u32, u32)>) -> Result<Vec<(u32, u32)>, ChannelError> {
    let mut got = Vec::new();
    loop {
        match inp.read() {
            Ok(v) => got.push(v),
            Err(ChannelError::Retired) => return Ok(got),
            Err(e) => return Err(e),
        }
    }
}

fn alting_reader(ins: Vec<Reader<(u32, u32)>>) -> Result<Vec<(u32, u32)>, ChannelError> {
    let mut got = Vec::new();
    loop {
        let mut alt = Alternation::new();
        for r in &ins {
            alt = alt.input(r, |v| v);
        }
        match alt.select() {
            Ok(v) => got.push(v),
            Err(ChannelError::Retired) => return Ok(got),
            Err(e) => return Err(e),
        }
    }
}

fn alting_writer(
    args: (Vec<Writer<(u32, u32)>>, u32, u32),
) -> Result<Vec<(u32, u32)>, ChannelError> {
    let (outs, id, n) = args;
    for i in 0..n {
        let mut alt = Alternation::new();
        for w in &outs {
            alt = alt.output(w, &(id, i), || ());
        }
        alt.select()?;
    }
    Ok(Vec::new())
}

fn retire_then_wait(args: (Writer<u32>, Reader<u32>)) -> Result<u32, ChannelError> {
    let (w, ack) = args;
    w.write(&1)?;
    // Retires at once, although the process goes on.
    w.retire();
    ack.read()
}

fn ack_after_retired(args: (Reader<u32>, Writer<u32>)) -> Result<u32, ChannelError> {
    let (r, ack) = args;
    let mut n = 0;
    loop {
        match r.read() {
            Ok(_) => n += 1,
            Err(ChannelError::Retired) => break,
            Err(e) => return Err(e),
        }
    }
    ack.write(&n)?;
    Ok(n)
}

/// Receives a writer end inside a message over a connection, and writes.
fn end_by_connection(conn: multiproc::Connection) -> u32 {
    let w: Writer<u32> = conn.recv().expect("an end in a message");
    for i in 0..5 {
        w.write(&i).expect("write");
    }
    5
}

/// Runs an alternation with every kind of guard inside an OS process.
fn guard_tour(ins: (Reader<u32>, Reader<u32>)) -> Result<Vec<String>, ChannelError> {
    let (a, b) = ins;
    let mut log = Vec::new();
    // Nothing is ready: the skip guard is chosen.
    log.push(
        Alternation::new()
            .input(&a, |x| format!("a {x}"))
            .skip(|| "skip".to_string())
            .pri_select()?,
    );
    // Nothing comes: the timeout guard is chosen.
    log.push(
        Alternation::new()
            .input(&a, |x| format!("a {x}"))
            .timeout(std::time::Duration::from_millis(20), || {
                "timeout".to_string()
            })
            .pri_select()?,
    );
    // The parent writes to b: the input guard on b is chosen; a is
    // disabled by its precondition.
    log.push(
        Alternation::new()
            .input_if(false, &a, |x| format!("a {x}"))
            .input(&b, |x| format!("b {x}"))
            .timeout(std::time::Duration::from_secs(30), || "late".to_string())
            .pri_select()?,
    );
    Ok(log)
}

fn panicker(_ends: (Reader<u32>, Writer<u32>)) -> Result<u32, ChannelError> {
    common::quiet_panics();
    panic!("boom in a CSP process")
}

fn aborter(_inp: Reader<u32>) -> Result<u32, ChannelError> {
    std::process::abort()
}

// ---- tests -----------------------------------------------------------

#[test]
fn parallel_runs_processes_concurrently() {
    // ping and pong must run at the same time: each waits for the other.
    for mode in MODES {
        watchdog(Duration::from_secs(60), move || {
            let a = Channel::new().unwrap();
            let b = Channel::new().unwrap();
            let out = parallel([
                place(
                    CspProcess::function(ping, (a.writer(), b.reader())),
                    mode,
                    0,
                ),
                place(
                    CspProcess::function(pong, (a.reader(), b.writer())),
                    mode,
                    1,
                ),
            ])
            .unwrap();
            assert_eq!(out, vec![Outcome::Done(2), Outcome::Done(1)], "{mode:?}");
        });
    }
}

#[test]
fn sequence_runs_processes_one_after_another() {
    for mode in MODES {
        watchdog(Duration::from_secs(60), move || {
            // The second process reads what the first left in a buffer,
            // so the first must have finished.
            let c = Channel::<u32>::buffered(10).unwrap();
            let keep_reader = c.reader();
            let out = sequence([
                place(
                    CspProcess::function(
                        |w: Writer<u32>| {
                            for i in 0..5 {
                                w.write(&i)?;
                            }
                            Ok(5)
                        },
                        c.writer(),
                    ),
                    mode,
                    0,
                ),
                place(
                    CspProcess::function(
                        |r: Reader<u32>| {
                            let mut s = 0;
                            for _ in 0..5 {
                                s += r.read()?;
                            }
                            Ok(s)
                        },
                        c.reader(),
                    ),
                    mode,
                    1,
                ),
            ])
            .unwrap();
            assert_eq!(out, vec![Outcome::Done(5), Outcome::Done(10)], "{mode:?}");
            drop(keep_reader);
        });
    }
}

#[test]
fn spawn_returns_at_once_and_join_waits() {
    for mode in MODES {
        watchdog(Duration::from_secs(60), move || {
            let c = Channel::<u32>::new().unwrap();
            let handle = spawn([place(
                CspProcess::function(counting_sink, c.reader()),
                mode,
                0,
            )]);
            // The spawned process is running: it takes our writes.
            let w = c.writer();
            for i in 0..10 {
                w.write(&i).unwrap();
            }
            w.poison();
            assert_eq!(handle.join().unwrap(), vec![Outcome::Poisoned], "{mode:?}");
        });
    }
}

#[test]
fn poison_propagates_through_a_pipeline() {
    // PyCSP's PoisonTest: source → identity → identity → sink; the source
    // poisons its output and the poison travels to the end.
    for mode in MODES {
        watchdog(Duration::from_secs(60), move || {
            let chans: Vec<Channel<u32>> = (0..3).map(|_| Channel::new().unwrap()).collect();
            let out = parallel([
                place(
                    CspProcess::function(|a| source(a).map(|_| 0), (chans[0].writer(), 100)),
                    mode,
                    0,
                ),
                place(
                    CspProcess::function(
                        |e| identity(e).map(|_| 0),
                        (chans[0].reader(), chans[1].writer()),
                    ),
                    mode,
                    1,
                ),
                place(
                    CspProcess::function(
                        |e| identity(e).map(|_| 0),
                        (chans[1].reader(), chans[2].writer()),
                    ),
                    mode,
                    2,
                ),
                place(CspProcess::function(sink, chans[2].reader()), mode, 3),
            ])
            .unwrap();
            assert_eq!(out[0], Outcome::Done(0));
            assert_eq!(out[1], Outcome::Poisoned);
            assert_eq!(out[2], Outcome::Poisoned);
            // The sink saw at most everything the source wrote, then poison.
            let Outcome::Done(n) = out[3] else {
                panic!("{out:?}")
            };
            assert!(n <= 100);
            assert!(chans.iter().all(|c| c.is_poisoned()), "{mode:?}");
        });
    }
}

#[test]
fn retire_propagates_any_to_any() {
    // autotest.py's Any2Any: four writers, four readers on one channel;
    // readers end when every writer has retired.
    for mode in MODES {
        for buffer in [0, 5] {
            watchdog(Duration::from_secs(90), move || {
                let c = Channel::<(u32, u32)>::buffered(buffer).unwrap();
                let mut procs = Vec::new();
                for id in 0..4 {
                    procs.push(place(
                        CspProcess::function(
                            |a| retiring_writer(a).map(|_| Vec::new()),
                            (c.writer(), id, 25),
                        ),
                        mode,
                        id as usize,
                    ));
                    procs.push(place(
                        CspProcess::function(collecting_reader, c.reader()),
                        mode,
                        id as usize + 1,
                    ));
                }
                drop(c);
                let out = parallel(procs).unwrap();
                let all: Vec<(u32, u32)> =
                    out.into_iter().flat_map(|o| o.value().unwrap()).collect();
                let set: BTreeSet<_> = all.iter().copied().collect();
                assert_eq!(all.len(), 100, "{mode:?}/{buffer}");
                assert_eq!(set.len(), 100, "{mode:?}/{buffer}");
            });
        }
    }
}

#[test]
fn alternation_is_exactly_once_across_processes() {
    // Alting readers and alting writers over four shared channels, in
    // separate OS processes: every value is taken exactly once.
    for mode in [Mode::Spawn, Mode::Mixed] {
        for buffer in [0, 2] {
            watchdog(Duration::from_secs(120), move || {
                let chans: Vec<Channel<(u32, u32)>> =
                    (0..4).map(|_| Channel::buffered(buffer).unwrap()).collect();
                let mut procs = Vec::new();
                for id in 0..3u32 {
                    let outs: Vec<_> = chans.iter().map(|c| c.writer()).collect();
                    procs.push(place(
                        CspProcess::function(alting_writer, (outs, id, 60)),
                        mode,
                        id as usize,
                    ));
                }
                for k in 0..3 {
                    let ins: Vec<_> = chans.iter().map(|c| c.reader()).collect();
                    procs.push(place(CspProcess::function(alting_reader, ins), mode, k + 1));
                }
                // A plain writer and a plain reader compete as well.
                procs.push(place(
                    CspProcess::function(
                        |a| retiring_writer(a).map(|_| Vec::new()),
                        (chans[0].writer(), 9, 60),
                    ),
                    mode,
                    0,
                ));
                procs.push(place(
                    CspProcess::function(collecting_reader, chans[3].reader()),
                    mode,
                    1,
                ));
                drop(chans);
                let out = parallel(procs).unwrap();
                let all: Vec<(u32, u32)> =
                    out.into_iter().flat_map(|o| o.value().unwrap()).collect();
                let set: BTreeSet<_> = all.iter().copied().collect();
                assert_eq!(
                    all.len(),
                    4 * 60,
                    "{mode:?}/{buffer}: a value was lost or duplicated"
                );
                assert_eq!(
                    set.len(),
                    4 * 60,
                    "{mode:?}/{buffer}: a value was duplicated"
                );
            });
        }
    }
}

#[test]
fn guards_and_preconditions_in_an_os_process() {
    watchdog(Duration::from_secs(60), || {
        let a = Channel::<u32>::new().unwrap();
        let b = Channel::<u32>::new().unwrap();
        let _keep = a.writer();
        let h = spawn([CspProcess::function(guard_tour, (a.reader(), b.reader()))
            .start_method(StartMethod::Spawn)]);
        // Rendezvous: returns once the child's alternation took it.
        b.writer().write(&7).unwrap();
        let out = h.join().unwrap();
        assert_eq!(
            out,
            vec![Outcome::Done(vec![
                "skip".to_string(),
                "timeout".to_string(),
                "b 7".to_string()
            ])]
        );
    });
}

#[test]
fn explicit_retire_inside_a_process_is_immediate() {
    for mode in MODES {
        watchdog(Duration::from_secs(60), move || {
            let c = Channel::<u32>::new().unwrap();
            let ack = Channel::<u32>::new().unwrap();
            let out = parallel([
                place(
                    CspProcess::function(retire_then_wait, (c.writer(), ack.reader())),
                    mode,
                    0,
                ),
                place(
                    CspProcess::function(ack_after_retired, (c.reader(), ack.writer())),
                    mode,
                    1,
                ),
            ])
            .unwrap();
            assert_eq!(out, vec![Outcome::Done(1), Outcome::Done(1)], "{mode:?}");
        });
    }
}

#[test]
fn an_end_travels_inside_a_connection_message() {
    watchdog(Duration::from_secs(60), || {
        let c = Channel::<u32>::new().unwrap();
        let r = c.reader();
        let (ours, theirs) = multiproc::pipe().unwrap();
        let mut p = Process::new(end_by_connection, theirs);
        p.start().unwrap();
        // Our copy is dropped right after sending; the end in flight keeps
        // the writer side alive until the child adopts it.
        ours.send(&c.writer()).unwrap();
        let got: Vec<u32> = (0..5).map(|_| r.read().unwrap()).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(p.join().unwrap(), 5);
        // The child's end retired when it exited.
        assert!(matches!(r.read(), Err(ChannelError::Retired)));
    });
}

#[test]
fn a_panic_becomes_an_error_and_poisons_the_network() {
    for mode in MODES {
        watchdog(Duration::from_secs(60), move || {
            let c = Channel::<u32>::new().unwrap();
            let d = Channel::<u32>::new().unwrap();
            let r = parallel([
                place(
                    CspProcess::function(panicker, (c.reader(), d.writer())),
                    mode,
                    0,
                ),
                // Blocks writing to c until the panic poisons it.
                place(
                    CspProcess::function(|w: Writer<u32>| w.write(&1).map(|_| 0), c.writer()),
                    mode,
                    1,
                ),
                place(CspProcess::function(counting_sink, d.reader()), mode, 2),
            ]);
            match r {
                Err(ProcessError::Panicked { message, .. }) => {
                    assert!(message.contains("boom"), "{message}")
                }
                other => panic!("{mode:?}: expected a panic error, got {other:?}"),
            }
            // Both channels the panicking process held are poisoned, so the
            // writer on c and the sink on d ended too.
            assert!(c.is_poisoned() && d.is_poisoned());
        });
    }
}

#[test]
fn a_killed_os_process_poisons_its_channels() {
    watchdog(Duration::from_secs(60), || {
        let c = Channel::<u32>::new().unwrap();
        let r = parallel([
            CspProcess::function(aborter, c.reader()).start_method(StartMethod::Spawn),
            CspProcess::function(|w: Writer<u32>| w.write(&1).map(|_| 0), c.writer()),
        ]);
        assert!(matches!(r, Err(ProcessError::Join { .. })), "{r:?}");
        assert!(c.is_poisoned());
    });
}

#[test]
fn closures_cannot_run_as_os_processes() {
    let r = parallel([CspProcess::new(|x: u32| Ok(x), 1).os()]);
    assert!(matches!(r, Err(ProcessError::NotAFunction { .. })));
}

#[test]
fn closures_capture_and_receive_ends() {
    watchdog(Duration::from_secs(30), || {
        let c = Channel::<String>::new().unwrap();
        let w = c.writer();
        let greeting = String::from("hello");
        let out = parallel([
            CspProcess::new(move |()| w.write(&greeting).map(|_| String::new()), ()),
            CspProcess::new(|r: Reader<String>| r.read(), c.reader()),
        ])
        .unwrap();
        assert_eq!(out[1], Outcome::Done("hello".to_string()));
    });
}

/// Runs in a spawned (single-threaded) child: a network whose processes
/// are forked.
fn forked_network(_: ()) -> Vec<u32> {
    let chans: Vec<Channel<u32>> = (0..2).map(|_| Channel::new().unwrap()).collect();
    let out = parallel([
        CspProcess::function(|a| source(a).map(|_| 0), (chans[0].writer(), 50))
            .start_method(StartMethod::Fork),
        CspProcess::function(
            |e| identity(e).map(|_| 0),
            (chans[0].reader(), chans[1].writer()),
        )
        .start_method(StartMethod::Fork),
        CspProcess::function(sink, chans[1].reader()).start_method(StartMethod::Fork),
    ])
    .expect("forked network");
    out.into_iter()
        .map(|o| match o {
            Outcome::Done(n) => n,
            Outcome::Poisoned => 1000,
            Outcome::Retired => 2000,
        })
        .collect()
}

#[test]
fn fork_start_method_from_a_single_threaded_parent() {
    watchdog(Duration::from_secs(60), || {
        let mut p = Process::new(forked_network, ()).start_method(StartMethod::Spawn);
        p.start().unwrap();
        let out = p.join_timeout(std::time::Duration::from_secs(50)).unwrap();
        assert_eq!(out[0], 0);
        assert_eq!(out[1], 1000);
        assert!(out[2] <= 50);
    });
}
