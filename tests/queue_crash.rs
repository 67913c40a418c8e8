//! Crash safety of the shared-memory queue: processes SIGKILLed inside
//! `put` and `get`, at chosen points and at random moments, must never
//! corrupt the queue, block the survivors, show a partial message, lose a
//! message whose `put` returned, or deliver one twice.
//!
//! The random stress test runs ~30 s in CI; set
//! `MULTIPROC_QUEUE_STRESS_SECS` for a longer run and
//! `MULTIPROC_QUEUE_STRESS_SEED` to replay a seed.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::watchdog;
use multiproc::*;
use serde::{Serialize, Serializer};

/// Ends this process at once with SIGKILL, as an outside killer would.
fn die_now() -> ! {
    // SAFETY: kill(2) on our own pid with a valid signal; nothing is
    // assumed about memory afterwards because the process is gone.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL cannot be caught")
}

fn pattern(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn expect_killed<R: std::fmt::Debug>(r: Result<R, JoinError>) {
    match r {
        Err(JoinError::Killed { signal }) => assert_eq!(signal, libc::SIGKILL),
        other => panic!("expected the child to be killed, got {other:?}"),
    }
}

// ----- deterministic crash points -----

/// Reads the front message in place and dies before `get` can commit.
fn consumer_dies_holding_message(q: Queue<()>) {
    let _ = q.get_bytes_with(None, |bytes| {
        // Touch the whole message (the copy a real consumer would make).
        let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        std::hint::black_box(sum);
        die_now()
    });
}

#[test]
fn consumer_killed_inside_get_does_not_consume() {
    watchdog(Duration::from_secs(60), || {
        let q: Queue<()> = Queue::builder().ring_size(128 << 10).build().unwrap();
        // A small message, one that straddles segments, one larger than the
        // ring.
        let sizes = [100usize, 100_000, 1 << 20];
        for (n, &len) in sizes.iter().enumerate() {
            q.put_bytes(&pattern(n as u64, len)).unwrap();
        }
        for (n, &len) in sizes.iter().enumerate() {
            // Two consumers die holding the front message (and the consumer
            // lock) in turn; the third get must not block, and must return
            // the very same message.
            for _ in 0..2 {
                let mut p = Process::new(consumer_dies_holding_message, q.clone());
                p.start().unwrap();
                expect_killed(p.join());
                assert_eq!(q.qsize(), sizes.len() - n);
            }
            let got = q.get_bytes_timeout(Duration::from_secs(10)).unwrap();
            assert!(got == pattern(n as u64, len), "message {n} changed");
        }
        assert!(q.empty());
        q.put_bytes(b"after").unwrap();
        assert_eq!(q.get_bytes().unwrap(), b"after");
    });
}

/// Serialises as `len` bytes, then dies: the process is killed in the
/// middle of writing the message into the queue, holding the producer
/// lock and perhaps freshly linked segments.
struct DieWhileSerialising {
    written: usize,
}

impl Serialize for DieWhileSerialising {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        struct Die;
        impl Serialize for Die {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                die_now()
            }
        }
        use serde::ser::SerializeTuple;
        let data = pattern(99, self.written);
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&Bytes(&data))?;
        t.serialize_element(&Die)?;
        t.end()
    }
}

fn producer_dies_mid_put(args: (Queue<()>, usize)) {
    let (q, written) = args;
    // The same shared memory, seen as a queue of the dying type.
    let q: Queue<DieWhileSerialisingWire> = reinterpret(q);
    let _ = q.put(DieWhileSerialisingWire(DieWhileSerialising { written }));
}

/// `Queue<T>` only needs `T: Serialize + DeserializeOwned` for its typed
/// methods; this wrapper satisfies the bound for a value that never
/// arrives.
struct DieWhileSerialisingWire(DieWhileSerialising);

impl Serialize for DieWhileSerialisingWire {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for DieWhileSerialisingWire {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("never sent"))
    }
}

/// The same queue handle with another element type (through a pipe, as a
/// process would receive it).
fn reinterpret<A, B>(q: Queue<A>) -> Queue<B> {
    let (a, b) = pipe().unwrap();
    a.send(&q).unwrap();
    b.recv().unwrap()
}

