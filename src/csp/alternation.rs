//! [`Alternation`]: choose one of several input, output, timeout and skip
//! guards, each with an optional precondition, and complete exactly that
//! guard's operation, also when the channels are shared with other OS
//! processes.
//!
//! # Protocol
//!
//! An alternation never lets two of its guards be completable at once. It
//! holds at most **one committed record** (its *offer*) on one channel,
//! and otherwise only *watches*, which nobody can complete (see the record
//! table in `chan.rs`). One round:
//!
//! 1. **Watch.** Post a watch on every enabled channel guard (or re-arm it
//!    `NOTIFIED → WATCHING`). From now on, any counterpart that becomes
//!    ready on one of these channels (posts a committed record, or fills or
//!    empties a buffer) flips the watch to `NOTIFIED` and wakes us.
//! 2. **Scan.** With no offer outstanding, try each guard in the select
//!    order: a skip guard is ready, a timeout guard is ready once its
//!    deadline passed, a channel guard completes under its channel's lock
//!    against a committed counterpart record (`WAITING → DONE` by CAS) or
//!    the buffer. The first that completes is chosen; a guard whose
//!    channel is poisoned fails the selection when the scan reaches it
//!    (its watch could not be posted; an earlier ready guard wins).
//!
//!    **Coming back.** The scan sees only counterparts that are already
//!    waiting. One that offers all the time is absent for a moment after
//!    each handover (it must wake up, return, and offer again; an OS
//!    process takes longest), and a scan that went on to a later guard
//!    then would pass it over nearly every time: fair selection would
//!    starve it, priority selection would serve the wrong guard. So
//!    before completing a later channel guard, the scan asks each earlier
//!    channel guard that was not ready whether its counterpart is coming
//!    back (`Chan::returning`: a live party's record was completed and it
//!    has not woken yet, or a party of that side completed an operation
//!    less than 20 ms ago). If one is, the selection waits for it — a few
//!    spins and yields, then, unless that party's thread is asleep (on
//!    something else: it is not coming back soon), a sleep on that guard's
//!    watch of at most 20 ms — and scans again. It waits so at most once
//!    per selection, so a counterpart that does not come back costs one
//!    bounded delay, never a hang.
//! 3. **Offer.** Post one committed record on one channel guard: the one
//!    with the smallest channel id among those where another alternation
//!    watches the opposite direction, else the smallest id overall. Two
//!    alternations that could meet therefore offer on the same channel, and
//!    the second to arrive completes the first's offer instead of posting
//!    (the post re-checks under the lock). Posting an offer notifies the
//!    opposite watches (not our own).
//! 4. **Sleep** on all our records' words at once (`futex_waitv`), until a
//!    watch is notified, the offer is completed, poison or retirement
//!    aborts a record, or the earliest timeout passes.
//! 5. **Withdraw** the offer by CAS `WAITING → FREE`. If a counterpart won
//!    the race (`DONE`), that guard is chosen; otherwise nothing happened
//!    and we go back to 1.
//!
//! **Exactly once.** A guard's operation completes either actively in step
//! 2/3, which happens only while the alternation has no offer outstanding,
//! or passively through the offer, of which there is at most one, whose
//! completion and withdrawal are both CAS transitions from `WAITING`: one
//! of them wins. So exactly one guard's operation happens per selection
//! and no other's; this holds across processes because every transition is
//! an atomic on the channel's shared memory.
//!
//! **No lost wake-up.** Watches are posted before the scan, so a
//! counterpart that arrives after the scan looked at its channel finds the
//! watch and notifies it (or completes the offer).

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chan::{self, Attempt, Chan, Posted, Withdrawn};
use super::channel::{self, Reader, Writer};
use super::error::ChannelError;
use super::outside::{OutsideAttempt, OutsideGuard};
use super::spill::Outgoing;
use crate::sys;
use crate::sys::futex::Wake;
use crate::wait::Deadline;
use crate::wait::{self, Backoff};

type Run<'a, R> = Box<dyn FnOnce(Option<Vec<u8>>) -> Result<R, ChannelError> + 'a>;

