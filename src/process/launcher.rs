//! Spawning from threads other than the main thread.
//!
//! A child asks the kernel to kill it when its parent dies
//! (`PR_SET_PDEATHSIG`), but the kernel counts the *thread* that created it
//! as its parent: a child spawned by a short-lived thread would die with
//! that thread. Spawns requested off the main thread are therefore made by
//! one launcher thread that lives as long as the process.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

use crate::sys;
use crate::sys::process::ChildSetup;

type Request = (OwnedFd, &'static str, ChildSetup, Sender<io::Result<i32>>);

static LAUNCHER: Mutex<Option<Sender<Request>>> = Mutex::new(None);

/// Re-executes the current binary with `keep` inherited (its number in
/// `env_key`) and `setup` applied, from a thread that outlives the child.
/// Returns its pid. `keep` is closed in this process afterwards.
pub fn spawn_self(keep: OwnedFd, env_key: &'static str, setup: ChildSetup) -> io::Result<i32> {
    if sys::process::is_main_thread() {
        return sys::process::spawn_self(keep.as_fd(), env_key, &setup);
    }
    let (reply, answer) = channel();
    {
        let mut launcher = LAUNCHER.lock().unwrap_or_else(|e| e.into_inner());
        let tx = match &*launcher {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = channel::<Request>();
                std::thread::Builder::new()
                    .name("multiproc-launcher".into())
                    .spawn(move || {
                        for (fd, key, setup, reply) in rx {
                            let _ = reply.send(sys::process::spawn_self(fd.as_fd(), key, &setup));
                        }
                    })?;
                *launcher = Some(tx.clone());
                tx
            }
        };
        tx.send((keep, env_key, setup, reply))
            .map_err(|_| io::Error::other("launcher thread is gone"))?;
    }
    answer
        .recv()
        .map_err(|_| io::Error::other("launcher thread is gone"))?
}
