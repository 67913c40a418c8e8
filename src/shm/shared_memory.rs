//! [`SharedMemory`]: named shared memory segments in `/dev/shm` (Python's
//! `multiprocessing.shared_memory.SharedMemory`), with a lifetime rule that
//! neither destroys a segment behind its users' backs nor leaks it when
//! its creator crashes.
//!
//! # Lifetime rule
//!
//! * **The creator owns the name.** When the creating process drops its
//!   last handle (or calls [`close`](SharedMemory::close)), the name is
//!   removed, as if it called [`unlink`](SharedMemory::unlink). Processes
//!   that already have it mapped keep their memory until they drop it.
//! * **Attaching never destroys.** A process that only
//!   [`attach`](SharedMemory::attach)es (or receives a handle from another
//!   process) never removes the name, however it ends, unless it calls
//!   `unlink` itself. (Python's resource tracker removes segments a
//!   process merely attached to; this does not.)
//! * **A crashed creator is cleaned up after.** Each segment made by
//!   [`create`](SharedMemory::create) carries a 64-byte trailer, after the
//!   `size` bytes the program sees, recording its creator (pid and start
//!   time, so a recycled pid does not pass for the creator). A segment
//!   whose creator no longer runs is *stale*: every `create` removes stale
//!   segments (the one in its way, and any others in `/dev/shm`), and
//!   [`SharedMemory::cleanup_stale`] does so on demand.
//! * **Opting out.** [`persist`](SharedMemory::persist) gives up
//!   ownership: the segment then stays until someone calls `unlink`, like
//!   a plain POSIX segment.
//!
//! Liveness is judged by pid and start time in the caller's pid namespace:
//! processes that share `/dev/shm` but not a pid namespace (containers
//! sharing a tmpfs) would see each other's segments as stale, and should
//! [`persist`](SharedMemory::persist) them.
//!
//! Removal of a stale segment is serialised by an exclusive `flock` on the
//! segment, and re-checks that the name still refers to the same file, so
//! two processes cleaning up at once cannot remove a segment created in
//! between. Segments without the trailer (made by other programs, such as
//! Python) can be attached to; they are never removed automatically.
//!
//! Segments are created with mode 0600 (owner only). A named segment
//! cannot be sealed like the crate's anonymous ones, so a process with
//! write access could shrink it and make other processes' accesses fault;
//! only processes of the same user can open it.

#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{IndexError, ShmError};
use crate::codec::SharedFd;
use crate::sys;
use crate::sys::liveness::{self, ProcessId};
use crate::sys::shm::Mapping;

/// Bytes of bookkeeping after the program's bytes.
const TRAILER: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"mpshm\0\x01\0");
/// The longest name accepted (tmpfs allows 255 bytes).
const MAX_NAME: usize = 200;

/// The trailer, little-endian: magic, creator pid, creator start time,
/// user size. The magic is written last, so a reader that sees it sees the
/// rest.
struct Trailer {
    creator: Option<ProcessId>,
    size: u64,
}

impl Trailer {
    fn encode_body(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        let (pid, start) = self.creator.map_or((0, 0), |c| (c.pid, c.start));
        b[0..4].copy_from_slice(&pid.to_le_bytes());
        b[8..16].copy_from_slice(&start.to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    fn write(&self, fd: impl AsFd, total: usize) -> io::Result<()> {
        let at = (total - TRAILER) as u64;
        sys::shm::write_all_at(&fd, &self.encode_body(), at + 8)?;
        sys::shm::write_all_at(&fd, &MAGIC.to_le_bytes(), at)
    }

    /// The trailer of the file behind `fd`, if it has one.
    fn read(fd: impl AsFd) -> io::Result<Option<Trailer>> {
        let total = sys::shm::size(&fd)?;
        if total < TRAILER + 1 {
            return Ok(None);
        }
        let mut b = [0u8; 32];
        if sys::shm::read_at(&fd, &mut b, (total - TRAILER) as u64)? < b.len() {
            return Ok(None);
        }
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let size = word(24);
        if word(0) != MAGIC || size != (total - TRAILER) as u64 {
            return Ok(None);
        }
        let pid = i32::from_le_bytes(b[8..12].try_into().unwrap_or([0; 4]));
        Ok(Some(Trailer {
            creator: (pid != 0).then_some(ProcessId {
                pid,
                start: word(16),
            }),
            size,
        }))
    }

    /// Whether a creator is recorded and no longer runs.
    fn is_stale(&self) -> bool {
        self.creator.is_some_and(|c| !liveness::is_running(c))
    }
}

struct Inner {
    name: String,
    fd: SharedFd,
    map: Mapping,
    size: usize,
    /// Set in the creating process until the name is unlinked or the
    /// segment persisted.
    owns_name: AtomicBool,
    /// The pid that created it here (0 when attached), so that a forked
    /// copy of the handle never unlinks.
    creator_pid: i32,
}

/// A named shared memory segment (Python's
/// `multiprocessing.shared_memory.SharedMemory`).
///
/// Other processes find it by [`name`](Self::name), or receive the handle
/// itself (as a [`Process`](crate::Process) argument or in a message),
/// which maps the same memory without a lookup. See the module docs for
/// when the segment is removed.
///
/// ```
/// use multiproc::SharedMemory;
///
/// let shm = SharedMemory::new(16)?;
/// shm.write_at(0, b"hello")?;
/// let other = SharedMemory::attach(shm.name())?;
/// let mut buf = [0u8; 5];
/// other.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// drop(other); // attached: the segment stays
/// assert!(SharedMemory::attach(shm.name()).is_ok());
/// let name = shm.name().to_string();
/// drop(shm); // the creator's last handle: the name goes
/// assert!(SharedMemory::attach(&name).is_err());
/// # Ok::<(), multiproc::ShmError>(())
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Inner>,
}

fn check_name(name: &str) -> Result<&str, ShmError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty()
        || bare.len() > MAX_NAME
        || bare.contains('/')
        || bare.contains('\0')
        || bare == "."
        || bare == ".."
    {
        return Err(ShmError::InvalidName(name.to_string()));
    }
    Ok(bare)
}

