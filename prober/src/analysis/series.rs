//! From stored points to the series the trend engine reads: the resolution
//! chosen from the probe's rate, a statistic per point, the histograms of a
//! segment merged, and the words of a finding.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::results::hist::SparseHist;
use crate::run::PHASES;
use crate::store::trends::TrendPoint;
use crate::trend::compare::Bin;

/// The resolutions a step series may use, finest first.
pub const STEPS: [Duration; 5] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
];

/// Runs a point needs for its median to be worth comparing (trends.md,
/// "Quantile precision": p50 needs about 20 in a window; a point is one of
/// several on each side of a change).
pub const MIN_RUNS_PER_POINT: f64 = 5.0;

/// Runs a point needs before its p95 is analysed too (n(1 − q) ≥ 10).
pub const MIN_RUNS_FOR_P95: f64 = 200.0;

/// The finest step at which a probe running `runs_per_hour` fills a point
/// with [`MIN_RUNS_PER_POINT`]; the coarsest step for slower probes.
pub fn step_for(runs_per_hour: f64) -> Duration {
    STEPS
        .iter()
        .copied()
        .find(|s| runs_per_hour * s.as_secs_f64() / 3600.0 >= MIN_RUNS_PER_POINT)
        .unwrap_or(STEPS[STEPS.len() - 1])
}

/// A latency statistic of one phase, per point (µs), with the points' times;
/// points where the phase has no samples are left out.
pub fn quantile_series(points: &[TrendPoint], phase: usize, q: f64) -> Series {
    let mut s = Series::default();
    for (i, p) in points.iter().enumerate() {
        if let Some(v) = p.phases.get(phase).and_then(|h| h.value_at_quantile(q)) {
            s.index.push(i);
            s.times.push(p.time);
            s.values.push(v as f64);
        }
    }
    s
}

/// [`quantile_series`] over the daily cycle: each value divided by the mean
/// of the same statistic at the same clock time on the earlier days of
/// `history` (day k + 1 back in `history[k]`, sorted by time), where the
/// cycle is the same and cancels. Points without such a base are left out;
/// with no earlier day at all, the plain series.
///
/// On the plain series a short step at the end of a window competes with the
/// cycle's own slope for the best split (the split goes to the slope and
/// the step waits for more points), and a small step is placed where the
/// slope moves it; on the ratios neither happens.
pub fn seasonal_series(
    points: &[TrendPoint],
    history: &[Vec<TrendPoint>],
    phase: usize,
    q: f64,
) -> Series {
    let plain = quantile_series(points, phase, q);
    if history.iter().all(|d| d.is_empty()) {
        return plain;
    }
    let mut s = Series::default();
    for ((i, t), v) in plain.index.iter().zip(&plain.times).zip(&plain.values) {
        if let Some(base) = seasonal_base(*t, history, phase, q).filter(|b| *b > 0.0) {
            s.index.push(*i);
            s.times.push(*t);
            s.values.push(v / base);
        }
    }
    s
}

/// The mean of `phase`'s quantile `q` at the clock time of `at` on the
/// earlier days of `history` (day k + 1 back in `history[k]`, sorted by
/// time), over the days that have a sample there; `None` where none has.
pub fn seasonal_base(
    at: DateTime<Utc>,
    history: &[Vec<TrendPoint>],
    phase: usize,
    q: f64,
) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0u32);
    for (k, day) in history.iter().enumerate() {
        let then = at - chrono::TimeDelta::days(k as i64 + 1);
        let base = (day.binary_search_by_key(&then, |d| d.time).ok())
            .and_then(|j| day.get(j))
            .and_then(|d| d.phases.get(phase))
            .and_then(|h| h.value_at_quantile(q));
        if let Some(b) = base {
            sum += b as f64;
            n += 1;
        }
    }
    (n > 0).then(|| sum / f64::from(n))
}

/// A series and, for each value, the index of its point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub index: Vec<usize>,
    pub times: Vec<DateTime<Utc>>,
    pub values: Vec<f64>,
}

/// One phase's bins merged over `points`.
pub fn merged<'a>(points: impl IntoIterator<Item = &'a TrendPoint>, phase: usize) -> SparseHist {
    let mut h = SparseHist::default();
    for p in points {
        if let Some(x) = p.phases.get(phase) {
            h.merge(x);
        }
    }
    h
}

