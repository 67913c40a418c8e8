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
//! # Confined to one worker thread
//!
//! A fast channel belongs to the worker thread of the first lightweight
//! process that uses it (`Fast::owner`, claimed by CAS). Its queue of
//! parked parties is then touched only on that thread, one process at a
//! time, never across a suspension: no lock, no atomic read-modify-write
//! per message. A lightweight process of another worker that uses the
//! channel promotes it (as a thread would). Promotion and abort asked on
//! another thread run on the owner's thread (`sched::run_on`, between
//! two processes) while the asker waits for them.
//!
//! | `Fast::owner` | meaning | set by |
//! |---|---|---|
//! | `UNOWNED` | fast, used by nobody yet | creation |
//! | worker + 1 | fast, owned by that worker | the first user, by CAS from `UNOWNED` |
//! | `GENERAL` | general for good | creation, the owner (promotion), or a promoter by CAS from `UNOWNED` |
//!
//! # The hand-over
//!
//! A party either finds a parked counterpart in the queue (all waiters
//! are of one side: a rendezvous never leaves a reader and a writer both
//! waiting) and completes with it, or queues its own [`Node`] and parks
//! (`sched::park_current`). A writer finding a reader swaps its encoded
//! message into the reader's node; a reader finding a writer swaps the
//! writer's message out. Then the finder sets the node's outcome (`DONE`)
//! and unparks its owner. A message that is one primitive value (an
//! integer, a float, a `bool`, a `char`, a newtype of one) travels as the
//! value itself (`prim.rs`: no encoding, no decoding); any other is the
//! crate's codec bytes in buffers that circulate between nodes. Nodes (on
//! the heap: a parked stack may be moved aside) come from a per-thread
//! pool: no allocation per message once warm.
//!
//! The path from a process's `read`/`write` down to its switch
//! (`sched::park_current`) is inlined into the caller: once a task is
//! resumed, every return between its switch and its body mispredicts
//! (the CPU's return stack holds the worker's addresses), and the
//! parked stack is smaller with fewer frames.
//!
//! | `Node::outcome` | meaning | set by |
//! |---|---|---|
//! | `WAITING` | queued, parked | the owner, before queueing |
//! | `DONE` | the counterpart completed the operation | the counterpart, after dequeueing it |
//! | `RETRY` | promoted: do it again on the general path | the promoter, after dequeueing it |
//! | `ABORTED` | poisoned or retired | the poisoner/retirer, after dequeueing it |
//!
//! A queued node belongs to the party that dequeues it (its owner is
//! parked until then, or dequeues it itself at its deadline).
//!
//! Poison and retirement set the channel's flag first, then abort what is
//! queued on the owner's thread (and later operations there, through
//! `Queue::closed`). A claim checks the flags after its CAS, an abort
//! looks at the owner after setting them (SeqCst fences on both sides):
//! one of the two sees the other.

#![allow(unsafe_code)]

use std::cell::{Cell, UnsafeCell};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{self as chan, Chan, OpError, op_error};
use crate::codec;
use crate::codec::prim::{self, Prim};
use crate::csp::error::ChannelError;
use crate::csp::light::{self as sched, Completion, Unparker};
use crate::sys;

const UNOWNED: u32 = 0;
const GENERAL: u32 = u32::MAX;

const WAITING: u32 = 0;
const DONE: u32 = 1;
const RETRY: u32 = 2;
const ABORTED: u32 = 3;

/// A parked party: its outcome, its message (for a writer: the one it
/// offers; for a reader: the one it got), and how to wake it.
#[derive(Default)]
struct Node {
    outcome: Cell<u32>,
    /// The message when it is one primitive value (`prim.rs`), else
    /// `Empty` and the message is in `msg`.
    prim: Cell<Prim>,
    msg: Cell<Vec<u8>>,
    unparker: Cell<Option<Unparker>>,
    /// The next node of the thread's pool, while in it.
    next: Cell<Option<NonNull<Node>>>,
}

