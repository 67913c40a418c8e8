//! `pipe()` / `Connection` between the bench process and a child.
//!
//! Each row starts one crate child (`Process`, spawn start method, over
//! `multiproc::pipe()`) and one raw child (`fork`, over a plain
//! `socketpair`, raw `read`/`write`/`writev` with the same framing: 4-byte
//! big-endian length + payload), then measures them alternately.
//!
//! * `pipe.pingpong.small`: round trip of a 16-byte `send_bytes` /
//!   `recv_bytes` message, µs.
//! * `pipe.pingpong.small_typed`: the same with `send` / `recv` of a small
//!   serde value `(u64, [u8; 8])`; same raw floor (16-byte payload).
//! * `pipe.throughput.small` / `small_typed`: the child sends N such
//!   messages then a terminator, one way; messages per second.
//! * `pipe.throughput.1mib`: N messages of 1 MiB by `send_bytes` /
//!   `recv_bytes`, payload GB/s; `1mib_into` receives with
//!   `recv_bytes_into` into one reused buffer. The raw floor reads the
//!   header, then the payload straight into a reused buffer.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use multiproc::{Connection, Process, pipe};

use crate::harness::{BenchResult, Ctx, Figures, Row, Unit, alternate, micros_per_op};
use crate::raw::{self, FrameReader, RawChild};

const SMALL: usize = 16;
const BIG: usize = 1 << 20;

/// The typed small message; `seq == STOP` ends a stream.
type Small = (u64, [u8; 8]);
const STOP: u64 = u64::MAX;

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "pipe.pingpong.small",
            unit: Unit::Micros,
            run: pingpong_small,
            python: true,
            round_trip: true,
        },
        Row {
            name: "pipe.pingpong.small_typed",
            unit: Unit::Micros,
            run: pingpong_small_typed,
            python: true,
            round_trip: true,
        },
        Row {
            name: "pipe.throughput.small",
            unit: Unit::MsgsPerSec,
            run: throughput_small,
            python: true,
            round_trip: false,
        },
        Row {
            name: "pipe.throughput.small_typed",
            unit: Unit::MsgsPerSec,
            run: throughput_small_typed,
            python: true,
            round_trip: false,
        },
        Row {
            name: "pipe.throughput.1mib",
            unit: Unit::GBPerSec,
            run: throughput_1mib,
            python: true,
            round_trip: false,
        },
        Row {
            name: "pipe.throughput.1mib_into",
            unit: Unit::GBPerSec,
            run: throughput_1mib_into,
            python: true,
            round_trip: false,
        },
    ]
}

// ---- crate children (targets run in a spawned copy of this binary) ----

/// Echoes byte messages until an empty one.
fn echo_bytes(conn: Connection) {
    crate::harness::pin_child();
    loop {
        let m = conn.recv_bytes().expect("recv_bytes");
        if m.is_empty() {
            return;
        }
        conn.send_bytes(&m).expect("send_bytes");
    }
}

/// Echoes typed messages until one with `STOP`.
fn echo_typed(conn: Connection) {
    crate::harness::pin_child();
    loop {
        let m: Small = conn.recv().expect("recv");
        if m.0 == STOP {
            return;
        }
        conn.send(&m).expect("send");
    }
}

/// For each "go" message (N as 8 bytes, little-endian; empty = stop),
/// sends N messages then a terminator. `kind`: 0 small bytes, 1 small
/// typed, 2 1 MiB bytes.
fn blast((conn, kind): (Connection, u8)) {
    let small = [7u8; SMALL];
    let big = vec![0x5a_u8; if kind == 2 { BIG } else { 0 }];
    loop {
        let go = conn.recv_bytes().expect("recv go");
        let Ok(n) = <[u8; 8]>::try_from(go.as_slice()) else {
            return;
        };
        let n = u64::from_le_bytes(n);
        match kind {
            0 => {
                for _ in 0..n {
                    conn.send_bytes(&small).expect("send_bytes");
                }
                conn.send_bytes(&[]).expect("send_bytes");
            }
            1 => {
                for i in 0..n {
                    conn.send(&(i, [7u8; 8])).expect("send");
                }
                conn.send(&(STOP, [0u8; 8])).expect("send");
            }
            _ => {
                for _ in 0..n {
                    conn.send_bytes(&big).expect("send_bytes");
                }
                conn.send_bytes(&[]).expect("send_bytes");
            }
        }
    }
}

// ---- raw children (forked; raw read/write) ----

/// Echoes frames until an empty one or end of stream.
fn raw_echo(fd: OwnedFd) {
    crate::harness::pin_child();
    raw::serve_frames(fd, |m, out| out.extend_from_slice(m));
}

