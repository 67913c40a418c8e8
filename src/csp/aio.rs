//! Channel ends from async code: [`Reader::read_async`] and
//! [`Writer::write_async`], rendezvous like `read`/`write`, without a
//! thread per waiting task.
//!
//! # How an operation waits
//!
//! A future first tries to complete at once, on whatever thread polls it
//! (the lock, a waiting counterpart or the buffer); if the other side is
//! not ready, it posts an offer owned by the polling thread, spins and
//! yields a while as a blocking party does before it sleeps (a peer
//! about to answer completes it without any thread wake-up), and
//! withdraws it before `poll` returns if nobody did. After that it must
//! wait with an offer posted, a record in the channel. A record belongs to a *thread*: its robust mutex
//! `held`, locked from posting to release, is how the other parties tell
//! its owner is alive, and it can only be unlocked by the thread that
//! locked it. A task can move between a runtime's threads, and a runtime
//! may end an idle thread (which the others would read as the owner's
//! death), so futures never own records. One helper thread per process,
//! the *agent*, started by the first operation that has to wait, owns
//! them all: it posts the offers handed to it, sleeps in `futex_waitv` on
//! their state words and its own doorbell word, and when a record leaves
//! `WAITING` it finishes the operation (`Chan::withdraw`) and wakes the
//! task's `Waker`. Completers, in this process or another one, wake a
//! record's word as they do for any sleeping party, so the same code
//! serves channels between threads and channels between processes, and
//! no runtime reactor is involved (the futures run on any executor).
//!
//! Limits: one `futex_waitv` call watches at most 127 records; further
//! pending operations are polled every millisecond until fewer wait.
//! Like any thread, the agent makes the fork start method unavailable
//! in the process from then on (`StartError::ForkWithThreads`): start
//! forked children before the first async operation waits, or use spawn.
//!
//! # Cancellation
//!
//! Dropping a pending future withdraws its offer (the drop waits for the
//! agent to do it, a few microseconds): a write withdrawn before a reader
//! took it did not happen, one a reader took did. A read whose offer a
//! writer completed just before the drop holds a message nobody will
//! receive: the agent gives it back to the channel (`Chan::give_back`),
//! to a waiting reader, into the buffer, or as an *orphan* write the next
//! reader takes, exactly as when a reader process dies before copying its
//! message out. So no message is lost or delivered twice; a given-back
//! message may arrive after messages written later.
//!
//! # Shared state
//!
//! | what | written by | read by |
//! |---|---|---|
//! | `Job::st` (waker, outcome, phase) | the future (waker, `Cancelled`), the agent (outcome, `Done`) | both, under its mutex |
//! | `Agent::inbox` | futures (`Post`, `Cancel`, `GiveBack`) | the agent, under its mutex |
//! | `Agent::bell` | incremented (SeqCst) after every push to the inbox, then woken | the agent: read before draining the inbox, waited on with that value, so no push is missed |

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chan::{self, Chan, OpError, Posted, Withdrawn};
use super::channel::{Reader, Writer, decode, encode, op_error};
use super::error::ChannelError;
use super::spill::{self, Outgoing};
use crate::sys;
use crate::sys::futex;
use crate::sys::waitv;

/// How often the agent looks at records it cannot watch with
/// `futex_waitv` (beyond its limit), and retries offers or give-backs
/// that found every record of their channel in use.
const POLL: Duration = Duration::from_millis(1);

/// Where a posted operation stands.
enum Phase {
    /// Handed to the agent, not finished.
    Pending,
    /// Finished by the agent: the outcome is in `JobState::outcome`.
    Done,
    /// The future was dropped; the agent withdraws the offer.
    Cancelled,
}

struct JobState {
    phase: Phase,
    waker: Option<Waker>,
    /// The message read (empty for a write), or why the operation failed.
    outcome: Option<Result<Vec<u8>, OpError>>,
}

/// One operation that had to wait, shared by its future and the agent.
struct Job {
    chan: Arc<Chan>,
    dir: u32,
    /// The encoded message, for a write.
    data: Option<Vec<u8>>,
    st: Mutex<JobState>,
}

