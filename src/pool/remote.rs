//! Running a chunk of tasks for a remote (cluster) worker, and the
//! encoding of what crosses the network: the pool's side of
//! [`crate::cluster`], which only carries these between hosts.
//!
//! Values are encoded with the crate's codec, without handles (a file
//! descriptor means nothing on another host) and within a payload cap.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::TaskError;
use super::wire::panic_message;
use crate::codec;
use crate::process::fn_ref::RawFnRef;

/// What running a task gave.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum ChunkOutcome {
    /// One outcome per item.
    Ran(Vec<ItemOutcome>),
    /// The arguments did not decode in the worker.
    BadArgs(String),
    /// The task came from a different build of the program.
    WrongBinary,
}

/// One item's outcome.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum ItemOutcome {
    /// The function returned this value (encoded).
    Ok(Vec<u8>),
    /// The function panicked.
    Panicked(String),
    /// The value could not be encoded.
    Encode(String),
    /// The encoded value exceeds the payload cap.
    TooLarge { size: u64, limit: u64 },
}

/// Encodes `value` for the network: the crate's codec, no handles, at most `cap`
/// bytes.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, cap: usize) -> Result<Vec<u8>, NetCodec> {
    let enc = codec::encode(value, 0).map_err(|e| NetCodec::Encode(e.to_string()))?;
    if !enc.fds.is_empty() {
        return Err(NetCodec::Encode(
            "handles (file descriptors) cannot travel between hosts".into(),
        ));
    }
    if enc.bytes.len() > cap {
        return Err(NetCodec::TooLarge {
            size: enc.bytes.len() as u64,
            limit: cap as u64,
        });
    }
    Ok(enc.bytes)
}

/// Decodes a value made by [`encode`], refusing more than `cap` bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], cap: usize) -> Result<T, NetCodec> {
    if bytes.len() > cap {
        return Err(NetCodec::TooLarge {
            size: bytes.len() as u64,
            limit: cap as u64,
        });
    }
    codec::decode(bytes, &mut std::collections::VecDeque::new())
        .map_err(|e| NetCodec::Decode(e.to_string()))
}

/// Why a value could not cross the network.
#[derive(Debug, Clone)]
pub(crate) enum NetCodec {
    Encode(String),
    Decode(String),
    TooLarge { size: u64, limit: u64 },
}

impl NetCodec {
    pub fn into_task_error(self) -> TaskError {
        match self {
            NetCodec::Encode(m) => TaskError::Encode(m),
            NetCodec::Decode(m) => TaskError::Decode(m),
            NetCodec::TooLarge { size, limit } => TaskError::TooLarge { size, limit },
        }
    }
}

/// Runs one task in a worker: decodes the items, calls the target on each,
/// encodes each value within `cap` bytes.
pub type Runner = fn(target: RawFnRef, args: &[u8], cap: usize) -> ChunkOutcome;

/// Runs `f` on every item of the encoded `Vec<T>` in `args`.
pub fn run_each<T, R>(args: &[u8], cap: usize, f: impl Fn(T) -> R) -> ChunkOutcome
where
    T: DeserializeOwned,
    R: Serialize,
{
    let items: Vec<T> = match decode(args, usize::MAX) {
        Ok(v) => v,
        Err(e) => return ChunkOutcome::BadArgs(format!("{e:?}")),
    };
    let mut total = 0usize;
    let mut out: Vec<ItemOutcome> = items
        .into_iter()
        .map(|a| match catch_unwind(AssertUnwindSafe(|| f(a))) {
            Ok(r) => match encode(&r, cap) {
                Ok(b) => {
                    total += b.len();
                    ItemOutcome::Ok(b)
                }
                Err(NetCodec::TooLarge { size, limit }) => ItemOutcome::TooLarge { size, limit },
                Err(e) => ItemOutcome::Encode(format!("{e:?}")),
            },
            Err(p) => ItemOutcome::Panicked(panic_message(p)),
        })
        .collect();
    if total > cap {
        // Each value fits but the chunk's reply would not.
        for o in &mut out {
            if matches!(o, ItemOutcome::Ok(_)) {
                *o = ItemOutcome::TooLarge {
                    size: total as u64,
                    limit: cap as u64,
                };
            }
        }
    }
    ChunkOutcome::Ran(out)
}

/// The runner for `fn(A) -> R` targets.
pub fn run_map<A: DeserializeOwned, R: Serialize>(
    target: RawFnRef,
    args: &[u8],
    cap: usize,
) -> ChunkOutcome {
    // The driver erased `target` from an `fn(A) -> R` and paired it with
    // this runner, monomorphised for the same `A` and `R`; the worker
    // checked that the task comes from its own build (fingerprint).
    let f = target.typed::<fn(A) -> R>().get();
    run_each(args, cap, f)
}

/// Decodes one item's outcome as `R`.
pub fn item<R: DeserializeOwned>(o: ItemOutcome, cap: usize) -> Result<R, TaskError> {
    match o {
        ItemOutcome::Ok(b) => decode(&b, cap).map_err(NetCodec::into_task_error),
        ItemOutcome::Panicked(message) => Err(TaskError::Panicked { message }),
        ItemOutcome::Encode(m) => Err(TaskError::Encode(m)),
        ItemOutcome::TooLarge { size, limit } => Err(TaskError::TooLarge { size, limit }),
    }
}
