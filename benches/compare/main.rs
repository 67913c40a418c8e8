//! `cargo bench --bench compare`: multiproc side by side with the raw-OS
//! floor and Python's `multiprocessing`, measured in the same run,
//! unpinned, all on CPU 0 (`same_core`) and, for round trips, across CPUs
//! 0 and 1 (`cross_core`). See `benches/README.md`.
//!
//! Arguments (after `--`): substrings selecting rows by name, e.g.
//! `cargo bench --bench compare -- pipe.pingpong`.
//! `MULTIPROC_BENCH_QUICK=1` (or running without `--bench`, as
//! `cargo test --benches` does) makes a short smoke run;
//! `MULTIPROC_BENCH_NO_PYTHON=1` leaves the Python side out (for profiling).

#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "tokio")]
mod aio;
#[cfg(feature = "tokio")]
mod aio_csp;
mod harness;
mod pipe;
mod pool;
mod process;
mod queue;
mod raw;
mod sync;

#[cfg(feature = "zenoh")]
mod cluster;
mod csp;
mod csp_light;
mod go;
mod manager;
mod pickle;
mod python_manager;

use harness::{Against, Ctx, Goal, Mode, Report, Row, Target};

/// The targets the summary checks, read from the output, never asserted.
const TARGETS: &[Target] = &[
    Target {
        row: "process.spawn",
        against: Against::Raw,
        goal: Goal::AtMost(1.3),
    },
    Target {
        row: "process.fork",
        against: Against::Raw,
        goal: Goal::AtMost(1.5),
    },
    Target {
        row: "pipe.pingpong.small",
        against: Against::Raw,
        goal: Goal::AtMost(1.3),
    },
    Target {
        row: "pipe.pingpong.small_typed",
        against: Against::Raw,
        goal: Goal::AtMost(1.3),
    },
    Target {
        row: "pipe.throughput.small",
        against: Against::Python,
        goal: Goal::AtLeast(3.0),
    },
    Target {
        row: "pipe.throughput.small_typed",
        against: Against::Python,
        goal: Goal::AtLeast(3.0),
    },
    Target {
        row: "pipe.throughput.1mib",
        against: Against::Absolute,
        goal: Goal::AtLeast(3.0),
    },
    Target {
        row: "pipe.throughput.1mib_into",
        against: Against::Absolute,
        goal: Goal::AtLeast(3.0),
    },
    // Async round trips (`--features tokio`): "raw" is the crate's own
    // blocking round trip, so the ratio is async / blocking.
    Target {
        row: "aio.connection.pingpong",
        against: Against::Raw,
        goal: Goal::AtMost(1.5),
    },
    Target {
        row: "aio.queue.pingpong",
        against: Against::Raw,
        goal: Goal::AtMost(1.5),
    },
    // Ratios are crate / other in the row's unit; these rows are times
    // (lower is better), so "10x faster than Python" is at most 0.1.
    Target {
        row: "sync.value.locked_inc_2proc",
        against: Against::Python,
        goal: Goal::AtMost(0.1),
    },
    Target {
        row: "sync.value.locked_inc_2proc",
        against: Against::Raw,
        goal: Goal::AtMost(1.5),
    },
    Target {
        row: "sync.lock.uncontended",
        against: Against::Python,
        goal: Goal::AtMost(0.4),
    },
    Target {
        row: "sync.event.pingpong",
        against: Against::Raw,
        goal: Goal::AtMost(1.5),
    },
    Target {
        row: "sync.array.sum_1m",
        against: Against::Raw,
        goal: Goal::AtMost(1.5),
    },
    // CSP rows are µs per communication: "30x faster than PyCSP" is at
    // most 1/30 (0.0333); "faster than sync_channel(0)" is below 1.
    Target {
        row: "csp.commstime.threads",
        against: Against::Python,
        goal: Goal::AtMost(0.0333),
    },
    Target {
        row: "csp.commstime.threads",
        against: Against::Raw,
        goal: Goal::AtMost(1.0),
    },
    Target {
        row: "csp.commstime.processes",
        against: Against::Python,
        goal: Goal::AtMost(0.0333),
    },
    // Lightweight commstime: ahead of Go's unbuffered channels (one Go
    // thread, as the network has one worker) and of PyCSP's greenlets.
    Target {
        row: "csp.commstime.light",
        against: Against::Peer("go"),
        goal: Goal::AtMost(1.0),
    },
    Target {
        row: "csp.commstime.light",
        against: Against::Python,
        goal: Goal::AtMost(1.0),
    },
    // Manager proxy rows are ops/s (higher is better).
    Target {
        row: "manager.list_append_child",
        against: Against::Python,
        goal: Goal::AtLeast(10.0),
    },
    Target {
        row: "manager.dict_set_get_child",
        against: Against::Python,
        goal: Goal::AtLeast(10.0),
    },
    Target {
        row: "manager.namespace_set_get_child",
        against: Against::Python,
        goal: Goal::AtLeast(10.0),
    },
    // The count must be exact: crate count / raw count (exact by
    // construction) is 1 (`manager.atomic_add_2proc` fails on a wrong count).
    Target {
        row: "manager.atomic_add_2proc_count",
        against: Against::Raw,
        goal: Goal::AtLeast(1.0),
    },
    Target {
        row: "manager.start_shutdown",
        against: Against::Python,
        goal: Goal::AtMost(1.0),
    },
    Target {
        row: "queue.1p1c.small",
        against: Against::Python,
        goal: Goal::AtLeast(50.0),
    },
    Target {
        row: "queue.1p1c.small",
        against: Against::Raw,
        goal: Goal::AtLeast(0.4),
    },
    Target {
        row: "queue.2p2c.small",
        against: Against::Python,
        goal: Goal::AtLeast(20.0),
    },
    Target {
        row: "queue.throughput.1mib",
        against: Against::Absolute,
        goal: Goal::AtLeast(5.0),
    },
    Target {
        row: "queue.pingpong",
        against: Against::Raw,
        goal: Goal::AtMost(2.0),
    },
    // The network channel's round trip within 1.5x of two raw Zenoh
    // query/replies on the same router (`--features zenoh`).
    Target {
        row: "cluster.channel.roundtrip",
        against: Against::Raw,
        goal: Goal::AtMost(1.5),
    },
    // Like for like: one channel communication (one query to the home)
    // against one raw query/reply (the round trip above is two of each).
    Target {
        row: "cluster.channel.write",
        against: Against::Raw,
        goal: Goal::AtMost(1.5),
    },
    // A time per task: "20x faster than Python" is at most 0.05.
    Target {
        row: "pool.map.chunksize1_100k",
        against: Against::Python,
        goal: Goal::AtMost(0.05),
    },
];

