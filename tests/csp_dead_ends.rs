//! The ends of a process that dies (`SIGKILL`) count as retired: the
//! channel's other parties see `Retired` once no live process holds an end
//! of that side, outside `parallel` (ends passed with `Process::new`) as
//! inside, where `parallel` also poisons the channels of a process that
//! fails (see the module docs of `multiproc::csp`). Both start methods.

mod common;

use std::time::Duration;

use common::{both, ensure, start};
use multiproc::Process;

/// Starts `f` with `end` and waits until it holds it (an end counts for
/// its sender until the receiver has decoded it).
fn start_holding<E>(f: fn((E, Writer<()>)), end: E, fork: bool) -> Result<Process<()>, String>
where
    E: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let ready = Channel::<()>::new().map_err(|e| e.to_string())?;
    let p = start(f, (end, ready.writer()), fork)?;
    ready
        .reader()
        .read_timeout(Duration::from_secs(30))
        .map_err(|e| format!("the child did not start: {e}"))?;
    Ok(p)
}
use multiproc::csp::{Channel, ChannelError, CspProcess, ProcessError, Reader, Writer, parallel};

/// Holds a writer and never writes: says it is ready (it has its end),
/// then sleeps until killed.
fn idle_writer((w, ready): (Writer<u32>, Writer<()>)) {
    let _keep = w;
    let _ = ready.write(&());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Holds a reader and never reads: says it is ready, then sleeps until
/// killed.
fn idle_reader((r, ready): (Reader<u32>, Writer<()>)) {
    let _keep = r;
    let _ = ready.write(&());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn killed_writer_retires(fork: bool) -> Result<(), String> {
    let c = Channel::<u32>::new().map_err(|e| e.to_string())?;
    let r = c.reader();
    let mut p = start_holding(idle_writer, c.writer(), fork)?;
    // Our own writer goes: only the child's remains.
    drop(c);
    let got = r.read_timeout(Duration::from_millis(200));
    ensure(
        matches!(got, Err(ChannelError::Timeout)),
        format!("while the writer lives: {got:?}"),
    )?;
    p.kill().map_err(|e| e.to_string())?;
    let got = r.read_timeout(Duration::from_secs(20));
    ensure(
        matches!(got, Err(ChannelError::Retired)),
        format!("after the kill: {got:?}"),
    )?;
    let _ = p.join_timeout(Duration::from_secs(20));
    Ok(())
}

fn killed_reader_retires(fork: bool) -> Result<(), String> {
    let c = Channel::<u32>::new().map_err(|e| e.to_string())?;
    let w = c.writer();
    let mut p = start_holding(idle_reader, c.reader(), fork)?;
    drop(c);
    p.kill().map_err(|e| e.to_string())?;
    let got = w.write_timeout(&1, Duration::from_secs(20));
    ensure(
        matches!(got, Err(ChannelError::Retired)),
        format!("after the kill: {got:?}"),
    )?;
    let _ = p.join_timeout(Duration::from_secs(20));
    Ok(())
}

fn killed_one_of_two_writers_keeps_the_channel(fork: bool) -> Result<(), String> {
    let c = Channel::<u32>::new().map_err(|e| e.to_string())?;
    let (r, w) = (c.reader(), c.writer());
    let mut p = start_holding(idle_writer, c.writer(), fork)?;
    drop(c);
    p.kill().map_err(|e| e.to_string())?;
    let _ = p.join_timeout(Duration::from_secs(20));
    // Released by whoever waits next; the live writer still writes.
    let got = r.read_timeout(Duration::from_millis(300));
    ensure(
        matches!(got, Err(ChannelError::Timeout)),
        format!("one writer left: {got:?}"),
    )?;
    let t = std::thread::spawn(move || w.write(&7));
    let got = r.read_timeout(Duration::from_secs(20));
    ensure(
        matches!(got, Ok(7)),
        format!("from the live writer: {got:?}"),
    )?;
    t.join()
        .map_err(|_| "writer thread")?
        .map_err(|e| e.to_string())?;
    // Now no writer is left at all.
    let got = r.read_timeout(Duration::from_secs(20));
    ensure(
        matches!(got, Err(ChannelError::Retired)),
        format!("every writer gone: {got:?}"),
    )
}

#[test]
fn a_killed_writer_process_retires_its_end() {
    both(killed_writer_retires);
}

#[test]
fn a_killed_reader_process_retires_its_end() {
    both(killed_reader_retires);
}

#[test]
fn a_killed_writer_process_leaves_the_live_writers() {
    both(killed_one_of_two_writers_keeps_the_channel);
}

/// Kills itself (`SIGKILL`) once it holds its end.
fn self_killer(_inp: Reader<u32>) -> Result<u32, ChannelError> {
    // SAFETY: kill(2) on our own pid with a valid signal.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    Ok(0)
}

fn killed_inside_parallel(fork: bool) -> Result<(), String> {
    let c = Channel::<u32>::new().map_err(|e| e.to_string())?;
    let r = parallel([
        CspProcess::function(self_killer, c.reader()).start_method(common::method(fork)),
        CspProcess::function(|w: Writer<u32>| w.write(&1).map(|_| 0), c.writer()),
    ]);
    ensure(
        matches!(r, Err(ProcessError::Join { .. })),
        format!("parallel: {r:?}"),
    )?;
    // Its end was released like any dead process's, and `parallel`, which
    // propagates every failure, poisoned the channel.
    ensure(c.is_poisoned(), "the channel is not poisoned")
}

#[test]
fn a_process_killed_inside_parallel_fails_the_network() {
    both(killed_inside_parallel);
}
