//! When and over which points a pass analyses a probe: its step window
//! (the resolution from its rate, the points closed by now) and the share
//! of the hour at which its drifts are analysed.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::series::{step_for, MIN_RUNS_FOR_P95};
use super::{CLOSE_AFTER, POINTS, RATE_WINDOW};
use crate::store::trends::Subject;

/// The window of a probe's step series as of a pass.
pub(super) struct StepWindow {
    pub(super) step: Duration,
    pub(super) step_delta: TimeDelta,
    pub(super) from: DateTime<Utc>,
    pub(super) to: DateTime<Utc>,
    /// The statistics its points hold enough runs for.
    pub(super) stats: Vec<(&'static str, f64)>,
}

impl StepWindow {
    /// The window of `s` at `now`, its runs counted by
    /// [`Store::trend_subjects`](crate::store::Store::trend_subjects) at
    /// `counted` (the rate is over the window they were counted in).
    pub(super) fn of(s: &Subject, counted: DateTime<Utc>, now: DateTime<Utc>) -> StepWindow {
        // The rate window starts at the hour before `counted - 2h`: up to 3 hours.
        let from_hour = (counted - RATE_WINDOW)
            .duration_trunc(TimeDelta::hours(1))
            .unwrap_or(counted - RATE_WINDOW);
        let hours = ((counted - from_hour).num_seconds() as f64 / 3600.0).max(1.0);
        let rate = s.runs as f64 / hours;
        let step = step_for(rate);
        let step_delta = TimeDelta::from_std(step).unwrap_or(TimeDelta::hours(1));
        let to = (now - CLOSE_AFTER)
            .duration_trunc(step_delta)
            .unwrap_or(now - CLOSE_AFTER);
        let mut stats = vec![("p50", 0.5)];
        if rate * step.as_secs_f64() / 3600.0 >= MIN_RUNS_FOR_P95 {
            stats.push(("p95", 0.95));
        }
        StepWindow {
            step,
            step_delta,
            from: to - step_delta * POINTS,
            to,
            stats,
        }
    }
}

/// Whether a probe's drifts are to be analysed at `now`, its last analysis
/// having been for the closed hour `last`: once for each closed hour, at the
/// pass of its share of the hour (the hour cut into as many shares as it
/// has passes `every` apart, the share taken from the probe's id), so the
/// week of hourly points is not read for every probe on one pass; at once
/// when it has none yet or missed a whole hour (passes slower than shares).
pub(super) fn drift_due(
    last: Option<&DateTime<Utc>>,
    probe_id: i32,
    now: DateTime<Utc>,
    every: Duration,
) -> bool {
    let to_hour = closed_hour(now);
    let Some(last) = last else {
        return true;
    };
    if *last >= to_hour {
        return false;
    }
    if *last < to_hour - TimeDelta::hours(1) {
        return true;
    }
    let every = TimeDelta::from_std(every)
        .unwrap_or(TimeDelta::hours(1))
        .max(TimeDelta::minutes(1));
    let shares = (TimeDelta::hours(1).num_seconds() / every.num_seconds()).max(1);
    let share = i64::from(probe_id).rem_euclid(shares);
    (now - CLOSE_AFTER) - to_hour >= every * i32::try_from(share).unwrap_or(0)
}

/// The end of the last hour whose points are closed at `now`.
pub(super) fn closed_hour(now: DateTime<Utc>) -> DateTime<Utc> {
    (now - CLOSE_AFTER)
        .duration_trunc(TimeDelta::hours(1))
        .unwrap_or(now)
}

/// When the pass after `now` is due, for passes `every` apart: at
/// [`CLOSE_AFTER`] (modulo `every`) past a multiple of `every` since the
/// epoch, when the points that ended at that multiple have just closed
/// (with the default 5 minutes, every point: points are 5 minutes to an
/// hour). Passes at another phase read a closed point up to a pass later:
/// 0–5 minutes of every finding's delay at the default 5 for a daemon's
/// passes from its start time, 3 for passes on the 5-minute marks.
pub fn next_pass(now: DateTime<Utc>, every: Duration) -> DateTime<Utc> {
    let every = TimeDelta::from_std(every)
        .unwrap_or(TimeDelta::minutes(5))
        .max(TimeDelta::seconds(1));
    let (e, phase) = (
        every.num_seconds(),
        CLOSE_AFTER.num_seconds().rem_euclid(every.num_seconds()),
    );
    let since = now.timestamp() - phase;
    let next = (since.div_euclid(e) + 1) * e + phase;
    DateTime::from_timestamp(next, 0).unwrap_or(now + every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_over_the_window_its_runs_were_counted_in() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // 120 runs counted at 16:00 over 14:00-16:00: one a minute, so a
        // 5-minute point holds 5.
        let s = Subject {
            probe_id: 1,
            probe: "p".into(),
            location_id: 1,
            location: "l".into(),
            runs: 120,
        };
        let counted = t("2026-12-01T16:00:00Z");
        let later = t("2026-12-01T16:25:00Z");
        let five = TimeDelta::minutes(5);
        assert_eq!(StepWindow::of(&s, counted, counted).step_delta, five);
        assert_eq!(
            StepWindow::of(&s, counted, later).step_delta,
            five,
            "the same step while the count is kept"
        );
        // Over the 2 h 25 min window of 16:25 the same count is a slower rate.
        assert_eq!(
            StepWindow::of(&s, later, later).step_delta,
            TimeDelta::minutes(10)
        );
    }

    #[test]
    fn passes_fall_as_points_close() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let (one, five, ten) = (60, 300, 600);
        for (now, every, due) in [
            ("2026-12-01T10:00:00Z", five, "2026-12-01T10:02:00Z"),
            ("2026-12-01T10:01:59.5Z", five, "2026-12-01T10:02:00Z"),
            ("2026-12-01T10:02:00Z", five, "2026-12-01T10:07:00Z"),
            ("2026-12-01T10:06:00Z", five, "2026-12-01T10:07:00Z"),
            // A period that divides the close delay: passes on its multiples.
            ("2026-12-01T10:00:10Z", one, "2026-12-01T10:01:00Z"),
            // Ten minutes: 2 minutes past each multiple of ten.
            ("2026-12-01T10:03:00Z", ten, "2026-12-01T10:12:00Z"),
        ] {
            let got = next_pass(t(now), Duration::from_secs(every));
            assert_eq!(got, t(due), "after {now}, every {every} s");
        }
    }

