//! The comparison harness: rows, modes (unpinned / same core / cross
//! core), medians, the Python side, and the TSV output.
//!
//! Every output line is `name<TAB>value<TAB>unit`; lines starting with `#`
//! are notes and the summary table.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Display;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Event, Process, Semaphore};
use serde::de::DeserializeOwned;

/// What a row function returns on failure.
pub type BenchResult<T> = Result<T, Box<dyn Error>>;

/// The unit of a row's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds per operation (lower is better).
    Nanos,
    /// Microseconds per operation (lower is better).
    Micros,
    /// Messages per second (higher is better).
    MsgsPerSec,
    /// Payload bytes per second, in 10^9 (higher is better).
    GBPerSec,
    /// Operations (e.g. proxy round trips) per second (higher is better).
    OpsPerSec,
    /// A count, e.g. a shared counter's final value (a correctness figure).
    Count,
    /// Bytes of memory (lower is better).
    Bytes,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::Nanos => "ns",
            Unit::Micros => "us",
            Unit::MsgsPerSec => "msgs/s",
            Unit::GBPerSec => "GB/s",
            Unit::OpsPerSec => "ops/s",
            Unit::Count => "count",
            Unit::Bytes => "B",
        }
    }

    fn parse(s: &str) -> Option<Unit> {
        [
            Unit::Nanos,
            Unit::Micros,
            Unit::MsgsPerSec,
            Unit::GBPerSec,
            Unit::OpsPerSec,
            Unit::Count,
            Unit::Bytes,
        ]
        .into_iter()
        .find(|u| u.label() == s)
    }
}

/// Where the bench process and its children run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wherever the scheduler puts them.
    Unpinned,
    /// Everything on CPU 0 (the bench process pins itself; children
    /// inherit it). Formerly called `pinned`.
    SameCore,
    /// The bench process on CPU 0, the far end of every round trip on
    /// CPU 1: that child calls [`pin_child`] first thing. Round-trip rows
    /// only ([`Row::round_trip`]).
    CrossCore,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Unpinned => "unpinned",
            Mode::SameCore => "same_core",
            Mode::CrossCore => "cross_core",
        }
    }
}

/// The environment variable that tells a child which CPU to pin itself to
/// in [`Mode::CrossCore`] (spawned children read it; forked ones also see
/// [`CHILD_CPU`]).
const CHILD_CPU_ENV: &str = "MULTIPROC_BENCH_CHILD_CPU";

/// The CPU the far end of a round trip pins itself to, or -1 for none.
static CHILD_CPU: AtomicI32 = AtomicI32::new(-1);

/// Enters `mode` for the rest of the run (modes run in the order
/// unpinned, same core, cross core: pinning is never undone). Called by
/// `main` while the bench process is single-threaded.
pub fn enter_mode(mode: Mode) -> std::io::Result<()> {
    match mode {
        Mode::Unpinned => Ok(()),
        Mode::SameCore => pin_to(0),
        Mode::CrossCore => {
            pin_to(0)?;
            CHILD_CPU.store(1, Ordering::Relaxed);
            // SAFETY: `main` calls this between rows, while the bench
            // process runs no other thread that could read the environment.
            unsafe { std::env::set_var(CHILD_CPU_ENV, "1") };
            Ok(())
        }
    }
}

