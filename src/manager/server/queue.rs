//! The server side of `Queue` and `JoinableQueue`: a FIFO of values with
//! an optional bound and, for joinable queues, a count of unfinished tasks.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use super::wait::{Caller, wait_for};
use crate::local_lock::lock;
use crate::manager::protocol::{Fault, Op, Reply};
use crate::manager::value::Value;

#[derive(Default)]
struct State {
    items: VecDeque<Value>,
    unfinished: u64,
}

/// A managed queue.
pub(crate) struct Queue {
    state: Mutex<State>,
    cv: Condvar,
    maxsize: usize,
    joinable: bool,
}

impl Queue {
    pub fn new(maxsize: u64, joinable: bool) -> Self {
        Queue {
            state: Mutex::default(),
            cv: Condvar::new(),
            maxsize: usize::try_from(maxsize).unwrap_or(usize::MAX),
            joinable,
        }
    }

    pub fn apply(&self, op: Op, caller: &Caller<'_>) -> Reply {
        match op {
            Op::Put { item, block } => {
                let max = self.maxsize;
                let mut item = Some(item);
                wait_for(&self.state, &self.cv, block, caller, |s| {
                    (max == 0 || s.items.len() < max).then(|| {
                        s.items.push_back(item.take().expect("put once"));
                        s.unfinished += 1;
                    })
                })
                .map_err(|f| if f == Fault::Timeout { Fault::Full } else { f })?;
                self.cv.notify_all();
                Ok(Value::None)
            }
            Op::Take { block } => {
                let item = wait_for(&self.state, &self.cv, block, caller, |s| {
                    s.items.pop_front()
                })
                .map_err(|f| if f == Fault::Timeout { Fault::Empty } else { f })?;
                self.cv.notify_all();
                Ok(item)
            }
            Op::QSize | Op::Len => Ok(Value::Int(lock(&self.state).items.len() as i128)),
            Op::TaskDone if self.joinable => {
                let mut s = lock(&self.state);
                if s.unfinished == 0 {
                    return Err(Fault::NotOwner("task_done() called too many times".into()));
                }
                s.unfinished -= 1;
                if s.unfinished == 0 {
                    self.cv.notify_all();
                }
                Ok(Value::None)
            }
            Op::Join { block } if self.joinable => {
                wait_for(&self.state, &self.cv, block, caller, |s| {
                    (s.unfinished == 0).then_some(())
                })?;
                Ok(Value::None)
            }
            other => Err(Fault::Unsupported(format!("{other:?} on a queue"))),
        }
    }
}
