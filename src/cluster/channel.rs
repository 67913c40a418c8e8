//! CSP channels across hosts: a named channel with a *home* (PyCSP's
//! model). The home is the process that made the [`NetChannel`]; it holds
//! the waiting readers and writers, the poison and the retire state.
//! A read or a write is a Zenoh query to the home, and the home's reply is
//! the handshake: a writer's query is answered only once a reader has
//! taken its value, so rendezvous semantics hold across hosts, for any
//! number of readers and writers on any hosts.
//!
//! Keys under the namespace `ns`: `ns/chan/<name>/op` (the home's
//! queryable), `ns/chan/<name>/home` (its liveliness token),
//! `ns/chan/<name>/end/<id>` (each end's token).
//!
//! * A query waits at the home at most a second, then is answered
//!   "again" and re-sent with the same sequence number; the home answers a
//!   repeated operation that already happened with its first answer, so a
//!   reply lost on the way never makes a value travel twice or vanish.
//! * A home whose token vanishes (its process, host or link is gone) makes
//!   every operation fail with [`ChannelError::Lost`]. When every reader
//!   (writer) that joined is lost, waiting writers (readers) fail with
//!   `Lost` too; a lost end on a side with live ends left changes nothing
//!   for the others (any-to-any).
//! * An end is one party of the channel: it may be shared between threads
//!   (it is `Send` and `Sync`), but it has one operation at the home at a
//!   time; a second thread's operation on the same end waits until the
//!   first has happened (the end's sequence-number lock is held through
//!   the operation). Threads that should wait at the home together open
//!   an end each.
//! * Network ends take part in an [`Alternation`](crate::csp::Alternation)
//!   beside local guards ([`net_input`](crate::csp::Alternation::net_input),
//!   [`net_output`](crate::csp::Alternation::net_output)); the home
//!   arbitrates their offers so that exactly one guard is taken (see
//!   `cluster/alt.rs`).

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zenoh::Wait;
use zenoh::query::Query;
use zenoh::sample::SampleKind;

use super::ClusterError;
use super::net::{Pending, Session, decode_query, key_safe};
use crate::csp::ChannelError;
use crate::error::CodecError;
use crate::pool::remote::{self, NetCodec};

