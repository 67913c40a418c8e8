//! Waiting: on a posted record, for a free record, then withdrawing or
//! finishing the operation.

use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use super::fast::Migration;
use super::{
    ABORTED, Attempt, Chan, CrashPoint, DONE, FREE, OpError, READ, SLEEPING, SLICE, TAKEN, WAITING,
    WRITE, Withdrawn, ask_to_be_woken, crash_point,
};
use crate::csp::spill;
use crate::sys::futex;
use crate::wait::{self, Backoff};

impl Chan {
    /// How long a party sleeps before it looks for dead parties: one
    /// [`SLICE`] over shared memory, where a process may be killed alone;
    /// no limit in a channel of one process's threads, where no party
    /// dies without the whole process (an untimed sleep also saves the
    /// kernel timer each sleep would arm).
    pub(crate) fn slice(&self) -> Option<Duration> {
        self.mem.fd().map(|_| SLICE)
    }

    /// Waits until record `idx` leaves state `expected`, for at most one
    /// [`SLICE`]; returns the new state (without `SLEEPING`), `Err(true)`
    /// at the deadline, `Err(false)` when the slice ended first.
    #[inline(never)] // its frame stays small while a lightweight process parks
    pub(super) fn wait_rec(
        &self,
        idx: u32,
        expected: u32,
        deadline: Option<Instant>,
    ) -> Result<u32, bool> {
        let st = &self.rec(idx).state;
        if let Some(s) = self.spin_rec(idx, expected) {
            return Ok(s);
        }
        crash_point(CrashPoint::Waiting);
        let slice_end = self.slice().map(|s| Instant::now() + s);
        loop {
            let s = st.load(Ordering::Acquire);
            if s & !SLEEPING != expected {
                return Ok(s & !SLEEPING);
            }
            if !ask_to_be_woken(st, s) {
                continue;
            }
            // Poisoned after our record was posted but before the
            // poisoner's scan could see it: do not sleep (see `poison`).
            if self.poisoned_now() {
                return Ok(ABORTED);
            }
            let end = match (deadline, slice_end) {
                (Some(d), Some(e)) => Some(d.min(e)),
                (d, e) => d.or(e),
            };
            // The clock only for a bounded sleep (an untimed one, between
            // one process's threads or lightweight processes, needs none).
            let left = match end {
                None => None,
                Some(end) => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(true);
                    }
                    if slice_end.is_some_and(|e| now >= e) {
                        return Err(false);
                    }
                    Some(end - now)
                }
            };
            futex::wait(st, expected | SLEEPING, left);
        }
    }

    /// Spins a while for record `idx` to leave state `expected`; its new
    /// state, if it did. It spins when the counterpart that last completed
    /// an operation here runs elsewhere (`Backoff::beside`): pinned to
    /// one CPU, it still spins for a counterpart pinned to another. (A
    /// frame of its own: the spinner's state is not kept in the frame of
    /// a lightweight process that then parks.)
    #[inline(never)]
    pub(crate) fn spin_rec(&self, idx: u32, expected: u32) -> Option<u32> {
        let r = self.rec(idx);
        let st = &r.state;
        let other = if r.kind.load(Ordering::Relaxed) & READ != 0 {
            WRITE
        } else {
            READ
        };
        let peer = self.last_cpu(other).load(Ordering::Relaxed);
        let mut backoff = Backoff::beside(&wait::CSP, peer);
        loop {
            let s = st.load(Ordering::Acquire) & !SLEEPING;
            if s != expected {
                return Some(s);
            }
            if !backoff.snooze() {
                return None;
            }
        }
    }

    /// Sleeps until a record is released (or `deadline`, or one
    /// [`SLICE`], after which it looks for dead owners' records).
    pub(super) fn wait_for_room(
        &self,
        seen: u32,
        deadline: Option<Instant>,
    ) -> Result<(), OpError> {
        let h = self.header();
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        let timeout = match (left, self.slice()) {
            (Some(l), Some(s)) => Some(l.min(s)),
            (l, s) => l.or(s),
        };
        let woke = if timeout.is_some_and(|t| t.is_zero()) {
            futex::Wake::TimedOut
        } else {
            futex::wait(&h.freed, seen, timeout)
        };
        h.free_sleepers.fetch_sub(1, Ordering::SeqCst);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(OpError::Timeout);
        }
        if woke == futex::Wake::TimedOut {
            self.heal();
        }
        Ok(())
    }

    /// Releases record `idx` (owner only): `→ FREE` (`→ TAKEN` after it
    /// was completed), then its mutex, waking whoever waits for a free
    /// record.
    pub fn release(&self, idx: u32) {
        self.release_as(idx, FREE);
    }

    pub(super) fn release_as(&self, idx: u32, state: u32) {
        let h = self.header();
        let r = self.rec(idx);
        // Release: our reads of the record happen-before its reuse.
        r.state.store(state, Ordering::Release);
        let _ = r.held.unlock();
        h.freed.fetch_add(1, Ordering::SeqCst);
        if h.free_sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&h.freed);
        }
    }

    /// Posts `kind` (a committed READ/WRITE) waiting for a free record
    /// when all are in use; `None` when it completed at once instead.
    pub(super) fn post_blocking(
        &self,
        kind: u32,
        data: Option<&[u8]>,
        deadline: Option<Instant>,
        mig: &mut Migration<'_>,
    ) -> Result<Result<u32, Attempt>, OpError> {
        loop {
            let mut g = self.lock()?;
            let a = match data {
                Some(d) => self.try_write_locked(&mut g, d, 0)?,
                None => self.try_read_locked(&mut g, 0)?,
            };
            if let Attempt::Done(v) = a {
                mig.done();
                return Ok(Err(Attempt::Done(v)));
            }
            let mut idx = self.alloc(kind, 0, data);
            if idx.is_none() {
                // Every record is in use: some may be dead parties'.
                if self.sweep() && kind == READ {
                    continue;
                }
                idx = self.alloc(kind, 0, data);
            }
            if let Some(idx) = idx {
                // Tell watching alternations of the other side.
                self.poke(&mut g, if kind == READ { WRITE } else { READ }, 0);
                drop(g);
                mig.done();
                return Ok(Ok(idx));
            }
            let h = self.header();
            h.free_sleepers.fetch_add(1, Ordering::SeqCst);
            let seen = h.freed.load(Ordering::SeqCst);
            drop(g);
            // Waiting for room like any other party: nobody need wait
            // for this one's move any longer.
            mig.done();
            self.wait_for_room(seen, deadline)?;
        }
    }

    /// Withdraws committed record `idx` (owner only, lock-free): exactly
    /// one of this CAS and a completer's wins.
    #[inline(never)] // not in the frame of `finish`, parked while it waits
    pub fn withdraw(&self, idx: u32) -> Withdrawn {
        let r = self.rec(idx);
        let mut s = r.state.load(Ordering::Acquire);
        loop {
            match s & !SLEEPING {
                WAITING => {
                    match r
                        .state
                        .compare_exchange(s, FREE, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => {
                            let _ = r.held.unlock();
                            let h = self.header();
                            h.freed.fetch_add(1, Ordering::SeqCst);
                            if h.free_sleepers.load(Ordering::SeqCst) > 0 {
                                futex::wake_all(&h.freed);
                            }
                            return Withdrawn::Gone;
                        }
                        Err(now) => s = now,
                    }
                }
                DONE => {
                    let (msg, name) = if r.kind.load(Ordering::Relaxed) == READ {
                        crash_point(CrashPoint::DoneUnread);
                        let (m, name) = spill::claim(
                            self.copy_out(self.rec_data(idx), r.len.load(Ordering::Relaxed)),
                        );
                        (Some(m), name)
                    } else {
                        (None, None)
                    };
                    self.release_as(idx, TAKEN);
                    spill::unlink(name);
                    return Withdrawn::Completed(msg);
                }
                _ => {
                    self.release(idx);
                    return Withdrawn::Aborted;
                }
            }
        }
    }

    /// Waits for committed record `idx` to complete. `Ok(Err(()))`: the
    /// record was withdrawn because an orphan message may be waiting for
    /// this reader; post again.
    pub(super) fn finish(
        &self,
        idx: u32,
        deadline: Option<Instant>,
    ) -> Result<Result<Option<Vec<u8>>, ()>, OpError> {
        loop {
            match self.wait_rec(idx, WAITING, deadline) {
                Err(true) => {
                    return match self.withdraw(idx) {
                        Withdrawn::Gone => Err(OpError::Timeout),
                        Withdrawn::Completed(v) => Ok(Ok(v)),
                        Withdrawn::Aborted => Err(self.abort_error()),
                    };
                }
                Err(false) => {
                    let reader = self.rec(idx).kind.load(Ordering::Relaxed) == READ;
                    if self.heal() && reader {
                        return match self.withdraw(idx) {
                            Withdrawn::Gone => Ok(Err(())),
                            Withdrawn::Completed(v) => Ok(Ok(v)),
                            Withdrawn::Aborted => Err(self.abort_error()),
                        };
                    }
                }
                Ok(_) => {
                    return match self.withdraw(idx) {
                        Withdrawn::Completed(v) => Ok(Ok(v)),
                        Withdrawn::Gone | Withdrawn::Aborted => Err(self.abort_error()),
                    };
                }
            }
        }
    }
}
