//! Waiting on several connections, processes and descriptors at once
//! (Python's `multiprocessing.connection.wait`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use super::Connection;
use crate::sys;
use crate::wait::Deadline;

/// Something [`wait`] can wait on: a [`Connection`] (a message or end of
/// stream to read), a [`Process`](crate::Process) (it ended), or a
/// descriptor ([`BorrowedFd`], [`OwnedFd`]: it is readable).
pub trait Waitable {
    /// The descriptor whose readability means "ready"; `None`: never ready
    /// (a process not started, a write-only connection end).
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Ready without looking at the descriptor (data already read and
    /// buffered).
    fn ready_now(&self) -> bool {
        false
    }

    /// After its descriptor polled readable: whether it really is ready
    /// (a connection's socket can carry a stale wake-up byte of its
    /// shared-memory path). Called by [`wait`]; the default says yes.
    #[doc(hidden)]
    fn confirm_ready(&self) -> bool {
        true
    }
}

impl Waitable for Connection {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        // A write-only end's socket is shut down for reading and would
        // always look ready.
        self.readable.then(|| self.as_fd())
    }

    fn ready_now(&self) -> bool {
        // Also asks a pipe's writer to make the socket readable when a
        // message comes through shared memory.
        self.readable && self.ready_or_arm()
    }

    fn confirm_ready(&self) -> bool {
        self.ready_or_arm()
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl Waitable for OwnedFd {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None`: no limit; a timeout too long to represent means no limit).
/// Returns the indices of the ready ones, in order; empty on timeout.
///
/// A connection is ready when it has a message (or end of stream) to read,
/// a process when it has ended, a descriptor when it is readable. Objects
/// of one type can be passed as they are; to mix types, wait on
/// `dyn Waitable` (`wait::<dyn Waitable>(&[&conn, &process], …)`).
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Process, Waitable, wait};
///
/// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
///
/// let (a, b) = multiproc::pipe()?;
/// let (c, d) = multiproc::pipe()?;
/// b.send(&1u8)?;
/// assert_eq!(wait(&[&a, &c], Some(Duration::from_secs(1)))?, vec![0]);
/// let mut p = Process::new(nap, 10);
/// p.start()?;
/// assert_eq!(wait::<dyn Waitable>(&[&c, &p], Some(Duration::from_secs(30)))?, vec![1]);
/// p.join()?;
/// # drop(d);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait<W: Waitable + ?Sized>(
    objects: &[&W],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    let deadline = Deadline::from_timeout(timeout);
    loop {
        let buffered: Vec<usize> = (0..objects.len())
            .filter(|&i| objects[i].ready_now())
            .collect();
        // With something ready already, only a look at the others.
        let watched: Vec<(usize, BorrowedFd<'_>)> = objects
            .iter()
            .enumerate()
            .filter(|(i, _)| !buffered.contains(i))
            .filter_map(|(i, o)| o.wait_fd().map(|fd| (i, fd)))
            .collect();
        let fds: Vec<BorrowedFd<'_>> = watched.iter().map(|&(_, fd)| fd).collect();
        let left = if buffered.is_empty() {
            deadline.remaining()
        } else {
            Some(Duration::ZERO)
        };
        let ready = sys::poll::wait_readable(&fds, left)?;
        let mut got: Vec<usize> = watched
            .into_iter()
            .zip(ready)
            .filter_map(|((i, _), r)| (r && objects[i].confirm_ready()).then_some(i))
            .chain(buffered.iter().copied())
            .collect();
        got.sort_unstable();
        if !got.is_empty() || deadline.expired() {
            return Ok(got);
        }
    }
}