/// The raw counterpart of [`blast`]: one `write` per small frame, one
/// `writev` (header, payload) per large one.
fn raw_blast(fd: OwnedFd, big: bool) {
    let small = raw::frame(&[7u8; SMALL]);
    let payload = vec![0x5a_u8; if big { BIG } else { 0 }];
    let header = (BIG as u32).to_be_bytes();
    let mut r = FrameReader::new();
    loop {
        let n = match r.next(fd.as_fd()).expect("read go") {
            Some(go) if go.len() == 8 => u64::from_le_bytes(go.try_into().expect("8 bytes")),
            _ => return,
        };
        for _ in 0..n {
            if big {
                raw::write_all(fd.as_fd(), &[&header, &payload]).expect("writev");
            } else {
                raw::write_all(fd.as_fd(), &[&small]).expect("write");
            }
        }
        raw::write_all(fd.as_fd(), &[&[0u8; 4]]).expect("write");
    }
}

// ---- the two peers of a row ----

struct Peers {
    conn: Connection,
    child: Process<()>,
    raw: OwnedFd,
    raw_child: RawChild,
}

impl Peers {
    fn start<A>(
        target: fn(A),
        args: impl FnOnce(Connection) -> A,
        raw_body: fn(OwnedFd),
    ) -> BenchResult<Self>
    where
        A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let (conn, theirs) = pipe()?;
        let mut child = Process::new(target, args(theirs));
        child.start()?;
        let (raw, raw_theirs) = raw::socketpair()?;
        let raw_child = RawChild::fork_closing(raw.as_fd(), move || raw_body(raw_theirs))?;
        Ok(Peers {
            conn,
            child,
            raw,
            raw_child,
        })
    }

    /// Asks both children to stop (`stop` for the crate child, an empty
    /// frame for the raw one) and reaps them.
    fn finish(mut self, stop: impl FnOnce(&Connection) -> BenchResult<()>) -> BenchResult<()> {
        stop(&self.conn)?;
        raw::write_all(self.raw.as_fd(), &[&[0u8; 4]])?;
        self.child.join()?;
        self.raw_child.wait()?;
        Ok(())
    }
}

fn stop_bytes(c: &Connection) -> BenchResult<()> {
    Ok(c.send_bytes(&[])?)
}

// ---- ping-pong ----

fn raw_pingpong(fd: &OwnedFd, reader: &mut FrameReader, n: u64) -> BenchResult<f64> {
    let ping = raw::frame(&[7u8; SMALL]);
    let t0 = Instant::now();
    for _ in 0..n {
        raw::write_all(fd.as_fd(), &[&ping])?;
        match reader.next(fd.as_fd())? {
            Some(m) if m.len() == SMALL => {}
            _ => return Err("raw echo: bad reply".into()),
        }
    }
    Ok(micros_per_op(t0, n))
}

fn pingpong_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    // (warm-up batches, measured batches, round trips per batch)
    (1, ctx.pick(3, 9), ctx.pick(200, 2000))
}

fn pingpong_small(ctx: &Ctx) -> BenchResult<Figures> {
    let peers = Peers::start(echo_bytes, |c| c, raw_echo)?;
    let (warm, reps, n) = pingpong_sizes(ctx);
    let ping = [7u8; SMALL];
    let mut reader = FrameReader::new();
    let figures = alternate(
        warm,
        reps,
        || {
            let t0 = Instant::now();
            for _ in 0..n {
                peers.conn.send_bytes(&ping)?;
                if peers.conn.recv_bytes()?.len() != SMALL {
                    return Err("echo: bad reply".into());
                }
            }
            Ok(micros_per_op(t0, n))
        },
        || raw_pingpong(&peers.raw, &mut reader, n),
    )?;
    peers.finish(stop_bytes)?;
    Ok(figures)
}

fn pingpong_small_typed(ctx: &Ctx) -> BenchResult<Figures> {
    let peers = Peers::start(echo_typed, |c| c, raw_echo)?;
    let (warm, reps, n) = pingpong_sizes(ctx);
    let mut reader = FrameReader::new();
    let figures = alternate(
        warm,
        reps,
        || {
            let t0 = Instant::now();
            for i in 0..n {
                peers.conn.send(&(i, [7u8; 8]))?;
                let back: Small = peers.conn.recv()?;
                if back.0 != i {
                    return Err("echo: bad reply".into());
                }
            }
            Ok(micros_per_op(t0, n))
        },
        || raw_pingpong(&peers.raw, &mut reader, n),
    )?;
    peers.finish(|c| Ok(c.send(&(STOP, [0u8; 8]))?))?;
    Ok(figures)
}

// ---- throughput ----