/// Longest wait of one query at the home.
pub(super) const PARK: Duration = Duration::from_secs(1);
/// Envelope bytes above the payload cap.
pub(super) const ENVELOPE: usize = 4 << 10;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Reader,
    Writer,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) enum Kind {
    Join(Side),
    Read,
    Write(Vec<u8>),
    Poison,
    Retire(Side),
    /// An alternation's attempt: a read (`None`) or write that happens at
    /// once or not at all; answered `NotReady` (never parked).
    Try(Option<Vec<u8>>, u64),
    /// An alternation's offer (owner token): a read or write parked at the
    /// home until a counterpart completes it, it expires (`Again`), or
    /// [`Kind::Withdraw`] takes it back.
    Offer(Option<Vec<u8>>, u64),
    /// Takes back the offer with the operation's sequence number: answered
    /// `Withdrawn`, or the offer's own answer if it was completed first.
    Withdraw,
    /// An alternation's watch (owner token): parked until the other side
    /// has a party waiting (`Ready`), or it expires (`Again`). Completes
    /// nothing.
    Watch(u64),
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct Op {
    pub(super) end: String,
    pub(super) seq: u64,
    /// How long the query may wait at the home, in milliseconds.
    pub(super) wait_ms: u64,
    pub(super) kind: Kind,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) enum Answer {
    Done,
    Value(Vec<u8>),
    Again,
    Poisoned,
    Retired,
    Lost(String),
    /// A `Try` found no counterpart; `watched`: an alternation of another
    /// owner watches the other side.
    NotReady {
        watched: bool,
    },
    /// A watch's counterpart is waiting.
    Ready,
    /// The offer was taken back before anyone completed it.
    Withdrawn,
}

struct Waiting {
    end: String,
    seq: u64,
    value: Option<Vec<u8>>,
    query: Query,
    until: Instant,
    /// The alternation that offered it (0: a plain read or write).
    owner: u64,
}

/// A parked watch of an alternation.
struct Watcher {
    end: String,
    side: Side,
    owner: u64,
    query: Query,
    until: Instant,
}

#[derive(Default)]
struct Home {
    readers: VecDeque<Waiting>,
    writers: VecDeque<Waiting>,
    watchers: Vec<Watcher>,
    /// Each end's last completed operation and its answer.
    completed: HashMap<String, (u64, Answer)>,
    /// Live ends and their side.
    ends: HashMap<String, Side>,
    joined: [usize; 2],
    retired: [usize; 2],
    lost: [usize; 2],
    poisoned: bool,
    retired_for_good: bool,
    /// Why the channel was lost (every end of one side gone).
    lost_why: Option<String>,
}

type Replies = Vec<(Query, Answer)>;

fn side_index(s: Side) -> usize {
    match s {
        Side::Reader => 0,
        Side::Writer => 1,
    }
}

impl Home {
    /// Whether the channel is retired: every end of one side that joined
    /// has retired (or was lost, with at least one retired). Once retired,
    /// always retired, whoever joins later.
    fn retired(&mut self) -> bool {
        if !self.retired_for_good {
            self.retired_for_good = (0..2).any(|i| {
                self.joined[i] > 0
                    && self.retired[i] > 0
                    && self.retired[i] + self.lost[i] >= self.joined[i]
            });
        }
        self.retired_for_good
    }

    /// The answer every operation gets once the channel has ended.
    fn ended(&mut self) -> Option<Answer> {
        if self.poisoned {
            Some(Answer::Poisoned)
        } else if self.retired() {
            Some(Answer::Retired)
        } else {
            self.lost_why.clone().map(Answer::Lost)
        }
    }

    fn finish(&mut self, out: &mut Replies) {
        if let Some(a) = self.ended() {
            for w in self.readers.drain(..).chain(self.writers.drain(..)) {
                self.completed.insert(w.end.clone(), (w.seq, a.clone()));
                out.push((w.query, a.clone()));
            }
            for w in self.watchers.drain(..) {
                out.push((w.query, a.clone()));
            }
        }
    }

    /// Whether a party of `side` other than `owner`'s waits now.
    fn waiting(&self, side: Side, owner: u64) -> bool {
        let q = match side {
            Side::Reader => &self.readers,
            Side::Writer => &self.writers,
        };
        q.iter().any(|w| owner == 0 || w.owner != owner)
    }

    /// Whether an alternation other than `owner` watches for `side`
    /// (its ends are of the other side).
    fn watched(&self, side: Side, owner: u64) -> bool {
        self.watchers
            .iter()
            .any(|w| w.side != side && w.owner != owner)
    }

    /// A party of `side` (alternation `owner`, or 0) now waits: tell the
    /// watches of the other side.
    fn tell_watchers(&mut self, side: Side, owner: u64, out: &mut Replies) {
        let mut keep = Vec::with_capacity(self.watchers.len());
        for w in self.watchers.drain(..) {
            if w.side != side && (owner == 0 || w.owner != owner) {
                out.push((w.query, Answer::Ready));
            } else {
                keep.push(w);
            }
        }
        self.watchers = keep;
    }

    /// Takes back `end`'s offer `seq` unless it was completed first.
    fn withdraw(&mut self, end: &str, seq: u64, out: &mut Replies) -> Answer {
        if let Some((s, a)) = self.completed.get(end)
            && *s == seq
        {
            return a.clone();
        }
        for q in [&mut self.readers, &mut self.writers] {
            if let Some(i) = q.iter().position(|w| w.end == end && w.seq == seq)
                && let Some(old) = q.remove(i)
            {
                out.push((old.query, Answer::Again));
            }
        }
        // Recorded, so that the offer, should it arrive after this (it
        // cannot overtake it on one session, but a resent one could), is
        // answered `Withdrawn` instead of being parked.
        self.completed
            .insert(end.to_string(), (seq, Answer::Withdrawn));
        Answer::Withdrawn
    }

    fn done(&mut self, end: &str, seq: u64, a: Answer, query: Query, out: &mut Replies) {
        self.completed.insert(end.to_string(), (seq, a.clone()));
        out.push((query, a));
    }

    fn op(&mut self, op: Op, query: Query, out: &mut Replies) {
        match op.kind {
            Kind::Withdraw => {
                let a = self.withdraw(&op.end, op.seq, out);
                out.push((query, a));
                return;
            }
            Kind::Watch(owner) => {
                let Some(&side) = self.ends.get(&op.end) else {
                    out.push((query, Answer::Lost("this end never joined".into())));
                    return;
                };
                if let Some(a) = self.ended() {
                    out.push((query, a));
                    return;
                }
                // One watch per end: a new one replaces the old.
                if let Some(i) = self.watchers.iter().position(|w| w.end == op.end) {
                    let old = self.watchers.swap_remove(i);
                    out.push((old.query, Answer::Again));
                }
                let other = match side {
                    Side::Reader => Side::Writer,
                    Side::Writer => Side::Reader,
                };
                if self.waiting(other, owner) {
                    out.push((query, Answer::Ready));
                } else {
                    self.watchers.push(Watcher {
                        end: op.end,
                        side,
                        owner,
                        query,
                        until: Instant::now() + Duration::from_millis(op.wait_ms).min(PARK),
                    });
                }
                return;
            }
            _ => {}
        }
        if let Some((seq, a)) = self.completed.get(&op.end)
            && *seq == op.seq
        {
            out.push((query, a.clone()));
            return;
        }
        // A repeated operation still waiting: the new query replaces it.
        for q in [&mut self.readers, &mut self.writers] {
            if let Some(i) = q.iter().position(|w| w.end == op.end)
                && let Some(old) = q.remove(i)
            {
                out.push((old.query, Answer::Again));
            }
        }
        let (end, seq) = (op.end, op.seq);
        match op.kind {
            Kind::Join(side) => {
                self.ends.insert(end.clone(), side);
                self.joined[side_index(side)] += 1;
                self.done(&end, seq, Answer::Done, query, out);
            }
            Kind::Poison => {
                self.poisoned = true;
                self.done(&end, seq, Answer::Done, query, out);
                self.finish(out);
            }
            Kind::Retire(side) => {
                if self.ends.remove(&end).is_some() {
                    self.retired[side_index(side)] += 1;
                }
                self.done(&end, seq, Answer::Done, query, out);
                self.finish(out);
            }
            Kind::Withdraw | Kind::Watch(_) => {}
            kind @ (Kind::Read | Kind::Write(_) | Kind::Try(..) | Kind::Offer(..)) => {
                if let Some(a) = self.ended() {
                    self.done(&end, seq, a, query, out);
                    return;
                }
                let (value, owner, trying, wait_ms) = match kind {
                    Kind::Write(v) => (Some(v), 0, false, op.wait_ms),
                    Kind::Try(v, owner) => (v, owner, true, 0),
                    Kind::Offer(v, owner) => (v, owner, false, op.wait_ms),
                    _ => (None, 0, false, op.wait_ms),
                };
                let reading = value.is_none();
                let partner = if reading {
                    self.writers.pop_front()
                } else {
                    self.readers.pop_front()
                };
                match (partner, value) {
                    (Some(p), None) => {
                        // I read what the waiting writer holds.
                        let v = p.value.unwrap_or_default();
                        self.done(&p.end, p.seq, Answer::Done, p.query, out);
                        self.done(&end, seq, Answer::Value(v), query, out);
                    }
                    (Some(p), Some(v)) => {
                        // The waiting reader takes what I write.
                        self.done(&p.end, p.seq, Answer::Value(v), p.query, out);
                        self.done(&end, seq, Answer::Done, query, out);
                    }
                    (None, _) if trying => {
                        let side = if reading { Side::Reader } else { Side::Writer };
                        let watched = self.watched(side, owner);
                        self.done(&end, seq, Answer::NotReady { watched }, query, out);
                    }
                    (None, _) if wait_ms == 0 => out.push((query, Answer::Again)),
                    (None, value) => {
                        let w = Waiting {
                            end,
                            seq,
                            value,
                            query,
                            until: Instant::now() + Duration::from_millis(wait_ms).min(PARK),
                            owner,
                        };
                        let side = if reading {
                            self.readers.push_back(w);
                            Side::Reader
                        } else {
                            self.writers.push_back(w);
                            Side::Writer
                        };
                        self.tell_watchers(side, owner, out);
                    }
                }
            }
        }
    }

    fn end_lost(&mut self, end: &str, out: &mut Replies) {
        self.completed.remove(end);
        for q in [&mut self.readers, &mut self.writers] {
            q.retain(|w| w.end != end);
        }
        self.watchers.retain(|w| w.end != end);
        let Some(side) = self.ends.remove(end) else {
            return;
        };
        let i = side_index(side);
        self.lost[i] += 1;
        if self.retired[i] + self.lost[i] >= self.joined[i] && self.lost_why.is_none() {
            self.lost_why = Some(format!(
                "every {} of the channel was lost (the last: {end})",
                if side == Side::Reader {
                    "reader"
                } else {
                    "writer"
                }
            ));
            self.finish(out);
        }
    }

    fn expire(&mut self, out: &mut Replies) {
        let now = Instant::now();
        for q in [&mut self.readers, &mut self.writers] {
            let mut keep = VecDeque::with_capacity(q.len());
            for w in q.drain(..) {
                if w.until <= now {
                    out.push((w.query, Answer::Again));
                } else {
                    keep.push_back(w);
                }
            }
            *q = keep;
        }
        let mut keep = Vec::with_capacity(self.watchers.len());
        for w in self.watchers.drain(..) {
            if w.until <= now {
                out.push((w.query, Answer::Again));
            } else {
                keep.push(w);
            }
        }
        self.watchers = keep;
    }
}

fn send(out: Replies) {
    for (q, a) in out {
        match remote::encode(&a, usize::MAX) {
            Ok(b) => {
                let _ = q.reply(q.key_expr().clone(), b).wait();
            }
            Err(e) => {
                let _ = q.reply_err(format!("{e:?}")).wait();
            }
        }
    }
}

struct HomeShared {
    state: Mutex<Home>,
    cap: usize,
}

impl HomeShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Home> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct HomeHandles {
    _queryable: zenoh::query::Queryable<()>,
    _subscriber: zenoh::pubsub::Subscriber<()>,
    _token: zenoh::liveliness::LivelinessToken,
    shared: Arc<HomeShared>,
}

/// A named CSP channel across hosts, held by its home process.
///
/// Made with [`NetChannel::home`] by one process; any process of the
/// cluster opens ends with [`NetReader::open`] and [`NetWriter::open`]
/// (the home can use [`reader`](Self::reader) and
/// [`writer`](Self::writer)). Dropping the `NetChannel` ends the channel:
/// every end then fails with [`ChannelError::Lost`].
///
/// ```no_run
/// use multiproc::cluster::{ClusterConfig, NetChannel, NetReader};
///
/// let session = ClusterConfig::connect("tcp/127.0.0.1:7447").open()?;
/// let chan: NetChannel<String> = NetChannel::home(&session, "greetings")?;
/// let w = chan.writer()?;
/// // elsewhere: NetReader::<String>::open(&session, "greetings")?.read()
/// # let _ = w;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NetChannel<T> {
    session: Session,
    name: String,
    handles: Option<HomeHandles>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for NetChannel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetChannel")
            .field("name", &self.name)
            .finish()
    }
}

