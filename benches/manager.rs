//! Manager benchmarks, side by side with Python's `multiprocessing`
//! manager (`benches/manager.py`, run from here when `python3` is on the
//! path): proxy round trips from a child process, atomic adds from two
//! processes, and manager start + shutdown. Each row is printed as
//! `name<TAB>value<TAB>unit`, first unpinned, then with every process
//! pinned to CPU 0 (`sched_setaffinity`, inherited by the children).
//!
//! ```text
//! cargo bench --bench manager                        # full run
//! MULTIPROC_BENCH_QUICK=1 cargo bench --bench manager  # fewer iterations
//! MULTIPROC_BENCH_NO_PYTHON=1 cargo bench --bench manager
//! ```
//!
//! Python runs before and after ours; `ratio/...` rows compare against
//! Python's better figure: ours / Python's for `ops/s`, Python's / ours for
//! `ms` (above 1 is faster either way).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use multiproc::{DictProxy, ListProxy, Manager, Namespace, Process};

fn row(name: &str, value: f64, unit: &str) {
    println!("{name}\t{value:.1}\t{unit}");
}

fn list_append((list, n): (ListProxy<u64>, u64)) -> f64 {
    for i in 0..100 {
        list.append(&i).unwrap();
    }
    let t = Instant::now();
    for i in 0..n {
        list.append(&i).unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn dict_set_get((d, n): (DictProxy<String, u64>, u64)) -> f64 {
    let keys: Vec<String> = (0..64).map(|i| format!("key{i}")).collect();
    for k in &keys {
        d.insert(k, &0).unwrap();
    }
    let t = Instant::now();
    for i in 0..n {
        let k = &keys[(i % 64) as usize];
        d.insert(k, &i).unwrap();
        let _ = d.get(k).unwrap();
    }
    (2 * n) as f64 / t.elapsed().as_secs_f64()
}

fn ns_set_get((ns, n): (Namespace, u64)) -> f64 {
    ns.set("x", &0u64).unwrap();
    let t = Instant::now();
    for i in 0..n {
        ns.set("x", &i).unwrap();
        let _: u64 = ns.get("x").unwrap();
    }
    (2 * n) as f64 / t.elapsed().as_secs_f64()
}

/// Four threads of one child appending through clones of one proxy (each
/// thread borrows its own pooled connection).
fn list_append_threads((list, n): (ListProxy<u64>, u64)) -> f64 {
    list.append(&0).unwrap();
    let t = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let list = list.clone();
            std::thread::spawn(move || {
                for i in 0..n / 4 {
                    list.append(&i).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn atomic_add((ns, n): (Namespace, u64)) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        ns.add("counter", 1u64).unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn in_child<A, F>(f: fn(A) -> F, args: A) -> F
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    F: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut p = Process::new(f, args);
    p.start().unwrap();
    p.join_timeout(Duration::from_secs(300)).unwrap()
}

fn run(mode: &str, n: u64, out: &mut HashMap<String, f64>) {
    let mut emit = |name: &str, value: f64, unit: &str| {
        let full = format!("manager/{name}/{mode}");
        row(&full, value, unit);
        out.insert(full, value);
    };
    let m = Manager::start().unwrap();
    let list = m.list::<u64>([]).unwrap();
    emit(
        "list_append_child",
        in_child(list_append, (list, n)),
        "ops/s",
    );
    let list = m.list::<u64>([]).unwrap();
    emit(
        "list_append_4threads_child",
        in_child(list_append_threads, (list, n)),
        "ops/s",
    );
    let d = m.dict::<String, u64>([]).unwrap();
    emit(
        "dict_set_get_child",
        in_child(dict_set_get, (d, n / 2)),
        "ops/s",
    );
    let ns = m.namespace().unwrap();
    emit(
        "namespace_set_get_child",
        in_child(ns_set_get, (ns, n / 2)),
        "ops/s",
    );

    let ns = m.namespace().unwrap();
    ns.set("counter", &0u64).unwrap();
    let per = n / 2;
    let t = Instant::now();
    let mut ps: Vec<_> = (0..2)
        .map(|_| Process::new(atomic_add, (ns.clone(), per)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        p.join_timeout(Duration::from_secs(300)).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let count: u64 = ns.get("counter").unwrap();
    emit("atomic_add_2proc_expected", (2 * per) as f64, "count");
    emit("atomic_add_2proc_count", count as f64, "count");
    emit("atomic_add_2proc", (2 * per) as f64 / secs, "ops/s");
    drop(m);

    let rounds = 5;
    let t = Instant::now();
    for _ in 0..rounds {
        let mut m = Manager::start().unwrap();
        m.shutdown().unwrap();
    }
    emit(
        "start_shutdown",
        t.elapsed().as_secs_f64() * 1e3 / rounds as f64,
        "ms",
    );
}

fn pin_to_cpu0() {
    // SAFETY: `set` is a properly initialised cpu_set_t owned by this
    // frame; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

fn unpin() {
    // SAFETY: as in `pin_to_cpu0`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..multiproc::cpu_count() {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn python_rows(quick: bool) -> HashMap<String, f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/manager.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script);
    if quick {
        cmd.arg("quick");
    }
    let Ok(out) = cmd.output() else {
        eprintln!("python3 not found: no Python rows");
        return HashMap::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let name = f.next()?;
            let value = f.next()?.parse().ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // Not under `cargo bench` (e.g. `cargo test --benches`): built, not run.
        return;
    }
    let quick = args.iter().any(|a| a == "quick")
        || std::env::var_os("MULTIPROC_BENCH_QUICK").is_some_and(|v| v == "1");
    let python = std::env::var_os("MULTIPROC_BENCH_NO_PYTHON").is_none_or(|v| v != "1");
    let n = if quick { 2_000 } else { 20_000 };
    let mut ours = HashMap::new();
    // Python before and after ours (the script pins itself for its pinned
    // rows); ratios use Python's better figure of the two, so noise on
    // this shared machine does not flatter ours.
    let python_rows = |quick| {
        if python {
            python_rows(quick)
        } else {
            HashMap::new()
        }
    };
    let before = python_rows(quick);
    run("unpinned", n, &mut ours);
    pin_to_cpu0();
    run("pinned", n, &mut ours);
    unpin();
    let after = python_rows(quick);
    let mut theirs = before;
    for (name, v) in after {
        let best = match theirs.get(&name) {
            Some(&old) if name.contains("start_shutdown") => old.min(v),
            Some(&old) => old.max(v),
            None => v,
        };
        theirs.insert(name, best);
    }
    let mut names: Vec<&String> = ours.keys().collect();
    names.sort();
    for name in names {
        let py = format!("python/{name}");
        if let Some(p) = theirs.get(&py)
            && *p > 0.0
            && !name.contains("count")
            && !name.contains("expected")
        {
            let ratio = if name.contains("start_shutdown") {
                p / ours[name] // time: Python's over ours
            } else {
                ours[name] / p
            };
            row(&format!("ratio/{name}"), ratio, "x");
        }
    }
}
