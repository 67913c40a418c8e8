//! The Manager: proxy round trips, atomic adds, start + shutdown.
//!
//! * `manager.list_append_child`, `manager.dict_set_get_child`,
//!   `manager.namespace_set_get_child`: a child process makes N proxy calls
//!   (`ListProxy::append`; `DictProxy::insert` + `get`; `Namespace::set` +
//!   `get`), one round trip each, ops/s. Python: the same through
//!   `multiprocessing.Manager()` proxies.
//! * `manager.list_append_4threads_child`: four threads of one child
//!   appending through clones of one proxy.
//! * `manager.atomic_add_2proc`: two children add 1 to one Namespace
//!   attribute N times each with the server-side `Namespace::add`, ops/s
//!   (from the start signal to the last child's last add); the count must
//!   come out exact. Python: `ns.counter += 1` (a get and a set, not
//!   atomic).
//! * `manager.atomic_add_2proc_count`: the counter's final value after
//!   the same run, with the same N on every side: Python's lost updates
//!   show as `vs_python` above 1.
//! * `manager.bytes_1mib`: a 1 MiB `Vec<u8>` stored in a Namespace
//!   attribute and read back (`Namespace::set` + `get`), µs per store and
//!   read. Raw: a forked echo of one 1 MiB frame over a socketpair (the
//!   same bytes each way, one round trip). Python: `ns.data = b` +
//!   `ns.data` with a 1 MiB `bytes`.
//! * `manager.start_shutdown`: `Manager::start` + `shutdown`, µs. Raw:
//!   `posix_spawn` of the bench binary, which exits at once, + `waitpid`
//!   (a server process cannot start and stop faster). Python:
//!   `multiprocessing.Manager()` + `shutdown()`.
//!
//! The raw floor of the proxy and add rows is a minimal server: a forked
//! process that `poll`s one socketpair per client, reads a framed 9-byte
//! request (op, value), appends to a `Vec<u64>` or adds to a counter in
//! its own memory, and answers with a framed 8-byte reply; its clients are
//! forked processes making the same number of round trips, timed from a
//! start signal to the last one's last reply. Every raw figure counts one
//! round trip per operation, as the crate does. It is the floor of a
//! socket transport: the crate's proxies on the same host exchange
//! requests and answers through a shared-memory mailbox beside the socket
//! (spinning briefly, then a futex), so they can beat it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::{DictProxy, Event, ListProxy, Manager, Namespace, Process, Semaphore};

use crate::harness::{
    BenchResult, Ctx, Figures, Row, Unit, alternate, check_eq, monotonic_ns, per_sec_between,
};
use crate::process::RawSpawn;
use crate::raw::{FrameReader, Line, RawChild, Shared, StartGate, Zeroable, socketpair, write_all};

/// How long to wait for a child's result or readiness.
const TIMEOUT: Duration = Duration::from_secs(300);

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "manager.list_append_child",
            unit: Unit::OpsPerSec,
            run: list_append_child,
            python: true,
            round_trip: true,
        },
        Row {
            name: "manager.list_append_4threads_child",
            unit: Unit::OpsPerSec,
            run: list_append_4threads_child,
            python: true,
            round_trip: true,
        },
        Row {
            name: "manager.dict_set_get_child",
            unit: Unit::OpsPerSec,
            run: dict_set_get_child,
            python: true,
            round_trip: true,
        },
        Row {
            name: "manager.namespace_set_get_child",
            unit: Unit::OpsPerSec,
            run: namespace_set_get_child,
            python: true,
            round_trip: true,
        },
        Row {
            name: "manager.atomic_add_2proc",
            unit: Unit::OpsPerSec,
            run: atomic_add_2proc,
            python: true,
            round_trip: false,
        },
        Row {
            name: "manager.atomic_add_2proc_count",
            unit: Unit::Count,
            run: atomic_add_2proc_count,
            python: true,
            round_trip: false,
        },
        Row {
            name: "manager.bytes_1mib",
            unit: Unit::Micros,
            run: bytes_1mib,
            python: true,
            round_trip: false,
        },
        Row {
            name: "manager.start_shutdown",
            unit: Unit::Micros,
            run: start_shutdown,
            python: true,
            round_trip: false,
        },
    ]
}