fn zerr(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Zenoh(e.to_string())
}

fn check_name(name: &str) -> Result<(), ClusterError> {
    if name.is_empty() || key_safe(name) != name {
        return Err(ClusterError::Config(format!(
            "channel name {name:?} must be non-empty and hold none of / * $ ? # or spaces"
        )));
    }
    Ok(())
}

impl<T: Serialize + DeserializeOwned> NetChannel<T> {
    /// Makes this process the home of channel `name`. A second home for
    /// the same name in the cluster is refused.
    pub fn home(session: &Session, name: &str) -> Result<Self, ClusterError> {
        check_name(name)?;
        let base = session.key(&format!("chan/{name}"));
        if session.alive(&format!("{base}/home"), Duration::from_secs(1))? {
            return Err(ClusterError::Config(format!(
                "channel {name:?} already has a home"
            )));
        }
        let shared = Arc::new(HomeShared {
            state: Mutex::new(Home::default()),
            cap: session.max_payload(),
        });
        let z = session.z();
        let weak: Weak<HomeShared> = Arc::downgrade(&shared);
        let subscriber = z
            .liveliness()
            .declare_subscriber(format!("{base}/end/*"))
            .callback(move |sample| {
                let Some(h) = weak.upgrade() else { return };
                if sample.kind() != SampleKind::Delete {
                    return;
                }
                let key = sample.key_expr().as_str();
                let Some(end) = key.rsplit('/').next() else {
                    return;
                };
                let mut out = Replies::new();
                h.lock().end_lost(end, &mut out);
                send(out);
            })
            .wait()
            .map_err(zerr)?;
        let weak: Weak<HomeShared> = Arc::downgrade(&shared);
        let queryable = z
            .declare_queryable(format!("{base}/op"))
            .callback(move |query| {
                let Some(h) = weak.upgrade() else { return };
                let Some(op) = decode_query(&query, h.cap + ENVELOPE, "channel operation") else {
                    return;
                };
                let mut out = Replies::new();
                h.lock().op(op, query, &mut out);
                send(out);
            })
            .wait()
            .map_err(zerr)?;
        let token = z
            .liveliness()
            .declare_token(format!("{base}/home"))
            .wait()
            .map_err(zerr)?;
        let weak: Weak<HomeShared> = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("multiproc-net-chan".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let Some(h) = weak.upgrade() else { return };
                    let mut out = Replies::new();
                    h.lock().expire(&mut out);
                    send(out);
                }
            })
            .map_err(zerr)?;
        Ok(NetChannel {
            session: session.clone(),
            name: name.to_string(),
            handles: Some(HomeHandles {
                _queryable: queryable,
                _subscriber: subscriber,
                _token: token,
                shared,
            }),
            _t: PhantomData,
        })
    }

    /// A reading end of this channel.
    pub fn reader(&self) -> Result<NetReader<T>, ChannelError> {
        NetReader::open(&self.session, &self.name)
    }

    /// A writing end of this channel.
    pub fn writer(&self) -> Result<NetWriter<T>, ChannelError> {
        NetWriter::open(&self.session, &self.name)
    }

    /// Poisons the channel: every operation on any end fails with
    /// [`ChannelError::Poisoned`].
    pub fn poison(&self) {
        if let Some(h) = &self.handles {
            let mut out = Replies::new();
            let mut st = h.shared.lock();
            st.poisoned = true;
            st.finish(&mut out);
            drop(st);
            send(out);
        }
    }

    /// Whether the channel is poisoned.
    pub fn is_poisoned(&self) -> bool {
        self.handles
            .as_ref()
            .is_some_and(|h| h.shared.lock().poisoned)
    }

    /// Whether the channel is retired (every end of one side retired).
    pub fn is_retired(&self) -> bool {
        self.handles
            .as_ref()
            .is_some_and(|h| h.shared.lock().retired())
    }
}

