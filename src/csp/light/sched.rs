//! The scheduler of lightweight CSP processes: a few worker threads, each
//! running many tasks (stackful coroutines, `corosensei`) one at a time,
//! switching between them when one would block.
//!
//! # Stacks: a few slots per worker, copied out when shared
//!
//! A million processes cannot each have a stack of their own: one page is
//! the least a stack commits (4 GiB for a million), and a stack with a
//! guard page costs two of the kernel's 65,530 memory maps. So each worker
//! has stack slots (1 MiB each, guard page below, committed as they are
//! touched): [`SLOTS`] at start, one more for each new task while no slot
//! is free and the process's budget (`MAX_SLOTS`) lasts, then the first
//! [`SLOTS`] shared in turn; a task always runs on the slot it got at creation (its frames
//! hold pointers into it, so it cannot move). When a task must run on a
//! slot another suspended task occupies, the occupant's live part (from
//! its stack pointer at suspension to the slot's top, usually under 2 KiB)
//! is copied to the heap, and the task's own copy back (as greenlet does
//! for PyCSP's greenlets mode). A network within the budget never copies.
//!
//! So nothing outside a task may point into its stack while it is
//! suspended: the scheduler copies what it needs at suspension (the words
//! it waits on), and [`io`](super::io) takes only `'static` closures.
//!
//! # Parking and waking
//!
//! Every wait of the crate goes through `sys::futex::wait` or
//! `sys::waitv::wait_any`, which ask the worker's park hook first: on a
//! task, the task is *parked* on the words instead of the thread sleeping.
//! A parked task is found in two ways:
//!
//! * by any waker of this process: `sys::futex::wake` calls the wake hook,
//!   which looks the word's address up in a table of parked tasks (hashed
//!   buckets, as in parking_lot) and queues them on their worker;
//! * by the worker itself, for a waker in another process (a channel in
//!   shared memory): when idle it sleeps on its doorbell and up to 127
//!   parked words with one `futex_waitv` (the foreign waker's `FUTEX_WAKE`
//!   ends that sleep), and it polls the parked words now and then.
//!
//! ## Task state (`TaskShared::state`: epoch << 2 | status)
//!
//! | status | meaning | set by |
//! |---|---|---|
//! | `RUNNING` 0 | running, or suspended but not parked (queued again at once) | the worker, before resuming it |
//! | `PARKED` 1 | parked (epoch = this park) | the task, before registering its words |
//! | `QUEUED` 2 | woken: in its worker's queue | a waker, by CAS from `PARKED` of the same epoch (exactly one wins) |
//! | `DONE` 3 | finished | the worker |
//!
//! The parker registers under each bucket's lock after checking its word
//! there, and a waker changes the word before it looks the bucket up, so
//! either the parker sees the change or the waker sees the entry (the
//! bucket's count is read lock-free after a SeqCst fence, paired with the
//! parker's SeqCst increment before its check).

#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use corosensei::stack::{DefaultStack, Stack, StackPointer};
use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::sys;
use crate::sys::futex::Wake;

/// Stack slots per worker at start.
pub(crate) const SLOTS: usize = 16;
/// Stack slots all workers together may grow to: a task gets a slot of
/// its own while the budget lasts, so that a network of up to about this
/// many processes never copies a stack (copying two stacks per switch
/// was most of a 10,000-process ring's time, measured). Two of the
/// kernel's 65,530 memory maps each; a slot keeps the pages its tasks
/// touched (a few KiB).
const MAX_SLOTS: usize = 12_288;
/// Slots made so far, by all workers.
static SLOTS_MADE: AtomicUsize = AtomicUsize::new(0);
/// The granularity of a parked task's saved stack, in bytes: the
/// allocator's own (a coarser grain cost a million parked tasks about
/// 190 bytes each, measured, for blocks that rarely had to move).
const SAVE_GRAIN: usize = 16;
/// Bytes of one slot's stack.
const SLOT_SIZE: usize = 1 << 20;
/// Runs between two looks at the inbox, the timers and some parked words.
const TICK: u32 = 64;
/// Parked words looked at per tick, and per idle round.
const POLL_CHUNK: usize = 64;
const IDLE_POLL: usize = 4096;

const RUNNING: u64 = 0;
const PARKED: u64 = 1;
const QUEUED: u64 = 2;
const DONE: u64 = 3;

