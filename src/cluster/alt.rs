//! A network channel end as a guard of an
//! [`Alternation`](crate::csp::Alternation), beside local guards.
//!
//! The alternation's protocol (see `csp/alternation.rs`) holds at most one
//! *committed* record at a time, its offer, and otherwise only watches
//! nobody can complete. A network guard keeps that shape, with the
//! channel's home in the place of the channel's shared memory:
//!
//! * **Watch**: a `Watch` query parked at the home, answered `Ready` as
//!   soon as a party of the other side waits there (at once if one does),
//!   or `Again` when it expires (a second at most; then it is sent again).
//!   It completes nothing.
//! * **Scan**: a `Try` query, answered at once: the read or write happened
//!   (against a waiting party or another alternation's offer), or
//!   `NotReady` with whether another alternation watches the other side
//!   (which decides where the offer goes, as `has_opposite_watch` does for
//!   a local channel).
//! * **Offer**: an `Offer` query parked at the home like a blocking read
//!   or write; a counterpart arriving there completes it (the home answers
//!   it with the value, or `Done`). Only while no offer is outstanding does
//!   the scan try guards, so the alternation never takes two.
//! * **Withdraw**: a `Withdraw` query naming the offer's sequence number.
//!   The home handles one query at a time under its lock: either the offer
//!   was completed first (the answer is the offer's own, and that guard is
//!   chosen) or it is removed, recorded as withdrawn (so it can never be
//!   parked later), and the answer is `Withdrawn`. Exactly one of
//!   completion and withdrawal happens, as with the CAS on a local record.
//!
//! The answers arrive on Zenoh's threads: each bumps the end's futex word
//! ([`Signal`]), which the alternation sleeps on beside its local records'
//! words (`futex_waitv`). So does the loss of the home's liveliness token:
//! the next scan then fails the selection with
//! [`ChannelError::Lost`], never a hang.
//!
//! Where the offer goes: a network guard whose other side an alternation
//! watches, else a local one whose other side is watched, else the first
//! network guard, else the first local one (network guards ordered by
//! key, local ones by channel id). Two alternations that could meet on a
//! network channel therefore offer there, and the home matches the second
//! offer against the first.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use zenoh::Wait;

use super::channel::{
    Answer, ENVELOPE, EndCore, Kind, NetReader, NetWriter, Op, PARK, Signal, codec_error, lost,
};
use crate::csp::Alternation;
use crate::csp::ChannelError;
use crate::csp::outside::{OutsideAttempt, OutsideGuard};
use crate::pool::remote;

/// The answer to an asynchronous query: `None` while none came,
/// `Some(None)` once the query ended without a (readable) answer.
struct Pending {
    answer: Mutex<Option<Option<Answer>>>,
    signal: Arc<Signal>,
}

