//! CSP channels survive a process killed inside them: a party SIGKILLed at
//! each crash point of the channel protocol (a test-only hook,
//! `csp::crash_at`) must leave the others able to go on, with every
//! message delivered whole or not at all, never twice, and no spill
//! segment left behind; then the same under random kills.
//!
//! The random stress test runs ~20 s (at least 500 kills); set
//! `MULTIPROC_CSP_STRESS_SECS` for a longer run,
//! `MULTIPROC_CSP_STRESS_SEED` to replay a seed, and
//! `MULTIPROC_CSP_STRESS_VERBOSE` to watch it (with the channel's state).

mod common;

use std::time::{Duration, Instant};

use common::{both, ensure, eventually, join, start, watchdog};
use multiproc::csp::{Alternation, Channel, ChannelError, CrashPoint, Reader, Writer, crash_at};
use multiproc::{JoinError, Process};

/// Message `n`: `len` bytes (at least 8), starting with `n`.
fn msg(n: u64, len: usize) -> Vec<u8> {
    let mut v = common::pattern(len.max(8));
    v[..8].copy_from_slice(&n.to_le_bytes());
    v
}

fn tag(m: &[u8]) -> Option<u64> {
    (m.len() >= 8).then(|| u64::from_le_bytes(m[..8].try_into().unwrap()))
}

/// Checks that `m` is message `n` of `len` bytes, intact.
fn is_msg(m: &[u8], n: u64, len: usize) -> bool {
    m == msg(n, len)
}

/// Small messages travel inline; large ones (with `slot_size(256)`) spill
/// to a segment of their own.
const SMALL: usize = 64;
const LARGE: usize = 5000;

fn channel(buffer: usize) -> Channel<Vec<u8>> {
    Channel::builder()
        .buffer(buffer)
        .slot_size(256)
        .build()
        .unwrap()
}

/// Spill segments whose name carries `id` (the channel's).
fn segments(id: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("multiproc-csp-") && n.contains(id))
                .collect()
        })
        .unwrap_or_default()
}

fn chan_tag(w: &Writer<Vec<u8>>) -> String {
    w.spill_tag()
}

// ---- process bodies ---------------------------------------------------------

fn die_writing(args: (Writer<Vec<u8>>, CrashPoint, u64, usize)) {
    let (w, point, n, len) = args;
    crash_at(Some(point));
    let _ = w.write(&msg(n, len));
    crash_at(None);
}

fn die_reading(args: (Reader<Vec<u8>>, CrashPoint)) {
    let (r, point) = args;
    crash_at(Some(point));
    let _ = r.read();
    crash_at(None);
}

/// Retires `w` once `go` says so (by then the parent has dropped its
/// copy: this is the last writer), dying at `point`.
fn die_retiring(args: (Writer<Vec<u8>>, CrashPoint, Reader<Vec<u8>>)) {
    let (w, point, go) = args;
    let _ = go.read_timeout(Duration::from_secs(30));
    crash_at(Some(point));
    w.retire();
    crash_at(None);
}

fn survivor_reads(r: Reader<Vec<u8>>) -> Result<Vec<u8>, String> {
    r.read_timeout(Duration::from_secs(30))
        .map_err(|e| e.to_string())
}

fn survivor_writes(args: (Writer<Vec<u8>>, u64, usize)) -> Result<(), String> {
    let (w, n, len) = args;
    w.write_timeout(&msg(n, len), Duration::from_secs(30))
        .map_err(|e| e.to_string())
}

// ---- helpers -----------------------------------------------------------------

fn expect_killed<R: std::fmt::Debug + serde::de::DeserializeOwned>(
    p: &mut Process<R>,
) -> Result<(), String> {
    match p.join_timeout(common::LONG) {
        Err(JoinError::Killed { .. }) => Ok(()),
        other => Err(format!(
            "expected the child to die at its crash point, got {other:?}"
        )),
    }
}

fn wait_for(what: &str, f: impl FnMut() -> bool) -> Result<(), String> {
    ensure(
        eventually(common::LONG, f),
        format!("timed out waiting until {what}"),
    )
}