/// What wakers share with a task.
pub(crate) struct TaskShared {
    state: AtomicU64,
    /// Set (before it is queued) when the wake came from the table, which
    /// removed the entry it used.
    by_table: AtomicBool,
    /// Its worker and its index there (32 bits each: a million tasks keep
    /// 16 bytes less each).
    worker: u32,
    idx: u32,
}

impl TaskShared {
    /// Wakes the task from its park `epoch`; false if it is not parked
    /// there (woken already, running, or parked again since).
    fn try_wake(self: &Arc<Self>, epoch: u64, by_table: bool) -> bool {
        let ok = self
            .state
            .compare_exchange(
                epoch << 2 | PARKED,
                epoch << 2 | QUEUED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if ok {
            if by_table {
                self.by_table.store(true, Ordering::Relaxed);
            }
            push(self);
        }
        ok
    }
}

/// Queues a woken task on its worker.
fn push(task: &TaskShared) {
    if INDEX.get() == Some(task.worker as usize) {
        push_here(task.idx as usize);
        return;
    }
    let w = &workers()[task.worker as usize];
    w.inbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Msg::Wake(task.idx as usize));
    w.ring();
}

// ---- the table of parked tasks -------------------------------------------

struct Entry {
    addr: usize,
    epoch: u64,
    task: Arc<TaskShared>,
}

struct Bucket {
    n: AtomicU32,
    entries: Mutex<Vec<Entry>>,
}

const BUCKETS: usize = 1 << 16;

static TABLE: OnceLock<Box<[Bucket]>> = OnceLock::new();

fn bucket(addr: usize) -> &'static Bucket {
    let table = TABLE.get_or_init(|| {
        (0..BUCKETS)
            .map(|_| Bucket {
                n: AtomicU32::new(0),
                entries: Mutex::new(Vec::new()),
            })
            .collect()
    });
    let h = (addr as u64 >> 2).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48;
    &table[h as usize % BUCKETS]
}

/// The wake hook (`sys::futex::WakeHook`): queues the tasks parked on `word`.
fn wake_hook(word: &AtomicU32) -> usize {
    let addr = word.as_ptr() as usize;
    let b = bucket(addr);
    // Pairs with the parker's SeqCst increment before it checks its word:
    // the waker changed the word before this fence.
    fence(Ordering::SeqCst);
    if b.n.load(Ordering::SeqCst) == 0 {
        return 0;
    }
    let mut woken = 0;
    let mut e = b.entries.lock().unwrap_or_else(|e| e.into_inner());
    let mut i = 0;
    while i < e.len() {
        if e[i].addr == addr {
            let x = e.swap_remove(i);
            b.n.fetch_sub(1, Ordering::SeqCst);
            // Lock order: a bucket, then a worker's inbox (in `push`).
            woken += usize::from(x.task.try_wake(x.epoch, true));
        } else {
            i += 1;
        }
    }
    woken
}

/// Removes the entries of `task`'s park `epoch` for `addr` (after it woke).
fn unregister(addr: usize, task: &Arc<TaskShared>, epoch: u64) {
    let b = bucket(addr);
    if b.n.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut e = b.entries.lock().unwrap_or_else(|e| e.into_inner());
    let before = e.len();
    e.retain(|x| !(x.addr == addr && x.epoch == epoch && Arc::ptr_eq(&x.task, task)));
    b.n.fetch_sub((before - e.len()) as u32, Ordering::SeqCst);
}

// ---- workers --------------------------------------------------------------

enum Msg {
    New(Box<dyn TaskBody>),
    Wake(usize),
    /// Run on the worker's thread between two tasks (`run_on`).
    Run(Box<dyn FnOnce() + Send>),
}

/// What other threads share with a worker.
struct WorkerShared {
    bell: AtomicU32,
    sleeping: AtomicBool,
    inbox: Mutex<Vec<Msg>>,
}

impl WorkerShared {
    fn ring(&self) {
        // SeqCst pair with the worker's `sleeping` store and `bell` load:
        // either it sees the bell change or we see it asleep.
        self.bell.fetch_add(1, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            sys::futex::wake_threads(&self.bell, 1);
        }
    }
}

static WORKERS: OnceLock<Vec<Arc<WorkerShared>>> = OnceLock::new();
static NEXT_WORKER: AtomicUsize = AtomicUsize::new(0);