// The pool of nodes of finished operations, for the next ones: a list
// through `Node::next` (nodes are boxed: a queued node must not move).
// Only worker threads take the hand-over path, and they never end: the
// pool has no destructor, so that reaching it is a plain thread-local
// load (it would check the thread-local's state at each use otherwise).
thread_local! {
    static POOL: Cell<Option<NonNull<Node>>> = const { Cell::new(None) };
    static POOLED: Cell<usize> = const { Cell::new(0) };
}

/// Nodes kept per thread.
const POOL_MAX: usize = 64;

#[inline]
fn node() -> Box<Node> {
    match POOL.get() {
        Some(p) => {
            // SAFETY: a pooled node came from `Box::into_raw` in `recycle`
            // and is owned by the pool alone until taken here.
            let n = unsafe { Box::from_raw(p.as_ptr()) };
            POOL.set(n.next.take());
            POOLED.set(POOLED.get() - 1);
            n
        }
        None => Box::default(),
    }
}

#[inline]
fn recycle(n: Box<Node>) {
    let k = POOLED.get();
    if k < POOL_MAX {
        n.next.set(POOL.get());
        // SAFETY: `Box::into_raw` never returns null.
        POOL.set(Some(unsafe { NonNull::new_unchecked(Box::into_raw(n)) }));
        POOLED.set(k + 1);
    }
}

/// The parked parties of one channel: all readers or all writers.
struct Queue {
    side: u32,
    /// Nodes of parked parties (each alive until dequeued: module docs).
    nodes: VecDeque<*const Node>,
    /// Poisoned or retired (copied from the channel's flags, so that an
    /// operation here reads no shared memory).
    closed: Option<OpError>,
}

/// The process-local side of a channel: its mode and owner, and its
/// parked parties.
pub(crate) struct Fast {
    owner: AtomicU32,
    /// Touched only on the owner's thread (module docs).
    queue: UnsafeCell<Queue>,
    /// The queue's side and length (`len << 2 | side`), for
    /// [`Fast::waiting`] on any thread.
    parked: AtomicU32,
    /// Parties woken by the promotion that have not yet posted on the
    /// general path (the promoter waits for them, see [`Migration`]).
    migrating: AtomicU32,
}

// SAFETY: `queue` (and the nodes it points to) is touched only on the
// owner worker's thread (module docs); the rest is atomic.
unsafe impl Send for Fast {}
// SAFETY: as above.
unsafe impl Sync for Fast {}
// A panic cannot leave the queue half-changed: it is changed only in
// short closures that call nothing that panics but the allocator.
impl std::panic::RefUnwindSafe for Fast {}

impl Fast {
    /// A fast channel (`fast`: a rendezvous channel created here), or one
    /// that always takes the general path.
    pub(crate) fn new(fast: bool) -> Fast {
        Fast {
            owner: AtomicU32::new(if fast { UNOWNED } else { GENERAL }),
            queue: UnsafeCell::new(Queue {
                side: chan::READ,
                nodes: VecDeque::new(),
                closed: None,
            }),
            parked: AtomicU32::new(0),
            migrating: AtomicU32::new(0),
        }
    }

    /// Runs `f` on the queue.
    ///
    /// # Safety
    /// Only on the owner's thread, and `f` neither suspends nor comes
    /// back here.
    #[inline]
    unsafe fn with_queue<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R {
        // SAFETY: the caller's contract: nothing else touches the queue
        // meanwhile.
        let q = unsafe { &mut *self.queue.get() };
        let r = f(q);
        let len = u32::try_from(q.nodes.len()).unwrap_or(u32::MAX >> 2);
        self.parked.store(len << 2 | q.side, Ordering::Relaxed);
        r
    }

    /// Turns the channel general for good; the parties parked here do
    /// their operations again on the general path, and this returns once
    /// each has posted there (so that the caller, say an alternation,
    /// sees them as it would have seen them waiting).
    pub(crate) fn promote(&self) {
        loop {
            match self.owner.load(Ordering::Acquire) {
                GENERAL => return,
                UNOWNED => {
                    if self
                        .owner
                        .compare_exchange(UNOWNED, GENERAL, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return;
                    }
                }
                o => {
                    self.on_owner(o as usize - 1, Self::promote_here);
                    break;
                }
            }
        }
        loop {
            let m = self.migrating.load(Ordering::SeqCst);
            if m == 0 {
                break;
            }
            sys::futex::wait(&self.migrating, m, None);
        }
    }

