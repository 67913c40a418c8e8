//! The process pool: `Pool` of two workers (default settings, so the
//! spawn start method) against two forked workers answering framed tasks
//! over socketpairs.
//!
//! * `pool.map.chunksize1_100k`: `map_chunked(square, 0..N, 1)`, N = 100k
//!   (10k in quick mode); ns per task. Raw: every task a frame of one
//!   `u64` (4-byte big-endian length + payload), answered by a frame with
//!   its square; tasks dealt to the two workers in turn, up to 32 frames
//!   in flight per worker, new tasks sent 16 frames to a write as the
//!   answers come in (the worker answers each task with a write of its
//!   own).
//! * `pool.map.default_100k`: `map(square, 0..N)` (Python's default chunk
//!   size: about four chunks per worker); ns per task. Raw: the same
//!   chunks, one frame of `u64`s each.
//! * `pool.apply_async.roundtrip`: `apply_async(square, i)?.get()` in a
//!   loop, µs per round trip. Raw: a one-task frame to one worker and its
//!   answer.
//! * `pool.pool2.start_shutdown`: `Pool::new(2)`, `close`, `join`, µs.
//!   Raw: `posix_spawn` of the bench binary twice (it exits at the top of
//!   `main`, as in `process.spawn`) and `waitpid` for both.
//!
//! A pool using the spawn start method keeps a driver thread while it
//! lives, and the raw floors fork: every crate measurement makes its pool
//! and drops it (which joins the thread) before the next raw one runs, and
//! the map rows warm the pool up before the clock starts with one map of
//! the same size and chunk size as the one timed. The raw workers live
//! for the whole row (after an untimed warm-up map), so every timed raw
//! map runs on workers whose buffers are in place; the crate's warm-up map puts its
//! workers (and its driver's buffers) in the same state, so both sides'
//! figures are the per-item cost, not the first touch of a new process's
//! memory. These rows still come after every other row that forks.

use std::collections::VecDeque;
use std::hint::black_box;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use multiproc::Pool;

use crate::harness::{
    BenchResult, Ctx, Figures, Row, Unit, alternate, micros_per_op, nanos_per_op,
};
use crate::process::RawSpawn;
use crate::raw::{self, FrameReader, RawChild};

const WORKERS: usize = 2;

/// Bytes of task frames the raw map keeps in flight per worker, and the
/// most frames: far below what a socket's buffer holds (which counts
/// every small write as a buffer of its own, around 1 KiB), so that
/// neither side can block the other for good.
const RAW_IN_FLIGHT: usize = 16 << 10;
const RAW_IN_FLIGHT_FRAMES: usize = 32;

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "pool.map.chunksize1_100k",
            unit: Unit::Nanos,
            run: map_chunksize1,
            python: true,
            round_trip: false,
        },
        Row {
            name: "pool.map.default_100k",
            unit: Unit::Nanos,
            run: map_default,
            python: true,
            round_trip: false,
        },
        Row {
            name: "pool.apply_async.roundtrip",
            unit: Unit::Micros,
            run: apply_async_roundtrip,
            python: true,
            round_trip: true,
        },
        Row {
            name: "pool.pool2.start_shutdown",
            unit: Unit::Micros,
            run: start_shutdown,
            python: true,
            round_trip: false,
        },
    ]
}

/// The task: trivial, so that the rows measure the pool.
fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn check_squares(v: &[u64], n: u64) -> BenchResult<()> {
    if v.len() as u64 != n {
        return Err(format!("{} results, wanted {n}", v.len()).into());
    }
    match (0..n).zip(v).find(|&(i, &r)| r != square(i)) {
        None => Ok(()),
        Some((i, r)) => Err(format!("result {i} is {r}, wanted {}", square(i)).into()),
    }
}

fn map_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    // (warm-up runs, measured runs, tasks per map)
    (1, ctx.pick(2, 5), ctx.pick(10_000, 100_000))
}

/// Python's default chunk size for `len` tasks: about four chunks per
/// worker.
fn default_chunksize(len: u64) -> u64 {
    len.div_ceil(WORKERS as u64 * 4).max(1)
}