/// The workers, started on first use: one per usable CPU.
fn workers() -> &'static [Arc<WorkerShared>] {
    WORKERS.get_or_init(|| {
        calibrate();
        sys::futex::set_wake_hook(wake_hook);
        let n = sys::process::affinity_cpus().max(1);
        (0..n)
            .map(|i| {
                let w = Arc::new(WorkerShared {
                    bell: AtomicU32::new(0),
                    sleeping: AtomicBool::new(false),
                    inbox: Mutex::new(Vec::new()),
                });
                let shared = w.clone();
                std::thread::Builder::new()
                    .name(format!("csp-light-{i}"))
                    .spawn(move || Worker::new(i, shared).run())
                    .expect("start a worker thread for lightweight CSP processes");
                w
            })
            .collect()
    })
}

/// The worker a new network goes to: the calling task's own, else the
/// next one in turn.
pub(crate) fn pick_worker() -> usize {
    if let Some(i) = INDEX.get() {
        return i;
    }
    let n = workers().len();
    NEXT_WORKER.fetch_add(1, Ordering::Relaxed) % n
}

/// The body of a lightweight process, run once on its task's stack.
///
/// `run` receives its box, so that it can free it before the process goes
/// on: a closure called through `Box<dyn FnOnce()>` is copied onto the
/// stack and its box freed only when it returns, both kept for the
/// process's whole life (a million parked processes pay for both).
pub(crate) trait TaskBody: Send {
    fn run(self: Box<Self>);
}

/// Starts `body` as a task on worker `worker`.
pub(crate) fn spawn_task(worker: usize, body: Box<dyn TaskBody>) {
    let ws = workers();
    let worker = worker % ws.len();
    if INDEX.get() == Some(worker) {
        LOCAL.with(|l| l.fresh.borrow_mut().push(body));
        return;
    }
    let w = &ws[worker];
    w.inbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Msg::New(body));
    w.ring();
}

/// Runs `f` on the thread of worker `worker`, between two of its tasks
/// (at once if that is the calling thread). `f` must not wait.
pub(crate) fn run_on(worker: usize, f: Box<dyn FnOnce() + Send>) {
    if thread_worker() == Some(worker) {
        f();
        return;
    }
    let w = &workers()[worker];
    w.inbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Msg::Run(f));
    w.ring();
}

/// The worker whose thread this is, if any.
#[inline]
pub(crate) fn thread_worker() -> Option<usize> {
    INDEX.get()
}

/// The worker of the calling lightweight process (`None`: not in one).
#[inline]
pub(crate) fn current_worker() -> Option<usize> {
    if CURRENT.get().is_null() {
        None
    } else {
        INDEX.get()
    }
}

/// Per worker thread, what tasks running on it reach (beside [`INDEX`]
/// and [`CURRENT`]).
struct Local {
    /// Indices of tasks to run.
    queue: RefCell<VecDeque<usize>>,
    /// Tasks started by tasks of this worker, not yet created.
    fresh: RefCell<Vec<Box<dyn TaskBody>>>,
}

// `INDEX` and `CURRENT` are read on every channel operation of a task:
// apart from `LOCAL`, whose fields need dropping (a thread-local with a
// destructor checks its state at each access), they are plain loads.
thread_local! {
    static LOCAL: Local = const {
        Local {
            queue: RefCell::new(VecDeque::new()),
            fresh: RefCell::new(Vec::new()),
        }
    };
    /// This thread's worker index (`None`: not a worker).
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
    /// The running task's park record (null between tasks).
    static CURRENT: Cell<*mut Park> = const { Cell::new(std::ptr::null_mut()) };
}

/// Queues task `idx` of this thread's worker.
#[inline]
fn push_here(idx: usize) {
    LOCAL.with(|l| l.queue.borrow_mut().push_back(idx));
}

/// Whether the calling code runs in a lightweight process.
pub(crate) fn on_task() -> bool {
    !CURRENT.get().is_null()
}

type Co = Coroutine<(), (), (), SlotStack>;

/// A slot's stack, as corosensei sees it (a view: the memory is the
/// worker's, shared by every task of the slot).
#[derive(Clone, Copy)]
struct SlotStack {
    base: StackPointer,
    limit: StackPointer,
}

// SAFETY: `base`/`limit` bound a mapping owned by the worker (a
// `DefaultStack`, with its guard page below `limit`) that outlives every
// coroutine created on it (the worker never ends); tasks of one slot use
// it one at a time, the scheduler copying the live part out and back.
unsafe impl Stack for SlotStack {
    fn base(&self) -> StackPointer {
        self.base
    }
    fn limit(&self) -> StackPointer {
        self.limit
    }
}

