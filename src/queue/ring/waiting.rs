//! Waiting on a ring: for data (consumers), for a `get` (producers of a
//! bounded queue), and for every task to be done (`JoinableQueue`). The
//! events themselves are `wait::EventCount`s.

#[cfg(feature = "tokio")]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;

use super::{Ring, unpack};
use crate::wait::{self, Deadline};

/// Index of the producers' CPU in the header's `cpus`…
const PRODUCER: usize = 0;
/// …and of the consumers'.
const CONSUMER: usize = 1;

impl Ring {
    /// Whether the queue looks non-empty.
    fn has_data(&self) -> bool {
        let h = self.header();
        let (g, _) = unpack(h.head.0.load(Ordering::SeqCst));
        let (p, _) = unpack(h.tail.0.load(Ordering::SeqCst));
        g != p
    }

    /// Spins briefly (the adaptive limit of `wait::SHARED`) until the
    /// queue looks non-empty; `false` if it did not, or spinning cannot
    /// help.
    pub(crate) fn spin_data(&self, deadline: Deadline) -> bool {
        let allowed = self.may_spin_beside(PRODUCER);
        self.spins[0].until_if(allowed, || self.has_data(), deadline)
    }

    /// Publishes the CPU this process is pinned to as the producers'
    /// (`put`) or the consumers' (`get`) in the header: a hint for the
    /// other side's spin. A load, and a store only when it changed.
    pub(crate) fn publish_cpu(&self, side: usize) {
        let word = &self.header().cpus.0[side];
        let me = (wait::pinned_cpu() + 1) as u32;
        if word.load(Ordering::Relaxed) != me {
            word.store(me, Ordering::Relaxed);
        }
    }

    /// Whether spinning for the `side` (the producers or the consumers)
    /// can pay: more CPUs than one, and the side not pinned to the CPU
    /// this process is pinned to (see `wait::may_spin_beside`). A process
    /// pinned to one CPU still spins for a peer on another.
    fn may_spin_beside(&self, side: usize) -> bool {
        let peer = self.header().cpus.0[side].load(Ordering::Relaxed) as i32 - 1;
        wait::may_spin_beside(peer)
    }

    /// [`publish_cpu`](Self::publish_cpu) for a `put`.
    pub(crate) fn publish_producer_cpu(&self) {
        self.publish_cpu(PRODUCER);
    }

    /// [`publish_cpu`](Self::publish_cpu) for a `get`.
    pub(crate) fn publish_consumer_cpu(&self) {
        self.publish_cpu(CONSUMER);
    }

    /// Sleeps until the queue looks non-empty, or
    /// [`hangups`](Self::hangups) moves away from `hangups_seen`, or the
    /// deadline passes; `false` only at the deadline. No spinning: call
    /// [`spin_data`](Self::spin_data) first.
    pub(crate) fn sleep_data(&self, deadline: Deadline, hangups_seen: u32) -> bool {
        let h = self.header();
        h.data_event.sleep_until(
            || self.has_data() || h.hangups.0.load(Ordering::SeqCst) != hangups_seen,
            deadline,
        )
    }

    /// The async waiters' flags: `[data, space]` (see `queue/aio.rs`).
    #[cfg(feature = "tokio")]
    pub(crate) fn aio_flags(&self) -> &[AtomicU32; 2] {
        &self.header().aio.0
    }

    /// How many times a process gave up its last producer handle.
    pub(crate) fn hangups(&self) -> u32 {
        // SeqCst: the load half of the handshake in `note_hangup`.
        self.header().hangups.0.load(Ordering::SeqCst)
    }

    /// Tells sleeping consumers that this process holds no producer handle
    /// any more (call after closing its end of the hang-up socket).
    pub(crate) fn note_hangup(&self) {
        let h = self.header();
        // SeqCst: the store half of the waiter handshake (`wait.rs`).
        h.hangups.0.fetch_add(1, Ordering::SeqCst);
        h.data_event.notify();
    }

    /// Waits until some `get` commits after `seen` was read from
    /// [`get_seq`](Self::get_seq) (or the deadline passes).
    pub(crate) fn wait_get(&self, seen: u32, deadline: Deadline) -> bool {
        let h = self.header();
        let ready = || unpack(h.head.0.load(Ordering::SeqCst)).0 != seen;
        ready()
            || self.spins[1].until_if(self.may_spin_beside(CONSUMER), ready, deadline)
            || h.space_event.sleep_until(ready, deadline)
    }

    // ---------------------------------------------------------------
    // Task accounting (JoinableQueue)
    // ---------------------------------------------------------------

    /// Counts one finished task; `false` if every message ever put is
    /// already counted.
    pub(crate) fn task_done(&self) -> bool {
        let h = self.header();
        let mut done = h.done.0.load(Ordering::SeqCst);
        loop {
            let put = unpack(h.tail.0.load(Ordering::SeqCst)).0;
            if done == put {
                return false;
            }
            match h.done.0.compare_exchange_weak(
                done,
                done.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(d) => done = d,
            }
        }
        if done.wrapping_add(1) == unpack(h.tail.0.load(Ordering::SeqCst)).0 {
            h.join_event.notify();
        }
        true
    }

    /// Messages put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u32 {
        let h = self.header();
        let done = h.done.0.load(Ordering::SeqCst);
        unpack(h.tail.0.load(Ordering::SeqCst)).0.wrapping_sub(done)
    }

    /// Waits until every message put is marked done.
    pub(crate) fn wait_all_done(&self, deadline: Deadline) -> bool {
        self.header()
            .join_event
            .wait_until(|| self.unfinished() == 0, deadline, &self.spins[2])
    }
}