#[test]
fn producer_killed_inside_put_leaves_nothing_behind() {
    watchdog(Duration::from_secs(90), || {
        let q: Queue<()> = Queue::builder().ring_size(128 << 10).build().unwrap();
        q.put_bytes(b"before").unwrap();
        // Die after writing nothing, a few bytes, exactly up to a segment
        // end, across one boundary, across many (into cold segments).
        for (k, written) in [0usize, 10, 65_520, 70_000, 700_000, 3 << 20]
            .into_iter()
            .enumerate()
        {
            for _ in 0..2 {
                let mut p = Process::new(producer_dies_mid_put, (q.clone(), written));
                p.start().unwrap();
                expect_killed(p.join());
                // Nothing partial became visible.
                assert_eq!(q.qsize(), 1 + k);
            }
            // The next producer recovers the lock and writes over the
            // leftovers; its message arrives intact after the earlier ones.
            q.put_bytes(&pattern(k as u64, 50_000 + k)).unwrap();
        }
        assert_eq!(q.get_bytes().unwrap(), b"before");
        for k in 0..6 {
            assert!(q.get_bytes().unwrap() == pattern(k as u64, 50_000 + k));
        }
        assert!(q.empty());
        // Memory went back: only the ring (and what the consumer stands
        // in) stays.
        let idle = q.memory_usage().unwrap();
        assert!(
            idle <= (128 << 10) + (64 << 10) + (64 << 10),
            "idle queue holds {idle} bytes"
        );
    });
}

// ----- random kills -----

/// The longest message the stress tests put.
const MAX_MESSAGE: usize = 65_536 + (400 << 10) + 24;

