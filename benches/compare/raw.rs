//! The raw-OS floor's building blocks: `socketpair`, `fork`, `waitpid`,
//! `read`/`write`/`writev` called through `libc` directly, and the same
//! framing the crate uses (4-byte big-endian length, then the payload),
//! with none of the crate's machinery (no locks, no codec, no `recvmsg`
//! control buffer).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A connected pair of Unix stream sockets (`O_CLOEXEC`), default buffer
/// sizes, as `multiproc::pipe(true)` makes them.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both descriptors are open and owned
    // by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that closes `close_in_child` (the parent's end of a
/// socketpair, so that only the parent holds it), runs `body` and exits
/// with `_exit` (0, or 1 if `body` panicked). Returns the child's pid.
///
/// The bench process never starts a thread, so the child gets a consistent
/// copy of every lock (allocator, stdio) and may run ordinary Rust code.
pub fn fork_child(close_in_child: BorrowedFd<'_>, body: impl FnOnce()) -> io::Result<i32> {
    // SAFETY: the bench process is single-threaded (see above).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: in the child, this copy of the descriptor belongs to
            // no Rust owner that will run again (the child ends in _exit).
            unsafe { libc::close(close_in_child.as_raw_fd()) };
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_ok();
            // SAFETY: _exit never returns and skips the parent's exit
            // handlers, which are not the child's business.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => Ok(pid),
    }
}

/// Waits for child `pid`; returns its raw wait status.
pub fn waitpid(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid place for the status word.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `read(2)`, resumed after `EINTR`. `Ok(0)` is end of stream.
pub fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writing.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Fills `buf` completely; `Ok(false)` if the stream ended first.
pub fn read_exact(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_some(fd, &mut buf[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(true)
}

/// Writes every byte of `bufs`, gathered by `writev(2)`.
pub fn write_all(fd: BorrowedFd<'_>, bufs: &[&[u8]]) -> io::Result<()> {
    let mut iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    let mut first = 0;
    while first < iov.len() {
        let rest = &iov[first..];
        // SAFETY: every iovec points into a slice of `bufs` (or into what is
        // left of one), alive and unmodified for the whole call.
        let n = unsafe { libc::writev(fd.as_raw_fd(), rest.as_ptr(), rest.len() as libc::c_int) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut n = n as usize;
        while first < iov.len() && n >= iov[first].iov_len {
            n -= iov[first].iov_len;
            first += 1;
        }
        if n > 0 {
            let v = &mut iov[first];
            // SAFETY: `n` is less than this iovec's length, so the advanced
            // pointer stays inside the same slice.
            v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
            v.iov_len -= n;
        }
    }
    Ok(())
}

/// `payload` framed: its length as a 4-byte big-endian integer, then itself.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads frames through one reused 64 KiB buffer, so that a small frame
/// (or several) arrives in one `read`, as the crate's reader does.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader {
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
        }
    }

    /// The next frame's payload (frames must fit the buffer); `None` at
    /// end of stream.
    pub fn next<'a>(&'a mut self, fd: BorrowedFd<'_>) -> io::Result<Option<&'a [u8]>> {
        if !self.fill(fd, 4)? {
            return Ok(None);
        }
        let h = &self.buf[self.start..self.start + 4];
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if !self.fill(fd, 4 + len)? {
            return Ok(None);
        }
        let s = self.start + 4;
        self.start += 4 + len;
        Ok(Some(&self.buf[s..s + len]))
    }

    fn fill(&mut self, fd: BorrowedFd<'_>, want: usize) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        while self.end - self.start < want {
            if self.buf.len() - self.start < want {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match read_some(fd, &mut self.buf[self.end..])? {
                0 => return Ok(false),
                n => self.end += n,
            }
        }
        Ok(true)
    }
}
