//! How a CSP party waits before it sleeps: [`wait::Backoff`] by the
//! [`wait::CSP`] preset (exponentially growing spins, then a few yields).
//! This wrapper only keeps the constructor that takes a channel's cached
//! "may spin" answer.

use crate::wait;

/// The state of one wait.
pub(crate) struct Backoff(wait::Backoff);

impl Backoff {
    /// A fresh wait; `enabled` is false when only one CPU is available.
    pub fn new(enabled: bool) -> Backoff {
        Backoff(if enabled {
            wait::Backoff::always(&wait::CSP)
        } else {
            wait::Backoff::off()
        })
    }

    /// Waits a little; returns false once it is time to sleep instead.
    pub fn snooze(&mut self) -> bool {
        self.0.snooze()
    }
}
