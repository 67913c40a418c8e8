//! The only place in the crate that talks to the operating system.
//!
//! # Contract
//!
//! Every backend (today: Linux) provides, with every descriptor created
//! `O_CLOEXEC` and passed around as [`OwnedFd`](std::os::fd::OwnedFd) /
//! [`BorrowedFd`](std::os::fd::BorrowedFd), never as a bare integer outside
//! this module:
//!
//! | file | what |
//! |---|---|
//! | [`socket`] | socketpairs, Unix listen (owner-only socket files, abstract names) and connect with a timeout, `sendmsg`/`recvmsg` carrying descriptors (`SCM_RIGHTS`), shutdown, `dup` |
//! | [`poll`] | waiting for readiness on several descriptors with a timeout |
//! | [`futex`] | wait/wake on a 32-bit word in (possibly shared) memory |
//! | [`shm`] | owner-only memfd segments sealed against resizing, named `/dev/shm` segments, shared mappings, positional I/O, `flock`, hole punching and preallocation |
//! | [`random`] | bytes from the kernel's cryptographic generator (rustix's `getrandom`); a failure is an error |
//! | [`process`] | re-executing the current binary, `fork`, pidfds, `waitid`, signals, ids, thread and CPU counts, the affinity mask |
//! | [`robust_mutex`] | robust, process-shared pthread mutexes (owner death reported to the next locker) |
//! | [`owner_lock`] | the crate's own process-shared lock word: owner identity in the word, owner death found by a waiter through `/proc` |
//! | [`liveness`] | whether a process (pid + start time, so pid reuse is caught) still runs |
//! | [`waitv`] | sleeping on several futex words at once |
//! | [`signalfd`] | signals read from a descriptor, `SIGTERM` on the parent's death |
//!
//! Code outside `sys` never calls `libc` or `rustix` directly.

pub mod futex;
pub mod liveness;
pub mod owner_lock;
pub mod poll;
pub mod process;
pub mod random;
pub mod robust_mutex;
pub mod shm;
pub mod signalfd;
pub mod socket;
pub mod waitv;