/// The words a parked task waits on (address, expected value): the first
/// inline, as a task nearly always waits on one (a heap block for it cost
/// a million parked tasks 32 MB).
#[derive(Default)]
struct Words {
    first: Option<(usize, u32)>,
    /// Boxed: a million parked tasks with one word each keep 16 bytes
    /// less each.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<(usize, u32)>>>,
}

impl Words {
    fn clear(&mut self) {
        self.first = None;
        if let Some(m) = &mut self.more {
            m.clear();
        }
    }
    fn push(&mut self, w: (usize, u32)) {
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.more.get_or_insert_with(Box::default).push(w);
        }
    }
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.as_ref().map_or(0, |m| m.len())
    }
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }
    fn iter(&self) -> impl Iterator<Item = &(usize, u32)> {
        self.first
            .iter()
            .chain(self.more.iter().flat_map(|m| m.iter()))
    }
}

/// What a task tells its worker when it suspends, and the worker tells it
/// when it resumes.
pub(crate) struct Park {
    shared: Arc<TaskShared>,
    epoch: u64,
    /// The yielder of the task's coroutine (on its stack).
    yielder: *const Yielder<(), ()>,
    /// The lowest address of the task's live stack at suspension.
    sp: usize,
    /// The words it waits on (address, expected value).
    words: Words,
    deadline: Option<Instant>,
    /// The channel ends the process holds (swapped with the thread's).
    held: super::HeldList,
}

impl Park {
    /// The parking state of a task not yet run, sharing `shared`.
    fn new(shared: Arc<TaskShared>) -> Box<Park> {
        Box::new(Park {
            shared,
            epoch: 0,
            yielder: std::ptr::null(),
            sp: 0,
            words: Words::default(),
            deadline: None,
            held: Default::default(),
        })
    }
}

/// A task, as its worker keeps it (one of a million: the indices are 32
/// bits).
struct Task {
    co: Option<Co>,
    body: Option<Box<dyn TaskBody>>,
    slot: u32,
    saved: Vec<std::mem::MaybeUninit<u8>>,
    evicted: bool,
    /// Position in the worker's parked list, if it is in it.
    parked_at: Option<u32>,
    park: Box<Park>,
}

impl Task {
    fn slot(&self) -> usize {
        self.slot as usize
    }
}

/// `n` as a 32-bit index of a worker's tables.
fn index32(n: usize) -> u32 {
    u32::try_from(n).expect("fewer than 2^32 entries in a worker's tables")
}

struct Slot {
    stack: DefaultStack,
    occupant: Option<usize>,
    /// Tasks assigned to the slot.
    users: usize,
}

struct Worker {
    index: usize,
    shared: Arc<WorkerShared>,
    tasks: Vec<Option<Task>>,
    free: Vec<usize>,
    slots: Vec<Slot>,
    next_slot: usize,
    /// Slots no task is assigned to.
    free_slots: Vec<usize>,
    parked: Vec<usize>,
    poll_at: usize,
    timers: BinaryHeap<std::cmp::Reverse<(Instant, usize, u64)>>,
}

/// Bytes below the address of a local of `suspend_here` that its own
/// frame, corosensei's `suspend` and the switch may still use (measured at
/// start-up, see `calibrate`).
static MARGIN: AtomicUsize = AtomicUsize::new(0);

/// Measures how far below a local of `suspend_here` a suspension
/// writes, on a painted slot: the margin kept when copying stacks.
fn calibrate() {
    const PAINT: u8 = 0xA5;
    let slot = DefaultStack::new(128 * 1024).expect("map a stack for lightweight processes");
    let base = slot.base().get();
    let probe_len = 64 * 1024;
    let low = base - probe_len;
    // SAFETY: [low, base) lies inside the probe's stack mapping, unused.
    unsafe { std::ptr::write_bytes(low as *mut u8, PAINT, probe_len) };
    let mut park = Park::new(Arc::new(TaskShared {
        state: AtomicU64::new(RUNNING),
        by_table: AtomicBool::new(false),
        worker: 0,
        idx: 0,
    }));
    let p: *mut Park = &mut *park;
    let stack = SlotStack {
        base: slot.base(),
        limit: slot.limit(),
    };
    let mut co: Co = Coroutine::with_stack(stack, move |y: &Yielder<(), ()>, ()| {
        // SAFETY: `p` points into the box `calibrate` keeps alive.
        unsafe { (*p).yielder = y };
        suspend_here(p);
    });
    let _ = co.resume(());
    // Suspended in `suspend_here` (MARGIN 0, so `sp` is its local's
    // address): find the lowest byte written.
    let mut a = low;
    // SAFETY: inside the painted range.
    while a < base && unsafe { *(a as *const u8) } == PAINT {
        a += 1;
    }
    let _ = co.resume(());
    let used = park.sp.saturating_sub(a);
    // A little slack beyond what was measured (every parked task keeps
    // the margin in its saved stack: a million keep 32 MB per 32 bytes).
    MARGIN.store(used.next_multiple_of(16) + 32, Ordering::Relaxed);
}

