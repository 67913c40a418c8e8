//! The raw-OS floor's building blocks, called through `libc` directly:
//!
//! * `socketpair`, `fork`, `waitpid`, `read`/`write`/`writev`, and the
//!   same framing the crate uses (4-byte big-endian length, then the
//!   payload), with none of the crate's machinery (no locks, no codec, no
//!   `recvmsg` control buffer);
//! * shared anonymous memory (`mmap(MAP_SHARED)`, inherited by `fork`),
//!   `futex(2)` wait/wake, and the two mutexes the crate's locks are
//!   measured against: a minimal three-state futex mutex and a robust,
//!   process-shared pthread mutex (what the crate's locks are made of).

use std::cell::UnsafeCell;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::harness::{micros_per_op, monotonic_ns};

/// A connected pair of Unix stream sockets (`O_CLOEXEC`), default buffer
/// sizes, as `multiproc::pipe()` makes them.
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

/// Forks a child that runs `body` and exits with `_exit` (0, or 1 if
/// `body` panicked); returns its pid.
///
/// The bench process never starts a thread before its last forking row,
/// so the child gets a consistent copy of every lock (allocator, stdio)
/// and may run ordinary Rust code.
fn fork_pid(body: impl FnOnce()) -> io::Result<i32> {
    // SAFETY: the bench process is single-threaded (see above).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_ok();
            // SAFETY: _exit never returns and skips the parent's exit
            // handlers, which are not the child's business.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => Ok(pid),
    }
}

/// `Ok` if a child's wait `status` says it exited with status 0.
pub fn check_status(status: i32) -> io::Result<()> {
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "raw child ended with wait status {status:#x}"
        )))
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

    /// The next frame's payload (the buffer grows for a frame larger
    /// than it); `None` at end of stream.
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
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            }
            match read_some(fd, &mut self.buf[self.end..])? {
                0 => return Ok(false),
                n => self.end += n,
            }
        }
        Ok(true)
    }
}

/// Answers every frame on `fd` until an empty one or end of stream:
/// `answer` appends the reply's payload for a request's, and the framed
/// reply goes out in one `write`.
pub fn serve_frames(fd: OwnedFd, mut answer: impl FnMut(&[u8], &mut Vec<u8>)) {
    let mut reader = FrameReader::new();
    let mut out = Vec::with_capacity(64);
    while let Some(m) = reader.next(fd.as_fd()).expect("read") {
        if m.is_empty() {
            return;
        }
        out.clear();
        out.extend_from_slice(&[0; 4]);
        answer(m, &mut out);
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        write_all(fd.as_fd(), &[&out]).expect("write");
    }
}

/// A forked child that is killed and reaped if dropped before
/// [`wait`](Self::wait): a row that fails half-way must not leave a
/// child asleep on a futex nobody will wake.
pub struct RawChild {
    pid: i32,
}

impl RawChild {
    /// Forks a child running `body` (see [`fork_pid`]).
    pub fn fork(body: impl FnOnce()) -> io::Result<RawChild> {
        Ok(RawChild {
            pid: fork_pid(body)?,
        })
    }

    /// Forks a child that first closes `close_in_child` (the parent's end
    /// of a socketpair, so that only the parent holds it), then runs
    /// `body`.
    pub fn fork_closing(
        close_in_child: BorrowedFd<'_>,
        body: impl FnOnce(),
    ) -> io::Result<RawChild> {
        let fd = close_in_child.as_raw_fd();
        RawChild::fork(move || {
            // SAFETY: in the child, this copy of the descriptor belongs to
            // no Rust owner that will run again (the child ends in _exit).
            unsafe { libc::close(fd) };
            body()
        })
    }

    /// Waits for it; an error unless it exited with status 0.
    pub fn wait(self) -> io::Result<()> {
        let pid = self.pid;
        std::mem::forget(self);
        check_status(waitpid(pid)?)
    }
}

impl Drop for RawChild {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // unreaped child, so it cannot have been recycled.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let _ = waitpid(self.pid);
    }
}

/// A `T` in a shared anonymous mapping (`MAP_SHARED | MAP_ANONYMOUS`),
/// zero-filled, page aligned, shared with every child forked afterwards.
pub struct Shared<T> {
    ptr: *mut T,
}

