//! The producer side: appending a record under the P lock, the [`Writer`]
//! that copies its payload into the segments, and growing the circle (see
//! "The circle of segments" in the module docs).

#![allow(unsafe_code)]

use std::io;
use std::ptr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{
    HDR, LSEG_MASK, PutFail, Ring, SEG, UNIT, acquire, align8, corrupt, cseg, entry, lseg_of,
    next_of, pack, seg_off, unpack,
};
use crate::sys;

impl Ring {
    /// Appends one record whose payload `write` produces through the
    /// [`Writer`], if there is room. Nothing becomes visible unless this
    /// returns `Ok`.
    pub(crate) fn try_put(
        &self,
        lock_deadline: Option<Instant>,
        write: impl FnOnce(&mut Writer<'_>) -> Result<(), String>,
    ) -> Result<(), PutFail> {
        let h = self.header();
        let Some((guard, died)) = acquire(&h.producer.lock, lock_deadline)? else {
            return Err(PutFail::LockTimeout);
        };
        if died {
            self.recover_producer()?;
            h.producer.lock.mark_consistent()?;
        } else if h.producer.recount.load(Ordering::Relaxed) != 0 {
            self.recount_free(self.checked(h.producer.p_slot.load(Ordering::Relaxed))?)?;
        }
        // Relaxed: only P lock holders store `tail`, and the lock orders us
        // after the last of them.
        let (seq, pos) = unpack(h.tail.0.load(Ordering::Relaxed));
        if self.maxsize != 0 {
            let mut seen = h.producer.seen_get.load(Ordering::Relaxed);
            if seq.wrapping_sub(seen) >= self.maxsize {
                // Acquire: pairs with the consumer's commit (only the count
                // is used; reuse of space is governed by `c_slot`).
                seen = unpack(h.head.0.load(Ordering::Acquire)).0;
                h.producer.seen_get.store(seen, Ordering::Relaxed);
                if seq.wrapping_sub(seen) >= self.maxsize {
                    return Err(PutFail::Full);
                }
            }
        }
        let mut w = Writer {
            ring: self,
            slot: self.checked(h.producer.p_slot.load(Ordering::Relaxed))?,
            lseg: cseg(pos),
            off: seg_off(pos),
            len: 0,
            limit: self.max_message(),
            fail: None,
            allocated: false,
        };
        let start_slot = w.slot;
        let failed = |w: &mut Writer<'_>, f: PutFail| {
            if w.allocated || w.slot != start_slot {
                // Segments linked, or kept ones reused, for nothing:
                // recount, and give back what exceeds the ring.
                self.recount_free(start_slot)?;
            }
            Err(f)
        };
        if w.off == SEG && !w.advance() {
            let f = w.fail.take().unwrap_or(PutFail::NoSpace(None));
            return failed(&mut w, f);
        }
        let (hdr_slot, hdr_off) = (w.slot, w.off);
        w.off += HDR;
        if let Err(msg) = write(&mut w) {
            let f = w.fail.take().unwrap_or(PutFail::Encode(msg));
            return failed(&mut w, f);
        }
        if let Some(f) = w.fail.take() {
            return failed(&mut w, f);
        }
        let len = w.len;
        w.off = align8(w.off);
        // (hdr_slot, hdr_off) is an 8-aligned spot inside a segment that
        // this P lock holder reserved: it lies past the tail, so no consumer
        // reads it until the commit below.
        self.record_len(hdr_slot, hdr_off)
            .store(len as u64, Ordering::Relaxed);
        let units = (1 + len.div_ceil(UNIT)) as u32;
        // COMMIT. SeqCst: publishes the record and links (Release) and is
        // the store half of the wake-up handshake with sleeping consumers.
        h.tail.0.store(
            pack(seq.wrapping_add(1), pos.wrapping_add(units)),
            Ordering::SeqCst,
        );
        h.producer.p_slot.store(w.slot, Ordering::Relaxed);
        drop(guard);
        h.data_event.notify();
        // After the wake-up: a hint for consumers' next spin.
        self.publish_producer_cpu();
        Ok(())
    }

    /// Takes a clear slot from the bitmap (lowest first) and backs it with
    /// memory.
    fn alloc_slot(&self) -> Result<u32, PutFail> {
        let h = self.header();
        let words = (self.nslots as usize).div_ceil(64);
        let hint =
            (h.producer.alloc_hint.load(Ordering::Relaxed) as usize).min(self.nslots as usize);
        let order = (hint / 64..words).chain(0..hint / 64);
        let mut found = None;
        for w in order {
            let bits = self.bitmap(w).load(Ordering::Relaxed);
            if bits != u64::MAX {
                let i = w * 64 + (!bits).trailing_zeros() as usize;
                if i < self.nslots as usize {
                    found = Some(i as u32);
                    break;
                }
            }
        }
        let Some(y) = found else {
            return Err(PutFail::NoSpace(None));
        };
        // Set before backing and linking: the bitmap stays a superset of
        // the circle and of the backed slots outside it, so a death at any
        // point here leaves an orphan that recovery finds and punches.
        self.bitmap(y as usize / 64)
            .fetch_or(1 << (y % 64), Ordering::Relaxed);
        if let Err(e) = sys::shm::allocate(self.fd.fd(), self.data_off + y as usize * SEG, SEG) {
            self.punch(y);
            self.free_slot(y);
            return Err(match e.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::OutOfMemory => {
                    PutFail::NoSpace(Some(e))
                }
                _ => PutFail::Io(e),
            });
        }
        // No consumer looks at a slot outside the circle, so the producer
        // may write its resident bit here.
        self.set_resident(y, true);
        h.producer.alloc_hint.store(y + 1, Ordering::Relaxed);
        Ok(y)
    }

    /// Clears slot `x` in the bitmap (it left the circle, or never joined
    /// it).
    fn free_slot(&self, x: u32) {
        let h = self.header();
        self.bitmap(x as usize / 64)
            .fetch_and(!(1 << (x % 64)), Ordering::Relaxed);
        if x < h.producer.alloc_hint.load(Ordering::Relaxed) {
            h.producer.alloc_hint.store(x, Ordering::Relaxed);
        }
    }
}

