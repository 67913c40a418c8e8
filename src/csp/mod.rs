//! Communicating Sequential Processes, in the style of PyCSP: processes
//! that share nothing and talk over channels.
//!
//! * [`Channel`]: any number of [`Reader`]s and [`Writer`]s, rendezvous
//!   by default or buffered; the same channel works between threads and
//!   between OS processes (pass its ends as process arguments).
//! * **Poison** ([`Channel::poison`], [`Reader::poison`],
//!   [`Writer::poison`]): immediate; every blocked and later operation on
//!   any end fails with [`ChannelError::Poisoned`].
//! * **Retire**: [`Reader::retire`] / [`Writer::retire`] (or dropping the
//!   end) retires it; when every end of one side has retired the channel is
//!   retired: readers get what was buffered, then
//!   [`ChannelError::Retired`]. Inside a CSP process, an end it was given
//!   and merely dropped retires when the process ends, after poison
//!   propagation.
//! * [`CspProcess`], [`parallel`], [`sequence`], [`spawn`]: processes as
//!   threads, lightweight processes or OS processes; poison propagates
//!   from a process that ends by it (or panics) to every channel it held.
//!   [`CspProcess::thread`] runs a closure in a thread,
//!   [`CspProcess::light`] one as a lightweight process (many multiplexed
//!   on a worker thread per CPU; a million fit in memory; [`io`] runs a
//!   blocking call off the worker, [`sleep`] sleeps without a thread),
//!   [`CspProcess::os_process`] a function in an OS process; a tuple of
//!   processes returning different types runs with [`Parallel`] or
//!   [`parallel!`](crate::parallel!) and gives a tuple of outcomes.
//! * [`Alternation`]: input, output, timeout and skip guards with
//!   preconditions; [`pri_select`](Alternation::pri_select),
//!   [`fair_select`](Alternation::fair_select),
//!   [`select`](Alternation::select). Exactly the chosen guard's
//!   operation happens, also across processes.
//!
//! ```
//! use multiproc::csp::{Channel, ChannelError, CspProcess, Reader, Writer, parallel};
//!
//! fn source(out: Writer<u64>) -> Result<(), ChannelError> {
//!     for i in 1..=10 {
//!         out.write(&i)?;
//!     }
//!     Ok(()) // dropping `out` retires it
//! }
//!
//! fn sink(inp: Reader<u64>) -> Result<(), ChannelError> {
//!     let mut total = 0;
//!     loop {
//!         match inp.read() {
//!             Ok(x) => total += x,
//!             Err(ChannelError::Retired) => break,
//!             Err(e) => return Err(e),
//!         }
//!     }
//!     assert_eq!(total, 55);
//!     Ok(())
//! }
//!
//! let ch = Channel::new()?;
//! // The source as an OS process, the sink as a thread.
//! parallel([
//!     CspProcess::function(source, ch.writer()).os(),
//!     CspProcess::function(sink, ch.reader()),
//! ])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Transports
//!
//! Each end is one public handle over a private flavor (as in
//! crossbeam-channel): `threads_only` channels keep their state in private
//! memory, the default ones in a sealed memfd that travels to OS processes
//! with the end. Both run one protocol (`chan.rs`: a lock-guarded table of
//! waiting parties; the alternation protocol in `alternation.rs`), so the
//! semantics are the same; a network flavor can be added without changing
//! the API.
//!
//! # Lightweight processes
//!
//! A lightweight process is a stackful coroutine (`light/`): when it would
//! block in a channel operation, an alternation or a join, its worker
//! thread parks it and runs another. Every wait of the crate passes
//! through the futex layer, so nothing in the channels knows which kind of
//! process waits, and a channel may join any mix of lightweight processes,
//! threads and OS processes. Their limits:
//!
//! * A blocking call outside the crate (file or socket I/O, a foreign
//!   lock, `std::thread::sleep`) blocks every process of its worker: wrap
//!   it in [`io`]. The processes of one `parallel`/`spawn` call share a
//!   worker, so their channels never cross threads; independent networks
//!   go to the workers in turn.
//! * The crate's owner-recording locks ([`Lock`](crate::Lock) and the
//!   other `sync` primitives) are held by the worker thread: do not hold
//!   one across a wait in a lightweight process (another process of the
//!   same worker taking it would be refused as a deadlock).
//! * A process has at most 1 MiB of stack (a deeper one crashes the
//!   program on a guard page). The processes of a worker share 16 stacks;
//!   a waiting process's live stack (about 2 KiB at a channel operation)
//!   is copied aside when another needs its stack, so nothing may point
//!   into a waiting process's stack from outside (the closures of [`io`]
//!   own what they use).
//! * The worker threads (one per usable CPU) start with the first
//!   lightweight process and live as long as the program. A process that
//!   has them is multi-threaded, so the `fork` start method then refuses
//!   to start a child: start OS processes with `spawn` (the default), or
//!   before the first lightweight process.
//!
//! # From async code
//!
//! With the `tokio` feature, `Reader::read_async` and
//! `Writer::write_async` are the same rendezvous for async tasks (on any
//! executor), without a thread per waiting task: an operation that must
//! wait hands its offer to one helper thread per process, which sleeps on
//! every such offer at once (`futex_waitv`, so completers in other
//! processes wake it too) and wakes the task's waker. Dropping a pending
//! future withdraws its offer; no message is lost or delivered twice (a
//! read whose offer was completed just before the drop gives its message
//! back to the channel, for the next reader, so it may arrive after
//! messages written later). Like any thread, the helper makes the fork
//! start method unavailable in the process once it runs. Alternation has
//! no async form yet.
//!
//! # Limits and differences from PyCSP
//!
//! * Messages are serde values encoded with the crate's codec, at most
//!   [`ChannelBuilder::max_message`] bytes each (default 512 MiB; larger
//!   ones are refused with [`ChannelError::TooLarge`]). Up to
//!   [`ChannelBuilder::slot_size`] (default 64 KiB) they travel inside the
//!   channel's memory; larger ones through a named `/dev/shm` segment of
//!   their own, unlinked by their reader. A segment whose writer or reader
//!   was killed mid-transfer is unlinked when the channel repairs after
//!   the death, or when a process drops its last handle to the channel.
//!   They cannot carry handles (pass those as process arguments).
//! * At most [`ChannelBuilder::waiters`] parties wait on one channel at a
//!   time (default 64); more wait for a place. An alternation sleeps on
//!   all its channels with one `futex_waitv` (Linux 5.16+), up to 127
//!   channel guards (more are polled every millisecond).
//! * In an alternation a guard whose channel is retired (and drained)
//!   drops out; the selection fails with [`ChannelError::Retired`] only
//!   when every enabled channel guard has (PyCSP raises at the first
//!   retired guard, which can strand values buffered on the others).
//!   Poison fails the selection when it reaches the poisoned guard in its
//!   order, as in PyCSP: a guard ready before it is chosen instead.
//! * Fair and priority selection wait briefly (at most 20 ms, once per
//!   selection) for a preferred guard whose counterpart is coming back
//!   from its previous handover, so that parties offering all the time are
//!   served by the selection's order also across processes.
//! * An end passed to another process counts as an end from the moment it
//!   is encoded; if the message is never decoded, that side never retires
//!   (poison still works).
//!
//! # Failure: a party killed inside a channel
//!
//! Any process may be killed at any instruction, inside a channel
//! operation or not, and the others go on: the channel's lock is a robust
//! mutex (the next party to take it repairs what the dead holder left
//! half done), every waiting party holds a robust mutex of its own (so a
//! dead one is recognised: no writer hands a value to a dead reader, and
//! its place is freed), and waiting parties look for the dead every 100
//! ms. A write is delivered whole or not at all, and never twice:
//!
//! * a writer killed before its message entered the channel wrote nothing;
//!   one killed after (buffered, or waiting with it) wrote it: a reader
//!   gets it.
//! * a rendezvous `write` returns once a reader that was alive when it took
//!   the value has it. If that reader dies before its `read` returns, the
//!   value goes to the next reader when the reader had not copied it out
//!   yet, and is lost with it when it had (as for a reader killed just
//!   after `read` returned); the writer is not told either way.
//!
//! ## The ends of a dead process count as retired
//!
//! A process that dies holding ends (killed, or gone without dropping
//! them) has retired them, the same wherever its ends came from
//! ([`Process::new`](crate::Process::new) arguments, a message, `fork`, or
//! [`parallel`]): the death alone does not poison anything. So a channel
//! whose every writer was killed retires (its readers get what was
//! buffered, then [`ChannelError::Retired`]), and one that keeps live
//! parties of both sides goes on: a killed worker of a pool can be
//! replaced, and the channel neither hangs nor fails for the others.
//!
//! Why not poison: a channel cannot tell a death that is a failure from a
//! process that was stopped on purpose, and poison cannot be undone, so a
//! single killed member would end every network sharing the channel,
//! restartable workers included. Failure is reported where it is known:
//! [`parallel`] applies PyCSP's rule on top, as it does for a panic or an
//! error: a process of the network that fails in any way, killed
//! included, poisons the channels it was given and makes `parallel`
//! return the error, so a pipeline run by `parallel` learns of a killed
//! member instead of ending quietly as if it had finished. Outside
//! `parallel`, whoever started the process learns of its death from its
//! join.
//!
//! How: each channel keeps a table of the processes holding its ends
//! (pid and start time, so a recycled pid is not taken for the dead
//! process; 32 processes at a time, later ones are not tracked) with how
//! many ends of each side each holds. A party that waits on the channel
//! looks every 100 ms for holders that are no longer running and releases
//! their ends, as if each had been retired. An end in flight (encoded, not
//! yet decoded) counts for its sender until the receiver decodes it.

#[cfg(feature = "tokio")]
mod aio;
mod alternation;
mod chan;
mod channel;
mod error;
mod light;
mod lock;
mod memory;
// Its one implementer, the network channel, needs the feature `zenoh`.
#[cfg_attr(not(feature = "zenoh"), allow(dead_code))]
pub(crate) mod outside;
mod process;
mod spill;

#[cfg(feature = "tokio")]
pub use aio::{ReadFuture, WriteFuture};
pub use alternation::{Alternation, Fair};
#[doc(hidden)]
pub use chan::{CrashPoint, crash_at};
pub use channel::{
    Channel, ChannelBuilder, DEFAULT_MAX_MESSAGE, DEFAULT_SLOT_SIZE, DEFAULT_WAITERS, Reader,
    Writer,
};
pub use error::{ChannelError, ProcessError};
pub use light::{io, sleep};
pub use process::{CspProcess, Outcome, Parallel, Spawned, parallel, sequence, spawn};
