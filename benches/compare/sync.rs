//! Shared values and synchronization: `Value`, `Array`, `Lock`, `Event`.
//!
//! The raw floors live in shared anonymous memory (`mmap(MAP_SHARED)`)
//! with forked children, and use `futex(2)` or pthread directly (see
//! `raw.rs`). Every floor keeps the crate's layout where it matters: the
//! lock on one cache line, the data it guards on the next, as in a
//! `Value`'s segment.
//!
//! * `sync.value.locked_inc_2proc`: two children each add 1 to a shared
//!   `Value<u64>` N times, `*v.get_lock()? += 1`; ns per increment (over
//!   both). Raw: the same with a minimal futex mutex; `raw_robust`: with a
//!   robust process-shared pthread mutex (what the crate's locks were
//!   before they got a lock word of their own, `sys/owner_lock.rs`: owner
//!   identity in the word, death found by a waiter). Python: `with
//!   v.get_lock(): v.value += 1`.
//! * `sync.value.fetch_add_2proc`: the same with `Value::fetch_add`
//!   against `AtomicU64::fetch_add` on shared memory. Python has no
//!   lock-free counter: no Python figure.
//! * `sync.value.locked_inc_uncontended`: one process, `*v.get_lock()? +=
//!   1` in a loop, against the two raw mutexes; Python as above.
//! * `sync.lock.uncontended`: `Lock::acquire` + release in a loop, against
//!   the two raw mutexes; Python `multiprocessing.Lock`.
//! * `sync.event.pingpong`: round trip through two `Event`s (set / wait /
//!   clear) between two processes, µs. Raw: two futex words (store + wake
//!   / wait + clear, no spinning). The crate's side is measured inside a
//!   child of its own (see [`event_driver`]).
//! * `sync.array.sum_1m`: sum of a 1M-element `Array<f64>` under one
//!   `get_lock()`, µs, against summing a plain `Vec<f64>`; Python sums
//!   `arr.get_obj()` under one `get_lock()`.
//!
//! The children of the two-process rows wait on a start signal once they
//! are ready and stamp the time (`CLOCK_MONOTONIC`) when they finish: the
//! clock runs from the signal to the last child's last increment, so that
//! neither process start-up nor `join`/`waitpid` is measured.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Array, Connection, Event, Lock, Process, Semaphore, Value, pipe};

use crate::harness::{
    BenchResult, Crew, Ctx, Figures, Row, Unit, alternate, alternate_all, check_eq, go_when_ready,
    micros_per_op, monotonic_ns, nanos_per_op, nanos_per_op_between,
};
use crate::raw::{
    FutexMutex, FutexPingPong, Line, RawChild, RobustMutex, Shared, StartGate, Zeroable,
};

/// How long the two-process rows wait for their children to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

const SUM_LEN: usize = 1_000_000;

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "sync.value.locked_inc_2proc",
            unit: Unit::Nanos,
            run: locked_inc_2proc,
            python: true,
            round_trip: false,
        },
        Row {
            name: "sync.value.fetch_add_2proc",
            unit: Unit::Nanos,
            run: fetch_add_2proc,
            python: false,
            round_trip: false,
        },
        Row {
            name: "sync.value.locked_inc_uncontended",
            unit: Unit::Nanos,
            run: locked_inc_uncontended,
            python: true,
            round_trip: false,
        },
        Row {
            name: "sync.lock.uncontended",
            unit: Unit::Nanos,
            run: lock_uncontended,
            python: true,
            round_trip: false,
        },
        Row {
            name: "sync.event.pingpong",
            unit: Unit::Micros,
            run: event_pingpong,
            python: true,
            round_trip: true,
        },
        Row {
            name: "sync.array.sum_1m",
            unit: Unit::Micros,
            run: array_sum_1m,
            python: true,
            round_trip: false,
        },
    ]
}

