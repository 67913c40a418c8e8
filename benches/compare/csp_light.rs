//! Lightweight CSP processes (`CspProcess::light`): commstime and a token
//! ring.
//!
//! * `csp.commstime.light`: the commstime ring of `csp.rs` with its four
//!   processes lightweight (on one worker thread, over `threads_only`
//!   channels), ns per channel communication. Raw floor: the bare
//!   context switch of the coroutines underneath (corosensei), four
//!   switches per cycle with the value passed through a cell, i.e. what a
//!   communication would cost if the channel were free.
//! * `csp.ring.light`: a ring of lightweight processes (10,000 in quick
//!   mode, 1,000,000 in a full run) passing a token round 10 times
//!   (2 in quick mode), ns per hop, timed after a first lap (during which
//!   every process starts). Raw floor: a ring
//!   of 10,000 bare corosensei coroutines (a stack each: a million would
//!   exceed the kernel's map count) passing the token through a cell.
//!
//! Beside them, measured in the same interleaving: Go's unbuffered
//! channels on the same networks (`benches/go/`, see `go.rs`), reported
//! as `<row>.<mode>.go` with a `vs_go` ratio (crate / Go), left out with a
//! note where `go` is missing; and for commstime PyCSP's greenlets mode
//! (`pycsp.greenlets`, needs `pip install greenlet`) as the Python figure.
//!
//! Each row runs in a forked child of the bench process: the worker
//! threads of lightweight processes live as long as their process, and the
//! bench process must stay single-threaded for the rows that fork after
//! these (the next placement's process rows).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult};
use multiproc::csp::{Channel, ChannelError, CspProcess, Outcome, Reader, Writer, parallel};

use crate::csp::{delta, prefix, succ};
use crate::go::{self, GoProgram};
use crate::harness::{
    self, BenchResult, Ctx, Figures, Row, Unit, alternate, alternate_all, nanos_per_op,
};

/// A row's measurement, given the Go program of its network (`None`
/// where `go` is missing): the crate's, the raw floor's and Go's figures.
type Measure = fn(&Ctx, Option<&GoProgram>) -> BenchResult<(f64, f64, Option<f64>)>;

/// Builds the Go program `go` (in the bench process: the build is cached
/// in `target/go/`), then measures `row` in a forked child.
fn in_child(ctx: &Ctx, go: &str, row: Measure) -> BenchResult<Figures> {
    let prog = go::build(go)?;
    in_forked_child(|| row(ctx, prog.as_ref()))
}

/// Runs `measure` in a forked child (see [`harness::in_forked_child`]):
/// the crate's, the raw floor's and Go's figures (Go reported as `go`).
pub fn in_forked_child(
    measure: impl FnOnce() -> BenchResult<(f64, f64, Option<f64>)>,
) -> BenchResult<Figures> {
    harness::in_forked_child(|| {
        let (krate, raw, go) = measure()?;
        Ok(Figures {
            krate,
            raw,
            extra: go.map(|g| vec![("go", g)]).unwrap_or_default(),
        })
    })
}

/// The medians of the crate, the raw floor and (if built) Go, run
/// alternately.
fn with_go(
    warm: usize,
    reps: usize,
    mut krate: impl FnMut() -> BenchResult<f64>,
    mut raw: impl FnMut() -> BenchResult<f64>,
    go: Option<(&GoProgram, &[u64])>,
) -> BenchResult<(f64, f64, Option<f64>)> {
    match go {
        None => {
            let f = alternate(warm, reps, krate, raw)?;
            Ok((f.krate, f.raw, None))
        }
        Some((prog, args)) => {
            let mut go = || prog.run(args);
            let m = alternate_all(warm, reps, &mut [&mut krate, &mut raw, &mut go])?;
            Ok((m[0], m[1], Some(m[2])))
        }
    }
}

/// Unmeasured cycles before the clock starts.
const WARM: u64 = 100;

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "csp.commstime.light",
            unit: Unit::Nanos,
            run: |ctx| in_child(ctx, "commstime", commstime_light),
            python: true,
            round_trip: false,
        },
        Row {
            name: "csp.ring.light",
            unit: Unit::Nanos,
            run: |ctx| in_child(ctx, "ring", ring_light),
            python: false,
            round_trip: false,
        },
    ]
}

/// Times `n` cycles; ns per communication (four per cycle); poisons.
fn consumer((inp, n): (Reader<u64>, u64)) -> Result<f64, ChannelError> {
    for _ in 0..WARM {
        inp.read()?;
    }
    let t0 = Instant::now();
    for _ in 0..n {
        inp.read()?;
    }
    let ns = nanos_per_op(t0, 4 * n);
    inp.poison();
    Ok(ns)
}

fn chan() -> BenchResult<Channel<u64>> {
    Ok(Channel::builder().threads_only().build()?)
}

fn value(out: &[Outcome<f64>], i: usize) -> BenchResult<f64> {
    match out.get(i) {
        Some(Outcome::Done(v)) => Ok(*v),
        _ => Err("the timing process returned no value".into()),
    }
}