/// Times one stream of `n` small messages: `start` asks the sender for
/// them, `next` receives one (`false` at the terminator); messages per
/// second. `who` names the sender in errors.
fn small_stream(
    who: &str,
    n: u64,
    start: impl FnOnce() -> BenchResult<()>,
    mut next: impl FnMut() -> BenchResult<bool>,
) -> BenchResult<f64> {
    let t0 = Instant::now();
    start()?;
    let mut got = 0u64;
    while next()? {
        got += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    if got != n {
        return Err(format!("{who}: {got} of {n} messages").into());
    }
    Ok(n as f64 / secs)
}

/// Times one stream of `n` 1 MiB messages: `start` asks the sender for
/// them, `next` receives one and returns its length (0 at the
/// terminator); payload GB/s. `who` names the sender in errors.
fn big_stream_rate(
    who: &str,
    n: u64,
    start: impl FnOnce() -> BenchResult<()>,
    mut next: impl FnMut() -> BenchResult<usize>,
) -> BenchResult<f64> {
    let t0 = Instant::now();
    start()?;
    let mut bytes = 0u64;
    loop {
        let len = next()?;
        if len == 0 {
            break;
        }
        bytes += len as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    if bytes != n * BIG as u64 {
        return Err(format!("{who}: {bytes} bytes, wanted {}", n * BIG as u64).into());
    }
    Ok(bytes as f64 / secs / 1e9)
}

/// Asks the raw child for `n` frames and receives them through a
/// [`FrameReader`]; returns messages per second.
fn raw_small_stream(fd: &OwnedFd, reader: &mut FrameReader, n: u64) -> BenchResult<f64> {
    let go = raw::frame(&n.to_le_bytes());
    small_stream(
        "raw sender",
        n,
        || Ok(raw::write_all(fd.as_fd(), &[&go])?),
        || match reader.next(fd.as_fd())? {
            Some([]) => Ok(false),
            Some(_) => Ok(true),
            None => Err("raw sender: end of stream".into()),
        },
    )
}

/// Asks the raw child for `n` 1 MiB frames and reads each into `buf`;
/// returns payload GB/s.
fn raw_big_stream(fd: &OwnedFd, buf: &mut [u8], n: u64) -> BenchResult<f64> {
    let go = raw::frame(&n.to_le_bytes());
    big_stream_rate(
        "raw sender",
        n,
        || Ok(raw::write_all(fd.as_fd(), &[&go])?),
        || {
            let mut header = [0u8; 4];
            if !raw::read_exact(fd.as_fd(), &mut header)? {
                return Err("raw sender: end of stream".into());
            }
            let len = u32::from_be_bytes(header) as usize;
            if len > 0 && !raw::read_exact(fd.as_fd(), &mut buf[..len])? {
                return Err("raw sender: end of stream".into());
            }
            Ok(len)
        },
    )
}

/// Asks the crate child for `n` messages.
fn go(conn: &Connection, n: u64) -> BenchResult<()> {
    conn.send_bytes(&n.to_le_bytes())?;
    Ok(())
}
fn small_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    (1, ctx.pick(2, 5), ctx.pick(5_000, 100_000))
}

fn throughput_small(ctx: &Ctx) -> BenchResult<Figures> {
    let peers = Peers::start(blast, |c| (c, 0u8), |fd| raw_blast(fd, false))?;
    let (warm, reps, n) = small_sizes(ctx);
    let mut reader = FrameReader::new();
    let figures = alternate(
        warm,
        reps,
        || {
            small_stream(
                "sender",
                n,
                || go(&peers.conn, n),
                || Ok(!peers.conn.recv_bytes()?.is_empty()),
            )
        },
        || raw_small_stream(&peers.raw, &mut reader, n),
    )?;
    peers.finish(stop_bytes)?;
    Ok(figures)
}

fn throughput_small_typed(ctx: &Ctx) -> BenchResult<Figures> {
    let peers = Peers::start(blast, |c| (c, 1u8), |fd| raw_blast(fd, false))?;
    let (warm, reps, n) = small_sizes(ctx);
    let mut reader = FrameReader::new();
    let figures = alternate(
        warm,
        reps,
        || {
            small_stream(
                "sender",
                n,
                || go(&peers.conn, n),
                || Ok(peers.conn.recv::<Small>()?.0 != STOP),
            )
        },
        || raw_small_stream(&peers.raw, &mut reader, n),
    )?;
    peers.finish(stop_bytes)?;
    Ok(figures)
}

fn big_sizes(ctx: &Ctx) -> (usize, usize, u64) {
    (1, ctx.pick(2, 5), ctx.pick(32, 256))
}

fn throughput_1mib(ctx: &Ctx) -> BenchResult<Figures> {
    big_stream(ctx, false)
}

fn throughput_1mib_into(ctx: &Ctx) -> BenchResult<Figures> {
    big_stream(ctx, true)
}

fn big_stream(ctx: &Ctx, into: bool) -> BenchResult<Figures> {
    let peers = Peers::start(blast, |c| (c, 2u8), |fd| raw_blast(fd, true))?;
    let (warm, reps, n) = big_sizes(ctx);
    let mut buf = vec![0u8; BIG];
    let mut raw_buf = vec![0u8; BIG];
    let figures = alternate(
        warm,
        reps,
        || {
            big_stream_rate(
                "sender",
                n,
                || go(&peers.conn, n),
                || {
                    Ok(if into {
                        peers.conn.recv_bytes_into(&mut buf)?
                    } else {
                        peers.conn.recv_bytes()?.len()
                    })
                },
            )
        },
        || raw_big_stream(&peers.raw, &mut raw_buf, n),
    )?;
    peers.finish(stop_bytes)?;
    Ok(figures)
}
