//! Queues: `Queue` between processes, against a raw shared-memory SPSC
//! ring and a raw futex ping-pong.
//!
//! * `queue.1p1c.small`: a child puts N `u64`s, the bench process gets
//!   them; messages/s from the first message received to the last. Raw:
//!   the same over a [`RawRing`] (a forked producer).
//! * `queue.2p2c.small`: two producer children put N `u64`s each, then a
//!   sentinel; two consumer children get until their first sentinel and
//!   stamp the time; messages/s from the start signal to the last stamp.
//!   Raw: two [`RawRing`]s side by side, each with its own producer and
//!   consumer (no contention at all: a floor, not the same algorithm).
//! * `queue.throughput.1mib`: a child puts N 1 MiB messages with
//!   `put_bytes`, the bench process takes them with `get_bytes_into` into
//!   one reused buffer; payload GB/s. Raw: the same records through a
//!   [`RawRing`], copied in and out.
//! * `queue.throughput.1mib_maxsize4`: the same with a queue of `maxsize`
//!   4 (the producer stays at most four messages ahead); same floor.
//! * `queue.pingpong`: round trip of a `u64` over two queues to an echoing
//!   child, µs. Raw: two futex words (store + wake / wait + clear, no
//!   spinning), as the `sync.event.pingpong` floor.
//! * `queue.memory.idle_fresh`, `queue.memory.idle_after_100k`: what
//!   `Queue::memory_usage` reports for a new queue, and for one that
//!   carried 100k small messages and is empty again. "Raw": the memory of
//!   a [`RawRing`] of the queue's default ring size, which it holds all
//!   its life (not a measurement: the bound an idle queue must stay
//!   within). No Python figure.
//!
//! The raw ring keeps the queue's record format and codec: records of an
//! 8-byte length and the payload padded to 8 bytes, `u64`s encoded with
//! postcard; one index per side, a cached copy of the other side's, a
//! fixed 50 µs spin (only when more than one CPU may run the process), then
//! a futex sleep with a waiter flag so that the other side skips the wake
//! when nobody sleeps. No locks, no crash safety, no growth.

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::queue::DEFAULT_RING_SIZE;
use multiproc::{Event, Process, Queue, Semaphore};

use crate::harness::{
    BenchResult, Crew, Ctx, Figures, Row, Unit, alternate, check_eq, go_when_ready, micros_per_op,
    monotonic_ns, per_sec_between,
};
use crate::raw::{
    FutexPingPong, Line, RawChild, Shared, StartGate, Zeroable, futex_wait, futex_wake,
};

/// How long the two-to-two row waits for its children to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

const MIB: usize = 1 << 20;

/// How long the raw ring spins before it sleeps.
const RAW_SPIN: Duration = Duration::from_micros(50);

/// The raw ring's data size: the queue's default ring size.
const RING_CAP: usize = DEFAULT_RING_SIZE;

/// The sentinel of the two-to-two row.
const STOP: u64 = u64::MAX;

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "queue.1p1c.small",
            unit: Unit::MsgsPerSec,
            run: one_to_one,
            python: true,
            round_trip: false,
        },
        Row {
            name: "queue.2p2c.small",
            unit: Unit::MsgsPerSec,
            run: two_to_two,
            python: true,
            round_trip: false,
        },
        Row {
            name: "queue.throughput.1mib",
            unit: Unit::GBPerSec,
            run: throughput_1mib,
            python: true,
            round_trip: false,
        },
        Row {
            name: "queue.throughput.1mib_maxsize4",
            unit: Unit::GBPerSec,
            run: throughput_1mib_maxsize4,
            python: true,
            round_trip: false,
        },
        Row {
            name: "queue.pingpong",
            unit: Unit::Micros,
            run: pingpong,
            python: true,
            round_trip: true,
        },
        Row {
            name: "queue.memory.idle_fresh",
            unit: Unit::Bytes,
            run: memory_fresh,
            python: false,
            round_trip: false,
        },
        Row {
            name: "queue.memory.idle_after_100k",
            unit: Unit::Bytes,
            run: memory_after_100k,
            python: false,
            round_trip: false,
        },
    ]
}

// ---- crate children ----

fn put_n((q, n): (Queue<u64>, u64)) {
    for i in 0..n {
        q.put(i).expect("put");
    }
}