/// Message layout: [inc: u32][seq: u32][len: u32][0: u32][payload][fnv: u64].
fn make_message(inc: u32, seq: u32, rng: &mut Rng) -> Vec<u8> {
    let r = rng.next() % 100;
    let len = if r < 85 {
        (rng.next() % 240) as usize
    } else if r < 98 {
        (rng.next() % 65_536) as usize
    } else {
        65_536 + (rng.next() % (400 << 10)) as usize
    };
    let mut m = Vec::with_capacity(len + 24);
    m.extend_from_slice(&inc.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(len as u32).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&pattern((u64::from(inc) << 32) | u64::from(seq), len));
    let h = fnv(&m);
    m.extend_from_slice(&h.to_le_bytes());
    m
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Checks a message; returns (inc, seq) if it is intact.
fn check_message(m: &[u8]) -> Option<(u32, u32)> {
    if m.len() < 24 {
        return None;
    }
    let u = |i: usize| u32::from_le_bytes(m[i..i + 4].try_into().unwrap());
    let (inc, seq, len) = (u(0), u(4), u(8) as usize);
    if m.len() != len + 24 {
        return None;
    }
    let body = &m[..16 + len];
    let h = u64::from_le_bytes(m[16 + len..].try_into().unwrap());
    if h != fnv(body)
        || m[16..16 + len] != pattern((u64::from(inc) << 32) | u64::from(seq), len)[..]
    {
        return None;
    }
    Some((inc, seq))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Events sent by the workers to the parent: `A` put returned, `T` a
/// consumer holds the message (inside `get`, before its commit), `F` its
/// `get` returned, `X` a corrupt message.
fn event(kind: u8, inc: u32, seq: u32) -> [u8; 9] {
    let mut e = [0u8; 9];
    e[0] = kind;
    e[1..5].copy_from_slice(&inc.to_le_bytes());
    e[5..9].copy_from_slice(&seq.to_le_bytes());
    e
}

fn stress_producer(args: (Queue<()>, Connection, u32)) {
    let (q, conn, inc) = args;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ u64::from(inc).wrapping_mul(0x9E37_79B9));
    for seq in 0.. {
        let m = make_message(inc, seq, &mut rng);
        q.put_bytes(&m).unwrap();
        conn.send_bytes(&event(b'A', inc, seq)).unwrap();
    }
}

fn stress_consumer(args: (Queue<()>, Connection)) {
    let (q, conn) = args;
    loop {
        let got = q.get_bytes_with(Some(Duration::from_millis(200)), |m| {
            match check_message(m) {
                Some((inc, seq)) => {
                    conn.send_bytes(&event(b'T', inc, seq)).unwrap();
                    Some((inc, seq))
                }
                None => {
                    conn.send_bytes(&event(b'X', 0, 0)).unwrap();
                    None
                }
            }
        });
        if let Ok(Some((inc, seq))) = got {
            conn.send_bytes(&event(b'F', inc, seq)).unwrap();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
}

struct Worker {
    role: Role,
    proc_: Process<()>,
}

/// Everything a worker incarnation reported, collected by a reader thread.
type Events = Vec<[u8; 9]>;

struct Stress {
    q: Queue<()>,
    rng: Rng,
    next_inc: u32,
    workers: Vec<Worker>,
    readers: Vec<(Role, u32, std::thread::JoinHandle<Events>)>,
    kills: usize,
    consumer_kills: usize,
}

impl Stress {
    fn start(&mut self, role: Role) {
        let (ours, theirs) = pipe().unwrap();
        let inc = self.next_inc;
        self.next_inc += 1;
        let mut p = match role {
            Role::Producer => Process::new(stress_producer, (self.q.clone(), theirs, inc)),
            Role::Consumer => Process::new(stress_consumer, (self.q.clone(), theirs)),
        };
        p.start().unwrap();
        let reader = std::thread::spawn(move || {
            let mut evs = Vec::new();
            while let Ok(b) = ours.recv_bytes() {
                evs.push(b.try_into().expect("9-byte event"));
            }
            evs
        });
        self.readers.push((role, inc, reader));
        self.workers.push(Worker { role, proc_: p });
    }

    fn kill(&mut self, i: usize) {
        let w = self.workers.swap_remove(i);
        w.proc_.kill().unwrap();
        let mut p = w.proc_;
        match p.join_timeout(Duration::from_secs(20)) {
            Err(JoinError::Killed { .. }) => {}
            other => panic!("{:?} worker ended unexpectedly: {other:?}", w.role),
        }
        self.kills += 1;
        if w.role == Role::Consumer {
            self.consumer_kills += 1;
        }
    }
}

/// `jq` is only used to read how many puts ever committed (nobody calls
/// `task_done`, so that is its count of unfinished tasks).
fn run_stress(
    jq: JoinableQueue<()>,
    (ring, capacity): (usize, usize),
    secs: f64,
    seed: u64,
    producers: usize,
    consumers: usize,
) {
    let mut s = Stress {
        q: (*jq).clone(),
        rng: Rng(seed | 1),
        next_inc: 0,
        workers: Vec::new(),
        readers: Vec::new(),
        kills: 0,
        consumer_kills: 0,
    };
    for _ in 0..producers {
        s.start(Role::Producer);
    }
    for _ in 0..consumers {
        s.start(Role::Consumer);
    }
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5 + s.rng.next() % 110));
        let i = (s.rng.next() % s.workers.len() as u64) as usize;
        let role = s.workers[i].role;
        s.kill(i);
        s.start(role);
    }
    while !s.workers.is_empty() {
        s.kill(0);
    }
    // Whatever the killed consumers left, the parent drains now: the last
    // lock holders were killed too, so this also tests recovery.
    let mut drained = Vec::new();
    let mut corrupt = 0;
    loop {
        match s.q.get_bytes_nowait() {
            Ok(m) => match check_message(&m) {
                Some(id) => drained.push(id),
                None => corrupt += 1,
            },
            Err(TryGetError::Empty) => break,
            Err(e) => panic!("draining failed: {e}"),
        }
    }
    assert_eq!(corrupt, 0, "corrupt messages in the queue");
    assert_eq!(s.q.qsize(), 0);

    // Collect every report.
    let mut acked: HashMap<u32, u32> = HashMap::new();
    let mut finals: HashMap<(u32, u32), u32> = HashMap::new();
    let mut tentative_only: HashMap<(u32, u32), u32> = HashMap::new();
    let mut produced_incs = Vec::new();
    for (role, inc, reader) in s.readers.drain(..) {
        let evs = reader.join().unwrap();
        match role {
            Role::Producer => {
                produced_incs.push(inc);
                let n = evs.iter().filter(|e| e[0] == b'A').count() as u32;
                for (k, e) in evs.iter().enumerate() {
                    assert_eq!(e[0], b'A');
                    assert_eq!(u32::from_le_bytes(e[5..9].try_into().unwrap()), k as u32);
                }
                acked.insert(inc, n);
            }
            Role::Consumer => {
                let mut open: Option<(u32, u32)> = None;
                for e in evs {
                    let id = (
                        u32::from_le_bytes(e[1..5].try_into().unwrap()),
                        u32::from_le_bytes(e[5..9].try_into().unwrap()),
                    );
                    match e[0] {
                        b'T' => {
                            assert!(open.is_none(), "two messages held at once");
                            open = Some(id);
                        }
                        b'F' => {
                            assert_eq!(open.take(), Some(id));
                            *finals.entry(id).or_default() += 1;
                        }
                        b'X' => panic!("a consumer saw a corrupt message"),
                        k => panic!("unknown event {k}"),
                    }
                }
                // At most one message held when this consumer was killed.
                if let Some(id) = open {
                    *tentative_only.entry(id).or_default() += 1;
                }
            }
        }
    }
    for id in drained {
        *finals.entry(id).or_default() += 1;
    }

    // No duplicates, nothing that was never put.
    for (&(inc, seq), &n) in &finals {
        assert_eq!(n, 1, "message {inc}/{seq} delivered {n} times");
        let a = *acked
            .get(&inc)
            .unwrap_or_else(|| panic!("message from unknown producer {inc}"));
        // `seq == a` is the put in progress when its producer died.
        assert!(seq <= a, "message {inc}/{seq} was never put (acked {a})");
    }
    // Every put that returned was delivered: by a get that returned, or by
    // a get killed after its commit (held, never finalised, and then never
    // delivered again).
    let mut in_doubt = 0;
    let mut messages = 0u64;
    for inc in produced_incs {
        let a = acked[&inc];
        messages += u64::from(a);
        for seq in 0..a {
            let f = finals.get(&(inc, seq)).copied().unwrap_or(0);
            if f == 0 {
                assert!(
                    tentative_only.contains_key(&(inc, seq)),
                    "message {inc}/{seq} was put but never delivered"
                );
                in_doubt += 1;
            }
        }
    }
    assert!(in_doubt <= s.consumer_kills);
    // Every committed put was observed by exactly one consumer: the number
    // of distinct messages seen equals the number of commits.
    let seen: std::collections::HashSet<_> = finals.keys().chain(tentative_only.keys()).collect();
    assert_eq!(
        seen.len(),
        jq.unfinished_tasks(),
        "committed puts and deliveries differ"
    );
    let drained = s.q.memory_usage().unwrap();
    // The queue still works, and its first `put` repairs what a producer
    // killed mid-`put` left behind (segments linked or reused for a
    // message never committed).
    s.q.put_bytes(b"end").unwrap();
    assert_eq!(s.q.get_bytes().unwrap(), b"end");
    let idle = s.q.memory_usage().unwrap();
    eprintln!(
        "stress: seed {seed:#x}, {} kills ({} consumers), {messages} acknowledged messages, \
         {in_doubt} consumed by gets killed after their commit, {drained} bytes held when \
         drained, {idle} once used again",
        s.kills, s.consumer_kills
    );
    // Memory went back: the ring, the segment the consumer stands in, and
    // the bookkeeping pages. (Before that `put`, a killed producer's
    // uncommitted segments may still be held: at most its message and a
    // ring's worth.)
    assert!(
        idle <= ring + (64 << 10) + (16 << 10) + (capacity / 8192).next_multiple_of(4096),
        "idle queue holds {idle} bytes"
    );
    assert!(
        drained <= idle + ring + MAX_MESSAGE.next_multiple_of(64 << 10) + (64 << 10),
        "drained queue holds {drained} bytes"
    );
}