impl Pending {
    fn set(&self, a: Option<Answer>) {
        let mut slot = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(a);
        }
        drop(slot);
        self.signal.bump();
    }

    fn get(&self) -> Option<Option<Answer>> {
        self.answer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Held by the query's callback: when Zenoh drops the callback (the query
/// ended), an unanswered query counts as answered with nothing.
struct Finisher(Arc<Pending>);

impl Drop for Finisher {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// One network guard of an alternation.
pub(crate) struct NetGuard<'a> {
    core: &'a EndCore,
    /// The message of an output guard; `None` for an input guard.
    data: Option<Vec<u8>>,
    /// Encoding the output guard's message failed.
    error: Option<ChannelError>,
    watch: Option<Arc<Pending>>,
    /// The outstanding offer: its sequence number and answer.
    offer: Option<(u64, Arc<Pending>)>,
    /// From the last `Try`: another alternation watches the other side.
    watched: bool,
    key: String,
}

impl<'a> NetGuard<'a> {
    /// An input guard on `reader`.
    pub(crate) fn input<T>(reader: &'a NetReader<T>) -> Self {
        Self::new(&reader.core, None, None)
    }

    /// An output guard on `writer` offering `value`.
    pub(crate) fn output<T: Serialize>(writer: &'a NetWriter<T>, value: &T) -> Self {
        let cap = writer.core.session.max_payload();
        match remote::encode(value, cap) {
            Ok(b) => Self::new(&writer.core, Some(b), None),
            Err(e) => Self::new(&writer.core, Some(Vec::new()), Some(codec_error(e))),
        }
    }

    fn new(core: &'a EndCore, data: Option<Vec<u8>>, error: Option<ChannelError>) -> Self {
        NetGuard {
            key: core.key("op"),
            core,
            data,
            error,
            watch: None,
            offer: None,
            watched: false,
        }
    }

    fn home_gone(&self) -> ChannelError {
        lost(format!("the home of channel {:?} is gone", self.core.name))
    }

    fn next_seq(&self) -> u64 {
        let mut seq = self.core.seq.lock().unwrap_or_else(|e| e.into_inner());
        *seq += 1;
        *seq
    }

    fn op(&self, seq: u64, wait: Duration, kind: Kind) -> Op {
        Op {
            end: self.core.id.clone(),
            seq,
            wait_ms: wait.as_millis() as u64,
            kind,
        }
    }

    /// Sends `op` without waiting for the answer.
    fn post(&self, op: &Op) -> Result<Arc<Pending>, ChannelError> {
        let cap = self.core.session.max_payload();
        let bytes = remote::encode(op, cap + ENVELOPE).map_err(codec_error)?;
        let pending = Arc::new(Pending {
            answer: Mutex::new(None),
            signal: self.core.signal.clone(),
        });
        let finisher = Finisher(pending.clone());
        let limit = cap + ENVELOPE;
        self.core
            .session
            .z()
            .get(&self.key)
            .payload(bytes)
            .timeout(Duration::from_millis(op.wait_ms) + Duration::from_secs(10))
            .callback(move |reply| {
                let answer = reply
                    .into_result()
                    .ok()
                    .and_then(|s| remote::decode::<Answer>(&s.payload().to_bytes(), limit).ok());
                finisher.0.set(answer);
            })
            .wait()
            .map_err(|e| lost(e.to_string()))?;
        Ok(pending)
    }

    /// Asks the home until it answers (the same sequence number each time,
    /// so a lost answer never makes the operation happen twice).
    fn ask(&self, op: &Op) -> Result<Answer, ChannelError> {
        loop {
            if self.core.signal.home_lost.load(Ordering::SeqCst) {
                return Err(self.home_gone());
            }
            match self.core.ask(op)? {
                // Nobody answered, but the home lives: ask again.
                Answer::Again => continue,
                a => return Ok(a),
            }
        }
    }
}

impl<'a> OutsideGuard<'a> for NetGuard<'a> {
    /// Why this guard cannot take part (its message did not encode).
    fn error(&self) -> Option<&ChannelError> {
        self.error.as_ref()
    }

    /// The channel's key: orders network guards for the offer.
    fn key(&self) -> &str {
        &self.key
    }

    /// Whether the last `Try` saw another alternation watching the other
    /// side.
    fn watched(&self) -> bool {
        self.watched
    }

    /// The futex word bumped when an answer arrives or the home is lost.
    fn word(&self) -> &'a AtomicU32 {
        &self.core.signal.word
    }

    /// Whether something the alternation waits for happened: the watch or
    /// the offer was answered, or the home is gone.
    fn event(&self) -> bool {
        self.core.signal.home_lost.load(Ordering::SeqCst)
            || self.watch.as_ref().is_some_and(|p| p.get().is_some())
            || self.offer.as_ref().is_some_and(|(_, p)| p.get().is_some())
    }

    /// Keeps a watch parked at the home: sends a new one unless one is
    /// still waiting there.
    fn rewatch(&mut self, owner: u64) -> Result<(), ChannelError> {
        if self.watch.as_ref().is_some_and(|p| p.get().is_none()) {
            return Ok(());
        }
        let op = self.op(0, PARK, Kind::Watch(owner));
        self.watch = Some(self.post(&op)?);
        Ok(())
    }

    /// The read or write, if it can happen at once.
    fn try_op(&mut self, owner: u64) -> Result<OutsideAttempt, ChannelError> {
        if self.core.signal.home_lost.load(Ordering::SeqCst) {
            return Err(self.home_gone());
        }
        let seq = self.next_seq();
        let op = self.op(seq, Duration::ZERO, Kind::Try(self.data.clone(), owner));
        match self.ask(&op)? {
            Answer::Value(v) => Ok(OutsideAttempt::Done(Some(v))),
            Answer::Done => Ok(OutsideAttempt::Done(None)),
            Answer::NotReady { watched } => {
                self.watched = watched;
                Ok(OutsideAttempt::NotReady)
            }
            Answer::Retired => Ok(OutsideAttempt::Retired),
            a => Err(self.core.answer_error(a)),
        }
    }

    /// Parks this guard's offer at the home until `deadline` (a second at
    /// most).
    fn offer(&mut self, owner: u64, deadline: Option<Instant>) -> Result<(), ChannelError> {
        let left = deadline.map_or(PARK, |d| d.saturating_duration_since(Instant::now()));
        let seq = self.next_seq();
        let op = self.op(seq, left.min(PARK), Kind::Offer(self.data.clone(), owner));
        let pending = self.post(&op)?;
        self.offer = Some((seq, pending));
        Ok(())
    }

    /// Takes the offer back. `Some(message)`: a counterpart completed it
    /// first (this guard is chosen); `None`: it did not happen.
    fn withdraw(&mut self) -> Result<Option<Option<Vec<u8>>>, ChannelError> {
        let Some((seq, pending)) = self.offer.take() else {
            return Ok(None);
        };
        let answer = match pending.get() {
            // Answered `Again`: it expired at the home, nobody took it.
            Some(Some(Answer::Again)) => return Ok(None),
            Some(Some(a)) => a,
            _ => {
                let op = self.op(seq, Duration::ZERO, Kind::Withdraw);
                self.ask(&op)?
            }
        };
        match answer {
            Answer::Value(v) => Ok(Some(Some(v))),
            Answer::Done => Ok(Some(None)),
            // The next scan finds the channel retired.
            Answer::Withdrawn | Answer::Retired => Ok(None),
            a => Err(self.core.answer_error(a)),
        }
    }
}