    /// Runs `f` on the thread of worker `w` (the owner), waiting for it.
    fn on_owner(&self, w: usize, f: fn(&Fast, usize)) {
        if sched::thread_worker() == Some(w) {
            f(self, w);
            return;
        }
        let done: std::sync::Arc<Completion<()>> = Completion::new();
        let d = done.clone();
        let me = self as *const Fast as usize;
        sched::run_on(
            w,
            Box::new(move || {
                // SAFETY: the asker keeps `self` alive: it waits below
                // until this ran.
                f(unsafe { &*(me as *const Fast) }, w);
                d.set(());
            }),
        );
        done.take();
    }

    /// The promotion, on the owner's thread (`w`).
    fn promote_here(&self, w: usize) {
        if self.owner.load(Ordering::Relaxed) != tag(w) {
            return;
        }
        // SAFETY: on the owner's thread, between two processes (or in
        // the one running).
        let woken = unsafe { self.with_queue(|q| Self::finish_all(q, RETRY)) };
        self.migrating.fetch_add(
            u32::try_from(woken.len()).unwrap_or(u32::MAX),
            Ordering::SeqCst,
        );
        self.owner.store(GENERAL, Ordering::Release);
        woken.into_iter().for_each(Unparker::unpark);
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
        // Pairs with the fence of `claim`: it sees the flag, or this sees
        // its owner.
        fence(Ordering::SeqCst);
        match self.owner.load(Ordering::Acquire) {
            GENERAL | UNOWNED => {}
            o => {
                let f: fn(&Fast, usize) = match why {
                    OpError::Poisoned => |f, w| f.abort_here(w, OpError::Poisoned),
                    _ => |f, w| f.abort_here(w, OpError::Retired),
                };
                self.on_owner(o as usize - 1, f);
            }
        }
    }

    /// The abort, on the owner's thread (`w`).
    fn abort_here(&self, w: usize, why: OpError) {
        if self.owner.load(Ordering::Relaxed) != tag(w) {
            return;
        }
        // SAFETY: on the owner's thread, between two processes (or in
        // the one running).
        let woken = unsafe {
            self.with_queue(|q| {
                if q.closed.is_none() || why == OpError::Poisoned {
                    q.closed = Some(why);
                }
                Self::finish_all(q, ABORTED)
            })
        };
        woken.into_iter().for_each(Unparker::unpark);
    }

    fn finish_all(q: &mut Queue, outcome: u32) -> Vec<Unparker> {
        q.nodes
            .drain(..)
            .filter_map(|n| {
                // SAFETY: queued, so alive, and ours to finish (module docs).
                let n = unsafe { &*n };
                n.outcome.set(outcome);
                n.unparker.take()
            })
            .collect()
    }

    /// How many parties of side `dir` are parked here (a hint for tests).
    pub(crate) fn waiting(&self, dir: u32) -> usize {
        if self.owner.load(Ordering::Acquire) == GENERAL {
            return 0;
        }
        let p = self.parked.load(Ordering::Relaxed);
        if p & 3 == dir { (p >> 2) as usize } else { 0 }
    }
}

/// The owner word of worker `w` (one CPU each: far below `GENERAL`).
#[inline]
fn tag(w: usize) -> u32 {
    u32::try_from(w).map_or(GENERAL, |w| w + 1)
}

/// Whether the calling code may take the hand-over path on `chan`: it is
/// a lightweight process, and the channel is fast and owned by its
/// worker (claimed now if nobody owned it). A process of another worker
/// promotes the channel.
///
/// Inlined into the caller (a process's `read`/`write`) for its common
/// case, a channel its worker owns already.
#[inline(always)]
fn claim(chan: &Chan) -> bool {
    let Some(w) = sched::current_worker() else {
        return false;
    };
    let me = tag(w);
    chan.fast().owner.load(Ordering::Relaxed) == me || claim_slow(chan, me)
}

