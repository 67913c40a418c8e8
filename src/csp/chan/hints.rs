//! Lock-free hints for selection and for tests: who waits, and which
//! counterpart is coming back from its last handover.

use std::sync::atomic::Ordering;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use super::{
    Chan, DONE, NOTIFIED, ORPHAN, READ, RECENT, Returning, SLEEPING, WAITING, WATCH, WATCHING,
    WRITE,
};
use crate::csp::lock;
use crate::sys;
use crate::wait;

impl Chan {
    /// How many committed records of direction `dir` wait (tests use it
    /// to order parties).
    pub fn waiting(&self, dir: u32) -> usize {
        (0..self.hwm())
            .filter(|&idx| {
                let r = self.rec(idx);
                r.kind.load(Ordering::Relaxed) == dir
                    && r.state.load(Ordering::Acquire) & !SLEEPING == WAITING
            })
            .count()
            + self.fast().waiting(dir)
    }

    /// Whether a counterpart of `dir` (a writer, for a reader) is *coming
    /// back* from its last handover on this channel (a hint, read without
    /// the lock; see [`Returning`]): a live counterpart's record was
    /// completed (`DONE`) and it has not collected it yet, or one
    /// completed an operation less than [`RECENT`] ago. Fair and priority
    /// selection wait a little for a guard they prefer in this state, so
    /// that a party offering all the time is not passed over merely
    /// because it was still waking up from its previous handover (see
    /// `alternation.rs`).
    pub fn returning(&self, dir: u32) -> Option<Returning> {
        let other = if dir == READ { WRITE } else { READ };
        let done = (0..self.hwm()).any(|idx| {
            let r = self.rec(idx);
            r.kind.load(Ordering::Relaxed) == other
                && r.state.load(Ordering::Acquire) & !SLEEPING == DONE
                && r.owner.load(Ordering::Relaxed) != ORPHAN
                && !lock::holder_gone(&r.held)
        });
        if done {
            return Some(Returning::Collecting);
        }
        let (at, party) = self.last_party(other);
        let at = at.load(Ordering::Relaxed);
        let party = party.load(Ordering::Relaxed);
        let ago = Duration::from_nanos(sys::waitv::monotonic_coarse_ns().saturating_sub(at));
        (at != 0 && ago < RECENT).then_some(Returning::Recent {
            pid: (party >> 32) as i32,
            tid: party as i32,
        })
    }

    /// Notes that this thread, a party of side `kind`, just completed an
    /// operation (a hint for selections, see [`returning`](Self::returning)).
    pub fn handed_over(&self, kind: u32) {
        let (at, party) = self.last_party(kind);
        let me = (u64::from(sys::process::getpid() as u32) << 32)
            | u64::from(sys::process::gettid() as u32);
        party.store(me, Ordering::Relaxed);
        at.store(sys::waitv::monotonic_coarse_ns(), Ordering::Relaxed);
        let cpu = self.last_cpu(kind);
        let mine = (wait::pinned_cpu() + 1) as u32;
        if cpu.load(Ordering::Relaxed) != mine {
            cpu.store(mine, Ordering::Relaxed);
        }
    }

    /// The CPU the party of side `kind` that last completed an operation
    /// is pinned to, plus one (0: not pinned, or none yet).
    pub(super) fn last_cpu(&self, kind: u32) -> &AtomicU32 {
        let h = self.header();
        if kind == READ {
            &h.read_cpu
        } else {
            &h.write_cpu
        }
    }

    /// When a party of side `kind` last completed an operation, and which
    /// (`[pid | tid]`).
    fn last_party(&self, kind: u32) -> (&AtomicU64, &AtomicU64) {
        let h = self.header();
        if kind == READ {
            (&h.read_at, &h.read_party)
        } else {
            (&h.write_at, &h.write_party)
        }
    }

    /// Whether someone other than `owner` watches for the opposite of
    /// `dir` (a hint, read without the lock).
    pub fn has_opposite_watch(&self, dir: u32, owner: u64) -> bool {
        let want = WATCH | if dir == READ { WRITE } else { READ };
        (0..self.hwm()).any(|idx| {
            let r = self.rec(idx);
            r.kind.load(Ordering::Relaxed) == want
                && r.owner.load(Ordering::Relaxed) != owner
                && matches!(
                    r.state.load(Ordering::Acquire) & !SLEEPING,
                    WATCHING | NOTIFIED
                )
        })
    }
}
