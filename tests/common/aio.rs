//! Runtimes for the `tokio` feature's tests.

use std::future::Future;

use super::LONG;

/// A runtime of one thread, with I/O and time.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `f` to completion on a one-thread runtime, at most [`LONG`].
pub fn run<F: Future>(f: F) -> F::Output {
    rt().block_on(async move {
        tokio::time::timeout(LONG, f)
            .await
            .expect("the async body did not finish in time")
    })
}
