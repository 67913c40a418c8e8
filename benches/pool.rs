//! The process pool against Python's `multiprocessing.Pool`, in one run:
//! `map` over 100k trivial tasks with chunk size 1 and with the default
//! chunk size, an `apply_async` submit-then-get round trip, and starting
//! plus shutting down a pool of two workers. Each row is measured unpinned
//! and pinned to CPU 0 (`sched_setaffinity`, inherited by the workers),
//! for both sides, and printed as `name<TAB>value<TAB>unit`, followed by
//! the ratios (Python's time over ours; above 1 means faster).
//!
//! ```text
//! $ cargo bench --bench pool
//! ```
//!
//! Rows are medians of `POOL_BENCH_REPS` runs (default 3); Python's
//! chunk-size-1 map runs once (it takes seconds). Set `POOL_BENCH_NO_PY=1`
//! to skip Python.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use multiproc::Pool;

const N: u64 = 100_000;
const PIN_ENV: &str = "MULTIPROC_POOL_BENCH_PINNED";

fn trivial(x: u64) -> u64 {
    x * x
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn reps() -> usize {
    std::env::var("POOL_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1)
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed().as_secs_f64(), v)
}

/// Our rows for this process's pinning; (name, value, unit).
fn measure(suffix: &str) -> Vec<(String, f64, &'static str)> {
    let reps = reps();
    let pool = Pool::new(2).expect("pool");
    pool.map(trivial, 0..1000).expect("warm-up");
    let cs1 = median(
        (0..reps)
            .map(|_| {
                let (t, v) = time(|| pool.map_chunked(trivial, 0..N, 1).expect("map"));
                assert_eq!(v.len(), N as usize);
                t
            })
            .collect(),
    );
    let default = median(
        (0..reps)
            .map(|_| time(|| pool.map(trivial, 0..N).expect("map")).0)
            .collect(),
    );
    let apply = median(
        (0..reps)
            .map(|_| {
                let k = 1000;
                let (t, _) = time(|| {
                    for i in 0..k {
                        pool.apply_async(trivial, i)
                            .expect("submit")
                            .get()
                            .expect("get");
                    }
                });
                t / k as f64
            })
            .collect(),
    );
    drop(pool);
    let lifecycle = median(
        (0..reps)
            .map(|_| {
                let k = 5;
                let (t, _) = time(|| {
                    for _ in 0..k {
                        let p = Pool::new(2).expect("pool");
                        p.close();
                        p.join().expect("join");
                    }
                });
                t / k as f64
            })
            .collect(),
    );
    vec![
        (format!("rs_map_chunksize1_100k_{suffix}"), cs1 * 1e3, "ms"),
        (format!("rs_map_default_100k_{suffix}"), default * 1e3, "ms"),
        (
            format!("rs_apply_async_roundtrip_{suffix}"),
            apply * 1e6,
            "us",
        ),
        (
            format!("rs_pool2_start_shutdown_{suffix}"),
            lifecycle * 1e3,
            "ms",
        ),
    ]
}

fn pin_to_cpu0() {
    // SAFETY: `set` is a zeroed `cpu_set_t` on our stack, filled by the
    // libc macros and passed with its own size; pid 0 means this thread,
    // called before any other thread exists so every thread and child
    // inherits it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0, "sched_setaffinity failed");
}

fn print(rows: &[(String, f64, &str)]) {
    for (name, value, unit) in rows {
        println!("{name}\t{value:.2}\t{unit}");
    }
}

fn parse(out: &str) -> Vec<(String, f64, String)> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split('\t');
            let name = it.next()?.to_string();
            let value = it.next()?.parse().ok()?;
            let unit = it.next()?.to_string();
            Some((name, value, unit))
        })
        .collect()
}

fn python(pin: bool) -> Vec<(String, f64, String)> {
    if std::env::var_os("POOL_BENCH_NO_PY").is_some() {
        return Vec::new();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pool.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    if pin {
        cmd.arg("--pin");
    }
    match cmd.output() {
        Ok(o) if o.status.success() => parse(&String::from_utf8_lossy(&o.stdout)),
        Ok(o) => {
            eprintln!(
                "python benchmark failed: {}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
            Vec::new()
        }
        Err(e) => {
            eprintln!("python3 not available: {e}");
            Vec::new()
        }
    }
}

fn main() {
    if std::env::var_os(PIN_ENV).is_some() {
        // The pinned half, in a child so that the pinning is set before any
        // thread starts.
        pin_to_cpu0();
        print(&measure("pinned"));
        return;
    }
    let mut all: BTreeMap<String, (f64, String)> = BTreeMap::new();
    let ours = measure("unpinned");
    print(&ours);
    for (n, v, u) in ours {
        all.insert(n, (v, u.to_string()));
    }
    let child = Command::new(std::env::current_exe().expect("own path"))
        .env(PIN_ENV, "1")
        .output()
        .expect("run the pinned half");
    let pinned = String::from_utf8_lossy(&child.stdout).to_string();
    print!("{pinned}");
    for (n, v, u) in parse(&pinned) {
        all.insert(n, (v, u));
    }
    for pin in [false, true] {
        for (n, v, u) in python(pin) {
            println!("{n}\t{v:.2}\t{u}");
            all.insert(n, (v, u));
        }
    }
    for (name, value, _) in all
        .iter()
        .filter(|(n, _)| n.starts_with("py_"))
        .map(|(n, (v, u))| (n.clone(), *v, u.clone()))
        .collect::<Vec<_>>()
    {
        let ours = name.replacen("py_", "rs_", 1);
        if let Some((rs, _)) = all.get(&ours)
            && *rs > 0.0
        {
            let ratio = name.replacen("py_", "ratio_py_over_rs_", 1);
            println!("{ratio}\t{:.2}\tx", value / rs);
        }
    }
}
