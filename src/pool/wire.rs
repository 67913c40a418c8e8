//! The messages between the pool and its workers, and the worker-side
//! functions ("runners") that run one chunk of tasks.
//!
//! Pool → worker, one frame per chunk: codec-encoded
//! `(chunk: u64, runner, target)` followed by the chunk's arguments as one
//! codec sequence (`codec::append_seq`: plain numbers at a fixed width,
//! anything else as the crate codec's `Vec<A>`). `runner` and `target` are
//! function references (see `process::fn_ref`), so a spawned worker (a
//! fresh copy of the same executable) finds them. Chunk number [`STOP`]
//! asks the worker to exit.
//!
//! Worker → pool, one frame per chunk: `(chunk: u64, kind: u8, all_ok:
//! bool)` followed by, for [`DONE`], the chunk's results; for the other
//! kinds, a message `String`. A result that does not decode spoils only its
//! own task, so each task's bytes can be told apart without decoding the
//! others. The results of a chunk whose every task returned (`all_ok`, the
//! common case) are, when they are plain numbers (`codec::append_run`), a
//! run of fixed-width values (each task's bytes found by its index);
//! otherwise its values back to back, read in one pass, followed by the
//! table of their lengths, read only when one does not decode:
//!
//! ```text
//! [VALUES_PLAIN][count: varint][width: varint][value]…
//! [VALUES_TABLE][count: varint][value]…[length: varint]…[table bytes: u64 LE]
//! ```
//!
//! A chunk with a failed task sends one encoded [`Outcome`] per task, each
//! in a byte string: `[count: varint]([length: varint][outcome])…`. The
//! descriptors of every value are the message's, in order.

use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::TaskError;
use crate::codec::{self, Encoded};
use crate::connection::FRAME_ROOM;
use crate::process::fn_ref::{FnRef, RawFnRef};

/// The chunk number that tells a worker to exit.
pub const STOP: u64 = 0;
/// Reply: the chunk ran; one outcome per task follows.
pub const DONE: u8 = 0;
/// Reply: the chunk's arguments did not decode in the worker.
pub const BAD_ARGS: u8 = 1;
/// Reply: the chunk's results could not be sent (too large, too many
/// handles).
pub const BAD_RESULT: u8 = 2;
/// Reply (chunk [`STOP`]): the initializer panicked.
pub const INIT_FAILED: u8 = 3;

/// An all-ok reply's values: a run of plain values…
const VALUES_PLAIN: u8 = 1;
/// …or codec-encoded values followed by the table of their lengths.
const VALUES_TABLE: u8 = 0;

/// Runs one chunk in a worker: decodes the arguments, calls the target on
/// each, encodes the reply. `message` holds the chunk's message and where
/// the arguments start in it; the runner takes it out and drops it once
/// the arguments are decoded, so that the values take its memory rather
/// than new memory (plain arguments, read from it as the tasks run: the
/// reply is encoded in it, see [`done`]).
pub type Runner = fn(target: RawFnRef, chunk: u64, message: &Message, fds: Vec<OwnedFd>) -> Encoded;

/// A chunk's message and where its arguments start in it, for a runner to
/// take (see [`Runner`]).
pub type Message = std::cell::Cell<(Vec<u8>, usize)>;

/// What a chunk calls: a runner, and the target it was monomorphised for.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// The worker-side runner.
    pub runner: FnRef<Runner>,
    /// The target, its type erased: the runner knows it.
    pub target: RawFnRef,
}

impl Call {
    /// Runs the `fn(A) -> R` target `f` on each argument.
    pub fn map<A, R>(f: fn(A) -> R) -> Call
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let runner: Runner = run_map::<A, R>;
        Call {
            runner: FnRef::new(runner),
            target: FnRef::new(f).erase(),
        }
    }

    /// Runs a runner that needs no target (it carries its function in its
    /// type, see `star`).
    pub fn runner_only(runner: Runner) -> Call {
        let runner = FnRef::new(runner);
        Call {
            runner,
            target: runner.erase(),
        }
    }
}

/// One task's outcome as it travels back.
#[derive(Serialize, Deserialize)]
pub enum Outcome<R> {
    /// The function returned.
    Ok(R),
    /// The function panicked, with this message.
    Panicked(String),
    /// The result could not be encoded.
    Encode(String),
}

