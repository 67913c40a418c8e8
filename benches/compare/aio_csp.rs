//! The `tokio` feature for CSP channel ends: `aio.csp.pingpong`, a round
//! trip over two rendezvous channels (shared memory) to an OS process that
//! echoes, `write_async`/`read_async` in a one-thread runtime against
//! `write`/`read` on the same ends, measured alternately (µs per round
//! trip). As in `aio.rs`, the "raw" column is the crate's own blocking
//! figure, so `vs_raw` is async / blocking.
//!
//! A channel operation that has to wait from async code starts a helper
//! thread for the process (see `csp/aio.rs` in the crate), which would
//! keep the fork rows after this one from forking: the row runs in a
//! forked child of the bench process.

use std::time::Instant;

use multiproc::Process;
use multiproc::csp::{Channel, Reader, Writer};

use crate::csp_light::in_forked_child;
use crate::harness::{BenchResult, Crew, Ctx, Figures, Row, Unit, alternate, micros_per_op};

pub fn rows() -> Vec<Row> {
    vec![Row {
        name: "aio.csp.pingpong",
        unit: Unit::Micros,
        run: |ctx| {
            in_forked_child(|| {
                let f = pingpong(ctx)?;
                Ok((f.krate, f.raw, None))
            })
        },
        python: false,
        round_trip: true,
    }]
}

/// Echoes what it reads on `ping` to `pong` until poisoned.
fn echo((ping, pong): (Reader<u64>, Writer<u64>)) {
    crate::harness::pin_child();
    while let Ok(v) = ping.read() {
        if pong.write(&v).is_err() {
            return;
        }
    }
}

fn check(got: u64, want: u64) -> BenchResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("echo: got {got}, want {want}").into())
    }
}

fn pingpong(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = (1, ctx.pick(3, 9), ctx.pick(200, 2000));
    let ping = Channel::<u64>::new()?;
    let pong = Channel::<u64>::new()?;
    let mut crew = Crew::new();
    crew.start(Process::new(echo, (ping.reader(), pong.writer())))?;
    let (w, r) = (ping.writer(), pong.reader());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let figures = alternate(
        warm,
        reps,
        || {
            rt.block_on(async {
                let t0 = Instant::now();
                for i in 0..n {
                    w.write_async(&i).await?;
                    check(r.read_async().await?, i)?;
                }
                Ok(micros_per_op(t0, n))
            })
        },
        || {
            let t0 = Instant::now();
            for i in 0..n {
                w.write(&i)?;
                check(r.read()?, i)?;
            }
            Ok(micros_per_op(t0, n))
        },
    )?;
    w.poison();
    crew.join()?;
    Ok(figures)
}
