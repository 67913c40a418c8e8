//! How a party waits before it sleeps: a few exponentially growing spins,
//! then a few yields of the CPU, then (the caller's) futex sleep; after
//! crossbeam-utils' `Backoff`. Spinning pays only while the counterpart
//! runs on another CPU; yielding lets it run on ours when there are more
//! runnable parties than CPUs. On a single CPU neither pays, and the
//! caller sleeps at once.

const SPIN_LIMIT: u32 = 6;
const YIELD_LIMIT: u32 = 10;

/// The state of one wait.
pub(crate) struct Backoff {
    step: u32,
    enabled: bool,
}

impl Backoff {
    /// A fresh wait; `enabled` is false when only one CPU is available.
    /// A lightweight process never spins: its counterpart most likely
    /// runs on its own worker, after it parks.
    pub fn new(enabled: bool) -> Backoff {
        Backoff {
            step: 0,
            enabled: enabled && !super::light::on_task(),
        }
    }

    /// Waits a little; returns false once it is time to sleep instead.
    pub fn snooze(&mut self) -> bool {
        if !self.enabled || self.step > YIELD_LIMIT {
            return false;
        }
        if self.step <= SPIN_LIMIT {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        self.step += 1;
        true
    }
}
