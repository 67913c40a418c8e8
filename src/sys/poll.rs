//! Readiness waiting with `poll(2)`.
//!
//! Timeouts follow the crate's rule (`wait::Deadline`, a layer above this
//! one): `None`, or a timeout too long to represent, waits forever; zero
//! looks once. Here a timeout never becomes an instant: what is left of it
//! after an interrupted wait is the timeout minus the time elapsed, and
//! `poll`'s own timeout is clamped, so no length can overflow.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

/// Waits until at least one of `fds` is readable (or hung up), or `timeout`
/// passes (`None` waits forever; so does a timeout too long to represent).
/// Returns one flag per descriptor.
///
/// Interrupted waits (`EINTR`) are resumed with the remaining time.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .collect();
    poll_until(&mut pfds, timeout)?;
    Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect())
}

/// [`wait_readable`] for a fixed number of descriptors, without allocating.
pub fn wait_readable_n<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN));
    poll_until(&mut pfds, timeout)?;
    Ok(pfds.map(|p| !p.revents().is_empty()))
}

/// What to wait for on one descriptor in [`wait_events`].
#[derive(Debug, Clone, Copy)]
pub struct Interest<'a> {
    /// The descriptor.
    pub fd: BorrowedFd<'a>,
    /// Wake when it can be written to (besides readable or hung up).
    pub write: bool,
}

/// Waits until at least one of `fds` is readable (or hung up, or in error),
/// or writable where asked, or `timeout` passes (`None` waits forever).
/// Returns `(readable, writable)` per descriptor; a hang-up or an error
/// counts as both, so that the caller's next read or write reports it.
pub fn wait_events(
    fds: &[Interest<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<(bool, bool)>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|i| {
            let mut flags = PollFlags::IN;
            if i.write {
                flags |= PollFlags::OUT;
            }
            PollFd::from_borrowed_fd(i.fd, flags)
        })
        .collect();
    poll_until(&mut pfds, timeout)?;
    Ok(pfds
        .iter()
        .map(|p| {
            let r = p.revents();
            let bad = r.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL);
            (
                bad || r.contains(PollFlags::IN),
                bad || r.contains(PollFlags::OUT),
            )
        })
        .collect())
}

/// `poll` until something is ready or `timeout` passes, retried on
/// `EINTR` with what is left of it.
fn poll_until(pfds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<()> {
    // A zero timeout reads no clock.
    let start = timeout.filter(|t| !t.is_zero()).map(|_| Instant::now());
    loop {
        let left = match (timeout, start) {
            (Some(t), Some(s)) => Some(t.saturating_sub(s.elapsed())),
            (t, _) => t,
        };
        let ts = left.map(|left| Timespec {
            tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: left.subsec_nanos() as i64,
        });
        match rustix::event::poll(pfds, ts.as_ref()) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether every other end of `fd` is gone: a zero-timeout `poll` that
/// reports `POLLHUP` (for a socket, the peer and every duplicate of it
/// were closed, by their owners or by the kernel when they died).
pub fn hung_up(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfds = [PollFd::from_borrowed_fd(fd, PollFlags::empty())];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(&mut pfds, Some(&zero)) {
            Ok(_) => return Ok(pfds[0].revents().contains(PollFlags::HUP)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
