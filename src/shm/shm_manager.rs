//! [`SharedMemoryManager`]: Python's
//! `multiprocessing.managers.SharedMemoryManager`, a process that creates
//! named segments on request and removes them all when it stops — when
//! asked, when its owner exits, and when its owner is killed.
//!
//! # How it works
//!
//! [`start`](SharedMemoryManager::start) spawns a small tracking process
//! connected to its owner by a socketpair. The tracker itself creates each
//! segment (so the segment's trailer names the tracker as its creator, see
//! [`SharedMemory`]) and hands the owner an attached handle, which never
//! removes the segment. The tracker removes every segment it made when:
//!
//! * the owner asks ([`shutdown`](SharedMemoryManager::shutdown), or
//!   dropping the manager);
//! * the owner dies, however: the tracker asks the kernel for `SIGTERM`
//!   on its parent's death (`PR_SET_PDEATHSIG`) instead of the crate's
//!   usual `SIGKILL`, and reads it from a `signalfd`, as it does the
//!   `SIGTERM` a parent's normal exit sends to its daemon children; it
//!   also stops when the owner's end of the socket closes;
//! * it is itself killed with `SIGKILL`: then its segments are stale (their
//!   creator is gone), and the next [`SharedMemory::create`] anywhere, or
//!   [`SharedMemory::cleanup_stale`], removes them.
//!
//! The tracker ignores `SIGINT`, so a terminal's Ctrl-C, sent to the whole
//! process group, leaves the decision to the owner.

use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{ShareableListError, ShmError};
use super::shareable_list::{ShareableItem, ShareableList};
use super::shared_memory::SharedMemory;
use crate::connection::Connection;
use crate::process::{Process, StartMethod};
use crate::sys;

/// How long `start` waits for the tracker to come up, and `shutdown` for
/// it to exit.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
enum Command {
    Create(u64),
    Segments,
    Shutdown,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Ready,
    Created(SharedMemory),
    Segments(Vec<String>),
    Failed(String),
    Done,
}

#[derive(Serialize, Deserialize)]
struct TrackerArgs {
    conn: Connection,
    owner: i32,
}

/// The tracking process's target.
fn run_tracker(args: TrackerArgs) {
    let conn = args.conn;
    let signals = match sys::signalfd::take_signals(&[sys::process::SIGTERM, sys::signalfd::SIGHUP])
    {
        Ok(fd) => fd,
        Err(e) => {
            let _ = conn.send(&Reply::Failed(format!("signalfd: {e}")));
            return;
        }
    };
    let _ = sys::process::ignore_interrupt();
    if let Err(e) = sys::signalfd::term_with_parent() {
        let _ = conn.send(&Reply::Failed(format!("parent death signal: {e}")));
        return;
    }
    // The owner may have died before the new death signal was in place.
    if sys::process::getppid() != args.owner || conn.send(&Reply::Ready).is_err() {
        return;
    }
    let mut segments: Vec<SharedMemory> = Vec::new();
    loop {
        // A pipe end may hold a message in shared memory, which `poll(2)`
        // on its socket does not show: ask the connection first (that also
        // asks the writer for a doorbell on the socket for the next one).
        let ready_now = conn.ready_or_arm();
        let wait = if ready_now {
            Some(Duration::ZERO)
        } else {
            None
        };
        let Ok(ready) = sys::poll::wait_readable(&[conn.as_fd(), signals.as_fd()], wait) else {
            break;
        };
        if ready[1] {
            break;
        }
        if !ready_now {
            // Readable: a doorbell, a frame or the end of stream; the next
            // round tells which.
            continue;
        }
        let reply = match conn.recv::<Command>() {
            Ok(Command::Create(size)) => {
                match usize::try_from(size)
                    .map_err(|_| ShmError::ZeroSize)
                    .and_then(SharedMemory::new)
                {
                    Ok(shm) => {
                        segments.push(shm.clone());
                        Reply::Created(shm)
                    }
                    Err(e) => Reply::Failed(e.to_string()),
                }
            }
            Ok(Command::Segments) => {
                Reply::Segments(segments.iter().map(|s| s.name().to_string()).collect())
            }
            Ok(Command::Shutdown) => {
                // Removed before the answer, so that a returned
                // `shutdown` means the names are gone.
                drop(segments);
                let _ = conn.send(&Reply::Done);
                return;
            }
            Err(_) => break,
        };
        if conn.send(&reply).is_err() {
            break;
        }
    }
    // Dropping the creator's handles removes the names.
    drop(segments);
}

/// Creates named shared memory segments and [`ShareableList`]s and removes
/// them all when it shuts down (Python's `SharedMemoryManager`), even if
/// the process that started it is killed (see the module docs).
///
/// The handles it returns are attached ones: dropping them never removes a
/// segment; the manager does, at [`shutdown`](Self::shutdown) or when
/// dropped. Other processes reach the segments by name, or receive the
/// handles themselves.
///
/// ```
/// use multiproc::{ShareableItem, SharedMemory, SharedMemoryManager};
///
/// let smm = SharedMemoryManager::start()?;
/// let shm = smm.shared_memory(128)?;
/// let list = smm.shareable_list(vec![ShareableItem::Int(1), "two".into()])?;
/// let names = [shm.name().to_string(), list.name().to_string()];
/// drop((shm, list)); // the segments stay
/// assert!(SharedMemory::attach(&names[0]).is_ok());
/// drop(smm); // now they go
/// assert!(SharedMemory::attach(&names[0]).is_err());
/// assert!(SharedMemory::attach(&names[1]).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedMemoryManager {
    conn: Mutex<Connection>,
    /// Behind a mutex only so that the manager is `Sync`.
    tracker: Mutex<Option<Process<()>>>,
    /// The tracker's pid, until shut down.
    pid: Option<i32>,
    /// The process that started the tracker (a forked copy of the manager
    /// does nothing).
    owner: i32,
}

