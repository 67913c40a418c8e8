//! Repairs after a death (the crash table in the module docs): the
//! producer side after its lock holder died, the consumer side likewise,
//! and the recount of resident free segments that both may leave owed.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Ring, corrupt, cseg, lseg_of, unpack};

impl Ring {
    /// Repairs the producer side after its last lock holder died (see the
    /// module docs). Idempotent.
    pub(super) fn recover_producer(&self) -> io::Result<()> {
        let h = self.header();
        let (_, pos) = unpack(h.tail.0.load(Ordering::Relaxed));
        let target = cseg(pos);
        let mut s = self.checked(h.producer.p_slot.load(Ordering::Relaxed))?;
        let mut steps = 0;
        while lseg_of(self.entry(s).load(Ordering::Relaxed)) != target {
            s = self.next_of_walk(s, &mut steps, "tail segment not found")?;
        }
        h.producer.p_slot.store(s, Ordering::Relaxed);
        // Rebuild the bitmap from the circle.
        let words = (self.nslots as usize).div_ceil(64);
        let mut member = vec![0u64; words];
        let start = s;
        let mut steps = 0;
        loop {
            member[s as usize / 64] |= 1 << (s % 64);
            s = self.next(s)?;
            if s == start {
                break;
            }
            steps += 1;
            if steps > self.nslots {
                return Err(corrupt("the circle of segments does not close"));
            }
        }
        for (w, &m) in member.iter().enumerate() {
            let old = self.bitmap(w).swap(m, Ordering::Relaxed);
            // Slots taken from the bitmap but never linked: give their
            // memory back.
            let mut orphans = old & !m;
            while orphans != 0 {
                let i = (w * 64) as u32 + orphans.trailing_zeros();
                orphans &= orphans - 1;
                if i < self.nslots {
                    self.give_back(i);
                }
            }
        }
        h.producer.alloc_hint.store(0, Ordering::Relaxed);
        h.producer.seen_get.store(
            unpack(h.head.0.load(Ordering::Acquire)).0,
            Ordering::Relaxed,
        );
        self.recount_free(start)
    }

    /// Runs [`trim_free`](Self::trim_free) with the C lock held too, so
    /// that no consumer moves `c_slot` or `free_resident` meanwhile and the
    /// count it stores is exact. Run by a P lock holder. It only tries the
    /// C lock (with a brief spin), never waits for it: a consumer's
    /// callback may be putting into this very queue while it holds the C
    /// lock. If the C lock is busy, the recount is left for the next `put`.
    pub(super) fn recount_free(&self, p: u32) -> io::Result<()> {
        let h = self.header();
        h.producer.recount.store(1, Ordering::Relaxed);
        // Busy, or held by this very thread (a callback): later. (A broken
        // C lock is the next `get`'s to report.)
        let Ok(Some(guard)) = self.lock_consumer(Some(Instant::now())) else {
            return Ok(());
        };
        self.trim_free(p)?;
        h.producer.recount.store(0, Ordering::Relaxed);
        drop(guard);
        Ok(())
    }

    /// Walks the free arc after the tail segment `p`: keeps the first
    /// `keep` resident segments, punches the others, and recounts
    /// `free_resident`. Run holding both locks (see
    /// [`recount_free`](Self::recount_free)) after a death or a failed
    /// `put`, which can leave segments linked and backed but unused, or
    /// the count off.
    fn trim_free(&self, p: u32) -> io::Result<()> {
        let h = self.header();
        let c = h.c_slot.0.load(Ordering::Acquire);
        let mut kept = 0;
        let mut f = self.next(p)?;
        let mut steps = 0;
        while f != c && f != p {
            if self.is_resident(f) {
                if kept < self.keep {
                    kept += 1;
                } else {
                    self.give_back(f);
                }
            }
            f = self.next_of_walk(f, &mut steps, "free segments do not end")?;
        }
        h.free_resident.0.store(kept, Ordering::Relaxed);
        Ok(())
    }

    /// Repairs the consumer side after its last lock holder died (see the
    /// module docs), holding the C lock. Idempotent.
    pub(super) fn recover_consumer(&self) -> io::Result<()> {
        let h = self.header();
        let (_, pos) = unpack(h.head.0.load(Ordering::Relaxed));
        self.release_to(cseg(pos))?;
        // The dead holder may have counted a segment it had not yet
        // released, which was just counted again.
        h.producer.recount.store(1, Ordering::Relaxed);
        Ok(())
    }
}
