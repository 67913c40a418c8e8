//! CSP channels (`multiproc::csp`): commstime and ping-pong.
//!
//! * `csp.commstime.*`: the Prefix → Delta → Succ → Consumer ring with a
//!   sequential Delta, µs per channel communication (four per cycle),
//!   timed inside the Consumer after a warm-up of 100 cycles.
//! * `csp.pingpong.*`: µs per round trip between two processes over two
//!   rendezvous channels, timed inside the pinging process.
//!
//! Flavours: `.processes` runs every CSP process as an OS process (spawn
//! start method; start-up is not timed). Its raw floor is the same ring of
//! forked processes over rendezvous slots in shared memory: a writer
//! stores the value, sets a futex flag and sleeps until the reader has
//! taken it (no spinning). Python: PyCSP 0.9.2 `@multiprocess`.
//! `.threads` runs them as threads over `threads_only` channels,
//! `.threads_shm` as threads over the default (shared-memory) channels;
//! their raw floor is `std::sync::mpsc::sync_channel(0)` between threads,
//! and Python is PyCSP `@process` (threads).
//!
//! The thread rows start threads in the bench process, so they must run
//! after every row that forks: [`process_rows`] and [`thread_rows`] are
//! placed apart in `main.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use multiproc::StartMethod;
use multiproc::csp::{Channel, ChannelError, CspProcess, Outcome, Reader, Writer, parallel};

use crate::harness::{BenchResult, Ctx, Figures, Row, Unit, alternate, micros_per_op};
use crate::raw::{FutexFlag, Line, RawChild, Shared, Zeroable};

/// Unmeasured cycles (or round trips) before the clock starts.
const WARM: u64 = 100;

/// The rows whose raw floors fork: they must run before any row that
/// starts a thread in the bench process.
pub fn process_rows() -> Vec<Row> {
    vec![
        Row {
            name: "csp.commstime.processes",
            unit: Unit::Micros,
            run: commstime_processes,
            python: true,
            round_trip: false,
        },
        Row {
            name: "csp.pingpong.processes",
            unit: Unit::Micros,
            run: pingpong_processes,
            python: true,
            round_trip: true,
        },
    ]
}

/// The rows that start threads in the bench process: they run last.
pub fn thread_rows() -> Vec<Row> {
    vec![
        Row {
            name: "csp.commstime.threads",
            unit: Unit::Micros,
            run: commstime_threads,
            python: true,
            round_trip: false,
        },
        Row {
            name: "csp.commstime.threads_shm",
            unit: Unit::Micros,
            run: commstime_threads_shm,
            python: true,
            round_trip: false,
        },
        Row {
            name: "csp.pingpong.threads",
            unit: Unit::Micros,
            run: pingpong_threads,
            python: true,
            round_trip: false,
        },
        Row {
            name: "csp.pingpong.threads_shm",
            unit: Unit::Micros,
            run: pingpong_threads_shm,
            python: true,
            round_trip: false,
        },
    ]
}

/// (warm-up networks, measured networks, cycles or round trips each)
fn sizes(ctx: &Ctx) -> (usize, usize, u64) {
    (ctx.pick(0, 1), ctx.pick(2, 5), ctx.pick(500, 5_000))
}

// ---- the crate's CSP processes ----

/// A commstime process (also run lightweight by `csp_light.rs`).
pub(crate) fn prefix(ends: (Reader<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, out) = ends;
    out.write(&0)?;
    loop {
        out.write(&inp.read()?)?;
    }
}

/// A commstime process (also run lightweight by `csp_light.rs`).
pub(crate) fn delta(ends: (Reader<u64>, Writer<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, a, b) = ends;
    loop {
        let x = inp.read()?;
        a.write(&x)?;
        b.write(&x)?;
    }
}

/// A commstime process (also run lightweight by `csp_light.rs`).
pub(crate) fn succ(ends: (Reader<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, out) = ends;
    loop {
        out.write(&(inp.read()? + 1))?;
    }
}

/// Times `n` cycles; returns µs per communication (four per cycle), then
/// poisons the ring.
fn consumer((inp, n): (Reader<u64>, u64)) -> Result<f64, ChannelError> {
    for _ in 0..WARM {
        inp.read()?;
    }
    let t0 = Instant::now();
    for _ in 0..n {
        inp.read()?;
    }
    let us = micros_per_op(t0, 4 * n);
    inp.poison();
    Ok(us)
}