impl<T> Drop for NetChannel<T> {
    fn drop(&mut self) {
        if let Some(h) = self.handles.take() {
            let mut out = Replies::new();
            {
                let mut st = h.shared.lock();
                st.lost_why = Some(format!("the home of channel {:?} closed it", self.name));
                st.finish(&mut out);
            }
            send(out);
        }
    }
}

/// One end's connection to a channel's home.
pub(super) struct EndCore {
    pub(super) session: Session,
    pub(super) name: String,
    pub(super) id: String,
    side: Side,
    pub(super) seq: Mutex<u64>,
    _token: zenoh::liveliness::LivelinessToken,
    retired: std::sync::atomic::AtomicBool,
    /// Bumped by the answers of an alternation's queries and by the loss
    /// of the home (see `cluster/alt.rs`).
    pub(super) signal: Arc<Signal>,
    _home_watch: zenoh::pubsub::Subscriber<()>,
    /// Queries the home's `op` key.
    querier: zenoh::query::Querier<'static>,
}

/// How long a query to a home waits for its answer: its longest wait at
/// the home, and room for the network.
const ASK_TIMEOUT: Duration = PARK.saturating_add(Duration::from_secs(10));

/// A futex word an alternation sleeps on, bumped when something it waits
/// for at a home happened.
#[derive(Default)]
pub(super) struct Signal {
    pub(super) word: std::sync::atomic::AtomicU32,
    /// The home's liveliness token vanished.
    pub(super) home_lost: std::sync::atomic::AtomicBool,
}

