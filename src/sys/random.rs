//! Random bytes from the kernel's cryptographic generator (`getrandom(2)`,
//! through rustix): every key, name and token the crate makes comes from
//! here, and a failure is an error for the caller, never a predictable
//! value.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;
use rustix::rand::{GetRandomFlags, getrandom};

/// Set by [`force_failure`]: every [`fill`] fails while it is.
static FAILING: AtomicBool = AtomicBool::new(false);

/// Fills `buf` with bytes from the kernel's cryptographic generator,
/// waiting (only at early boot) until it is seeded. Fails if the kernel
/// refuses (no `getrandom`, a seccomp filter…): `buf` is then not to be
/// used.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    if FAILING.load(Ordering::Relaxed) {
        return Err(failed(Errno::NOSYS));
    }
    let mut filled = 0;
    while filled < buf.len() {
        match getrandom(&mut buf[filled..], GetRandomFlags::empty()) {
            Ok(0) => return Err(failed(Errno::IO)),
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(())
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    fill(&mut b)?;
    Ok(b)
}

/// A random 64-bit number.
pub fn u64() -> io::Result<u64> {
    Ok(u64::from_ne_bytes(bytes()?))
}

/// `len` random bytes as lowercase hexadecimal (for names).
pub fn hex(len: usize) -> io::Result<String> {
    let mut b = vec![0u8; len];
    fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn failed(e: Errno) -> io::Error {
    io::Error::new(
        io::Error::from(e).kind(),
        format!("the OS random source (getrandom) failed: {e}"),
    )
}

/// Makes every later [`fill`] in this process fail (`on`), or work again.
/// For tests of the failure path only.
pub fn force_failure(on: bool) {
    FAILING.store(on, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_differs() {
        let a: [u8; 32] = bytes().unwrap();
        let b: [u8; 32] = bytes().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
        assert_eq!(hex(4).unwrap().len(), 8);
    }
}
