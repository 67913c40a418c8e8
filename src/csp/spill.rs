//! Messages larger than a channel's inline slot: the writer puts the
//! encoded message in a named shared-memory segment of its own
//! (`/dev/shm/multiproc-csp-…`) and sends a small descriptor through the
//! channel instead. The descriptor is delivered exactly once like any
//! message, and its one reader maps the segment, copies the message out and
//! unlinks it. A write that fails (timeout, poison, retire) or an output
//! guard that is not chosen unlinks its segment; spilled messages still
//! buffered when the readers retire or the channel is poisoned are
//! unlinked then.
//!
//! Descriptor layout: `[0xFF][len: u64 LE][name bytes]`. An inline
//! message starts with the codec's descriptor count, which is always 0 on
//! a channel (messages cannot carry descriptors), so the two never mix.
//!
//! # Crashes
//!
//! A segment is named `multiproc-csp-<channel>-<pid>-<start>-<random>`:
//! its channel and the process that wrote it (pid and start time, so that a
//! recycled pid is not mistaken for it). A reader *claims* a descriptor,
//! opening the segment, while the channel still holds it (under the lock,
//! or before releasing its completed record), and unlinks the name right
//! after taking the message; what it hands on is a claimed descriptor
//! `[0xFE][len: u64 LE][fd: i32 LE]` naming its open descriptor. So a
//! segment's name exists only while the channel holds its descriptor or
//! its writer still runs, and [`sweep`] may unlink any other: a segment of
//! a writer killed before posting it, or of a reader killed between
//! taking it and unlinking it. The channel sweeps when it repairs after a
//! death and when a process drops it.

#![allow(unsafe_code)]

use std::os::fd::AsFd;

use crate::sys;
use crate::sys::shm::Mapping;

const SPILL: u8 = 0xFF;
const CLAIMED: u8 = 0xFE;
const PREFIX: &str = "/multiproc-csp-";

/// An encoded message on its way into a channel.
pub(crate) struct Outgoing {
    /// What goes into the channel: the message, or a spill descriptor.
    pub bytes: Vec<u8>,
    /// The spilled segment, unlinked on drop unless delivered.
    spilled: Option<String>,
}

impl Outgoing {
    /// A message small enough to travel inline.
    pub fn inline(bytes: Vec<u8>) -> Outgoing {
        Outgoing {
            bytes,
            spilled: None,
        }
    }

    /// Puts `message` in a new named segment of channel `tag` and
    /// describes it.
    pub fn spill(message: &[u8], tag: &str) -> std::io::Result<Outgoing> {
        let me = sys::liveness::me();
        let name = format!(
            "{PREFIX}{tag}-{}-{}-{}",
            me.pid,
            me.start,
            sys::random::hex(8)?
        );
        let fd = sys::shm::create_named(&name, message.len())?;
        let mut out = Outgoing {
            bytes: Vec::new(),
            spilled: Some(name.clone()),
        };
        let map = Mapping::map(fd.as_fd(), message.len())?;
        // SAFETY: the mapping is ours alone (a segment we just created
        // exclusively) and `message.len()` bytes long.
        unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), map.as_ptr(), message.len()) };
        let mut bytes = Vec::with_capacity(9 + name.len());
        bytes.push(SPILL);
        bytes.extend_from_slice(&(message.len() as u64).to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        out.bytes = bytes;
        super::chan::crash_point(super::chan::CrashPoint::Spilled);
        Ok(out)
    }

    /// The message was taken by a reader: its segment is the reader's now.
    pub fn delivered(mut self) {
        self.spilled = None;
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if let Some(name) = self.spilled.take() {
            let _ = sys::shm::unlink_named(&name);
        }
    }
}

/// The segment a descriptor names, and the message length.
fn parse(bytes: &[u8]) -> Option<(&str, u64)> {
    if bytes.len() < 9 || bytes[0] != SPILL {
        return None;
    }
    let len = u64::from_le_bytes(bytes[1..9].try_into().ok()?);
    let name = std::str::from_utf8(&bytes[9..]).ok()?;
    // Only our own segments: a peer cannot make us open or unlink others.
    let valid = name.strip_prefix(PREFIX).is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    valid.then_some((name, len))
}