impl<T: Zeroable> Shared<T> {
    /// A zeroed `T` in fresh shared memory.
    pub fn new() -> io::Result<Shared<T>> {
        assert!(std::mem::align_of::<T>() <= 4096);
        // SAFETY: a fresh anonymous mapping, no address hint, no fd.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<T>().max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Shared { ptr: p.cast() })
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping is page aligned, large enough, zero-filled
        // (a valid `T`, by `Zeroable`) and lives until `drop`.
        unsafe { &*self.ptr }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, with the same length; no
        // reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), std::mem::size_of::<T>().max(1)) };
    }
}

/// Types valid when all-zero and usable from several processes through a
/// shared `&T` (atomics, process-shared mutexes).
///
/// # Safety
///
/// The all-zero bit pattern is a valid `T`, and `T` is `Sync` in the
/// cross-process sense: every access through `&T` is atomic or otherwise
/// synchronized.
pub unsafe trait Zeroable {}

/// `T` alone on its 64-byte cache line(s).
#[repr(C, align(64))]
pub struct Line<T>(pub T);

impl<T> Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Sleeps while `*w == val` (a shared futex: the word may be in memory
/// mapped by several processes). Spurious returns are the caller's
/// business.
pub fn futex_wait(w: &AtomicU32, val: u32) {
    // SAFETY: `w` is a valid, aligned 32-bit word for the whole call; no
    // timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAIT,
            val,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes up to `n` sleepers on `w`.
pub fn futex_wake(w: &AtomicU32, n: i32) {
    // SAFETY: as in `futex_wait`.
    unsafe {
        libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

/// Drepper's three-state futex mutex ("Futexes are tricky", mutex 2):
/// 0 free, 1 held, 2 held with (possible) sleepers. Like the crate's
/// locks, a contender sleeps at once, without spinning. Not robust: a
/// holder that dies leaves it held forever.
#[repr(transparent)]
pub struct FutexMutex(AtomicU32);

impl FutexMutex {
    #[inline]
    pub fn lock(&self) {
        let w = &self.0;
        if w.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        while w.swap(2, Ordering::Acquire) != 0 {
            futex_wait(w, 2);
        }
    }

    #[inline]
    pub fn unlock(&self) {
        if self.0.swap(0, Ordering::Release) == 2 {
            futex_wake(&self.0, 1);
        }
    }
}

/// A robust, process-shared, error-checking pthread mutex: the kind under
/// every lock of the crate, without the crate around it.
#[repr(transparent)]
pub struct RobustMutex(UnsafeCell<libc::pthread_mutex_t>);

impl RobustMutex {
    /// Initialises it in place.
    ///
    /// # Safety
    ///
    /// `self` is zeroed, unused, in shared memory, and stays at this
    /// address while any process uses it.
    pub unsafe fn init(&self) -> io::Result<()> {
        // SAFETY: the caller's contract; the attribute object lives for
        // the calls that use it.
        let rc = unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_settype(&mut attr, libc::PTHREAD_MUTEX_ERRORCHECK);
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            let rc = libc::pthread_mutex_init(self.0.get(), &attr);
            libc::pthread_mutexattr_destroy(&mut attr);
            rc
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Locks; panics on any error (a floor never sees `EOWNERDEAD`).
    #[inline]
    pub fn lock(&self) {
        // SAFETY: `self` is a mutex mapped for as long as `&self`: made
        // robust by `init`, or still all-zero, which glibc reads as
        // PTHREAD_MUTEX_INITIALIZER (a valid plain mutex).
        let rc = unsafe { libc::pthread_mutex_lock(self.0.get()) };
        assert_eq!(rc, 0, "pthread_mutex_lock");
    }

    /// Unlocks; the calling thread holds it.
    #[inline]
    pub fn unlock(&self) {
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_unlock(self.0.get()) };
        assert_eq!(rc, 0, "pthread_mutex_unlock");
    }
}

/// A one-word flag for the raw ping-pong: `set` stores 1 and always
/// wakes; `wait_clear` sleeps until it is 1, then stores 0. No spinning.
#[repr(transparent)]
pub struct FutexFlag(AtomicU32);

impl FutexFlag {
    #[inline]
    pub fn set(&self) {
        self.0.store(1, Ordering::SeqCst);
        futex_wake(&self.0, 1);
    }

    #[inline]
    pub fn wait_clear(&self) {
        while self.0.load(Ordering::SeqCst) == 0 {
            futex_wait(&self.0, 0);
        }
        self.0.store(0, Ordering::SeqCst);
    }
}

/// The start handshake of a raw run's children, on its own cache lines
/// at the head of their shared page: each child [`arrive`](Self::arrive)s
/// and (if it is timed from the start) [`wait_go`](Self::wait_go)es; the
/// bench process waits for all of them, then [`open`](Self::open)s the
/// gate; each child stamps when it [`finish`](Self::finish)ed.
#[repr(C)]
pub struct StartGate {
    ready: Line<AtomicU32>,
    go: Line<AtomicU32>,
    end: Line<AtomicU64>,
}

impl StartGate {
    /// In a child: counts it as ready.
    pub fn arrive(&self) {
        self.ready.fetch_add(1, Ordering::SeqCst);
        futex_wake(&self.ready, 1);
    }

    /// In a child: sleeps until the gate is open.
    pub fn wait_go(&self) {
        while self.go.load(Ordering::SeqCst) == 0 {
            futex_wait(&self.go, 0);
        }
    }

    /// In a child: records [`monotonic_ns`] now as its finishing time
    /// (the latest of all is kept).
    pub fn finish(&self) {
        self.end.fetch_max(monotonic_ns(), Ordering::SeqCst);
    }

    /// Waits until `children` have arrived, then opens the gate; returns
    /// when it opened ([`monotonic_ns`]).
    pub fn open_when_ready(&self, children: usize) -> u64 {
        loop {
            let r = self.ready.load(Ordering::SeqCst);
            if r as usize >= children {
                break;
            }
            futex_wait(&self.ready, r);
        }
        let t0 = monotonic_ns();
        self.go.store(1, Ordering::SeqCst);
        futex_wake(&self.go, i32::MAX);
        t0
    }

    /// The latest finishing time of the children.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::SeqCst)
    }
}

/// The raw ping-pong floor: a forked echo answering each `ping` flag
/// with a `pong` flag (store + wake / wait + clear, no spinning).
pub struct FutexPingPong {
    echo: RawChild,
    flags: Shared<PingPongFlags>,
}

#[repr(C)]
struct PingPongFlags {
    ping: Line<FutexFlag>,
    pong: Line<FutexFlag>,
    stop: Line<AtomicU32>,
}

impl FutexPingPong {
    /// Forks the echo.
    pub fn start() -> io::Result<Self> {
        let flags = Shared::<PingPongFlags>::new()?;
        let pp = &*flags;
        let echo = RawChild::fork(|| {
            crate::harness::pin_child();
            loop {
                pp.ping.wait_clear();
                if pp.stop.load(Ordering::SeqCst) != 0 {
                    return;
                }
                pp.pong.set();
            }
        })?;
        Ok(FutexPingPong { echo, flags })
    }

    /// µs per round trip over `n` round trips.
    pub fn round_trips(&self, n: u64) -> f64 {
        let pp = &*self.flags;
        let t0 = Instant::now();
        for _ in 0..n {
            pp.ping.set();
            pp.pong.wait_clear();
        }
        micros_per_op(t0, n)
    }

    /// Stops the echo and reaps it.
    pub fn stop(self) -> io::Result<()> {
        self.flags.stop.store(1, Ordering::SeqCst);
        self.flags.ping.set();
        self.echo.wait()
    }
}

// SAFETY: atomics are valid at zero and shared through `&` by design.
unsafe impl Zeroable for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl Zeroable for std::sync::atomic::AtomicU64 {}
// SAFETY: an atomic word, free at zero.
unsafe impl Zeroable for FutexMutex {}
// SAFETY: an atomic word, clear at zero.
unsafe impl Zeroable for FutexFlag {}
// SAFETY: zero bytes are what `RobustMutex::init` starts from; until then
// it is not used, and afterwards every access goes through the
// process-shared pthread calls.
unsafe impl Zeroable for RobustMutex {}
// SAFETY: a line of a zeroable `T` plus padding.
unsafe impl<T: Zeroable> Zeroable for Line<T> {}
// SAFETY: three zeroable lines.
unsafe impl Zeroable for StartGate {}
// SAFETY: three zeroable lines.
unsafe impl Zeroable for PingPongFlags {}