/// [`claim`] of a channel its worker does not own yet (owner tag `me`).
#[inline(never)]
fn claim_slow(chan: &Chan, me: u32) -> bool {
    let fast = chan.fast();
    let mut o = fast.owner.load(Ordering::Relaxed);
    if o == me {
        return true;
    }
    if o == UNOWNED {
        match fast
            .owner
            .compare_exchange(UNOWNED, me, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // Pairs with the fence of `abort`: poison or retirement
                // before the claim saw no owner, so the flags tell.
                fence(Ordering::SeqCst);
                let closed = if chan.is_poisoned() {
                    Some(OpError::Poisoned)
                } else if chan.is_retired() {
                    Some(OpError::Retired)
                } else {
                    None
                };
                if closed.is_some() {
                    // SAFETY: owned by this thread now; not suspending.
                    unsafe { fast.with_queue(|q| q.closed = closed) };
                }
                return true;
            }
            Err(now) => o = now,
        }
    }
    if o != me && o != GENERAL {
        fast.promote();
    }
    o == me
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

/// The first parked counterpart of side `dir`, left queued, or the
/// channel's closure.
///
/// # Safety
/// On the owner's thread.
#[inline]
unsafe fn peek(fast: &Fast, dir: u32) -> Result<Option<&Node>, OpError> {
    // SAFETY: the caller's contract; no suspension here.
    let n = unsafe {
        fast.with_queue(|q| match q.closed {
            Some(e) => Err(e),
            None if q.side == dir => Ok(q.nodes.front().copied()),
            None => Ok(None),
        })
    }?;
    // SAFETY: queued, so alive until dequeued and finished (module docs).
    Ok(n.map(|n| unsafe { &*n }))
}

/// Dequeues the counterpart `n` that [`peek`] returned, finishes it as
/// done and wakes it (it runs once the caller suspends: until then its
/// node is still the caller's to read).
///
/// # Safety
/// On the owner's thread, `n` at the head of the queue.
#[inline]
unsafe fn complete(fast: &Fast, n: &Node) {
    // SAFETY: the caller's contract; no suspension here.
    unsafe {
        fast.with_queue(|q| q.nodes.pop_front());
    }
    n.outcome.set(DONE);
    if let Some(u) = n.unparker.take() {
        u.unpark();
    }
}

/// Parks `node` as a party of side `dir` (the caller owning `fast`)
/// until an outcome other than `WAITING` or `deadline`; `Err(Timeout)`
/// (and dequeued) if the deadline came first.
#[inline(always)] // one frame less between the switch and the body (`sched::park_current`)
fn wait(fast: &Fast, node: &Node, dir: u32, deadline: Option<Instant>) -> Result<u32, OpError> {
    node.outcome.set(WAITING);
    // SAFETY: the caller owns the channel; no suspension in the closure.
    unsafe {
        fast.with_queue(|q| {
            q.side = dir;
            q.nodes.push_back(node);
        })
    };
    loop {
        // Nothing else runs on this thread before the suspension: the
        // unparker is in place before anybody can dequeue the node.
        sched::park_current(deadline, |u| node.unparker.set(Some(u)));
        let o = node.outcome.get();
        if o != WAITING {
            return Ok(o);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // SAFETY: as above.
            unsafe { fast.with_queue(|q| q.nodes.retain(|&n| !std::ptr::eq(n, node))) };
            node.unparker.set(None);
            return Err(OpError::Timeout);
        }
    }
}

/// The error of a party aborted by poison or retirement (on the owner's
/// thread).
fn aborted(fast: &Fast) -> ChannelError {
    // SAFETY: called by a party of the owner's thread; no suspension.
    op_error(unsafe { fast.with_queue(|q| q.closed) }.unwrap_or(OpError::Poisoned))
}

