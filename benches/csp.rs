//! CSP benchmark rows: commstime (Prefix → Delta → Succ → Consumer ring,
//! sequential Delta; microseconds per channel communication) and
//! ping-pong (microseconds per round trip), with the processes as threads
//! and as OS processes, pinned to CPU 0 and unpinned. Baseline measured in
//! the same run: `std::sync::mpsc::sync_channel(0)` between threads. When
//! `python3` with PyCSP 0.9.2 is available, `benches/csp.py` runs too and
//! the ratios against PyCSP are printed (set `CSP_BENCH_PYCSP=0` to skip).
//!
//! Output: one `name<TAB>value<TAB>unit` line per row.
//! `CSP_BENCH_FILTER=commstime/threads` runs only the rows whose name
//! contains it.
//!
//! ```text
//! cargo bench --bench csp
//! ```

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use multiproc::StartMethod;
use multiproc::csp::{Channel, ChannelError, CspProcess, Reader, Writer, parallel};

const COMMSTIME_CYCLES: u64 = 5_000;
const PINGPONG_ROUNDS: u64 = 10_000;

// ---- CSP processes -----------------------------------------------------

fn prefix(ends: (Reader<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, out) = ends;
    out.write(&0)?;
    loop {
        out.write(&inp.read()?)?;
    }
}

fn delta(ends: (Reader<u64>, Writer<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, a, b) = ends;
    loop {
        let x = inp.read()?;
        a.write(&x)?;
        b.write(&x)?;
    }
}

fn succ(ends: (Reader<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, out) = ends;
    loop {
        out.write(&(inp.read()? + 1))?;
    }
}

