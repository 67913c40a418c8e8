//! Futex wait and wake on a 32-bit word that may live in memory shared
//! between processes (so the shared, not the process-private, futex ops).

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Woken by [`wake`], a signal, or spuriously: re-check the word.
    Woken,
    /// The word did not hold `expected` when the call was made.
    Changed,
    /// The timeout passed.
    TimedOut,
}

/// How a thread that runs user-space scheduled tasks (lightweight CSP
/// processes, `csp/light/`) waits instead of sleeping: it parks the task
/// running on it, until one of `words` no longer holds its expected value
/// and is woken, or the deadline. `None`: no task runs on this thread now,
/// sleep as usual.
pub type ParkHook = fn(words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> Option<Wake>;

/// What [`wake`] also calls, once installed: wakes the tasks of this
/// process parked on `word`; returns how many.
pub type WakeHook = fn(word: &AtomicU32) -> usize;

thread_local! {
    static PARK: Cell<Option<ParkHook>> = const { Cell::new(None) };
}

static WAKE_HOOK: OnceLock<WakeHook> = OnceLock::new();
static HOOKED: AtomicBool = AtomicBool::new(false);

/// Installs `hook` on this thread: every [`wait`] and
/// [`waitv::wait_any`](super::waitv::wait_any) asks it first.
pub fn set_park_hook(hook: ParkHook) {
    PARK.with(|p| p.set(Some(hook)));
}

/// Whether this thread parks tasks instead of sleeping (it runs
/// lightweight CSP processes): spinning in a wait there only delays the
/// others.
#[inline]
pub fn parks_tasks() -> bool {
    PARK.with(|p| p.get().is_some())
}

/// Installs the process-wide wake hook (once; later calls are ignored).
pub fn set_wake_hook(hook: WakeHook) {
    if WAKE_HOOK.set(hook).is_ok() {
        HOOKED.store(true, Ordering::Release);
    }
}

/// The park hook's answer for this thread, if it has one and a task runs.
#[inline]
pub(crate) fn parked(words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> Option<Wake> {
    let hook = PARK.with(|p| p.get())?;
    hook(words, deadline)
}

/// Sleeps while `word == expected`, at most `timeout` (`None`: no limit).
/// On a thread running lightweight CSP processes, parks the running one
/// instead (see [`ParkHook`]).
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    if let Some(w) = parked(&[(word, expected)], timeout.map(|t| Instant::now() + t)) {
        return w;
    }
    wait_thread(word, expected, timeout)
}

/// [`wait`] for the calling thread itself, never a task running on it.
pub fn wait_thread(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|t| futex::Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: t.subsec_nanos() as i64,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) | Err(Errno::INTR) => Wake::Woken,
        Err(Errno::AGAIN) => Wake::Changed,
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        // Any other error (EFAULT, EINVAL) means the word is unusable;
        // report a wake so callers re-check their state instead of sleeping.
        Err(_) => Wake::Woken,
    }
}

/// Wakes up to `n` sleepers on `word` (threads, and tasks parked by a
/// [`ParkHook`]); returns how many woke.
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    wake_tasks(word) + wake_threads(word, n)
}

/// Wakes the one party that may sleep on `word` (a word only its owner
/// sleeps on, such as a CSP record's state): when that is a parked task of
/// this process, no syscall is made.
pub fn wake_owner(word: &AtomicU32) -> usize {
    match wake_tasks(word) {
        0 => wake_threads(word, i32::MAX as u32),
        n => n,
    }
}

#[inline]
fn wake_tasks(word: &AtomicU32) -> usize {
    if HOOKED.load(Ordering::Acquire)
        && let Some(hook) = WAKE_HOOK.get()
    {
        return hook(word);
    }
    0
}

/// Wakes up to `n` threads asleep on `word` (the syscall alone).
pub fn wake_threads(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}

/// Wakes every sleeper on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}
