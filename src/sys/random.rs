//! Random bytes from the kernel (`getrandom(2)`), for authentication
//! challenges.

use std::io;

/// Fills `buf` with bytes from the kernel's cryptographic generator,
/// waiting (only at early boot) until it is seeded.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable region of `rest.len()` bytes
        // that stays borrowed for the whole call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}
