//! The server side of the SyncManager's synchronisation objects: `Lock`,
//! `RLock`, `Semaphore`/`BoundedSemaphore`, `Condition`, `Event` and
//! `Barrier`, each a small state behind its own mutex and condition
//! variable.
//!
//! An owner is `(session, thread)`: the client process's session and the
//! client thread's number. When a session ends (its process died or
//! dropped every connection), the locks it holds are released, so a
//! crashed holder cannot block everyone else forever.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex};

use super::wait::{Caller, lock, wait_for};
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
                let me = (caller.session, thread);
                acquired(wait_for(&self.state, &self.cv, block, caller, |s| {
                    s.try_acquire(me)
                }))
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
    waiting: VecDeque<u64>,
    notified: HashSet<u64>,
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
                let me = (caller.session, thread);
                acquired(wait_for(&self.state, &self.cv, block, caller, |s| {
                    s.lock.try_acquire(me)
                }))
            }
            Op::Release { thread } => {
                if lock(&self.state).lock.release((caller.session, thread))? {
                    self.cv.notify_all();
                }
                Ok(Value::None)
            }
            Op::Wait { thread, block } => self.wait((caller.session, thread), block, caller),
            Op::Notify(n) => {
                let mut s = lock(&self.state);
                for _ in 0..n {
                    let Some(t) = s.waiting.pop_front() else {
                        break;
                    };
                    s.notified.insert(t);
                }
                self.cv.notify_all();
                Ok(Value::None)
            }
            Op::NotifyAll => {
                let mut s = lock(&self.state);
                let all: Vec<u64> = s.waiting.drain(..).collect();
                s.notified.extend(all);
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
            s.waiting.push_back(ticket);
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
                s.waiting.retain(|t| *t != ticket);
                // A notify may have come in between.
                s.notified.remove(&ticket)
            }
            Err(f) => {
                let mut s = lock(&self.state);
                s.waiting.retain(|t| *t != ticket);
                s.notified.remove(&ticket);
                return Err(f);
            }
        };
        // Take the lock back, at its old depth, however long that takes.
        wait_for(&self.state, &self.cv, None, caller, |s| {
            s.lock.owner.is_none().then(|| {
                s.lock.owner = Some(me);
                s.lock.count = depth;
            })
        })?;
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
                s.generation += 1;
                s.count = 0;
                s.broken = false;
                self.cv.notify_all();
                Ok(Value::None)
            }
            Op::Parties => Ok(Value::Int(lock(&self.state).parties.into())),
            Op::NWaiting => Ok(Value::Int(lock(&self.state).count.into())),
            Op::Broken => Ok(Value::Bool(lock(&self.state).broken)),
            other => Err(Fault::Unsupported(format!("{other:?} on a barrier"))),
        }
    }

    fn wait(&self, block: Block, caller: &Caller<'_>) -> Reply {
        let (index, generation) = {
            let mut s = lock(&self.state);
            if s.broken {
                return Err(Fault::BrokenBarrier);
            }
            let index = s.count;
            s.count += 1;
            if s.count == s.parties {
                s.count = 0;
                s.generation += 1;
                self.cv.notify_all();
                return Ok(Value::Int(index.into()));
            }
            (index, s.generation)
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
        match res {
            Ok(true) => Ok(Value::Int(index.into())),
            Ok(false) => Err(Fault::BrokenBarrier),
            Err(f) => {
                // A timeout (or a vanished waiter) breaks the barrier for
                // everyone, as in Python.
                let mut s = lock(&self.state);
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