enum Kind<'a> {
    Input(&'a Chan),
    Output(&'a Chan, Result<Outgoing, ChannelError>),
    Timeout(Duration),
    Skip,
    /// A channel end that lives outside this host's memory (see
    /// `outside.rs`).
    #[cfg_attr(not(feature = "zenoh"), allow(dead_code))]
    Net(std::cell::RefCell<Box<dyn OutsideGuard<'a> + 'a>>),
}

struct Guard<'a, R> {
    enabled: bool,
    kind: Kind<'a>,
    run: Run<'a, R>,
}

/// A choice between guards; each guard's action turns the chosen
/// operation into a common result `R`.
///
/// ```
/// use multiproc::csp::{Alternation, Channel};
/// use std::time::Duration;
///
/// let a = Channel::<i32>::buffered(1)?;
/// let b = Channel::<String>::new()?;
/// let (ra, rb, wa) = (a.reader(), b.reader(), a.writer());
/// wa.write(&7)?;
/// let got = Alternation::new()
///     .input(&rb, |s: String| format!("b: {s}"))
///     .input(&ra, |x: i32| format!("a: {x}"))
///     .timeout(Duration::from_millis(10), || "timeout".to_string())
///     .pri_select()?;
/// assert_eq!(got, "a: 7");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Alternation<'a, R> {
    guards: Vec<Guard<'a, R>>,
}

/// Remembers where the last [`fair_select`](Alternation::fair_select)
/// stopped, so that the next one starts after it and no guard starves.
#[derive(Debug, Default, Clone)]
pub struct Fair {
    next: usize,
}

impl Fair {
    /// A fresh state.
    pub fn new() -> Fair {
        Fair::default()
    }
}

impl<R> Default for Alternation<'_, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, R> Alternation<'a, R> {
    /// An alternation with no guards yet.
    pub fn new() -> Self {
        Alternation { guards: Vec::new() }
    }

    /// An input guard: when chosen, reads a value and passes it to `action`.
    pub fn input<T: DeserializeOwned>(
        self,
        reader: &'a Reader<T>,
        action: impl FnOnce(T) -> R + 'a,
    ) -> Self {
        self.input_if(true, reader, action)
    }

    /// An input guard enabled only when `precondition` holds.
    pub fn input_if<T: DeserializeOwned>(
        mut self,
        precondition: bool,
        reader: &'a Reader<T>,
        action: impl FnOnce(T) -> R + 'a,
    ) -> Self {
        let chan: &'a Chan = reader.end.chan();
        self.guards.push(Guard {
            enabled: precondition,
            kind: Kind::Input(chan),
            run: Box::new(move |bytes| {
                let value = channel::decode::<T>(chan, bytes.unwrap_or_default())?;
                Ok(action(value))
            }),
        });
        self
    }

    /// An output guard: when chosen, `value` has been written, then
    /// `action` runs.
    pub fn output<T: Serialize>(
        self,
        writer: &'a Writer<T>,
        value: &T,
        action: impl FnOnce() -> R + 'a,
    ) -> Self {
        self.output_if(true, writer, value, action)
    }

    /// An output guard enabled only when `precondition` holds.
    pub fn output_if<T: Serialize>(
        mut self,
        precondition: bool,
        writer: &'a Writer<T>,
        value: &T,
        action: impl FnOnce() -> R + 'a,
    ) -> Self {
        let chan = writer.end.chan();
        let bytes = if precondition {
            channel::encode(chan, value)
        } else {
            Ok(Outgoing::inline(Vec::new()))
        };
        self.guards.push(Guard {
            enabled: precondition,
            kind: Kind::Output(chan, bytes),
            run: Box::new(move |_| Ok(action())),
        });
        self
    }

    /// A guard on a channel that lives outside this host's memory: when
    /// chosen, `run` gets the message read (inputs) or nothing (outputs).
    #[cfg_attr(not(feature = "zenoh"), allow(dead_code))]
    pub(crate) fn outside_guard(
        mut self,
        precondition: bool,
        guard: Box<dyn OutsideGuard<'a> + 'a>,
        run: impl FnOnce(Option<Vec<u8>>) -> Result<R, ChannelError> + 'a,
    ) -> Self {
        self.guards.push(Guard {
            enabled: precondition,
            kind: Kind::Net(std::cell::RefCell::new(guard)),
            run: Box::new(run),
        });
        self
    }

    /// A timeout guard: chosen when no other guard was within `after`.
    pub fn timeout(self, after: Duration, action: impl FnOnce() -> R + 'a) -> Self {
        self.timeout_if(true, after, action)
    }

