//! The direct hand-over between lightweight processes: a rendezvous
//! channel that only lightweight processes of this OS process have used
//! carries each message from writer to reader without the shared-memory
//! protocol of `chan/` (no channel lock, no record, no futex table).
//!
//! # Modes
//!
//! Every channel has a [`Fast`] beside its shared memory. A rendezvous
//! channel created here starts `FAST`; a buffered one, or one opened from
//! another process, starts `GENERAL`. `FAST` turns `GENERAL` for good (the
//! *promotion*, [`Fast::promote`]) the first time anything but a plain
//! read or write of a lightweight process touches the channel: an
//! operation of a thread, an alternation (every guard kind goes through
//! `chan/ops.rs`), an async operation, or an end leaving for another
//! process (`End::serialize`). Promotion wakes every party parked here
//! with `RETRY`: each does its operation again on the general path, where
//! the newcomer meets it. So the general protocol is never bypassed once
//! anyone else can see the channel, and rendezvous, any-to-any,
//! poison/retire and alternation keep their meaning.
//!
//! # The hand-over
//!
//! Under the channel's local lock (a process-private mutex, never held
//! across a suspension) a party either finds a parked counterpart in the
//! queue (all waiters are of one side: a rendezvous never leaves a reader
//! and a writer both waiting) and completes with it, or queues its own
//! [`Node`] and parks (`sched::park_current`). A writer finding a reader
//! swaps its encoded message into the reader's node; a reader finding a
//! writer swaps the writer's message out. Then the finder sets the
//! node's outcome (`DONE`, Release) and unparks its owner, which reads its
//! outcome (Acquire) without the lock. The messages are the crate's codec bytes in
//! buffers that circulate between nodes, and nodes come from a per-thread
//! pool: no allocation per message once warm.
//!
//! | `Node::outcome` | meaning | set by |
//! |---|---|---|
//! | `WAITING` | queued, parked | the owner, under the lock, before queueing |
//! | `DONE` | the counterpart completed the operation | the counterpart, under the lock, after dequeueing it |
//! | `RETRY` | promoted: do it again on the general path | the promoter, under the lock, after dequeueing it |
//! | `ABORTED` | poisoned or retired | the poisoner/retirer, under the lock, after dequeueing it |
//!
//! A node's message and unparker are touched only by the lock holder
//! while the node is queued, and only by its owner otherwise (after it
//! saw an outcome other than `WAITING`, or before it queued the node).
//!
//! Poison and retirement set the channel's flag first, then take the lock
//! and abort what is queued: an operation under the lock either sees the
//! flag or is queued before the abort, which finds it.

#![allow(unsafe_code)]

use std::cell::{RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{self as chan, Chan, OpError, op_error};
use crate::codec;
use crate::csp::error::ChannelError;
use crate::csp::light::{self as sched, Unparker};
use crate::sys;

const FAST: u32 = 0;
const GENERAL: u32 = 1;

const WAITING: u32 = 0;
const DONE: u32 = 1;
const RETRY: u32 = 2;
const ABORTED: u32 = 3;

/// A parked party: its outcome, its message (for a writer: the one it
/// offers; for a reader: the one it got), and how to wake it.
struct Node {
    outcome: AtomicU32,
    msg: UnsafeCell<Vec<u8>>,
    unparker: UnsafeCell<Option<Unparker>>,
}

// SAFETY: the cells are touched by one party at a time, handed over
// under the channel's local lock or by the Release/Acquire `outcome` (see
// the module docs).
unsafe impl Sync for Node {}

thread_local! {
    /// Nodes of finished operations, for the next ones.
    static POOL: RefCell<Vec<Arc<Node>>> = const { RefCell::new(Vec::new()) };
}

/// Nodes kept per thread.
const POOL_MAX: usize = 64;

fn node() -> Arc<Node> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| {
        Arc::new(Node {
            outcome: AtomicU32::new(WAITING),
            msg: UnsafeCell::new(Vec::new()),
            unparker: UnsafeCell::new(None),
        })
    })
}

fn recycle(n: Arc<Node>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(n);
        }
    });
}

/// The parked parties of one channel: all readers or all writers.
struct Queue {
    side: u32,
    nodes: VecDeque<Arc<Node>>,
    /// Poisoned or retired (copied from the channel's flags by
    /// [`Fast::abort`], so that an operation here reads no shared memory).
    closed: Option<OpError>,
}

/// The process-local side of a channel: its mode and its parked parties.
pub(crate) struct Fast {
    mode: AtomicU32,
    queue: Mutex<Queue>,
    /// Parties woken by the promotion that have not yet posted on the
    /// general path (the promoter waits for them, see [`Migration`]).
    migrating: AtomicU32,
}

