//! [`Deadline`]: the point in time after which a wait gives up, or none.
//!
//! The crate's rule for every timeout: a timeout too long to represent as
//! an [`Instant`] (`Duration::MAX`, or anything that would overflow the
//! monotonic clock) means no limit, exactly like `None`. It never panics
//! and never turns into a short or an already-passed deadline. A zero
//! timeout is a deadline already passed: the operation tries once and
//! reports its timeout at once if nothing is ready.
//!
//! Timeouts that cross the manager's wire travel as `Option<Duration>`
//! and become a `Deadline` on the server with [`Deadline::from_timeout`],
//! so the rule holds there too whatever value a client sends.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// When a wait gives up: an instant, or never. `Deadline::after(Duration::MAX)`
/// is [`Deadline::NEVER`]; `Deadline::after(Duration::ZERO)` has expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// No limit.
    pub const NEVER: Deadline = Deadline(None);

    /// The point in time `at` (`None`: no limit).
    #[inline]
    pub fn at(at: Option<Instant>) -> Deadline {
        Deadline(at)
    }

    /// `timeout` from now; a timeout too long to represent is no limit. A
    /// zero timeout reads no clock: it is a deadline already passed.
    #[inline]
    pub fn after(timeout: Duration) -> Deadline {
        if timeout.is_zero() {
            return Deadline(Some(passed()));
        }
        Deadline::after_from(Instant::now(), timeout)
    }

    /// `timeout` after `start`; a timeout too long to represent is no
    /// limit.
    #[inline]
    pub fn after_from(start: Instant, timeout: Duration) -> Deadline {
        Deadline(start.checked_add(timeout))
    }

    /// `timeout` from now, `None` being no limit.
    #[inline]
    pub fn from_timeout(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::NEVER, Deadline::after)
    }

    /// The instant, or `None` for no limit: the form the lower layers
    /// (`poll`, futex waits, the queue's ring) take.
    #[inline]
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// The earlier of the two.
    #[inline]
    pub fn min(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (a, b) => Deadline(a.or(b)),
        }
    }

    /// Time left: `None` for no limit, `Some(ZERO)` once passed.
    #[inline]
    pub fn remaining(self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether it has passed.
    #[inline]
    pub fn expired(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// The time left, at most `slice`.
    #[inline]
    pub fn slice(self, slice: Duration) -> Duration {
        self.remaining().map_or(slice, |r| r.min(slice))
    }
}

/// An instant already passed, read from the clock once per process: a
/// zero timeout, polled in a loop, pays no clock read.
fn passed() -> Instant {
    static PASSED: OnceLock<Instant> = OnceLock::new();
    *PASSED.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_long_is_no_limit() {
        for t in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::new(i64::MAX as u64, 999_999_999),
        ] {
            let d = Deadline::after(t);
            assert!(d.instant().is_none(), "{t:?}");
            assert_eq!(d.remaining(), None);
            assert!(!d.expired());
            assert_eq!(d.slice(Duration::from_millis(5)), Duration::from_millis(5));
        }
        assert!(
            Deadline::from_timeout(Some(Duration::MAX))
                .instant()
                .is_none()
        );
        assert!(Deadline::from_timeout(None).instant().is_none());
        assert!(
            Deadline::after_from(Instant::now(), Duration::MAX)
                .instant()
                .is_none()
        );
    }

    #[test]
    fn zero_has_passed() {
        let d = Deadline::after(Duration::ZERO);
        assert!(d.expired());
        assert_eq!(d.remaining(), Some(Duration::ZERO));
        assert_eq!(d.slice(Duration::from_secs(1)), Duration::ZERO);
        assert!(Deadline::from_timeout(Some(Duration::ZERO)).expired());
    }

    #[test]
    fn ordinary_timeouts() {
        let d = Deadline::after(Duration::from_secs(3600));
        assert!(!d.expired());
        let left = d.remaining().unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));
    }
}
