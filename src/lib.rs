//! # multiproc
//!
//! Python's `multiprocessing` for Rust: run functions in child processes and
//! talk to them, with typed messages, `Result` errors, timeouts everywhere,
//! and children that cannot outlive or hang their parent.
//!
//! ## Starting a child
//!
//! [`spawn`] runs `fn(A) -> R` in a child process, as `std::thread::spawn`
//! runs a closure on a thread; [`JoinHandle::join`] returns the child's
//! value, its panic, or the signal that killed it. The argument and the
//! value are any serde types, and handles (connections, queues, shared
//! values, locks…) inside the argument arrive usable in the child.
//!
//! ```
//! use multiproc::{Connection, pipe};
//!
//! fn child(conn: Connection) -> usize {
//!     conn.send(&(42, None::<i32>, "hello")).unwrap();
//!     7
//! }
//!
//! let (parent_end, child_end) = pipe()?;
//! let handle = multiproc::spawn(child, child_end);
//! let msg: (i32, Option<i32>, String) = parent_end.recv()?;
//! assert_eq!(msg, (42, None, "hello".into()));
//! assert_eq!(handle.join()?, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A [`Builder`] sets the child's name, daemon flag, start method
//! ([`StartMethod::Spawn`], the default, or [`StartMethod::Fork`]),
//! environment variables and standard streams, like
//! `std::thread::Builder`; its [`spawn`](Builder::spawn) returns a
//! [`StartError`] where [`spawn`] panics. [`Process`] is the same child in
//! Python's shape: made with [`Process::new`], then
//! [`start`](Process::start)ed and [`join`](Process::join)ed.
//!
//! The crate follows the order of the tutorial it grew from:
//!
//! 1. [`Queue`], [`SimpleQueue`], [`JoinableQueue`]: FIFOs in shared memory
//!    for any mix of producers and consumers, safe against any of them
//!    being killed (see [`queue`]).
//! 2. [`pipe`] and [`Connection`]: framed, typed messages between two
//!    processes; handles (other connections…) travel inside messages.
//!    [`Listener`] and [`Client`]: connections over a Unix socket path or
//!    TCP, authenticated with a shared key (HMAC-SHA256, or the HMAC-MD5
//!    of Python 3.11 and older); by default the process's [`authkey`],
//!    which children inherit.
//! 3. [`Manager`]: a server process owning shared lists, dicts, queues,
//!    locks…, reached through proxies from any process (see [`manager`]);
//! 4. and its [`Namespace`]s.
//! 5. [`Value`] and [`Array`] (and [`RawValue`], [`RawArray`]): plain data
//!    in shared memory, with a robust lock and lock-free atomics;
//!    [`SharedMemory`]: named segments ([`ShareableList`], Python's layout;
//!    [`SharedMemoryManager`]). [`Lock`], [`RLock`], [`Semaphore`],
//!    [`BoundedSemaphore`], [`Event`], [`Condition`], [`Barrier`]:
//!    process-shared synchronization; a lock whose holder dies reports
//!    [`LockError::OwnerDied`] to the next acquirer, a barrier whose party
//!    dies breaks.
//! 6. [`csp`]: Communicating Sequential Processes in the style of PyCSP:
//!    channels with poison and retire, alternation, and
//!    `parallel`/`sequence`/`spawn` over threads and OS processes.
//!
//! Beside them, [`Pool`] is a pool of worker processes with `map`, `imap`,
//! `imap_unordered`, `starmap`, `apply` and `apply_async`; a worker that dies
//! fails only the task it held, and the pool replaces it (see [`pool`]).
//!
//! ## Naming
//!
//! Rust names come first; where Python's name differs, it is kept as an
//! alias documented as "Python's name", so code ported from Python reads
//! the same.
//!
//! * **Getters have no `get_`**: [`JoinHandle::name`], [`start_method()`],
//!   [`JoinHandle::code`] / [`Process::code`], [`Semaphore::value`]
//!   (Python's names: [`Process::exitcode`], [`get_start_method`],
//!   [`Semaphore::get_value`]). Setters live on builders ([`Builder`],
//!   [`PoolBuilder`], [`QueueBuilder`]); [`Process`] keeps Python's
//!   constructor keywords as builder-style setters (`name`, `daemon`,
//!   `start_method`), so its name is read with [`Process::get_name`]. A
//!   `get` that is an operation rather than a getter keeps its name
//!   ([`Queue::get`], [`AsyncResult::get`], a manager batch's `get_attr`).
//! * **Locks**: a guard over shared *data* is taken with `lock()` /
//!   `try_lock()` / `lock_timeout()`, as with `std::sync::Mutex`
//!   ([`Value::lock`], [`Array::lock`]; Python's name `get_lock`). A
//!   synchronization *primitive* with no data of its own keeps Python's
//!   `acquire()` / `try_acquire()` / `acquire_timeout()` ([`Lock`],
//!   [`RLock`], [`Condition`], [`Semaphore`], and the manager's proxies).
//!   Either way the guard releases on drop.
//! * **Sending**: a call that only encodes the message borrows it
//!   ([`Connection::send`]`(&T)`: the caller keeps its value); a call that
//!   can hand the message back when it cannot be delivered takes it by
//!   value ([`Queue::put`]`(T)`: its errors, and those of `put_nowait` and
//!   `put_timeout`, carry the value back, as `std::sync::mpsc` and
//!   crossbeam do).
//! * **Pipes**: [`pipe()`] gives two duplex ends; [`pipe_simplex()`] gives
//!   `(reader, writer)` (Python's `Pipe()` and `Pipe(duplex=False)`).
//! * **Two values**: [`Value`] is Python's `multiprocessing.Value`, plain
//!   data in shared memory; the dynamic tree a manager's server stores is
//!   [`manager::AnyValue`], and a manager-held value is reached through a
//!   [`ValueProxy`].
//! * `_timeout` forms take a [`Duration`](std::time::Duration); `try_`
//!   forms do not wait.
//!
//! ## How a child starts
//!
//! With the spawn method the child is a fresh copy of the running
//! executable. The crate recognises it before `main` runs (a constructor in
//! the ELF `.init_array`), runs the target and exits, so no guard is needed
//! in `main` and children work from binaries, examples, tests and benches.
//! Targets are named by their distance from a fixed function of the same
//! binary, which ASLR does not change. Since `main` never runs in a spawned
//! child, a logger installed there is missing in it: install it in the
//! target, or in a pool's [`initializer`](PoolBuilder::initializer).
//!
//! A panic in a child (under either start method) is reported once: its
//! message comes back to the parent ([`JoinError::Panicked`], a pool's
//! [`TaskError::Panicked`]), and the child writes one line to its stderr,
//! `multiproc: <name> (pid N) panicked at <file:line:col>: <message>`,
//! followed by a backtrace only when `RUST_BACKTRACE` asks for one. A
//! target may install its own panic hook instead.
//!
//! ## Async (feature `tokio`)
//!
//! `AsyncConnection` (`Connection::into_async`), `AsyncQueue`
//! (`Queue::into_async`, `SimpleQueue::into_async`), awaitable
//! [`AsyncResult`] and [`MapResult`], and `Imap::next_async`: usable from
//! tokio tasks, waking through the runtime's reactor, never with a thread
//! per waiting task.
//!
//! ## Platform
//!
//! Linux with glibc only (Linux 5.16 or newer for `futex_waitv`, glibc 2.29
//! or newer); other targets fail to compile with one error saying so.

