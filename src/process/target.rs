//! Naming a target function so that a re-executed copy of the same binary
//! can find it.
//!
//! A function's address changes from run to run (ASLR) but its distance
//! from any other function of the same binary does not. The parent sends
//! `target - anchor`; the child adds its own `anchor`. A second distance
//! (`probe - anchor`) lets the child check it really is the same binary.

use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, Encoded};
use crate::error::CodecError;

/// Runs a target on encoded arguments and encodes its outcome; on failure,
/// the outcome tag to report ([`OUTCOME_BAD_ARGS`] or
/// [`OUTCOME_BAD_RESULT`]) and why.
pub type Trampoline =
    fn(target: usize, payload: &[u8], fds: Vec<OwnedFd>) -> Result<Encoded, (u8, String)>;

#[inline(never)]
fn anchor() -> u32 {
    std::hint::black_box(0x6d70_0001)
}

#[inline(never)]
fn probe() -> u32 {
    std::hint::black_box(0x6d70_0002)
}

/// Distance of `addr` from this binary's anchor.
pub fn offset_of(addr: usize) -> isize {
    (addr as isize).wrapping_sub(anchor as fn() -> u32 as usize as isize)
}

/// Address at distance `offset` from this binary's anchor.
pub fn address_at(offset: isize) -> usize {
    (anchor as fn() -> u32 as usize as isize).wrapping_add(offset) as usize
}

/// The check value a child compares with its own.
pub fn binary_fingerprint() -> isize {
    offset_of(probe as fn() -> u32 as usize)
}

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
    target: usize,
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<Encoded, (u8, String)> {
    // SAFETY: `target` is the address of an `fn(A) -> R` in this very binary:
    // the parent took it from a value of that type, sent its distance from
    // `anchor`, and the child checked the binary fingerprint before calling.
    let f: fn(A) -> R = unsafe { std::mem::transmute::<usize, fn(A) -> R>(target) };
    let (args, _) =
        codec::decode_payload::<A>(payload, fds).map_err(|e| (OUTCOME_BAD_ARGS, e.to_string()))?;
    let ret = f(args);
    codec::encode(&(OUTCOME_OK, &ret), crate::connection::FRAME_ROOM).map_err(|e| {
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
