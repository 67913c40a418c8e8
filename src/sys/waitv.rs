//! Sleeping on several futex words at once (`futex_waitv`, Linux 5.16+),
//! each word possibly in memory shared with other processes.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

use super::futex::Wake;

/// The most words one call can wait on (the kernel's limit).
pub const MAX_WORDS: usize = 128;

/// Sleeps while every `word == expected` of `words`, until one of them is
/// woken or `deadline` (`None`: no limit) passes. At most [`MAX_WORDS`]
/// words; more are ignored. On a thread running lightweight CSP
/// processes, parks the running one instead (see
/// [`ParkHook`](super::futex::ParkHook)).
pub fn wait_any(words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> Wake {
    if let Some(w) = super::futex::parked(words, deadline) {
        return w;
    }
    wait_any_thread(words, deadline)
}

/// [`wait_any`] for the calling thread itself, never a task running on it.
pub fn wait_any_thread(words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> Wake {
    let mut waits = [futex::Wait::new(); MAX_WORDS];
    let n = words.len().min(MAX_WORDS);
    for (w, (word, expected)) in waits.iter_mut().zip(words.iter().take(n)) {
        w.val = u64::from(*expected);
        w.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
        // Shared (not PRIVATE): the words may live in a memfd mapping.
        w.flags = futex::WaitFlags::SIZE_U32;
    }
    // futex_waitv takes an absolute timeout on the given clock.
    let ts = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let total = Duration::new(now.tv_sec as u64, now.tv_nsec as u32) + left;
        futex::Timespec {
            tv_sec: total.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: total.subsec_nanos() as i64,
        }
    });
    match futex::waitv(
        &waits[..n],
        futex::WaitvFlags::empty(),
        ts.as_ref(),
        rustix::time::ClockId::Monotonic,
    ) {
        Ok(_) | Err(Errno::INTR) => Wake::Woken,
        Err(Errno::AGAIN) => Wake::Changed,
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        // Anything else (ENOSYS on an old kernel, EFAULT): report a wake so
        // callers re-check their state; they poll instead of sleeping.
        Err(_) => Wake::Woken,
    }
}

/// Nanoseconds on the system-wide coarse monotonic clock (the same in
/// every process, so a value stored in shared memory means the same to
/// all): a few nanoseconds to read, a few milliseconds' resolution (for
/// hints that look milliseconds back).
pub fn monotonic_coarse_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}
