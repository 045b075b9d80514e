//! The scheduler's time: a wall clock derived from tokio's monotonic clock
//! (so tests run on paused time), the stable spread of a probe across its
//! interval, and the next tick of a schedule.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::Schedule;

/// The wall clock, derived from tokio's clock from an anchor.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: DateTime<Utc>,
    mono: Instant,
    /// Wait for ticks with sub-millisecond precision (the system clock only:
    /// paused tokio time in tests has no precision to gain).
    precise: bool,
}

impl Clock {
    /// Anchored at the system's wall clock now.
    pub fn system() -> Clock {
        Clock {
            precise: true,
            ..Clock::anchored(Utc::now())
        }
    }

    /// Anchored at `wall` now (tests: a fixed wall time with paused tokio time).
    pub fn anchored(wall: DateTime<Utc>) -> Clock {
        Clock {
            wall,
            mono: Instant::now(),
            precise: false,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.wall + TimeDelta::from_std(self.mono.elapsed()).unwrap_or_default()
    }

    /// Sleeps until the wall clock reads `at`.
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        let instant = self.instant_at(at);
        if self.precise {
            super::precise::sleep_until(instant).await;
        } else {
            tokio::time::sleep_until(instant).await;
        }
    }

    /// The tokio instant at which the wall clock reads `at` (now, if `at` is past).
    pub fn instant_at(&self, at: DateTime<Utc>) -> Instant {
        match (at - self.wall).to_std() {
            Ok(d) => self.mono + d,
            Err(_) => self.mono,
        }
    }
}

/// A probe's phase offset within its interval: a stable hash of its name, so
/// probes spread across the interval and keep their phase across restarts.
pub fn spread_offset(name: &str, interval: Duration) -> Duration {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let h = u64::from_be_bytes(first);
    let micros = u64::try_from(interval.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_micros(h % micros)
}

/// The first tick strictly after `after`.
pub fn next_tick(
    schedule: &Schedule,
    offset: Duration,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match schedule {
        Schedule::Every(interval) => {
            let step = i64::try_from(interval.as_micros()).ok()?.max(1);
            let off = i64::try_from(offset.as_micros()).ok()?;
            let t = after.timestamp_micros();
            // Ticks are at epoch + offset + k·step.
            let k = (t - off).div_euclid(step) + 1;
            DateTime::from_timestamp_micros(off + k * step)
        }
        Schedule::Cron { schedule, .. } => schedule.after(&after).next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn interval_ticks_keep_their_offset() {
        let s = Schedule::Every(Duration::from_secs(60));
        let off = Duration::from_secs(7);
        let a = next_tick(&s, off, t("2026-11-26T10:00:00Z")).unwrap();
        assert_eq!(a, t("2026-11-26T10:00:07Z"));
        let b = next_tick(&s, off, a).unwrap();
        assert_eq!(b, t("2026-11-26T10:01:07Z"));
    }

    #[test]
    fn the_spread_is_stable_and_within_the_interval() {
        let i = Duration::from_secs(60);
        assert_eq!(spread_offset("checkout", i), spread_offset("checkout", i));
        assert_ne!(spread_offset("checkout", i), spread_offset("search", i));
        assert!(spread_offset("checkout", i) < i);
    }
}
