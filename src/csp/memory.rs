//! Where a channel's state lives: a private heap block (the thread-only
//! flavor) or a sealed memfd mapped shared (the flavor that other
//! processes can open).

#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use crate::codec::SharedFd;
use crate::sys::shm::{self, InPlace, Mapping};

/// A zeroed, 16-byte-aligned block of memory holding one channel.
pub(crate) enum Memory {
    /// Private to this process.
    Heap(HeapBlock),
    /// A memfd segment, mapped shared; `fd` travels to other processes.
    Shared {
        /// The mapping (unmapped on drop).
        map: Mapping,
        /// The segment's descriptor.
        fd: SharedFd,
    },
}

impl Memory {
    /// A private zeroed block of at least `len` bytes.
    pub fn heap(len: usize) -> Memory {
        Memory::Heap(HeapBlock::new(len))
    }

    /// A new sealed memfd of `len` zeroed bytes, mapped shared.
    pub fn shared(len: usize) -> io::Result<Memory> {
        let fd = shm::memfd("multiproc-csp-channel", len)?;
        let map = Mapping::map(fd.as_fd(), len)?;
        Ok(Memory::Shared {
            map,
            fd: SharedFd::new(fd),
        })
    }

    /// Maps a segment received from another process.
    pub fn open(fd: SharedFd) -> io::Result<Memory> {
        let len = shm::size(fd.fd())?;
        let map = Mapping::map(fd.fd(), len)?;
        Ok(Memory::Shared { map, fd })
    }

    /// The first byte (16-byte aligned).
    pub fn base(&self) -> *mut u8 {
        match self {
            Memory::Heap(block) => block.ptr.as_ptr(),
            Memory::Shared { map, .. } => map.as_ptr(),
        }
    }

    /// The shared `T` at byte offset `off`, in place. Panics if it does
    /// not lie inside the memory or is misaligned.
    #[inline]
    pub fn at<T: InPlace>(&self, off: usize) -> &T {
        // SAFETY: `base` is `len` bytes, 16-byte (heap; a channel's types
        // need 8) or page (mapping) aligned, alive as long as `&self`.
        unsafe { shm::in_place(self.base(), self.len(), off) }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Memory::Heap(block) => block.len,
            Memory::Shared { map, .. } => map.len(),
        }
    }

    /// The segment's descriptor, for the shared flavor.
    pub fn fd(&self) -> Option<&SharedFd> {
        match self {
            Memory::Heap(_) => None,
            Memory::Shared { fd, .. } => Some(fd),
        }
    }
}

/// A zeroed heap allocation, freed on drop. Large blocks come from the
/// allocator's zeroed pages, so untouched parts cost nothing.
///
/// Cache-line aligned from [`LINE_ALIGNED`] bytes up; a smaller block (a
/// channel of a few parties and short messages, as a million-process ring
/// uses) takes the allocator's own 16-byte alignment, which costs no
/// padding: a 64-byte-aligned request makes the allocator cut the block
/// out of a larger one, which cost a million-channel ring about 40 bytes
/// a channel (measured).
pub(crate) struct HeapBlock {
    ptr: NonNull<u8>,
    /// The layout's size (the alignment follows from it, see
    /// [`HeapBlock::layout`]): a channel keeps 8 bytes less.
    len: usize,
}

// SAFETY: the block is plain memory accessed only through atomics and under
// the channel protocol; the pointer is owned and freed once.
unsafe impl Send for HeapBlock {}
// SAFETY: as above.
unsafe impl Sync for HeapBlock {}

/// The size from which a heap block is cache-line aligned.
const LINE_ALIGNED: usize = 1024;

impl HeapBlock {
    fn new(len: usize) -> HeapBlock {
        let len = len.max(64);
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        HeapBlock { ptr, len }
    }

    /// The layout of a block of `len` bytes.
    fn layout(len: usize) -> Layout {
        let align = if len >= LINE_ALIGNED { 64 } else { 16 };
        Layout::from_size_align(len, align).expect("channel size fits a Layout")
    }
}

impl Drop for HeapBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout, freed only here.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}
