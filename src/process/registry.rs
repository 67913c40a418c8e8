//! The children this process started: their pidfds, their pending
//! outcome, and what happens to them at exit.
//!
//! Every started child is listed here until it has been reaped, whether or
//! not its [`Process`](crate::Process) handle still exists, so that
//! [`active_children`](crate::active_children) sees it and the exit handler
//! can join or terminate it (Python's rule: daemon children are terminated,
//! the others joined, when the parent's `main` returns).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use crate::connection::Connection;
use crate::error::RecvError;
use crate::local_lock::lock;
use crate::sys;
use crate::sys::process::Exit;
use crate::wait::Deadline;

/// Longest time the state lock is held while waiting, so that `is_alive`
/// from another thread is never blocked for long by a `join`.
const SLICE: Duration = Duration::from_millis(50);

/// The encoded outcome a child sent: payload and descriptors.
pub type Outcome = (Vec<u8>, Vec<OwnedFd>);

/// One started child.
pub struct Child {
    pub pid: i32,
    pub name: String,
    pub daemon: bool,
    pidfd: OwnedFd,
    state: Mutex<State>,
}

struct State {
    /// The bootstrap connection, until the outcome arrived or the child died.
    conn: Option<Connection>,
    /// A forked child's bell (see [`Child::new`]): while it is here and
    /// silent, the child's outcome is small enough to wait in the socket,
    /// so only the pidfd is watched.
    bell: Option<Connection>,
    outcome: Option<Outcome>,
    exit: Option<Exit>,
}

impl Child {
    /// A started child. With a `bell` (a forked child), the parent does not
    /// wake for the outcome message: the child sends a small outcome and
    /// exits, and the message is read once the pidfd says it exited; before
    /// sending one too large to wait in the socket's buffer, the child rings
    /// the bell (makes it readable), and from then on the connection is
    /// watched too, as without a bell. This spares a wake-up per child (two:
    /// the message, and the hang-up of the child's end at exit, as long as
    /// the parent holds the bell, a copy of that end).
    pub fn new(
        pid: i32,
        name: String,
        daemon: bool,
        pidfd: OwnedFd,
        conn: Connection,
        bell: Option<Connection>,
    ) -> Arc<Self> {
        Arc::new(Child {
            pid,
            name,
            daemon,
            pidfd,
            state: Mutex::new(State {
                conn: Some(conn),
                bell,
                outcome: None,
                exit: None,
            }),
        })
    }

    /// Receives the child's outcome and reaps it, waiting until `deadline`.
    /// Returns how it exited, or `None` if it is still running at the
    /// deadline.
    pub fn pump(&self, deadline: Deadline) -> std::io::Result<Option<Exit>> {
        loop {
            let mut st = lock(&self.state);
            if let Some(exit) = st.exit {
                return Ok(Some(exit));
            }
            let slice = deadline.slice(SLICE);
            let ready = match (&st.conn, &st.bell) {
                (Some(_), Some(bell)) => {
                    let [rang, exited] = sys::poll::wait_readable_n(
                        [bell.as_fd(), self.pidfd.as_fd()],
                        Some(slice),
                    )?;
                    if rang {
                        // A large outcome is on its way: read it as it comes.
                        st.bell = None;
                    }
                    [false, exited]
                }
                (Some(conn), None) => {
                    sys::poll::wait_readable_n([conn.as_fd(), self.pidfd.as_fd()], Some(slice))?
                }
                (None, _) => {
                    let [exited] = sys::poll::wait_readable_n([self.pidfd.as_fd()], Some(slice))?;
                    [false, exited]
                }
            };
            if ready[0] {
                let conn = st.conn.as_ref().expect("polled");
                match conn.recv_encoded(Some(slice)) {
                    Ok(outcome) => {
                        st.outcome = Some(outcome);
                        st.conn = None;
                    }
                    Err(RecvError::Timeout) => {}
                    Err(_) => st.conn = None,
                }
            }
            if ready[1] {
                // Everything the child wrote before exiting is queued now.
                if let Some(conn) = st.conn.take()
                    && let Ok(outcome) = conn.recv_encoded(Some(Duration::ZERO))
                {
                    st.outcome = Some(outcome);
                    if let Some(bell) = st.bell.take() {
                        keep_spare(conn, bell);
                    }
                }
                st.bell = None;
                st.exit = sys::process::wait_exit(self.pidfd.as_fd(), true)?;
                if let Some(exit) = st.exit {
                    drop(st);
                    forget(self);
                    return Ok(Some(exit));
                }
            }
            if deadline.expired() {
                return Ok(None);
            }
        }
    }

    /// How the child exited, if it has (never blocks).
    pub fn poll_exit(&self) -> std::io::Result<Option<Exit>> {
        self.pump(Deadline::after(Duration::ZERO))
    }