/// Suspends the running task; records its live stack's lowest address.
#[inline(never)]
fn suspend_here(park: *mut Park) {
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    // SAFETY: `park` is the running task's park record (see `Local::current`),
    // valid while it runs.
    unsafe { (*park).sp = here - MARGIN.load(Ordering::Relaxed) };
    // SAFETY: as above.
    let yielder = unsafe { (*park).yielder };
    // SAFETY: `yielder` was stored by its coroutine at start and lives on
    // its stack, which is resident while it runs.
    unsafe { (*yielder).suspend(()) };
}

impl Worker {
    fn new(index: usize, shared: Arc<WorkerShared>) -> Worker {
        SLOTS_MADE.fetch_add(SLOTS, Ordering::Relaxed);
        let slots = (0..SLOTS)
            .map(|_| Slot {
                stack: DefaultStack::new(SLOT_SIZE).expect("map a stack for lightweight processes"),
                occupant: None,
                users: 0,
            })
            .collect();
        Worker {
            index,
            shared,
            tasks: Vec::new(),
            free: Vec::new(),
            slots,
            next_slot: 0,
            free_slots: (0..SLOTS).rev().collect(),
            parked: Vec::new(),
            poll_at: 0,
            timers: BinaryHeap::new(),
        }
    }

    fn run(mut self) {
        INDEX.set(Some(self.index));
        sys::futex::set_park_hook(park_hook);
        let mut ticks = 0u32;
        loop {
            let next = LOCAL.with(|l| l.queue.borrow_mut().pop_front());
            if let Some(idx) = next {
                self.dispatch(idx);
                ticks += 1;
                if ticks.is_multiple_of(TICK) {
                    self.housekeeping(false);
                }
                continue;
            }
            if self.housekeeping(true) {
                continue;
            }
            self.sleep();
        }
    }

    /// Looks at the inbox, the timers and some parked words; whether any
    /// task became runnable.
    fn housekeeping(&mut self, idle: bool) -> bool {
        let mut any = false;
        let msgs =
            std::mem::take(&mut *self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        for m in msgs {
            any = true;
            match m {
                Msg::New(body) => self.create(body),
                Msg::Wake(idx) => push_here(idx),
                Msg::Run(f) => f(),
            }
        }
        let fresh = LOCAL.with(|l| std::mem::take(&mut *l.fresh.borrow_mut()));
        for body in fresh {
            any = true;
            self.create(body);
        }
        if !self.timers.is_empty() {
            let now = Instant::now();
            while let Some(std::cmp::Reverse((at, idx, epoch))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                if let Some(Some(t)) = self.tasks.get(idx) {
                    any |= t.park.shared.try_wake(epoch, false);
                }
            }
        }
        let n = self.parked.len();
        let count = n.min(if idle { IDLE_POLL } else { POLL_CHUNK });
        for _ in 0..count {
            if self.parked.is_empty() {
                break;
            }
            self.poll_at = (self.poll_at + 1) % self.parked.len();
            let idx = self.parked[self.poll_at];
            if let Some(Some(t)) = self.tasks.get(idx)
                && words_changed(&t.park.words)
            {
                any |= t.park.shared.try_wake(t.park.epoch, false);
            }
        }
        any
    }

    /// Sleeps until the bell rings, a parked word is woken from another
    /// process, or the next timer.
    fn sleep(&mut self) {
        let sh = &self.shared;
        sh.sleeping.store(true, Ordering::SeqCst);
        let seen = sh.bell.load(Ordering::SeqCst);
        let pending = !sh
            .inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
            || LOCAL.with(|l| !l.queue.borrow().is_empty() || !l.fresh.borrow().is_empty());
        if !pending {
            let mut deadline = self.timers.peek().map(|r| r.0.0);
            let mut words: Vec<(&AtomicU32, u32)> = vec![(&sh.bell, seen)];
            'all: for &idx in &self.parked {
                if let Some(Some(t)) = self.tasks.get(idx) {
                    for &(addr, expected) in t.park.words.iter() {
                        if words.len() >= sys::waitv::MAX_WORDS {
                            break 'all;
                        }
                        // SAFETY: the task is parked on this word, which
                        // lives in memory its suspended frames keep alive.
                        words.push((unsafe { &*(addr as *const AtomicU32) }, expected));
                    }
                }
            }
            if words.len() >= sys::waitv::MAX_WORDS {
                // More parked words than one sleep covers: poll them.
                let poll = Instant::now() + Duration::from_millis(1);
                deadline = Some(deadline.map_or(poll, |d| d.min(poll)));
            }
            let _ = sys::waitv::wait_any_thread(&words, deadline);
        }
        sh.sleeping.store(false, Ordering::SeqCst);
    }