/// Times `n` cycles; returns microseconds per channel communication (four
/// communications per cycle), then poisons the ring.
fn consumer(args: (Reader<u64>, u64)) -> Result<f64, ChannelError> {
    let (inp, n) = args;
    for _ in 0..100 {
        inp.read()?;
    }
    let t = Instant::now();
    for _ in 0..n {
        inp.read()?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / (4 * n) as f64;
    inp.poison();
    Ok(us)
}

fn pinger(args: (Writer<u64>, Reader<u64>, u64)) -> Result<f64, ChannelError> {
    let (out, inp, n) = args;
    for i in 0..100 {
        out.write(&i)?;
        inp.read()?;
    }
    let t = Instant::now();
    for i in 0..n {
        out.write(&i)?;
        inp.read()?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    out.poison();
    Ok(us)
}

fn ponger(ends: (Reader<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, out) = ends;
    loop {
        out.write(&inp.read()?)?;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Threads over `threads_only` channels.
    Threads,
    /// Threads over the default (shared-memory) channels.
    ThreadsShm,
    /// OS processes (spawn start method).
    Processes,
}

fn chan(mode: Mode) -> Channel<u64> {
    match mode {
        Mode::Threads => Channel::builder().threads_only().build().unwrap(),
        _ => Channel::new().unwrap(),
    }
}

fn placed(p: CspProcess<f64>, mode: Mode) -> CspProcess<f64> {
    if mode == Mode::Processes {
        p.start_method(StartMethod::Spawn)
    } else {
        p
    }
}

fn commstime(mode: Mode) -> f64 {
    let (a, b, c, d) = (chan(mode), chan(mode), chan(mode), chan(mode));
    let out = parallel([
        placed(CspProcess::function(prefix, (c.reader(), a.writer())), mode),
        placed(
            CspProcess::function(delta, (a.reader(), b.writer(), d.writer())),
            mode,
        ),
        placed(CspProcess::function(succ, (b.reader(), c.writer())), mode),
        placed(
            CspProcess::function(consumer, (d.reader(), COMMSTIME_CYCLES)),
            mode,
        ),
    ])
    .expect("commstime");
    out[3].clone().value().expect("consumer value")
}

fn pingpong(mode: Mode) -> f64 {
    let (a, b) = (chan(mode), chan(mode));
    let out = parallel([
        placed(
            CspProcess::function(pinger, (a.writer(), b.reader(), PINGPONG_ROUNDS)),
            mode,
        ),
        placed(CspProcess::function(ponger, (a.reader(), b.writer())), mode),
    ])
    .expect("pingpong");
    out[0].clone().value().expect("pinger value")
}

// ---- the std baseline ----------------------------------------------------

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

fn commstime_sync_channel() -> f64 {
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
    for _ in 0..100 {
        rd.recv().unwrap();
    }
    let t = Instant::now();
    for _ in 0..COMMSTIME_CYCLES {
        rd.recv().unwrap();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / (4 * COMMSTIME_CYCLES) as f64;
    drop(rd);
    for h in [p, s, dl] {
        h.join().unwrap();
    }
    us
}

fn pingpong_sync_channel() -> f64 {
    let (ta, ra) = sync_channel::<u64>(0);
    let (tb, rb) = sync_channel::<u64>(0);
    let h = relay(ra, tb, None, 0);
    for i in 0..100 {
        ta.send(i).unwrap();
        rb.recv().unwrap();
    }
    let t = Instant::now();
    for i in 0..PINGPONG_ROUNDS {
        ta.send(i).unwrap();
        rb.recv().unwrap();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / PINGPONG_ROUNDS as f64;
    drop(ta);
    h.join().unwrap();
    us
}

// ---- pinning -----------------------------------------------------------

/// Pins the calling thread (and so every thread and child process created
/// after this) to CPU 0, or lets it run on every CPU again.
fn pin(on: bool) {
    // SAFETY: cpu_set_t is plain data, zero is a valid empty set, and the
    // CPU_* helpers and sched_setaffinity only read and write that set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if on {
            libc::CPU_SET(0, &mut set);
        } else {
            for cpu in 0..libc::CPU_SETSIZE as usize {
                libc::CPU_SET(cpu, &mut set);
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The median of `runs` measurements.
fn median(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..runs).map(|_| f()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn row(rows: &mut BTreeMap<String, f64>, name: String, value: f64, unit: &str) {
    println!("{name}\t{value:.3}\t{unit}");
    rows.insert(name, value);
}

/// Runs benches/csp.py and returns its rows, if python3 and PyCSP are there.
fn pycsp_rows() -> Option<BTreeMap<String, f64>> {
    if std::env::var("CSP_BENCH_PYCSP").is_ok_and(|v| v == "0") {
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/csp.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .env("PYCSP_HOST", "127.0.0.1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 3 {
            println!("{line}");
            if let Ok(v) = f[1].parse() {
                rows.insert(f[0].to_string(), v);
            }
        } else if !line.is_empty() {
            eprintln!("csp.py: {line}");
        }
    }
    (!rows.is_empty()).then_some(rows)
}

fn main() {
    // CSP_BENCH_FILTER=substring runs only the matching rows (no ratios).
    let filter = std::env::var("CSP_BENCH_FILTER").ok();
    let mut rows = BTreeMap::new();
    for pinned in [false, true] {
        pin(pinned);
        let tag = if pinned { "pinned" } else { "unpinned" };
        let benches: [(&str, &str, &str, &dyn Fn() -> f64); 8] = [
            (
                "commstime",
                "sync_channel0",
                "us/comm",
                &commstime_sync_channel,
            ),
            ("commstime", "threads", "us/comm", &|| {
                commstime(Mode::Threads)
            }),
            ("commstime", "threads_shm", "us/comm", &|| {
                commstime(Mode::ThreadsShm)
            }),
            ("commstime", "processes", "us/comm", &|| {
                commstime(Mode::Processes)
            }),
            (
                "pingpong",
                "sync_channel0",
                "us/roundtrip",
                &pingpong_sync_channel,
            ),
            ("pingpong", "threads", "us/roundtrip", &|| {
                pingpong(Mode::Threads)
            }),
            ("pingpong", "threads_shm", "us/roundtrip", &|| {
                pingpong(Mode::ThreadsShm)
            }),
            ("pingpong", "processes", "us/roundtrip", &|| {
                pingpong(Mode::Processes)
            }),
        ];
        for (bench, what, unit, f) in benches {
            let name = format!("csp/{bench}/{what}/{tag}");
            if filter.as_ref().is_none_or(|f| name.contains(f.as_str())) {
                row(&mut rows, name, median(3, f), unit);
            }
        }
    }
    pin(false);
    if filter.is_some() {
        return;
    }
    // Ratios: how many times faster than the baseline (> 1: faster).
    for tag in ["unpinned", "pinned"] {
        for bench in ["commstime", "pingpong"] {
            let base = rows[&format!("csp/{bench}/sync_channel0/{tag}")];
            for ours in ["threads", "threads_shm"] {
                let v = rows[&format!("csp/{bench}/{ours}/{tag}")];
                println!(
                    "csp/{bench}/{ours}_vs_sync_channel0/{tag}\t{:.2}\tx",
                    base / v
                );
            }
        }
    }
    match pycsp_rows() {
        None => eprintln!(
            "note: PyCSP rows skipped (python3 with pycsp==0.9.2 not available, or CSP_BENCH_PYCSP=0)"
        ),
        Some(py) => {
            for tag in ["unpinned", "pinned"] {
                for bench in ["commstime", "pingpong"] {
                    for (ours, theirs) in [
                        ("threads", "threads"),
                        ("threads_shm", "threads"),
                        ("processes", "processes"),
                    ] {
                        if let Some(p) = py.get(&format!("pycsp/{bench}/{theirs}/{tag}")) {
                            let v = rows[&format!("csp/{bench}/{ours}/{tag}")];
                            println!(
                                "csp/{bench}/{ours}_vs_pycsp_{theirs}/{tag}\t{:.1}\tx",
                                p / v
                            );
                        }
                    }
                }
            }
        }
    }
}
