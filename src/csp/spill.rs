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

use std::os::fd::AsFd;

use crate::sys;
use crate::sys::shm::Mapping;

const SPILL: u8 = 0xFF;
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

    /// Puts `message` in a new named segment and describes it.
    pub fn spill(message: &[u8]) -> std::io::Result<Outgoing> {
        let name = format!("{PREFIX}{}", sys::random::hex(16)?);
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

/// A received message as the codec sees it: inline messages as they are;
/// spilled ones copied out of their segment, which is unlinked. `max`
/// bounds what a descriptor may announce.
pub(crate) fn take(bytes: Vec<u8>, max: u64) -> Result<Vec<u8>, String> {
    if bytes.first() != Some(&SPILL) {
        return Ok(bytes);
    }
    let (name, len) = parse(&bytes).ok_or("malformed spilled-message descriptor")?;
    let fd = sys::shm::open_named(name).map_err(|e| format!("spilled message {name}: {e}"))?;
    let _ = sys::shm::unlink_named(name);
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
    // SAFETY: the mapping is `size` bytes; the writer finished writing
    // before the descriptor was delivered and never writes again.
    unsafe {
        std::ptr::copy_nonoverlapping(map.as_ptr(), v.as_mut_ptr(), size);
        v.set_len(size);
    }
    Ok(v)
}

/// Discards a message that will never be read: unlinks its segment if it
/// was spilled.
pub(crate) fn discard(bytes: &[u8]) {
    if let Some((name, _)) = parse(bytes) {
        let _ = sys::shm::unlink_named(name);
    }
}
