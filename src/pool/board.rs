//! A worker's status word in shared memory, readable by the pool after the
//! worker died: it tells which chunk the worker held at the moment of
//! death, so exactly that chunk fails and the chunks it had not started
//! are run elsewhere.
//!
//! | value | the worker is… | written |
//! |---|---|---|
//! | [`INIT`] | starting, or running the initializer | by the pool at creation, by the worker before the initializer |
//! | [`IDLE`] | between chunks, or waiting for one | after the initializer, after each result is sent |
//! | `n` | running chunk `n`, or sending its result | before the chunk's function is called |
//!
//! The worker stores with `Release` and the pool loads with `Acquire`; the
//! pool only reads after it saw the worker die (its socket closed or its
//! pidfd readable), and the kernel's process exit orders every store of the
//! dead process before that.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::SharedFd;
use crate::sys;
use crate::sys::shm::Mapping;

/// Starting or in the initializer.
pub const INIT: u64 = u64::MAX;
/// Between chunks.
pub const IDLE: u64 = 0;

/// One worker's status word.
#[derive(Clone)]
pub struct Board {
    fd: SharedFd,
    map: Arc<Mapping>,
}

impl Board {
    /// A new word in its own sealed memfd, set to [`INIT`].
    pub fn new() -> io::Result<Board> {
        let fd = sys::shm::memfd("multiproc-pool-worker", 8)?;
        let map = Mapping::map(std::os::fd::AsFd::as_fd(&fd), 8)?;
        let board = Board {
            fd: SharedFd::new(fd),
            map: Arc::new(map),
        };
        board.set(INIT);
        Ok(board)
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, at least 8 bytes long, lives
        // as long as `self` (the `Arc`), and every process accesses the word
        // only through atomic operations.
        unsafe { &*self.map.as_ptr().cast::<AtomicU64>() }
    }

    /// Publishes the worker's status.
    pub fn set(&self, value: u64) {
        self.word().store(value, Ordering::Release);
    }

    /// Reads the worker's status.
    pub fn get(&self) -> u64 {
        self.word().load(Ordering::Acquire)
    }
}

impl Serialize for Board {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fd.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Board {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fd = SharedFd::deserialize(d)?;
        let map = Mapping::map(fd.fd(), 8).map_err(serde::de::Error::custom)?;
        Ok(Board {
            fd,
            map: Arc::new(map),
        })
    }
}