/// Called first thing by the far end of a round trip (an echoing child, a
/// pool worker's initializer, a manager client): in [`Mode::CrossCore`]
/// pins this process to CPU 1, otherwise does nothing. Panics if pinning
/// fails (the row then reports an error rather than a wrong placement).
pub fn pin_child() {
    let mut cpu = CHILD_CPU.load(Ordering::Relaxed);
    if cpu < 0 {
        cpu = std::env::var(CHILD_CPU_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
    }
    if cpu >= 0 {
        pin_to(cpu as usize).expect("pin the child to its CPU");
    }
}

/// [`pin_child`] in the shape of a pool initializer.
pub fn pin_child_init(_: ()) {
    pin_child();
}

/// What a row function sees.
pub struct Ctx {
    /// `MULTIPROC_BENCH_QUICK=1`: a few repetitions only (smoke run).
    pub quick: bool,
    pub mode: Mode,
}

impl Ctx {
    /// `quick` in quick mode, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// The crate's figure and the raw-OS floor measured beside it.
pub struct Figures {
    pub krate: f64,
    pub raw: f64,
    /// Further floors measured in the same interleaving, reported as
    /// `<row>.<mode>.raw_<label>` with a `vs_raw_<label>` ratio (e.g. the
    /// robust pthread mutex beside the minimal futex mutex). Summary
    /// targets compare against `raw` only. A label in [`PEERS`] is another
    /// implementation rather than a floor: reported as `<row>.<mode>.<label>`
    /// with a `vs_<label>` ratio.
    pub extra: Vec<(&'static str, f64)>,
}

/// Runs `measure` in a forked child and returns its figures. For rows
/// that leave threads behind (a scheduler's workers, an async helper,
/// Zenoh's runtime): the bench process stays single-threaded, so the rows
/// after them can still fork. The figures come back over a socket as
/// text lines (`krate raw`, then `label value` per extra); a failure in
/// the child comes back as its message.
pub fn in_forked_child(measure: impl FnOnce() -> BenchResult<Figures>) -> BenchResult<Figures> {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    let (mut ours, mut theirs) = UnixStream::pair()?;
    let child = crate::raw::RawChild::fork_closing(ours.as_fd(), move || {
        let text = match measure() {
            Ok(f) => {
                let mut t = format!("ok\n{} {}\n", f.krate, f.raw);
                for (label, value) in &f.extra {
                    t.push_str(&format!("{label} {value}\n"));
                }
                t
            }
            Err(e) => format!("err\n{e}"),
        };
        theirs
            .write_all(text.as_bytes())
            .expect("report the figures");
    })?;
    let mut text = String::new();
    let read = ours.read_to_string(&mut text);
    let waited = child.wait();
    read?;
    let mut lines = text.lines();
    match lines.next() {
        Some("ok") => {}
        Some("err") => return Err(lines.collect::<Vec<_>>().join("\n").into()),
        _ => return Err(format!("the forked child reported nothing ({waited:?})").into()),
    }
    waited?;
    let pair = |line: Option<&str>| -> BenchResult<(String, f64)> {
        let (a, b) = line
            .and_then(|l| l.split_once(' '))
            .ok_or("a figure line")?;
        Ok((a.to_string(), b.parse()?))
    };
    let (krate, raw) = pair(lines.next())?;
    let mut extra = Vec::new();
    for line in lines {
        let (label, value) = pair(Some(line))?;
        // Labels are few and fixed per row; the bench process lives for one run.
        extra.push((&*Box::leak(label.into_boxed_str()), value));
    }
    Ok(Figures {
        krate: krate.parse()?,
        raw,
        extra,
    })
}

/// Labels of [`Figures::extra`] that name another implementation measured
/// beside the crate (not a floor): `go`, Go's channels (`go.rs`).
pub const PEERS: &[&str] = &["go"];

/// One line of the comparison. Its name is shared by the Rust and the
/// Python side; the Python figure comes from `compare.py`.
pub struct Row {
    /// Dotted name, e.g. `pipe.pingpong.small`.
    pub name: &'static str,
    pub unit: Unit,
    /// Measures the crate and the raw floor, interleaved.
    pub run: fn(&Ctx) -> BenchResult<Figures>,
    /// Whether `compare.py` has this row; `false` where Python has no
    /// counterpart (the row then has no Python figure).
    pub python: bool,
    /// Whether the row is a round trip between two processes, whose far
    /// end calls [`pin_child`]: such rows also run in [`Mode::CrossCore`].
    pub round_trip: bool,
}

/// What a summary target compares.
#[derive(Debug, Clone, Copy)]
pub enum Against {
    /// `vs_raw`: crate figure / raw figure.
    Raw,
    /// `vs_python`: crate figure / Python figure.
    Python,
    /// The crate's own figure, in the row's unit.
    Absolute,
    /// `vs_<label>`: crate figure / another implementation's (a label of
    /// [`PEERS`], e.g. `go`).
    Peer(&'static str),
}

/// A goal the summary checks (and never asserts).
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

/// One line of the summary table.
pub struct Target {
    pub row: &'static str,
    pub against: Against,
    pub goal: Goal,
}

/// The median of `v` (mean of the two middle values for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `a` and `b` alternately `reps` times each (after `warmup` unmeasured
/// runs of each), so that both see the same machine noise; returns the
/// medians of what they returned.
pub fn alternate(
    warmup: usize,
    reps: usize,
    mut a: impl FnMut() -> BenchResult<f64>,
    mut b: impl FnMut() -> BenchResult<f64>,
) -> BenchResult<Figures> {
    let m = alternate_all(warmup, reps, &mut [&mut a, &mut b])?;
    Ok(Figures {
        krate: m[0],
        raw: m[1],
        extra: Vec::new(),
    })
}

/// [`alternate`] for any number of measurements: every rep runs each of
/// `runs` once, starting with a different one each time (rep `i` starts
/// with `runs[i % len]`); returns their medians, in order.
pub fn alternate_all(
    warmup: usize,
    reps: usize,
    runs: &mut [&mut dyn FnMut() -> BenchResult<f64>],
) -> BenchResult<Vec<f64>> {
    let len = runs.len();
    for _ in 0..warmup {
        for run in runs.iter_mut() {
            run()?;
        }
    }
    let mut samples = vec![Vec::with_capacity(reps); len];
    for i in 0..reps {
        for k in 0..len {
            let j = (i + k) % len;
            samples[j].push(runs[j]()?);
        }
    }
    Ok(samples.into_iter().map(median).collect())
}

/// Microseconds per operation for `ops` operations that started at `t0`.
pub fn micros_per_op(t0: Instant, ops: u64) -> f64 {
    t0.elapsed().as_secs_f64() * 1e6 / ops as f64
}

/// Nanoseconds per operation for `ops` operations that started at `t0`.
pub fn nanos_per_op(t0: Instant, ops: u64) -> f64 {
    t0.elapsed().as_secs_f64() * 1e9 / ops as f64
}

/// Operations per second for `ops` operations between `t0` and `end`
/// ([`monotonic_ns`] stamps).
pub fn per_sec_between(t0: u64, end: u64, ops: u64) -> f64 {
    ops as f64 / (end.saturating_sub(t0) as f64 / 1e9)
}

/// Nanoseconds per operation for `ops` operations between `t0` and `end`
/// ([`monotonic_ns`] stamps).
pub fn nanos_per_op_between(t0: u64, end: u64, ops: u64) -> f64 {
    end.saturating_sub(t0) as f64 / ops as f64
}

/// An error naming `what` unless `got == want`.
pub fn check_eq<T: PartialEq + Display>(what: &str, got: T, want: T) -> BenchResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got}, wanted {want}").into())
    }
}

/// Crate children started for one measurement, killed if dropped before
/// they were joined (a failed row must not leave them waiting).
pub struct Crew<R: DeserializeOwned>(Vec<Process<R>>);

impl<R: DeserializeOwned> Crew<R> {
    pub fn new() -> Self {
        Crew(Vec::new())
    }

    /// Starts `p` and keeps it.
    pub fn start(&mut self, mut p: Process<R>) -> BenchResult<()> {
        p.start()?;
        self.0.push(p);
        Ok(())
    }

    /// Joins them all; what they returned, in start order.
    pub fn join(mut self) -> BenchResult<Vec<R>> {
        let mut out = Vec::with_capacity(self.0.len());
        for mut p in std::mem::take(&mut self.0) {
            out.push(p.join()?);
        }
        Ok(out)
    }
}

impl<R: DeserializeOwned> Drop for Crew<R> {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.kill();
            let _ = p.join();
        }
    }
}