fn put_mib((q, n): (Queue<()>, u64)) {
    let msg = vec![0x5a_u8; MIB];
    for _ in 0..n {
        q.put_bytes(&msg).expect("put_bytes");
    }
}

/// Releases `ready`, waits for `go`, puts `n` values then [`STOP`].
fn produce_after_go((q, ready, go, n): (Queue<u64>, Semaphore, Event, u64)) {
    ready.release().expect("release ready");
    go.wait();
    for i in 0..n {
        q.put(i).expect("put");
    }
    q.put(STOP).expect("put stop");
}

/// Releases `ready`, gets until the first [`STOP`]; returns how many
/// values it got and when it got the sentinel ([`monotonic_ns`]).
fn consume_until_stop((q, ready): (Queue<u64>, Semaphore)) -> (u64, u64) {
    ready.release().expect("release ready");
    let mut count = 0;
    loop {
        if q.get().expect("get") == STOP {
            return (count, monotonic_ns());
        }
        count += 1;
    }
}

/// Echoes values from `ping` to `pong` until (and including) [`STOP`].
fn echo((ping, pong): (Queue<u64>, Queue<u64>)) {
    crate::harness::pin_child();
    loop {
        let v = ping.get().expect("get");
        pong.put(v).expect("put");
        if v == STOP {
            return;
        }
    }
}

fn check_value(got: u64, want: u64) -> BenchResult<()> {
    check_eq("value", got, want)
}

// ---- the raw SPSC ring ----

/// A single-producer single-consumer byte ring in shared memory: records
/// of `[len: u64 LE][payload, padded to 8]`; `head` and `tail` count
/// bytes ever consumed and produced.
#[repr(C)]
struct RawRing {
    head: Line<AtomicU64>,
    tail: Line<AtomicU64>,
    data_flag: Line<AtomicU32>,
    data_seq: Line<AtomicU32>,
    space_flag: Line<AtomicU32>,
    space_seq: Line<AtomicU32>,
    data: UnsafeCell<[u8; RING_CAP]>,
}

// SAFETY: the atomics are valid at zero and shared through `&`; `data` is
// plain bytes, valid at zero, written by the single producer only in free
// space (past `tail`, before `head + RING_CAP`) and read by the single
// consumer only in published space (past `head`, before `tail`), the
// SeqCst stores and loads of `head` and `tail` ordering the two.
unsafe impl Zeroable for RawRing {}

/// A record's size in the ring for a payload of `len` bytes.
fn record_len(len: usize) -> u64 {
    8 + len.div_ceil(8) as u64 * 8
}

impl RawRing {
    /// Copies `src` into the ring from `off`, wrapping at the end.
    ///
    /// # Safety
    ///
    /// The `src.len()` bytes from `off` (modulo the capacity) are free
    /// space owned by the calling producer.
    unsafe fn write_at(&self, off: usize, src: &[u8]) {
        let base = self.data.get().cast::<u8>();
        let first = src.len().min(RING_CAP - off);
        // SAFETY: both ranges lie inside the ring (`off < RING_CAP`, the
        // rest wraps to the start) and are free space (the caller's
        // contract); `src` is a distinct allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(off), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), base, src.len() - first);
        }
    }

    /// Copies bytes of the ring from `off` into `dst`, wrapping at the end.
    ///
    /// # Safety
    ///
    /// The `dst.len()` bytes from `off` (modulo the capacity) are published
    /// space owned by the calling consumer.
    unsafe fn read_at(&self, off: usize, dst: &mut [u8]) {
        let base = self.data.get().cast::<u8>().cast_const();
        let first = dst.len().min(RING_CAP - off);
        // SAFETY: as in `write_at`, for published space.
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(off), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }
}

/// Whether this process may run on more than one CPU (else spinning only
/// keeps the other side from running).
fn spin_allowed() -> bool {
    // SAFETY: an all-zero cpu_set_t is a valid empty set, and
    // sched_getaffinity writes at most `size_of` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return true;
        }
        libc::CPU_COUNT(&set) > 1
    }
}