/// The lock's `Result` with its guard dropped, so that `?` can box it.
macro_rules! locked {
    ($e:expr) => {
        $e.map_err(|e| e.without_guard())?
    };
}

// ---- two processes, one counter ----

fn contended_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    // (warm-up runs, measured runs, increments per child)
    (1, ctx.pick(3, 7), ctx.pick(10_000, 200_000))
}

/// A crate child's arguments: the counter, a semaphore it releases once
/// it is about to wait for `go`, `go`, and how many increments to make.
type IncArgs = (Value<u64>, Semaphore, Event, u64);

/// Returns when it finished ([`monotonic_ns`]).
fn inc_locked((v, ready, go, n): IncArgs) -> u64 {
    ready.release().expect("release ready");
    go.wait();
    for _ in 0..n {
        *v.get_lock().expect("get_lock") += 1;
    }
    monotonic_ns()
}

/// Returns when it finished ([`monotonic_ns`]).
fn inc_fetch_add((v, ready, go, n): IncArgs) -> u64 {
    ready.release().expect("release ready");
    go.wait();
    for _ in 0..n {
        v.fetch_add(1);
    }
    monotonic_ns()
}

/// Two crate children running `target`; ns per increment over both.
fn crate_two(target: fn(IncArgs) -> u64, n: u64) -> BenchResult<f64> {
    let v = Value::new(0u64)?;
    let ready = Semaphore::new(0)?;
    let go = Event::new()?;
    let mut crew = Crew::new();
    for _ in 0..2 {
        crew.start(Process::new(
            target,
            (v.clone(), ready.clone(), go.clone(), n),
        ))?;
    }
    let t0 = go_when_ready(&ready, &go, 2, READY_TIMEOUT)?;
    let end = crew.join()?.into_iter().max().unwrap_or(0);
    check_count(v.load(), 2 * n)?;
    Ok(nanos_per_op_between(t0, end, 2 * n))
}

fn check_count(got: u64, want: u64) -> BenchResult<()> {
    check_eq("counter", got, want)
}

/// The raw floor's shared page: start handshake, the latest finishing
/// time, a lock, the counter.
#[repr(C)]
struct Counter<M> {
    gate: StartGate,
    lock: Line<M>,
    count: Line<AtomicU64>,
}

// SAFETY: every field is zeroable and shared through `&` only.
unsafe impl<M: Zeroable> Zeroable for Counter<M> {}

/// What the raw floors lock with.
trait RawLock: Zeroable {
    /// Prepares a zeroed lock in shared memory before any child sees it.
    fn prepare(&self) -> std::io::Result<()>;
    fn lock(&self);
    fn unlock(&self);
}

impl RawLock for FutexMutex {
    fn prepare(&self) -> std::io::Result<()> {
        Ok(())
    }
    #[inline]
    fn lock(&self) {
        FutexMutex::lock(self)
    }
    #[inline]
    fn unlock(&self) {
        FutexMutex::unlock(self)
    }
}

impl RawLock for RobustMutex {
    fn prepare(&self) -> std::io::Result<()> {
        // SAFETY: `self` is in a fresh zeroed shared mapping that no other
        // process has yet and that outlives every user.
        unsafe { RobustMutex::init(self) }
    }
    #[inline]
    fn lock(&self) {
        RobustMutex::lock(self)
    }
    #[inline]
    fn unlock(&self) {
        RobustMutex::unlock(self)
    }
}

/// `*guard += 1` with a raw lock: a plain load and store under it.
fn raw_locked_incs<M: RawLock>(c: &Counter<M>, n: u64) {
    for _ in 0..n {
        c.lock.lock();
        let x = c.count.load(Ordering::Relaxed);
        c.count.store(x + 1, Ordering::Relaxed);
        c.lock.unlock();
    }
}

fn raw_fetch_adds<M>(c: &Counter<M>, n: u64) {
    for _ in 0..n {
        c.count.fetch_add(1, Ordering::SeqCst);
    }
}