/// A message leaving the channel for a reader: a spill descriptor is
/// claimed (its segment opened), so that its name may go; returns the
/// message to hand on and the name to unlink once it left the channel.
pub(crate) fn claim(bytes: Vec<u8>) -> (Vec<u8>, Option<String>) {
    let Some((name, len)) = parse(&bytes) else {
        return (bytes, None);
    };
    let Ok(fd) = sys::shm::open_named(name) else {
        // Reported by `take`.
        return (bytes, None);
    };
    let name = name.to_string();
    let mut out = Vec::with_capacity(13);
    out.push(CLAIMED);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&std::os::fd::IntoRawFd::into_raw_fd(fd).to_le_bytes());
    (out, Some(name))
}

/// Gives up a claim that did not take the message (closes the segment).
pub(crate) fn unclaim(bytes: Vec<u8>) {
    if bytes.len() == 13 && bytes[0] == CLAIMED {
        let raw = i32::from_le_bytes(bytes[9..13].try_into().unwrap_or_default());
        drop(sys::process::adopt_inherited_fd(raw));
    }
}

/// Unlinks the name of a claimed segment.
pub(crate) fn unlink(name: Option<String>) {
    if let Some(name) = name {
        let _ = sys::shm::unlink_named(&name);
    }
}

/// The segment names `tag`'s channel may unlink: its own, whose writer no
/// longer runs, and that `referenced` (the descriptors the channel holds)
/// does not name.
pub(crate) fn sweep(tag: &str, referenced: &[Vec<u8>]) {
    let Ok(names) = sys::shm::list_named() else {
        return;
    };
    let ours = format!("{}{tag}-", &PREFIX[1..]);
    for name in names {
        let Some(rest) = name.strip_prefix(&ours) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(Ok(pid)), Some(Ok(start))) = (
            parts.next().map(str::parse::<i32>),
            parts.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        let full = format!("/{name}");
        if sys::liveness::is_running(sys::liveness::ProcessId { pid, start })
            || referenced
                .iter()
                .any(|b| parse(b).is_some_and(|(n, _)| n == full))
        {
            continue;
        }
        let _ = sys::shm::unlink_named(&full);
    }
}

/// A received message as the codec sees it: inline messages as they are;
/// spilled ones copied out of their segment, which is unlinked. `max`
/// bounds what a descriptor may announce.
pub(crate) fn take(bytes: Vec<u8>, max: u64) -> Result<Vec<u8>, String> {
    let (fd, len) = match bytes.first() {
        Some(&CLAIMED) if bytes.len() == 13 => {
            let len = u64::from_le_bytes(bytes[1..9].try_into().unwrap_or_default());
            let raw = i32::from_le_bytes(bytes[9..13].try_into().unwrap_or_default());
            let fd = sys::process::adopt_inherited_fd(raw)
                .map_err(|e| format!("claimed spilled message: {e}"))?;
            (fd, len)
        }
        Some(&SPILL) => {
            let (name, len) = parse(&bytes).ok_or("malformed spilled-message descriptor")?;
            let fd =
                sys::shm::open_named(name).map_err(|e| format!("spilled message {name}: {e}"))?;
            let _ = sys::shm::unlink_named(name);
            (fd, len)
        }
        _ => return Ok(bytes),
    };
    if len > max {
        return Err(format!(
            "spilled message of {len} bytes exceeds the limit of {max}"
        ));
    }
    let size = sys::shm::size(fd.as_fd()).map_err(|e| e.to_string())?;
    if size as u64 != len || len == 0 {
        return Err("spilled message segment has the wrong size".into());
    }
    let map = Mapping::map(fd.as_fd(), size).map_err(|e| e.to_string())?;
    let mut v = Vec::with_capacity(size);
    // SAFETY: the mapping is `size` bytes, `v` has room for them; the
    // writer finished writing before the descriptor was delivered and never
    // writes again.
    unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), v.as_mut_ptr(), size) };
    // SAFETY: the copy initialised all `size` bytes.
    unsafe { v.set_len(size) };
    Ok(v)
}

/// Discards a message that will never be read: unlinks its segment if it
/// was spilled.
pub(crate) fn discard(bytes: &[u8]) {
    if let Some((name, _)) = parse(bytes) {
        let _ = sys::shm::unlink_named(name);
    }
}