/// Waits until `ready()`: spins up to [`RAW_SPIN`] if `spin`, then sleeps
/// on `seq` with `flag` raised (see [`raw_notify`]).
fn raw_wait(flag: &AtomicU32, seq: &AtomicU32, spin: bool, mut ready: impl FnMut() -> bool) {
    if ready() {
        return;
    }
    if spin {
        let t0 = Instant::now();
        let mut i = 0u32;
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if ready() {
                return;
            }
            i += 1;
            if i.is_multiple_of(8) && t0.elapsed() >= RAW_SPIN {
                break;
            }
        }
    }
    loop {
        let s = seq.load(Ordering::SeqCst);
        flag.store(1, Ordering::SeqCst);
        if ready() {
            return;
        }
        futex_wait(seq, s);
    }
}

/// After making a condition true (SeqCst store): wakes the other side if
/// its flag says it may sleep.
fn raw_notify(flag: &AtomicU32, seq: &AtomicU32) {
    if flag.load(Ordering::SeqCst) != 0 && flag.swap(0, Ordering::SeqCst) != 0 {
        seq.fetch_add(1, Ordering::SeqCst);
        futex_wake(seq, i32::MAX);
    }
}

struct RawProducer<'a> {
    ring: &'a RawRing,
    tail: u64,
    head_seen: u64,
    spin: bool,
}

impl<'a> RawProducer<'a> {
    /// The producer of a fresh ring (one per ring).
    fn new(ring: &'a RawRing) -> Self {
        RawProducer {
            ring,
            tail: 0,
            head_seen: 0,
            spin: spin_allowed(),
        }
    }

    fn push(&mut self, payload: &[u8]) {
        let r = self.ring;
        let need = record_len(payload.len());
        assert!(need <= RING_CAP as u64, "record larger than the ring");
        let tail = self.tail;
        if tail + need - self.head_seen > RING_CAP as u64 {
            let head_seen = &mut self.head_seen;
            raw_wait(&r.space_flag, &r.space_seq, self.spin, || {
                *head_seen = r.head.load(Ordering::SeqCst);
                tail + need - *head_seen <= RING_CAP as u64
            });
        }
        let off = (tail % RING_CAP as u64) as usize;
        // SAFETY: the record's `need` bytes from `off` lie past `tail` and
        // before `head_seen + RING_CAP`: free space of this single
        // producer. The 8-byte length never wraps (offsets are multiples
        // of 8, as is the capacity).
        unsafe {
            r.write_at(off, &(payload.len() as u64).to_le_bytes());
            r.write_at((off + 8) % RING_CAP, payload);
        }
        self.tail = tail + need;
        r.tail.store(self.tail, Ordering::SeqCst);
        raw_notify(&r.data_flag, &r.data_seq);
    }
}

struct RawConsumer<'a> {
    ring: &'a RawRing,
    head: u64,
    tail_seen: u64,
    spin: bool,
}

impl<'a> RawConsumer<'a> {
    /// The consumer of a fresh ring (one per ring).
    fn new(ring: &'a RawRing) -> Self {
        RawConsumer {
            ring,
            head: 0,
            tail_seen: 0,
            spin: spin_allowed(),
        }
    }

    /// Takes the next record into `buf` (reusing it; its length is only
    /// changed when the record's differs) and returns its payload.
    fn pop<'b>(&mut self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        let r = self.ring;
        let head = self.head;
        if head == self.tail_seen {
            let tail_seen = &mut self.tail_seen;
            raw_wait(&r.data_flag, &r.data_seq, self.spin, || {
                *tail_seen = r.tail.load(Ordering::SeqCst);
                *tail_seen != head
            });
        }
        let off = (head % RING_CAP as u64) as usize;
        let mut len = [0u8; 8];
        // SAFETY: the record at `head` is below `tail_seen`, published by
        // the producer's SeqCst store of `tail` that we loaded; it is not
        // reused before our store of `head` below.
        let len = unsafe {
            r.read_at(off, &mut len);
            let len = u64::from_le_bytes(len) as usize;
            if buf.len() != len {
                buf.resize(len, 0);
            }
            r.read_at((off + 8) % RING_CAP, buf);
            len
        };
        self.head = head + record_len(len);
        r.head.store(self.head, Ordering::SeqCst);
        raw_notify(&r.space_flag, &r.space_seq);
        buf
    }
}

/// Pushes `n` postcard-encoded `u64`s from 0, then `stop` if given.
fn raw_put_n(p: &mut RawProducer<'_>, n: u64, stop: Option<u64>) {
    let mut rec = [0u8; 16];
    for i in 0..n {
        p.push(postcard::to_slice(&i, &mut rec).expect("encode"));
    }
    if let Some(s) = stop {
        p.push(postcard::to_slice(&s, &mut rec).expect("encode"));
    }
}

