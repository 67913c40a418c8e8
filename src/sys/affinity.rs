//! Which CPUs the calling thread may run on.

/// How many CPUs the calling thread may run on (its affinity mask), at
/// least 1. Spinning while waiting for another thread only pays when this is
/// more than one.
pub fn cpus_available() -> usize {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (set.count() as usize).max(1),
        Err(_) => 1,
    }
}
