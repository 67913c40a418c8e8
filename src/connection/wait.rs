//! Waiting on several connections at once (Python's
//! `multiprocessing.connection.wait`).

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use super::Connection;
use crate::sys;

/// Waits until at least one of `conns` has a message (or end of stream) to
/// read, or `timeout` passes (`None`: no limit). Returns the indices of the
/// ready connections, in order; empty on timeout.
///
/// ```
/// use std::time::Duration;
/// let (a, b) = multiproc::pipe(true)?;
/// let (c, d) = multiproc::pipe(true)?;
/// b.send(&1u8)?;
/// assert_eq!(multiproc::wait(&[&a, &c], Some(Duration::from_secs(1)))?, vec![0]);
/// # drop(d);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait(conns: &[&Connection], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let buffered: Vec<usize> = (0..conns.len())
        .filter(|&i| conns[i].readable && conns[i].has_buffered())
        .collect();
    if !buffered.is_empty() {
        return Ok(buffered);
    }
    // Only readable ends are watched: a write-only end's socket is shut
    // down for reading and would always look ready.
    let watched: Vec<usize> = (0..conns.len()).filter(|&i| conns[i].readable).collect();
    let fds: Vec<_> = watched.iter().map(|&i| conns[i].as_fd()).collect();
    let ready = sys::poll::wait_readable(&fds, timeout)?;
    Ok(watched
        .into_iter()
        .zip(ready)
        .filter_map(|(i, r)| r.then_some(i))
        .collect())
}
