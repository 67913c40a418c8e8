//! Stream sockets that carry bytes and file descriptors.
//!
//! Descriptors ride beside the bytes as `SCM_RIGHTS` ancillary data; received
//! descriptors are created `O_CLOEXEC` (`MSG_CMSG_CLOEXEC`).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, Shutdown, SocketFlags, SocketType,
};

/// Most descriptors one `sendmsg` may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_MSG: usize = 253;

/// A connected pair of Unix stream sockets, both `O_CLOEXEC`.
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Sends some prefix of `bufs`, with `fds` attached to the first byte.
/// Returns how many bytes went out. Never raises `SIGPIPE`.
pub fn send(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    sendmsg(fd, bufs, fds, SendFlags::NOSIGNAL)
}

/// Like [`send`], but never waits: a full socket buffer gives
/// `ErrorKind::WouldBlock`.
pub fn try_send(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    sendmsg(fd, bufs, fds, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)
}

/// `sendmsg` with `fds` as `SCM_RIGHTS`, retried on `EINTR`.
fn sendmsg(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> io::Result<usize> {
    loop {
        let res = if fds.is_empty() {
            rustix::net::sendmsg(fd, bufs, &mut SendAncillaryBuffer::default(), flags)
        } else {
            let mut space =
                vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "too many descriptors in one message",
                ));
            }
            rustix::net::sendmsg(fd, bufs, &mut control, flags)
        };
        match res {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes every byte of `bufs` (blocking), `fds` attached to the first byte.
#[inline]
pub fn send_all(fd: BorrowedFd<'_>, bufs: &[&[u8]], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    // A few pieces (every caller's case) are listed without allocating.
    let mut few = [IoSlice::new(&[]); 4];
    let mut many: Vec<IoSlice<'_>>;
    let mut slices: &mut [IoSlice<'_>] = if bufs.len() <= few.len() {
        for (slice, buf) in few.iter_mut().zip(bufs) {
            *slice = IoSlice::new(buf);
        }
        &mut few[..bufs.len()]
    } else {
        many = bufs.iter().map(|b| IoSlice::new(b)).collect();
        &mut many
    };
    let mut first = true;
    while !slices.is_empty() {
        let n = send(fd, slices, if first { fds } else { &[] })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        first = false;
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes; received descriptors are appended to
/// `fds`. `Ok(0)` means the peer closed its end. With `nonblocking`, an empty
/// socket gives `ErrorKind::WouldBlock`.
pub fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MSG))];
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
        match rustix::net::recvmsg(fd, &mut iov, &mut control, flags) {
            Ok(msg) => {
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = m {
                        fds.extend(rights);
                    }
                }
                return Ok(msg.bytes);
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives bytes from a socket or pipe that never carries descriptors
/// (TCP). Same return convention as [`recv`].
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8], nonblocking: bool) -> io::Result<usize> {
    let flags = if nonblocking {
        RecvFlags::DONTWAIT
    } else {
        RecvFlags::empty()
    };
    loop {
        match rustix::net::recv(fd, &mut *buf, flags) {
            Ok((n, _)) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives bytes into the spare capacity of `buf` (appending them, so
/// `buf.len()` grows by the count returned), without zeroing that room
/// first. Uses plain `recv`: descriptors arriving with these bytes are
/// closed by the kernel, so call it only for bytes that cannot carry any
/// (the middle of a frame, whose descriptors came with its first byte).
/// Same return convention as [`recv`].
pub fn recv_spare(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, nonblocking: bool) -> io::Result<usize> {
    let flags = if nonblocking {
        RecvFlags::DONTWAIT
    } else {
        RecvFlags::empty()
    };
    loop {
        match rustix::net::recv(fd, rustix::buffer::spare_capacity(buf), flags) {
            Ok((n, _)) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Shuts down reading, writing or both directions of a socket.
pub fn shutdown(fd: BorrowedFd<'_>, read: bool, write: bool) -> io::Result<()> {
    let how = match (read, write) {
        (true, true) => Shutdown::Both,
        (true, false) => Shutdown::Read,
        (false, true) => Shutdown::Write,
        (false, false) => return Ok(()),
    };
    match rustix::net::shutdown(fd, how) {
        Ok(()) | Err(Errno::NOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A second descriptor for the same open file, `O_CLOEXEC`.
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Disables Nagle's algorithm on a TCP socket (best effort).
pub fn set_nodelay(fd: impl AsFd) {
    let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
}

/// Connects a new `O_CLOEXEC` Unix stream socket to the socket file at
/// `path`. Connecting waits only while the listener's backlog is full;
/// `timeout` bounds that wait (`None`: no limit) and gives
/// `ErrorKind::TimedOut`.
pub fn connect_unix(
    path: &std::path::Path,
    timeout: Option<std::time::Duration>,
) -> io::Result<OwnedFd> {
    use rustix::net::sockopt::{Timeout, set_socket_timeout};
    let addr = unix_address(path)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    if let Some(t) = timeout {
        // A zero SO_SNDTIMEO would mean "no limit".
        let t = t.max(std::time::Duration::from_millis(1));
        set_socket_timeout(&fd, Timeout::Send, Some(t))?;
    }
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if timeout.is_some() => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the listener's backlog stayed full",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if timeout.is_some() {
        set_socket_timeout(&fd, Timeout::Send, None)?;
    }
    Ok(fd)
}

/// Whether `path` names a socket in Linux's abstract namespace (its first
/// byte is NUL, as in Python): no file, gone with the last descriptor.
pub fn is_abstract(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().first() == Some(&0)
}

/// The socket address for a Unix socket path, or for an abstract name
/// written as a path whose first byte is NUL.
fn unix_address(path: &std::path::Path) -> io::Result<rustix::net::SocketAddrUnix> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if is_abstract(path) {
        Ok(rustix::net::SocketAddrUnix::new_abstract_name(&bytes[1..])?)
    } else {
        Ok(rustix::net::SocketAddrUnix::new(path)?)
    }
}

/// How many connections may wait to be accepted (the kernel caps it at
/// `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// A new `O_CLOEXEC`, non-blocking Unix stream socket listening at `path`
/// (a file path, or an abstract name: see [`is_abstract`]).
///
/// A socket file is made owner-only (mode 0600, whatever the umask) before
/// the socket starts listening, so no other user can connect even for an
/// instant. Fails with `AddrInUse` if `path` exists.
pub fn listen_unix(path: &std::path::Path) -> io::Result<OwnedFd> {
    use rustix::fs::Mode;
    let addr = unix_address(path)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&fd, &addr)?;
    if !is_abstract(path) {
        // Until `listen`, a connect is refused whatever the mode, so
        // nobody gets in before the mode is right.
        if let Err(e) = rustix::fs::chmod(path, Mode::RUSR | Mode::WUSR) {
            let _ = rustix::fs::unlink(path);
            return Err(e.into());
        }
    }
    if let Err(e) = rustix::net::listen(&fd, BACKLOG) {
        if !is_abstract(path) {
            let _ = rustix::fs::unlink(path);
        }
        return Err(e.into());
    }
    Ok(fd)
}
