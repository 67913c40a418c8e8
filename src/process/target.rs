//! The trampoline: how a child calls a target `fn(A) -> R` on encoded
//! arguments and encodes its outcome. The target itself travels as a
//! function reference (see [`fn_ref`](super::fn_ref)).

use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::fn_ref::RawFnRef;
use crate::codec::{self, Encoded};
use crate::error::CodecError;

/// Runs a target on encoded arguments and encodes its outcome (in the
/// allocation of `out`, when it fits); on failure, the outcome tag to report
/// ([`OUTCOME_BAD_ARGS`] or [`OUTCOME_BAD_RESULT`]) and why.
pub type Trampoline = fn(
    target: RawFnRef,
    payload: &[u8],
    fds: Vec<OwnedFd>,
    out: Vec<u8>,
) -> Result<Encoded, (u8, String)>;

/// The room a forked child is given for its outcome before the fork
/// (see [`Trampoline`]): a small one fits.
pub const OUTCOME_ROOM: usize = crate::connection::FRAME_ROOM + 64;

/// The outcome tags a child sends back, first byte of the result payload.
pub const OUTCOME_OK: u8 = 0;
/// The target panicked; a `String` message follows.
pub const OUTCOME_PANIC: u8 = 1;
/// The arguments did not decode; a `String` message follows.
pub const OUTCOME_BAD_ARGS: u8 = 2;
/// The target's return value did not encode; a `String` message follows.
pub const OUTCOME_BAD_RESULT: u8 = 3;

/// The trampoline for targets of type `fn(A) -> R`.
pub fn trampoline<A: DeserializeOwned, R: Serialize>(
    target: RawFnRef,
    payload: &[u8],
    fds: Vec<OwnedFd>,
    out: Vec<u8>,
) -> Result<Encoded, (u8, String)> {
    // `Process::new` erased `target` from an `fn(A) -> R` and paired it
    // with this trampoline, monomorphised for the same `A` and `R`.
    let f = target.typed::<fn(A) -> R>().get();
    let (args, _) =
        codec::decode_payload::<A>(payload, fds).map_err(|e| (OUTCOME_BAD_ARGS, e.to_string()))?;
    let ret = f(args);
    codec::encode_in(out, &(OUTCOME_OK, &ret), crate::connection::FRAME_ROOM).map_err(|e| {
        let why = match e {
            CodecError::Encode(why) => why,
            e => e.to_string(),
        };
        (
            OUTCOME_BAD_RESULT,
            format!("the child's return value: {why}"),
        )
    })
}
