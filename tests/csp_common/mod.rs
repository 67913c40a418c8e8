//! Helpers shared by the CSP tests.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use multiproc::csp::Channel;

/// Runs `f` on a thread and fails the test if it does not finish within
/// `secs` seconds (a hang is a failure, not a stuck test run).
pub fn watchdog<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().expect("test body panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("watchdog: test did not finish in {secs} s"),
    }
}

/// The two in-memory flavors every thread test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Flavor {
    Threads,
    Shared,
}

pub const FLAVORS: [Flavor; 2] = [Flavor::Threads, Flavor::Shared];

pub fn channel<T>(flavor: Flavor, buffer: usize) -> Channel<T> {
    let b = Channel::builder().buffer(buffer);
    match flavor {
        Flavor::Threads => b.threads_only().build().unwrap(),
        Flavor::Shared => b.build().unwrap(),
    }
}