/// Appends the values of a chunk whose every task returned to a reply
/// being encoded: back to back, then the table of their lengths (see the
/// module docs). Handles inside them are numbered in the whole message
/// ([`codec::encode_with`] collects them).
fn append_values<R: Serialize>(out: &mut Vec<u8>, values: &[R]) -> Result<(), String> {
    out.push(VALUES_PLAIN);
    if codec::append_run(values, out) {
        return Ok(());
    }
    let at = out.len() - 1;
    out[at] = VALUES_TABLE;
    codec::append_to(&values.len(), out)?;
    let mut table = Vec::with_capacity(values.len());
    for v in values {
        let at = out.len();
        codec::append_to(v, out)?;
        match out.len() - at {
            n if n < 0x80 => table.push(n as u8),
            n => codec::append_to(&n, &mut table)?,
        }
    }
    out.extend_from_slice(&table);
    out.extend_from_slice(&(table.len() as u64).to_le_bytes());
    Ok(())
}

/// Appends a chunk's outcomes to a reply being encoded: a sequence of byte
/// strings, one per task, each holding that task's encoded [`Outcome`], so
/// that one that does not decode spoils only its own task. Handles inside
/// them are numbered in the whole message ([`codec::encode_with`] collects
/// them). The values of the tasks that returned are in `values`, in order;
/// `panics` (sorted by task index) holds the others' messages.
///
/// Each outcome is encoded in place after a one-byte length, which is fixed up afterwards (no copy of
/// the outcome, and no `Vec` or `Result` moved per task: those cost more
/// than the encoding of a small value).
fn append_items<R: Serialize>(
    out: &mut Vec<u8>,
    values: &[R],
    panics: &[(usize, String)],
) -> Result<(), String> {
    let len = values.len() + panics.len();
    codec::append_to(&len, out)?;
    let mut values = values.iter();
    let mut panics = panics.iter().peekable();
    for i in 0..len {
        out.push(0);
        let at = out.len();
        let encoded = match panics.next_if(|(at, _)| *at == i) {
            None => {
                let r = values.next().ok_or("fewer values than tasks")?;
                codec::append_to(&Outcome::Ok(r), out)
            }
            Some((_, m)) => codec::append_to(&Outcome::<()>::Panicked(m.clone()), out),
        };
        if let Err(why) = encoded {
            codec::append_to(&Outcome::<()>::Encode(why), out)?;
        }
        let n = out.len() - at;
        if n < 0x80 {
            // A varint of one byte: the length itself.
            out[at - 1] = n as u8;
        } else {
            let mut prefix = Vec::new();
            codec::append_to(&n, &mut prefix)?;
            out.splice(at - 1..at, prefix);
        }
    }
    Ok(())
}

/// The text of a panic payload.
pub fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// A reply carrying only a message.
pub fn message(chunk: u64, kind: u8, text: &str) -> Encoded {
    match codec::encode(&(chunk, kind, false, text), FRAME_ROOM) {
        Ok(e) => e,
        // A string always encodes; keep the reply well formed regardless.
        Err(_) => {
            codec::encode(&(chunk, kind, false, ""), FRAME_ROOM).expect("plain values encode")
        }
    }
}

/// The reply for a chunk that ran: one outcome per task, the values of
/// those that returned in `values`, the panic messages of the others in
/// `panics` (by task index, ascending).
///
/// The reply is encoded in `buf` (the chunk's message, done with: its pages
/// are in memory already) if it holds a run of plain values of 8 bytes
/// each, else in new memory with that room, so that it is not copied from
/// one allocation to the next as it grows.
pub fn done<R: Serialize>(
    chunk: u64,
    values: &[R],
    panics: &[(usize, String)],
    mut buf: Vec<u8>,
) -> Encoded {
    if panics.is_empty() {
        let varint_len = |n: u64| (64 - n.leading_zeros()).max(1).div_ceil(7) as usize;
        // (chunk, DONE, true), VALUES_PLAIN, count, width, values.
        let need = FRAME_ROOM
            + varint_len(chunk)
            + 3
            + varint_len(values.len() as u64)
            + 1
            + 8 * values.len();
        buf.clear();
        let bytes = if buf.capacity() >= need {
            buf
        } else {
            Vec::with_capacity(need)
        };
        let encoded = codec::encode_with(bytes, FRAME_ROOM, |out| {
            codec::append_to(&(chunk, DONE, true), out)
                .and_then(|()| append_values(out, values))
                .map_err(crate::error::CodecError::Encode)
        });
        if let Ok(e) = encoded {
            return e;
        }
        // A value that does not encode: its task fails alone (below).
    }
    let encoded = codec::encode_with(Vec::new(), FRAME_ROOM, |out| {
        codec::append_to(&(chunk, DONE, false), out)
            .and_then(|()| append_items(out, values, panics))
            .map_err(crate::error::CodecError::Encode)
    });
    match encoded {
        Ok(e) => e,
        Err(e) => message(chunk, BAD_RESULT, &e.to_string()),
    }
}