    #[test]
    fn drifts_are_analysed_once_an_hour_at_the_probe_s_share_of_it() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let every = Duration::from_secs(300);
        let hour = t("2026-12-01T10:00:00Z");
        let before = hour - TimeDelta::hours(1);
        // Never analysed: at once.
        assert!(drift_due(None, 7, t("2026-12-01T10:03:00Z"), every));
        // Done for this hour: not again.
        assert!(!drift_due(Some(&hour), 7, t("2026-12-01T10:50:00Z"), every));
        // Probe 7's share is 35 minutes into the hour (after the 2-minute close).
        assert!(!drift_due(
            Some(&before),
            7,
            t("2026-12-01T10:36:00Z"),
            every
        ));
        assert!(drift_due(
            Some(&before),
            7,
            t("2026-12-01T10:37:00Z"),
            every
        ));
        // Probe 12's share is the first.
        assert!(drift_due(
            Some(&before),
            12,
            t("2026-12-01T10:02:00Z"),
            every
        ));
        // An hour missed (passes slower than shares): at once.
        let two_back = hour - TimeDelta::hours(2);
        assert!(drift_due(
            Some(&two_back),
            11,
            t("2026-12-01T10:02:00Z"),
            every
        ));
        // Passes an hour apart: one share, the first pass.
        let hourly = Duration::from_secs(3600);
        assert!(drift_due(
            Some(&before),
            11,
            t("2026-12-01T10:02:00Z"),
            hourly
        ));
    }
}