impl Fast {
    /// A fast channel (`fast`: a rendezvous channel created here), or one
    /// that always takes the general path.
    pub(crate) fn new(fast: bool) -> Fast {
        Fast {
            mode: AtomicU32::new(if fast { FAST } else { GENERAL }),
            queue: Mutex::new(Queue {
                side: chan::READ,
                nodes: VecDeque::new(),
                closed: None,
            }),
            migrating: AtomicU32::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_fast(&self) -> bool {
        self.mode.load(Ordering::Acquire) == FAST
    }

    /// Turns the channel general for good; the parties parked here do
    /// their operations again on the general path, and this returns once
    /// each has posted there (so that the caller, say an alternation,
    /// sees them as it would have seen them waiting).
    pub(crate) fn promote(&self) {
        if !self.is_fast() {
            return;
        }
        let mut q = self.lock();
        if !self.is_fast() {
            return;
        }
        let woken = Self::finish_all(&mut q, RETRY);
        self.migrating
            .fetch_add(q_len_u32(woken.len()), Ordering::SeqCst);
        self.mode.store(GENERAL, Ordering::Release);
        drop(q);
        woken.into_iter().for_each(Unparker::unpark);
        loop {
            let m = self.migrating.load(Ordering::SeqCst);
            if m == 0 {
                break;
            }
            sys::futex::wait(&self.migrating, m, None);
        }
    }

    /// One party woken by the promotion has posted on the general path.
    fn migrated(&self) {
        self.migrating.fetch_sub(1, Ordering::SeqCst);
        sys::futex::wake(&self.migrating, u32::MAX >> 1);
    }

    /// Aborts every parked party, and every later operation here, with
    /// `why` (after poison or retirement set the channel's flag; poison
    /// wins over retirement).
    pub(crate) fn abort(&self, why: OpError) {
        if !self.is_fast() {
            return;
        }
        let mut q = self.lock();
        if q.closed.is_none() || why == OpError::Poisoned {
            q.closed = Some(why);
        }
        let woken = Self::finish_all(&mut q, ABORTED);
        drop(q);
        woken.into_iter().for_each(Unparker::unpark);
    }

    fn finish_all(q: &mut Queue, outcome: u32) -> Vec<Unparker> {
        q.nodes
            .drain(..)
            .filter_map(|n| {
                // SAFETY: queued, so ours under the lock (module docs).
                let u = unsafe { (*n.unparker.get()).take() };
                n.outcome.store(outcome, Ordering::Release);
                u
            })
            .collect()
    }

    /// How many parties of side `dir` are parked here (a hint for tests).
    pub(crate) fn waiting(&self, dir: u32) -> usize {
        if !self.is_fast() {
            return 0;
        }
        let q = self.lock();
        if q.side == dir { q.nodes.len() } else { 0 }
    }
}

fn q_len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A party's move from the hand-over path to the general one, after a
/// promotion: done (the promoter told) once the party has posted its
/// record there or completed, or at the latest when the operation ends.
pub(crate) struct Migration<'a>(Option<&'a Fast>);

impl Migration<'_> {
    /// No move: an operation that started on the general path.
    pub(crate) fn none() -> Self {
        Migration(None)
    }

    /// The party is visible on the general path now.
    pub(crate) fn done(&mut self) {
        if let Some(f) = self.0.take() {
            f.migrated();
        }
    }
}

impl Drop for Migration<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

/// What the hand-over path made of an operation.
pub(crate) enum Path<'a, R> {
    /// It completed (or failed) here.
    Done(R),
    /// The general path must do it (`Migration`: the party was parked here
    /// when the channel was promoted).
    General(Migration<'a>),
}

/// Takes the first parked party of side `dir`, if any: its node and its
/// unparker (to use once the lock is released).
fn take_counterpart(q: &mut Queue, dir: u32) -> Option<(Arc<Node>, Option<Unparker>)> {
    if q.side != dir {
        return None;
    }
    let n = q.nodes.pop_front()?;
    // SAFETY: queued until just now, so ours under the lock.
    let u = unsafe { (*n.unparker.get()).take() };
    Some((n, u))
}

/// Parks `node` as a party of side `dir` (queued with the lock `q`, which
/// this releases) until an outcome other than `WAITING` or `deadline`;
/// `Err(Timeout)` (and dequeued) if the deadline came first.
#[inline(never)] // one small frame parked, whatever the message type
fn wait<'a>(
    fast: &'a Fast,
    mut q: MutexGuard<'a, Queue>,
    node: &Arc<Node>,
    dir: u32,
    deadline: Option<Instant>,
) -> Result<u32, OpError> {
    node.outcome.store(WAITING, Ordering::Relaxed);
    q.side = dir;
    q.nodes.push_back(node.clone());
    loop {
        sched::park_current(deadline, |u| {
            // SAFETY: queued and the lock held: ours.
            unsafe { *node.unparker.get() = Some(u) };
            drop(q);
        });
        let o = node.outcome.load(Ordering::Acquire);
        if o != WAITING {
            return Ok(o);
        }
        q = fast.lock();
        let o = node.outcome.load(Ordering::Acquire);
        if o != WAITING {
            return Ok(o);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            q.nodes.retain(|n| !Arc::ptr_eq(n, node));
            // SAFETY: dequeued under the lock: ours again.
            unsafe { *node.unparker.get() = None };
            return Err(OpError::Timeout);
        }
    }
}