/// Runs `f` on each argument of a chunk (its message taken out of `msg`)
/// and encodes the reply (see [`Runner`]).
pub fn run_each<T, R>(chunk: u64, msg: &Message, fds: Vec<OwnedFd>, f: impl Fn(T) -> R) -> Encoded
where
    T: DeserializeOwned,
    R: Serialize,
{
    let (mut message_bytes, start) = msg.take();
    let payload = message_bytes.get(start..).unwrap_or_default();
    let Tasks { values, panics } = match codec::split_plain_seq(payload).filter(|_| fds.is_empty())
    {
        // Plain arguments (no handles among them) are read from the
        // message as the tasks run, with no vector of them (a pass over
        // new memory less); a first pass checks that every one decodes, so
        // that a chunk with one that does not runs no task, as below.
        Some((width, args)) => {
            let check = codec::decode_with(Vec::new(), || {
                args.chunks_exact(width)
                    .try_for_each(|a| codec::decode_plain::<T>(a).map(drop))
            });
            if let Err(e) = check {
                return message(chunk, BAD_ARGS, &e);
            }
            let mut tasks = Tasks::with_capacity(args.len() / width);
            for (i, a) in args.chunks_exact(width).enumerate() {
                match codec::decode_plain::<T>(a) {
                    Ok(a) => tasks.run(i, &f, a),
                    // Decoded in the check but not now (a `Deserialize`
                    // that changed its mind): the task fails alone.
                    Err(e) => tasks.fail(i, format!("the argument does not decode: {e}")),
                }
            }
            tasks
        }
        None => {
            let items = match codec::decode_with(fds, || codec::decode_seq::<T>(payload)) {
                Ok((items, _)) => items,
                Err(e) => return message(chunk, BAD_ARGS, &e),
            };
            // A worker's first chunk touches new memory for every buffer
            // alive at once: the message goes before the values come.
            drop(std::mem::take(&mut message_bytes));
            let mut tasks = Tasks::with_capacity(items.len());
            for (i, a) in items.into_iter().enumerate() {
                tasks.run(i, &f, a);
            }
            tasks
        }
    };
    done(chunk, &values, &panics, message_bytes)
}

/// The outcomes of a chunk's tasks so far: the values of those that
/// returned (alone, no `Result` per task: most chunks have no panic), and
/// the messages of the others, by task index (see [`done`]).
struct Tasks<R> {
    values: Vec<R>,
    panics: Vec<(usize, String)>,
}

impl<R> Tasks<R> {
    fn with_capacity(len: usize) -> Self {
        Tasks {
            values: Vec::with_capacity(len),
            panics: Vec::new(),
        }
    }

    /// Runs task `i`: `f` on its argument `a`.
    #[inline(always)]
    fn run<T>(&mut self, i: usize, f: &impl Fn(T) -> R, a: T) {
        match catch_unwind(AssertUnwindSafe(|| f(a))) {
            Ok(r) => self.values.push(r),
            Err(p) => self.fail(i, panic_message(p)),
        }
    }

    /// Task `i` failed, for this reason.
    fn fail(&mut self, i: usize, why: String) {
        self.panics.push((i, why));
    }
}

/// The runner for `fn(A) -> R` targets.
pub fn run_map<A: DeserializeOwned, R: Serialize>(
    target: RawFnRef,
    chunk: u64,
    message: &Message,
    fds: Vec<OwnedFd>,
) -> Encoded {
    // `Call::map` erased `target` from an `fn(A) -> R` and paired it with
    // this runner, monomorphised for the same `A` and `R`.
    let f = target.typed::<fn(A) -> R>().get();
    run_each(chunk, message, fds, f)
}

/// A length (a varint) from the front of `bytes`, and the bytes after it.
fn take_len(bytes: &[u8]) -> Option<(usize, &[u8])> {
    match bytes.split_first() {
        Some((&n, rest)) if n < 0x80 => Some((n as usize, rest)),
        _ => codec::decode_value::<usize>(bytes).ok(),
    }
}

/// `n` bytes from the front of `bytes`, and the bytes after them.
fn take_bytes(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (n <= bytes.len()).then(|| bytes.split_at(n))
}

