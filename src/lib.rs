//! # multiproc
//!
//! Python's `multiprocessing` for Rust: run functions in child processes and
//! talk to them, with typed messages, `Result` errors, timeouts everywhere,
//! and children that cannot outlive or hang their parent.
//!
//! The crate follows the order of the tutorial it grew from:
//!
//! 1. [`Queue`], [`SimpleQueue`], [`JoinableQueue`]: FIFOs in shared memory
//!    for any mix of producers and consumers, safe against any of them
//!    being killed (see [`queue`]).
//! 2. [`pipe`] and [`Connection`]: framed, typed messages between two
//!    processes; handles (other connections…) travel inside messages.
//!    [`Listener`] and [`Client`]: connections over a Unix socket path or
//!    TCP, authenticated with a shared key (HMAC-SHA256).
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
//! Beneath them all, [`Process`] runs `fn(A) -> R` in a child (start methods
//! [`StartMethod::Spawn`], the default, and [`StartMethod::Fork`]); `join()`
//! returns the child's value, its panic, or the signal that killed it. And
//! [`Pool`] is a pool of worker processes with `map`, `imap`,
//! `imap_unordered`, `starmap`, `apply` and `apply_async`; a worker that dies
//! fails only the task it held, and the pool replaces it (see [`pool`]).
//!
//! ```
//! use multiproc::{Connection, Process, pipe};
//!
//! fn child(conn: Connection) -> usize {
//!     conn.send(&(42, None::<i32>, "hello")).unwrap();
//!     7
//! }
//!
//! let (parent_end, child_end) = pipe()?;
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
//! ## Platform
//!
//! Linux with glibc only (Linux 5.16 or newer for `futex_waitv`, glibc 2.29
//! or newer); other targets fail to compile with one error saying so.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

// Linux with glibc only: pidfd, memfd, `futex_waitv` (kernel 5.16 or newer)
// and glibc's robust mutexes and `posix_spawn` (glibc 2.29 or newer). Every
// module below is compiled on Linux only, so another target sees this one
// error instead of a wall of them.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
compile_error!(
    "multiproc supports Linux with glibc only (pidfd, memfd, futex_waitv and robust mutexes: Linux 5.16 or newer, glibc 2.29 or newer)"
);

#[cfg(target_os = "linux")]
pub mod codec;
#[cfg(target_os = "linux")]
mod connection;
#[cfg(target_os = "linux")]
pub mod csp;
#[cfg(target_os = "linux")]
pub mod error;
#[cfg(target_os = "linux")]
pub mod manager;
#[cfg(target_os = "linux")]
pub mod pool;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
pub mod queue;
#[cfg(target_os = "linux")]
mod shm;
#[cfg(target_os = "linux")]
mod spin;
#[cfg(target_os = "linux")]
mod sync;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(target_os = "linux")]
mod wait;

#[cfg(target_os = "linux")]
pub use connection::{
    Address, Client, Connection, DEFAULT_MAX_FRAME, Listener, ToAddress, Waitable, pipe,
    pipe_simplex, wait,
};
#[cfg(target_os = "linux")]
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
pub use process::{
    Builder, Context, JoinHandle, JoinTimeoutError, Process, ProcessInfo, StartMethod, Stdio,
    active_children, cpu_count, current_process, get_context, get_start_method, parent_process,
    set_start_method, spawn, start_method,
};
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