fn stress_secs(default: f64) -> f64 {
    std::env::var("MULTIPROC_QUEUE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn stress_seed() -> u64 {
    common::stress_seed("MULTIPROC_QUEUE_STRESS_SEED")
}

#[test]
fn random_kills_unbounded_queue() {
    let secs = stress_secs(20.0);
    watchdog(Duration::from_secs(secs as u64 + 120), move || {
        // A small ring and capacity: backlogs spill into cold segments and
        // reach the capacity, so every path is taken under fire.
        let sizes = (256 << 10, 64 << 20);
        let q = Queue::builder()
            .ring_size(sizes.0)
            .capacity(sizes.1)
            .build_joinable()
            .unwrap();
        run_stress(q, sizes, secs, stress_seed(), 3, 3);
    });
}

#[test]
fn random_kills_bounded_queue() {
    let secs = stress_secs(20.0) / 2.0;
    watchdog(Duration::from_secs(secs as u64 + 120), move || {
        let sizes = (128 << 10, 32 << 20);
        let q = Queue::builder()
            .maxsize(16)
            .ring_size(sizes.0)
            .capacity(sizes.1)
            .build_joinable()
            .unwrap();
        run_stress(q, sizes, secs, stress_seed().rotate_left(17), 2, 2);
    });
}
