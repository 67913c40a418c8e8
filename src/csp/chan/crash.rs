//! Where a test may make this process die inside a channel operation.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys;

/// Where a test may make this process die (`SIGKILL`) inside a channel
/// operation, to check that the others recover. Not part of the API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u32)]
pub enum CrashPoint {
    /// Just after taking the channel lock, before changing anything.
    Locked = 1,
    /// A reader, holding the lock, copied a waiting writer's message out
    /// but has not completed the writer's record.
    ReadCopied,
    /// A reader completed a waiting writer's record, still holding the lock.
    ReadCompleted,
    /// A writer copied its message into a waiting reader's record but has
    /// not completed it.
    WriteCopied,
    /// A writer completed a waiting reader's record (it holds the message
    /// now), still holding the lock.
    WriteCompleted,
    /// A writer copied its message into a free buffer slot but has not
    /// published it.
    BufferCopied,
    /// A reader took the front of the buffer (published), still holding
    /// the lock.
    BufferTaken,
    /// A reader took the front of a full buffer and wrote down that it
    /// moves a waiting writer's message in, before completing the writer.
    MoveIntent,
    /// ... after completing the writer, before publishing the buffer.
    MoveCompleted,
    /// A party posted its waiting record, still holding the lock.
    Posted,
    /// A party's record is posted; it is about to sleep.
    Waiting,
    /// A reader's record was completed (the message is in it); the reader
    /// has not copied it out.
    DoneUnread,
    /// A writer created the segment of a large message, before posting it.
    Spilled,
    /// An alternation posted its watches and offer and is about to sleep.
    AltSleeping,
    /// The last end of a side set the channel's retired flag, before
    /// aborting the waiting parties.
    Retiring,
}

static CRASH_AT: AtomicU32 = AtomicU32::new(0);

/// Makes this process die at `point` from now on (`None`: nowhere).
#[doc(hidden)]
pub fn crash_at(point: Option<CrashPoint>) {
    CRASH_AT.store(point.map_or(0, |p| p as u32), Ordering::Relaxed);
}

#[inline]
pub(crate) fn crash_point(point: CrashPoint) {
    if CRASH_AT.load(Ordering::Relaxed) == point as u32 {
        sys::process::kill_self();
    }
}
