//! The message bytes: copies into and out of records and buffer slots,
//! the ring buffer, and the spill segments of large messages (see
//! `spill.rs`).

#![allow(unsafe_code)]

use std::sync::atomic::Ordering;

use super::{
    ABORTED, Chan, CrashPoint, DONE, READ, SLEEPING, SPILLED, WAITING, WRITE, crash_point, pack,
    unpack,
};
use crate::csp::lock;
use crate::csp::spill;
use crate::wait::Backoff;

impl Chan {
    /// Notes that a message of this channel went to a segment of its own
    /// (so that dropping or repairing the channel sweeps segments).
    pub fn mark_spilled(&self) {
        let flags = self.flags();
        if flags.load(Ordering::Relaxed) & SPILLED == 0 {
            flags.fetch_or(SPILLED, Ordering::AcqRel);
        }
    }

    /// What the names of this channel's spill segments carry.
    pub fn spill_tag(&self) -> String {
        format!("{:x}", self.id())
    }

    /// Under the lock: unlinks the spill segments of this channel that no
    /// running process can still deliver (see `spill.rs`).
    pub(super) fn sweep_segments(&self) {
        if self.flags().load(Ordering::Acquire) & SPILLED == 0 {
            return;
        }
        let mut held = Vec::new();
        let mut keep = |p: *const u8, len: u32| {
            if len > 0 && self.copy_out(p, 1)[0] == 0xFF {
                held.push(self.copy_out(p, len));
            }
        };
        for idx in 0..self.hwm() {
            let r = self.rec(idx);
            let s = r.state.load(Ordering::Acquire) & !SLEEPING;
            let kind = r.kind.load(Ordering::Relaxed);
            if (kind == WRITE && matches!(s, WAITING | ABORTED | DONE))
                || (kind == READ && s == DONE)
            {
                keep(self.rec_data(idx), r.len.load(Ordering::Relaxed));
            }
        }
        let (head, len) = self.buf_word();
        for k in 0..len {
            let (slot_len, p) = self.buf_slot((head + k) % self.geo.buf_slots());
            keep(p, slot_len.load(Ordering::Relaxed));
        }
        spill::sweep(&self.spill_tag(), &held);
    }

    pub(super) fn copy_in(&self, dst: *mut u8, src: &[u8]) {
        let n = src.len().min(self.geo.slot as usize);
        // SAFETY: `dst` has `slot` bytes inside the memory; the region is
        // owned by us under the protocol (a record we hold the lock for
        // and that its owner does not read until DONE, or a free buffer
        // slot under the lock).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, n) }
    }

    pub(super) fn copy_out(&self, src: *const u8, len: u32) -> Vec<u8> {
        let n = (len as usize).min(self.geo.slot as usize);
        // SAFETY: `src` has `slot` bytes inside the memory, `n <= slot`,
        // and the protocol guarantees nobody writes them while we read.
        unsafe { std::slice::from_raw_parts(src, n) }.to_vec()
    }

    /// The buffer word: front slot and number of messages.
    pub(super) fn buf_word(&self) -> (u32, u32) {
        let (head, len) = unpack(self.header().buf.load(Ordering::Relaxed));
        (
            head.min(self.geo.buf_slots().saturating_sub(1)),
            len.min(self.geo.capacity),
        )
    }

    /// Under the lock, with room: appends `data`. One store publishes it.
    pub(super) fn buf_push(&self, data: &[u8]) {
        let (head, len) = self.buf_word();
        let (slot_len, p) = self.buf_slot((head + len) % self.geo.buf_slots());
        self.copy_in(p, data);
        slot_len.store(data.len() as u32, Ordering::Relaxed);
        crash_point(CrashPoint::BufferCopied);
        self.header()
            .buf
            .store(pack(head, len + 1), Ordering::Relaxed);
    }

    /// Under the lock: a copy of the front message (not removed).
    pub(super) fn buf_front(&self) -> Vec<u8> {
        let (head, _) = self.buf_word();
        let (slot_len, p) = self.buf_slot(head);
        self.copy_out(p, slot_len.load(Ordering::Relaxed))
    }

    /// Under the lock: discards every buffered message, each one's segment
    /// before the store that removes it (a segment unlinked twice is
    /// harmless; one never unlinked would stay).
    pub(super) fn drain_buffer(&self) {
        loop {
            let (head, len) = self.buf_word();
            if len == 0 {
                break;
            }
            spill::discard(&self.buf_front());
            self.header().buf.store(
                pack((head + 1) % self.geo.buf_slots(), len - 1),
                Ordering::Relaxed,
            );
        }
    }

    pub(super) fn buf_len(&self) -> u32 {
        if self.geo.capacity == 0 {
            0
        } else {
            self.buf_word().1
        }
    }
}

impl Drop for Chan {
    /// Sweeps the channel's spill segments that nobody will deliver (only
    /// if it ever spilled; see `spill.rs`).
    fn drop(&mut self) {
        if self.flags().load(Ordering::Acquire) & SPILLED == 0 {
            return;
        }
        if let Some(got) = lock::lock(&self.header().lock, Backoff::off()) {
            let _g = self.held(got);
            self.sweep_segments();
        }
    }
}
