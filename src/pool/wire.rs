//! The messages between the pool and its workers, and the worker-side
//! functions ("runners") that run one chunk of tasks.
//!
//! Pool → worker, one frame per chunk: codec-encoded
//! `(chunk: u64, runner, target)` followed by the chunk's arguments as a
//! `Vec<A>`. `runner` and `target` are function references (see
//! `process::fn_ref`), so a spawned worker (a fresh copy of the same
//! executable) finds them. Chunk
//! number [`STOP`] asks the worker to exit.
//!
//! Worker → pool, one frame per chunk: `(chunk: u64, kind: u8, all_ok:
//! bool)` followed by, for [`DONE`], one codec-encoded [`Outcome`] per task
//! (as byte strings, so that a result that does not decode spoils only its
//! own task), their descriptors concatenated in order; for the other kinds,
//! a message `String`.

use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// Runs one chunk in a worker: decodes the arguments, calls the target on
/// each, encodes the reply.
pub type Runner = fn(target: RawFnRef, chunk: u64, payload: &[u8], fds: Vec<OwnedFd>) -> Encoded;

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

/// Borrowed bytes, serialised as a byte string.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A chunk's outcomes, each serialised on its own into a byte string, so
/// that one that does not decode spoils only its own task. Handles inside
/// them are numbered in the whole message (the enclosing
/// [`codec::encode`] collects them). The values of the tasks that returned
/// are in `values`, in order; `panics` (sorted by task index) holds the
/// others' messages.
struct Items<'a, R> {
    values: &'a [R],
    panics: &'a [(usize, String)],
}

impl<R: Serialize> Serialize for Items<'_, R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let len = self.values.len() + self.panics.len();
        let mut seq = s.serialize_seq(Some(len))?;
        // Each outcome is written into `scratch` in place (no `Vec` or
        // `Result` moved per task: those moves cost more than the
        // encoding of a small value).
        let mut scratch = Vec::new();
        let mut values = self.values.iter();
        let mut panics = self.panics.iter().peekable();
        for i in 0..len {
            scratch.clear();
            let mut sink = |b: &[u8]| {
                scratch.extend_from_slice(b);
                true
            };
            let encoded = match panics.next_if(|(at, _)| *at == i) {
                None => {
                    let r = values
                        .next()
                        .ok_or_else(|| serde::ser::Error::custom("fewer values than tasks"))?;
                    codec::encode_into(&Outcome::Ok(r), &mut sink)
                }
                Some((_, m)) => codec::encode_into(&Outcome::<()>::Panicked(m.clone()), &mut sink),
            };
            if let Err(why) = encoded {
                scratch.clear();
                scratch = codec::append_value(&Outcome::<()>::Encode(why), scratch)
                    .map_err(serde::ser::Error::custom)?;
            }
            seq.serialize_element(&Bytes(&scratch))?;
        }
        seq.end()
    }
}

/// The decoded outcomes of a chunk (see [`Items`]).
struct Outcomes<R>(Vec<Result<R, TaskError>>);

struct OneOutcome<R>(PhantomData<R>);

impl<'de, R: DeserializeOwned> Visitor<'de> for OneOutcome<R> {
    type Value = Result<R, TaskError>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an encoded outcome")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(match codec::decode_value::<Outcome<R>>(v) {
            Ok((Outcome::Ok(r), _)) => Ok(r),
            Ok((Outcome::Panicked(message), _)) => Err(TaskError::Panicked { message }),
            Ok((Outcome::Encode(m), _)) => Err(TaskError::Encode(m)),
            Err(e) => Err(TaskError::Decode(e)),
        })
    }
}

impl<'de, R: DeserializeOwned> serde::de::DeserializeSeed<'de> for OneOutcome<R> {
    type Value = Result<R, TaskError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de, R: DeserializeOwned> Deserialize<'de> for Outcomes<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        seq_of(d, "a sequence of outcomes", || OneOutcome(PhantomData)).map(Outcomes)
    }
}

/// A sequence read element by element with the seeds `seed` makes, into
/// one `Vec` (its capacity from the size hint, at most 64 Ki elements up
/// front).
fn seq_of<'de, D, S>(
    d: D,
    expecting: &'static str,
    seed: impl Fn() -> S,
) -> Result<Vec<S::Value>, D::Error>
where
    D: Deserializer<'de>,
    S: serde::de::DeserializeSeed<'de>,
{
    struct Seq<F>(F, &'static str);
    impl<'de, S: serde::de::DeserializeSeed<'de>, F: Fn() -> S> Visitor<'de> for Seq<F> {
        type Value = Vec<S::Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.1)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(item) = seq.next_element_seed((self.0)())? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Seq(seed, expecting))
}