    /// A timeout guard enabled only when `precondition` holds.
    pub fn timeout_if(
        mut self,
        precondition: bool,
        after: Duration,
        action: impl FnOnce() -> R + 'a,
    ) -> Self {
        self.guards.push(Guard {
            enabled: precondition,
            kind: Kind::Timeout(after),
            run: Box::new(move |_| Ok(action())),
        });
        self
    }

    /// A skip guard: always ready (so the selection never blocks). With
    /// [`pri_select`](Self::pri_select), guards before it still win when
    /// they are ready.
    pub fn skip(self, action: impl FnOnce() -> R + 'a) -> Self {
        self.skip_if(true, action)
    }

    /// A skip guard enabled only when `precondition` holds.
    pub fn skip_if(mut self, precondition: bool, action: impl FnOnce() -> R + 'a) -> Self {
        self.guards.push(Guard {
            enabled: precondition,
            kind: Kind::Skip,
            run: Box::new(move |_| Ok(action())),
        });
        self
    }

    /// Chooses the first ready guard in the order they were added, waiting
    /// if none is ready, and runs its action.
    ///
    /// The guards are looked at in that order, and the first that is ready
    /// or whose channel is poisoned decides: a ready guard before a
    /// poisoned one is chosen (as in PyCSP, which raises poison when it
    /// meets the poisoned guard), a poisoned one before any ready guard
    /// fails the selection with [`ChannelError::Poisoned`]; so does poison
    /// while the selection waits. A guard whose channel is retired (and
    /// drained) drops out, and the selection fails with
    /// [`ChannelError::Retired`] once every enabled channel guard has;
    /// [`ChannelError::NoGuard`] when no guard is enabled.
    ///
    /// A guard whose counterpart offers all the time wins even when that
    /// counterpart is still coming back from its previous handover (a
    /// writer in another process takes a while to wake up): before taking
    /// a later guard, the selection waits a little for it (see the
    /// module's protocol, step 2). So with two writers that always write,
    /// the first guard is served nearly every time.
    pub fn pri_select(self) -> Result<R, ChannelError> {
        let order: Vec<usize> = (0..self.guards.len()).collect();
        self.run(order).map(|(_, r)| r)
    }

