//! Futex wait and wake on a 32-bit word that may live in memory shared
//! between processes (so the shared, not the process-private, futex ops).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

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

/// Sleeps while `word == expected`, at most `timeout` (`None`: no limit).
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
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

/// Wakes up to `n` sleepers on `word`; returns how many woke.
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}

/// Wakes every sleeper on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}