/// The values of a chunk whose tasks all returned (see [`decode_values`]).
struct Values<R>(Vec<R>);

/// One task's value, from its encoded [`Outcome::Ok`]; anything else is
/// an error (the caller falls back on [`decode_outcomes`]).
struct OneValue<R>(PhantomData<R>);

impl<'de, R: DeserializeOwned> Visitor<'de> for OneValue<R> {
    type Value = R;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an encoded value")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<R, E> {
        match codec::decode_value::<Outcome<R>>(v) {
            Ok((Outcome::Ok(r), _)) => Ok(r),
            _ => Err(E::custom("not a value")),
        }
    }
}

impl<'de, R: DeserializeOwned> serde::de::DeserializeSeed<'de> for OneValue<R> {
    type Value = R;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<R, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de, R: DeserializeOwned> Deserialize<'de> for Values<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        seq_of(d, "a sequence of values", || OneValue(PhantomData)).map(Values)
    }
}

/// Decodes the values of a [`DONE`] reply body (after its header) whose
/// `len` tasks all returned and which carries no descriptors, in one pass
/// and without a `Result` per task; `None` if the body is anything else
/// (a task's outcome that does not decode, too few or too many), for the
/// caller to fall back on [`decode_outcomes`], which tells the tasks
/// apart.
pub fn decode_values<R: DeserializeOwned>(body: &[u8], len: usize) -> Option<Vec<R>> {
    match codec::decode_payload::<Values<R>>(body, Vec::new()) {
        Ok((Values(v), _)) if v.len() == len => Some(v),
        _ => None,
    }
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
pub fn done<R: Serialize>(chunk: u64, values: &[R], panics: &[(usize, String)]) -> Encoded {
    let all_ok = panics.is_empty();
    match codec::encode(&(chunk, DONE, all_ok, Items { values, panics }), FRAME_ROOM) {
        Ok(e) => e,
        Err(e) => message(chunk, BAD_RESULT, &e.to_string()),
    }
}

pub fn run_each<T, R>(chunk: u64, payload: &[u8], fds: Vec<OwnedFd>, f: impl Fn(T) -> R) -> Encoded
where
    T: DeserializeOwned,
    R: Serialize,
{
    let items = match codec::decode_payload::<Vec<T>>(payload, fds) {
        Ok((items, _)) => items,
        Err(e) => return message(chunk, BAD_ARGS, &e.to_string()),
    };
    // The values alone (no `Result` per task): most chunks have no panic.
    let mut values = Vec::with_capacity(items.len());
    let mut panics = Vec::new();
    for (i, a) in items.into_iter().enumerate() {
        match catch_unwind(AssertUnwindSafe(|| f(a))) {
            Ok(r) => values.push(r),
            Err(p) => panics.push((i, panic_message(p))),
        }
    }
    done(chunk, &values, &panics)
}

/// The runner for `fn(A) -> R` targets.
pub fn run_map<A: DeserializeOwned, R: Serialize>(
    target: RawFnRef,
    chunk: u64,
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Encoded {
    // `Call::map` erased `target` from an `fn(A) -> R` and paired it with
    // this runner, monomorphised for the same `A` and `R`.
    let f = target.typed::<fn(A) -> R>().get();
    run_each(chunk, payload, fds, f)
}

/// Decodes the per-task outcomes of a [`DONE`] reply body (after its
/// header), `len` of them expected.
pub fn decode_outcomes<R: DeserializeOwned>(
    body: &[u8],
    fds: Vec<OwnedFd>,
    len: usize,
) -> Vec<Result<R, TaskError>> {
    let mut out = match codec::decode_payload::<Outcomes<R>>(body, fds) {
        Ok((items, _)) => items.0,
        Err(e) => {
            let e = TaskError::Decode(e.to_string());
            return std::iter::repeat_with(|| Err(e.clone()))
                .take(len)
                .collect();
        }
    };
    while out.len() < len {
        out.push(Err(TaskError::Decode(
            "the worker sent fewer results than tasks".into(),
        )));
    }
    out.truncate(len);
    out
}
