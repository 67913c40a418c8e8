//! Shared values and synchronization: the benchmark rows, each
//! beside a floor measured in the same run (a minimal futex mutex, a raw
//! futex ping-pong, a plain `Vec` sum). `benches/sync.py` measures the
//! same rows for Python's `multiprocessing`.
//!
//! Output: one `name<TAB>value<TAB>unit` line per figure (the median of a
//! few repetitions), then `ratio_*` lines. Ping-pong rows are measured
//! twice: unpinned, and with every process pinned to CPU 0 (`_pinned`),
//! since round trips on small VMs depend on whether the two sides share a
//! CPU.
//!
//! The floors call `futex(2)` and `sched_setaffinity(2)` through `libc`
//! directly: they are the baseline the crate is measured against, so they
//! must not go through it.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Array, Event, Lock, Process, RawArray, RawValue, Value};

const REPS: usize = 5;
const INCS: u64 = 200_000;
const PINGS: u32 = 2_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn row(name: &str, value: f64, unit: &str) {
    println!("{name}\t{value:.3}\t{unit}");
}

// ------------------------------------------------------------ raw floors

fn futex_wait(w: &AtomicU32, val: u32) {
    // SAFETY: `w` is a valid, aligned 32-bit word for the whole call; a
    // shared (not private) futex, since the word is in shared memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAIT,
            val,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake(w: &AtomicU32, n: i32) {
    // SAFETY: as in `futex_wait`.
    unsafe {
        libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

/// Drepper's three-state futex mutex (0 free, 1 held, 2 held with
/// waiters), optionally spinning like the crate's lock before sleeping.
fn raw_lock(w: &AtomicU32, spin: bool) {
    if w.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return;
    }
    if spin {
        for _ in 0..200 {
            if w.load(Ordering::Relaxed) == 0
                && w.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
    }
    while w.swap(2, Ordering::Acquire) != 0 {
        futex_wait(w, 2);
    }
}

fn raw_unlock(w: &AtomicU32) {
    if w.swap(0, Ordering::Release) == 2 {
        futex_wake(w, 1);
    }
}

/// A word in shared memory: element `i` of a `RawArray<u32>`.
fn word(a: &RawArray<u32>, i: usize) -> &AtomicU32 {
    assert!(i < a.len());
    // SAFETY: element `i` is an aligned u32 in a mapping that lives as long
    // as `a`; it is only ever accessed atomically.
    unsafe { AtomicU32::from_ptr(a.as_mut_slice().as_mut_ptr().add(i)) }
}

/// A robust, process-shared, error-checking pthread mutex (what the
/// crate's locks are made of) in shared memory: a `RawArray<u64>` of 8.
fn robust_mutex(a: &RawArray<u64>) -> *mut libc::pthread_mutex_t {
    assert!(a.len() * 8 >= std::mem::size_of::<libc::pthread_mutex_t>());
    // SAFETY: the array is large enough and 64-byte aligned; the pointer is
    // only handed to pthread calls.
    unsafe { a.as_mut_slice().as_mut_ptr().cast() }
}

fn init_robust_mutex(m: *mut libc::pthread_mutex_t) {
    // SAFETY: `m` points to unused, zeroed shared memory large enough for
    // a mutex; the attribute object lives for the calls.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_settype(&mut attr, libc::PTHREAD_MUTEX_ERRORCHECK);
        libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        libc::pthread_mutex_init(m, &attr);
        libc::pthread_mutexattr_destroy(&mut attr);
    }
}

// ---------------------------------------------------------- 2-process rows

fn inc_value((v, go): (Value<u64>, Event)) {
    go.wait();
    for _ in 0..INCS {
        *v.get_lock().unwrap() += 1;
    }
}

fn inc_atomic((v, go): (Value<u64>, Event)) {
    go.wait();
    for _ in 0..INCS {
        v.fetch_add(1);
    }
}

fn inc_raw((words, counter, go, spin): (RawArray<u32>, RawValue<u64>, Event, bool)) {
    go.wait();
    let w = word(&words, 0);
    for _ in 0..INCS {
        raw_lock(w, spin);
        counter.set(counter.get() + 1);
        raw_unlock(w);
    }
}

/// Runs `f(args)` in two children started together; ns per operation
/// over both.
fn two_procs<A>(f: fn((A, Event)), make: impl Fn() -> A) -> f64
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + Clone + 'static,
{
    let go = Event::new().unwrap();
    let args = make();
    let mut ps: Vec<Process<()>> = (0..2)
        .map(|_| {
            let mut p = Process::new(f, (args.clone(), go.clone()));
            p.start().unwrap();
            p
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    go.set();
    for p in &mut ps {
        p.join().unwrap();
    }
    t.elapsed().as_nanos() as f64 / (2 * INCS) as f64
}

fn inc_pthread(((mem, counter), go): ((RawArray<u64>, RawValue<u64>), Event)) {
    go.wait();
    let m = robust_mutex(&mem);
    for _ in 0..INCS {
        // SAFETY: `m` was initialised by the parent and stays mapped.
        unsafe { libc::pthread_mutex_lock(m) };
        counter.set(counter.get() + 1);
        // SAFETY: as above; this thread holds it.
        unsafe { libc::pthread_mutex_unlock(m) };
    }
}

fn inc_raw_pair((args, go): ((RawArray<u32>, RawValue<u64>, bool), Event)) {
    inc_raw((args.0, args.1, go, args.2));
}

fn contended_rows() -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let value = median(
        (0..REPS)
            .map(|_| {
                let v = Value::new(0u64).unwrap();
                let ns = two_procs(inc_value, || v.clone());
                assert_eq!(v.get().unwrap(), 2 * INCS);
                ns
            })
            .collect(),
    );
    out.push(("value_locked_inc_2proc".to_string(), value));
    for (name, spin) in [
        ("futex_mutex_inc_2proc", false),
        ("futex_mutex_spin_inc_2proc", true),
    ] {
        let ns = median(
            (0..REPS)
                .map(|_| {
                    let words = RawArray::<u32>::new(16).unwrap();
                    let counter = RawValue::new(0u64).unwrap();
                    let ns = two_procs(inc_raw_pair, || (words.clone(), counter.clone(), spin));
                    assert_eq!(counter.get(), 2 * INCS);
                    ns
                })
                .collect(),
        );
        out.push((name.to_string(), ns));
    }
    let robust = median(
        (0..REPS)
            .map(|_| {
                let mem = RawArray::<u64>::new(8).unwrap();
                init_robust_mutex(robust_mutex(&mem));
                let counter = RawValue::new(0u64).unwrap();
                let ns = two_procs(inc_pthread, || (mem.clone(), counter.clone()));
                assert_eq!(counter.get(), 2 * INCS);
                ns
            })
            .collect(),
    );
    out.push(("pthread_robust_inc_2proc".to_string(), robust));
    let atomic = median(
        (0..REPS)
            .map(|_| {
                let v = Value::new(0u64).unwrap();
                let ns = two_procs(inc_atomic, || v.clone());
                assert_eq!(v.load(), 2 * INCS);
                ns
            })
            .collect(),
    );
    out.push(("value_fetch_add_2proc".to_string(), atomic));
    out
}

// ------------------------------------------------------- uncontended rows

/// ns per call of `f`: the fastest of several runs, since on a shared
/// machine noise only ever adds time to a single-threaded loop.
fn per_op(n: u64, mut f: impl FnMut()) -> f64 {
    (0..REPS * 2)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn uncontended_rows() -> Vec<(String, f64)> {
    let n = 1_000_000;
    let lock = Lock::new().unwrap();
    let value = Value::new(0u64).unwrap();
    let words = RawArray::<u32>::new(16).unwrap();
    let w = word(&words, 0);
    let mem = RawArray::<u64>::new(8).unwrap();
    let m = robust_mutex(&mem);
    init_robust_mutex(m);
    vec![
        (
            "lock_uncontended".into(),
            per_op(n, || drop(black_box(lock.acquire().unwrap()))),
        ),
        (
            "value_locked_inc_uncontended".into(),
            per_op(n, || *value.get_lock().unwrap() += 1),
        ),
        (
            "pthread_robust_uncontended".into(),
            per_op(n, || {
                // SAFETY: `m` is initialised and mapped; locked and unlocked
                // by this thread.
                unsafe {
                    libc::pthread_mutex_lock(black_box(m));
                    libc::pthread_mutex_unlock(m);
                }
            }),
        ),
        (
            "futex_mutex_uncontended".into(),
            per_op(n, || {
                raw_lock(black_box(w), false);
                raw_unlock(w);
            }),
        ),
    ]
}

// --------------------------------------------------------- ping-pong rows

fn event_pong((ping, pong): (Event, Event)) {
    for _ in 0..PINGS {
        ping.wait();
        ping.clear();
        pong.set();
    }
}

fn raw_set(w: &AtomicU32) {
    w.store(1, Ordering::SeqCst);
    futex_wake(w, 1);
}

fn raw_wait_clear(w: &AtomicU32) {
    while w.load(Ordering::SeqCst) == 0 {
        futex_wait(w, 0);
    }
    w.store(0, Ordering::SeqCst);
}

fn raw_pong(words: RawArray<u32>) {
    let (ping, pong) = (word(&words, 0), word(&words, 16));
    for _ in 0..PINGS {
        raw_wait_clear(ping);
        raw_set(pong);
    }
}

/// µs per round trip.
fn event_pingpong() -> f64 {
    let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p = Process::new(event_pong, (ping.clone(), pong.clone()));
    p.start().unwrap();
    let t = Instant::now();
    for _ in 0..PINGS {
        ping.set();
        pong.wait();
        pong.clear();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / PINGS as f64;
    p.join().unwrap();
    us
}

fn raw_pingpong() -> f64 {
    // The two words 64 bytes apart, on separate cache lines.
    let words = RawArray::<u32>::new(32).unwrap();
    let mut p = Process::new(raw_pong, words.clone());
    p.start().unwrap();
    let (ping, pong) = (word(&words, 0), word(&words, 16));
    let t = Instant::now();
    for _ in 0..PINGS {
        raw_set(ping);
        raw_wait_clear(pong);
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / PINGS as f64;
    p.join().unwrap();
    us
}

fn pingpong_rows(suffix: &str) -> Vec<(String, f64)> {
    vec![
        (
            format!("event_pingpong{suffix}"),
            median((0..REPS).map(|_| event_pingpong()).collect()),
        ),
        (
            format!("futex_pingpong{suffix}"),
            median((0..REPS).map(|_| raw_pingpong()).collect()),
        ),
    ]
}

/// Runs in a fresh process pinned to CPU 0 (its children inherit the
/// mask), so that every process involved sees one usable CPU.
fn pinned_pingpong(_: ()) -> Vec<(String, f64)> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity get a pointer to it for the call only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    pingpong_rows("_pinned")
}

// --------------------------------------------------------------- sum rows

fn sum_rows() -> Vec<(String, f64)> {
    let n = 1_000_000;
    let a = Array::<f64>::new(n).unwrap();
    for (i, x) in a.get_lock().unwrap().iter_mut().enumerate() {
        *x = i as f64;
    }
    let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let time = |f: &dyn Fn() -> f64| {
        median(
            (0..REPS * 4)
                .map(|_| {
                    let t = Instant::now();
                    black_box(f());
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    vec![
        (
            "array_sum_1m_locked".into(),
            time(&|| a.get_lock().unwrap().iter().sum::<f64>()),
        ),
        (
            "vec_sum_1m".into(),
            time(&|| black_box(&v).iter().sum::<f64>()),
        ),
    ]
}

fn main() {
    // `cargo bench --bench sync -- WORD` runs only the sections whose name
    // contains WORD (contended, uncontended, pingpong, sum).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |section: &str| only.is_empty() || only.iter().any(|o| section.contains(o.as_str()));
    let mut all: Vec<(String, f64, &str)> = Vec::new();
    let contended = if run("contended") {
        contended_rows()
    } else {
        Vec::new()
    };
    for (n, v) in contended {
        row(&n, v, "ns/op");
        all.push((n, v, "ns/op"));
    }
    let uncontended = if run("uncontended") {
        uncontended_rows()
    } else {
        Vec::new()
    };
    for (n, v) in uncontended {
        row(&n, v, "ns/op");
        all.push((n, v, "ns/op"));
    }
    if run("pingpong") {
        for (n, v) in pingpong_rows("") {
            row(&n, v, "us/roundtrip");
            all.push((n, v, "us/roundtrip"));
        }
        let mut p = Process::new(pinned_pingpong, ());
        p.start().unwrap();
        for (n, v) in p.join().unwrap() {
            row(&n, v, "us/roundtrip");
            all.push((n, v, "us/roundtrip"));
        }
    }
    let sums = if run("sum") { sum_rows() } else { Vec::new() };
    for (n, v) in sums {
        row(&n, v, "ms");
        all.push((n, v, "ms"));
    }
    let get = |name: &str| {
        all.iter()
            .find(|(n, _, _)| n == name)
            .map(|r| r.1)
            .unwrap_or(f64::NAN)
    };
    for (name, a, b) in [
        (
            "ratio_value_locked_vs_futex_mutex",
            "value_locked_inc_2proc",
            "futex_mutex_inc_2proc",
        ),
        (
            "ratio_value_locked_vs_futex_mutex_spin",
            "value_locked_inc_2proc",
            "futex_mutex_spin_inc_2proc",
        ),
        (
            "ratio_value_locked_vs_pthread_robust",
            "value_locked_inc_2proc",
            "pthread_robust_inc_2proc",
        ),
        (
            "ratio_lock_vs_pthread_robust_uncontended",
            "lock_uncontended",
            "pthread_robust_uncontended",
        ),
        (
            "ratio_lock_vs_futex_uncontended",
            "lock_uncontended",
            "futex_mutex_uncontended",
        ),
        (
            "ratio_event_vs_futex_pingpong",
            "event_pingpong",
            "futex_pingpong",
        ),
        (
            "ratio_event_vs_futex_pingpong_pinned",
            "event_pingpong_pinned",
            "futex_pingpong_pinned",
        ),
        (
            "ratio_array_sum_vs_vec",
            "array_sum_1m_locked",
            "vec_sum_1m",
        ),
    ] {
        row(name, get(a) / get(b), "x");
    }
}
