//! Slow drifts in one probe's hourly medians: Mann–Kendall with a Theil–Sen
//! slope over the last days, the daily cycle taken out (the engine compares
//! like hours), reported when the change over the window clears the floor.

use chrono::TimeDelta;

use super::series::{human_us, phase_name, quantile_series};
use crate::run::PHASES;
use crate::store::trends::{NewFinding, Subject, TrendPoint};
use crate::trend::changepoint;
use crate::trend::drift::{self, format_per_day, Point};

/// The window a drift is measured over.
pub const DRIFT_WINDOW: TimeDelta = TimeDelta::days(7);

/// Hourly points a drift needs: three days, so a daily cycle is seen three times.
pub const MIN_DRIFT_POINTS: usize = 72;

/// Smallest change over the window worth reporting, in µs (the step floor's 1 ms).
pub const MIN_DRIFT_CHANGE_US: f64 = 1_000.0;

/// The drifts of every phase's median in `hourly` (one subject, oldest first).
/// A series with a change point is a step, not a drift (Mann–Kendall calls
/// a step a trend): those phases are left to the step analysis.
pub fn drifts(
    subject: &Subject,
    hourly: &[TrendPoint],
    cfg: &drift::Config,
    steps: &changepoint::Config,
) -> Vec<NewFinding> {
    let mut out = Vec::new();
    for phase in 0..PHASES.len() {
        let series = quantile_series(hourly, phase, 0.5);
        if series.values.len() < MIN_DRIFT_POINTS {
            continue;
        }
        if changepoint::detect(&series.values, steps).is_ok_and(|cps| !cps.is_empty()) {
            continue;
        }
        let points: Vec<Point> = series
            .times
            .iter()
            .zip(&series.values)
            .map(|(t, v)| Point {
                at: t.timestamp() as f64,
                value: *v,
            })
            .collect();
        let Ok(Some(d)) = drift::detect(&points, cfg) else {
            continue;
        };
        let (Some(first), Some(last)) = (series.times.first(), series.times.last()) else {
            continue;
        };
        let span = (*last - *first).num_seconds() as f64;
        let change = d.slope_per_second * span;
        if change.abs() < MIN_DRIFT_CHANGE_US {
            continue;
        }
        let before = d.median - change / 2.0;
        let after = d.median + change / 2.0;
        let summary = format!(
            "{} ({}): {} p50 {} over {:.1} days ({} → {}, {:+.1} %/day)",
            subject.probe,
            subject.location,
            phase_name(phase),
            format_per_day(d.slope_per_second),
            span / 86_400.0,
            human_us(before),
            human_us(after),
            100.0 * d.relative_per_day,
        );
        out.push(NewFinding {
            probe_id: subject.probe_id,
            location_id: subject.location_id,
            phase: i16::try_from(phase).unwrap_or(0),
            statistic: "p50",
            kind: "drift",
            change_at: *first,
            window_end: *last,
            before,
            after,
            p_value: d.test.p_value,
            effect_size: None,
            summary,
        });
    }
    out
}