    /// Like [`pri_select`](Self::pri_select) but starting after the guard
    /// `fair` chose last time, so that no ready guard waits forever, and
    /// writers (or readers) that offer all the time share the selections
    /// evenly, whether they are threads or OS processes. Poison follows
    /// the same order: a guard ready before the poisoned one in this
    /// selection's order is chosen.
    ///
    /// ```
    /// use multiproc::csp::{Alternation, Channel, Fair};
    ///
    /// let a = Channel::<u32>::buffered(4)?;
    /// let b = Channel::<u32>::buffered(4)?;
    /// let (ra, rb, wa, wb) = (a.reader(), b.reader(), a.writer(), b.writer());
    /// for _ in 0..2 {
    ///     wa.write(&1)?;
    ///     wb.write(&2)?;
    /// }
    /// let mut fair = Fair::new();
    /// let mut got = Vec::new();
    /// for _ in 0..4 {
    ///     got.push(Alternation::new().input(&ra, |x| x).input(&rb, |x| x).fair_select(&mut fair)?);
    /// }
    /// assert_eq!(got, [1, 2, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fair_select(self, fair: &mut Fair) -> Result<R, ChannelError> {
        let n = self.guards.len().max(1);
        let start = fair.next % n;
        let order: Vec<usize> = (0..self.guards.len()).map(|i| (start + i) % n).collect();
        let (chosen, r) = self.run(order)?;
        fair.next = chosen + 1;
        Ok(r)
    }

    /// Chooses any ready guard (the scan starts at a random guard).
    pub fn select(self) -> Result<R, ChannelError> {
        let n = self.guards.len().max(1);
        let start = random() % n;
        let order: Vec<usize> = (0..self.guards.len()).map(|i| (start + i) % n).collect();
        self.run(order).map(|(_, r)| r)
    }

    fn run(mut self, order: Vec<usize>) -> Result<(usize, R), ChannelError> {
        let (chosen, payload) = self.choose(&order)?;
        if let Some((c, dir)) = guard_chan(&self.guards[chosen].kind) {
            c.handed_over(dir);
        }
        let guard = self.guards.swap_remove(chosen);
        if let Kind::Output(_, Ok(out)) = guard.kind {
            // Taken by a reader; the other guards' spilled messages are
            // unlinked as they drop.
            out.delivered();
        }
        (guard.run)(payload).map(|r| (chosen, r))
    }

    /// Steps 1–5 of the module's protocol; returns the chosen guard and
    /// the message for an input guard.
    fn choose(&self, order: &[usize]) -> Result<(usize, Option<Vec<u8>>), ChannelError> {
        let order: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| self.guards[i].enabled)
            .collect();
        if order.is_empty() {
            return Err(ChannelError::NoGuard);
        }
        for &i in &order {
            if let Kind::Output(_, Err(_)) = &self.guards[i].kind {
                let Kind::Output(_, Err(e)) = &self.guards[i].kind else {
                    unreachable!()
                };
                return Err(clone_error(e));
            }
            if let Kind::Net(g) = &self.guards[i].kind
                && let Some(e) = g.borrow().error()
            {
                return Err(clone_error(e));
            }
        }
        let start = Instant::now();
        // The earliest enabled timeout (its guard index and deadline).
        let timeout = order
            .iter()
            .filter_map(|&i| match self.guards[i].kind {
                // Too long to represent: this guard never fires.
                Kind::Timeout(d) => Deadline::after_from(start, d).instant(),
                _ => None,
            })
            .min();
        let owner = owner_token();
        let mut alt = Round {
            owner,
            watches: Vec::new(),
            offer: None,
            net_offer: None,
        };
        let result = self.rounds(&order, timeout, &mut alt);
        if let Some(i) = alt.net_offer.take()
            && let Kind::Net(g) = &self.guards[i].kind
        {
            // Only reached on an error path, as for a local offer.
            let _ = g.borrow_mut().withdraw();
        }
        alt.clean();
        result
    }

    fn rounds<'r>(
        &'r self,
        order: &[usize],
        timeout: Option<Instant>,
        alt: &mut Round<'r>,
    ) -> Result<(usize, Option<Vec<u8>>), ChannelError>
    where
        'a: 'r,
    {
        let owner = alt.owner;
        // Guards whose channel is retired (and drained): they can never
        // complete and drop out of the selection.
        let mut retired: Vec<usize> = Vec::new();
        // Whether this selection already waited for a returning counterpart.
        let mut waited = false;
        let channel_guards = order
            .iter()
            .filter(|&&i| is_channel_guard(&self.guards[i].kind))
            .count();
        loop {
            // 1. Watch.
            let mut polling = false;
            if alt.watches.is_empty() {
                for &i in order {
                    let (chan, dir) = match &self.guards[i].kind {
                        Kind::Input(c) => (*c, chan::READ),
                        Kind::Output(c, _) => (*c, chan::WRITE),
                        _ => continue,
                    };
                    match chan.post_watch(dir, owner) {
                        Ok(Posted::Record(idx)) => alt.watches.push((i, chan, idx)),
                        // Raised when the scan meets this guard, so that a
                        // guard before it that is ready still wins.
                        Err(chan::OpError::Poisoned) => {}
                        Err(e) => return Err(channel::op_error(e)),
                        Ok(_) => polling = true,
                    }
                }
            } else {
                for (_, chan, idx) in &alt.watches {
                    chan.rearm(*idx);
                }
            }
            for &i in order {
                if let Kind::Net(g) = &self.guards[i].kind
                    && !retired.contains(&i)
                {
                    g.borrow_mut().rewatch(owner)?;
                }
            }
            // 2. Scan. `passed`: channel guards found not ready, which a
            // later guard's completion would pass over.
            let now = Instant::now();
            let mut passed: Vec<usize> = Vec::new();
            let mut rescan = false;
            for &i in order {
                if retired.contains(&i) {
                    continue;
                }
                if !waited && matches!(self.guards[i].kind, Kind::Input(_) | Kind::Output(..)) {
                    // A guard we prefer to this one whose counterpart is
                    // only coming back from its last handover: wait for it
                    // (briefly, once per selection), then scan again.
                    let back = passed.iter().find_map(|&p| {
                        let (c, dir) = guard_chan(&self.guards[p].kind)?;
                        c.returning(dir).map(|r| (p, r))
                    });
                    if let Some((p, r)) = back {
                        alt.await_return(p, r);
                        waited = true;
                        rescan = true;
                        break;
                    }
                }
                let attempt = match &self.guards[i].kind {
                    Kind::Skip => return Ok((i, None)),
                    Kind::Timeout(_) => {
                        if timeout.is_some_and(|t| now >= t) {
                            return Ok((i, None));
                        }
                        continue;
                    }
                    Kind::Input(c) => c.try_op(chan::READ, None, owner),
                    Kind::Output(c, Ok(out)) => c.try_op(chan::WRITE, Some(&out.bytes), owner),
                    Kind::Output(_, Err(_)) => continue,
                    Kind::Net(g) => match g.borrow_mut().try_op(owner)? {
                        OutsideAttempt::Done(v) => Ok(Attempt::Done(v)),
                        OutsideAttempt::NotReady => Ok(Attempt::NotReady),
                        OutsideAttempt::Retired => Err(chan::OpError::Retired),
                    },
                };
                match attempt {
                    Ok(Attempt::Done(v)) => return Ok((i, v)),
                    Ok(Attempt::NotReady) => passed.push(i),
                    Err(chan::OpError::Retired) => {
                        retired.push(i);
                        alt.drop_watch(i);
                    }
                    Err(e) => return Err(channel::op_error(e)),
                }
            }
            if rescan {
                continue;
            }
            if channel_guards > 0 && retired.len() == channel_guards {
                return Err(ChannelError::Retired);
            }
            // 3. Offer.
            let candidate = |want_watch: bool| {
                order
                    .iter()
                    .filter(|i| !retired.contains(i))
                    .filter_map(|&i| match &self.guards[i].kind {
                        Kind::Input(c) => Some((i, *c, chan::READ, None)),
                        Kind::Output(c, Ok(o)) => {
                            Some((i, *c, chan::WRITE, Some(o.bytes.as_slice())))
                        }
                        _ => None,
                    })
                    .filter(|(_, c, dir, _)| !want_watch || c.has_opposite_watch(*dir, owner))
                    .min_by_key(|(_, c, _, _)| c.id())
            };
            // Outside (network) guards first (see `outside.rs`), each time
            // preferring a channel whose other side an alternation watches.
            let net_candidate = |want_watch: bool| {
                order
                    .iter()
                    .filter(|i| !retired.contains(i))
                    .filter_map(|&i| match &self.guards[i].kind {
                        Kind::Net(g) => {
                            let g = g.borrow();
                            (!want_watch || g.watched()).then(|| (i, g.key().to_string()))
                        }
                        _ => None,
                    })
                    .min_by(|a, b| a.1.cmp(&b.1))
                    .map(|(i, _)| i)
            };
            let net_choice = match net_candidate(true) {
                Some(i) => Some(i),
                None if candidate(true).is_some() => None,
                None => net_candidate(false),
            };
            if let Some(i) = net_choice
                && let Kind::Net(g) = &self.guards[i].kind
            {
                g.borrow_mut().offer(owner, timeout)?;
                alt.net_offer = Some(i);
            }
            let local_choice = if net_choice.is_some() {
                None
            } else {
                candidate(true).or_else(|| candidate(false))
            };
            if let Some((i, chan, dir, data)) = local_choice {
                match chan.post_offer(dir, data, owner) {
                    Ok(Posted::Completed(v)) => return Ok((i, v)),
                    Ok(Posted::Record(idx)) => alt.offer = Some((i, chan, idx)),
                    Ok(Posted::NoRoom) => polling = true,
                    // Found at the next scan.
                    Err(chan::OpError::Retired) => continue,
                    Err(e) => return Err(channel::op_error(e)),
                }
            }
            // 4. Sleep, for one slice at most: then look for dead parties
            // (see `Chan::heal`) on every channel and go round again.
            // Channels of one process's threads have no slice (see
            // `Chan::slice`): then only the caller's timeout bounds it.
            let slice = order
                .iter()
                .filter_map(|&i| guard_chan(&self.guards[i].kind))
                .filter_map(|(c, _)| c.slice())
                .min()
                .map(|s| Instant::now() + s);
            let mut deadline = match (timeout, slice) {
                (Some(t), Some(s)) => Some(t.min(s)),
                (t, s) => t.or(s),
            };
            if polling || alt.watches.len() + 1 > sys::waitv::MAX_WORDS {
                let poll = Instant::now() + Duration::from_millis(1);
                deadline = Some(deadline.map_or(poll, |d| d.min(poll)));
            }
            // Network guards: the word each answer bumps, read before
            // looking for answers already in (so none is missed).
            let mut extra: Vec<(&std::sync::atomic::AtomicU32, u32)> = Vec::new();
            let mut answered = false;
            for &i in order {
                if let Kind::Net(g) = &self.guards[i].kind {
                    let g = g.borrow();
                    let word = g.word();
                    extra.push((word, word.load(std::sync::atomic::Ordering::SeqCst)));
                    answered |= g.event();
                }
            }
            if !answered {
                alt.sleep(deadline, &extra);
            }
            if slice.is_some_and(|s| Instant::now() >= s) {
                for &i in order {
                    if let Kind::Input(c) | Kind::Output(c, _) = &self.guards[i].kind {
                        c.heal();
                    }
                }
            }
            // 5. Withdraw.
            if let Some(i) = alt.net_offer.take()
                && let Kind::Net(g) = &self.guards[i].kind
                && let Some(v) = g.borrow_mut().withdraw()?
            {
                return Ok((i, v));
            }
            if let Some((i, chan, idx)) = alt.offer.take() {
                match chan.withdraw(idx) {
                    Withdrawn::Completed(v) => return Ok((i, v)),
                    Withdrawn::Gone | Withdrawn::Aborted => {}
                }
            }
        }
    }
}