/// The error of a party aborted by poison or retirement.
fn aborted(fast: &Fast) -> ChannelError {
    op_error(fast.lock().closed.unwrap_or(OpError::Poisoned))
}

/// Writes `value` by direct hand-over when the caller is a lightweight
/// process and `chan` is fast; `None` when the general path must do it
/// (it reports encoding errors and large messages too).
pub(crate) fn write<'a, T: Serialize>(
    chan: &'a Chan,
    value: &T,
    deadline: Option<Instant>,
) -> Path<'a, Result<(), ChannelError>> {
    if !chan.fast().is_fast() || !sched::on_task() {
        return Path::General(Migration::none());
    }
    let mine = node();
    // SAFETY: not queued: ours.
    let buf = unsafe { &mut *mine.msg.get() };
    if !encode(chan, value, buf) {
        recycle(mine);
        return Path::General(Migration::none());
    }
    let fast = chan.fast();
    let mut q = fast.lock();
    if !fast.is_fast() {
        drop(q);
        recycle(mine);
        return Path::General(Migration::none());
    }
    if let Some(e) = q.closed {
        drop(q);
        recycle(mine);
        return Path::Done(Err(op_error(e)));
    }
    if let Some((reader, u)) = take_counterpart(&mut q, chan::READ) {
        // SAFETY: dequeued under the lock: ours until its outcome is set;
        // `buf` is our own node's.
        std::mem::swap(buf, unsafe { &mut *reader.msg.get() });
        reader.outcome.store(DONE, Ordering::Release);
        drop(q);
        if let Some(u) = u {
            u.unpark();
        }
        recycle(mine);
        return Path::Done(Ok(()));
    }
    let r = match wait(fast, q, &mine, chan::WRITE, deadline) {
        Ok(DONE) => Path::Done(Ok(())),
        Ok(ABORTED) => Path::Done(Err(aborted(fast))),
        Ok(_) => Path::General(Migration(Some(chan.fast()))),
        Err(e) => Path::Done(Err(op_error(e))),
    };
    recycle(mine);
    r
}

/// Reads by direct hand-over when the caller is a lightweight process and
/// `chan` is fast; `None` when the general path must do it.
pub(crate) fn read<T: DeserializeOwned>(
    chan: &Chan,
    deadline: Option<Instant>,
) -> Path<'_, Result<T, ChannelError>> {
    if !chan.fast().is_fast() || !sched::on_task() {
        return Path::General(Migration::none());
    }
    let fast = chan.fast();
    let mine = node();
    let q = fast.lock();
    if !fast.is_fast() {
        drop(q);
        recycle(mine);
        return Path::General(Migration::none());
    }
    if let Some(e) = q.closed {
        drop(q);
        recycle(mine);
        return Path::Done(Err(op_error(e)));
    }
    let mut q = q;
    let got = if let Some((writer, u)) = take_counterpart(&mut q, chan::WRITE) {
        // SAFETY: dequeued under the lock: ours until its outcome is set;
        // our own node is not queued.
        std::mem::swap(unsafe { &mut *mine.msg.get() }, unsafe {
            &mut *writer.msg.get()
        });
        writer.outcome.store(DONE, Ordering::Release);
        drop(q);
        if let Some(u) = u {
            u.unpark();
        }
        Ok(DONE)
    } else {
        wait(fast, q, &mine, chan::READ, deadline)
    };
    let r = match got {
        Ok(DONE) => {
            // SAFETY: completed: ours again.
            let bytes = unsafe { &*mine.msg.get() };
            Path::Done(decode(bytes))
        }
        Ok(ABORTED) => Path::Done(Err(aborted(fast))),
        Ok(_) => Path::General(Migration(Some(chan.fast()))),
        Err(e) => Path::Done(Err(op_error(e))),
    };
    recycle(mine);
    r
}

/// Decodes a message taken over.
#[inline(never)] // keeps the deserializer's state out of a reader's parked frame
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ChannelError> {
    codec::decode_whole(bytes).map_err(ChannelError::from)
}

/// Encodes `value` into `buf` (the crate's codec bytes: a value that carries
/// descriptors does not encode here);
/// false if it does not encode or is larger than the channel's slot (the
/// general path then reports or spills it).
#[inline(never)] // keeps the serializer's state out of a writer's parked frame
fn encode<T: Serialize>(chan: &Chan, value: &T, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    // The general path's limits, less its one byte counting descriptors.
    let limit = chan
        .slot()
        .min(usize::try_from(chan.max_message()).unwrap_or(usize::MAX))
        .saturating_sub(1);
    codec::encode_into(value, |d| {
        buf.extend_from_slice(d);
        buf.len() <= limit
    })
    .is_ok()
}
