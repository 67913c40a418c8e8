//! The lock word that guards one channel's state: a three-state futex
//! mutex (after Drepper, "Futexes Are Tricky", mutex #2) with an extra
//! poison bit, living in the channel's (possibly shared) memory.
//!
//! # State table of the lock word
//!
//! | bits | meaning |
//! |---|---|
//! | `LOCKED` (1) | some thread, in some process, holds the lock |
//! | `CONTENDED` (2) | someone may sleep on the word: unlocking must wake one |
//! | `POISON` (4) | the channel is poisoned: nobody acquires the lock again |
//!
//! `POISON` is set without holding the lock (poison is immediate, and must
//! work even when a holder died holding it); it never clears, and
//! `unlock` clears only `LOCKED | CONTENDED`.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys::futex;

const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;
const POISON: u32 = 4;

/// The lock could not be taken because the channel is poisoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockPoisoned;

/// Acquires `word`, spinning `spin` times before sleeping.
pub(crate) fn lock(word: &AtomicU32, spin: u32) -> Result<(), LockPoisoned> {
    // Fast path. Acquire: everything the previous holder wrote before its
    // Release unlock is visible to us.
    match word.compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed) {
        Ok(_) => return Ok(()),
        Err(v) if v & POISON != 0 => return Err(LockPoisoned),
        Err(_) => {}
    }
    for _ in 0..spin {
        std::hint::spin_loop();
        let v = word.load(Ordering::Relaxed);
        if v & POISON != 0 {
            return Err(LockPoisoned);
        }
        if v & LOCKED == 0
            && word
                .compare_exchange(v, v | LOCKED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(());
        }
    }
    loop {
        let v = word.load(Ordering::Relaxed);
        if v & POISON != 0 {
            return Err(LockPoisoned);
        }
        if v & LOCKED == 0 {
            // Having slept (or given up spinning) we take it as contended:
            // others may still sleep, so our unlock must wake one.
            if word
                .compare_exchange(
                    v,
                    v | LOCKED | CONTENDED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Ok(());
            }
            continue;
        }
        if v & CONTENDED == 0
            && word
                .compare_exchange(v, v | CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        // Sleeps only while the word is exactly "locked, contended, not
        // poisoned"; poisoning changes the word and wakes everyone.
        futex::wait(word, LOCKED | CONTENDED, None);
    }
}

/// Takes `word` if it is free and not poisoned, without waiting.
pub(crate) fn try_lock(word: &AtomicU32) -> bool {
    let v = word.load(Ordering::Relaxed);
    v & (LOCKED | POISON) == 0
        && word
            .compare_exchange(v, v | LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
}

/// Releases `word`, waking one sleeper if there may be any.
pub(crate) fn unlock(word: &AtomicU32) {
    // Release: our writes to the channel state happen-before the next
    // holder's Acquire.
    let v = word.fetch_and(!(LOCKED | CONTENDED), Ordering::Release);
    if v & CONTENDED != 0 {
        futex::wake(word, 1);
    }
}

/// Marks the lock poisoned, lock-free, and wakes every sleeper so that it
/// sees the poison.
pub(crate) fn poison(word: &AtomicU32) {
    word.fetch_or(POISON, Ordering::AcqRel);
    futex::wake_all(word);
}
