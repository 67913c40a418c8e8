//! The server side of the SyncManager's synchronisation objects: `Lock`,
//! `RLock`, `Semaphore`/`BoundedSemaphore`, `Condition`, `Event` and
//! `Barrier`, each a small state behind its own mutex and condition
//! variable.
//!
//! An owner is `(session, thread)`: the client process's session and the
//! client thread's number. When a session ends (its process died or
//! dropped every connection), the locks it holds are released, so a
//! crashed holder cannot block everyone else forever.
//!
//! A client that dies while it waits takes nothing with it: a notify goes
//! only to a waiter still there (and is passed on if its receiver turns
//! out dead before it returns), and a barrier party arriving beside a dead
//! one finds the barrier broken, never passes with it. Both check the
//! waiters' connections ([`Watch`]) at that moment, not a slice later.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex};

use super::wait::{Caller, Watch, wait_for};
use crate::local_lock::lock;
use crate::manager::protocol::{Block, Fault, Op, Reply};
use crate::manager::value::Value;

/// Who holds a lock.
pub(crate) type Owner = (u64, u64);

fn acquired(r: Result<(), Fault>) -> Reply {
    match r {
        Ok(()) => Ok(Value::Bool(true)),
        Err(Fault::Timeout) => Ok(Value::Bool(false)),
        Err(f) => Err(f),
    }
}

/// A plain lock: anyone may release it (as `threading.Lock`).
#[derive(Default)]
pub(crate) struct Lock {
    holder: Mutex<Option<Owner>>,
    cv: Condvar,
}

impl Lock {
    pub fn apply(&self, op: Op, caller: &Caller<'_>) -> Reply {
        match op {
            Op::Acquire { thread, block } => {
                acquired(wait_for(&self.holder, &self.cv, block, caller, |h| {
                    h.is_none().then(|| *h = Some((caller.session, thread)))
                }))
            }
            Op::Release { .. } => {
                let mut h = lock(&self.holder);
                if h.take().is_none() {
                    return Err(Fault::NotOwner("release unlocked lock".into()));
                }
                self.cv.notify_one();
                Ok(Value::None)
            }
            other => Err(Fault::Unsupported(format!("{other:?} on a lock"))),
        }
    }

    pub fn release_session(&self, session: u64) {
        let mut h = lock(&self.holder);
        if matches!(*h, Some((s, _)) if s == session) {
            *h = None;
            self.cv.notify_one();
        }
    }
}

/// The state of a re-entrant lock: owner and depth.
#[derive(Default)]
struct Reentrant {
    owner: Option<Owner>,
    count: u32,
}

impl Reentrant {
    fn try_acquire(&mut self, me: Owner) -> Option<()> {
        match self.owner {
            None => {
                self.owner = Some(me);
                self.count = 1;
                Some(())
            }
            Some(o) if o == me => {
                self.count += 1;
                Some(())
            }
            Some(_) => None,
        }
    }

    /// Releases one level; `Ok(true)` when the lock became free.
    fn release(&mut self, me: Owner) -> Result<bool, Fault> {
        if self.owner != Some(me) {
            return Err(Fault::NotOwner("cannot release un-acquired lock".into()));
        }
        self.count -= 1;
        if self.count == 0 {
            self.owner = None;
            return Ok(true);
        }
        Ok(false)
    }
}

/// `Acquire { thread, block }` on the re-entrant lock that `lock_of` finds
/// in `state` (an rlock's, or a condition's own).
fn acquire_reentrant<S>(
    state: &Mutex<S>,
    cv: &Condvar,
    thread: u64,
    block: Block,
    caller: &Caller<'_>,
    lock_of: fn(&mut S) -> &mut Reentrant,
) -> Reply {
    let me = (caller.session, thread);
    acquired(wait_for(state, cv, block, caller, |s| {
        lock_of(s).try_acquire(me)
    }))
}

/// A re-entrant lock, owned by one client thread.
#[derive(Default)]
pub(crate) struct RLock {
    state: Mutex<Reentrant>,
    cv: Condvar,
}

impl RLock {
    pub fn apply(&self, op: Op, caller: &Caller<'_>) -> Reply {
        match op {
            Op::Acquire { thread, block } => {
                acquire_reentrant(&self.state, &self.cv, thread, block, caller, |s| s)
            }
            Op::Release { thread } => {
                if lock(&self.state).release((caller.session, thread))? {
                    self.cv.notify_one();
                }
                Ok(Value::None)
            }
            other => Err(Fault::Unsupported(format!("{other:?} on an rlock"))),
        }
    }

    pub fn release_session(&self, session: u64) {
        let mut s = lock(&self.state);
        if matches!(s.owner, Some((o, _)) if o == session) {
            *s = Reentrant::default();
            self.cv.notify_one();
        }
    }
}

/// A counting semaphore, optionally bounded by its initial value.
pub(crate) struct Semaphore {
    value: Mutex<u64>,
    cv: Condvar,
    bound: Option<u64>,
}