/// Whether the guard is on a channel (local or network).
fn is_channel_guard(kind: &Kind<'_>) -> bool {
    match kind {
        Kind::Input(_) | Kind::Output(..) | Kind::Net(_) => true,
        Kind::Timeout(_) | Kind::Skip => false,
    }
}

/// The channel and direction of a channel guard.
fn guard_chan<'c>(kind: &Kind<'c>) -> Option<(&'c Chan, u32)> {
    match kind {
        Kind::Input(c) => Some((*c, chan::READ)),
        Kind::Output(c, Ok(_)) => Some((*c, chan::WRITE)),
        _ => None,
    }
}

/// The records one selection holds.
struct Round<'r> {
    owner: u64,
    /// (guard, channel, record) of every posted watch.
    watches: Vec<(usize, &'r Chan, u32)>,
    offer: Option<(usize, &'r Chan, u32)>,
    /// The guard whose outside offer is posted.
    net_offer: Option<usize>,
}

impl Round<'_> {
    /// Sleeps until one of our records changes, a word of `extra` leaves
    /// its value, or `deadline`.
    fn sleep(&self, deadline: Option<Instant>, extra: &[(&std::sync::atomic::AtomicU32, u32)]) {
        chan::crash_point(chan::CrashPoint::AltSleeping);
        let mut words: Vec<(&std::sync::atomic::AtomicU32, u32)> = Vec::new();
        let offer = self
            .offer
            .as_ref()
            .map(|(_, c, idx)| (*c, *idx, chan::WAITING));
        let all = self
            .watches
            .iter()
            .map(|(_, c, idx)| (*c, *idx, chan::WATCHING))
            .chain(offer);
        let records: Vec<_> = all.collect();
        // Spin and yield a little first: a counterpart is often close.
        let mut backoff = if self.watches.is_empty() {
            Backoff::off()
        } else {
            Backoff::new(&wait::CSP)
        };
        let moved = || {
            extra
                .iter()
                .any(|(w, v)| w.load(std::sync::atomic::Ordering::Acquire) != *v)
        };
        while backoff.snooze() {
            if moved() {
                return;
            }
            if records.iter().any(|(c, idx, expected)| {
                c.state_word(*idx)
                    .load(std::sync::atomic::Ordering::Acquire)
                    & !chan::SLEEPING
                    != *expected
            }) {
                return;
            }
        }
        words.extend(extra.iter().copied());
        for (c, idx, expected) in &records {
            let word = c.state_word(*idx);
            let s = word.load(std::sync::atomic::Ordering::Acquire);
            if s & !chan::SLEEPING != *expected {
                return;
            }
            // Tell whoever changes the word that it must wake us. If the
            // CAS fails the word changed: no need to sleep.
            if !chan::ask_to_be_woken(word, s) {
                return;
            }
            words.push((word, *expected | chan::SLEEPING));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        // A channel poisoned after our records were posted but before the
        // poisoner's scan saw them: do not sleep (see `Chan::poison`).
        if records.iter().any(|(c, _, _)| c.poisoned_now()) || moved() {
            return;
        }
        let words = &words[..words.len().min(sys::waitv::MAX_WORDS)];
        // Whatever the reason for waking, the caller re-checks every record.
        let _: Wake = sys::waitv::wait_any(words, deadline);
    }

    /// Waits for the counterpart of guard `guard`, which is coming back
    /// from its last handover (`back`), until the guard's watch is
    /// notified (the counterpart is ready again) or aborted: spins and
    /// yields a little, then, unless the counterpart is known to be doing
    /// something else (a thread asleep), sleeps for at most
    /// [`chan::RETURN_WAIT`]. Without a watch (every record was in use),
    /// only yields a few times.
    fn await_return(&self, guard: usize, back: chan::Returning) {
        let Some((_, c, idx)) = self.watches.iter().find(|(g, _, _)| *g == guard) else {
            let mut backoff = Backoff::always(&wait::CSP);
            while backoff.snooze() {}
            return;
        };
        let word = c.state_word(*idx);
        let mut backoff = Backoff::new(&wait::CSP);
        let mut deadline = None;
        while word.load(std::sync::atomic::Ordering::Acquire) & !chan::SLEEPING == chan::WATCHING {
            if backoff.snooze() {
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + chan::RETURN_WAIT);
            if let chan::Returning::Recent { pid, tid } = back
                && !sys::liveness::thread_runnable(pid, tid)
            {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let s = word.load(std::sync::atomic::Ordering::Acquire);
            if s & !chan::SLEEPING != chan::WATCHING {
                return;
            }
            // Tell whoever notifies the watch that it must wake us.
            if !chan::ask_to_be_woken(word, s) {
                continue;
            }
            if c.poisoned_now() {
                return;
            }
            let _: Wake =
                sys::waitv::wait_any(&[(word, chan::WATCHING | chan::SLEEPING)], Some(deadline));
        }
    }

    /// Releases every record still held (the offer is resolved by then).
    fn clean(&mut self) {
        if let Some((_, chan, idx)) = self.offer.take() {
            // Only reached on an error path; the offer's fate no longer
            // matters (its channel is poisoned or retired).
            let _ = chan.withdraw(idx);
        }
        for (_, chan, idx) in self.watches.drain(..) {
            chan.release(idx);
        }
    }

    /// Releases the watch of guard `guard` (its channel retired).
    fn drop_watch(&mut self, guard: usize) {
        self.watches.retain(|(g, chan, idx)| {
            if *g == guard {
                chan.release(*idx);
            }
            *g != guard
        });
    }
}

fn clone_error(e: &ChannelError) -> ChannelError {
    match e {
        ChannelError::TooLarge { len, max } => ChannelError::TooLarge {
            len: *len,
            max: *max,
        },
        ChannelError::HandlesNotSupported => ChannelError::HandlesNotSupported,
        ChannelError::Codec(c) => {
            ChannelError::Codec(crate::error::CodecError::Encode(c.to_string()))
        }
        ChannelError::Poisoned => ChannelError::Poisoned,
        ChannelError::Retired => ChannelError::Retired,
        ChannelError::Timeout => ChannelError::Timeout,
        ChannelError::NoGuard => ChannelError::NoGuard,
        #[cfg(feature = "zenoh")]
        ChannelError::Lost(why) => ChannelError::Lost(why.clone()),
    }
}

/// A token unique to this selection across every process sharing the
/// channels: the process id and a per-process counter.
fn owner_token() -> u64 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    (u64::from(sys::process::getpid() as u32) << 32)
        | u64::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A cheap pseudo-random number (xorshift, seeded per thread from the
/// clock and the thread's stack address).
fn random() -> usize {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            let local = 0u8;
            (t ^ (&local as *const u8 as u64)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x as usize
    })
}

impl<R> std::fmt::Debug for Alternation<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alternation")
            .field("guards", &self.guards.len())
            .finish_non_exhaustive()
    }
}
