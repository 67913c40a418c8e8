//! The consumer side: taking the oldest record under the C lock, the
//! [`Record`] a consumer reads it through, and releasing the segments left
//! behind (kept for reuse or punched, see "The circle of segments").

#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{
    GetFail, Guard, HDR, Ring, SEG, UNIT, acquire, corrupt, cseg, lseg_of, pack, seg_off, unpack,
};

impl Ring {
    /// Takes the oldest record if there is one: `body` sees it, then the
    /// record is consumed (committed) and `body`'s result returned. If
    /// `body` panics, or the process dies before the commit, the record
    /// stays queued.
    pub(crate) fn try_get<R>(
        &self,
        lock_deadline: Option<Instant>,
        body: impl FnOnce(&Record<'_>) -> R,
    ) -> Result<R, GetFail> {
        let h = self.header();
        let Some(guard) = self.lock_consumer(lock_deadline)? else {
            return Err(GetFail::LockTimeout);
        };
        // Relaxed: only C lock holders store `head`.
        let (seq, pos) = unpack(h.head.0.load(Ordering::Relaxed));
        let seen = h.consumer.seen_put.load(Ordering::Relaxed);
        if seq == seen {
            // Acquire: pairs with the producer's commit, so the record and
            // the links to its segments are visible below.
            let (put, _) = unpack(h.tail.0.load(Ordering::Acquire));
            h.consumer.seen_put.store(put, Ordering::Relaxed);
            if put == seq {
                return Err(GetFail::Empty);
            }
        }
        let mut slot = self.checked(h.c_slot.0.load(Ordering::Relaxed))?;
        let mut off = seg_off(pos);
        if off == SEG {
            slot = self.next(slot)?;
            off = 0;
        }
        // (slot, off) is 8-aligned inside a segment of the held arc,
        // holding the header of a committed record that no producer touches
        // until we move `c_slot` past it.
        let len = self.record_len(slot, off).load(Ordering::Relaxed) as usize;
        if len > self.max_message() {
            return Err(corrupt("record longer than the queue").into());
        }
        off += HDR;
        let rec = Record {
            ring: self,
            slot,
            off,
            len,
        };
        let out = body(&rec);
        let units = (1 + len.div_ceil(UNIT)) as u32;
        let new_pos = pos.wrapping_add(units);
        // COMMIT. SeqCst: orders our reads of the record before any reuse
        // (Release) and is the store half of the handshake with producers
        // waiting for space.
        h.head
            .0
            .store(pack(seq.wrapping_add(1), new_pos), Ordering::SeqCst);
        self.release_to(cseg(new_pos))?;
        drop(guard);
        h.space_event.notify();
        // After the wake-up: a hint for producers' next spin.
        self.publish_consumer_cpu();
        Ok(out)
    }

    /// Takes the C lock, repairing the consumer side if its last holder
    /// died (see the module docs); `None` if not had by `deadline`.
    pub(super) fn lock_consumer(&self, deadline: Option<Instant>) -> io::Result<Option<Guard<'_>>> {
        let h = self.header();
        let Some((guard, died)) = acquire(&h.consumer.lock, deadline)? else {
            return Ok(None);
        };
        if died {
            self.recover_consumer()?;
            h.consumer.lock.mark_consistent()?;
        }
        Ok(Some(guard))
    }

    /// Moves `c_slot` forward to the segment numbered `target`, punching
    /// the cold segments left behind (normal release and crash repair
    /// alike). Idempotent.
    pub(super) fn release_to(&self, target: u32) -> io::Result<()> {
        let h = self.header();
        let mut s = self.checked(h.c_slot.0.load(Ordering::Relaxed))?;
        let start = s;
        let mut steps = 0;
        while lseg_of(self.entry(s).load(Ordering::Relaxed)) != target {
            // Keep up to `keep` free segments in memory for producers to
            // reuse without faults; give the others back. The counter is
            // exact except after a death, which asks the producers to
            // recount it.
            if h.free_resident.0.load(Ordering::Relaxed) < self.keep {
                self.set_resident(s, true);
                h.free_resident.0.fetch_add(1, Ordering::Relaxed);
            } else {
                self.give_back(s);
            }
            s = self.next_of_walk(s, &mut steps, "head segment not found")?;
        }
        if s != start {
            // Release: our reads of (and holes in) the segments behind
            // happen before a producer that sees the new value reuses them.
            h.c_slot.0.store(s, Ordering::Release);
        }
        Ok(())
    }
}

/// A committed record seen by a consumer inside [`Ring::try_get`].
pub(crate) struct Record<'a> {
    ring: &'a Ring,
    slot: u32,
    off: usize,
    len: usize,
}

impl Record<'_> {
    /// Payload length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The payload in place, when it lies within one segment.
    pub(crate) fn contiguous(&self) -> Option<&[u8]> {
        if self.off + self.len <= SEG {
            // SAFETY: the bytes lie inside one segment of the held arc and
            // belong to a committed record: no producer writes them until
            // this consumer releases the segment, after the borrow ends.
            Some(unsafe {
                std::slice::from_raw_parts(self.ring.seg_at(self.slot, self.off), self.len)
            })
        } else {
            None
        }
    }

    /// Appends the payload to `out`.
    pub(crate) fn copy_to(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.reserve(self.len);
        let (mut slot, mut off, mut left) = (self.slot, self.off, self.len);
        while left > 0 {
            if off == SEG {
                slot = self.ring.next(slot)?;
                off = 0;
            }
            let n = (SEG - off).min(left);
            // SAFETY: as in `contiguous`, for the piece in this segment.
            let piece = unsafe { std::slice::from_raw_parts(self.ring.seg_at(slot, off), n) };
            out.extend_from_slice(piece);
            off += n;
            left -= n;
        }
        Ok(())
    }
}
