//! Queue benchmark rows, with the raw floors they are judged against,
//! measured in the same run, unpinned and then pinned to CPU 0 (children
//! inherit the affinity). Prints `name<TAB>value<TAB>unit` lines.
//!
//! Rows: one producer to one consumer (small messages), two to two, 1 MiB
//! messages, a ping-pong round trip over two queues, the memory of an idle
//! queue; floors: a raw shared-memory SPSC ring (same record format and
//! codec, a fixed 50 µs spin then futex with a waiter flag, no locks, no
//! crash safety) and a raw futex ping-pong (no spinning).
//! The floors talk to the OS directly (memfd, mmap, futex): they measure
//! the machine, not the crate. `benches/queue.py` measures Python's
//! `multiprocessing.Queue` for the ratios.
//!
//! `cargo bench --bench queue`; `QUEUE_BENCH_QUICK=1` for a short run.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::codec::SharedFd;
use multiproc::{Process, Queue};
use serde::{Deserialize, Serialize};

fn quick() -> bool {
    std::env::var_os("QUEUE_BENCH_QUICK").is_some()
}

fn scale(n: u64) -> u64 {
    if quick() { (n / 20).max(1) } else { n }
}

fn row(name: &str, mode: &str, value: f64, unit: &str) {
    println!("{name}_{mode}\t{value:.3}\t{unit}");
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------
// The crate's queue
// ---------------------------------------------------------------------

fn put_n(args: (Queue<u64>, u64)) {
    let (q, n) = args;
    for i in 0..n {
        q.put(i).unwrap();
    }
}

/// One producer process, the parent consumes: messages per second.
fn queue_1p1c(n: u64) -> f64 {
    let q: Queue<u64> = Queue::new().unwrap();
    let mut p = Process::new(put_n, (q.clone(), n));
    p.start().unwrap();
    assert_eq!(q.get().unwrap(), 0);
    let t = Instant::now();
    for i in 1..n {
        let v = q.get().unwrap();
        debug_assert_eq!(v, i);
        std::hint::black_box(v);
    }
    let el = t.elapsed();
    p.join().unwrap();
    (n - 1) as f64 / el.as_secs_f64()
}

/// Consumes until the sentinel; returns (count, first ns, last ns).
fn get_until_sentinel(q: Queue<u64>) -> (u64, u64, u64) {
    let mut count = 0;
    let mut first = 0;
    loop {
        let v = q.get().unwrap();
        if v == u64::MAX {
            return (count, first, now_ns());
        }
        if count == 0 {
            first = now_ns();
        }
        count += 1;
    }
}

/// Waits for the start signal, then puts `n`.
fn put_n_after_go(args: (Queue<u64>, Queue<u64>, u64)) {
    let (go, q, n) = args;
    go.get().unwrap();
    for i in 0..n {
        q.put(i).unwrap();
    }
}

/// Two producer processes, two consumer processes: messages per second.
fn queue_2p2c(n_each: u64) -> f64 {
    let q: Queue<u64> = Queue::new().unwrap();
    let go: Queue<u64> = Queue::new().unwrap();
    let mut consumers: Vec<_> = (0..2)
        .map(|_| {
            let mut p = Process::new(get_until_sentinel, q.clone());
            p.start().unwrap();
            p
        })
        .collect();
    let mut producers: Vec<_> = (0..2)
        .map(|_| {
            let mut p = Process::new(put_n_after_go, (go.clone(), q.clone(), n_each));
            p.start().unwrap();
            p
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let t0 = now_ns();
    go.put(0).unwrap();
    go.put(0).unwrap();
    for p in &mut producers {
        p.join().unwrap();
    }
    q.put(u64::MAX).unwrap();
    q.put(u64::MAX).unwrap();
    let mut total = 0;
    let mut last = 0;
    for c in &mut consumers {
        let (n, _first, l) = c.join().unwrap();
        total += n;
        last = last.max(l);
    }
    assert_eq!(total, 2 * n_each);
    total as f64 / ((last - t0) as f64 / 1e9)
}

fn put_mib(args: (Queue<()>, u64)) {
    let (q, n) = args;
    let msg = vec![7u8; 1 << 20];
    for _ in 0..n {
        q.put_bytes(&msg).unwrap();
    }
}

/// 1 MiB messages, raw bytes, one producer process: bytes per second.
/// `maxsize` 0: unbounded (the producer may run ahead and take fresh
/// memory); otherwise the producer stays at most that many messages ahead.
fn queue_1mib(n: u64, maxsize: usize) -> f64 {
    let q: Queue<()> = Queue::with_maxsize(maxsize).unwrap();
    let mut p = Process::new(put_mib, (q.clone(), n));
    p.start().unwrap();
    let mut buf = Vec::new();
    q.get_bytes_into(&mut buf, None).unwrap();
    let t = Instant::now();
    for _ in 1..n {
        q.get_bytes_into(&mut buf, None).unwrap();
        std::hint::black_box(&buf);
    }
    let el = t.elapsed();
    p.join().unwrap();
    ((n - 1) << 20) as f64 / el.as_secs_f64()
}

fn echo(args: (Queue<u64>, Queue<u64>)) {
    let (ping, pong) = args;
    loop {
        let v = ping.get().unwrap();
        pong.put(v).unwrap();
        if v == u64::MAX {
            return;
        }
    }
}

/// Round trip over two queues, in microseconds.
fn queue_pingpong(budget: Duration) -> f64 {
    let ping: Queue<u64> = Queue::new().unwrap();
    let pong: Queue<u64> = Queue::new().unwrap();
    let mut p = Process::new(echo, (ping.clone(), pong.clone()));
    p.start().unwrap();
    for i in 0..100 {
        ping.put(i).unwrap();
        pong.get().unwrap();
    }
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget {
        for _ in 0..100 {
            ping.put(n).unwrap();
            pong.get().unwrap();
            n += 1;
        }
    }
    let el = t.elapsed();
    ping.put(u64::MAX).unwrap();
    pong.get().unwrap();
    p.join().unwrap();
    el.as_secs_f64() * 1e6 / n as f64
}

// ---------------------------------------------------------------------
// Raw floors
// ---------------------------------------------------------------------

const RAW_CAP: usize = 4 << 20;

#[repr(C, align(64))]
struct Line<T>(T);

/// A raw SPSC byte ring: `[len: u64][payload padded to 8]` records, one
/// commit index per side, cached opposite index, spin (50 µs) then futex
/// with a waiter flag, no locks, no crash safety.
#[repr(C)]
struct RawRing {
    head: Line<AtomicU64>,
    tail: Line<AtomicU64>,
    data_flag: Line<AtomicU32>,
    data_seq: Line<AtomicU32>,
    space_flag: Line<AtomicU32>,
    space_seq: Line<AtomicU32>,
    data: [u8; RAW_CAP],
}

#[derive(Serialize, Deserialize, Clone)]
struct RawHandle {
    fd: SharedFd,
}

struct RawMap {
    ptr: *mut RawRing,
    len: usize,
}

impl RawHandle {
    fn new(len: usize) -> RawHandle {
        let fd = rustix::fs::memfd_create("raw", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len as u64).unwrap();
        RawHandle {
            fd: SharedFd::new(fd),
        }
    }

    fn map(&self) -> RawMap {
        let len = rustix::fs::fstat(self.fd.as_fd()).unwrap().st_size as usize;
        // SAFETY: a fresh shared mapping of the whole memfd, chosen by the
        // kernel; unmapped in Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                self.fd.as_fd(),
                0,
            )
            .unwrap()
        };
        RawMap {
            ptr: ptr.cast(),
            len,
        }
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `map`.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.cast(), self.len);
        }
    }
}