/// (warm-up runs, measured runs, operations per run)
fn sizes(ctx: &Ctx) -> (usize, usize, u64) {
    (ctx.pick(0, 1), ctx.pick(1, 3), ctx.pick(1_000, 10_000))
}

/// Increments per process of the count row, the same on every side
/// (`compare.py` uses these numbers too).
fn count_size(ctx: &Ctx) -> u64 {
    ctx.pick(1_000, 5_000)
}

// ---- the crate: proxies used from a child ----

/// Unmeasured round trips before the clock starts.
const WARM_OPS: u64 = 100;

fn list_append((list, n): (ListProxy<u64>, u64)) -> Result<f64, String> {
    crate::harness::pin_child();
    let run = || -> BenchResult<f64> {
        for i in 0..WARM_OPS {
            list.append(&i)?;
        }
        let t0 = Instant::now();
        for i in 0..n {
            list.append(&i)?;
        }
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    };
    run().map_err(|e| e.to_string())
}

/// Four threads appending through clones of one proxy (each borrows a
/// pooled connection of its own).
fn list_append_threads((list, n): (ListProxy<u64>, u64)) -> Result<f64, String> {
    crate::harness::pin_child();
    list.append(&0).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let list = list.clone();
            std::thread::spawn(move || -> Result<(), String> {
                for i in 0..n / 4 {
                    list.append(&i).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "an appending thread panicked")??;
    }
    Ok((n / 4 * 4) as f64 / t0.elapsed().as_secs_f64())
}

fn dict_set_get((d, n): (DictProxy<String, u64>, u64)) -> Result<f64, String> {
    crate::harness::pin_child();
    let run = || -> BenchResult<f64> {
        let keys: Vec<String> = (0..64).map(|i| format!("key{i}")).collect();
        for k in &keys {
            d.insert(k, &0)?;
        }
        let t0 = Instant::now();
        for i in 0..n {
            let k = &keys[(i % 64) as usize];
            d.insert(k, &i)?;
            std::hint::black_box(d.get(k)?);
        }
        Ok((2 * n) as f64 / t0.elapsed().as_secs_f64())
    };
    run().map_err(|e| e.to_string())
}

fn namespace_set_get((ns, n): (Namespace, u64)) -> Result<f64, String> {
    crate::harness::pin_child();
    let run = || -> BenchResult<f64> {
        ns.set("x", &0u64)?;
        let t0 = Instant::now();
        for i in 0..n {
            ns.set("x", &i)?;
            std::hint::black_box(ns.get::<u64>("x")?);
        }
        Ok((2 * n) as f64 / t0.elapsed().as_secs_f64())
    };
    run().map_err(|e| e.to_string())
}

/// Runs `f(args)` in a child process (the default start method) and
/// returns what it returned.
fn in_child<A>(f: fn(A) -> Result<f64, String>, args: A) -> BenchResult<f64>
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut p = Process::new(f, args);
    p.start()?;
    Ok(p.join_timeout(TIMEOUT)??)
}

// ---- the raw floor: a poll server and forked clients ----

const OP_APPEND: u8 = 0;
const OP_ADD: u8 = 1;

/// The raw run's shared page: start handshake, the latest finishing time,
/// and the server's final counter.
#[repr(C)]
struct Board {
    gate: StartGate,
    count: Line<AtomicU64>,
}

// SAFETY: every field is zeroable and shared through `&` only.
unsafe impl Zeroable for Board {}

/// One request/reply round trip: `[op, value as 8 LE bytes]`, framed; the
/// reply is a framed u64.
fn round_trip(fd: BorrowedFd<'_>, reader: &mut FrameReader, op: u8, v: u64) -> BenchResult<u64> {
    let mut req = [0u8; 4 + 9];
    req[..4].copy_from_slice(&9u32.to_be_bytes());
    req[4] = op;
    req[5..].copy_from_slice(&v.to_le_bytes());
    write_all(fd, &[&req])?;
    let reply = reader.next(fd)?.ok_or("raw server hung up")?;
    let bytes: [u8; 8] = reply.try_into().map_err(|_| "bad raw reply")?;
    Ok(u64::from_le_bytes(bytes))
}