impl Job {
    fn state(&self) -> MutexGuard<'_, JobState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cancellation the dropping future waits for: set once the agent
/// withdrew the offer, with whether the operation happened anyway.
struct Ack {
    done: Mutex<Option<bool>>,
    cv: Condvar,
}

enum Cmd {
    Post(Arc<Job>),
    Cancel(Arc<Job>, Arc<Ack>),
    /// A message read for a future that was dropped before taking it.
    GiveBack(Arc<Chan>, Vec<u8>),
}

struct Agent {
    pid: i32,
    inbox: Mutex<Vec<Cmd>>,
    bell: AtomicU32,
}

static AGENT: Mutex<Option<Arc<Agent>>> = Mutex::new(None);

/// This process's agent, started on first use (again in a forked child,
/// which has the parent's memory but not its thread).
fn agent() -> Arc<Agent> {
    let mut slot = AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let pid = sys::process::getpid();
    if let Some(a) = slot.as_ref()
        && a.pid == pid
    {
        return a.clone();
    }
    let a = Arc::new(Agent {
        pid,
        inbox: Mutex::new(Vec::new()),
        bell: AtomicU32::new(0),
    });
    let run = a.clone();
    std::thread::Builder::new()
        .name("multiproc-csp-async".into())
        .spawn(move || run.run())
        .expect("start the thread that waits for async CSP channel operations");
    *slot = Some(a.clone());
    a
}

impl Agent {
    fn send(&self, cmd: Cmd) {
        self.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cmd);
        // SeqCst: after the push, so an agent that read the old value
        // before draining sees the push, and one that read it after is
        // woken by the changed word.
        self.bell.fetch_add(1, Ordering::SeqCst);
        futex::wake_threads(&self.bell, 1);
    }

    fn run(&self) {
        let mut pending: Vec<Pending> = Vec::new();
        let mut back = Back(Vec::new());
        let mut last_heal = Instant::now();
        loop {
            let rang = self.bell.load(Ordering::SeqCst);
            let cmds = std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()));
            for cmd in cmds {
                match cmd {
                    Cmd::Post(job) => pending.push(Pending { job, idx: None }),
                    Cmd::Cancel(job, ack) => {
                        let happened = match pending.iter().position(|p| Arc::ptr_eq(&p.job, &job))
                        {
                            Some(i) => pending.swap_remove(i).withdraw(&mut back),
                            // Finished meanwhile (`finish` saw the
                            // cancellation and recorded the outcome).
                            None => matches!(job.state().outcome, Some(Ok(_))),
                        };
                        *ack.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(happened);
                        ack.cv.notify_all();
                    }
                    Cmd::GiveBack(chan, msg) => back.add(chan, msg),
                }
            }
            back.retry();
            let heal = last_heal.elapsed() >= chan::SLICE;
            if heal {
                last_heal = Instant::now();
            }
            pending.retain_mut(|p| !p.advance(heal, &mut back));
            // Sleep on the bell and every posted record's word (asking
            // its completer to wake us), unless a record changed already.
            let mut words: Vec<(&AtomicU32, u32)> = vec![(&self.bell, rang)];
            let mut poll = !back.0.is_empty();
            let mut shared = false;
            let mut again = false;
            for p in &pending {
                let Some(idx) = p.idx else {
                    // Every record was in use: retry soon.
                    poll = true;
                    continue;
                };
                shared |= p.job.chan.slice().is_some();
                if words.len() == waitv::MAX_WORDS {
                    poll = true;
                    continue;
                }
                let word = p.job.chan.state_word(idx);
                let s = word.load(Ordering::Acquire);
                if s & !chan::SLEEPING != chan::WAITING
                    || !chan::ask_to_be_woken(word, s)
                    || p.job.chan.poisoned_now()
                {
                    again = true;
                    break;
                }
                words.push((word, chan::WAITING | chan::SLEEPING));
            }
            if again {
                continue;
            }
            let timeout = if poll {
                Some(POLL)
            } else if shared {
                // Look for dead parties now and then, as a blocked
                // party of a shared channel does.
                Some(chan::SLICE)
            } else {
                None
            };
            if words.len() == 1 {
                futex::wait_thread(&self.bell, rang, timeout);
            } else {
                waitv::wait_any_thread(&words, timeout.map(|t| Instant::now() + t));
            }
        }
    }
}

