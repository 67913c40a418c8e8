//! A worker's two words in shared memory.
//!
//! The **status word**, readable by the pool after the worker died, tells
//! which chunk the worker held at the moment of death, so exactly that
//! chunk fails and the chunks it had not started are run elsewhere.
//!
//! | value | the worker is… | written |
//! |---|---|---|
//! | [`INIT`] | starting, or running the initializer | by the pool at creation, by the worker before the initializer |
//! | [`IDLE`] | between chunks, or waiting for one | after the initializer, after each result is sent |
//! | `n` | running chunk `n`, or sending its result | before the chunk's function is called |
//!
//! The worker stores with `Release` and the pool loads with `Acquire`; the
//! pool only reads after it saw the worker die (its socket closed or its
//! pidfd readable), and the kernel's process exit orders every store of the
//! dead process before that.
//!
//! The **claim word** lets the pool take back chunks it sent ahead to a
//! worker that is stuck on a long one, so that an idle worker runs them
//! (work stealing). Every message to a worker has a sequence number, the
//! count of messages sent to that worker so far (both sides count, the
//! stream keeps them in step; 32 bits, compared with wrap-around, as
//! fewer than 2³¹ are ever in flight). The word holds two of them:
//!
//! | bits | name | meaning |
//! |---|---|---|
//! | high 32 | `claimed` | the last message the worker started |
//! | low 32 | `revoked` | messages after `claimed` up to this one are the pool's again |
//!
//! | who | operation | ordering |
//! |---|---|---|
//! | worker, before running message `s` | if `s ≤ revoked`: skip it; else CAS `(c, r) → (s, s)` | `AcqRel` CAS, retried on failure |
//! | pool, to take back what was not started | CAS `(c, r) → (c, last sent)` | `AcqRel` CAS, retried on failure |
//!
//! A successful pool CAS means the worker will skip every message in
//! `(c, last sent]` and the pool re-queues those chunks; a successful
//! worker CAS means the message is the worker's to run. The two never both
//! win a message: each CAS compares the whole word. Crash table: a worker
//! that dies after claiming but before publishing the chunk in its status
//! word is treated like one that had not started it (the chunk runs
//! again, its function never having been called); the word dies with the
//! worker's pool.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::SharedFd;
use crate::sys;
use crate::sys::shm::Mapping;

/// Starting or in the initializer.
pub const INIT: u64 = u64::MAX;
/// Between chunks.
pub const IDLE: u64 = 0;

/// Bytes of the mapping: the status word and the claim word.
const SIZE: usize = 16;

fn pack(claimed: u32, revoked: u32) -> u64 {
    (u64::from(claimed) << 32) | u64::from(revoked)
}

/// `a ≤ b` for sequence numbers that wrap around.
pub fn seq_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) as i32 >= 0
}

/// One worker's status word.
#[derive(Clone)]
pub struct Board {
    fd: SharedFd,
    map: Arc<Mapping>,
}

impl Board {
    /// New words in their own memfd: status [`INIT`], nothing claimed.
    pub fn new() -> io::Result<Board> {
        let fd = sys::shm::memfd("multiproc-pool-worker", SIZE)?;
        let map = Mapping::map(std::os::fd::AsFd::as_fd(&fd), SIZE)?;
        let board = Board {
            fd: SharedFd::new(fd),
            map: Arc::new(map),
        };
        board.set(INIT);
        Ok(board)
    }

    fn word(&self) -> &AtomicU64 {
        self.map.at(0)
    }

    fn claim_word(&self) -> &AtomicU64 {
        self.map.at(8)
    }

    /// Worker side: whether message `seq` is still the worker's to run
    /// (then it is claimed), or was taken back by the pool (skip it).
    pub fn claim(&self, seq: u32) -> bool {
        let word = self.claim_word();
        let mut w = word.load(Ordering::Acquire);
        loop {
            let revoked = w as u32;
            if seq_le(seq, revoked) {
                return false;
            }
            let new = pack(seq, seq);
            match word.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// Pool side: takes back every message after the last one the worker
    /// claimed, up to `last_sent`. Returns the last claimed one: messages
    /// after it are the pool's again.
    pub fn revoke(&self, last_sent: u32) -> u32 {
        let word = self.claim_word();
        let mut w = word.load(Ordering::Acquire);
        loop {
            let claimed = (w >> 32) as u32;
            match word.compare_exchange_weak(
                w,
                pack(claimed, last_sent),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return claimed,
                Err(now) => w = now,
            }
        }
    }

    /// The last message the worker claimed.
    pub fn claimed(&self) -> u32 {
        (self.claim_word().load(Ordering::Acquire) >> 32) as u32
    }

    /// Publishes the worker's status.
    pub fn set(&self, value: u64) {
        self.word().store(value, Ordering::Release);
    }

    /// Reads the worker's status.
    pub fn get(&self) -> u64 {
        self.word().load(Ordering::Acquire)
    }
}

impl Serialize for Board {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fd.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Board {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fd = SharedFd::deserialize(d)?;
        let map = Mapping::map(fd.fd(), SIZE).map_err(serde::de::Error::custom)?;
        Ok(Board {
            fd,
            map: Arc::new(map),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_and_revocations_never_overlap() {
        let b = Board::new().unwrap();
        assert!(b.claim(1));
        assert!(b.claim(2));
        // Messages 3..=5 sent; the pool takes them back while 2 runs.
        assert_eq!(b.revoke(5), 2);
        assert!(!b.claim(3) && !b.claim(4) && !b.claim(5));
        // Message 6, sent after, is the worker's again.
        assert!(b.claim(6));
        assert_eq!(b.claimed(), 6);
        // Nothing more was sent: a revocation takes nothing.
        assert_eq!(b.revoke(6), 6);
        assert!(b.claim(7));
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        assert!(seq_le(u32::MAX, 0));
        assert!(seq_le(u32::MAX - 1, 3));
        assert!(!seq_le(2, u32::MAX));
        assert!(seq_le(5, 5) && !seq_le(6, 5));
    }
}
