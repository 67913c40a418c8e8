//! # multiproc
//!
//! Python's `multiprocessing` for Rust: run functions in child processes and
//! talk to them, with typed messages, `Result` errors, timeouts everywhere,
//! and children that cannot outlive or hang their parent.
//!
//! The crate follows the order of the tutorial it grew from: Queue, Pipe,
//! Manager, Namespace, Value/Array, CSP. Available today:
//!
//! * [`Process`]: run `fn(A) -> R` in a child (start methods
//!   [`StartMethod::Spawn`], the default, and [`StartMethod::Fork`]);
//!   `join()` returns the child's value, its panic, or the signal that
//!   killed it.
//! * [`pipe`] and [`Connection`]: framed, typed messages between two
//!   processes; handles (other connections…) travel inside messages.
//! * [`Listener`] and [`Client`]: connections over a Unix socket path or
//!   TCP, authenticated with a shared key (HMAC-SHA256).
//! * [`Queue`], [`SimpleQueue`], [`JoinableQueue`]: FIFOs in shared memory
//!   for any mix of producers and consumers, safe against any of them
//!   being killed (see [`queue`]).
//!
//! ```
//! use multiproc::{Connection, Process, pipe};
//!
//! fn child(conn: Connection) -> usize {
//!     conn.send(&(42, None::<i32>, "hello")).unwrap();
//!     7
//! }
//!
//! let (parent_end, child_end) = pipe(true)?;
//! let mut p = Process::new(child, child_end);
//! p.start()?;
//! let msg: (i32, Option<i32>, String) = parent_end.recv()?;
//! assert_eq!(msg, (42, None, "hello".into()));
//! assert_eq!(p.join()?, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## How a child starts
//!
//! With the spawn method the child is a fresh copy of the running
//! executable. The crate recognises it before `main` runs (a constructor in
//! the ELF `.init_array`), runs the target and exits, so no guard is needed
//! in `main` and children work from binaries, examples, tests and benches.
//! Targets are named by their distance from a fixed function of the same
//! binary, which ASLR does not change.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod codec;
mod connection;
pub mod error;
mod process;
pub mod queue;
// Some of the OS layer serves mechanisms still being built.
#[allow(dead_code)]
mod sys;

pub use connection::{Connection, DEFAULT_MAX_FRAME, pipe, wait};
pub use error::{CodecError, ConnectError, JoinError, RecvError, SendError, StartError};
pub use process::{
    Context, Process, ProcessInfo, StartMethod, active_children, cpu_count, current_process,
    get_context, get_start_method, parent_process, set_start_method,
};
pub use queue::{
    GetError, GetTimeoutError, JoinableQueue, PutError, PutTimeoutError, Queue, QueueBuilder,
    SimpleQueue, TaskDoneError, TasksPending, TryGetError, TryPutError,
};
