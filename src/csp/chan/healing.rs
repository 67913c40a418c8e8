//! Repairing a channel after a death (the crash table in the module
//! docs): the lock holder's, and any record owner's.

use std::sync::atomic::Ordering;

use super::{
    Chan, DONE, FREE, Guard, ORPHAN, POISONED, READ, RETIRED, SLEEPING, TAKEN, WAITING, WRITE,
    pack, unpack,
};
use crate::csp::lock;
use crate::csp::spill;
use crate::sys::futex;

impl Chan {
    /// Under the lock, after its holder died: makes the channel whole again
    /// (see the crash table in the module docs). Idempotent, so that a
    /// repairer that dies too is repaired after in turn.
    pub(super) fn repair(&self, g: &mut Guard<'_>) {
        let h = self.header();
        // A reader died moving a writer's message into the buffer: finish
        // the move if the writer was told, else undo the reader's take.
        let rec = h.intent_rec.load(Ordering::Relaxed);
        if rec != 0 {
            let old = h.intent_buf.load(Ordering::Relaxed);
            if h.buf.load(Ordering::Relaxed) == old {
                let idx = (rec as u32).wrapping_sub(1).min(self.geo.nrecords - 1);
                let seq = (rec >> 32) as u32;
                let r = self.rec(idx);
                let s = r.state.load(Ordering::Acquire) & !SLEEPING;
                let taken = r.seq.load(Ordering::Relaxed) == seq
                    && if h.intent_orphan.load(Ordering::Relaxed) != 0 {
                        s == FREE
                    } else {
                        s == DONE || s == TAKEN
                    };
                if taken {
                    // The dead reader took the front message: its segment,
                    // if any, is nobody's now.
                    spill::discard(&self.buf_front());
                    let (head, len) = unpack(old);
                    h.buf.store(
                        pack((head + 1) % self.geo.buf_slots(), len),
                        Ordering::Relaxed,
                    );
                }
            }
            h.intent_rec.store(0, Ordering::Relaxed);
        }
        let flags = self.flags().load(Ordering::Acquire);
        if flags & (POISONED | RETIRED) != 0 {
            self.abort_all();
        }
        if flags & POISONED != 0
            || (flags & RETIRED != 0 && self.ends_word(READ).load(Ordering::Acquire) == 0)
        {
            self.drain_buffer();
        }
        // Wake-ups and notifications the dead holder may not have sent.
        self.poke(g, READ, 0);
        self.poke(g, WRITE, 0);
        for idx in 0..self.hwm() {
            if self.rec(idx).state.load(Ordering::Relaxed) & SLEEPING != 0 {
                g.wakes.push(idx);
            }
        }
        self.sweep();
        self.sweep_segments();
        h.freed.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&h.freed);
    }

    /// Under the lock: finds records whose owner died and reclaims them;
    /// returns whether the channel holds an orphan message afterwards.
    pub(super) fn sweep(&self) -> bool {
        let mut orphans = false;
        for idx in 0..self.hwm() {
            let r = self.rec(idx);
            let s = r.state.load(Ordering::Acquire) & !SLEEPING;
            if s == FREE || s == TAKEN {
                continue;
            }
            if r.owner.load(Ordering::Relaxed) == ORPHAN || lock::holder_gone(&r.held) {
                orphans |= self.reclaim(idx);
            }
        }
        orphans
    }

    /// Under the lock: record `idx`'s owner is gone (its mutex is free).
    /// A message the channel still owes a reader (a dead writer's waiting
    /// record, or a dead reader's completed one it never copied out)
    /// becomes an orphan write any reader may take; anything else is freed.
    /// Returns whether the record is an orphan write now.
    pub(super) fn reclaim(&self, idx: u32) -> bool {
        let r = self.rec(idx);
        let s = r.state.load(Ordering::Acquire) & !SLEEPING;
        let kind = r.kind.load(Ordering::Relaxed);
        match (s, kind) {
            (WAITING, WRITE) => {
                r.owner.store(ORPHAN, Ordering::Relaxed);
                true
            }
            (DONE, READ) if !self.is_poisoned() => {
                r.kind.store(WRITE, Ordering::Relaxed);
                r.owner.store(ORPHAN, Ordering::Relaxed);
                r.state.store(WAITING, Ordering::SeqCst);
                true
            }
            (FREE | TAKEN, _) => false,
            _ => {
                if (kind == WRITE && s != DONE) || (kind == READ && s == DONE) {
                    // A dead writer's message nobody will read (aborted).
                    spill::discard(
                        &self.copy_out(self.rec_data(idx), r.len.load(Ordering::Relaxed)),
                    );
                }
                r.owner.store(0, Ordering::Relaxed);
                r.state.store(FREE, Ordering::Release);
                let h = self.header();
                h.freed.fetch_add(1, Ordering::SeqCst);
                if h.free_sleepers.load(Ordering::SeqCst) > 0 {
                    futex::wake_all(&h.freed);
                }
                false
            }
        }
    }

    /// Looks for dead parties: repairs the channel if its lock holder
    /// died, reclaims the records of dead owners. Returns whether an orphan
    /// message waits for a reader. Waiting parties call it every [`SLICE`].
    pub fn heal(&self) -> bool {
        self.release_dead();
        if self.flags().load(Ordering::Acquire) & (POISONED | RETIRED) != 0 {
            // A poisoner or retirer may have died before aborting everyone.
            self.abort_all();
        }
        match self.lock() {
            Ok(_g) => self.sweep(),
            Err(_) => false,
        }
    }
}
