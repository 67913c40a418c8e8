//! Networks of CSP processes with different return types (`Parallel` on
//! tuples, `parallel!`), and the `thread` / `os_process` constructors,
//! with OS processes started by spawn and by fork.

mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::StartMethod;
use multiproc::csp::{
    Channel, ChannelError, CspProcess, Outcome, Parallel, ProcessError, Reader, Writer,
};

fn source(args: (Writer<u32>, u32)) -> Result<u32, ChannelError> {
    let (out, n) = args;
    for i in 1..=n {
        out.write(&i)?;
    }
    Ok(n)
}

fn label(ends: (Reader<u32>, Writer<String>)) -> Result<(), ChannelError> {
    let (inp, out) = ends;
    loop {
        match inp.read() {
            Ok(x) => out.write(&format!("#{x}"))?,
            Err(ChannelError::Retired) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn collect(inp: Reader<String>) -> Result<Vec<String>, ChannelError> {
    let mut got = Vec::new();
    loop {
        match inp.read() {
            Ok(s) => got.push(s),
            Err(ChannelError::Retired) => return Ok(got),
            Err(e) => return Err(e),
        }
    }
}

fn fails(_: ()) -> Result<u8, ChannelError> {
    Err(ChannelError::Timeout)
}

/// A 3-stage pipeline of OS processes started with `method`, each stage
/// returning its own type.
fn three_stages(method: StartMethod) -> (u32, Vec<String>) {
    let nums = Channel::new().unwrap();
    let labels = Channel::new().unwrap();
    let (n, unit, got) = multiproc::parallel!(
        CspProcess::os_process(source, (nums.writer(), 5)).start_method(method),
        CspProcess::os_process(label, (nums.reader(), labels.writer())).start_method(method),
        CspProcess::os_process(collect, labels.reader()).start_method(method),
    )
    .unwrap();
    assert_eq!(unit, Outcome::Done(()));
    (n.value().unwrap(), got.value().unwrap())
}

fn expected() -> (u32, Vec<String>) {
    (5, (1..=5).map(|i| format!("#{i}")).collect())
}

#[test]
fn three_os_stages_spawn() {
    watchdog(Duration::from_secs(120), || {
        assert_eq!(three_stages(StartMethod::Spawn), expected());
    });
}

#[test]
fn three_os_stages_fork() {
    // Fork is refused once the parent has threads (the test harness has
    // some), so the network runs in a single-threaded spawned child.
    watchdog(Duration::from_secs(120), || {
        let mut p = multiproc::Process::new(fork_child, ()).start_method(StartMethod::Spawn);
        p.start().unwrap();
        let out = p.join_timeout(Duration::from_secs(100)).unwrap();
        assert_eq!(out, expected());
    });
}

fn fork_child(_: ()) -> (u32, Vec<String>) {
    three_stages(StartMethod::Fork)
}

/// Threads and OS processes mixed in one tuple: the OS process starts
/// first, the closure thread captures a local.
#[test]
fn threads_and_os_processes_mixed() {
    watchdog(Duration::from_secs(120), || {
        let nums = Channel::new().unwrap();
        let factor = 10u32;
        let (n, sum) = (
            CspProcess::os_process(source, (nums.writer(), 4)).start_method(StartMethod::Spawn),
            CspProcess::thread(
                move |inp: Reader<u32>| {
                    let mut sum = 0u64;
                    while let Ok(x) = inp.read() {
                        sum += u64::from(x * factor);
                    }
                    Ok(sum)
                },
                nums.reader(),
            ),
        )
            .parallel()
            .unwrap();
        assert_eq!(n.value(), Some(4));
        assert_eq!(sum.value(), Some(100));
    });
}

/// A failing process's error comes back (after every process ended), and
/// its channels are poisoned so the rest of the network stops.
#[test]
fn first_error_in_tuple_order() {
    watchdog(Duration::from_secs(120), || {
        let ch = Channel::<u32>::new().unwrap();
        let r = multiproc::parallel!(
            CspProcess::os_process(fails, ()).start_method(StartMethod::Spawn),
            CspProcess::thread(|r: Reader<u32>| r.read(), ch.reader()),
            CspProcess::thread(
                |w: Writer<u32>| {
                    w.poison();
                    Ok(())
                },
                ch.writer()
            ),
        );
        match r {
            Err(ProcessError::Channel { error, .. }) => {
                assert!(matches!(error, ChannelError::Timeout))
            }
            other => panic!("expected the timeout of the first process, got {other:?}"),
        }
    });
}

/// A single process is a 1-tuple.
#[test]
fn one_tuple() {
    let (x,) = multiproc::parallel!(CspProcess::thread(
        |s: String| Ok(s.len()),
        "four".to_string()
    ))
    .unwrap();
    assert_eq!(x.value(), Some(4));
}
