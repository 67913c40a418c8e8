//! Shared memory: anonymous memfd segments (sealed against resizing, so a
//! peer cannot make our mapping fault) and named `/dev/shm` segments, both
//! mapped shared and read-write.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, Mode, SealFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm::OFlags;

/// A shared, read-write mapping of a whole memory file. Unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; what is stored in it decides
// how it may be accessed, and the types built on top enforce that.
unsafe impl Send for Mapping {}
// SAFETY: as above; `Mapping` itself only hands out a raw pointer.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all `len` bytes of `fd` shared and read-write.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map zero bytes",
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps
        // nothing; `len` is non-zero.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The shared `T` at byte offset `off`, in place.
    ///
    /// Panics if it does not lie inside the mapping or `off` is not
    /// aligned for `T` (the mapping itself is page-aligned).
    #[inline]
    pub fn at<T: InPlace>(&self, off: usize) -> &T {
        // SAFETY: the mapping is `len` bytes from a page-aligned `ptr` and
        // stays mapped as long as `&self`.
        unsafe { in_place(self.ptr.as_ptr(), self.len, off) }
    }
}

/// A type that may be viewed in place in memory other processes (or
/// threads) write at the same time: shared atomics, and `#[repr(C)]`
/// structures of them and of process-shared mutexes.
///
/// # Safety
///
/// Every bit pattern is a valid value of the type, and every change to it
/// goes through interior mutability (atomics, a mutex's own word), so a
/// shared reference into such memory is sound.
pub unsafe trait InPlace: Sync {}

// SAFETY: atomics are valid at any bit pattern and change only atomically.
unsafe impl InPlace for std::sync::atomic::AtomicU8 {}
// SAFETY: as above.
unsafe impl InPlace for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl InPlace for std::sync::atomic::AtomicU64 {}

/// The `T` at byte offset `off` of the `len` bytes at `base`: the one
/// checked conversion from a place in shared memory to a reference.
/// Panics if the `T` does not lie inside the `len` bytes or is misaligned.
///
/// # Safety
///
/// `base` points to `len` bytes of memory, aligned at least as `T` is,
/// that stay valid for `'a`.
#[inline]
pub unsafe fn in_place<'a, T: InPlace>(base: *mut u8, len: usize, off: usize) -> &'a T {
    assert!(
        off.is_multiple_of(std::mem::align_of::<T>())
            && off
                .checked_add(std::mem::size_of::<T>())
                .is_some_and(|end| end <= len),
        "a shared place out of its memory or misaligned"
    );
    let place = base.wrapping_add(off).cast::<T>();
    // SAFETY: the `T` lies inside the memory and is aligned (checked above,
    // with the caller's promise about `base`); `InPlace` makes a shared
    // reference to it sound while others write it.
    unsafe { &*place }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `map` and not yet
        // unmapped; whoever borrowed from it borrowed from `self`.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len);
        }
    }
}

/// A new anonymous memory file of `len` zeroed bytes, `O_CLOEXEC`, sealed
/// so that nobody can shrink or grow it, owner-only (mode 0600: the kernel
/// makes memory files 0777, reachable through `/proc/<pid>/fd` by whoever
/// may inspect this process).
pub fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    set_owner_only(&fd)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(fd)
}

/// Whether the file behind `fd` is sealed against shrinking and growing
/// (so that a mapping of it can never fault past its end).
pub fn resize_sealed(fd: impl AsFd) -> io::Result<bool> {
    let seals = rustix::fs::fcntl_get_seals(fd)?;
    Ok(seals.contains(SealFlags::SHRINK | SealFlags::GROW))
}

/// The size of the file behind `fd`.
pub fn size(fd: impl AsFd) -> io::Result<usize> {
    Ok(rustix::fs::fstat(fd)?.st_size as usize)
}

/// Creates the named segment `/dev/shm/<name>` (mode 0600, whatever the
/// umask) of `len` zeroed bytes; fails if it exists.
pub fn create_named(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = rustix::shm::open(
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    )?;
    let sized = set_owner_only(&fd).and_then(|()| Ok(rustix::fs::ftruncate(&fd, len as u64)?));
    if let Err(e) = sized {
        let _ = rustix::shm::unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// Opens the existing named segment `/dev/shm/<name>`.
pub fn open_named(name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::shm::open(name, OFlags::RDWR, Mode::empty())?)
}

/// Removes the name `/dev/shm/<name>`; mappings stay valid. A missing name
/// is not an error.
pub fn unlink_named(name: &str) -> io::Result<()> {
    match rustix::shm::unlink(name) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads up to `buf.len()` bytes at `offset` of the file behind `fd`.
pub fn read_at(fd: impl AsFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    Ok(rustix::io::pread(fd, buf, offset)?)
}

/// Writes all of `buf` at `offset` of the file behind `fd`.
pub fn write_all_at(fd: impl AsFd, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = rustix::io::pwrite(&fd, buf, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Takes an exclusive `flock` on the file behind `fd`, waiting for it;
/// released when every descriptor of that open file is closed.
pub fn lock_file(fd: impl AsFd) -> io::Result<()> {
    loop {
        match rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive) {
            Err(Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// The (device, inode) pair naming the file behind `fd`.
pub fn file_id(fd: impl AsFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// The names of the named segments in `/dev/shm` (regular files only).
pub fn list_named() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let entry = entry?;
        if entry.file_type().is_ok_and(|t| t.is_file())
            && let Ok(name) = entry.file_name().into_string()
        {
            names.push(name);
        }
    }
    Ok(names)
}

/// Sets the permission bits of the file behind `fd` to owner read/write
/// only (0600), whatever the umask did at creation.
pub fn set_owner_only(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::RUSR | Mode::WUSR)?)
}

/// Gives the memory behind `len` bytes at `offset` of the memory file back
/// to the system (`fallocate(PUNCH_HOLE)`); the range reads as zeros
/// afterwards and costs nothing until written again. Allowed on a file
/// sealed against resizing (only a write seal forbids it).
pub fn punch_hole(fd: BorrowedFd<'_>, offset: usize, len: usize) -> io::Result<()> {
    use rustix::fs::FallocateFlags;
    Ok(rustix::fs::fallocate(
        fd,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset as u64,
        len as u64,
    )?)
}

/// Backs `len` bytes at `offset` of the memory file with memory now
/// (`fallocate`), so that writing there later cannot fault for lack of
/// memory: an exhausted system answers here, with an error
/// (`ENOSPC`/`ENOMEM`), instead of with `SIGBUS` on a store.
pub fn allocate(fd: BorrowedFd<'_>, offset: usize, len: usize) -> io::Result<()> {
    use rustix::fs::FallocateFlags;
    Ok(rustix::fs::fallocate(
        fd,
        FallocateFlags::KEEP_SIZE,
        offset as u64,
        len as u64,
    )?)
}

/// How many bytes of memory back the file behind `fd` right now (its
/// allocated blocks, not its size).
pub fn allocated_bytes(fd: impl AsFd) -> io::Result<usize> {
    Ok(rustix::fs::fstat(fd)?.st_blocks as usize * 512)
}