fn futex_wait(w: &AtomicU32, v: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| rustix::thread::futex::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: t.subsec_nanos() as i64,
    });
    let _ = rustix::thread::futex::wait(w, rustix::thread::futex::Flags::empty(), v, ts.as_ref());
}

fn futex_wake(w: &AtomicU32) {
    let _ = rustix::thread::futex::wake(w, rustix::thread::futex::Flags::empty(), i32::MAX as u32);
}

fn spin_allowed() -> bool {
    rustix::thread::sched_getaffinity(None)
        .map(|s| s.count() > 1)
        .unwrap_or(true)
}

/// The queue's eventcount with a fixed spin: ~50 µs when another CPU can
/// run, then sleep with a flag.
fn raw_wait(flag: &AtomicU32, seq: &AtomicU32, spin: bool, mut ready: impl FnMut() -> bool) {
    if ready() {
        return;
    }
    if spin {
        let t = Instant::now();
        let mut i = 0u32;
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if ready() {
                return;
            }
            i += 1;
            if i.is_multiple_of(8) && t.elapsed() >= Duration::from_micros(50) {
                break;
            }
        }
    }
    loop {
        let s = seq.load(Ordering::Acquire);
        flag.store(1, Ordering::SeqCst);
        if ready() {
            return;
        }
        futex_wait(seq, s, Some(Duration::from_millis(100)));
        if ready() {
            return;
        }
    }
}

