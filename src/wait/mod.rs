//! Waiting, in one module: how long a wait may last ([`Deadline`]), how it
//! spins before it sleeps ([`Spin`], [`Backoff`], their presets and
//! [`may_spin`]), and how it sleeps on shared memory ([`EventCount`],
//! [`futex_wait`]).
//!
//! [`Deadline`] is the one place where a timeout becomes a point in time;
//! every blocking call of the crate turns its timeout into one here, so
//! that all of them follow the same rule for a timeout too long to
//! represent (it means no limit). Every spinning loop of the crate is a
//! [`Backoff`] by one of the presets of `spin.rs`; nothing else calls
//! `spin_loop`.

mod deadline;
mod event_count;
mod spin;

use std::sync::atomic::AtomicU32;
use std::time::Duration;

pub(crate) use deadline::Deadline;
pub(crate) use event_count::{EventCount, SLICE};
pub(crate) use spin::{
    Backoff, CSP, CSP_LOCK, QUEUE_LOCK, SHARED, SOCKET, SYNC, Spin, may_spin_beside, pinned_cpu,
};

use crate::sys;
use crate::sys::futex::Wake;

/// Sleeps while `word == expected`, until `deadline`.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> Wake {
    match deadline.remaining() {
        Some(Duration::ZERO) => Wake::TimedOut,
        left => sys::futex::wait(word, expected, left),
    }
}