/// ns per task of one map over `0..n` by a fresh, warmed-up pool
/// (`chunksize` `None`: the default).
fn crate_map(n: u64, chunksize: Option<usize>) -> BenchResult<f64> {
    let pool = Pool::new(WORKERS)?;
    let map = || match chunksize {
        Some(c) => pool.map_chunked(square, 0..n, c),
        None => pool.map(square, 0..n),
    };
    // Warm, as the raw workers are from the runs before this one.
    check_squares(&map()?, n)?;
    let t0 = Instant::now();
    let v = map()?;
    let ns = nanos_per_op(t0, n);
    check_squares(&v, n)?;
    drop(pool);
    Ok(ns)
}

// ---- raw workers ----

/// Answers every frame of `u64`s (little-endian) with the frame of their
/// squares, until an empty frame or end of stream.
fn raw_worker(fd: OwnedFd) {
    crate::harness::pin_child();
    raw::serve_frames(fd, |m, out| {
        for x in m.chunks_exact(8) {
            let x = u64::from_le_bytes(x.try_into().expect("8 bytes"));
            out.extend_from_slice(&square(x).to_le_bytes());
        }
    });
}

/// Forked [`raw_worker`]s, each on its own socketpair.
struct RawWorkers {
    fds: Vec<OwnedFd>,
    readers: Vec<FrameReader>,
    kids: Vec<RawChild>,
    frame: Vec<u8>,
}

impl RawWorkers {
    fn start(count: usize) -> BenchResult<Self> {
        let mut w = RawWorkers {
            fds: Vec::new(),
            readers: Vec::new(),
            kids: Vec::new(),
            frame: Vec::new(),
        };
        for _ in 0..count {
            let (mine, theirs) = raw::socketpair()?;
            w.kids.push(RawChild::fork(move || raw_worker(theirs))?);
            w.fds.push(mine);
            w.readers.push(FrameReader::new());
        }
        Ok(w)
    }

