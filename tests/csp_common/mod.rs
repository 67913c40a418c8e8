//! Helpers shared by the CSP tests.
#![allow(dead_code)]

use multiproc::csp::Channel;

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