// Unsafe code is opt-in per file (an `allow` of `unsafe_code` at its top).
// The lint settings shared by every target are in Cargo.toml's `[lints]`
// table; these are the library's own.
#![deny(unsafe_code)]
#![warn(missing_docs, clippy::multiple_unsafe_ops_per_block)]

// Linux with glibc only: pidfd, memfd, `futex_waitv` (kernel 5.16 or newer)
// and glibc's robust mutexes and `posix_spawn` (glibc 2.29 or newer). Every
// module below is compiled on Linux only, so another target sees this one
// error instead of a wall of them.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
compile_error!(
    "multiproc supports Linux with glibc only (pidfd, memfd, futex_waitv and robust mutexes: Linux 5.16 or newer, glibc 2.29 or newer)"
);

#[cfg(all(target_os = "linux", feature = "zenoh"))]
pub mod cluster;
#[cfg(target_os = "linux")]
pub mod codec;
#[cfg(target_os = "linux")]
mod connection;
#[cfg(target_os = "linux")]
pub mod csp;
#[cfg(target_os = "linux")]
pub mod error;
#[cfg(target_os = "linux")]
mod local_lock;
#[cfg(target_os = "linux")]
mod macros;
#[cfg(target_os = "linux")]
pub mod manager;
#[cfg(target_os = "linux")]
pub mod pool;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
pub mod queue;
#[cfg(target_os = "linux")]
mod segment;
#[cfg(target_os = "linux")]
mod shm;
#[cfg(target_os = "linux")]
mod sync;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(target_os = "linux")]
mod wait;