/// Messages read for futures that were dropped before taking them, on
/// their way back into their channels (retried while every record of the
/// channel is in use).
struct Back(Vec<(Arc<Chan>, Outgoing)>);

impl Back {
    /// Gives `msg` (as a channel delivered it: a spilled message as a
    /// claimed descriptor) back to `chan`, now or later.
    fn add(&mut self, chan: Arc<Chan>, msg: Vec<u8>) {
        // A claimed descriptor names a descriptor of this process: put the
        // message back as a writer would, inline or in a new segment.
        let Ok(bytes) = spill::take(msg, chan.max_message()) else {
            return;
        };
        let out = if bytes.len() <= chan.slot() {
            Outgoing::inline(bytes)
        } else {
            chan.mark_spilled();
            match Outgoing::spill(&bytes, &chan.spill_tag()) {
                Ok(out) => out,
                Err(_) => return,
            }
        };
        self.0.push((chan, out));
        self.retry();
    }

    fn retry(&mut self) {
        let mut i = 0;
        while i < self.0.len() {
            match self.0[i].0.give_back(&self.0[i].1.bytes) {
                Ok(false) => i += 1,
                Ok(true) => self.0.swap_remove(i).1.delivered(),
                // Poisoned: nobody will read it (the segment, if any, goes).
                Err(_) => drop(self.0.swap_remove(i)),
            }
        }
    }
}

/// An operation the agent holds: its record, once posted.
struct Pending {
    job: Arc<Job>,
    idx: Option<u32>,
}

impl Pending {
    /// Posts the offer if not yet done, finishes it if it completed;
    /// true when the job is finished (its future told).
    fn advance(&mut self, heal: bool, back: &mut Back) -> bool {
        let chan = &self.job.chan;
        let Some(idx) = self.idx else {
            return match chan.post_offer(self.job.dir, self.job.data.as_deref(), 0) {
                Ok(Posted::Record(idx)) => {
                    self.idx = Some(idx);
                    false
                }
                Ok(Posted::Completed(v)) => self.finish(Ok(v.unwrap_or_default()), back),
                Ok(Posted::NoRoom) => false,
                Err(e) => self.finish(Err(e), back),
            };
        };
        let s = chan.state_word(idx).load(Ordering::Acquire) & !chan::SLEEPING;
        if s == chan::WAITING && !chan.poisoned_now() {
            // As a blocked reader does every slice: an orphan message (a
            // dead reader's, or a dead writer's) may be waiting for us.
            if heal && chan.slice().is_some() && chan.heal() && self.job.dir == chan::READ {
                return match chan.withdraw(idx) {
                    Withdrawn::Gone => {
                        self.idx = None;
                        self.advance(false, back)
                    }
                    Withdrawn::Completed(v) => self.finish(Ok(v.unwrap_or_default()), back),
                    Withdrawn::Aborted => self.finish(Err(abort_error(chan)), back),
                };
            }
            return false;
        }
        match chan.withdraw(idx) {
            Withdrawn::Completed(v) => self.finish(Ok(v.unwrap_or_default()), back),
            Withdrawn::Gone | Withdrawn::Aborted => self.finish(Err(abort_error(chan)), back),
        }
    }

