//! Steps in one probe's failure ratio: change points of failures / runs per
//! point, confirmed by a two-proportion test on the runs of each side, and
//! reported only when the ratio moved by at least a percentage point.

use crate::store::trends::{NewFinding, Subject, TrendPoint};
use crate::trend::changepoint;
use crate::trend::pvalue::normal_two_sided;

/// The smallest change of the failure ratio reported: one run in a hundred.
pub const MIN_FAILURE_CHANGE: f64 = 0.01;

/// Points of the side that moved left out before the change is tested again:
/// a burst of failures (an outage of a few minutes, the `failing` rule's
/// business) fills at most two points of 5 minutes, and is not a step.
pub const BURST_POINTS: usize = 2;

/// A proportion test on each side's runs and failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proportions {
    pub before: f64,
    pub after: f64,
    pub p_value: f64,
}

/// Two-proportion z-test (pooled variance): whether `failures / runs`
/// differs between the two sides. `None` with no runs on a side.
pub fn two_proportions(before: (i64, i64), after: (i64, i64)) -> Option<Proportions> {
    let ((fb, nb), (fa, na)) = (before, after);
    if nb <= 0 || na <= 0 {
        return None;
    }
    let (nb, na) = (nb as f64, na as f64);
    let (pb, pa) = (fb as f64 / nb, fa as f64 / na);
    let pooled = (fb + fa) as f64 / (nb + na);
    let se = (pooled * (1.0 - pooled) * (1.0 / nb + 1.0 / na)).sqrt();
    let p_value = if se > 0.0 {
        normal_two_sided((pa - pb) / se)
    } else {
        1.0
    };
    Some(Proportions {
        before: pb,
        after: pa,
        p_value,
    })
}

/// The confirmed steps of the failure ratio in `points` (oldest first).
pub fn failure_steps(
    subject: &Subject,
    points: &[TrendPoint],
    cfg: &changepoint::Config,
    max_pvalue: f64,
    min_points_after: usize,
) -> Vec<NewFinding> {
    let ratios: Vec<f64> = points
        .iter()
        .map(|p| p.failures as f64 / p.runs.max(1) as f64)
        .collect();
    let Ok(found) = changepoint::detect(&ratios, cfg) else {
        return Vec::new();
    };
    let sum = |pts: &[TrendPoint]| {
        pts.iter().fold((0i64, 0i64), |(f, n), p| {
            (f.saturating_add(p.failures), n.saturating_add(p.runs))
        })
    };
    let mut out = Vec::new();
    for cp in found {
        let before = &points[cp.before.start..cp.before.end.min(points.len())];
        let after = &points[cp.after.start.min(points.len())..cp.after.end.min(points.len())];
        if after.len() < min_points_after {
            continue;
        }
        let Some(t) = two_proportions(sum(before), sum(after)) else {
            continue;
        };
        let holds = |t: &Proportions| {
            t.p_value < max_pvalue && (t.after - t.before).abs() >= MIN_FAILURE_CHANGE
        };
        if !holds(&t) {
            continue;
        }
        // The same change without the side's worst points: a burst is not a step.
        let without_burst = if t.after > t.before {
            two_proportions(sum(before), without_worst(after, BURST_POINTS))
        } else {
            two_proportions(without_worst(before, BURST_POINTS), sum(after))
        };
        if !without_burst.is_some_and(|w| holds(&w) && (w.after > w.before) == (t.after > t.before))
        {
            continue;
        }
        let at = after[0].time;
        let summary = format!(
            "{} ({}): failures {:.1} % → {:.1} % of runs since {}",
            subject.probe,
            subject.location,
            100.0 * t.before,
            100.0 * t.after,
            at.format("%Y-%m-%d %H:%M UTC"),
        );
        out.push(NewFinding {
            probe_id: subject.probe_id,
            location_id: subject.location_id,
            phase: 0,
            statistic: "failure_ratio".into(),
            kind: "step",
            change_at: at,
            window_end: points.last().map_or(at, |p| p.time),
            before: t.before,
            after: t.after,
            p_value: t.p_value,
            effect_size: None,
            summary,
            crosses: None,
        });
    }
    out
}

/// Failures and runs of `points` without the `k` with the highest failure ratio.
fn without_worst(points: &[TrendPoint], k: usize) -> (i64, i64) {
    let mut sides: Vec<(i64, i64)> = points.iter().map(|p| (p.failures, p.runs)).collect();
    // Highest ratio first: f1 / n1 > f2 / n2 without dividing.
    // In i128: counts read from Postgres cannot overflow the products.
    sides.sort_by(|a, b| {
        (i128::from(b.0) * i128::from(a.1.max(1))).cmp(&(i128::from(a.0) * i128::from(b.1.max(1))))
    });
    sides
        .iter()
        .skip(k)
        .fold((0i64, 0i64), |(f, n), &(pf, pn)| {
            (f.saturating_add(pf), n.saturating_add(pn))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::hist::SparseHist;

    #[test]
    fn the_worst_points_are_the_highest_ratios() {
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let p = |failures, runs| TrendPoint {
            time: at,
            runs,
            failures,
            phases: vec![SparseHist::default()],
        };
        let points = [p(0, 5), p(4, 5), p(1, 10), p(3, 4), p(0, 5)];
        assert_eq!(without_worst(&points, 2), (1, 20));
        assert_eq!(without_worst(&points, 0), (8, 29));
        assert_eq!(without_worst(&points, 9), (0, 0));
    }

    #[test]
    fn two_proportions_match_a_hand_computed_z() {
        // 10 of 1,000 before, 40 of 1,000 after: pooled 0.025,
        // se = sqrt(0.025 · 0.975 · 0.002) = 0.006982, z = 0.03 / 0.006982 = 4.297.
        let t = two_proportions((10, 1_000), (40, 1_000)).unwrap();
        assert_eq!((t.before, t.after), (0.01, 0.04));
        assert!((t.p_value - normal_two_sided(4.2967)).abs() < 1e-6, "{t:?}");
        assert!(t.p_value < 1e-4);
        let same = two_proportions((10, 1_000), (10, 1_000)).unwrap();
        assert!((same.p_value - 1.0).abs() < 1e-12);
        assert!(two_proportions((0, 0), (1, 10)).is_none());
        assert_eq!(two_proportions((0, 100), (0, 100)).unwrap().p_value, 1.0);
    }
}