fn raw_notify(flag: &AtomicU32, seq: &AtomicU32) {
    if flag.load(Ordering::SeqCst) != 0 && flag.swap(0, Ordering::SeqCst) != 0 {
        seq.fetch_add(1, Ordering::Release);
        futex_wake(seq);
    }
}

fn raw_producer(args: (RawHandle, u64)) {
    let (h, n) = args;
    let m = h.map();
    // SAFETY: the mapping holds a zero-initialised RawRing; its shared
    // fields are atomics, and `data` is written only past `tail`, which
    // this single producer owns.
    let r = unsafe { &*m.ptr };
    let data = unsafe { (&raw const (*m.ptr).data).cast::<u8>().cast_mut() };
    let spin = spin_allowed();
    let mut tail = 0u64;
    let mut head_seen = 0u64;
    for i in 0..n {
        let mut rec = [0u8; 24];
        let plen = postcard::to_slice(&i, &mut rec[8..]).unwrap().len();
        rec[..8].copy_from_slice(&(plen as u64).to_le_bytes());
        let need = 8 + plen.div_ceil(8) as u64 * 8;
        if tail + need - head_seen > RAW_CAP as u64 {
            raw_wait(&r.space_flag.0, &r.space_seq.0, spin, || {
                head_seen = r.head.0.load(Ordering::SeqCst);
                tail + need - head_seen <= RAW_CAP as u64
            });
        }
        let off = (tail % RAW_CAP as u64) as usize;
        // SAFETY: the `need` bytes from `off` (modulo the capacity) lie past
        // `tail` and before `head + RAW_CAP`: free space that only this
        // single producer writes and no consumer reads yet.
        unsafe {
            if off + need as usize <= RAW_CAP {
                std::ptr::copy_nonoverlapping(rec.as_ptr(), data.add(off), need as usize);
            } else {
                for (k, b) in rec.iter().enumerate().take(need as usize) {
                    *data.add((off + k) % RAW_CAP) = *b;
                }
            }
        }
        tail += need;
        r.tail.0.store(tail, Ordering::SeqCst);
        raw_notify(&r.data_flag.0, &r.data_seq.0);
    }
}

/// Raw SPSC ring, same u64 messages as `queue_1p1c`: messages per second.
fn raw_ring_1p1c(n: u64) -> f64 {
    let h = RawHandle::new(std::mem::size_of::<RawRing>());
    let m = h.map();
    // SAFETY: as in `raw_producer`, for the consumer side.
    let r = unsafe { &*m.ptr };
    let data = unsafe { (&raw const (*m.ptr).data).cast::<u8>() };
    let mut p = Process::new(raw_producer, (h.clone(), n));
    p.start().unwrap();
    let spin = spin_allowed();
    let mut head = 0u64;
    let mut tail_seen = 0u64;
    let mut t = None;
    for i in 0..n {
        if head == tail_seen {
            raw_wait(&r.data_flag.0, &r.data_seq.0, spin, || {
                tail_seen = r.tail.0.load(Ordering::SeqCst);
                tail_seen != head
            });
        }
        let off = (head % RAW_CAP as u64) as usize;
        let mut rec = [0u8; 24];
        // SAFETY: the record below `tail_seen` was written before the
        // producer's SeqCst store of `tail`, which we loaded; the producer
        // does not reuse it before our store of `head`.
        let len = unsafe {
            let len = if off + 8 <= RAW_CAP {
                std::ptr::read_unaligned(data.add(off).cast::<u64>())
            } else {
                0
            } as usize;
            let need = 8 + len.div_ceil(8) * 8;
            if off + need <= RAW_CAP {
                std::ptr::copy_nonoverlapping(data.add(off), rec.as_mut_ptr(), need);
            } else {
                for (k, b) in rec.iter_mut().enumerate().take(need) {
                    *b = *data.add((off + k) % RAW_CAP);
                }
            }
            u64::from_le_bytes(rec[..8].try_into().unwrap()) as usize
        };
        let v: u64 = postcard::from_bytes(&rec[8..8 + len]).unwrap();
        debug_assert_eq!(v, i);
        std::hint::black_box(v);
        head += 8 + len.div_ceil(8) as u64 * 8;
        r.head.0.store(head, Ordering::SeqCst);
        raw_notify(&r.space_flag.0, &r.space_seq.0);
        if i == 0 {
            t = Some(Instant::now());
        }
    }
    let el = t.map(|t| t.elapsed()).unwrap_or_default();
    p.join().unwrap();
    (n - 1) as f64 / el.as_secs_f64()
}

