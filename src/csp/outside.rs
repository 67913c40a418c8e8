//! Guards on channels whose state lives outside this host's memory (the
//! network channels of `cluster/`), seen by an
//! [`Alternation`](super::Alternation) through one trait, so this layer
//! needs to know nothing of where they live.
//!
//! Such a guard keeps the alternation's protocol (see `alternation.rs`):
//! a **watch** completes nothing, a **try** completes at once or not at
//! all, at most one **offer** is outstanding, and a **withdraw** either
//! takes the offer back or reports that a counterpart completed it first,
//! never both. Its answers arrive on other threads and bump a futex word
//! that the alternation sleeps on beside its local records' words.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use super::ChannelError;

/// What a try of an outside guard found.
pub(crate) enum OutsideAttempt {
    /// The read (with its message) or write happened.
    Done(Option<Vec<u8>>),
    NotReady,
    /// The channel is retired: the guard drops out.
    Retired,
}

/// A guard whose channel lives elsewhere (implemented by `cluster`).
pub(crate) trait OutsideGuard<'a> {
    /// Why this guard cannot take part (its message did not encode).
    fn error(&self) -> Option<&ChannelError>;
    /// Orders outside guards when choosing where the offer goes.
    fn key(&self) -> &str;
    /// Whether the last try saw another alternation watching the other
    /// side.
    fn watched(&self) -> bool;
    /// The futex word bumped when an answer arrives or the channel is
    /// lost.
    fn word(&self) -> &'a AtomicU32;
    /// Whether something the alternation waits for happened since the
    /// last look.
    fn event(&self) -> bool;
    /// Keeps a watch posted.
    fn rewatch(&mut self, owner: u64) -> Result<(), ChannelError>;
    /// The read or write, if it can happen at once.
    fn try_op(&mut self, owner: u64) -> Result<OutsideAttempt, ChannelError>;
    /// Posts this guard's offer until `deadline`.
    fn offer(&mut self, owner: u64, deadline: Option<Instant>) -> Result<(), ChannelError>;
    /// Takes the offer back. `Some(message)`: a counterpart completed it
    /// first (this guard is chosen); `None`: it did not happen.
    fn withdraw(&mut self) -> Result<Option<Option<Vec<u8>>>, ChannelError>;
}