/// Writes `value` by direct hand-over when the caller is a lightweight
/// process and `chan` is fast; `None` when the general path must do it
/// (it reports encoding errors and large messages too).
#[inline(always)] // see `read`
pub(crate) fn write<'a, T: Serialize>(
    chan: &'a Chan,
    value: &T,
    deadline: Option<Instant>,
) -> Path<'a, Result<(), ChannelError>> {
    if !claim(chan) {
        return Path::General(Migration::none());
    }
    let fast = chan.fast();
    // SAFETY: claimed: on the owner's thread.
    let reader = match unsafe { peek(fast, chan::READ) } {
        Err(e) => return Path::Done(Err(op_error(e))),
        Ok(r) => r,
    };
    // Straight into the parked reader's buffer if there is one (it stays
    // queued until the message is in), else into our own node's.
    let mine = if reader.is_none() { Some(node()) } else { None };
    let into = reader.or(mine.as_deref());
    let fits = into.is_some_and(|n| match capture(chan, value) {
        Some(p) => {
            n.prim.set(p);
            true
        }
        None => {
            n.prim.set(Prim::Empty);
            let mut buf = n.msg.take();
            let fits = encode(chan, value, &mut buf);
            n.msg.set(buf);
            fits
        }
    });
    let r = if !fits {
        Path::General(Migration::none())
    } else if let Some(reader) = reader {
        // SAFETY: on the owner's thread; `reader` still heads the queue.
        unsafe { complete(fast, reader) };
        Path::Done(Ok(()))
    } else {
        match mine
            .as_deref()
            .map(|n| wait(fast, n, chan::WRITE, deadline))
        {
            Some(Ok(DONE)) => Path::Done(Ok(())),
            Some(Ok(ABORTED)) => Path::Done(Err(aborted(fast))),
            Some(Err(e)) => Path::Done(Err(op_error(e))),
            _ => Path::General(Migration(Some(fast))),
        }
    };
    if let Some(n) = mine {
        recycle(n);
    }
    r
}

/// Reads by direct hand-over when the caller is a lightweight process and
/// `chan` is fast; `None` when the general path must do it.
#[inline(always)] // one frame less between the switch and the body (`wait`)
pub(crate) fn read<T: DeserializeOwned>(
    chan: &Chan,
    deadline: Option<Instant>,
) -> Path<'_, Result<T, ChannelError>> {
    if !claim(chan) {
        return Path::General(Migration::none());
    }
    let fast = chan.fast();
    // SAFETY: claimed: on the owner's thread.
    match unsafe { peek(fast, chan::WRITE) } {
        Err(e) => return Path::Done(Err(op_error(e))),
        Ok(Some(writer)) => {
            // SAFETY: on the owner's thread; `writer` heads the queue.
            unsafe { complete(fast, writer) };
            // The writer runs once we suspend: its message is ours till then.
            return Path::Done(take(writer));
        }
        Ok(None) => {}
    }
    let mine = node();
    let r = match wait(fast, &mine, chan::READ, deadline) {
        Ok(DONE) => Path::Done(take(&mine)),
        Ok(ABORTED) => Path::Done(Err(aborted(fast))),
        Ok(_) => Path::General(Migration(Some(fast))),
        Err(e) => Path::Done(Err(op_error(e))),
    };
    recycle(mine);
    r
}

/// The message a node holds, as a `T`.
fn take<T: DeserializeOwned>(n: &Node) -> Result<T, ChannelError> {
    match n.prim.take() {
        Prim::Empty => {
            let bytes = n.msg.take();
            let r = decode(&bytes);
            n.msg.set(bytes);
            r
        }
        p => prim::decode(p).map_err(ChannelError::Codec),
    }
}

/// `value` as one primitive (`prim.rs`), if it is one and the channel
/// takes messages of any primitive's encoded length (else the codec's
/// bytes decide, as on the general path).
#[inline(always)]
fn capture<T: Serialize>(chan: &Chan, value: &T) -> Option<Prim> {
    let limit = chan
        .slot()
        .min(usize::try_from(chan.max_message()).unwrap_or(usize::MAX))
        .saturating_sub(1);
    if limit < prim::MAX_ENCODED {
        return None;
    }
    prim::capture(value)
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
        if d.len() <= 16 {
            // Small pieces (a number's varint) byte by byte: no call to
            // memcpy.
            buf.reserve(d.len());
            d.iter().for_each(|&b| buf.push(b));
        } else {
            buf.extend_from_slice(d);
        }
        buf.len() <= limit
    })
    .is_ok()
}