impl SharedMemoryManager {
    /// Starts the tracking process (Python's `SharedMemoryManager()` +
    /// `start()`).
    pub fn start() -> Result<SharedMemoryManager, ShmError> {
        let (ours, theirs) = crate::connection::pipe()?;
        let owner = sys::process::getpid();
        let mut tracker = Process::new(
            run_tracker,
            TrackerArgs {
                conn: theirs,
                owner,
            },
        )
        .name("SharedMemoryManager")
        .daemon(true)
        .start_method(StartMethod::Spawn);
        tracker
            .start()
            .map_err(|e| ShmError::Manager(format!("could not start: {e}")))?;
        let why = match ours.recv_timeout::<Reply>(WAIT) {
            Ok(Reply::Ready) => None,
            Ok(Reply::Failed(e)) => Some(e),
            Ok(_) => Some("unexpected first message".into()),
            Err(e) => Some(format!("did not start: {e}")),
        };
        if let Some(why) = why {
            let _ = tracker.kill();
            let _ = tracker.join_timeout(WAIT);
            return Err(ShmError::Manager(why));
        }
        Ok(SharedMemoryManager {
            conn: Mutex::new(ours),
            pid: tracker.pid(),
            tracker: Mutex::new(Some(tracker)),
            owner,
        })
    }

    fn call(&self, command: &Command) -> Result<Reply, ShmError> {
        if self.pid.is_none() {
            return Err(ShmError::Manager("shut down".into()));
        }
        if self.owner != sys::process::getpid() {
            return Err(ShmError::Manager(
                "belongs to the process that started it".into(),
            ));
        }
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let gone = |e: &dyn std::fmt::Display| ShmError::Manager(format!("tracker is gone: {e}"));
        conn.send(command).map_err(|e| gone(&e))?;
        match conn.recv::<Reply>().map_err(|e| gone(&e))? {
            Reply::Failed(e) => Err(ShmError::Manager(e)),
            r => Ok(r),
        }
    }

    /// A new segment of `size` zeroed bytes under a fresh name (Python's
    /// `smm.SharedMemory(size)`), removed when the manager shuts down.
    pub fn shared_memory(&self, size: usize) -> Result<SharedMemory, ShmError> {
        if size == 0 {
            return Err(ShmError::ZeroSize);
        }
        match self.call(&Command::Create(size as u64))? {
            Reply::Created(shm) => Ok(shm),
            _ => Err(ShmError::Manager("unexpected reply".into())),
        }
    }

    /// A new [`ShareableList`] holding `items` (Python's
    /// `smm.ShareableList(sequence)`), removed when the manager shuts down.
    pub fn shareable_list(
        &self,
        items: Vec<ShareableItem>,
    ) -> Result<ShareableList, ShareableListError> {
        let size = ShareableList::size_for(&items)?;
        ShareableList::build(self.shared_memory(size)?, &items)
    }

    /// The names of the segments the manager holds.
    pub fn segment_names(&self) -> Result<Vec<String>, ShmError> {
        match self.call(&Command::Segments)? {
            Reply::Segments(names) => Ok(names),
            _ => Err(ShmError::Manager("unexpected reply".into())),
        }
    }

    /// The tracking process's id (until shut down).
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Removes every segment made through this manager and stops its
    /// process (Python's `shutdown`). Dropping the manager does the same;
    /// later calls fail with [`ShmError::Manager`]. In a forked copy of the
    /// owner this does nothing.
    pub fn shutdown(&mut self) -> Result<(), ShmError> {
        self.pid = None;
        let tracker = self
            .tracker
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if self.owner != sys::process::getpid() {
            std::mem::forget(tracker);
            return Ok(());
        }
        let Some(mut tracker) = tracker else {
            return Ok(());
        };
        let asked = {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            conn.send(&Command::Shutdown)
                .ok()
                .and_then(|()| conn.recv_timeout::<Reply>(WAIT).ok())
        };
        if tracker.join_timeout(WAIT).is_err() {
            // Killed, its segments are stale and removed by the next
            // `create` anywhere; do that now.
            let _ = tracker.kill();
            let _ = tracker.join_timeout(WAIT);
            let _ = SharedMemory::cleanup_stale();
        }
        match asked {
            Some(Reply::Done) => Ok(()),
            _ => Err(ShmError::Manager(
                "the tracker was gone before shutdown".into(),
            )),
        }
    }
}

impl Drop for SharedMemoryManager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for SharedMemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryManager")
            .field("pid", &self.pid())
            .finish()
    }
}