/// Nothing more to read within a short while.
fn nothing_more(r: &Reader<Vec<u8>>) -> Result<(), String> {
    match r.read_timeout(Duration::from_millis(300)) {
        Err(ChannelError::Timeout) => Ok(()),
        other => Err(format!(
            "expected nothing more, got {:?}",
            other.map(|m| tag(&m))
        )),
    }
}

fn read_is(r: &Reader<Vec<u8>>, n: u64, len: usize) -> Result<(), String> {
    let m = r
        .read_timeout(Duration::from_secs(20))
        .map_err(|e| format!("reading message {n}: {e}"))?;
    ensure(
        is_msg(&m, n, len),
        format!("expected message {n} intact, got {:?}", tag(&m)),
    )
}

fn no_segments(tag: &str) -> Result<(), String> {
    let left = segments(tag);
    ensure(
        left.is_empty(),
        format!("spill segments left behind: {left:?}"),
    )
}

/// Runs `case(fork, len)` for an inline and a spilled message size.
fn sizes(fork: bool, case: fn(bool, usize) -> Result<(), String>) -> Result<(), String> {
    case(fork, SMALL).map_err(|e| format!("{SMALL}-byte messages: {e}"))?;
    case(fork, LARGE).map_err(|e| format!("{LARGE}-byte messages: {e}"))
}

// ---- a writer dies -------------------------------------------------------------