fn raw_get(c: &mut RawConsumer<'_>, buf: &mut Vec<u8>) -> BenchResult<u64> {
    Ok(postcard::from_bytes(c.pop(buf))?)
}

// ---- one producer, one consumer ----

fn one_to_one_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    // (warm-up runs, measured runs, messages per run)
    (1, ctx.pick(3, 7), ctx.pick(50_000, 2_000_000))
}

fn crate_one_to_one(n: u64) -> BenchResult<f64> {
    let q = Queue::<u64>::new()?;
    let mut crew = Crew::new();
    crew.start(Process::new(put_n, (q.clone(), n)))?;
    check_value(q.get()?, 0)?;
    let t0 = Instant::now();
    for i in 1..n {
        check_value(black_box(q.get()?), i)?;
    }
    let rate = (n - 1) as f64 / t0.elapsed().as_secs_f64();
    crew.join()?;
    Ok(rate)
}

fn raw_one_to_one(n: u64) -> BenchResult<f64> {
    let ring = Shared::<RawRing>::new()?;
    let r = &*ring;
    let child = RawChild::fork(|| raw_put_n(&mut RawProducer::new(r), n, None))?;
    let mut c = RawConsumer::new(r);
    let mut buf = Vec::new();
    check_value(raw_get(&mut c, &mut buf)?, 0)?;
    let t0 = Instant::now();
    for i in 1..n {
        check_value(black_box(raw_get(&mut c, &mut buf)?), i)?;
    }
    let rate = (n - 1) as f64 / t0.elapsed().as_secs_f64();
    child.wait()?;
    Ok(rate)
}

fn one_to_one(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = one_to_one_sizes(ctx);
    alternate(warm, reps, || crate_one_to_one(n), || raw_one_to_one(n))
}

// ---- two producers, two consumers ----

fn two_to_two_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    // (warm-up runs, measured runs, messages per producer)
    (1, ctx.pick(3, 5), ctx.pick(20_000, 500_000))
}

fn crate_two_to_two(n: u64) -> BenchResult<f64> {
    let q = Queue::<u64>::new()?;
    let ready = Semaphore::new(0)?;
    let go = Event::new()?;
    let mut consumers = Crew::new();
    for _ in 0..2 {
        consumers.start(Process::new(consume_until_stop, (q.clone(), ready.clone())))?;
    }
    let mut producers = Crew::new();
    for _ in 0..2 {
        producers.start(Process::new(
            produce_after_go,
            (q.clone(), ready.clone(), go.clone(), n),
        ))?;
    }
    let t0 = go_when_ready(&ready, &go, 4, READY_TIMEOUT)?;
    producers.join()?;
    let got = consumers.join()?;
    check_value(got.iter().map(|g| g.0).sum(), 2 * n)?;
    let end = got.iter().map(|g| g.1).max().unwrap_or(t0);
    Ok(per_sec_between(t0, end, 2 * n))
}

/// Two raw rings and the start handshake of their four children.
#[repr(C)]
struct TwoRings {
    gate: StartGate,
    rings: [RawRing; 2],
}

// SAFETY: every field is zeroable and shared through `&` only.
unsafe impl Zeroable for TwoRings {}

fn raw_two_to_two(n: u64) -> BenchResult<f64> {
    let shared = Shared::<TwoRings>::new()?;
    let s = &*shared;
    let mut kids = Vec::with_capacity(4);
    for ring in &s.rings {
        kids.push(RawChild::fork(|| {
            let mut c = RawConsumer::new(ring);
            s.gate.arrive();
            let mut buf = Vec::new();
            let mut count = 0;
            while raw_get(&mut c, &mut buf).expect("decode") != STOP {
                count += 1;
            }
            s.gate.finish();
            assert_eq!(count, n, "raw consumer count");
        })?);
        kids.push(RawChild::fork(|| {
            let mut p = RawProducer::new(ring);
            s.gate.arrive();
            s.gate.wait_go();
            raw_put_n(&mut p, n, Some(STOP));
        })?);
    }
    let t0 = s.gate.open_when_ready(4);
    for k in kids {
        k.wait()?;
    }
    Ok(per_sec_between(t0, s.gate.end(), 2 * n))
}