    /// Hands the outcome to the future and wakes it (or, if it was
    /// dropped meanwhile, gives a read message back). Returns true.
    fn finish(&self, outcome: Result<Vec<u8>, OpError>, back: &mut Back) -> bool {
        if outcome.is_ok() {
            self.job.chan.handed_over(self.job.dir);
        }
        let waker = {
            let mut st = self.job.state();
            if let Phase::Cancelled = st.phase {
                // The cancellation's `Cmd::Cancel` reads whether it happened.
                st.outcome = Some(outcome.as_ref().map(|_| Vec::new()).map_err(|e| *e));
                if let (Ok(msg), chan::READ) = (outcome, self.job.dir) {
                    back.add(self.job.chan.clone(), msg);
                }
                return true;
            }
            st.phase = Phase::Done;
            st.outcome = Some(outcome);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Withdraws the offer of a dropped future; whether the operation
    /// happened anyway (a read's message is then given back).
    fn withdraw(self, back: &mut Back) -> bool {
        let Some(idx) = self.idx else {
            return false;
        };
        match self.job.chan.withdraw(idx) {
            Withdrawn::Gone | Withdrawn::Aborted => false,
            Withdrawn::Completed(v) => {
                self.job.chan.handed_over(self.job.dir);
                if self.job.dir == chan::READ {
                    back.add(self.job.chan.clone(), v.unwrap_or_default());
                }
                true
            }
        }
    }
}

fn abort_error(chan: &Chan) -> OpError {
    if chan.is_poisoned() {
        OpError::Poisoned
    } else {
        OpError::Retired
    }
}

/// One channel operation from async code (see the module docs).
struct Op {
    chan: Arc<Chan>,
    dir: u32,
    data: Option<Vec<u8>>,
    job: Option<Arc<Job>>,
    /// Finished (its result returned, or the future cancelled).
    over: bool,
}

impl Op {
    fn new(chan: Arc<Chan>, dir: u32, data: Option<Vec<u8>>) -> Op {
        Op {
            chan,
            dir,
            data,
            job: None,
            over: false,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Vec<u8>, OpError>> {
        let Some(job) = &self.job else {
            return match self.try_spinning() {
                Ok(Some(v)) => {
                    self.chan.handed_over(self.dir);
                    self.over = true;
                    Poll::Ready(Ok(v))
                }
                Ok(None) => {
                    let job = Arc::new(Job {
                        chan: self.chan.clone(),
                        dir: self.dir,
                        data: self.data.take(),
                        st: Mutex::new(JobState {
                            phase: Phase::Pending,
                            waker: Some(cx.waker().clone()),
                            outcome: None,
                        }),
                    });
                    self.job = Some(job.clone());
                    agent().send(Cmd::Post(job));
                    Poll::Pending
                }
                Err(e) => {
                    self.over = true;
                    Poll::Ready(Err(e))
                }
            };
        };
        let mut st = job.state();
        match st.outcome.take() {
            Some(outcome) => {
                self.over = true;
                Poll::Ready(outcome)
            }
            None => {
                if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// The first attempt, on the polling thread: completes at once if the
    /// other side is ready; else posts an offer owned by this thread for
    /// the length of this call, spins (and yields) a while for a
    /// counterpart to complete it, as a blocking party does before it
    /// sleeps, and withdraws it if none did. `None`: the operation must
    /// wait, through the agent. Nothing outlives the call, so a future
    /// dropped afterwards has nothing to withdraw.
    fn try_spinning(&self) -> Result<Option<Vec<u8>>, OpError> {
        let idx = match self.chan.post_offer(self.dir, self.data.as_deref(), 0)? {
            Posted::Completed(v) => return Ok(Some(v.unwrap_or_default())),
            Posted::NoRoom => return Ok(None),
            Posted::Record(idx) => idx,
        };
        let _ = self.chan.spin_rec(idx, chan::WAITING);
        match self.chan.withdraw(idx) {
            Withdrawn::Completed(v) => Ok(Some(v.unwrap_or_default())),
            Withdrawn::Gone => Ok(None),
            Withdrawn::Aborted => Err(abort_error(&self.chan)),
        }
    }

    /// Withdraws a pending offer (the future is being dropped); whether
    /// the operation happened anyway.
    fn cancel(&mut self) -> bool {
        if self.over {
            return false;
        }
        self.over = true;
        let Some(job) = self.job.take() else {
            return false;
        };
        {
            let mut st = job.state();
            match st.phase {
                Phase::Done => {
                    // Finished, never taken: a read's message goes back.
                    if let (Some(Ok(msg)), chan::READ) = (st.outcome.take(), self.dir) {
                        agent().send(Cmd::GiveBack(self.chan.clone(), msg));
                    }
                    return true;
                }
                Phase::Pending => st.phase = Phase::Cancelled,
                Phase::Cancelled => return false,
            }
        }
        let ack = Arc::new(Ack {
            done: Mutex::new(None),
            cv: Condvar::new(),
        });
        agent().send(Cmd::Cancel(job, ack.clone()));
        let mut done = ack.done.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(happened) = *done {
                return happened;
            }
            done = ack.cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The future of [`Reader::read_async`].
#[must_use = "futures do nothing unless polled"]
pub struct ReadFuture<'a, T> {
    op: Op,
    _end: PhantomData<&'a Reader<T>>,
}

impl<T: DeserializeOwned> Future for ReadFuture<'_, T> {
    type Output = Result<T, ChannelError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.op.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(op_error(e))),
            Poll::Ready(Ok(bytes)) => Poll::Ready(decode(&this.op.chan, bytes)),
        }
    }
}

impl<T> std::fmt::Debug for ReadFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFuture")
            .field("channel", &self.op.chan.id())
            .finish()
    }
}

/// The future of [`Writer::write_async`].
#[must_use = "futures do nothing unless polled"]
pub struct WriteFuture<'a, T> {
    op: Op,
    /// The encoded message (its spill segment, if any, is unlinked unless
    /// delivered), or why it could not be encoded.
    out: Option<Result<Outgoing, ChannelError>>,
    _end: PhantomData<&'a Writer<T>>,
}

impl<T> Future for WriteFuture<'_, T> {
    type Output = Result<(), ChannelError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.out.take() {
            None => return Poll::Ready(Err(ChannelError::Retired)),
            Some(Err(e)) => {
                this.op.over = true;
                return Poll::Ready(Err(e));
            }
            Some(Ok(out)) => this.out = Some(Ok(out)),
        }
        match this.op.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                let out = this.out.take();
                if r.is_ok()
                    && let Some(Ok(out)) = out
                {
                    out.delivered();
                }
                Poll::Ready(r.map(|_| ()).map_err(op_error))
            }
        }
    }
}