/// Network guards in an [`Alternation`], beside its local guards.
impl<'a, R> Alternation<'a, R> {
    /// An input guard on a network channel's reading end (feature
    /// `zenoh`): when chosen, the value read is passed to `action`. Its
    /// channel's home arbitrates, so that exactly one guard of the
    /// alternation is taken, local or network.
    ///
    /// ```no_run
    /// use multiproc::cluster::{ClusterConfig, NetReader};
    /// use multiproc::csp::{Alternation, Channel};
    ///
    /// let session = ClusterConfig::connect("tcp/127.0.0.1:7447").open()?;
    /// let remote: NetReader<u32> = NetReader::open(&session, "jobs")?;
    /// let local = Channel::<u32>::new()?;
    /// let r = local.reader();
    /// let got = Alternation::new()
    ///     .net_input(&remote, |x| ("remote", x))
    ///     .input(&r, |x| ("local", x))
    ///     .select()?;
    /// println!("{got:?}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn net_input<T: DeserializeOwned>(
        self,
        reader: &'a NetReader<T>,
        action: impl FnOnce(T) -> R + 'a,
    ) -> Self {
        self.net_input_if(true, reader, action)
    }

    /// A network input guard enabled only when `precondition` holds.
    pub fn net_input_if<T: DeserializeOwned>(
        self,
        precondition: bool,
        reader: &'a NetReader<T>,
        action: impl FnOnce(T) -> R + 'a,
    ) -> Self {
        self.outside_guard(
            precondition,
            Box::new(NetGuard::input(reader)),
            move |bytes| Ok(action(decode(reader, bytes)?)),
        )
    }

    /// An output guard on a network channel's writing end (feature
    /// `zenoh`): when chosen, `value` has been taken by a reader, then
    /// `action` runs.
    pub fn net_output<T: Serialize>(
        self,
        writer: &'a NetWriter<T>,
        value: &T,
        action: impl FnOnce() -> R + 'a,
    ) -> Self {
        self.net_output_if(true, writer, value, action)
    }

    /// A network output guard enabled only when `precondition` holds.
    pub fn net_output_if<T: Serialize>(
        self,
        precondition: bool,
        writer: &'a NetWriter<T>,
        value: &T,
        action: impl FnOnce() -> R + 'a,
    ) -> Self {
        self.outside_guard(
            precondition,
            Box::new(NetGuard::output(writer, value)),
            move |_| Ok(action()),
        )
    }
}

/// Decodes a message read by an input guard on `reader`.
pub(crate) fn decode<T: DeserializeOwned>(
    reader: &NetReader<T>,
    bytes: Option<Vec<u8>>,
) -> Result<T, ChannelError> {
    let cap = reader.core.session.max_payload();
    remote::decode(&bytes.unwrap_or_default(), cap).map_err(codec_error)
}