/// The crate side's start handshake: waits until `children` have each
/// released `ready` (within `timeout` each), then sets `go`; returns when
/// it did ([`monotonic_ns`]).
pub fn go_when_ready(
    ready: &Semaphore,
    go: &Event,
    children: usize,
    timeout: Duration,
) -> BenchResult<u64> {
    for _ in 0..children {
        if !ready.acquire_timeout(timeout) {
            return Err("crate children not ready".into());
        }
    }
    let t0 = monotonic_ns();
    go.set();
    Ok(t0)
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the
/// machine, so that a child can stamp when it finished and the parent
/// compare that with when it started the child off.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid place for the result; CLOCK_MONOTONIC is
    // always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Restricts this process (and every child it starts from now on) to `cpu`.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; CPU_ZERO/CPU_SET
    // only write inside it, and sched_setaffinity reads `size_of` bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The run's output, and everything it printed, for the ratios and summary.
pub struct Report {
    figures: BTreeMap<String, f64>,
    python_missing: bool,
}

impl Report {
    /// `skip_python`: do not run the Python side at all.
    pub fn new(skip_python: bool) -> Self {
        Report {
            figures: BTreeMap::new(),
            python_missing: skip_python,
        }
    }

    /// Prints one figure line and remembers it.
    pub fn emit(&mut self, name: &str, value: f64, unit: &str) {
        println!("{name}\t{}\t{unit}", fmt_value(value));
        self.figures.insert(name.to_string(), value);
    }

    /// Prints a note (a `#` line).
    pub fn note(&self, text: &str) {
        println!("# {text}");
    }

    /// Measures `row` in `ctx.mode`: crate and raw figures, the Python
    /// figure, and the ratios.
    pub fn run_row(&mut self, ctx: &Ctx, row: &Row) {
        let started = Instant::now();
        let base = format!("{}.{}", row.name, ctx.mode.label());
        let unit = row.unit.label();
        let mut others = vec!["raw".to_string()];
        match (row.run)(ctx) {
            Ok(f) => {
                self.emit(&format!("{base}.crate"), f.krate, unit);
                self.emit(&format!("{base}.raw"), f.raw, unit);
                for &(label, v) in &f.extra {
                    let other = if PEERS.contains(&label) {
                        label.to_string()
                    } else {
                        format!("raw_{label}")
                    };
                    self.emit(&format!("{base}.{other}"), v, unit);
                    others.push(other);
                }
            }
            Err(e) => self.note(&format!("error: {base}: {e}")),
        }
        if row.python
            && let Some(v) = self.python_figure(ctx, row)
        {
            self.emit(&format!("{base}.python"), v, unit);
        }
        others.push("python".to_string());
        let krate = self.figures.get(&format!("{base}.crate")).copied();
        for other in &others {
            if let (Some(k), Some(&o)) = (krate, self.figures.get(&format!("{base}.{other}")))
                && o > 0.0
            {
                self.emit(&format!("{base}.vs_{other}"), k / o, "x");
            }
        }
        self.note(&format!("{base}: {:.1} s", started.elapsed().as_secs_f64()));
    }

    fn python_figure(&mut self, ctx: &Ctx, row: &Row) -> Option<f64> {
        let mode = ctx.mode;
        if self.python_missing {
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/compare.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(format!("--{}", mode.label()))
            .args(ctx.quick.then_some("--quick"))
            .arg(row.name)
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                self.note(&format!(
                    "python3 not runnable ({e}): Python figures skipped"
                ));
                self.python_missing = true;
                return None;
            }
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").to_string();
            self.note(&format!(
                "python side failed for {} ({}): {last}",
                row.name, out.status
            ));
            return None;
        }
        let want = format!("{}.{}.python", row.name, mode.label());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut cols = line.split('\t');
            let (Some(name), Some(value), Some(unit)) = (cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            if name != want {
                continue;
            }
            return match (value.parse::<f64>(), Unit::parse(unit)) {
                (Ok(v), Some(u)) if u == row.unit => Some(v),
                _ => {
                    self.note(&format!("python side gave a bad line: {line}"));
                    None
                }
            };
        }
        self.note(&format!("python side printed no {want}"));
        None
    }

    /// Prints the summary table of the `targets` of the `rows` that ran,
    /// for every mode that ran.
    pub fn summary(&self, targets: &[Target], rows: &[Row], modes: &[Mode]) {
        println!("#");
        println!("# targets (read, not asserted); ratios are crate / other in the row's unit");
        println!(
            "# {:<38} {:<10} {:>12} {:>10}  result",
            "figure", "mode", "measured", "goal"
        );
        for t in targets
            .iter()
            .filter(|t| rows.iter().any(|r| r.name == t.row))
        {
            for &mode in modes {
                let base = format!("{}.{}", t.row, mode.label());
                let (key, label, unit) = match t.against {
                    Against::Raw => (format!("{base}.vs_raw"), format!("{}.vs_raw", t.row), "x"),
                    Against::Python => (
                        format!("{base}.vs_python"),
                        format!("{}.vs_python", t.row),
                        "x",
                    ),
                    Against::Absolute => (format!("{base}.crate"), format!("{}.crate", t.row), ""),
                    Against::Peer(p) => {
                        (format!("{base}.vs_{p}"), format!("{}.vs_{p}", t.row), "x")
                    }
                };
                let goal = match t.goal {
                    Goal::AtMost(g) => format!("<= {g}{unit}"),
                    Goal::AtLeast(g) => format!(">= {g}{unit}"),
                };
                let (measured, result) = match self.figures.get(&key) {
                    None => ("-".to_string(), "n/a"),
                    Some(&v) => {
                        let ok = match t.goal {
                            Goal::AtMost(g) => v <= g,
                            Goal::AtLeast(g) => v >= g,
                        };
                        (
                            format!("{}{unit}", fmt_value(v)),
                            if ok { "ok" } else { "MISS" },
                        )
                    }
                };
                if mode == Mode::CrossCore && !rows.iter().any(|r| r.name == t.row && r.round_trip)
                {
                    continue;
                }
                println!(
                    "# {label:<38} {:<10} {measured:>12} {goal:>10}  {result}",
                    mode.label()
                );
            }
        }
    }
}

/// Three significant digits or so, without exponent notation.
fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// How many threads the bench process has right now.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}
