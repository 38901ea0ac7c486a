//! How often an active ScaledJob refreshes `status.lastActiveTime` (D19).
//!
//! KEDA sets it to "now" on every poll in which the ScaledJob is active, so every active
//! ScaledJob patches its status every `pollingInterval`: 1,000 active ScaledJobs polled every
//! 30 s need 33 status writes a second, more than the default API budget of 20 QPS, and the
//! writes crowd out Job creation. jobtide refreshes it only when the stored value is at least
//! [`DEFAULT_REFRESH`] old (a refresh of zero is KEDA's behaviour), so the field is never more
//! than that behind the last active poll, and an active ScaledJob whose state didn't change costs
//! one status write per refresh period instead of one per poll.

use std::time::{Duration, SystemTime};

/// The default refresh period (`--last-active-time-refresh-seconds`).
pub const DEFAULT_REFRESH: Duration = Duration::from_mins(5);

/// Whether an active poll at `now` writes `lastActiveTime`, given the stored value. Never
/// written before, or written at least `refresh` ago: yes. A stored value in the future (a
/// replica with a skewed clock wrote it) counts by its distance, so a skew never makes every poll
/// write.
#[must_use]
pub fn last_active_due(stored: Option<SystemTime>, now: SystemTime, refresh: Duration) -> bool {
    let Some(stored) = stored else {
        return true;
    };
    let distance = match now.duration_since(stored) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    distance >= refresh
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + seconds)
    }

    #[test]
    fn written_when_never_written_or_at_least_a_refresh_old() {
        let refresh = Duration::from_mins(5);
        assert!(last_active_due(None, at(0), refresh));
        assert!(!last_active_due(Some(at(0)), at(30), refresh));
        assert!(!last_active_due(Some(at(0)), at(299), refresh));
        assert!(last_active_due(Some(at(0)), at(300), refresh));
        assert!(last_active_due(Some(at(0)), at(3_600), refresh));
    }

    #[test]
    fn a_refresh_of_zero_is_keda_every_active_poll() {
        assert!(last_active_due(Some(at(10)), at(10), Duration::ZERO));
        assert!(last_active_due(Some(at(10)), at(11), Duration::ZERO));
    }

    #[test]
    fn a_value_from_a_skewed_clock_in_the_future_does_not_make_every_poll_write() {
        let refresh = Duration::from_mins(5);
        assert!(!last_active_due(Some(at(60)), at(0), refresh));
        assert!(last_active_due(Some(at(600)), at(0), refresh));
    }
}
