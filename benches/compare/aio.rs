//! The `tokio` feature: async round trips against the blocking ones, to
//! the same echoing child over the same connection or queues, measured
//! alternately in one run (µs per round trip). The "raw" column of these
//! rows is the crate's own blocking figure, so `vs_raw` is async/blocking
//! (the target is at most 1.5).
//!
//! * `aio.connection.pingpong`: 64 bytes with `send_bytes`/`recv_bytes`
//!   on an `AsyncConnection` in a one-thread runtime, against the same
//!   calls on the blocking `Connection` underneath.
//! * `aio.queue.pingpong`: a `u64` through two queues to a child that
//!   echoes it (blocking `get`/`put`), `AsyncQueue::put`/`get` against
//!   `Queue::put`/`get`.
//!
//! Compiled with `--features tokio` (the CI builds the benches with all
//! features).

use std::time::Instant;

use multiproc::{Connection, Process, Queue, pipe};

use crate::harness::{BenchResult, Crew, Ctx, Figures, Row, Unit, alternate, micros_per_op};

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "aio.connection.pingpong",
            unit: Unit::Micros,
            run: connection_pingpong,
            python: false,
            round_trip: true,
        },
        Row {
            name: "aio.queue.pingpong",
            unit: Unit::Micros,
            run: queue_pingpong,
            python: false,
            round_trip: true,
        },
    ]
}

const SMALL: usize = 64;
const STOP: u64 = u64::MAX;

fn runtime() -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn sizes(ctx: &Ctx) -> (usize, usize, u64) {
    // (warm-up batches, measured batches, round trips per batch)
    (1, ctx.pick(3, 9), ctx.pick(200, 2000))
}

/// Echoes byte messages until an empty one.
fn echo_bytes(conn: Connection) {
    crate::harness::pin_child();
    loop {
        let m = conn.recv_bytes().expect("recv_bytes");
        if m.is_empty() {
            return;
        }
        conn.send_bytes(&m).expect("send_bytes");
    }
}

/// Echoes `u64`s from `ping` to `pong` until [`STOP`].
fn echo_queue((ping, pong): (Queue<u64>, Queue<u64>)) {
    crate::harness::pin_child();
    loop {
        let v = ping.get().expect("get");
        pong.put(v).expect("put");
        if v == STOP {
            return;
        }
    }
}

fn connection_pingpong(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    let (ours, theirs) = pipe()?;
    let mut crew = Crew::new();
    crew.start(Process::new(echo_bytes, theirs))?;
    let rt = runtime()?;
    let conn = {
        let _in = rt.enter();
        ours.into_async()?
    };
    let ping = [7u8; SMALL];
    let figures = alternate(
        warm,
        reps,
        || {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..n {
                    conn.send_bytes(&ping).await?;
                    if conn.recv_bytes().await?.len() != SMALL {
                        return Err("echo: bad reply".into());
                    }
                }
                Ok(micros_per_op(t0, n))
            })
        },
        || {
            let c = conn.get_ref();
            let t0 = Instant::now();
            for _ in 0..n {
                c.send_bytes(&ping)?;
                if c.recv_bytes()?.len() != SMALL {
                    return Err("echo: bad reply".into());
                }
            }
            Ok(micros_per_op(t0, n))
        },
    )?;
    conn.get_ref().send_bytes(&[])?;
    crew.join()?;
    Ok(figures)
}

fn queue_pingpong(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    let ping = Queue::<u64>::new()?;
    let pong = Queue::<u64>::new()?;
    let mut crew = Crew::new();
    crew.start(Process::new(echo_queue, (ping.clone(), pong.clone())))?;
    let rt = runtime()?;
    let (aping, apong) = {
        let _in = rt.enter();
        (ping.into_async()?, pong.into_async()?)
    };
    let check = |got: u64, want: u64| -> BenchResult<()> {
        if got == want {
            Ok(())
        } else {
            Err(format!("echo: got {got}, want {want}").into())
        }
    };
    let figures = alternate(
        warm,
        reps,
        || {
            rt.block_on(async {
                let t0 = Instant::now();
                for i in 0..n {
                    aping.put(i).await?;
                    check(apong.get().await?, i)?;
                }
                Ok(micros_per_op(t0, n))
            })
        },
        || {
            let (ping, pong) = (aping.get_ref(), apong.get_ref());
            let t0 = Instant::now();
            for i in 0..n {
                ping.put(i)?;
                check(pong.get()?, i)?;
            }
            Ok(micros_per_op(t0, n))
        },
    )?;
    aping.get_ref().put(STOP)?;
    check(apong.get_ref().get()?, STOP)?;
    crew.join()?;
    Ok(figures)
}
