//! The operations the channel handles call: plain reads and writes, and
//! what an alternation needs.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::fast::Migration;

use super::{Attempt, Chan, NOTIFIED, OpError, Posted, READ, SLEEPING, WATCH, WATCHING, WRITE};

impl Chan {
    /// Writes one encoded message, waiting until a reader took it (or, if
    /// buffered, until it is in the buffer). `mig`: the writer is moving
    /// over from the hand-over path (done once its record is posted).
    pub fn write_migrating(
        &self,
        data: &[u8],
        deadline: Option<Instant>,
        mut mig: Migration<'_>,
    ) -> Result<(), OpError> {
        self.fast().promote();
        loop {
            let done = match self.post_blocking(WRITE, Some(data), deadline, &mut mig)? {
                Err(_) => true,
                Ok(idx) => self.finish(idx, deadline)?.is_ok(),
            };
            if done {
                self.handed_over(WRITE);
                return Ok(());
            }
        }
    }

    /// Reads one encoded message. `mig`: the reader is moving over from
    /// the hand-over path (done once its record is posted).
    pub fn read_migrating(
        &self,
        deadline: Option<Instant>,
        mut mig: Migration<'_>,
    ) -> Result<Vec<u8>, OpError> {
        self.fast().promote();
        loop {
            let got = match self.post_blocking(READ, None, deadline, &mut mig)? {
                Err(Attempt::Done(v)) => Some(v),
                Err(Attempt::NotReady) => unreachable!("post_blocking returns only completions"),
                Ok(idx) => self.finish(idx, deadline)?.ok(),
            };
            if let Some(v) = got {
                self.handed_over(READ);
                return Ok(v.unwrap_or_default());
            }
        }
    }

    /// Completes at once if the other side is ready (never waits).
    pub fn try_op(&self, dir: u32, data: Option<&[u8]>, owner: u64) -> Result<Attempt, OpError> {
        self.fast().promote();
        let mut g = self.lock()?;
        if dir == READ {
            self.try_read_locked(&mut g, owner)
        } else {
            self.try_write_locked(&mut g, data.unwrap_or_default(), owner)
        }
    }

    /// Posts a watch of direction `dir` for `owner`.
    pub fn post_watch(&self, dir: u32, owner: u64) -> Result<Posted, OpError> {
        self.fast().promote();
        let _g = self.lock()?;
        Ok(match self.alloc(WATCH | dir, owner, None) {
            Some(idx) => Posted::Record(idx),
            None => Posted::NoRoom,
        })
    }

    /// Re-arms a notified watch (owner only).
    pub fn rearm(&self, idx: u32) {
        let st = &self.rec(idx).state;
        let s = st.load(Ordering::Acquire);
        if s & !SLEEPING == NOTIFIED {
            // Fails only if poison aborted it meanwhile, which the owner
            // then sees.
            let _ = st.compare_exchange(s, WATCHING, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Posts `owner`'s single committed offer, or completes at once if
    /// the other side is ready by now.
    pub fn post_offer(&self, dir: u32, data: Option<&[u8]>, owner: u64) -> Result<Posted, OpError> {
        self.fast().promote();
        let mut g = self.lock()?;
        let a = if dir == READ {
            self.try_read_locked(&mut g, owner)?
        } else {
            self.try_write_locked(&mut g, data.unwrap_or_default(), owner)?
        };
        if let Attempt::Done(v) = a {
            return Ok(Posted::Completed(v));
        }
        Ok(match self.alloc(dir, owner, data) {
            Some(idx) => {
                self.poke(&mut g, if dir == READ { WRITE } else { READ }, owner);
                Posted::Record(idx)
            }
            None => Posted::NoRoom,
        })
    }

    /// Puts back a message this process took from the channel but can
    /// hand to nobody (an async read dropped after its offer was
    /// completed, see `csp/aio.rs`): to a waiting reader or into the
    /// buffer if it can, else as an orphan write, which the next reader
    /// takes (as the message of a reader that died before copying it
    /// out). `Ok(false)`: every record is in use, try again later.
    #[cfg(feature = "tokio")]
    pub fn give_back(&self, data: &[u8]) -> Result<bool, OpError> {
        self.fast().promote();
        let mut g = self.lock()?;
        if !self.is_retired()
            && let Attempt::Done(_) = self.try_write_locked(&mut g, data, 0)?
        {
            return Ok(true);
        }
        let Some(idx) = self.alloc(WRITE, super::ORPHAN, Some(data)) else {
            return Ok(false);
        };
        // An orphan has no owner: release the record's mutex `alloc` took
        // (the reader that takes the orphan frees the record).
        let _ = self.rec(idx).held.unlock();
        self.poke(&mut g, READ, 0);
        Ok(true)
    }
}