/// A futex word in its own memfd.
fn raw_pong(h: RawHandle) {
    let m = h.map();
    // SAFETY: the first word of the mapping is the shared turn word.
    let turn = unsafe { &*m.ptr.cast::<AtomicU32>() };
    loop {
        let v = turn.load(Ordering::Acquire);
        if v == 1 {
            turn.store(2, Ordering::Release);
            futex_wake(turn);
        } else if v == 3 {
            return;
        } else {
            futex_wait(turn, v, None);
        }
    }
}

/// Raw futex ping-pong (no spinning): round trip in microseconds.
fn raw_futex_pingpong(budget: Duration) -> f64 {
    let h = RawHandle::new(4096);
    let m = h.map();
    // SAFETY: as in `raw_pong`.
    let turn = unsafe { &*m.ptr.cast::<AtomicU32>() };
    let mut p = Process::new(raw_pong, h.clone());
    p.start().unwrap();
    let round = || {
        turn.store(1, Ordering::Release);
        futex_wake(turn);
        loop {
            let v = turn.load(Ordering::Acquire);
            if v == 2 {
                break;
            }
            futex_wait(turn, v, None);
        }
    };
    for _ in 0..100 {
        round();
    }
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget {
        for _ in 0..100 {
            round();
        }
        n += 100;
    }
    let el = t.elapsed();
    turn.store(3, Ordering::Release);
    futex_wake(turn);
    p.join().unwrap();
    el.as_secs_f64() * 1e6 / n as f64
}

fn pin_to_cpu0() {
    let mut set = rustix::thread::CpuSet::new();
    set.set(0);
    rustix::thread::sched_setaffinity(None, &set).unwrap();
}

/// Whether the row group `name` was selected (`QUEUE_BENCH_ONLY`, a
/// comma-separated list; all by default).
fn selected(name: &str) -> bool {
    match std::env::var("QUEUE_BENCH_ONLY") {
        Ok(list) => list.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

fn run(mode: &str) {
    let budget = if quick() {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    if selected("1p1c") {
        let q = queue_1p1c(scale(4_000_000));
        let raw = raw_ring_1p1c(scale(4_000_000));
        row("queue_1p1c_small", mode, q / 1e6, "M msg/s");
        row("raw_spsc_ring_1p1c_small", mode, raw / 1e6, "M msg/s");
        row("queue_1p1c_vs_raw_ring", mode, q / raw, "ratio");
    }
    if selected("2p2c") {
        row(
            "queue_2p2c_small",
            mode,
            queue_2p2c(scale(1_000_000)) / 1e6,
            "M msg/s",
        );
    }
    if selected("1mib") {
        row("queue_1mib", mode, queue_1mib(scale(2000), 0) / 1e9, "GB/s");
        row(
            "queue_1mib_maxsize4",
            mode,
            queue_1mib(scale(2000), 4) / 1e9,
            "GB/s",
        );
    }
    if selected("pingpong") {
        let pp = queue_pingpong(budget);
        let raw_pp = raw_futex_pingpong(budget);
        row("queue_pingpong", mode, pp, "us/round trip");
        row("raw_futex_pingpong", mode, raw_pp, "us/round trip");
        row("queue_pingpong_vs_raw_futex", mode, pp / raw_pp, "ratio");
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench`-less args;
    // only measure when asked to (cargo bench passes `--bench`).
    if !std::env::args().any(|a| a == "--bench") {
        println!("queue bench: pass --bench (cargo bench) to measure");
        return;
    }
    let idle: Queue<u64> = Queue::new().unwrap();
    println!("queue_idle_fresh\t{}\tbytes", idle.memory_usage().unwrap());
    for i in 0..100_000 {
        idle.put(i).unwrap();
    }
    while idle.get_nowait().is_ok() {}
    println!(
        "queue_idle_after_100k\t{}\tbytes",
        idle.memory_usage().unwrap()
    );
    run("unpinned");
    pin_to_cpu0();
    run("pinned");
}