fn two_to_two(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = two_to_two_sizes(ctx);
    alternate(warm, reps, || crate_two_to_two(n), || raw_two_to_two(n))
}

// ---- 1 MiB messages ----

fn big_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    // (warm-up runs, measured runs, messages per run)
    (1, ctx.pick(3, 7), ctx.pick(32, 512))
}

/// GB/s for `n` messages of 1 MiB from the first received to the last.
fn big_rate(n: u64, t0: Instant) -> f64 {
    ((n - 1) as usize * MIB) as f64 / t0.elapsed().as_secs_f64() / 1e9
}

fn check_len(got: usize) -> BenchResult<()> {
    check_eq("message length", got, MIB)
}

fn crate_1mib(n: u64, maxsize: usize) -> BenchResult<f64> {
    let q = Queue::<()>::with_maxsize(maxsize)?;
    let mut crew = Crew::new();
    crew.start(Process::new(put_mib, (q.clone(), n)))?;
    let mut buf = Vec::new();
    check_len(q.get_bytes_into(&mut buf, None)?)?;
    let t0 = Instant::now();
    for _ in 1..n {
        check_len(q.get_bytes_into(&mut buf, None)?)?;
        black_box(&buf);
    }
    let rate = big_rate(n, t0);
    crew.join()?;
    Ok(rate)
}

fn raw_1mib(n: u64) -> BenchResult<f64> {
    let ring = Shared::<RawRing>::new()?;
    let r = &*ring;
    let child = RawChild::fork(|| {
        let mut p = RawProducer::new(r);
        let msg = vec![0x5a_u8; MIB];
        for _ in 0..n {
            p.push(&msg);
        }
    })?;
    let mut c = RawConsumer::new(r);
    let mut buf = Vec::new();
    check_len(c.pop(&mut buf).len())?;
    let t0 = Instant::now();
    for _ in 1..n {
        check_len(black_box(c.pop(&mut buf)).len())?;
    }
    let rate = big_rate(n, t0);
    child.wait()?;
    Ok(rate)
}

fn throughput_1mib(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = big_sizes(ctx);
    alternate(warm, reps, || crate_1mib(n, 0), || raw_1mib(n))
}

fn throughput_1mib_maxsize4(ctx: &Ctx) -> BenchResult<Figures> {
    let (warm, reps, n) = big_sizes(ctx);
    alternate(warm, reps, || crate_1mib(n, 4), || raw_1mib(n))
}

// ---- ping-pong ----

fn pingpong(ctx: &Ctx) -> BenchResult<Figures> {
    // (warm-up batches, measured batches, round trips per batch)
    let (warm, reps, n) = (1, ctx.pick(3, 9), ctx.pick(200u64, 2_000));
    let ping = Queue::<u64>::new()?;
    let pong = Queue::<u64>::new()?;
    let mut crew = Crew::new();
    crew.start(Process::new(echo, (ping.clone(), pong.clone())))?;
    let raw_echo = FutexPingPong::start()?;
    let figures = alternate(
        warm,
        reps,
        || {
            let t0 = Instant::now();
            for i in 0..n {
                ping.put(i)?;
                check_value(pong.get()?, i)?;
            }
            Ok(micros_per_op(t0, n))
        },
        || Ok(raw_echo.round_trips(n)),
    )?;
    ping.put(STOP)?;
    check_value(pong.get()?, STOP)?;
    crew.join()?;
    raw_echo.stop()?;
    Ok(figures)
}

// ---- memory of an idle queue ----

fn memory_fresh(_: &Ctx) -> BenchResult<Figures> {
    let q = Queue::<u64>::new()?;
    Ok(Figures {
        krate: q.memory_usage()? as f64,
        raw: std::mem::size_of::<RawRing>() as f64,
        extra: Vec::new(),
    })
}

fn memory_after_100k(_: &Ctx) -> BenchResult<Figures> {
    let q = Queue::<u64>::new()?;
    for i in 0..100_000 {
        q.put(i)?;
    }
    let mut got = 0;
    while q.get_nowait().is_ok() {
        got += 1;
    }
    check_value(got, 100_000)?;
    Ok(Figures {
        krate: q.memory_usage()? as f64,
        raw: std::mem::size_of::<RawRing>() as f64,
        extra: Vec::new(),
    })
}