impl Semaphore {
    pub fn new(value: u64, bounded: bool) -> Self {
        Semaphore {
            value: Mutex::new(value),
            cv: Condvar::new(),
            bound: bounded.then_some(value),
        }
    }

    pub fn apply(&self, op: Op, caller: &Caller<'_>) -> Reply {
        match op {
            Op::Acquire { block, .. } => {
                acquired(wait_for(&self.value, &self.cv, block, caller, |v| {
                    (*v > 0).then(|| *v -= 1)
                }))
            }
            Op::Release { .. } => {
                let mut v = lock(&self.value);
                if self.bound.is_some_and(|b| *v >= b) {
                    return Err(Fault::NotOwner("semaphore released too many times".into()));
                }
                *v += 1;
                self.cv.notify_one();
                Ok(Value::None)
            }
            Op::Get => Ok(Value::Int((*lock(&self.value)).into())),
            other => Err(Fault::Unsupported(format!("{other:?} on a semaphore"))),
        }
    }
}

#[derive(Default)]
struct CondState {
    lock: Reentrant,
    next_ticket: u64,
    /// Waiting tickets, oldest first, each with a watch on its client.
    waiting: VecDeque<(u64, Option<Watch>)>,
    notified: HashSet<u64>,
}

impl CondState {
    /// Moves up to `n` waiters whose clients are still there from
    /// `waiting` to `notified`, oldest first. A dead client's ticket is
    /// dropped (its connection thread leaves on its own).
    fn notify(&mut self, n: u64) {
        let mut left = n;
        while left > 0 {
            let Some((ticket, watch)) = self.waiting.pop_front() else {
                break;
            };
            if watch.as_ref().is_some_and(Watch::gone) {
                continue;
            }
            self.notified.insert(ticket);
            left -= 1;
        }
    }
}

/// A condition variable with its own re-entrant lock (Python's
/// `threading.Condition()`).
#[derive(Default)]
pub(crate) struct Condition {
    state: Mutex<CondState>,
    cv: Condvar,
}

impl Condition {
    pub fn apply(&self, op: Op, caller: &Caller<'_>) -> Reply {
        match op {
            Op::Acquire { thread, block } => {
                acquire_reentrant(&self.state, &self.cv, thread, block, caller, |s| {
                    &mut s.lock
                })
            }
            Op::Release { thread } => {
                if lock(&self.state).lock.release((caller.session, thread))? {
                    self.cv.notify_all();
                }
                Ok(Value::None)
            }
            Op::Wait { thread, block } => self.wait((caller.session, thread), block, caller),
            Op::Notify(n) => {
                lock(&self.state).notify(n);
                self.cv.notify_all();
                Ok(Value::None)
            }
            Op::NotifyAll => {
                lock(&self.state).notify(u64::MAX);
                self.cv.notify_all();
                Ok(Value::None)
            }
            other => Err(Fault::Unsupported(format!("{other:?} on a condition"))),
        }
    }

    fn wait(&self, me: Owner, block: Block, caller: &Caller<'_>) -> Reply {
        let (ticket, depth) = {
            let mut s = lock(&self.state);
            if s.lock.owner != Some(me) {
                return Err(Fault::NotOwner("cannot wait on un-acquired lock".into()));
            }
            let depth = s.lock.count;
            s.lock = Reentrant::default();
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.waiting.push_back((ticket, caller.watch()));
            self.cv.notify_all();
            (ticket, depth)
        };
        let woken = wait_for(&self.state, &self.cv, block, caller, |s| {
            s.notified.remove(&ticket).then_some(())
        });
        let notified = match woken {
            Ok(()) => true,
            Err(Fault::Timeout) => {
                let mut s = lock(&self.state);
                s.waiting.retain(|(t, _)| *t != ticket);
                // A notify may have come in between.
                s.notified.remove(&ticket)
            }
            Err(f) => {
                let mut s = lock(&self.state);
                s.waiting.retain(|(t, _)| *t != ticket);
                if s.notified.remove(&ticket) {
                    // Notified but gone: the wake-up goes to another.
                    s.notify(1);
                    self.cv.notify_all();
                }
                return Err(f);
            }
        };
        // Take the lock back, at its old depth, however long that takes.
        let back = wait_for(&self.state, &self.cv, None, caller, |s| {
            s.lock.owner.is_none().then(|| {
                s.lock.owner = Some(me);
                s.lock.count = depth;
            })
        });
        if back.is_err() || caller.gone() {
            // The client died after its wake-up: it neither keeps the lock
            // nor uses up the notify.
            let mut s = lock(&self.state);
            if back.is_ok() {
                s.lock = Reentrant::default();
            }
            if notified {
                s.notify(1);
            }
            self.cv.notify_all();
            return Err(back.err().unwrap_or(Fault::ClientGone));
        }
        Ok(Value::Bool(notified))
    }