/// Every row, in the order they run. Process rows come first: the fork
/// rows need a single-threaded process (the harness never starts a
/// thread, and neither do the pipe, sync and queue rows, whose raw floors
/// fork too; a row that starts threads must come after all of them).
/// The pool rows start a thread (a spawn pool's driver) and join it before
/// each of their own raw floors forks; they run last.
fn rows() -> Vec<Row> {
    let mut rows = process::rows();
    rows.extend(pipe::rows());
    rows.extend(sync::rows());
    rows.extend(queue::rows());
    #[cfg(feature = "tokio")]
    rows.extend(aio::rows());
    rows.extend(pickle::rows());
    // CSP between OS processes and the Manager fork raw floors.
    rows.extend(csp::process_rows());
    rows.extend(manager::rows());
    // The pool starts (and joins) a driver thread around its raw floors'
    // forks; the CSP thread rows start threads in the bench process, so
    // they come last.
    rows.extend(pool::rows());
    rows.extend(csp::thread_rows());
    rows.extend(csp_light::rows());
    // Runs in a forked child (async channel waits start a thread).
    #[cfg(feature = "tokio")]
    rows.extend(aio_csp::rows());
    // Serves a manager from threads: runs in a forked child.
    rows.extend(python_manager::rows());
    // Zenoh starts threads: each cluster row runs in a forked child.
    #[cfg(feature = "zenoh")]
    rows.extend(cluster::rows());
    rows
}

fn main() {
    // The raw floor of `process.spawn` re-executes this binary with this
    // variable set: it must cost no more than an exec and a start.
    if std::env::var_os(process::EXIT_AT_ONCE).is_some() {
        // SAFETY: _exit has no preconditions and never returns.
        unsafe { libc::_exit(0) }
    }

    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // the run is a smoke test, as with MULTIPROC_BENCH_QUICK=1.
    let benching = std::env::args().any(|a| a == "--bench");
    let quick = !benching
        || std::env::var("MULTIPROC_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rows: Vec<Row> = rows()
        .into_iter()
        .filter(|r| filters.is_empty() || filters.iter().any(|f| r.name.contains(f.as_str())))
        .collect();

    let no_python = std::env::var_os("MULTIPROC_BENCH_NO_PYTHON").is_some();
    let mut report = Report::new(no_python);
    if no_python {
        report.note("MULTIPROC_BENCH_NO_PYTHON is set: Python figures skipped");
    }
    report.note(&format!(
        "multiproc compare: {} row(s), {} CPU(s){}",
        rows.len(),
        multiproc::cpu_count(),
        if quick { ", quick mode" } else { "" }
    ));
    report.note("name\tvalue\tunit  (crate / raw floor / python; vs_* = crate / other)");
    let mut modes = Vec::new();
    for mode in [Mode::Unpinned, Mode::SameCore, Mode::CrossCore] {
        if mode == Mode::CrossCore && multiproc::cpu_count() < 2 {
            report.note("one CPU only: cross_core rows skipped");
            continue;
        }
        if let Err(e) = harness::enter_mode(mode) {
            report.note(&format!("cannot pin ({e}): {} rows skipped", mode.label()));
            continue;
        }
        modes.push(mode);
        let ctx = Ctx { quick, mode };
        for row in rows
            .iter()
            .filter(|r| mode != Mode::CrossCore || r.round_trip)
        {
            report.run_row(&ctx, row);
            // The fork rows (and every raw floor) need a single-threaded
            // bench process: name a row that leaves threads behind.
            let threads = harness::thread_count();
            if threads > 1 {
                report.note(&format!(
                    "warning: {} left {threads} threads in the bench process (run it in `harness::in_forked_child`)",
                    row.name
                ));
            }
        }
    }
    report.summary(TARGETS, &rows, &modes);
}