/// Writes a record's payload into the ring, crossing into (and linking)
/// new segments as needed. Only exists while the P lock is held.
pub(crate) struct Writer<'a> {
    ring: &'a Ring,
    slot: u32,
    lseg: u32,
    off: usize,
    len: usize,
    limit: usize,
    fail: Option<PutFail>,
    /// Whether a fresh slot was linked in.
    allocated: bool,
}

impl Writer<'_> {
    /// Appends `data`; `false` when out of room (the reason is kept for
    /// `try_put`).
    #[inline]
    pub(crate) fn write(&mut self, data: &[u8]) -> bool {
        let n = data.len();
        if n <= 16 && self.off + n <= SEG && self.len + n <= self.limit && self.fail.is_none() {
            // Small pieces (most of what a serialiser emits): copy inline
            // rather than through `memcpy`.
            let dst = self.ring.seg_at(self.slot, self.off);
            for (i, &b) in data.iter().enumerate() {
                // SAFETY: as in `write_slow`: [off, off + n) is inside
                // segment `slot`, past the committed tail, owned by this P
                // lock holder. Volatile stores keep the compiler from
                // turning the loop back into a `memcpy` call.
                unsafe { dst.wrapping_add(i).write_volatile(b) };
            }
            self.off += n;
            self.len += n;
            return true;
        }
        self.write_slow(data)
    }

    fn write_slow(&mut self, mut data: &[u8]) -> bool {
        if self.fail.is_some() {
            return false;
        }
        if self.len + data.len() > self.limit {
            self.fail = Some(PutFail::TooLarge);
            return false;
        }
        while !data.is_empty() {
            if self.off == SEG && !self.advance() {
                return false;
            }
            let n = (SEG - self.off).min(data.len());
            // SAFETY: [off, off + n) lies inside segment `slot`, which is
            // past the committed tail (free or reserved by this P lock
            // holder), so nobody else reads or writes it; `data` is a
            // separate Rust slice.
            unsafe {
                ptr::copy_nonoverlapping(data.as_ptr(), self.ring.seg_at(self.slot, self.off), n);
            }
            self.off += n;
            self.len += n;
            data = &data[n..];
        }
        true
    }

    /// Moves into the next segment (see "The circle of segments").
    fn advance(&mut self) -> bool {
        match self.try_advance() {
            Ok(()) => true,
            Err(f) => {
                self.fail = Some(f);
                false
            }
        }
    }

    fn try_advance(&mut self) -> Result<(), PutFail> {
        let r = self.ring;
        let h = r.header();
        let a = self.slot;
        let lseg = (self.lseg + 1) & LSEG_MASK;
        let mut steps = 0;
        loop {
            let ea = r.entry(a).load(Ordering::Relaxed);
            let x = r.checked(next_of(ea))?;
            // Acquire: pairs with the consumer's Release of `c_slot`, so its
            // reads of (and holes in) a segment we now see as free are done.
            let c = h.c_slot.0.load(Ordering::Acquire);
            if x != c {
                let ex = r.entry(x).load(Ordering::Relaxed);
                if r.is_resident(x) {
                    // A free segment still in memory: reuse it in place.
                    r.entry(x)
                        .store(entry(lseg, next_of(ex)), Ordering::Relaxed);
                    let _ =
                        h.free_resident
                            .0
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            });
                    self.slot = x;
                    break;
                }
                // A free segment whose memory the consumer gave back: unlink
                // it, then clear its bit, and look again.
                r.entry(a)
                    .store(entry(lseg_of(ea), next_of(ex)), Ordering::Relaxed);
                r.free_slot(x);
                steps += 1;
                if steps > r.nslots {
                    return Err(corrupt("free segments do not end").into());
                }
                continue;
            }
            let y = r.alloc_slot()?;
            self.allocated = true;
            r.entry(y).store(entry(lseg, x), Ordering::Relaxed);
            r.entry(a).store(entry(lseg_of(ea), y), Ordering::Relaxed);
            self.slot = y;
            break;
        }
        self.lseg = lseg;
        self.off = 0;
        Ok(())
    }
}
