//! Under the lock: posting records, finding the oldest live counterpart,
//! completing it, telling watches, and a read or write at once.

use std::sync::atomic::Ordering;

use super::{
    Attempt, Chan, CrashPoint, DONE, FREE, Guard, NOTIFIED, ORPHAN, OpError, READ, SLEEPING, TAKEN,
    WAITING, WATCH, WATCHING, WRITE, crash_point, pack,
};
use crate::csp::lock;
use crate::csp::spill;
use crate::sys::futex;
use crate::sys::robust_mutex::Locked;

impl Chan {
    /// The oldest committed record of kind `kind` whose owner is alive,
    /// or, for `WRITE`, an orphan; the records of dead owners met on the
    /// way are reclaimed.
    pub(super) fn live_oldest(&self, kind: u32) -> Option<u32> {
        loop {
            let idx = self.oldest(kind)?;
            let r = self.rec(idx);
            if r.owner.load(Ordering::Relaxed) == ORPHAN || !lock::holder_gone(&r.held) {
                return Some(idx);
            }
            if self.reclaim(idx) && kind == WRITE {
                return Some(idx);
            }
        }
    }

    /// The oldest committed record of kind `kind` (not a watch).
    pub(super) fn oldest(&self, kind: u32) -> Option<u32> {
        let mut best: Option<(u32, u32)> = None;
        for idx in 0..self.hwm() {
            let r = self.rec(idx);
            if r.state.load(Ordering::Acquire) & !SLEEPING == WAITING
                && r.kind.load(Ordering::Relaxed) == kind
            {
                let seq = r.seq.load(Ordering::Relaxed);
                let older = match best {
                    None => true,
                    Some((_, b)) => (seq.wrapping_sub(b) as i32) < 0,
                };
                if older {
                    best = Some((idx, seq));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Takes the message of write record `idx`: completes it, or frees it
    /// if it is an orphan. Fails if the owner withdrew it or it was aborted
    /// meanwhile.
    pub(super) fn take_write(&self, g: &mut Guard<'_>, idx: u32) -> bool {
        let r = self.rec(idx);
        if r.owner.load(Ordering::Relaxed) != ORPHAN {
            return self.complete(g, idx);
        }
        // A dead owner may have left `SLEEPING` set.
        let mut s = r.state.load(Ordering::Relaxed);
        let ok = loop {
            if s & !SLEEPING != WAITING {
                break false;
            }
            match r
                .state
                .compare_exchange(s, FREE, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break true,
                Err(now) => s = now,
            }
        };
        if ok {
            r.owner.store(0, Ordering::Relaxed);
            let h = self.header();
            h.freed.fetch_add(1, Ordering::SeqCst);
            if h.free_sleepers.load(Ordering::SeqCst) > 0 {
                futex::wake_all(&h.freed);
            }
        }
        ok
    }

    /// Completes committed record `idx`: `WAITING → DONE`. Fails if the
    /// owner withdrew it or it was aborted meanwhile.
    pub(super) fn complete(&self, g: &mut Guard<'_>, idx: u32) -> bool {
        let st = &self.rec(idx).state;
        let mut s = st.load(Ordering::Relaxed);
        loop {
            if s & !SLEEPING != WAITING {
                return false;
            }
            // Release: the message we copied into (or out of) the record
            // is complete before the owner sees DONE.
            match st.compare_exchange(s, DONE, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    if s & SLEEPING != 0 {
                        g.wakes.push(idx);
                    }
                    return true;
                }
                Err(now) => s = now,
            }
        }
    }

    /// Tells the watches of kind `WATCH | kind` (except `owner`'s) that
    /// something changed.
    pub(super) fn poke(&self, g: &mut Guard<'_>, kind: u32, owner: u64) {
        for idx in 0..self.hwm() {
            let r = self.rec(idx);
            if r.kind.load(Ordering::Relaxed) != WATCH | kind
                || (owner != 0 && r.owner.load(Ordering::Relaxed) == owner)
            {
                continue;
            }
            let mut s = r.state.load(Ordering::Acquire);
            while s & !SLEEPING == WATCHING {
                match r
                    .state
                    .compare_exchange(s, NOTIFIED, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        if s & SLEEPING != 0 {
                            g.wakes.push(idx);
                        }
                        break;
                    }
                    Err(now) => s = now,
                }
            }
        }
    }

    /// Allocates a record (kind, owner), message `data` copied in for a
    /// committed write; returns its index.
    pub(super) fn alloc(&self, kind: u32, owner: u64, data: Option<&[u8]>) -> Option<u32> {
        let h = self.header();
        for idx in 0..self.geo.nrecords {
            let r = self.rec(idx);
            // Acquire: pairs with the previous owner's Release of FREE, so
            // its last read of the message happened before we overwrite it.
            if !matches!(r.state.load(Ordering::Acquire), FREE | TAKEN) {
                continue;
            }
            // The record's mutex is ours while the record is: others tell
            // from it whether we are alive. Busy: its last owner is between
            // releasing the record and the mutex; owner-dead: it died there.
            match r.held.try_lock() {
                Ok(Locked::Clean) => {}
                Ok(Locked::OwnerDied) => {
                    let _ = r.held.mark_consistent();
                }
                Err(_) => continue,
            }
            r.kind.store(kind, Ordering::Relaxed);
            r.owner.store(owner, Ordering::Relaxed);
            let seq = h.seq.fetch_add(1, Ordering::Relaxed);
            r.seq.store(seq, Ordering::Relaxed);
            if let Some(d) = data {
                self.copy_in(self.rec_data(idx), d);
                r.len.store(d.len() as u32, Ordering::Relaxed);
            }
            let state = if kind & WATCH != 0 { WATCHING } else { WAITING };
            // The high-water mark first: a record is never posted beyond it,
            // even by a holder that dies here.
            if idx >= h.hwm.load(Ordering::Relaxed) {
                h.hwm.store(idx + 1, Ordering::Relaxed);
            }
            // SeqCst (a Release at least, publishing the fields above):
            // see `poison`.
            r.state.store(state, Ordering::SeqCst);
            crash_point(CrashPoint::Posted);
            return Some(idx);
        }
        None
    }

    /// Under the lock: read at once if a message is buffered or a writer
    /// waits.
    pub(super) fn try_read_locked(
        &self,
        g: &mut Guard<'_>,
        owner: u64,
    ) -> Result<Attempt, OpError> {
        let h = self.header();
        if self.buf_len() > 0 {
            let (head, len) = self.buf_word();
            let (v, name) = spill::claim(self.buf_front());
            let slots = self.geo.buf_slots();
            // Room freed: move the oldest waiting writer in, or tell
            // watching writers. The move is written down first (the
            // intent) so that a repairer can tell whether the writer was
            // told; the writer's message goes to the spare slot, so the
            // front stays intact until the buffer word moves.
            let mut next = pack((head + 1) % slots, len - 1);
            let mut moved = false;
            while let Some(w) = self.live_oldest(WRITE) {
                let r = self.rec(w);
                let (slot_len, p) = self.buf_slot((head + len) % slots);
                let wlen = r.len.load(Ordering::Relaxed);
                self.copy_in(p, &self.copy_out(self.rec_data(w), wlen));
                slot_len.store(wlen, Ordering::Relaxed);
                h.intent_buf.store(pack(head, len), Ordering::Relaxed);
                h.intent_orphan.store(
                    u32::from(r.owner.load(Ordering::Relaxed) == ORPHAN),
                    Ordering::Relaxed,
                );
                h.intent_rec.store(
                    u64::from(w + 1) | (u64::from(r.seq.load(Ordering::Relaxed)) << 32),
                    Ordering::Relaxed,
                );
                crash_point(CrashPoint::MoveIntent);
                if self.take_write(g, w) {
                    crash_point(CrashPoint::MoveCompleted);
                    next = pack((head + 1) % slots, len);
                    moved = true;
                    break;
                }
            }
            h.buf.store(next, Ordering::Relaxed);
            h.intent_rec.store(0, Ordering::Relaxed);
            spill::unlink(name);
            crash_point(CrashPoint::BufferTaken);
            if !moved {
                self.poke(g, WRITE, owner);
            }
            return Ok(Attempt::Done(Some(v)));
        }
        while let Some(w) = self.live_oldest(WRITE) {
            let msg = self.copy_out(self.rec_data(w), self.rec(w).len.load(Ordering::Relaxed));
            let (msg, name) = spill::claim(msg);
            crash_point(CrashPoint::ReadCopied);
            if self.take_write(g, w) {
                spill::unlink(name);
                crash_point(CrashPoint::ReadCompleted);
                return Ok(Attempt::Done(Some(msg)));
            }
            spill::unclaim(msg);
        }
        if self.is_retired() {
            return Err(OpError::Retired);
        }
        Ok(Attempt::NotReady)
    }

    /// Under the lock: write at once if a reader waits or the buffer has
    /// room.
    pub(super) fn try_write_locked(
        &self,
        g: &mut Guard<'_>,
        data: &[u8],
        owner: u64,
    ) -> Result<Attempt, OpError> {
        if self.is_retired() {
            return Err(OpError::Retired);
        }
        while let Some(r) = self.live_oldest(READ) {
            self.copy_in(self.rec_data(r), data);
            self.rec(r).len.store(data.len() as u32, Ordering::Relaxed);
            crash_point(CrashPoint::WriteCopied);
            if self.complete(g, r) {
                crash_point(CrashPoint::WriteCompleted);
                return Ok(Attempt::Done(None));
            }
        }
        if self.buf_len() < self.geo.capacity {
            self.buf_push(data);
            self.poke(g, READ, owner);
            return Ok(Attempt::Done(None));
        }
        Ok(Attempt::NotReady)
    }
}