/// The raw server: answers every connection until all have hung up, then
/// stores its counter in `board.count`.
fn raw_serve(fds: &[RawFd], board: &Board) -> BenchResult<()> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut readers: Vec<FrameReader> = fds.iter().map(|_| FrameReader::new()).collect();
    let mut list: Vec<u64> = Vec::new();
    let mut counter = 0u64;
    let mut open = fds.len();
    while open > 0 {
        // SAFETY: `polls` is a valid array of `polls.len()` pollfds.
        let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for (p, reader) in polls.iter_mut().zip(&mut readers) {
            if p.fd < 0 || p.revents == 0 {
                continue;
            }
            // SAFETY: `p.fd` is one of this process's open descriptors,
            // kept open until the server exits.
            let fd = unsafe { BorrowedFd::borrow_raw(p.fd) };
            let reply = match reader.next(fd)? {
                None => {
                    p.fd = -1;
                    open -= 1;
                    continue;
                }
                Some(req) if req.len() == 9 => {
                    let v = u64::from_le_bytes(req[1..].try_into()?);
                    if req[0] == OP_APPEND {
                        list.push(v);
                        list.len() as u64
                    } else {
                        counter += v;
                        counter
                    }
                }
                Some(_) => return Err("bad raw request".into()),
            };
            let mut out = [0u8; 12];
            out[..4].copy_from_slice(&8u32.to_be_bytes());
            out[4..].copy_from_slice(&reply.to_le_bytes());
            write_all(fd, &[&out])?;
        }
    }
    board.count.store(counter, Ordering::SeqCst);
    Ok(())
}

/// `clients` forked clients making `per` round trips of `op` each to one
/// forked raw server; returns (ops/s over all, the server's counter).
fn raw_clients(clients: usize, per: u64, op: u8) -> BenchResult<(f64, u64)> {
    let board = Shared::<Board>::new()?;
    let b = &*board;
    let mut mine: Vec<OwnedFd> = Vec::new();
    let mut theirs: Vec<OwnedFd> = Vec::new();
    for _ in 0..clients {
        let (c, s) = socketpair()?;
        mine.push(c);
        theirs.push(s);
    }
    let server_fds: Vec<RawFd> = theirs.iter().map(|s| s.as_raw_fd()).collect();
    let client_fds: Vec<RawFd> = mine.iter().map(|c| c.as_raw_fd()).collect();
    let server = RawChild::fork(|| {
        for &fd in &client_fds {
            // SAFETY: the server's copies of the client ends belong to no
            // Rust owner that runs again here (the child ends in _exit);
            // closing them lets it see every client hang up.
            unsafe { libc::close(fd) };
        }
        raw_serve(&server_fds, b).expect("raw server");
    })?;
    drop(theirs);
    let mut kids = Vec::with_capacity(clients);
    for c in &mine {
        let fd = c.as_fd();
        kids.push(RawChild::fork(|| {
            crate::harness::pin_child();
            let mut reader = FrameReader::new();
            b.gate.arrive();
            b.gate.wait_go();
            for i in 0..per {
                round_trip(fd, &mut reader, op, if op == OP_ADD { 1 } else { i })
                    .expect("raw round trip");
            }
            b.gate.finish();
        })?);
    }
    drop(mine);
    let t0 = b.gate.open_when_ready(clients);
    for k in kids {
        k.wait()?;
    }
    server.wait()?;
    Ok((
        per_sec_between(t0, b.gate.end(), clients as u64 * per),
        b.count.load(Ordering::SeqCst),
    ))
}

fn raw_round_trips(n: u64) -> BenchResult<f64> {
    Ok(raw_clients(1, n, OP_APPEND)?.0)
}

// ---- proxy rows ----

fn list_append_child(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    let m = Manager::start()?;
    alternate(
        warm,
        reps,
        || in_child(list_append, (m.list::<u64>([])?, n)),
        || raw_round_trips(n),
    )
}

fn list_append_4threads_child(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    let m = Manager::start()?;
    alternate(
        warm,
        reps,
        || in_child(list_append_threads, (m.list::<u64>([])?, n)),
        || Ok(raw_clients(4, n / 4, OP_APPEND)?.0),
    )
}

fn dict_set_get_child(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    let m = Manager::start()?;
    alternate(
        warm,
        reps,
        || in_child(dict_set_get, (m.dict::<String, u64>([])?, n / 2)),
        || raw_round_trips(n),
    )
}

fn namespace_set_get_child(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    let m = Manager::start()?;
    alternate(
        warm,
        reps,
        || in_child(namespace_set_get, (m.namespace()?, n / 2)),
        || raw_round_trips(n),
    )
}