    /// Adds the frame of tasks `first..first + len` to what
    /// [`flush`](Self::flush) sends next.
    fn add(&mut self, first: u64, len: u64) {
        self.frame
            .extend_from_slice(&(len as u32 * 8).to_be_bytes());
        for x in first..first + len {
            self.frame.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// Sends worker `w` the frames added since the last flush, in one
    /// write.
    fn flush(&mut self, w: usize) -> BenchResult<()> {
        if !self.frame.is_empty() {
            raw::write_all(self.fds[w].as_fd(), &[&self.frame])?;
            self.frame.clear();
        }
        Ok(())
    }

    /// Sends worker `w` the tasks `first..first + len` in one frame.
    fn send(&mut self, w: usize, first: u64, len: u64) -> BenchResult<()> {
        self.add(first, len);
        self.flush(w)
    }

    /// Reads worker `w`'s next answer into `out`.
    fn recv(&mut self, w: usize, out: &mut [u64]) -> BenchResult<()> {
        let m = self.readers[w]
            .next(self.fds[w].as_fd())?
            .ok_or("raw worker: end of stream")?;
        if m.len() != out.len() * 8 {
            return Err("raw worker: answer of the wrong size".into());
        }
        for (o, x) in out.iter_mut().zip(m.chunks_exact(8)) {
            *o = u64::from_le_bytes(x.try_into()?);
        }
        Ok(())
    }

    /// ns per task of a map over `0..n` in chunks of `chunk`, dealt to
    /// the workers in turn.
    fn map(&mut self, n: u64, chunk: u64) -> BenchResult<f64> {
        let nchunks = n.div_ceil(chunk);
        let window = (RAW_IN_FLIGHT / (4 + 8 * chunk as usize)).clamp(1, RAW_IN_FLIGHT_FRAMES);
        let mut results = vec![0u64; n as usize];
        let mut pending: Vec<VecDeque<u64>> = vec![VecDeque::new(); self.fds.len()];
        let mut next = 0;
        let span = |c: u64| (c * chunk, chunk.min(n - c * chunk));
        // Answers are read in batches of half the window per worker, and
        // the tasks replacing them sent in one write.
        let batch = (window / 2).max(1);
        let t0 = Instant::now();
        for (w, p) in pending.iter_mut().enumerate() {
            while p.len() < window && next < nchunks {
                let (first, len) = span(next);
                self.add(first, len);
                p.push_back(next);
                next += 1;
            }
            self.flush(w)?;
        }
        while pending.iter().any(|p| !p.is_empty()) {
            for (w, p) in pending.iter_mut().enumerate() {
                let take = batch.min(p.len());
                for _ in 0..take {
                    let c = p.pop_front().ok_or("no pending chunk")?;
                    let (first, len) = span(c);
                    self.recv(w, &mut results[first as usize..(first + len) as usize])?;
                }
                for _ in 0..take {
                    if next == nchunks {
                        break;
                    }
                    let (first, len) = span(next);
                    self.add(first, len);
                    p.push_back(next);
                    next += 1;
                }
                self.flush(w)?;
            }
        }
        let ns = nanos_per_op(t0, n);
        check_squares(&results, n)?;
        Ok(ns)
    }

    /// µs per round trip of `k` one-task frames to worker 0.
    fn roundtrips(&mut self, k: u64) -> BenchResult<f64> {
        let mut out = [0u64];
        let t0 = Instant::now();
        for i in 0..k {
            self.send(0, i, 1)?;
            self.recv(0, &mut out)?;
            if out[0] != square(i) {
                return Err("raw worker: wrong answer".into());
            }
        }
        Ok(micros_per_op(t0, k))
    }

    /// Stops the workers and reaps them.
    fn finish(mut self) -> BenchResult<()> {
        for fd in &self.fds {
            raw::write_all(fd.as_fd(), &[&[0u8; 4]])?;
        }
        for kid in self.kids.drain(..) {
            kid.wait()?;
        }
        Ok(())
    }
}

// ---- rows ----

fn map_chunksize1(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = map_sizes(ctx);
    let mut workers = RawWorkers::start(WORKERS)?;
    let figures = alternate(warm, reps, || crate_map(n, Some(1)), || workers.map(n, 1))?;
    workers.finish()?;
    Ok(figures)
}

fn map_default(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = map_sizes(ctx);
    let mut workers = RawWorkers::start(WORKERS)?;
    let figures = alternate(
        warm,
        reps,
        || crate_map(n, None),
        || workers.map(n, default_chunksize(n)),
    )?;
    workers.finish()?;
    Ok(figures)
}

fn apply_async_roundtrip(ctx: &Ctx) -> BenchResult<Figures> {
    // (warm-up batches, measured batches, round trips per batch)
    let (warm, reps, k) = (1, ctx.pick(3, 7), ctx.pick(200u64, 2_000));
    let mut workers = RawWorkers::start(1)?;
    let figures = alternate(
        warm,
        reps,
        || {
            let pool = Pool::builder()
                .processes(WORKERS)
                .initializer(crate::harness::pin_child_init, ())
                .build()?;
            check_squares(&pool.map(square, 0..1000u64)?, 1000)?;
            let t0 = Instant::now();
            for i in 0..k {
                let r = pool.apply_async(square, i)?.get()?;
                if black_box(r) != square(i) {
                    return Err("pool: wrong answer".into());
                }
            }
            let us = micros_per_op(t0, k);
            drop(pool);
            Ok(us)
        },
        || workers.roundtrips(k),
    )?;
    workers.finish()?;
    Ok(figures)
}

fn start_shutdown(ctx: &Ctx) -> BenchResult<Figures> {
    let spawn = RawSpawn::new()?;
    alternate(
        ctx.pick(1, 2),
        ctx.pick(3, 11),
        || {
            let t0 = Instant::now();
            let pool = Pool::new(WORKERS)?;
            pool.close();
            pool.join()?;
            let us = micros_per_op(t0, 1);
            drop(pool);
            Ok(us)
        },
        || {
            let t0 = Instant::now();
            let pids = [spawn.start()?, spawn.start()?];
            for pid in pids {
                RawSpawn::join(pid)?;
            }
            Ok(micros_per_op(t0, 1))
        },
    )
}
