//! Slow drifts in one probe's hourly medians: Mann–Kendall with a Theil–Sen
//! slope over the last days, the daily cycle taken out (the engine compares
//! like hours), reported when the change over the window clears the floor.
//! For a probe with a `latency` alert, the drift of its total latency at the
//! rule's quantile is forecast: when it would cross the threshold.

use chrono::{DateTime, TimeDelta, Utc};

use super::hourly::Hourly;
use super::series::{human_us, phase_name};
use crate::config::policy::LatencyRule;
use crate::run::PHASES;
use crate::store::trends::{NewFinding, Subject};
use crate::trend::changepoint;
use crate::trend::drift::{self, crossing_after, format_ahead, format_per_day, line_at, Point};

/// The window a drift is measured over.
pub const DRIFT_WINDOW: TimeDelta = TimeDelta::days(7);

/// Hourly points a drift needs: three days, so a daily cycle is seen three times.
pub const MIN_DRIFT_POINTS: usize = 72;

/// Smallest change over the window worth reporting, in µs (the step floor's 1 ms).
pub const MIN_DRIFT_CHANGE_US: f64 = 1_000.0;

/// How far ahead a forecast looks: a week's slope says little beyond a season.
pub const FORECAST_HORIZON: TimeDelta = TimeDelta::days(90);

/// The drifts of every phase's median in `hourly` (one subject, oldest first).
/// A series with a change point left once its trend line is taken out is a
/// step, not a drift (Mann–Kendall calls a step a trend): those phases are
/// left to the step analysis. A phase drifting the way the total does is
/// named in the total's finding, not reported on its own: one finding per
/// change.
pub fn drifts(
    subject: &Subject,
    hourly: &Hourly,
    cfg: &drift::Config,
    steps: &changepoint::Config,
) -> Vec<NewFinding> {
    let mut out = Vec::new();
    for phase in 0..PHASES.len() {
        let points = hourly.medians(phase);
        if points.len() < MIN_DRIFT_POINTS {
            continue;
        }
        if has_step(&points, steps) {
            continue;
        }
        let Ok(Some(d)) = drift::detect(&points, cfg) else {
            continue;
        };
        let Some((first, last)) = ends(&points) else {
            continue;
        };
        let span = (last - first).num_seconds() as f64;
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
        let finding = NewFinding {
            probe_id: subject.probe_id,
            location_id: subject.location_id,
            phase: i16::try_from(phase).unwrap_or(0),
            statistic: "p50".into(),
            kind: "drift",
            change_at: first,
            window_end: last,
            before,
            after,
            p_value: d.test.p_value,
            effect_size: None,
            summary,
            crosses: None,
        };
        out.push((finding, d.slope_per_second));
    }
    fold_into_total(out)
}

/// The phases drifting the same way as the total, named in its finding
/// ("; with it: first_byte rising 1.2 ms/day") and dropped; every finding
/// when the total does not drift.
fn fold_into_total(found: Vec<(NewFinding, f64)>) -> Vec<NewFinding> {
    let Some(total_slope) = found.iter().find(|(f, _)| f.phase == 0).map(|(_, s)| *s) else {
        return found.into_iter().map(|(f, _)| f).collect();
    };
    let (with_total, rest): (Vec<_>, Vec<_>) = found
        .into_iter()
        .partition(|(f, s)| f.phase != 0 && s.signum() == total_slope.signum());
    let named: Vec<String> = with_total
        .iter()
        .map(|(f, s)| {
            format!(
                "{} {}",
                phase_name(usize::try_from(f.phase).unwrap_or(0)),
                format_per_day(*s)
            )
        })
        .collect();
    rest.into_iter()
        .map(|(mut f, _)| {
            if f.phase == 0 && !named.is_empty() {
                f.summary.push_str("; with it: ");
                f.summary.push_str(&named.join(", "));
            }
            f
        })
        .collect()
}