impl<T> Drop for WriteFuture<'_, T> {
    fn drop(&mut self) {
        if self.op.cancel()
            && let Some(Ok(out)) = self.out.take()
        {
            out.delivered();
        }
    }
}

impl<T> std::fmt::Debug for WriteFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFuture")
            .field("channel", &self.op.chan.id())
            .finish()
    }
}

impl<T: DeserializeOwned> Reader<T> {
    /// [`read`](Self::read) for async code: resolves to the next value
    /// once a writer hands it over, without blocking the executor's
    /// thread. Dropping the future before it resolves withdraws the read:
    /// no message is lost (see [From async code](super#from-async-code)).
    /// Works on any executor; needs the `tokio` feature.
    ///
    /// ```
    /// use multiproc::csp::Channel;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = Channel::builder().threads_only().build::<u32>()?;
    /// let (r, w) = (ch.reader(), ch.writer());
    /// let t = std::thread::spawn(move || w.write(&7));
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// assert_eq!(rt.block_on(r.read_async())?, 7);
    /// t.join().unwrap()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_async(&self) -> ReadFuture<'_, T> {
        ReadFuture {
            op: Op::new(self.end.chan().clone(), chan::READ, None),
            _end: PhantomData,
        }
    }
}

impl<T: Serialize> Writer<T> {
    /// [`write`](Self::write) for async code: resolves once a reader has
    /// taken the value (or, buffered, once it is in the buffer). The value
    /// is encoded at once. Dropping the future before it resolves
    /// withdraws the write, unless a reader took it already.
    /// Works on any executor; needs the `tokio` feature.
    ///
    /// ```
    /// use multiproc::csp::Channel;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = Channel::builder().threads_only().build::<String>()?;
    /// let (r, w) = (ch.reader(), ch.writer());
    /// let t = std::thread::spawn(move || r.read());
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// rt.block_on(w.write_async(&"hi".to_string()))?;
    /// assert_eq!(t.join().unwrap()?, "hi");
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_async(&self, value: &T) -> WriteFuture<'_, T> {
        let chan = self.end.chan();
        let out = encode(chan, value);
        let data = out.as_ref().ok().map(|o| o.bytes.clone());
        WriteFuture {
            op: Op::new(chan.clone(), chan::WRITE, data),
            out: Some(out),
            _end: PhantomData,
        }
    }
}
