//! This process's authkey: the key that connections, listeners and
//! managers use when they are given none (Python's
//! `current_process().authkey`). It lives here, below `process/`, which
//! hands it down to children.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::local_lock::lock;
use crate::sys;

/// This process's authkey: drawn on first use in the main process, handed
/// down to children (see [`authkey`]).
static AUTHKEY: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// Whether [`AUTHKEY`] holds a key: read without taking the lock (which
/// writes its page) on the fork start path.
static HELD: AtomicBool = AtomicBool::new(false);

/// Length of the authkey the main process draws: 32 bytes, as Python's.
pub const AUTHKEY_LEN: usize = 32;

/// This process's authkey (Python's `current_process().authkey`): the key
/// that [`Manager`](crate::Manager)s, [`Listener`](crate::Listener)s and
/// [`Client`](crate::Client)s use when they are given none.
///
/// The main process draws [`AUTHKEY_LEN`] random bytes from the OS the
/// first time the key is needed; every child gets its parent's key when it
/// starts (either start method), so a family of processes shares one key
/// without passing it around, and programs outside the family cannot
/// connect unless they are given it. [`set_authkey`] replaces it.
///
/// Fails only if the OS random source fails (the key is then not made up
/// from anything predictable; a later call tries again).
///
/// ```
/// let key = multiproc::authkey()?;
/// assert_eq!(key.len(), 32);
/// assert_eq!(multiproc::current_process().authkey()?, key);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn authkey() -> io::Result<Vec<u8>> {
    let mut key = lock(&AUTHKEY);
    if let Some(k) = &*key {
        return Ok(k.clone());
    }
    let fresh = sys::random::bytes::<AUTHKEY_LEN>()?.to_vec();
    *key = Some(fresh.clone());
    HELD.store(true, Ordering::Release);
    Ok(fresh)
}

/// Makes sure this process has an authkey (drawing it if need be), without
/// copying it: before a `fork`, so that the child shares it.
pub(crate) fn ensure_authkey() -> io::Result<()> {
    if HELD.load(Ordering::Acquire) {
        return Ok(());
    }
    authkey().map(drop)
}

/// Replaces this process's authkey (Python's
/// `current_process().authkey = key`): children started from now on
/// inherit the new key, and managers, listeners and clients made from now
/// on without a key of their own use it. Those already made keep theirs.
///
/// Any bytes will do, but the key is the only thing that keeps other local
/// users (and, over TCP, other hosts) out: use a long random one, as the
/// default is.
///
/// ```
/// multiproc::set_authkey(b"a key shared with another program");
/// assert_eq!(multiproc::authkey()?, b"a key shared with another program");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_authkey(key: &[u8]) {
    *lock(&AUTHKEY) = Some(key.to_vec());
    HELD.store(true, Ordering::Release);
}

/// Forgets this process's authkey, so that the next use draws a new one.
/// For tests of the failure path only.
pub fn forget_authkey() {
    let mut key = lock(&AUTHKEY);
    *key = None;
    HELD.store(false, Ordering::Release);
}