/// Two forked children running `body` on one shared [`Counter`]; ns per
/// increment over both.
fn raw_two<M: RawLock>(n: u64, body: fn(&Counter<M>, u64)) -> BenchResult<f64> {
    let c = Shared::<Counter<M>>::new()?;
    c.lock.prepare()?;
    let c = &*c;
    let mut kids = Vec::with_capacity(2);
    for _ in 0..2 {
        kids.push(RawChild::fork(|| {
            c.gate.arrive();
            c.gate.wait_go();
            body(c, n);
            c.gate.finish();
        })?);
    }
    let t0 = c.gate.open_when_ready(2);
    for k in kids {
        k.wait()?;
    }
    check_count(c.count.load(Ordering::SeqCst), 2 * n)?;
    Ok(nanos_per_op_between(t0, c.gate.end(), 2 * n))
}

fn locked_inc_2proc(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = contended_sizes(ctx);
    let m = alternate_all(
        warm,
        reps,
        &mut [
            &mut || crate_two(inc_locked, n),
            &mut || raw_two::<FutexMutex>(n, raw_locked_incs),
            &mut || raw_two::<RobustMutex>(n, raw_locked_incs),
        ],
    )?;
    Ok(Figures {
        krate: m[0],
        raw: m[1],
        extra: vec![("robust", m[2])],
    })
}

fn fetch_add_2proc(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = contended_sizes(ctx);
    alternate(
        warm,
        reps,
        || crate_two(inc_fetch_add, n),
        || raw_two::<FutexMutex>(n, raw_fetch_adds),
    )
}

// ---- one process, no contention ----

fn uncontended_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    // (warm-up batches, measured batches, operations per batch)
    (1, ctx.pick(3, 9), ctx.pick(20_000, 1_000_000))
}

/// ns per `op` over `n` calls.
fn per_op(n: u64, mut op: impl FnMut() -> BenchResult<()>) -> BenchResult<f64> {
    let t0 = Instant::now();
    for _ in 0..n {
        op()?;
    }
    Ok(nanos_per_op(t0, n))
}

/// A raw lock and a counter on their own lines, for the uncontended
/// rows.
fn raw_counter<M: RawLock>() -> BenchResult<Shared<Counter<M>>> {
    let c = Shared::<Counter<M>>::new()?;
    c.lock.prepare()?;
    Ok(c)
}

fn locked_inc_uncontended(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = uncontended_sizes(ctx);
    let v = Value::new(0u64)?;
    let futex = raw_counter::<FutexMutex>()?;
    let robust = raw_counter::<RobustMutex>()?;
    let m = alternate_all(
        warm,
        reps,
        &mut [
            &mut || {
                per_op(n, || {
                    *locked!(black_box(&v).get_lock()) += 1;
                    Ok(())
                })
            },
            &mut || {
                per_op(n, || {
                    raw_locked_incs(black_box(&*futex), 1);
                    Ok(())
                })
            },
            &mut || {
                per_op(n, || {
                    raw_locked_incs(black_box(&*robust), 1);
                    Ok(())
                })
            },
        ],
    )?;
    let total = (warm + reps) as u64 * n;
    check_count(v.load(), total)?;
    check_count(futex.count.load(Ordering::Relaxed), total)?;
    check_count(robust.count.load(Ordering::Relaxed), total)?;
    Ok(Figures {
        krate: m[0],
        raw: m[1],
        extra: vec![("robust", m[2])],
    })
}

