//! Making a ring in a fresh memfd, and attaching to one received from
//! another process (checking its layout against the file).

#![allow(unsafe_code)]

use std::io;
use std::mem::offset_of;
use std::sync::atomic::Ordering;

use super::{
    Fixed, Geometry, Header, LSEG_MASK, MAGIC, MAX_CAPACITY, Ring, SEG, SEG_SHIFT, TABLE_OFF,
    VERSION, corrupt, cseg, entry,
};
use crate::codec::SharedFd;
use crate::sys;
use crate::sys::robust_mutex::RobustMutex;
use crate::wait::{self, Spin};

impl Ring {
    /// Creates a new ring in a fresh memfd.
    pub(crate) fn create(geo: Geometry) -> io::Result<Ring> {
        let capacity = geo.capacity.clamp(2 * SEG, MAX_CAPACITY);
        let nslots = capacity.div_ceil(SEG) as u32;
        let keep = (geo.ring.div_ceil(SEG) as u32).clamp(2, nslots);
        if geo.maxsize > i32::MAX as u32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "maxsize must be below 2^31",
            ));
        }
        let table_len = nslots as usize * 8;
        let bitmap_off = (TABLE_OFF + table_len).next_multiple_of(4096);
        let bitmap_len = (nslots as usize).div_ceil(64) * 8;
        let resident_off = bitmap_off + bitmap_len;
        let data_off = (resident_off + bitmap_len).next_multiple_of(SEG);
        let total = data_off + nslots as usize * SEG;
        let fd = sys::shm::memfd("multiproc-queue", total)?;
        let map = sys::shm::Mapping::map(std::os::fd::AsFd::as_fd(&fd), total)?;
        // The mapping is fresh, `total` bytes long, page-aligned and
        // zero-filled, and nobody else has the descriptor yet: we are its
        // only user while writing the header. The header fits in the first
        // page (checked at compile time).
        let h = map.as_ptr().cast::<Header>();
        let fixed = Fixed {
            magic: MAGIC,
            version: VERSION,
            seg_shift: SEG_SHIFT,
            nslots,
            keep,
            maxsize: geo.maxsize,
            _reserved: 0,
            bitmap_off: bitmap_off as u64,
            resident_off: resident_off as u64,
            data_off: data_off as u64,
            total_len: total as u64,
        };
        let field = |off: usize| h.cast::<u8>().wrapping_add(off);
        let fixed_at = field(offset_of!(Header, fixed)).cast::<Fixed>();
        // SAFETY: `h` points to the header of a fresh mapping no one else
        // sees yet (above), in bounds and page-aligned.
        unsafe { fixed_at.write(fixed) };
        let producer = field(offset_of!(Header, producer.lock)).cast::<RobustMutex>();
        // SAFETY: the producer lock lies in the header (in bounds, aligned),
        // nobody uses it yet, and the mapping stays where it is while the
        // ring (and any process it is passed to) uses it.
        unsafe { RobustMutex::init(producer) }?;
        let consumer = field(offset_of!(Header, consumer.lock)).cast::<RobustMutex>();
        // SAFETY: as for the producer lock.
        unsafe { RobustMutex::init(consumer) }?;
        let ring = Ring {
            fd: SharedFd::new(fd),
            map,
            nslots,
            keep,
            maxsize: geo.maxsize,
            bitmap_off,
            resident_off,
            data_off,
            spins: [const { Spin::new(&wait::SHARED) }; 3],
        };
        // Slot 0 starts the circle alone, as the segment that "ends" at
        // position 0.
        ring.entry(0)
            .store(entry(cseg(0) & LSEG_MASK, 0), Ordering::Relaxed);
        ring.bitmap(0).store(1, Ordering::Relaxed);
        ring.resident_word(0).store(1, Ordering::Relaxed);
        sys::shm::allocate(ring.fd.fd(), data_off, SEG)?;
        Ok(ring)
    }

    /// Maps an existing ring received from another process, checking its
    /// geometry against the file.
    pub(crate) fn attach(fd: SharedFd) -> io::Result<Ring> {
        let len = sys::shm::size(fd.fd())?;
        if len < TABLE_OFF {
            return Err(corrupt("file too small"));
        }
        let map = sys::shm::Mapping::map(fd.fd(), len)?;
        let h = map.as_ptr().cast::<Header>();
        let fixed_at = h.cast::<u8>().wrapping_add(offset_of!(Header, fixed));
        // SAFETY: the mapping holds at least a page, so the fixed part of
        // the header is in bounds (and page-aligned); it was written once by
        // the creator before the descriptor was shared and never changes.
        let fixed = unsafe { fixed_at.cast::<Fixed>().read() };
        let Fixed {
            magic,
            version,
            seg_shift,
            nslots,
            keep,
            maxsize,
            ..
        } = fixed;
        let bitmap_off = fixed.bitmap_off as usize;
        let resident_off = fixed.resident_off as usize;
        let data_off = fixed.data_off as usize;
        let total = fixed.total_len as usize;
        let table_end = TABLE_OFF + nslots as usize * 8;
        let bitmap_len = (nslots as usize).div_ceil(64) * 8;
        let ok = magic == MAGIC
            && version == VERSION
            && seg_shift == SEG_SHIFT
            && nslots >= 2
            && (nslots as usize) <= MAX_CAPACITY / SEG
            && keep >= 2
            && keep <= nslots
            && maxsize <= i32::MAX as u32
            && bitmap_off >= table_end
            && bitmap_off.is_multiple_of(8)
            && resident_off >= bitmap_off + bitmap_len
            && resident_off.is_multiple_of(8)
            && data_off >= resident_off + bitmap_len
            && data_off.is_multiple_of(SEG)
            && total == data_off + nslots as usize * SEG
            && total == len;
        if !ok {
            return Err(corrupt("not a queue, or a queue of another version"));
        }
        Ok(Ring {
            fd,
            map,
            nslots,
            keep,
            maxsize,
            bitmap_off,
            resident_off,
            data_off,
            spins: [const { Spin::new(&wait::SHARED) }; 3],
        })
    }
}