/// What [`reclaim`] did with a name.
enum Reclaim {
    /// Removed it: its creator was dead.
    Removed,
    /// The name is gone (or changed to another file) meanwhile.
    Gone,
    /// Left alone: live creator, persisted, or not ours.
    Kept,
}

/// Removes the segment `name` if it is stale, serialised with other
/// processes doing the same (see the module docs).
fn reclaim(name: &str) -> io::Result<Reclaim> {
    let fd = match sys::shm::open_named(name) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Reclaim::Gone),
        Err(e) => return Err(e),
    };
    if !Trailer::read(&fd)?.is_some_and(|t| t.is_stale()) {
        return Ok(Reclaim::Kept);
    }
    sys::shm::lock_file(&fd)?;
    // Under the lock: the name must still be this very file, and still
    // stale.
    match sys::shm::open_named(name) {
        Ok(again) if sys::shm::file_id(&again)? == sys::shm::file_id(&fd)? => {}
        Ok(_) => return Ok(Reclaim::Gone),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Reclaim::Gone),
        Err(e) => return Err(e),
    }
    if !Trailer::read(&fd)?.is_some_and(|t| t.is_stale()) {
        return Ok(Reclaim::Kept);
    }
    sys::shm::unlink_named(name)?;
    Ok(Reclaim::Removed)
}

