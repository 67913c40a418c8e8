//! The ends of each side: counted per process in the holder table (so
//! that the ends of a dead process can be released), retiring the channel
//! when a side's last end goes, and poisoning it.

use std::sync::atomic::Ordering;

use super::{
    ABORTED, Chan, CrashPoint, Holder, NOTIFIED, OpError, POISONED, READ, RETIRED, SLEEPING,
    WAITING, WATCHING, WRITE, crash_point,
};
use crate::csp::lock;
use crate::sys;
use crate::sys::futex;
use crate::sys::liveness;
use crate::sys::liveness::ProcessId;

impl Chan {
    /// The holder slot of process `id`, claimed if `claim` and it has
    /// none (a free slot, or one of a dead process holding nothing).
    pub(super) fn holder_of(&self, id: ProcessId, claim: bool) -> Option<&Holder> {
        let pid = id.pid as u32;
        let mine = (0..self.holders()).map(|i| self.holder(i)).find(|s| {
            s.pid.load(Ordering::Acquire) == pid && s.start.load(Ordering::Acquire) == id.start
        });
        if mine.is_some() || !claim {
            return mine;
        }
        for i in 0..self.holders() {
            let s = self.holder(i);
            let old = s.pid.load(Ordering::Acquire);
            let reusable = old == 0
                || (s.readers.load(Ordering::Acquire) == 0
                    && s.writers.load(Ordering::Acquire) == 0
                    && !liveness::is_running(ProcessId {
                        pid: old as i32,
                        start: s.start.load(Ordering::Acquire),
                    }));
            if reusable
                && s.pid
                    .compare_exchange(old, pid, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                s.readers.store(0, Ordering::Release);
                s.writers.store(0, Ordering::Release);
                s.start.store(id.start, Ordering::Release);
                return Some(s);
            }
        }
        None
    }

    /// Adds `delta` (±1) to the ends of side `dir` that process `id` holds
    /// (a decrement only if it holds one); whether it did. A process that
    /// finds the table full is not registered (its ends are then not
    /// released if it dies).
    pub(super) fn hold(&self, id: ProcessId, dir: u32, delta: i32) -> bool {
        if delta > 0 {
            let Some(s) = self.holder_of(id, true) else {
                return false;
            };
            s.side(dir).fetch_add(1, Ordering::AcqRel);
            return true;
        }
        // Two threads claiming at once may have given the process two
        // slots: take the count from whichever holds one.
        (0..self.holders()).map(|i| self.holder(i)).any(|s| {
            s.pid.load(Ordering::Acquire) == id.pid as u32
                && s.start.load(Ordering::Acquire) == id.start
                && s.side(dir)
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
        })
    }

    /// Counts one more end on side `dir`, held by this process.
    pub fn add_end(&self, dir: u32) {
        self.ends_word(dir).fetch_add(1, Ordering::AcqRel);
        self.hold(liveness::me(), dir, 1);
    }

    /// Takes over an end that process `from` counted for it (an end in
    /// flight, see `channel.rs`): this process holds it now. If `from`
    /// died meanwhile and its ends were released, counts it anew.
    pub fn adopt_end(&self, dir: u32, from: ProcessId) {
        if self.hold(from, dir, -1) {
            self.hold(liveness::me(), dir, 1);
        } else {
            self.add_end(dir);
        }
    }

    /// Counts one end less on side `dir`, held by this process; the last
    /// one retires the channel.
    pub fn remove_end(&self, dir: u32) {
        self.hold(liveness::me(), dir, -1);
        self.drop_end(dir);
    }

    /// Releases the ends of every process that died holding some: they
    /// count as retired (see *Ends of dead processes*). Returns whether
    /// it released any.
    pub fn release_dead(&self) -> bool {
        let me = sys::process::getpid() as u32;
        let mut any = false;
        for i in 0..self.holders() {
            let s = self.holder(i);
            let pid = s.pid.load(Ordering::Acquire);
            if pid == 0 || pid == me {
                continue;
            }
            let (r, w) = (
                s.readers.load(Ordering::Acquire),
                s.writers.load(Ordering::Acquire),
            );
            if r == 0 && w == 0 {
                continue;
            }
            let id = ProcessId {
                pid: pid as i32,
                start: s.start.load(Ordering::Acquire),
            };
            if liveness::is_running(id) {
                continue;
            }
            // Each count is taken by exactly one releaser.
            for (dir, c) in [(READ, &s.readers), (WRITE, &s.writers)] {
                while c
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    self.drop_end(dir);
                    any = true;
                }
            }
        }
        any
    }

    /// One end of side `dir` less in the channel's count.
    pub(super) fn drop_end(&self, dir: u32) {
        let prev = self.ends_word(dir).fetch_sub(1, Ordering::AcqRel);
        if prev == 1 {
            // The flag first, lock-free (so that a death from here on is
            // repaired by the next lock holder, which sees it), then, under
            // the lock, abort every post that happened before: a post under
            // the lock either happened before this lock or sees RETIRED. A
            // poisoned channel needs no retiring.
            self.flags().fetch_or(RETIRED, Ordering::AcqRel);
            self.fast().abort(OpError::Retired);
            crash_point(CrashPoint::Retiring);
            if let Ok(_g) = self.lock() {
                self.abort_all();
                if dir == READ {
                    // Nobody will read what is buffered.
                    self.drain_buffer();
                }
            }
        }
    }

    /// Poisons the channel: lock-free, immediate, permanent.
    pub fn poison(&self) {
        // SeqCst, paired with the SeqCst record store in `alloc` and the
        // SeqCst check in `poisoned_now`: a record posted under a lock taken
        // just before the poison is either seen by the scan below (and
        // aborted) or its owner sees the flag before it sleeps.
        self.flags().fetch_or(POISONED, Ordering::SeqCst);
        self.fast().abort(OpError::Poisoned);
        let h = self.header();
        // Best effort, only when nobody holds the lock: release what is
        // buffered (spilled messages own named segments). A holder, or the
        // repairer of a dead one, sees the flag and drains.
        if let Some(got) = lock::try_lock(&h.lock) {
            let _g = self.held(got);
            self.drain_buffer();
        }
        self.abort_all();
        h.freed.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&h.freed);
    }

    pub(super) fn abort_all(&self) {
        for idx in 0..self.geo.nrecords {
            let st = &self.rec(idx).state;
            // SeqCst: see `poison`.
            let mut s = st.load(Ordering::SeqCst);
            loop {
                let base = s & !SLEEPING;
                if !matches!(base, WAITING | WATCHING | NOTIFIED) {
                    break;
                }
                // AcqRel: the owner, seeing ABORTED, also sees the flags.
                match st.compare_exchange(s, ABORTED, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        if s & SLEEPING != 0 {
                            futex::wake_owner(st);
                        }
                        break;
                    }
                    Err(now) => s = now,
                }
            }
        }
    }
}