    /// Its pidfd.
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Takes the outcome the child sent, if it sent one.
    pub fn take_outcome(&self) -> Option<Outcome> {
        lock(&self.state).outcome.take()
    }

    /// Sends `sig` to the child (no effect once it has exited).
    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        if lock(&self.state).exit.is_some() {
            return Ok(());
        }
        sys::process::signal(self.pidfd.as_fd(), sig)
    }
}

static CHILDREN: Mutex<Vec<Arc<Child>>> = Mutex::new(Vec::new());
/// How many children [`CHILDREN`] lists (changed under its lock), read
/// without the lock where the list is usually empty: in a forked child,
/// which then writes nothing to the list's page (a page copied).
static LISTED: AtomicUsize = AtomicUsize::new(0);
static AT_EXIT: Once = Once::new();

/// Lists a freshly started child.
pub fn register(child: Arc<Child>) {
    AT_EXIT.call_once(|| sys::process::at_exit(at_exit));
    let mut list = lock(&CHILDREN);
    list.push(child);
    LISTED.store(list.len(), Ordering::Release);
}

fn forget(child: &Child) {
    let mut list = lock(&CHILDREN);
    list.retain(|c| !std::ptr::eq(&**c, child));
    LISTED.store(list.len(), Ordering::Release);
}

/// Forgets every child (in a forked child: they are the parent's).
#[inline]
pub fn clear_after_fork() {
    // Nothing to write when the list is empty (the usual case). The spare
    // pair needs no clearing: the fork start path took it for this child
    // (see `connection_pair`).
    if LISTED.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut list = lock(&CHILDREN);
    // The pidfds are the parent's business; closing our copies is harmless.
    list.clear();
    LISTED.store(0, Ordering::Release);
}

/// A connected pair left clean by a reaped forked child, for the next one:
/// making a socket pair and closing it again costs more than a fork's
/// other system calls together, and the parent's end keeps its receive
/// buffer (allocating one after the fork writes pages the fork made
/// copy-on-write). With the process that keeps it: in a process forked by
/// other means, the copy it inherited is not its own to use.
static SPARE: Mutex<Option<(i32, Connection, Connection)>> = Mutex::new(None);

/// A connected pair of connections for a forked child (the parent's end,
/// the child's end): the spare one, else a new one.
pub fn connection_pair() -> std::io::Result<(Connection, Connection)> {
    if let Some((owner, ours, theirs)) = lock(&SPARE).take()
        && owner == sys::process::getpid()
    {
        return Ok((ours, theirs));
    }
    let (ours, theirs) = sys::socket::stream_pair()?;
    Ok((
        Connection::from_fd(ours, true, true, true),
        Connection::from_fd(theirs, true, true, true),
    ))
}

/// Keeps the pair of a reaped forked child (the parent's connection, whose
/// outcome was read, and the child's end, its bell, silent) as the spare,
/// if nothing is left in it.
fn keep_spare(conn: Connection, bell: Connection) {
    let (Some(ours), Some(bell)) = (conn.into_idle(), bell.into_idle()) else {
        return;
    };
    // Nothing readable either way: the child sent one frame, now read, and
    // never rang the bell.
    if let Ok([false, false]) =
        sys::poll::wait_readable_n([ours.as_fd(), bell.as_fd()], Some(Duration::ZERO))
    {
        let mut spare = lock(&SPARE);
        if spare.is_none() {
            *spare = Some((sys::process::getpid(), ours, bell));
        }
    }
}

/// The children still running; finished ones are reaped on the way.
pub fn active() -> Vec<Arc<Child>> {
    let list: Vec<Arc<Child>> = lock(&CHILDREN).clone();
    list.into_iter()
        .filter(|c| matches!(c.poll_exit(), Ok(None)))
        .collect()
}

/// Terminates daemon children (SIGTERM, then SIGKILL after a second) and
/// waits for the others, as Python does when the main module finishes.
pub fn finish_children() {
    if LISTED.load(Ordering::Acquire) == 0 {
        // The common case in a child: nothing to wait for, no lock taken.
        return;
    }
    let list: Vec<Arc<Child>> = {
        let list = lock(&CHILDREN);
        if list.is_empty() {
            // The common case in a child: nothing to wait for, no clock read.
            return;
        }
        list.clone()
    };
    for c in list.iter().filter(|c| c.daemon) {
        let _ = c.signal(sys::process::SIGTERM);
    }
    let grace = Deadline::after(Duration::from_secs(1));
    for c in list.iter().filter(|c| c.daemon) {
        if matches!(c.pump(grace), Ok(None)) {
            let _ = c.signal(sys::process::SIGKILL);
        }
    }
    for c in &list {
        let _ = c.pump(Deadline::NEVER);
    }
}

extern "C" fn at_exit() {
    finish_children();
}