/// Dies before changing anything, or after copying into a buffer slot it
/// never published: nothing was written, and the lock is usable again.
fn writer_dies_before_publishing(fork: bool, len: usize) -> Result<(), String> {
    for (point, buffer) in [(CrashPoint::Locked, 0), (CrashPoint::BufferCopied, 2)] {
        let ch = channel(buffer);
        let (r, w) = (ch.reader(), ch.writer());
        let stag = chan_tag(&w);
        let mut p = start(die_writing, (w.clone(), point, 100, len), fork)?;
        expect_killed(&mut p)?;
        nothing_more(&r).map_err(|e| format!("{point:?}: {e}"))?;
        // Still works: a write and a read.
        let mut q = start(survivor_reads, r.clone(), fork)?;
        w.write_timeout(&msg(1, len), Duration::from_secs(20))
            .map_err(|e| format!("{point:?}: write after the death: {e}"))?;
        let got = join(&mut q)??;
        ensure(
            is_msg(&got, 1, len),
            format!("{point:?}: wrong message after"),
        )?;
        drop((r, w, ch));
        no_segments(&stag).map_err(|e| format!("{point:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn writer_killed_before_publishing_writes_nothing() {
    both(|fork| sizes(fork, writer_dies_before_publishing));
}

/// Dies with its message posted (holding the lock, or asleep): the
/// message is delivered whole to the next reader, once.
fn writer_dies_posted(fork: bool, len: usize) -> Result<(), String> {
    for point in [CrashPoint::Posted, CrashPoint::Waiting] {
        let ch = channel(0);
        let (r, w) = (ch.reader(), ch.writer());
        let stag = chan_tag(&w);
        let mut p = start(die_writing, (w.clone(), point, 100, len), fork)?;
        expect_killed(&mut p)?;
        read_is(&r, 100, len).map_err(|e| format!("{point:?}: {e}"))?;
        nothing_more(&r).map_err(|e| format!("{point:?}: {e}"))?;
        drop((r, w, ch));
        no_segments(&stag).map_err(|e| format!("{point:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn writer_killed_with_message_posted_delivers_it_once() {
    both(|fork| sizes(fork, writer_dies_posted));
}

/// A reader waits; the writer dies copying into its record (the reader
/// keeps waiting and gets the next message) or right after completing it
/// (the reader gets the message, though nobody woke it).
fn writer_dies_handing_over(fork: bool, len: usize) -> Result<(), String> {
    for point in [CrashPoint::WriteCopied, CrashPoint::WriteCompleted] {
        let ch = channel(0);
        let (r, w) = (ch.reader(), ch.writer());
        let stag = chan_tag(&w);
        let mut q = start(survivor_reads, r.clone(), fork)?;
        wait_for("the reader waits", || r.waiting().0 == 1)?;
        let mut p = start(die_writing, (w.clone(), point, 100, len), fork)?;
        expect_killed(&mut p)?;
        let expected = if point == CrashPoint::WriteCompleted {
            100
        } else {
            w.write_timeout(&msg(7, len), Duration::from_secs(20))
                .map_err(|e| format!("{point:?}: {e}"))?;
            7
        };
        let got = join(&mut q)??;
        ensure(
            is_msg(&got, expected, len),
            format!("{point:?}: the reader got {:?}, not {expected}", tag(&got)),
        )?;
        nothing_more(&r).map_err(|e| format!("{point:?}: {e}"))?;
        drop((r, w, ch));
        no_segments(&stag).map_err(|e| format!("{point:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn writer_killed_handing_over_to_a_waiting_reader() {
    both(|fork| sizes(fork, writer_dies_handing_over));
}

// ---- a reader dies ----------------------------------------------------------

/// Dies holding the lock, with its record posted, or asleep on it: no
/// writer may hand a message to it.
fn reader_dies_waiting(fork: bool, len: usize) -> Result<(), String> {
    for point in [CrashPoint::Locked, CrashPoint::Posted, CrashPoint::Waiting] {
        let ch = channel(0);
        let (r, w) = (ch.reader(), ch.writer());
        let stag = chan_tag(&w);
        let mut p = start(die_reading, (r.clone(), point), fork)?;
        expect_killed(&mut p)?;
        match w.write_timeout(&msg(1, len), Duration::from_millis(300)) {
            Err(ChannelError::Timeout) => {}
            other => return Err(format!("{point:?}: a write to nobody gave {other:?}")),
        }
        let mut q = start(survivor_reads, r.clone(), fork)?;
        w.write_timeout(&msg(2, len), Duration::from_secs(20))
            .map_err(|e| format!("{point:?}: {e}"))?;
        let got = join(&mut q)??;
        ensure(is_msg(&got, 2, len), format!("{point:?}: wrong message"))?;
        drop((r, w, ch));
        no_segments(&stag).map_err(|e| format!("{point:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn reader_killed_while_waiting_receives_nothing() {
    both(|fork| sizes(fork, reader_dies_waiting));
}

/// The writer completed the reader's record, which died before copying
/// the message out: the message goes to the next reader.
fn reader_dies_before_copying_out(fork: bool, len: usize) -> Result<(), String> {
    let ch = channel(0);
    let (r, w) = (ch.reader(), ch.writer());
    let stag = chan_tag(&w);
    let mut p = start(die_reading, (r.clone(), CrashPoint::DoneUnread), fork)?;
    wait_for("the reader waits", || r.waiting().0 == 1)?;
    w.write_timeout(&msg(100, len), Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    expect_killed(&mut p)?;
    read_is(&r, 100, len)?;
    nothing_more(&r)?;
    drop((r, w, ch));
    no_segments(&stag)
}

#[test]
fn reader_killed_before_copying_out_passes_the_message_on() {
    both(|fork| sizes(fork, reader_dies_before_copying_out));
}

/// A writer waits; the reader dies after copying its message but before
/// completing the record (the writer keeps waiting, the next reader gets
/// it), or after completing it (the writer returns: the reader had the
/// value; it is gone with it).
fn reader_dies_taking(fork: bool, len: usize) -> Result<(), String> {
    for point in [CrashPoint::ReadCopied, CrashPoint::ReadCompleted] {
        let ch = channel(0);
        let (r, w) = (ch.reader(), ch.writer());
        let stag = chan_tag(&w);
        let mut q = start(survivor_writes, (w.clone(), 100, len), fork)?;
        wait_for("the writer waits", || r.waiting().1 == 1)?;
        let mut p = start(die_reading, (r.clone(), point), fork)?;
        expect_killed(&mut p)?;
        if point == CrashPoint::ReadCopied {
            read_is(&r, 100, len).map_err(|e| format!("{point:?}: {e}"))?;
        }
        join(&mut q)?.map_err(|e| format!("{point:?}: the writer: {e}"))?;
        nothing_more(&r).map_err(|e| format!("{point:?}: {e}"))?;
        drop((r, w, ch));
        no_segments(&stag).map_err(|e| format!("{point:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn reader_killed_taking_from_a_waiting_writer() {
    both(|fork| sizes(fork, reader_dies_taking));
}

/// Buffered: the reader dies having taken the front message (gone with
/// it), or while moving a waiting writer's message into the freed room:
/// before the writer was told (undone: the front stays, the writer still
/// waits) or after (done: the writer's message is in the buffer).
fn reader_dies_in_buffer(fork: bool, len: usize) -> Result<(), String> {
    for point in [
        CrashPoint::BufferTaken,
        CrashPoint::MoveIntent,
        CrashPoint::MoveCompleted,
    ] {
        let ch = channel(1);
        let (r, w) = (ch.reader(), ch.writer());
        let stag = chan_tag(&w);
        w.write(&msg(0, len)).map_err(|e| e.to_string())?;
        let mut q = start(survivor_writes, (w.clone(), 100, len), fork)?;
        wait_for("the writer waits", || r.waiting().1 == 1)?;
        let mut p = start(die_reading, (r.clone(), point), fork)?;
        expect_killed(&mut p)?;
        let expected: &[u64] = match point {
            CrashPoint::MoveIntent => &[0, 100],
            _ => &[100],
        };
        for &n in expected {
            read_is(&r, n, len).map_err(|e| format!("{point:?}: {e}"))?;
        }
        join(&mut q)?.map_err(|e| format!("{point:?}: the writer: {e}"))?;
        nothing_more(&r).map_err(|e| format!("{point:?}: {e}"))?;
        drop((r, w, ch));
        no_segments(&stag).map_err(|e| format!("{point:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn reader_killed_in_a_buffered_channel() {
    both(|fork| sizes(fork, reader_dies_in_buffer));
}

/// The last writer retires and dies before aborting the waiting reader:
/// the reader still learns that the channel is retired.
fn writer_dies_retiring(fork: bool) -> Result<(), String> {
    let ch = channel(0);
    let r = ch.reader();
    let mut q = start(survivor_reads, r.clone(), fork)?;
    wait_for("the reader waits", || r.waiting().0 == 1)?;
    let go = channel(0);
    let mut p = start(
        die_retiring,
        (ch.writer(), CrashPoint::Retiring, go.reader()),
        fork,
    )?;
    // Only now is the child's writer the last one: the parent's went with
    // `start`. (Retiring before that would not be the last writer's retire,
    // and the child would not reach its crash point.)
    go.writer()
        .write_timeout(&msg(0, 8), common::LONG)
        .map_err(|e| format!("go: {e}"))?;
    expect_killed(&mut p)?;
    match join(&mut q)? {
        Err(e) if e == ChannelError::Retired.to_string() => Ok(()),
        other => Err(format!("the reader got {other:?}, not Retired")),
    }
}

#[test]
fn writer_killed_retiring_still_retires() {
    both(writer_dies_retiring);
}

/// A writer dies after creating the segment of a large message, before
/// posting it: the segment goes once the channel is recovered.
fn writer_dies_spilling(fork: bool) -> Result<(), String> {
    let ch = channel(0);
    let (r, w) = (ch.reader(), ch.writer());
    let stag = chan_tag(&w);
    let mut p = start(
        die_writing,
        (w.clone(), CrashPoint::Spilled, 100, LARGE),
        fork,
    )?;
    expect_killed(&mut p)?;
    nothing_more(&r)?;
    drop((r, w, ch));
    no_segments(&stag)
}

#[test]
fn writer_killed_spilling_leaves_no_segment() {
    both(writer_dies_spilling);
}

// ---- an alternation dies ----------------------------------------------------

/// Offers message `n` on `out` and reads `inp`, dying at `point`.
fn die_selecting(args: (Writer<Vec<u8>>, Reader<Vec<u8>>, CrashPoint, u64, usize)) {
    let (out, inp, point, n, len) = args;
    crash_at(Some(point));
    let _ = Alternation::new()
        .output(&out, &msg(n, len), || ())
        .input(&inp, |_: Vec<u8>| ())
        .pri_select();
    crash_at(None);
}

/// An alternation killed holding a channel's lock just after posting a
/// watch (nothing offered: nothing delivered), or asleep with its offer
/// posted (the offered message is delivered whole, once); either way both
/// channels go on working.
fn alternation_dies(fork: bool, len: usize) -> Result<(), String> {
    for point in [CrashPoint::Posted, CrashPoint::AltSleeping] {
        let (a, b) = (channel(0), channel(0));
        let (ra, wa, rb, wb) = (a.reader(), a.writer(), b.reader(), b.writer());
        let stag = chan_tag(&wa);
        let mut p = start(
            die_selecting,
            (wa.clone(), rb.clone(), point, 100, len),
            fork,
        )?;
        expect_killed(&mut p)?;
        if point == CrashPoint::AltSleeping {
            read_is(&ra, 100, len).map_err(|e| format!("{point:?}: {e}"))?;
        }
        nothing_more(&ra).map_err(|e| format!("{point:?}: {e}"))?;
        match wb.write_timeout(&msg(1, len), Duration::from_millis(300)) {
            Err(ChannelError::Timeout) => {}
            other => {
                return Err(format!(
                    "{point:?}: a write to a dead alternation gave {other:?}"
                ));
            }
        }
        // Both channels still carry messages.
        let mut q = start(survivor_reads, ra.clone(), fork)?;
        wa.write_timeout(&msg(2, len), Duration::from_secs(20))
            .map_err(|e| format!("{point:?}: {e}"))?;
        ensure(
            is_msg(&join(&mut q)??, 2, len),
            format!("{point:?}: wrong message"),
        )?;
        let mut q = start(survivor_reads, rb.clone(), fork)?;
        wb.write_timeout(&msg(3, len), Duration::from_secs(20))
            .map_err(|e| format!("{point:?}: {e}"))?;
        ensure(
            is_msg(&join(&mut q)??, 3, len),
            format!("{point:?}: wrong message"),
        )?;
        drop((ra, wa, rb, wb, a, b));
        no_segments(&stag).map_err(|e| format!("{point:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn alternation_killed_inside_a_selection() {
    both(|fork| sizes(fork, alternation_dies));
}

// ---- random kills --------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Message `seq` of writer incarnation `inc`: its id in the first 8
/// bytes, its length chosen from the id (a few spill).
fn stress_len(id: u64) -> usize {
    let mut r = Rng(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    if r.next().is_multiple_of(10) {
        300 + (r.next() % 3000) as usize
    } else {
        8 + (r.next() % 120) as usize
    }
}

fn stress_id(inc: u32, seq: u32) -> u64 {
    (u64::from(inc) << 32) | u64::from(seq)
}

/// Writes numbered messages; after each write returns, records it in
/// `acked` (a queue: a put killed halfway commits nothing).
fn stress_writer(args: (Writer<Vec<u8>>, multiproc::Queue<u64>, u32)) {
    let (w, acked, inc) = args;
    for seq in 0.. {
        let id = stress_id(inc, seq);
        if let Err(e) = w.write(&msg(id, stress_len(id))) {
            panic!("a stress writer failed: {e}");
        }
        acked.put(id).unwrap();
    }
}

/// Reads messages; records each in `got` after checking it.
fn stress_reader(args: (Reader<Vec<u8>>, multiproc::Queue<u64>)) {
    let (r, got) = args;
    loop {
        match r.read() {
            Ok(m) => {
                let id = tag(&m).unwrap_or(u64::MAX);
                let id = if is_msg(&m, id, stress_len(id)) {
                    id
                } else {
                    u64::MAX
                };
                got.put(id).unwrap();
            }
            Err(e) => panic!("a stress reader failed: {e}"),
        }
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn random_kills(buffer: usize, secs: f64, min_kills: usize, seed: u64) {
    let ch = channel(buffer);
    // The parent keeps an end of each side, so that the channel cannot
    // retire whatever the workers do.
    let (keep_r, keep_w) = (ch.reader(), ch.writer());
    let stag = chan_tag(&keep_w);
    let acked: multiproc::Queue<u64> = multiproc::Queue::new().unwrap();
    let got: multiproc::Queue<u64> = multiproc::Queue::new().unwrap();
    let mut rng = Rng(seed | 1);
    let mut next_inc = 0u32;
    // (is_writer, process)
    let mut workers: Vec<(bool, Process<()>)> = Vec::new();
    let mut spawn = |writer: bool, workers: &mut Vec<(bool, Process<()>)>| {
        let mut p = if writer {
            next_inc += 1;
            Process::new(stress_writer, (ch.writer(), acked.clone(), next_inc))
        } else {
            Process::new(stress_reader, (ch.reader(), got.clone()))
        };
        p.start().unwrap();
        workers.push((writer, p));
    };
    for k in 0..6 {
        spawn(k < 3, &mut workers);
    }
    let (mut kills, mut reader_kills) = (0usize, 0usize);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end || kills < min_kills {
        std::thread::sleep(Duration::from_millis(rng.next() % 12));
        let i = (rng.next() % workers.len() as u64) as usize;
        let (writer, mut p) = workers.swap_remove(i);
        p.kill().unwrap();
        match p.join_timeout(Duration::from_secs(20)) {
            Err(JoinError::Killed { .. }) => {}
            other => panic!("a worker ended by itself: {other:?}"),
        }
        kills += 1;
        reader_kills += usize::from(!writer);
        spawn(writer, &mut workers);
        if std::env::var_os("MULTIPROC_CSP_STRESS_VERBOSE").is_some() && kills % 50 == 0 {
            eprintln!(
                "{kills} kills, {} acknowledged\n{}",
                acked.qsize(),
                ch.debug_state()
            );
        }
    }
    for (writer, mut p) in workers.drain(..) {
        p.kill().unwrap();
        let _ = p.join_timeout(Duration::from_secs(20));
        kills += 1;
        reader_kills += usize::from(!writer);
    }
    // What the dead left in the channel (orphaned messages) goes to the
    // last reader: this one.
    let r = keep_r;
    let verbose = std::env::var_os("MULTIPROC_CSP_STRESS_VERBOSE").is_some();
    if verbose {
        eprintln!("all killed; draining\n{}", ch.debug_state());
    }
    let mut drained = Vec::new();
    while let Ok(m) = r.read_timeout(Duration::from_millis(500)) {
        let id = tag(&m).unwrap();
        assert!(is_msg(&m, id, stress_len(id)), "a corrupt message");
        drained.push(id);
    }
    if verbose {
        eprintln!("drained {}", drained.len());
    }
    let mut seen = std::collections::HashMap::<u64, u32>::new();
    let mut reads = 0usize;
    while let Ok(id) = got.get_nowait() {
        assert_ne!(id, u64::MAX, "a reader got a corrupt message");
        *seen.entry(id).or_default() += 1;
        reads += 1;
    }
    for id in drained {
        *seen.entry(id).or_default() += 1;
    }
    let mut acks = Vec::new();
    while let Ok(id) = acked.get_nowait() {
        acks.push(id);
    }
    // Nothing read twice.
    for (id, n) in &seen {
        assert_eq!(*n, 1, "message {id:#x} read {n} times");
    }
    // Every acknowledged write read by someone, except at most one per
    // reader killed between taking a message and recording it.
    let lost = acks.iter().filter(|id| !seen.contains_key(id)).count();
    assert!(
        lost <= reader_kills,
        "{lost} acknowledged messages never read ({reader_kills} readers killed)"
    );
    drop((r, keep_w, ch));
    let left = segments(&stag);
    eprintln!(
        "csp stress (buffer {buffer}, seed {seed:#x}): {kills} kills ({reader_kills} readers), \
         {} acknowledged writes, {reads} recorded reads, {lost} lost with killed readers",
        acks.len()
    );
    assert!(left.is_empty(), "spill segments left behind: {left:?}");
    assert!(acks.len() > 100, "too little traffic to mean anything");
}

fn stress_seed() -> u64 {
    common::stress_seed("MULTIPROC_CSP_STRESS_SEED")
}

#[test]
fn random_kills_of_readers_and_writers() {
    let secs: f64 = env_or("MULTIPROC_CSP_STRESS_SECS", 10.0);
    watchdog(Duration::from_secs(secs as u64 + 170), move || {
        let seed = stress_seed();
        // Rendezvous, then buffered: at least 500 kills in all.
        random_kills(0, secs / 2.0, 250, seed);
        random_kills(4, secs / 2.0, 250, seed.rotate_left(17));
    });
}
