//! Property test of the pickle decoder: many mutated and truncated pickles
//! (a deterministic PRNG, a bounded count so it runs in CI) must each give
//! a value or a typed error, never a panic, and no single allocation may
//! exceed a bound, whatever length a pickle declares. A counting global
//! allocator records the largest request.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use multiproc::codec::pickle::{self, HashableValue, Value};
use serde::{Deserialize, Serialize};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// only addition is recording the requested size.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Serialize, Deserialize, Debug)]
struct Job {
    id: u32,
    name: String,
    data: Vec<i64>,
    extra: Option<(f64, bool)>,
}

/// Seeds: pickles written here, and pickles written by CPython 3.11 at
/// protocols 2, 4 and 5 (copied as bytes so the test needs no Python).
fn corpus() -> Vec<Vec<u8>> {
    let job = Job {
        id: 7,
        name: "seven".into(),
        data: vec![1, -2, 1 << 40],
        extra: Some((0.5, true)),
    };
    let mut out = vec![
        pickle::to_vec(&job).unwrap(),
        pickle::to_vec(&(1, "two", vec![3.0; 5], ((), false))).unwrap(),
        pickle::value_to_vec(&Value::Set(
            [HashableValue::I64(1), HashableValue::Bytes(b"ab".to_vec())].into(),
        ))
        .unwrap(),
        pickle::value_to_vec(&Value::Dict(
            [(
                HashableValue::String("k".into()),
                Value::List(vec![Value::None, Value::F64(1.5)]),
            )]
            .into(),
        ))
        .unwrap(),
    ];
    // pickle.dumps(([1, 'two', b'three', {4: 5.0}], {6, 7}, bytearray(b'x'), 2**70), protocol=p)
    out.push(b"\x80\x02(]q\x00(K\x01X\x03\x00\x00\x00twoq\x01c_codecs\x0aencode\x0aq\x02X\x05\x00\x00\x00threeq\x03X\x06\x00\x00\x00latin1q\x04\x86q\x05Rq\x06}q\x07K\x04G@\x14\x00\x00\x00\x00\x00\x00sec__builtin__\x0aset\x0aq\x08]q\x09(K\x06K\x07e\x85q\x0aRq\x0bc__builtin__\x0abytearray\x0aq\x0ch\x02X\x01\x00\x00\x00xq\x0dh\x04\x86q\x0eRq\x0f\x85q\x10Rq\x11\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@tq\x12.".to_vec());
    out.push(b"\x80\x04\x95Z\x00\x00\x00\x00\x00\x00\x00(]\x94(K\x01\x8c\x03two\x94C\x05three\x94}\x94K\x04G@\x14\x00\x00\x00\x00\x00\x00se\x8f\x94(K\x06K\x07\x90\x8c\x08builtins\x94\x8c\x09bytearray\x94\x93\x94C\x01x\x94\x85\x94R\x94\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@t\x94.".to_vec());
    out.push(b"\x80\x05\x95D\x00\x00\x00\x00\x00\x00\x00(]\x94(K\x01\x8c\x03two\x94C\x05three\x94}\x94K\x04G@\x14\x00\x00\x00\x00\x00\x00se\x8f\x94(K\x06K\x07\x90\x96\x01\x00\x00\x00\x00\x00\x00\x00x\x94\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@t\x94.".to_vec());
    out
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut p = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(p.len() + 1);
        match rng.below(7) {
            0 if !p.is_empty() => {
                let i = at.min(p.len() - 1);
                p[i] = rng.next() as u8;
            }
            1 => p.insert(at, rng.next() as u8),
            2 => p.truncate(at),
            3 if at < p.len() => {
                // A length field set to a huge value.
                let end = (at + 8).min(p.len());
                p[at..end].fill(0xff);
            }
            4 if at < p.len() => {
                let len = rng.below(p.len() - at);
                let chunk = p[at..at + len].to_vec();
                let to = rng.below(p.len() + 1);
                p.splice(to..to, chunk);
            }
            5 if !p.is_empty() => {
                p.remove(at.min(p.len() - 1));
            }
            _ => {
                // An opcode from the interesting set.
                const OPS: &[u8] = b"(.0123abeghijpqrstu}])NRc\x93\x94\x8c\x8e\x96\x81\x92BTXJK";
                p.insert(at, OPS[rng.below(OPS.len())]);
            }
        }
    }
    p
}

#[test]
fn mutated_pickles_never_panic_or_overallocate() {
    const CASES: usize = if cfg!(debug_assertions) {
        50_000
    } else {
        100_000
    };
    const MAX_ALLOC: usize = 64 << 20;
    let seeds = corpus();
    for seed in &seeds {
        pickle::value_from_slice(seed).unwrap_or_else(|e| panic!("seed {seed:?}: {e}"));
    }
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let (mut ok, mut refused) = (0, 0);
    for case in 0..CASES {
        let seed = &seeds[rng.below(seeds.len())];
        let p = mutate(&mut rng, seed);
        let res = std::panic::catch_unwind(|| {
            let a = pickle::value_from_slice(&p).is_ok();
            let b = pickle::from_slice::<Job>(&p).is_ok();
            let c = pickle::from_slice::<(i64, String, Vec<f64>)>(&p).is_ok();
            a || b || c
        });
        match res {
            Ok(true) => ok += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!("case {case} panicked on {p:?}"),
        }
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest < MAX_ALLOC,
            "case {case}: an allocation of {largest} bytes for {p:?}"
        );
    }
    assert!(ok > 0 && refused > 0, "{ok} decoded, {refused} refused");
    eprintln!(
        "pickle fuzz: {CASES} cases, {ok} decoded, {refused} refused, largest allocation {} bytes",
        LARGEST.load(Ordering::Relaxed)
    );
}

#[test]
fn a_declared_length_of_four_gib_allocates_nothing_large() {
    for op in [b'B', b'X', b'T'] {
        let mut p = vec![0x80, 4, op, 0xff, 0xff, 0xff, 0xff];
        p.extend_from_slice(&[b'a'; 64]);
        p.push(b'.');
        assert!(pickle::value_from_slice(&p).is_err());
    }
    for op in [0x8e, 0x8d, 0x96] {
        let mut p = vec![0x80, 4, op];
        p.extend_from_slice(&(1u64 << 32).to_le_bytes());
        p.extend_from_slice(&[b'a'; 64]);
        p.push(b'.');
        assert!(pickle::value_from_slice(&p).is_err());
    }
    assert!(LARGEST.load(Ordering::Relaxed) < 64 << 20);
}