/// The values of an all-ok reply body (after the count) and its table of
/// their lengths.
fn split_table(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let (rest, trailer) = rest.split_at(rest.len().checked_sub(8)?);
    let table = u64::from_le_bytes(trailer.try_into().ok()?);
    Some(rest.split_at(rest.len().checked_sub(usize::try_from(table).ok()?)?))
}

/// Each task's bytes in a [`DONE`] reply body (after its header) of `len`
/// tasks: its value's if `all_ok`, else its encoded [`Outcome`]'s; `None`
/// if the body is not of that shape. And whether the values are plain
/// (`codec::decode_plain` reads them).
fn task_bytes(body: &[u8], len: usize, all_ok: bool) -> Option<(Vec<&[u8]>, bool)> {
    let body = if all_ok {
        match body.split_first()? {
            (&VALUES_PLAIN, run) => {
                let (count, width, values, rest) = codec::split_run(run).ok()?;
                return (count == len && rest.is_empty())
                    .then(|| (values.chunks_exact(width).collect(), true));
            }
            (&VALUES_TABLE, body) => body,
            _ => return None,
        }
    } else {
        body
    };
    let (count, mut rest) = take_len(body)?;
    if count != len {
        return None;
    }
    let mut tasks = Vec::with_capacity(len.min(rest.len()));
    if all_ok {
        let (mut values, mut table) = split_table(rest)?;
        for _ in 0..len {
            let (n, t) = take_len(table)?;
            let (v, after) = take_bytes(values, n)?;
            tasks.push(v);
            (values, table) = (after, t);
        }
        return (values.is_empty() && table.is_empty()).then_some((tasks, false));
    }
    for _ in 0..len {
        let (n, r) = take_len(rest)?;
        let (outcome, after) = take_bytes(r, n)?;
        tasks.push(outcome);
        rest = after;
    }
    Some((tasks, false))
}

/// Appends to `out` the values of an all-ok [`DONE`] reply body (after its
/// header) of `len` tasks that carries no descriptors, in one pass and
/// without a `Result` per task; `false` (and `out` as it was) if the body
/// is anything else (a value that does not decode, too few or too many),
/// for the caller to fall back on [`decode_outcomes`], which tells the
/// tasks apart.
pub fn decode_values_into<R: DeserializeOwned>(body: &[u8], len: usize, out: &mut Vec<R>) -> bool {
    let start = out.len();
    let mut whole = || {
        let body = match body.split_first()? {
            (&VALUES_PLAIN, run) => {
                let (count, rest) = codec::decode_run_into(run, out).ok()?;
                return (count == len && rest.is_empty()).then_some(());
            }
            (&VALUES_TABLE, body) => body,
            _ => return None,
        };
        let (count, rest) = take_len(body)?;
        if count != len {
            return None;
        }
        let rest = codec::decode_seq_into(rest, len, out).ok()?;
        // The values end where the table starts: none read too little.
        let (values, _) = split_table(rest)?;
        values.is_empty().then_some(())
    };
    let ok = whole().is_some();
    if !ok {
        out.truncate(start);
    }
    ok
}

/// Decodes each task's outcome of a [`DONE`] reply body (after its
/// header), `len` of them expected, with the descriptors that came with
/// it.
pub fn decode_outcomes<R: DeserializeOwned>(
    body: &[u8],
    fds: Vec<OwnedFd>,
    len: usize,
    all_ok: bool,
) -> Vec<Result<R, TaskError>> {
    codec::decode_with(fds, || {
        let Some((tasks, plain)) = task_bytes(body, len, all_ok) else {
            let e = TaskError::Decode(format!(
                "the worker's reply does not hold the results of {len} tasks"
            ));
            return std::iter::repeat_with(|| Err(e.clone()))
                .take(len)
                .collect();
        };
        let decode = |b: &[u8]| -> Result<R, TaskError> {
            if plain {
                return codec::decode_plain::<R>(b).map_err(TaskError::Decode);
            }
            if all_ok {
                return codec::decode_value::<R>(b)
                    .map(|(r, _)| r)
                    .map_err(TaskError::Decode);
            }
            match codec::decode_value::<Outcome<R>>(b) {
                Ok((Outcome::Ok(r), _)) => Ok(r),
                Ok((Outcome::Panicked(message), _)) => Err(TaskError::Panicked { message }),
                Ok((Outcome::Encode(m), _)) => Err(TaskError::Encode(m)),
                Err(e) => Err(TaskError::Decode(e)),
            }
        };
        tasks.into_iter().map(decode).collect()
    })
}