    fn create(&mut self, body: Box<dyn TaskBody>) {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.tasks.push(None);
            self.tasks.len() - 1
        });
        let shared = Arc::new(TaskShared {
            state: AtomicU64::new(QUEUED),
            by_table: AtomicBool::new(false),
            worker: u32::try_from(self.index).expect("fewer than 2^32 workers"),
            idx: u32::try_from(idx).expect("fewer than 2^32 tasks on a worker"),
        });
        let slot = self.pick_slot();
        self.slots[slot].users += 1;
        self.tasks[idx] = Some(Task {
            co: None,
            body: Some(body),
            slot: index32(slot),
            saved: Vec::new(),
            evicted: false,
            parked_at: None,
            park: Park::new(shared),
        });
        push_here(idx);
    }

    /// The slot of a new task: a free one, else a new one while the
    /// budget lasts, else the next of the first [`SLOTS`] in turn.
    fn pick_slot(&mut self) -> usize {
        if let Some(s) = self.free_slots.pop() {
            return s;
        }
        if SLOTS_MADE.fetch_add(1, Ordering::Relaxed) < MAX_SLOTS
            && let Ok(stack) = DefaultStack::new(SLOT_SIZE)
        {
            self.slots.push(Slot {
                stack,
                occupant: None,
                users: 0,
            });
            return self.slots.len() - 1;
        }
        // Beyond the budget, new tasks share the first few slots, which
        // their copies keep hot in the cache (spread over every slot,
        // they would copy to and from cold memory at each switch).
        self.next_slot = (self.next_slot + 1) % SLOTS.min(self.slots.len());
        self.next_slot
    }

    /// Makes task `idx`'s stack resident in its slot: copies the
    /// occupant's out, the task's back in.
    fn make_resident(&mut self, idx: usize) {
        let s = self.tasks[idx].as_ref().map_or(0, Task::slot);
        let base = self.slots[s].stack.base().get();
        if let Some(o) = self.slots[s].occupant
            && o != idx
            && let Some(Some(occ)) = self.tasks.get_mut(o)
        {
            let len = base - occ.park.sp;
            occ.saved.clear();
            if occ.saved.capacity() < len {
                // Grown only: a task parks at a few depths (in a read, in
                // a write), and the block of its deepest park serves all
                // of them.
                occ.saved = Vec::with_capacity(len.next_multiple_of(SAVE_GRAIN));
            }
            // SAFETY: [sp, base) is the occupant's live stack, resident in
            // the slot; `saved` has room for `len` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    occ.park.sp as *const std::mem::MaybeUninit<u8>,
                    occ.saved.as_mut_ptr(),
                    len,
                )
            };
            // SAFETY: the copy above initialised the first `len` bytes.
            unsafe { occ.saved.set_len(len) };
            occ.evicted = true;
        }
        self.slots[s].occupant = Some(idx);
        let Some(Some(t)) = self.tasks.get_mut(idx) else {
            return;
        };
        if t.evicted {
            // SAFETY: the slot is free of other live frames now; the copy
            // goes back to the addresses it was taken from.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    t.saved.as_ptr(),
                    t.park.sp as *mut std::mem::MaybeUninit<u8>,
                    t.saved.len(),
                )
            };
            t.evicted = false;
        }
    }

    fn dispatch(&mut self, idx: usize) {
        let Some(Some(t)) = self.tasks.get_mut(idx) else {
            return;
        };
        let st = t.park.shared.state.load(Ordering::Acquire);
        if st & 3 != QUEUED {
            return; // a stale entry
        }
        t.park
            .shared
            .state
            .store(t.park.epoch << 2 | RUNNING, Ordering::Release);
        let s = t.slot();
        if let Some(pos) = t.parked_at.take() {
            self.parked.swap_remove(pos as usize);
            if let Some(&moved) = self.parked.get(pos as usize)
                && let Some(Some(m)) = self.tasks.get_mut(moved)
            {
                m.parked_at = Some(pos);
            }
        }
        if self.slots[s].occupant != Some(idx) {
            self.make_resident(idx);
        }
        let Some(Some(t)) = self.tasks.get_mut(idx) else {
            return;
        };
        if t.co.is_none() {
            let stack = SlotStack {
                base: self.slots[s].stack.base(),
                limit: self.slots[s].stack.limit(),
            };
            let body = t.body.take();
            t.co = Some(Coroutine::with_stack(
                stack,
                move |y: &Yielder<(), ()>, ()| {
                    // SAFETY: the worker sets `CURRENT` to this task's park
                    // record before resuming it.
                    CURRENT.with(|c| unsafe { (*c.get()).yielder = y });
                    if let Some(b) = body {
                        b.run();
                    }
                },
            ));
        }
        let park: *mut Park = &mut *t.park;
        // Between tasks the thread holds no counts: a task holding none
        // swaps nothing in.
        if !t.park.held.is_empty() {
            super::swap_held(&mut t.park.held);
        }
        let Some(co) = t.co.as_mut() else {
            return;
        };
        // Resumed in place (no move of the coroutine in and out of its
        // task at each switch).
        CURRENT.set(park);
        let r = co.resume(());
        CURRENT.set(std::ptr::null_mut());
        super::save_held(&mut t.park.held);
        match r {
            CoroutineResult::Return(()) => {
                t.park.shared.state.store(DONE, Ordering::Release);
                let slot = t.slot();
                self.tasks[idx] = None;
                self.free.push(idx);
                let s = &mut self.slots[slot];
                if s.occupant == Some(idx) {
                    s.occupant = None;
                }
                s.users -= 1;
                if s.users == 0 {
                    self.free_slots.push(slot);
                }
            }
            CoroutineResult::Yield(()) => {
                let epoch = t.park.epoch;
                if t.park.shared.state.load(Ordering::Acquire) == epoch << 2 | PARKED {
                    if let Some(d) = t.park.deadline {
                        self.timers.push(std::cmp::Reverse((d, idx, epoch)));
                    }
                    if !t.park.words.is_empty() {
                        t.parked_at = Some(index32(self.parked.len()));
                        self.parked.push(idx);
                    }
                }
            }
        }
    }
}

