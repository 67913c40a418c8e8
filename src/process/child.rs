//! The child's side: recognising a spawned child before `main`, running
//! its target, reporting the outcome, exiting.
//!
//! A spawned child is the same executable started again with
//! `MULTIPROC_BOOTSTRAP_FD` in its environment. A constructor (an ELF
//! `.init_array` entry, run before `main` in binaries, examples, test and
//! bench executables alike) sees the variable, receives the bootstrap
//! message (which target, its arguments, their descriptors) over that
//! socket, runs the target and exits: the program's own `main` never runs
//! in a child. This plays the role of Python's `if __name__ == '__main__':`
//! guard without asking anything of the program.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::fn_ref::{self, RawFnRef};
use super::identity::{self, Meta};
use super::registry;
use super::target::{self, Trampoline};
use crate::codec;
use crate::connection::{Connection, FRAME_ROOM};
use crate::sys;

/// The environment variable that marks a spawned child.
pub const ENV_KEY: &str = "MULTIPROC_BOOTSTRAP_FD";

#[ctor::ctor(unsafe, priority = late)]
fn recognise_spawned_child() {
    if let Some(fd) = std::env::var_os(ENV_KEY) {
        // Not passed on to programs this child may start.
        sys::process::remove_env_single_threaded(ENV_KEY);
        run_spawned(fd.to_str().and_then(|s| s.parse().ok()).unwrap_or(-1));
    }
}

fn run_spawned(fd: i32) -> ! {
    // Die with the parent; then make sure it did not die already.
    let _ = sys::process::die_with_parent();
    let parent_at_start = sys::process::getppid();
    let Ok(fd) = sys::process::adopt_inherited_fd(fd) else {
        eprintln!("multiproc: bootstrap descriptor missing in child");
        sys::process::exit_now(70);
    };
    let reply = Reply {
        conn: Connection::from_fd(fd, true, true, true),
        bell: None,
        out: Vec::new(),
    };
    let Ok((payload, fds)) = reply.conn.recv_encoded(None) else {
        // The parent went away before sending the bootstrap message.
        sys::process::exit_now(70);
    };
    let (meta, rest) = match codec::decode_payload::<Meta>(&payload, Vec::new()) {
        Ok(m) => m,
        Err(e) => report(
            &reply,
            target::OUTCOME_BAD_ARGS,
            &format!("bad bootstrap message: {e}"),
        ),
    };
    if meta.parent_pid != parent_at_start || sys::process::getppid() != meta.parent_pid {
        sys::process::exit_now(70);
    }
    if meta.fingerprint != fn_ref::binary_fingerprint() {
        report(
            &reply,
            target::OUTCOME_BAD_ARGS,
            "the child runs a different binary than its parent",
        );
    }
    // The same binary (fingerprint checked above): the references hold.
    let (trampoline, target) = (meta.trampoline.get(), meta.target);
    identity::set_after_start(meta, true);
    run_target(trampoline, target, rest, fds, reply)
}

/// The largest outcome (whole frame) sent without ringing the bell: one
/// `sendmsg` this small into a Unix stream socket that holds nothing else
/// from its sender never blocks (it fits in one buffer, and the kernel lets
/// the first buffer through whatever the send buffer size, which is at
/// least 4608 bytes, of which a buffer may take half less 64).
const QUIET_MAX: usize = 2048;

/// Where a child sends its outcome: the connection to its parent and, for
/// a forked child, the bell that asks the parent to watch that connection
/// (see `registry::Child::new`) and room for the outcome made before the
/// fork.
pub struct Reply {
    pub conn: Connection,
    pub bell: Option<Connection>,
    pub out: Vec<u8>,
}

impl Reply {
    fn send(&self, encoded: codec::Encoded) {
        if encoded.bytes.len() > QUIET_MAX
            && let Some(bell) = &self.bell
        {
            // The parent may be watching only for the exit: have it read.
            let _ = sys::socket::send_all(bell.as_fd(), &[&[1]], &[]);
        }
        // Not freed: the process ends right after sending it, and the
        // allocator's pages would be written (copied, in a forked child)
        // for nothing.
        let mut encoded = std::mem::ManuallyDrop::new(encoded);
        let _ = self.conn.send_encoded_mut(&mut encoded);
    }
}

/// Runs the target, sends its outcome to the parent and exits the process:
/// code 0 when it returned, 1 when it panicked or its arguments were bad.
pub fn run_target(
    trampoline: Trampoline,
    target: RawFnRef,
    payload: &[u8],
    fds: Vec<OwnedFd>,
    mut reply: Reply,
) -> ! {
    report_panics_in_one_line();
    let out = std::mem::take(&mut reply.out);
    let result = catch_unwind(AssertUnwindSafe(|| trampoline(target, payload, fds, out)));
    match result {
        Ok(Ok(encoded)) => {
            reply.send(encoded);
            finish(0)
        }
        Ok(Err((tag, message))) => report(&reply, tag, &message),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_string());
            report(&reply, target::OUTCOME_PANIC, &message)
        }
    }
}

/// Replaces the panic hook of this child: a panic is reported as one line
/// on stderr, `multiproc: <name> (pid N) panicked at <file:line:col>:
/// <message>`, followed by a backtrace only when `RUST_BACKTRACE` asks for
/// one (any value but `0`; `full` for every frame), as std's hook decides.
/// The message also reaches the parent (`JoinError::Panicked`, or the
/// pool's `TaskError::Panicked`), so the line is the only other trace. The
/// report is written in one piece, so reports of concurrent children do not
/// interleave. A target may install a hook of its own instead.
fn report_panics_in_one_line() {
    // The name is looked up when a panic comes, not now: the hook captures
    // nothing, so installing it allocates nothing.
    std::panic::set_hook(Box::new(|info| {
        let name = identity::current_process().name;
        use std::fmt::Write as _;
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("non-string panic payload");
        let mut report = format!(
            "multiproc: {name} (pid {}) panicked",
            sys::process::getpid()
        );
        if let Some(at) = info.location() {
            let _ = write!(report, " at {at}");
        }
        let _ = writeln!(report, ": {message}");
        match std::env::var("RUST_BACKTRACE").as_deref() {
            Err(_) | Ok("0") => {}
            Ok(style) => {
                let trace = std::backtrace::Backtrace::force_capture();
                let _ = if style == "full" {
                    writeln!(report, "stack backtrace:\n{trace:#}")
                } else {
                    writeln!(report, "stack backtrace:\n{trace}")
                };
            }
        }
        let _ = std::io::stderr().write_all(report.as_bytes());
    }));
}

fn report(reply: &Reply, tag: u8, message: &str) -> ! {
    if let Ok(enc) = codec::encode(&(tag, message), FRAME_ROOM) {
        reply.send(enc);
    }
    finish(1)
}

fn finish(code: i32) -> ! {
    registry::finish_children();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sys::process::exit_now(code)
}