fn crate_commstime(n: u64) -> BenchResult<f64> {
    let (a, b, c, d) = (chan()?, chan()?, chan()?, chan()?);
    let out = parallel([
        CspProcess::light(prefix, (c.reader(), a.writer())),
        CspProcess::light(delta, (a.reader(), b.writer(), d.writer())),
        CspProcess::light(succ, (b.reader(), c.writer())),
        CspProcess::light(consumer, (d.reader(), n)),
    ])?;
    value(&out, 3)
}

/// Four coroutine switches per cycle, the value handed over in a cell.
fn raw_commstime(n: u64) -> BenchResult<f64> {
    let cell = Rc::new(Cell::new(0u64));
    let c = cell.clone();
    let stack = DefaultStack::new(64 * 1024)?;
    let mut co = Coroutine::with_stack(stack, move |y: &corosensei::Yielder<(), ()>, ()| {
        loop {
            c.set(c.get() + 1);
            y.suspend(());
        }
    });
    let mut cycle = || {
        for _ in 0..4 {
            let _ = co.resume(());
        }
    };
    for _ in 0..WARM {
        cycle();
    }
    let t0 = Instant::now();
    for _ in 0..n {
        cycle();
    }
    let ns = nanos_per_op(t0, 4 * n);
    std::hint::black_box(cell.get());
    Ok(ns)
}

fn commstime_light(ctx: &Ctx, go: Option<&GoProgram>) -> BenchResult<(f64, f64, Option<f64>)> {
    let (warm, reps, n) = (ctx.pick(0, 1), ctx.pick(2, 5), ctx.pick(5_000, 200_000));
    let args = [n];
    with_go(
        warm,
        reps,
        || crate_commstime(n),
        || raw_commstime(n),
        go.map(|g| (g, &args[..])),
    )
}

fn relay((inp, out): (Reader<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    loop {
        out.write(&(inp.read()? + 1))?;
    }
}

/// Sends the token round once (every process starts meanwhile), then
/// times `laps` more laps; ns per hop, or 0 if a hop went missing.
fn first((inp, out, n, laps): (Reader<u64>, Writer<u64>, u64, u64)) -> Result<f64, ChannelError> {
    out.write(&1)?;
    let mut token = inp.read()?;
    let t0 = Instant::now();
    for _ in 0..laps {
        out.write(&(token + 1))?;
        token = inp.read()?;
    }
    let ns = nanos_per_op(t0, n * laps);
    Ok(if token == n * (laps + 1) { ns } else { 0.0 })
}

/// ns per hop of a ring of `n` lightweight processes, `laps` times round.
fn crate_ring(n: usize, laps: u64) -> BenchResult<f64> {
    let chans: Vec<Channel<u64>> = (0..n)
        .map(|_| {
            Channel::builder()
                .threads_only()
                .waiters(2)
                .slot_size(16)
                .build()
        })
        .collect::<Result<_, _>>()?;
    let mut procs: Vec<CspProcess<f64>> = Vec::with_capacity(n);
    procs.push(CspProcess::light(
        first,
        (chans[n - 1].reader(), chans[0].writer(), n as u64, laps),
    ));
    for k in 1..n {
        procs.push(CspProcess::light(
            relay,
            (chans[k - 1].reader(), chans[k].writer()),
        ));
    }
    drop(chans);
    let out = parallel(procs)?;
    match out.first() {
        Some(Outcome::Done(ns)) if *ns > 0.0 => Ok(*ns),
        _ => Err("the ring did not count every hop".into()),
    }
}

/// ns per hop of a ring of `n` bare coroutines (one stack each).
fn raw_ring(n: usize, laps: u64) -> BenchResult<f64> {
    let token = Rc::new(Cell::new(0u64));
    let mut ring = (0..n)
        .map(|_| {
            let t = token.clone();
            let stack = DefaultStack::new(16 * 1024)?;
            Ok(Coroutine::with_stack(
                stack,
                move |y: &corosensei::Yielder<(), ()>, ()| {
                    loop {
                        t.set(t.get() + 1);
                        y.suspend(());
                    }
                },
            ))
        })
        .collect::<BenchResult<Vec<_>>>()?;
    let t0 = Instant::now();
    for _ in 0..laps {
        for co in ring.iter_mut() {
            if let CoroutineResult::Return(()) = co.resume(()) {
                return Err("a ring coroutine ended".into());
            }
        }
    }
    let hops = token.get();
    Ok(nanos_per_op(t0, hops))
}

fn ring_light(ctx: &Ctx, go: Option<&GoProgram>) -> BenchResult<(f64, f64, Option<f64>)> {
    let (n, laps) = (ctx.pick(10_000, 1_000_000), ctx.pick(2, 10));
    let args = [n as u64, laps];
    with_go(
        0,
        ctx.pick(1, 2),
        || crate_ring(n, laps),
        || raw_ring(10_000, laps),
        go.map(|g| (g, &args[..])),
    )
}