    pub fn release_session(&self, session: u64) {
        let mut s = lock(&self.state);
        if matches!(s.lock.owner, Some((o, _)) if o == session) {
            s.lock = Reentrant::default();
            self.cv.notify_all();
        }
    }
}

/// An event flag.
#[derive(Default)]
pub(crate) struct Event {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Event {
    pub fn apply(&self, op: Op, caller: &Caller<'_>) -> Reply {
        match op {
            Op::EventSet => {
                *lock(&self.flag) = true;
                self.cv.notify_all();
                Ok(Value::None)
            }
            Op::EventClear => {
                *lock(&self.flag) = false;
                Ok(Value::None)
            }
            Op::EventIsSet => Ok(Value::Bool(*lock(&self.flag))),
            Op::EventWait { block } => {
                acquired(wait_for(&self.flag, &self.cv, block, caller, |f| {
                    f.then_some(())
                }))
            }
            other => Err(Fault::Unsupported(format!("{other:?} on an event"))),
        }
    }
}

struct BarrierState {
    parties: u64,
    count: u64,
    generation: u64,
    broken: bool,
    /// A generation ended by `reset` (its waiters see a broken barrier).
    reset_generation: Option<u64>,
    /// The current generation's waiters (ticket, watch on the client);
    /// emptied when the generation ends, and each leaving waiter removes
    /// its own.
    waiters: Vec<(u64, Option<Watch>)>,
    next_ticket: u64,
}

impl BarrierState {
    /// Breaks the barrier if a waiting client is gone (a party arriving
    /// now must not pass with it); whether it is broken.
    fn notice_death(&mut self, cv: &Condvar) -> bool {
        if !self.broken
            && self
                .waiters
                .iter()
                .any(|(_, w)| w.as_ref().is_some_and(Watch::gone))
        {
            self.broken = true;
            cv.notify_all();
        }
        self.broken
    }

    /// Moves on to the next generation.
    fn next_generation(&mut self) {
        self.count = 0;
        self.generation += 1;
        self.waiters.clear();
    }
}

/// A barrier for a fixed number of parties.
pub(crate) struct Barrier {
    state: Mutex<BarrierState>,
    cv: Condvar,
}

impl Barrier {
    pub fn new(parties: u64) -> Self {
        Barrier {
            state: Mutex::new(BarrierState {
                parties,
                count: 0,
                generation: 0,
                broken: false,
                reset_generation: None,
                waiters: Vec::new(),
                next_ticket: 0,
            }),
            cv: Condvar::new(),
        }
    }

    pub fn apply(&self, op: Op, caller: &Caller<'_>) -> Reply {
        match op {
            Op::BarrierWait { block } => self.wait(block, caller),
            Op::Abort => {
                lock(&self.state).broken = true;
                self.cv.notify_all();
                Ok(Value::None)
            }
            Op::Reset => {
                let mut s = lock(&self.state);
                if s.count > 0 {
                    s.reset_generation = Some(s.generation);
                }
                s.next_generation();
                s.broken = false;
                self.cv.notify_all();
                Ok(Value::None)
            }
            Op::Parties => Ok(Value::Int(lock(&self.state).parties.into())),
            Op::NWaiting => {
                // 0 when broken, as the shared-memory barrier says.
                let mut s = lock(&self.state);
                let n = if s.notice_death(&self.cv) { 0 } else { s.count };
                Ok(Value::Int(n.into()))
            }
            Op::Broken => Ok(Value::Bool(lock(&self.state).notice_death(&self.cv))),
            other => Err(Fault::Unsupported(format!("{other:?} on a barrier"))),
        }
    }

    fn wait(&self, block: Block, caller: &Caller<'_>) -> Reply {
        let (index, generation, ticket) = {
            let mut s = lock(&self.state);
            if s.notice_death(&self.cv) {
                return Err(Fault::BrokenBarrier);
            }
            let index = s.count;
            s.count += 1;
            if s.count == s.parties {
                s.next_generation();
                self.cv.notify_all();
                return Ok(Value::Int(index.into()));
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.waiters.push((ticket, caller.watch()));
            (index, s.generation, ticket)
        };
        let res = wait_for(&self.state, &self.cv, block, caller, |s| {
            if s.generation != generation {
                Some(s.reset_generation != Some(generation))
            } else if s.broken {
                Some(false)
            } else {
                None
            }
        });
        let mut s = lock(&self.state);
        s.waiters.retain(|(t, _)| *t != ticket);
        match res {
            Ok(true) => Ok(Value::Int(index.into())),
            Ok(false) => Err(Fault::BrokenBarrier),
            Err(f) => {
                // A timeout (or a vanished waiter) breaks the barrier for
                // everyone, as in Python.
                if s.generation == generation {
                    s.broken = true;
                    self.cv.notify_all();
                }
                Err(if f == Fault::Timeout {
                    Fault::BrokenBarrier
                } else {
                    f
                })
            }
        }
    }
}