fn lock_uncontended(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = uncontended_sizes(ctx);
    let lock = Lock::new()?;
    let futex = Shared::<Line<FutexMutex>>::new()?;
    let robust = Shared::<Line<RobustMutex>>::new()?;
    robust.prepare()?;
    let m = alternate_all(
        warm,
        reps,
        &mut [
            &mut || {
                per_op(n, || {
                    drop(black_box(locked!(black_box(&lock).acquire())));
                    Ok(())
                })
            },
            &mut || {
                per_op(n, || {
                    let m = black_box(&**futex);
                    m.lock();
                    m.unlock();
                    Ok(())
                })
            },
            &mut || {
                per_op(n, || {
                    let m = black_box(&**robust);
                    m.lock();
                    m.unlock();
                    Ok(())
                })
            },
        ],
    )?;
    Ok(Figures {
        krate: m[0],
        raw: m[1],
        extra: vec![("robust", m[2])],
    })
}

// ---- Event ping-pong ----

fn pingpong_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    // (warm-up batches, measured batches, round trips per batch)
    (1, ctx.pick(3, 9), ctx.pick(200, 2_000))
}

/// Answers every `ping` with a `pong` until `stop` is set.
fn event_echo((ping, pong, stop): (Event, Event, Event)) {
    crate::harness::pin_child();
    loop {
        ping.wait();
        ping.clear();
        if stop.is_set() {
            return;
        }
        pong.set();
    }
}

/// The crate's pinging side, run in a child: for every `n` received on
/// `conn` (0 = stop), makes `n` round trips with an [`event_echo`] child
/// of its own and replies with µs per round trip.
///
/// An `Event` decides once per process whether waiting may spin (only
/// when the process can run on more than one CPU), so the pinging side
/// must be a process started in the row's mode: the bench process itself
/// started unpinned and keeps its first answer after pinning itself.
fn event_driver(conn: Connection) -> Result<(), String> {
    let run = || -> BenchResult<()> {
        let (ping, pong, stop) = (Event::new()?, Event::new()?, Event::new()?);
        let mut echo = Process::new(event_echo, (ping.clone(), pong.clone(), stop.clone()));
        echo.start()?;
        loop {
            let n: u64 = conn.recv()?;
            if n == 0 {
                break;
            }
            let t0 = Instant::now();
            for _ in 0..n {
                ping.set();
                pong.wait();
                pong.clear();
            }
            conn.send(&micros_per_op(t0, n))?;
        }
        stop.set();
        ping.set();
        echo.join()?;
        Ok(())
    };
    run().map_err(|e| e.to_string())
}

fn event_pingpong(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = pingpong_sizes(ctx);
    let (conn, theirs) = pipe()?;
    let mut driver = Process::new(event_driver, theirs);
    driver.start()?;
    let echo = FutexPingPong::start()?;
    let figures = alternate(
        warm,
        reps,
        || {
            conn.send(&n)?;
            Ok(conn.recv::<f64>()?)
        },
        || Ok(echo.round_trips(n)),
    )?;
    conn.send(&0u64)?;
    driver.join()??;
    echo.stop()?;
    Ok(figures)
}

// ---- Array sum ----

fn array_sum_1m(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps) = (ctx.pick(1, 3), ctx.pick(5, 31));
    let a = Array::<f64>::from_iter((0..SUM_LEN).map(|i| i as f64))?;
    let v: Vec<f64> = (0..SUM_LEN).map(|i| i as f64).collect();
    // 0 + 1 + … + (n-1), exact in an f64.
    let want = (SUM_LEN * (SUM_LEN - 1) / 2) as f64;
    let check = |s: f64| -> BenchResult<()> {
        if s == want {
            Ok(())
        } else {
            Err(format!("sum is {s}, wanted {want}").into())
        }
    };
    alternate(
        warm,
        reps,
        || {
            let t0 = Instant::now();
            let s: f64 = locked!(black_box(&a).get_lock()).iter().sum();
            let us = micros_per_op(t0, 1);
            check(black_box(s))?;
            Ok(us)
        },
        || {
            let t0 = Instant::now();
            let s: f64 = black_box(&v).iter().sum();
            let us = micros_per_op(t0, 1);
            check(black_box(s))?;
            Ok(us)
        },
    )
}
