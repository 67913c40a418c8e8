//! Queues in shared memory: [`Queue`], [`SimpleQueue`], [`JoinableQueue`]
//! (Python's `multiprocessing` queues), for any number of producers and
//! consumers in any mix of threads and processes, that survive any of them
//! being killed.
//!
//! # Using them
//!
//! `Queue::new()` is unbounded: `put` never waits. `Queue::with_maxsize(n)`
//! holds at most `n` messages and `put` waits while it is full. Every
//! blocking call has `_timeout` and `_nowait` forms; `put_nowait` hands the
//! value back in [`TryPutError::Full`]. Messages are serde values encoded
//! straight into shared memory, or raw bytes (`put_bytes`, `get_bytes`,
//! `get_bytes_into`, `get_bytes_with`) with no encoding at all. A handle is
//! passed to a child as a [`Process`](crate::Process) argument or inside a
//! message on a [`Connection`](crate::Connection); both start methods work.
//!
//! # Iterating, and the end of the messages
//!
//! `for msg in &queue` (or [`Queue::iter`]) waits for each message and ends
//! when the queue is empty and no *producer* is left; [`Queue::try_iter`]
//! takes what is queued now without waiting. Every handle is a producer
//! until it is [closed](Queue::close) or dropped, in whichever process it
//! lives; a process that exits or is killed (`SIGKILL` included) drops its
//! handles. A consumer closes its own handle first, so that the loop does
//! not wait for itself. `get` then fails with [`GetError::Disconnected`].
//!
//! ```
//! use multiproc::{Process, Queue};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Job {
//!     id: u32,
//!     name: String,
//! }
//!
//! fn producer(jobs: Queue<Job>) {
//!     for id in 0..3 {
//!         jobs.put(Job { id, name: format!("job {id}") }).unwrap();
//!     }
//! } // the handle is dropped: this producer is gone
//!
//! fn consumer(jobs: Queue<Job>) -> Vec<u32> {
//!     jobs.close(); // this handle only reads
//!     let mut ids = Vec::new();
//!     for job in &jobs {
//!         ids.push(job.id);
//!     }
//!     ids // the loop ended by itself
//! }
//!
//! let jobs = Queue::new()?;
//! let mut c = Process::new(consumer, jobs.clone());
//! let mut p = Process::new(producer, jobs); // the parent keeps no handle
//! c.start()?;
//! p.start()?;
//! p.join()?;
//! assert_eq!(c.join()?, [0, 1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Producers are counted by the kernel, not in the shared memory: every
//! process holding a producer handle holds one end of a socket pair made
//! with the queue (handles carry it to other processes, also while in
//! flight in a socket), every handle holds the other end, and when the
//! last producer end anywhere is closed the kernel reports a hang-up on
//! it. Nothing to repair after a death, and nothing on the path of `put`
//! and `get`: a consumer looks at the socket (one `poll`) only when it
//! finds the queue empty, at most once per change and per 100 ms, and a
//! process whose last producer handle goes away wakes sleeping consumers.
//! A forked child closes the producer ends it inherited with its parent's
//! memory: only the handles it was given count for it.
//!
//! # Design
//!
//! Everything lives in one memfd per queue, sealed against resizing so
//! that no process can make another's mapping fault, mapped by every
//! process that holds a handle. There is no feeder thread and no pipe: a
//! `put` has finished writing into shared memory when it returns, so a
//! process's exit never waits for its data to be consumed (the deadlock of
//! Python's `Queue.join_thread` cannot happen), and a child that put
//! 10 MiB can be joined before anyone reads.
//!
//! **The ring** (`ring.rs`) is a stream of length-prefixed records in a
//! circular linked list of 64 KiB segments. Producers serialise on one
//! robust lock, consumers on another; each side publishes its progress with
//! a *single* 64-bit store that packs a message count with a position, so
//! a message becomes visible, or is consumed, in one instruction, after
//! its bytes are written or read. A consumer does not need the producer
//! lock nor a producer the consumer lock: in the one-producer,
//! one-consumer case both locks stay uncontended and only the two commit
//! words and the data cross between CPUs, as in a plain SPSC ring.
//!
//! **Unbounded and large messages.** The memfd is sized once to the
//! queue's capacity (16 GiB by default) and is sparse: pages cost memory
//! only once written. Producers take 64 KiB segments as they need them
//! (backed first with `fallocate`, so an exhausted machine gives an error
//! rather than `SIGBUS`) and link them into the circle; consumers leaving
//! a segment keep it in memory for reuse while fewer than a ring's worth
//! (4 MiB by default) of free segments are kept, and otherwise punch it
//! out of the file (`fallocate(PUNCH_HOLE)` is allowed on a resize-sealed
//! memfd). So `put` never waits while the queue holds less than its
//! capacity, a 1 GiB backlog with no consumer costs 1 GiB only until it is
//! read, a message may be nearly as large as the capacity (records
//! straddle segments), steady traffic never faults once warm (even with a
//! standing backlog), and an idle queue costs at most its ring.
//!
//! Alternatives weighed: a chain of separate memfds per overflow would need
//! every new descriptor delivered to every consumer (a segment server
//! thread, or fragile `/proc/<pid>/fd` paths into a producer that may have
//! exited); a single sparse circular log that punches what it consumed
//! would fault fresh pages forever in steady state (about 0.4 ns per byte
//! here, which caps large-message throughput near 2.5 GB/s). The reserved
//! sparse file with a circle of recycled segments has neither problem; its cost is address space
//! (the capacity is mapped in every process) and a capacity limit.
//!
//! **Waiting** (`wait.rs`): spin briefly, then sleep on a futex; a waiter
//! flag lets `put` and `get` skip the wake-up system call when nobody
//! sleeps. The spin budget (at most 20 µs) adapts: it doubles whenever a
//! spin catches the event and halves whenever the waiter had to sleep,
//! so spinning fades out on a loaded machine, where it would steal the CPU
//! the other side needs. No spinning at all when the process may run on
//! only one CPU (its affinity mask). No lock is ever held while waiting.
//!
//! # Crash safety
//!
//! A process may be SIGKILLed at any instruction inside `put` or `get`:
//!
//! * Partial messages are never visible: a record is published by the
//!   producer commit store, after its bytes.
//! * Exactly once: a message is consumed by the consumer commit store,
//!   which comes after its bytes were copied out (or decoded, or read by
//!   the `get_bytes_with` callback). A `get` killed before that store
//!   consumed nothing; after it, the `get` had done everything but return.
//! * Locks held by the dead are recovered: the locks are robust mutexes;
//!   the kernel marks one whose owner died, and the next locker repairs
//!   what the commit words do not already make consistent (hints, the
//!   free-slot bitmap, holes to punch), idempotently.
//! * Survivors never block: no lock is held while waiting, and sleepers
//!   re-check their condition at least every 100 ms, which covers a
//!   notifier killed between its commit and its wake-up call.
//!
//! The full state table (every shared word, who writes it, its memory
//! orderings) and the recovery table are in the ring's source, `ring.rs`.
//!
//! # Differences from Python
//!
//! * Values holding handles (connections, queues) cannot be put in a
//!   queue; pass them as process arguments or over a `Connection`.
//! * `close` closes this handle only (not its clones), and only for
//!   putting: a closed handle still gets, which is how a consumer stops
//!   counting as a producer. There is no feeder thread, so `join_thread`
//!   and `cancel_join_thread` have nothing to do and do not exist.
//! * A queue knows when every producer is gone ([`GetError::Disconnected`],
//!   iteration ends); in Python a `get` on such a queue waits forever.
//! * A message that does not decode as `T` is consumed and reported as
//!   [`GetError::Decode`] (Python would raise from `get` likewise).

#[cfg(feature = "tokio")]
mod aio;
mod builder;
mod error;
mod fifo;
mod iter;
mod joinable;
mod ring;
mod simple;

#[cfg(feature = "tokio")]
pub use aio::AsyncQueue;
#[cfg(feature = "tokio")]
pub(crate) use aio::after_fork as aio_after_fork;
pub use builder::{DEFAULT_CAPACITY, DEFAULT_RING_SIZE, QueueBuilder};
pub use error::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, TaskDoneError, TasksPending, TryGetError,
    TryPutError,
};
pub use fifo::Queue;
pub(crate) use fifo::after_fork;
pub use iter::{IntoIter, Iter, TryIter};
pub use joinable::JoinableQueue;
pub use simple::SimpleQueue;