/// Times `n` round trips; returns µs per round trip, then poisons.
fn pinger((out, inp, n): (Writer<u64>, Reader<u64>, u64)) -> Result<f64, ChannelError> {
    for i in 0..WARM {
        out.write(&i)?;
        inp.read()?;
    }
    let t0 = Instant::now();
    for i in 0..n {
        out.write(&i)?;
        inp.read()?;
    }
    let us = micros_per_op(t0, n);
    out.poison();
    Ok(us)
}

fn ponger((inp, out): (Reader<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    crate::harness::pin_child();
    loop {
        out.write(&inp.read()?)?;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Flavour {
    /// Threads over `threads_only` channels.
    Threads,
    /// Threads over the default (shared-memory) channels.
    ThreadsShm,
    /// OS processes, spawn start method.
    Processes,
}

fn chan(f: Flavour) -> BenchResult<Channel<u64>> {
    Ok(match f {
        Flavour::Threads => Channel::builder().threads_only().build()?,
        _ => Channel::new()?,
    })
}

fn placed(p: CspProcess<f64>, f: Flavour) -> CspProcess<f64> {
    if f == Flavour::Processes {
        p.start_method(StartMethod::Spawn)
    } else {
        p
    }
}

/// The value of the `i`th process of a finished network.
fn result_of(out: &[Outcome<f64>], i: usize) -> BenchResult<f64> {
    match out.get(i) {
        Some(Outcome::Done(v)) => Ok(*v),
        _ => Err("the timing process returned no value".into()),
    }
}

fn crate_commstime(f: Flavour, n: u64) -> BenchResult<f64> {
    let (a, b, c, d) = (chan(f)?, chan(f)?, chan(f)?, chan(f)?);
    let out = parallel([
        placed(CspProcess::function(prefix, (c.reader(), a.writer())), f),
        placed(
            CspProcess::function(delta, (a.reader(), b.writer(), d.writer())),
            f,
        ),
        placed(CspProcess::function(succ, (b.reader(), c.writer())), f),
        placed(CspProcess::function(consumer, (d.reader(), n)), f),
    ])?;
    result_of(&out, 3)
}

fn crate_pingpong(f: Flavour, n: u64) -> BenchResult<f64> {
    let (a, b) = (chan(f)?, chan(f)?);
    let out = parallel([
        placed(CspProcess::function(pinger, (a.writer(), b.reader(), n)), f),
        placed(CspProcess::function(ponger, (a.reader(), b.writer())), f),
    ])?;
    result_of(&out, 0)
}

// ---- raw floor between processes: rendezvous slots in shared memory ----

/// A one-to-one rendezvous channel: `write` completes once the reader has
/// taken the value, as a CSP channel's does.
#[repr(C)]
struct Slot {
    value: Line<AtomicU64>,
    full: Line<FutexFlag>,
    taken: Line<FutexFlag>,
}

// SAFETY: every field is zeroable and shared through `&` only.
unsafe impl Zeroable for Slot {}

impl Slot {
    fn write(&self, x: u64) {
        self.value.store(x, Ordering::Relaxed);
        self.full.set();
        self.taken.wait_clear();
    }

    fn read(&self) -> u64 {
        self.full.wait_clear();
        let x = self.value.load(Ordering::Relaxed);
        self.taken.set();
        x
    }
}

#[repr(C)]
struct Ring {
    a: Slot,
    b: Slot,
    c: Slot,
    d: Slot,
}

// SAFETY: every field is zeroable and shared through `&` only.
unsafe impl Zeroable for Ring {}

/// Commstime over [`Slot`]s: Prefix, Delta and Succ forked, the Consumer
/// in the bench process. Every process runs a fixed number of cycles (no
/// poison), so each one's last operation has a partner.
fn raw_commstime(n: u64) -> BenchResult<f64> {
    let cycles = WARM + n;
    let ring = Shared::<Ring>::new()?;
    let r = &*ring;
    let kids = [
        RawChild::fork(|| {
            // Prefix: writes `cycles` values, reads the last one back too.
            r.a.write(0);
            for _ in 1..cycles {
                let x = r.c.read();
                r.a.write(x);
            }
            r.c.read();
        })?,
        RawChild::fork(|| {
            for _ in 0..cycles {
                let x = r.a.read();
                r.b.write(x);
                r.d.write(x);
            }
        })?,
        RawChild::fork(|| {
            for _ in 0..cycles {
                let x = r.b.read();
                r.c.write(x + 1);
            }
        })?,
    ];
    for _ in 0..WARM {
        r.d.read();
    }
    let t0 = Instant::now();
    let mut last = 0;
    for _ in 0..n {
        last = r.d.read();
    }
    let us = micros_per_op(t0, 4 * n);
    for k in kids {
        k.wait()?;
    }
    if last != cycles - 1 {
        return Err(format!("raw commstime ended at {last}, wanted {}", cycles - 1).into());
    }
    Ok(us)
}

/// Ping-pong over two [`Slot`]s with a forked echo.
fn raw_pingpong(n: u64) -> BenchResult<f64> {
    let rounds = WARM + n;
    let pp = Shared::<[Slot; 2]>::new()?;
    let [ping, pong] = &*pp;
    let echo = RawChild::fork(|| {
        crate::harness::pin_child();
        for _ in 0..rounds {
            let x = ping.read();
            pong.write(x);
        }
    })?;
    for i in 0..WARM {
        ping.write(i);
        pong.read();
    }
    let t0 = Instant::now();
    for i in 0..n {
        ping.write(i);
        if pong.read() != i {
            return Err("raw ping-pong: bad echo".into());
        }
    }
    let us = micros_per_op(t0, n);
    echo.wait()?;
    Ok(us)
}

// SAFETY: an array of zeroable slots.
unsafe impl Zeroable for [Slot; 2] {}

// ---- raw floor between threads: sync_channel(0) ----

/// A thread relaying `inp` to `out` (adding `add`), after writing `first`.
fn relay(
    inp: Receiver<u64>,
    out: SyncSender<u64>,
    first: Option<u64>,
    add: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Some(x) = first
            && out.send(x).is_err()
        {
            return;
        }
        while let Ok(x) = inp.recv() {
            if out.send(x + add).is_err() {
                return;
            }
        }
    })
}

fn join_all(hs: impl IntoIterator<Item = std::thread::JoinHandle<()>>) -> BenchResult<()> {
    for h in hs {
        h.join().map_err(|_| "a baseline thread panicked")?;
    }
    Ok(())
}

fn sync_channel_commstime(n: u64) -> BenchResult<f64> {
    let (ta, ra) = sync_channel::<u64>(0);
    let (tb, rb) = sync_channel::<u64>(0);
    let (tc, rc) = sync_channel::<u64>(0);
    let (td, rd) = sync_channel::<u64>(0);
    let p = relay(rc, ta, Some(0), 0);
    let s = relay(rb, tc, None, 1);
    let dl = std::thread::spawn(move || {
        while let Ok(x) = ra.recv() {
            if tb.send(x).is_err() || td.send(x).is_err() {
                return;
            }
        }
    });
    let run = || -> BenchResult<f64> {
        for _ in 0..WARM {
            rd.recv()?;
        }
        let t0 = Instant::now();
        for _ in 0..n {
            rd.recv()?;
        }
        Ok(micros_per_op(t0, 4 * n))
    };
    let us = run();
    drop(rd);
    join_all([p, s, dl])?;
    us
}

fn sync_channel_pingpong(n: u64) -> BenchResult<f64> {
    let (ta, ra) = sync_channel::<u64>(0);
    let (tb, rb) = sync_channel::<u64>(0);
    let h = relay(ra, tb, None, 0);
    let run = || -> BenchResult<f64> {
        for i in 0..WARM {
            ta.send(i)?;
            rb.recv()?;
        }
        let t0 = Instant::now();
        for i in 0..n {
            ta.send(i)?;
            if rb.recv()? != i {
                return Err("sync_channel ping-pong: bad echo".into());
            }
        }
        Ok(micros_per_op(t0, n))
    };
    let us = run();
    drop(ta);
    join_all([h])?;
    us
}

// ---- rows ----

fn commstime_processes(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    alternate(
        warm,
        reps,
        || crate_commstime(Flavour::Processes, n),
        || raw_commstime(n),
    )
}

fn pingpong_processes(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    alternate(
        warm,
        reps,
        || crate_pingpong(Flavour::Processes, n),
        || raw_pingpong(n),
    )
}

fn commstime_threads(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    alternate(
        warm,
        reps,
        || crate_commstime(Flavour::Threads, n),
        || sync_channel_commstime(n),
    )
}

fn commstime_threads_shm(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    alternate(
        warm,
        reps,
        || crate_commstime(Flavour::ThreadsShm, n),
        || sync_channel_commstime(n),
    )
}

fn pingpong_threads(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    alternate(
        warm,
        reps,
        || crate_pingpong(Flavour::Threads, n),
        || sync_channel_pingpong(n),
    )
}

fn pingpong_threads_shm(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    alternate(
        warm,
        reps,
        || crate_pingpong(Flavour::ThreadsShm, n),
        || sync_channel_pingpong(n),
    )
}