#[cfg(target_os = "linux")]
#[cfg(feature = "tokio")]
pub use connection::AsyncConnection;
#[cfg(target_os = "linux")]
pub use connection::ListenerBuilder;
#[cfg(target_os = "linux")]
pub use connection::{
    Address, Client, Connection, DEFAULT_MAX_FRAME, Listener, ToAddress, Waitable, pipe,
    pipe_simplex, wait,
};
pub use error::{CodecError, ConnectError, JoinError, RecvError, SendError, StartError};
#[cfg(target_os = "linux")]
pub use manager::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy,
    JoinableQueueProxy, ListProxy, LockProxy, Manager, ManagerError, Namespace, QueueProxy,
    RLockProxy, SemaphoreProxy, ValueProxy,
};
#[cfg(target_os = "linux")]
pub use pool::{AsyncResult, Imap, MapResult, Pool, PoolBuilder, PoolError, TaskError, WorkerExit};
#[cfg(target_os = "linux")]
pub use process::{AUTHKEY_LEN, authkey, set_authkey};
#[cfg(target_os = "linux")]
pub use process::{
    Builder, Context, JoinHandle, JoinTimeoutError, Process, ProcessInfo, StartMethod, Stdio,
    active_children, cpu_count, current_process, get_context, get_start_method, parent_process,
    set_start_method, spawn, start_method,
};
#[cfg(feature = "tokio")]
pub use queue::AsyncQueue;
#[cfg(target_os = "linux")]
pub use queue::{
    GetError, GetTimeoutError, JoinableQueue, PutError, PutTimeoutError, Queue, QueueBuilder,
    SimpleQueue, TaskDoneError, TasksPending, TryGetError, TryPutError,
};
#[cfg(target_os = "linux")]
pub use shm::{
    Array, ArrayError, ArrayGuard, IndexError, Plain, PlainAtomic, RawArray, RawValue,
    SharedMemory, ShmError, Value, ValueGuard,
};
#[cfg(target_os = "linux")]
pub use shm::{ShareableItem, ShareableList, ShareableListError, SharedMemoryManager};
#[cfg(target_os = "linux")]
pub use sync::{
    Barrier, BarrierError, BoundedSemaphore, Condition, ConditionGuard, ConditionLock, Event, Lock,
    LockError, LockGuard, RLock, RLockGuard, ReleaseError, Semaphore,
};

/// Hooks for the crate's own tests of failure paths; not part of the API.
#[cfg(target_os = "linux")]
#[doc(hidden)]
pub mod __test_hooks {
    /// Makes the OS random source fail (`true`) or work again (`false`)
    /// for this process, so a test can see what a failure gives.
    pub fn random_fails(on: bool) {
        crate::sys::random::force_failure(on);
    }

    /// Forgets this process's authkey, so the next use draws a new one.
    pub fn forget_authkey() {
        crate::process::forget_authkey();
    }
}