// ---- atomic adds from two processes ----

/// A child's arguments: the namespace, a semaphore it releases once it is
/// about to wait for `go`, `go`, and how many adds to make.
type AddArgs = (Namespace, Semaphore, Event, u64);

/// Returns when it finished ([`monotonic_ns`]).
fn add_ones((ns, ready, go, n): AddArgs) -> Result<u64, String> {
    ready.release().map_err(|e| e.to_string())?;
    go.wait();
    for _ in 0..n {
        ns.add("counter", 1u64).map_err(|e| e.to_string())?;
    }
    Ok(monotonic_ns())
}

/// Two crate children adding 1 `per` times each; (ops/s, final count).
fn crate_adds(m: &Manager, per: u64) -> BenchResult<(f64, u64)> {
    let ns = m.namespace()?;
    ns.set("counter", &0u64)?;
    let ready = Semaphore::new(0)?;
    let go = Event::new()?;
    let mut kids = Vec::with_capacity(2);
    for _ in 0..2 {
        let mut p = Process::new(add_ones, (ns.clone(), ready.clone(), go.clone(), per));
        p.start()?;
        kids.push(p);
    }
    for _ in 0..2 {
        if !ready.acquire_timeout(TIMEOUT) {
            for p in &mut kids {
                let _ = p.kill();
                let _ = p.join();
            }
            return Err("crate children not ready".into());
        }
    }
    let t0 = monotonic_ns();
    go.set();
    let mut end = 0;
    for p in &mut kids {
        end = end.max(p.join_timeout(TIMEOUT)??);
    }
    Ok((per_sec_between(t0, end, 2 * per), ns.get::<u64>("counter")?))
}

fn atomic_add_2proc(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = sizes(ctx);
    let per = n / 2;
    let m = Manager::start()?;
    alternate(
        warm,
        reps,
        || {
            let (rate, count) = crate_adds(&m, per)?;
            check_eq("crate counter", count, 2 * per)?;
            Ok(rate)
        },
        || {
            let (rate, count) = raw_clients(2, per, OP_ADD)?;
            check_eq("raw counter", count, 2 * per)?;
            Ok(rate)
        },
    )
}

fn atomic_add_2proc_count(ctx: &Ctx) -> BenchResult<Figures> {
    let per = count_size(ctx);
    let m = Manager::start()?;
    alternate(
        0,
        1,
        || Ok(crate_adds(&m, per)?.1 as f64),
        || Ok(raw_clients(2, per, OP_ADD)?.1 as f64),
    )
}

// ---- bytes ----

const MIB: usize = 1 << 20;

fn bytes_1mib(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = (1, ctx.pick(1, 5), ctx.pick(3, 20));
    let m = Manager::start()?;
    let ns = m.namespace()?;
    let big: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let (raw, raw_theirs) = socketpair()?;
    let echo = RawChild::fork_closing(raw.as_fd(), move || {
        crate::raw::serve_frames(raw_theirs, |m, out| out.extend_from_slice(m))
    })?;
    let framed = crate::raw::frame(&big);
    let mut reader = FrameReader::new();
    let figures = alternate(
        warm,
        reps,
        || {
            let t0 = Instant::now();
            for _ in 0..n {
                ns.set("data", &big)?;
                let back: Vec<u8> = ns.get("data")?;
                check_eq("bytes read back", back.len(), MIB)?;
            }
            Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
        },
        || {
            let t0 = Instant::now();
            for _ in 0..n {
                write_all(raw.as_fd(), &[&framed])?;
                let back = reader.next(raw.as_fd())?.ok_or("raw echo hung up")?;
                check_eq("raw bytes echoed", back.len(), MIB)?;
            }
            Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
        },
    )?;
    write_all(raw.as_fd(), &[&[0u8; 4]])?;
    echo.wait()?;
    Ok(figures)
}

// ---- start + shutdown ----

fn start_shutdown(ctx: &Ctx) -> BenchResult<Figures> {
    let raw = RawSpawn::new()?;
    alternate(
        ctx.pick(0, 1),
        ctx.pick(3, 11),
        || {
            let t0 = Instant::now();
            let mut m = Manager::start()?;
            m.shutdown()?;
            Ok(t0.elapsed().as_secs_f64() * 1e6)
        },
        || raw.start_join(),
    )
}