/// A histogram as the trend engine's bins: each bin's samples at its
/// midpoint, sorted.
pub fn bins_of(h: &SparseHist) -> Vec<Bin> {
    h.bins()
        .map(|(lo, hi, count)| Bin {
            value: lo + (hi - lo) / 2,
            count,
        })
        .collect()
}

/// The name of a phase id.
pub fn phase_name(phase: usize) -> &'static str {
    PHASES.get(phase).copied().unwrap_or("phase")
}

/// Microseconds as people read them: "850 µs", "48.2 ms", "1.25 s".
pub fn human_us(us: f64) -> String {
    let a = us.abs();
    if a < 1_000.0 {
        format!("{us:.0} µs")
    } else if a < 1_000_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// A signed change as people read it: "+48.2 ms".
pub fn signed_us(us: f64) -> String {
    if us >= 0.0 {
        format!("+{}", human_us(us))
    } else {
        format!("-{}", human_us(-us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_fills_a_point_with_enough_runs() {
        assert_eq!(step_for(3600.0), Duration::from_secs(300), "1/s");
        assert_eq!(step_for(360.0), Duration::from_secs(300), "every 10 s");
        assert_eq!(
            step_for(60.0),
            Duration::from_secs(300),
            "every minute: 5 runs"
        );
        assert_eq!(step_for(30.0), Duration::from_secs(600), "every 2 minutes");
        assert_eq!(step_for(12.0), Duration::from_secs(1800), "every 5 minutes");
        assert_eq!(step_for(1.0), Duration::from_secs(3600), "hourly: coarsest");
        assert_eq!(step_for(0.0), Duration::from_secs(3600));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_us(850.0), "850 µs");
        assert_eq!(human_us(48_200.0), "48.2 ms");
        assert_eq!(human_us(1_250_000.0), "1.25 s");
        assert_eq!(signed_us(48_200.0), "+48.2 ms");
        assert_eq!(signed_us(-2_000.0), "-2.0 ms");
    }

    #[test]
    fn a_series_skips_points_without_the_phase() {
        let t0: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let point = |i: i64, us: Option<u64>| {
            let mut phases = vec![SparseHist::default(); PHASES.len()];
            if let Some(us) = us {
                phases[3].record(us);
            }
            TrendPoint {
                time: t0 + chrono::TimeDelta::minutes(5 * i),
                runs: 1,
                failures: 0,
                phases,
            }
        };
        let points = [point(0, Some(1_000)), point(1, None), point(2, Some(2_000))];
        let s = quantile_series(&points, 3, 0.5);
        assert_eq!(s.index, vec![0, 2]);
        assert_eq!(s.values.len(), 2);
        assert!(s.values[1] > s.values[0]);
        assert_eq!(merged(&points, 3).total(), 2);
        assert!(quantile_series(&points, 1, 0.5).values.is_empty());
    }
    fn point(time: DateTime<Utc>, total_us: u64) -> TrendPoint {
        let mut phases = vec![SparseHist::default(); PHASES.len()];
        phases[0].record(total_us);
        TrendPoint {
            time,
            runs: 1,
            failures: 0,
            phases,
        }
    }

    #[test]
    fn a_seasonal_series_is_each_value_over_the_earlier_days_mean_at_that_time() {
        let t = |d: i64, m: i64| {
            "2026-11-29T12:00:00Z".parse::<DateTime<Utc>>().unwrap() - chrono::TimeDelta::days(d)
                + chrono::TimeDelta::minutes(m)
        };
        let today = vec![
            point(t(0, 0), 120_000),
            point(t(0, 5), 150_000),
            point(t(0, 10), 90_000),
        ];
        // Yesterday has both times; the day before only the first; no
        // earlier day has the third, which is left out.
        let history = vec![
            vec![point(t(1, 0), 100_000), point(t(1, 5), 100_000)],
            vec![point(t(2, 0), 140_000)],
        ];
        let s = seasonal_series(&today, &history, 0, 0.5);
        assert_eq!(s.index, vec![0, 1]);
        assert_eq!(s.times, vec![t(0, 0), t(0, 5)]);
        // Bins are exact to 1 part in 1,000 (HdrHistogram's 3 digits).
        let want = [120_000.0 / 120_000.0, 150_000.0 / 100_000.0];
        for (got, want) in s.values.iter().zip(want) {
            assert!((got - want).abs() < 2e-3, "{got} vs {want}");
        }
        // No earlier day: the plain series.
        assert_eq!(
            seasonal_series(&today, &[], 0, 0.5),
            quantile_series(&today, 0, 0.5)
        );
    }
}