impl Signal {
    pub(super) fn bump(&self) {
        self.word.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        crate::sys::futex::wake_all(&self.word);
    }
}

pub(super) fn lost(why: impl Into<String>) -> ChannelError {
    ChannelError::Lost(why.into())
}

impl EndCore {
    fn open(session: &Session, name: &str, side: Side) -> Result<Self, ChannelError> {
        check_name(name).map_err(|e| lost(e.to_string()))?;
        let tag = crate::sys::random::hex(6).map_err(|e| lost(e.to_string()))?;
        let id = format!("{}.{}.{tag}", session.host(), crate::sys::process::getpid());
        let token = session
            .z()
            .liveliness()
            .declare_token(session.key(&format!("chan/{name}/end/{id}")))
            .wait()
            .map_err(|e| lost(e.to_string()))?;
        let signal = Arc::new(Signal::default());
        let weak = Arc::downgrade(&signal);
        let home_watch = session
            .z()
            .liveliness()
            .declare_subscriber(session.key(&format!("chan/{name}/home")))
            .callback(move |sample| {
                if sample.kind() == SampleKind::Delete
                    && let Some(s) = weak.upgrade()
                {
                    s.home_lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    s.bump();
                }
            })
            .wait()
            .map_err(|e| lost(e.to_string()))?;
        let querier = session
            .querier(session.key(&format!("chan/{name}/op")), ASK_TIMEOUT)
            .map_err(|e| lost(e.to_string()))?;
        let core = EndCore {
            querier,
            session: session.clone(),
            name: name.to_string(),
            id,
            side,
            seq: Mutex::new(0),
            _token: token,
            retired: std::sync::atomic::AtomicBool::new(false),
            signal,
            _home_watch: home_watch,
        };
        match core.call(
            Kind::Join(side),
            Some(Instant::now() + Duration::from_secs(10)),
        )? {
            Answer::Done => Ok(core),
            a => Err(core.answer_error(a)),
        }
    }

