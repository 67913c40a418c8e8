//! Locking this process's own (`std`) mutexes, with the crate's one rule
//! for poisoning: ignore it. Every state such a mutex guards here is
//! changed in single steps, so a thread that panicked while holding it
//! left it valid, and the other threads go on.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning (see the module docs).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
