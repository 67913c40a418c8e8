//! The seed's CSP program: two processes, `P1` and `P2`, each sleep one
//! second and say they are exiting; `Parallel` runs them together (about
//! one second in all, not two), then the program prints `Terminating`.
//! It runs once with the processes as threads and once as OS processes.
//!
//! ```text
//! $ cargo run --example csp
//! P2 exiting
//! P1 exiting
//! Terminating
//! P1 exiting
//! P2 exiting
//! Terminating
//! ```
//!
//! (`P1` and `P2` may finish in either order.)

use std::time::Duration;

use multiproc::csp::{ChannelError, CspProcess, parallel};

fn p1(_: ()) -> Result<(), ChannelError> {
    std::thread::sleep(Duration::from_secs(1));
    println!("P1 exiting");
    Ok(())
}

fn p2(_: ()) -> Result<(), ChannelError> {
    std::thread::sleep(Duration::from_secs(1));
    println!("P2 exiting");
    Ok(())
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As threads (PyCSP's default).
    parallel([CspProcess::function(p1, ()), CspProcess::function(p2, ())])?;
    println!("Terminating");

    // As OS processes (PyCSP's `@multiprocess`).
    parallel([
        CspProcess::function(p1, ()).os(),
        CspProcess::function(p2, ()).os(),
    ])?;
    println!("Terminating");
    Ok(())
}