    pub(super) fn key(&self, rest: &str) -> String {
        self.session.key(&format!("chan/{}/{rest}", self.name))
    }

    pub(super) fn answer_error(&self, a: Answer) -> ChannelError {
        match a {
            Answer::Poisoned => ChannelError::Poisoned,
            Answer::Retired => ChannelError::Retired,
            Answer::Lost(why) => lost(why),
            Answer::Again => ChannelError::Timeout,
            Answer::Done
            | Answer::Value(_)
            | Answer::NotReady { .. }
            | Answer::Ready
            | Answer::Withdrawn => lost("unexpected answer from the home"),
        }
    }

    /// Asks the home once; `Again` when nobody answered but the home is
    /// alive.
    pub(super) fn ask(&self, op: &Op) -> Result<Answer, ChannelError> {
        let cap = self.session.max_payload();
        let bytes = remote::encode(op, cap + ENVELOPE).map_err(codec_error)?;
        let replies = self
            .querier
            .get()
            .payload(bytes)
            .wait()
            .map_err(|e| lost(e.to_string()))?;
        let reply = Pending::new(replies, ASK_TIMEOUT)
            .wait()
            .map_err(|e| lost(e.to_string()))?;
        match reply {
            Some(b) => remote::decode::<Answer>(&b, cap + ENVELOPE).map_err(codec_error),
            None => {
                let alive = self
                    .session
                    .alive(&self.key("home"), Duration::from_secs(2))
                    .map_err(|e| lost(e.to_string()))?;
                if alive {
                    Ok(Answer::Again)
                } else {
                    Err(lost(format!("the home of channel {:?} is gone", self.name)))
                }
            }
        }
    }

    /// Runs one operation at the home until it happens, the channel ends,
    /// or `deadline` passes (then the operation is withdrawn: it did not
    /// happen, and the answer is `Again`).
    fn call(&self, kind: Kind, deadline: Option<Instant>) -> Result<Answer, ChannelError> {
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        *seq += 1;
        let mut op = Op {
            end: self.id.clone(),
            seq: *seq,
            wait_ms: 0,
            kind,
        };
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            op.wait_ms = left.map_or(PARK, |l| l.min(PARK)).as_millis() as u64;
            match self.ask(&op)? {
                Answer::Again if op.wait_ms == 0 => return Ok(Answer::Again),
                Answer::Again => {}
                a => return Ok(a),
            }
        }
    }

    fn retire(&self) {
        if !self.retired.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let _ = self.call(
                Kind::Retire(self.side),
                Some(Instant::now() + Duration::from_secs(5)),
            );
        }
    }
}