fn words_changed(words: &Words) -> bool {
    words.iter().any(|&(addr, expected)| {
        // SAFETY: a parked task's words live in memory its suspended
        // frames keep alive (a channel it is operating on).
        unsafe { &*(addr as *const AtomicU32) }.load(Ordering::Acquire) != expected
    })
}

/// The park hook (`sys::futex::ParkHook`): parks the running task on
/// `words` until one of them is woken, or `deadline`.
fn park_hook(words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> Option<Wake> {
    let park = CURRENT.get();
    if park.is_null() {
        return None;
    }
    Some(park_on(park, words, deadline))
}

/// Parks the running task (`park` is its record) on `words` (none: only
/// the deadline wakes it).
fn park_on(park: *mut Park, words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> Wake {
    // SAFETY: `park` is the running task's record, valid while it runs; no
    // other reference to it is live while the task runs.
    let p = unsafe { &mut *park };
    if words.iter().any(|(w, e)| w.load(Ordering::SeqCst) != *e) {
        return Wake::Changed;
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Wake::TimedOut;
    }
    p.epoch += 1;
    let epoch = p.epoch;
    if !register(p, words, epoch) {
        return Wake::Changed;
    }
    p.deadline = deadline;
    suspend_here(park);
    // SAFETY: as above; resumed, the task runs again.
    unpark(unsafe { &mut *park }, epoch);
    if deadline.is_some_and(|d| Instant::now() >= d) {
        Wake::TimedOut
    } else {
        Wake::Woken
    }
}

/// Parks `p` (park `epoch`, its state `PARKED` already) on `words` in the
/// table; false (and running again, nothing registered) if a word changed
/// first. A frame of its own, so that its locals are not in the parked
/// task's stack.
#[inline(never)]
fn register(p: &mut Park, words: &[(&AtomicU32, u32)], epoch: u64) -> bool {
    p.shared.state.store(epoch << 2 | PARKED, Ordering::SeqCst);
    p.words.clear();
    // Room for exactly these: a million parked tasks keep it.
    if words.len() > 1 {
        p.words
            .more
            .get_or_insert_with(Box::default)
            .reserve_exact(words.len() - 1);
    }
    let mut changed = false;
    for (w, e) in words {
        let addr = w.as_ptr() as usize;
        let b = bucket(addr);
        let mut entries = b.entries.lock().unwrap_or_else(|e| e.into_inner());
        b.n.fetch_add(1, Ordering::SeqCst);
        if w.load(Ordering::SeqCst) != *e {
            b.n.fetch_sub(1, Ordering::SeqCst);
            changed = true;
            break;
        }
        entries.push(Entry {
            addr,
            epoch,
            task: p.shared.clone(),
        });
        drop(entries);
        p.words.push((addr, *e));
    }
    if changed
        && p.shared
            .state
            .compare_exchange(
                epoch << 2 | PARKED,
                epoch << 2 | RUNNING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    {
        for &(addr, _) in p.words.iter() {
            unregister(addr, &p.shared, epoch);
        }
        p.words.clear();
        return false;
    }
    true
}

/// Removes what is left of `p`'s park `epoch` from the table, once it runs
/// again.
#[inline(never)]
fn unpark(p: &mut Park, epoch: u64) {
    // Woken through the table for its only word: that entry is gone.
    let by_table = p.shared.by_table.swap(false, Ordering::Relaxed);
    if !(by_table && p.words.len() == 1) {
        for &(addr, _) in p.words.iter() {
            unregister(addr, &p.shared, epoch);
        }
    }
    p.words.clear();
    p.deadline = None;
}

/// Parks the running task until `deadline` (nothing else wakes it).
/// False when not on a task.
pub(crate) fn sleep_until(deadline: Instant) -> bool {
    let park = CURRENT.get();
    if park.is_null() {
        return false;
    }
    while park_on(park, &[], Some(deadline)) != Wake::TimedOut {}
    true
}

// ---- parking without a futex word (the fast channel path, `csp/chan/fast.rs`) -------

/// Wakes a task from one park of [`park_current`], on the task's own
/// worker thread; a wake after the task left that park does nothing.
///
/// It points to the task without counting (no atomic operation per
/// message): its user keeps it only while the task is parked on a
/// structure confined to the worker's thread (`csp/chan/fast.rs`), so
/// the task is alive when it is used.
pub(crate) struct Unparker {
    task: *const TaskShared,
    epoch: u64,
}

impl Unparker {
    /// Makes the task runnable (queued on its worker) if it is still in
    /// the park this unparker was made for. On the task's worker thread.
    #[inline]
    pub(crate) fn unpark(self) {
        // SAFETY: the task is alive (see the type's docs).
        let t = unsafe { &*self.task };
        debug_assert_eq!(thread_worker(), Some(t.worker as usize));
        // No CAS: only this thread wakes a park of `park_current` (this
        // unparker, or the task's deadline in `housekeeping`); a waker of
        // another thread holds an older epoch and fails its CAS.
        let parked = self.epoch << 2 | PARKED;
        if t.state.load(Ordering::Relaxed) == parked {
            t.state.store(self.epoch << 2 | QUEUED, Ordering::Relaxed);
            push_here(t.idx as usize);
        }
    }
}

/// Parks the running task until its unparker is used, or `deadline`.
/// `publish` receives the unparker once the task counts as parked (a wake
/// from then on is not lost), and runs before the task suspends: it must
/// not wait; the unparker is used on this worker's thread only. False
/// (and `publish` not called) when not on a task.
///
/// Inlined into its caller: every return between a task's switch and its
/// body mispredicts once the task is resumed (the CPU's return stack
/// holds the worker's addresses then), so each frame less on the way
/// counts.
#[inline(always)]
pub(crate) fn park_current(deadline: Option<Instant>, publish: impl FnOnce(Unparker)) -> bool {
    let park = CURRENT.get();
    if park.is_null() {
        return false;
    }
    {
        // SAFETY: `park` is the running task's record, valid while it
        // runs; no other reference to it is live while the task runs.
        let p = unsafe { &mut *park };
        p.epoch += 1;
        let epoch = p.epoch;
        // The unparker is used on this thread only (`Unparker`).
        p.shared.state.store(epoch << 2 | PARKED, Ordering::Release);
        p.deadline = deadline;
        publish(Unparker {
            task: Arc::as_ptr(&p.shared),
            epoch,
        });
    }
    suspend_here(park);
    // SAFETY: as above; resumed, the task runs again.
    unsafe { (*park).deadline = None };
    true
}
