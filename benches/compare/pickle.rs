//! The pickle codec (`multiproc::codec::pickle`) on a 1 MiB list of ints:
//! 131 072 `i64`s (1 MiB as raw integers), values spread so that most take
//! a 4-byte `BININT`.
//!
//! * `codec.pickle.encode_1mib_ints`: `pickle::to_vec(&Vec<i64>)`, µs per
//!   list. Raw: the integers copied little-endian into a `Vec<u8>` (the
//!   floor of any encoding). Python: `pickle.dumps(list, protocol=4)`.
//! * `codec.pickle.decode_1mib_ints`: `pickle::from_slice::<Vec<i64>>` of
//!   the same pickle (scan for refused opcodes, then decode), µs per list.
//!   Raw: the integers read back from the little-endian bytes. Python:
//!   `pickle.loads`.

use std::hint::black_box;
use std::time::Instant;

use multiproc::codec::pickle;

use crate::harness::{BenchResult, Ctx, Figures, Row, Unit, alternate, check_eq, micros_per_op};

/// Integers in the list (1 MiB of `i64`).
const INTS: usize = 1 << 17;

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "codec.pickle.encode_1mib_ints",
            unit: Unit::Micros,
            run: encode,
            python: true,
            round_trip: false,
        },
        Row {
            name: "codec.pickle.decode_1mib_ints",
            unit: Unit::Micros,
            run: decode,
            python: true,
            round_trip: false,
        },
    ]
}

/// The list, as in `compare.py`: `[(i * 7919) % 1_000_003 - 500_000 ...]`.
fn ints() -> Vec<i64> {
    (0..INTS as i64)
        .map(|i| (i * 7919) % 1_000_003 - 500_000)
        .collect()
}

fn raw_bytes(v: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 8);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn encode(ctx: &Ctx) -> BenchResult<Figures> {
    let v = ints();
    let n = ctx.pick(2, 20);
    alternate(
        1,
        ctx.pick(3, 11),
        || {
            let t0 = Instant::now();
            for _ in 0..n {
                black_box(pickle::to_vec(black_box(&v))?);
            }
            Ok(micros_per_op(t0, n))
        },
        || {
            let t0 = Instant::now();
            for _ in 0..n {
                black_box(raw_bytes(black_box(&v)));
            }
            Ok(micros_per_op(t0, n))
        },
    )
}

fn decode(ctx: &Ctx) -> BenchResult<Figures> {
    let v = ints();
    let pickled = pickle::to_vec(&v)?;
    let raw = raw_bytes(&v);
    let back: Vec<i64> = pickle::from_slice(&pickled)?;
    check_eq("decoded length", back.len(), v.len())?;
    check_eq("decoded last", back[INTS - 1], v[INTS - 1])?;
    let n = ctx.pick(2, 20);
    alternate(
        1,
        ctx.pick(3, 11),
        || {
            let t0 = Instant::now();
            for _ in 0..n {
                black_box(pickle::from_slice::<Vec<i64>>(black_box(&pickled))?);
            }
            Ok(micros_per_op(t0, n))
        },
        || {
            let t0 = Instant::now();
            for _ in 0..n {
                let out: Vec<i64> = black_box(&raw)
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                black_box(out);
            }
            Ok(micros_per_op(t0, n))
        },
    )
}