pub(super) fn codec_error(e: NetCodec) -> ChannelError {
    match e {
        NetCodec::TooLarge { size, limit } => ChannelError::TooLarge {
            len: size as usize,
            max: limit as usize,
        },
        NetCodec::Encode(m) => ChannelError::Codec(CodecError::Encode(m)),
        NetCodec::Decode(m) => ChannelError::Codec(CodecError::Decode(m)),
    }
}

/// What [`NetReader`] and [`NetWriter`] share, for an end `$end` over
/// `core: EndCore`: `Debug`, poisoning, and retiring by hand or on drop.
macro_rules! net_end_common {
    ($end:ident) => {
        impl<T> std::fmt::Debug for $end<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($end))
                    .field("channel", &self.core.name)
                    .finish()
            }
        }

        impl<T> $end<T> {
            /// Poisons the channel.
            pub fn poison(&self) {
                let _ = self
                    .core
                    .call(Kind::Poison, Some(Instant::now() + Duration::from_secs(5)));
            }

            /// Retires this end (as dropping it does).
            pub fn retire(self) {
                self.core.retire();
            }
        }

        impl<T> Drop for $end<T> {
            fn drop(&mut self) {
                self.core.retire();
            }
        }
    };
}

/// The reading end of a [`NetChannel`], in any process of the cluster.
/// Dropping it (or [`retire`](Self::retire)) retires it. It does one
/// operation at a time: threads sharing it take turns (open an end per
/// thread for readers that wait together).
pub struct NetReader<T> {
    pub(super) core: EndCore,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> NetReader<T> {
    /// Opens a reading end of the channel `name`, whose home is somewhere
    /// in the session's cluster.
    pub fn open(session: &Session, name: &str) -> Result<Self, ChannelError> {
        Ok(NetReader {
            core: EndCore::open(session, name, Side::Reader)?,
            _t: PhantomData,
        })
    }

    fn read_until(&self, deadline: Option<Instant>) -> Result<T, ChannelError> {
        match self.core.call(Kind::Read, deadline)? {
            Answer::Value(b) => {
                remote::decode(&b, self.core.session.max_payload()).map_err(codec_error)
            }
            a => Err(self.core.answer_error(a)),
        }
    }

    /// Takes the next value, waiting for a writer (rendezvous).
    pub fn read(&self) -> Result<T, ChannelError> {
        self.read_until(None)
    }

    /// Like [`read`](Self::read), giving up with [`ChannelError::Timeout`]
    /// after `timeout` (nothing is taken then).
    pub fn read_timeout(&self, timeout: Duration) -> Result<T, ChannelError> {
        self.read_until(Some(Instant::now() + timeout))
    }
}

net_end_common!(NetReader);

/// The writing end of a [`NetChannel`], in any process of the cluster.
/// Dropping it (or [`retire`](Self::retire)) retires it. It does one
/// operation at a time: threads sharing it take turns.
pub struct NetWriter<T> {
    pub(super) core: EndCore,
    _t: PhantomData<fn(T)>,
}

impl<T: Serialize> NetWriter<T> {
    /// Opens a writing end of the channel `name`.
    pub fn open(session: &Session, name: &str) -> Result<Self, ChannelError> {
        Ok(NetWriter {
            core: EndCore::open(session, name, Side::Writer)?,
            _t: PhantomData,
        })
    }

    fn write_until(&self, value: &T, deadline: Option<Instant>) -> Result<(), ChannelError> {
        let cap = self.core.session.max_payload();
        let bytes = remote::encode(value, cap).map_err(codec_error)?;
        match self.core.call(Kind::Write(bytes), deadline)? {
            Answer::Done => Ok(()),
            a => Err(self.core.answer_error(a)),
        }
    }

    /// Sends `value`, returning once a reader has taken it (rendezvous).
    pub fn write(&self, value: &T) -> Result<(), ChannelError> {
        self.write_until(value, None)
    }

    /// Like [`write`](Self::write), giving up with
    /// [`ChannelError::Timeout`] after `timeout` (no reader got it then).
    pub fn write_timeout(&self, value: &T, timeout: Duration) -> Result<(), ChannelError> {
        self.write_until(value, Some(Instant::now() + timeout))
    }
}

net_end_common!(NetWriter);
