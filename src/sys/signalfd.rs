//! Signals as readable descriptors (`signalfd`), for a process that must
//! clean up on a signal without running code in a signal handler.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// `SIGHUP`'s number.
pub const SIGHUP: i32 = libc::SIGHUP;

/// Blocks `signals` in the calling thread and returns a descriptor
/// (`O_CLOEXEC`, non-blocking) that is readable while one of them is
/// pending. Call it before the process starts other threads, which
/// inherit the mask; a thread that does not block them would take the
/// default action instead.
pub fn take_signals(signals: &[i32]) -> io::Result<OwnedFd> {
    // SAFETY: `sigset_t` is a plain C struct, valid when zeroed.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t (the pointers passed below are to
    // it and live for each call).
    unsafe { libc::sigemptyset(&mut set) };
    for &sig in signals {
        // SAFETY: as above.
        if unsafe { libc::sigaddset(&mut set, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: as above; no old mask is asked for (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: as above.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Asks the kernel to send `SIGTERM` (instead of the crate's usual
/// `SIGKILL`) to this process when the thread that created it exits, so
/// that it can clean up first (`PR_SET_PDEATHSIG`).
pub fn term_with_parent() -> io::Result<()> {
    Ok(rustix::process::set_parent_process_death_signal(Some(
        rustix::process::Signal::TERM,
    ))?)
}