impl SharedMemory {
    /// Creates the segment `name` of `size` zeroed bytes (mode 0600).
    ///
    /// If a segment of that name exists and its creator no longer runs,
    /// it is removed first; if its creator runs, this fails with
    /// [`ShmError::Exists`]. Other stale segments are removed on the way.
    pub fn create(name: &str, size: usize) -> Result<SharedMemory, ShmError> {
        let bare = check_name(name)?;
        if size == 0 {
            return Err(ShmError::ZeroSize);
        }
        let total = size.checked_add(TRAILER).ok_or(ShmError::ZeroSize)?;
        let _ = Self::cleanup_stale();
        let mut attempts = 0;
        let fd = loop {
            match sys::shm::create_named(bare, total) {
                Ok(fd) => break fd,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 3 => {
                    attempts += 1;
                    if let Reclaim::Kept = reclaim(bare)? {
                        return Err(ShmError::Exists(bare.to_string()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(ShmError::Exists(bare.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let init = || -> io::Result<Mapping> {
            sys::shm::set_owner_only(&fd)?;
            let me = liveness::me();
            Trailer {
                creator: Some(me),
                size: size as u64,
            }
            .write(&fd, total)?;
            Mapping::map(fd.as_fd(), total)
        };
        let map = match init() {
            Ok(m) => m,
            Err(e) => {
                let _ = sys::shm::unlink_named(bare);
                return Err(e.into());
            }
        };
        Ok(SharedMemory {
            inner: Arc::new(Inner {
                name: bare.to_string(),
                fd: SharedFd::new(fd),
                map,
                size,
                owns_name: AtomicBool::new(true),
                creator_pid: sys::process::getpid(),
            }),
        })
    }

    /// Creates a segment of `size` bytes under a new unique name (Python's
    /// `SharedMemory(create=True, size=size)`).
    pub fn new(size: usize) -> Result<SharedMemory, ShmError> {
        loop {
            let name = format!("mp-{}", sys::random::hex(8)?);
            match Self::create(&name, size) {
                Err(ShmError::Exists(_)) => continue,
                r => return r,
            }
        }
    }

    /// Attaches to the existing segment `name`. Dropping the handle never
    /// removes the segment.
    pub fn attach(name: &str) -> Result<SharedMemory, ShmError> {
        let bare = check_name(name)?;
        let fd = match sys::shm::open_named(bare) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ShmError::NotFound(bare.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Self::from_fd(bare.to_string(), SharedFd::new(fd))?)
    }

    fn from_fd(name: String, fd: SharedFd) -> io::Result<SharedMemory> {
        let total = sys::shm::size(fd.fd())?;
        let size = match Trailer::read(fd.fd())? {
            Some(t) => t.size as usize,
            None => total,
        };
        let map = Mapping::map(fd.fd(), total)?;
        Ok(SharedMemory {
            inner: Arc::new(Inner {
                name,
                fd,
                map,
                size,
                owns_name: AtomicBool::new(false),
                creator_pid: 0,
            }),
        })
    }

    /// Removes every stale segment in `/dev/shm` (made by this crate, its
    /// creator no longer running); returns their names. `create` does this
    /// too.
    pub fn cleanup_stale() -> io::Result<Vec<String>> {
        let mut removed = Vec::new();
        for name in sys::shm::list_named()? {
            // Segments of other users, or vanishing ones, are not ours to
            // judge.
            if let Ok(Reclaim::Removed) = reclaim(&name) {
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// The segment's name (without a leading `/`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its size in bytes, as given to `create` (for a segment made by
    /// another program: the file's size).
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Whether this handle (or a clone) created the segment and still owns
    /// its name.
    pub fn is_owner(&self) -> bool {
        self.inner.owns_name.load(Ordering::SeqCst)
    }

    /// The first byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.map.as_ptr()
    }

    /// The segment's bytes (Python's `buf`).
    ///
    /// # Safety
    ///
    /// While the slice lives, no thread of any process may write the
    /// segment.
    pub unsafe fn buf(&self) -> &[u8] {
        // SAFETY: `size` mapped bytes; the caller excludes writers.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.inner.size) }
    }

    /// The segment's bytes, writable.
    ///
    /// # Safety
    ///
    /// While the slice lives, no other thread of any process may read or
    /// write the segment, and no other slice of it may exist here.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn buf_mut(&self) -> &mut [u8] {
        // SAFETY: as in `buf`, with exclusive access promised.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.inner.size) }
    }

    fn range(&self, offset: usize, len: usize) -> Result<(), ShmError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.inner.size => Ok(()),
            _ => Err(IndexError {
                index: offset.saturating_add(len),
                len: self.inner.size,
            }
            .into()),
        }
    }

    /// Copies `dst.len()` bytes from `offset` into `dst`.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), ShmError> {
        self.range(offset, dst.len())?;
        let src = self.as_ptr().wrapping_add(offset);
        // SAFETY: the range is inside the mapping (checked); bytes are
        // valid at any value, so a copy racing with writers is still sound.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the segment at `offset`.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), ShmError> {
        self.range(offset, src.len())?;
        let dst = self.as_ptr().wrapping_add(offset);
        // SAFETY: as in `read_at`; `src` is process-local memory, so the
        // ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }

    /// Removes the name now (Python's `unlink`); this and other mappings
    /// stay valid. Any process may call it.
    pub fn unlink(&self) -> Result<(), ShmError> {
        self.inner.owns_name.store(false, Ordering::SeqCst);
        Ok(sys::shm::unlink_named(&self.inner.name)?)
    }

    /// Gives up ownership: the segment outlives its creator until someone
    /// calls [`unlink`](Self::unlink), and is never treated as stale.
    pub fn persist(&self) -> Result<(), ShmError> {
        self.inner.owns_name.store(false, Ordering::SeqCst);
        let total = self.inner.size + TRAILER;
        if Trailer::read(self.inner.fd.fd())?.is_some() {
            Trailer {
                creator: None,
                size: self.inner.size as u64,
            }
            .write(self.inner.fd.fd(), total)?;
        }
        Ok(())
    }

    /// Drops this handle (Python's `close`); for the creator's last handle
    /// this removes the name, per the lifetime rule.
    pub fn close(self) {}
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.owns_name.load(Ordering::SeqCst) && self.creator_pid == sys::process::getpid() {
            // Only if the name still refers to our file: someone may have
            // unlinked it and created another under the same name.
            if let Ok(fd) = sys::shm::open_named(&self.name)
                && sys::shm::file_id(&fd).ok() == sys::shm::file_id(self.fd.fd()).ok()
            {
                let _ = sys::shm::unlink_named(&self.name);
            }
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.inner.name)
            .field("size", &self.inner.size)
            .field("owner", &self.is_owner())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    fd: SharedFd,
    name: String,
}

/// A `SharedMemory` travels to another process as its descriptor and name;
/// the receiver is an attacher (it never removes the segment on drop).
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            fd: self.inner.fd.clone(),
            name: self.inner.name.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        SharedMemory::from_fd(w.name, w.fd).map_err(serde::de::Error::custom)
    }
}