/// The forecast of a probe with a `latency` alert: when the total latency's
/// quantile of the rule (hourly, over the week) drifts up and its Theil–Sen
/// line, read at the last hour, reaches `rule.above` within
/// [`FORECAST_HORIZON`], a drift finding of that quantile saying when
/// ("crosses 800 ms in about 12 days"). None otherwise, nor when the line is
/// already above (the latency alert itself speaks then) or the series has a
/// step (a step is not a trend to extrapolate).
/// `hourly` must keep the total at the rule's quantile
/// ([`Hourly::quantile`]); None when it keeps another.
pub fn forecast(
    subject: &Subject,
    hourly: &Hourly,
    rule: &LatencyRule,
    cfg: &drift::Config,
    steps: &changepoint::Config,
) -> Option<NewFinding> {
    if hourly.quantile() != Some(rule.quantile) {
        return None;
    }
    let points = hourly.at_quantile();
    if points.len() < MIN_DRIFT_POINTS || has_step(&points, steps) {
        return None;
    }
    let d = drift::detect(&points, cfg).ok()??;
    let (first, last) = ends(&points)?;
    let now_level = line_at(&points, d.slope_per_second, last.timestamp() as f64)?;
    let threshold = rule.above.as_secs_f64() * 1e6;
    let horizon = FORECAST_HORIZON.num_seconds() as f64;
    let secs = crossing_after(now_level, d.slope_per_second, threshold, horizon)?;
    let crosses_at = last + TimeDelta::seconds(secs as i64);
    let start_level = line_at(&points, d.slope_per_second, first.timestamp() as f64)?;
    let statistic = quantile_name(rule.quantile);
    let summary = format!(
        "{} ({}): total {statistic} {} over {:.1} days ({} → {}); crosses the latency alert's {} {} ({})",
        subject.probe,
        subject.location,
        format_per_day(d.slope_per_second),
        (last - first).num_seconds() as f64 / 86_400.0,
        human_us(start_level),
        human_us(now_level),
        human_us(threshold),
        format_ahead(secs),
        crosses_at.format("%Y-%m-%d"),
    );
    Some(NewFinding {
        probe_id: subject.probe_id,
        location_id: subject.location_id,
        phase: 0,
        statistic: statistic.into(),
        kind: "drift",
        change_at: first,
        window_end: last,
        before: start_level,
        after: now_level,
        p_value: d.test.p_value,
        effect_size: None,
        summary,
        crosses: Some((crosses_at, threshold)),
    })
}

/// A quantile as the findings name it: 0.95 → `p95`, 0.999 → `p99.9`.
pub fn quantile_name(q: f64) -> String {
    let pct = format!("{:.3}", q * 100.0);
    let pct = pct.trim_end_matches('0').trim_end_matches('.');
    format!("p{pct}")
}

/// Whether a change point remains once the series' Theil–Sen line is taken
/// out: a step, left to the step analysis. A steady drift with little noise
/// is cut into pieces by the change-point test; with its line taken out
/// nothing is left, and it stays a drift.
fn has_step(points: &[Point], steps: &changepoint::Config) -> bool {
    let slope = drift::theil_sen(points).ok().flatten().unwrap_or(0.0);
    let t0 = points.first().map_or(0.0, |p| p.at);
    let residuals: Vec<f64> = (points.iter())
        .map(|p| p.value - slope * (p.at - t0))
        .collect();
    changepoint::detect(&residuals, steps).is_ok_and(|cps| !cps.is_empty())
}

/// The times of the first and last of `points`.
fn ends(points: &[Point]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let time = |p: &Point| DateTime::from_timestamp(p.at as i64, 0);
    Some((time(points.first()?)?, time(points.last()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trend reads take hour rows from `hist_hour` directly: every
    /// window they read (the drift week, the same hours of the earlier
    /// days, the day being analysed) ends before the packed days begin.
    /// And 30-day reads (panels, fleet reads, burn rates), which would
    /// find packed days, open none.
    #[test]
    fn no_trend_read_reaches_a_packed_day_of_hours() {
        let pack_after = crate::store::rollup::HOURS_PACK_AFTER;
        let longest = DRIFT_WINDOW + TimeDelta::days(crate::analysis::SEASON_DAYS + 1);
        assert!(pack_after > longest);
        assert!(pack_after > TimeDelta::days(31));
    }

    fn drift(phase: i16, slope: f64) -> (NewFinding, f64) {
        let at = "2026-11-29T00:00:00Z".parse().unwrap();
        let f = NewFinding {
            probe_id: 1,
            location_id: 1,
            phase,
            statistic: "p50".into(),
            kind: "drift",
            change_at: at,
            window_end: at,
            before: 1.0,
            after: 2.0,
            p_value: 0.0,
            effect_size: None,
            summary: format!("phase {phase}"),
            crosses: None,
        };
        (f, slope)
    }

    #[test]
    fn a_phase_drifting_with_the_total_is_named_in_its_finding() {
        let per_day = |ms: f64| ms * 1e3 / 86_400.0;
        let found = fold_into_total(vec![
            drift(0, per_day(3.0)),
            drift(4, per_day(2.0)),
            drift(3, per_day(-0.5)),
        ]);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].phase, 0);
        assert!(
            found[0]
                .summary
                .ends_with("; with it: first_byte rising 2.0 ms/day"),
            "{}",
            found[0].summary
        );
        // Falling while the total rises: its own finding.
        assert_eq!(found[1].phase, 3);
        // Without a total drift every phase's drift is its own finding.
        let alone = fold_into_total(vec![drift(4, 1.0), drift(2, 1.0)]);
        assert_eq!(alone.len(), 2);
    }

    #[test]
    fn quantiles_are_named_as_people_write_them() {
        assert_eq!(quantile_name(0.5), "p50");
        assert_eq!(quantile_name(0.95), "p95");
        assert_eq!(quantile_name(0.99), "p99");
        assert_eq!(quantile_name(0.9), "p90");
        assert_eq!(quantile_name(0.999), "p99.9");
    }
}
