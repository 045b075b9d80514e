//! A wider spread at the end of the window: the runs after a split
//! scattered further around their median than the earlier days' runs at
//! the same clock times, when the runs before it were not, found with the
//! end-of-window test's segments and baselines (`tail.rs`). A spread that
//! doubles with the median unchanged (a cache that now misses half the
//! time, a pool that queues) moves neither the p50 series nor the
//! location test; it moves the p95.
//!
//! Each side's runs become their distances from its own median, |ln(v /
//! median)| (Brown–Forsythe's centring, on the log scale where latency
//! scatters), and the distances are compared with Mann–Whitney as the
//! location is: today's after against each earlier day's around the same
//! clock times (the floor's p) and their pooled (p / `TAIL_STRICTER`),
//! and against today's before (the floor's p); today's before must not
//! already be more scattered than the pooled days' at the lax
//! [`TAIL_VETO_PVALUE`]. The p95 after must exceed the p95 before and the
//! days' by the floor's shift, and the median after must not differ from
//! the days' at the floor (that is a level step). Points holding failed
//! runs are left out of the distances and the p95s (the judge merges only
//! the others; see [`distances`]). Only a wider spread is reported (a
//! narrower one is good news, and is seen in the p95 series).

use super::series::{bins_of, merged};
use super::steps::Candidate;
use super::tail::{baselines, before_from, splits, Ctx, Merges, TAIL_VETO_PVALUE};
use crate::results::hist::SparseHist;
use crate::store::trends::TrendPoint;
use crate::trend::compare::{self, Bin, Confirmation, Floor, MannWhitney, Verdict};

/// The scale of a distance |ln(v / median)| as an integer bin value.
const SCALE: f64 = 1_000_000.0;

/// The widest spread at the end of `points` (one subject's total, oldest
/// first) that passes the tests of this module against `history` (day
/// k + 1 back in `history[k]`), placed at the split whose pooled test is
/// strongest; before segments start at `since` at the earliest, as the
/// location's (`tail::tail_candidate`). Its segments hold only the points
/// without failed runs, and its confirmation's `test` is the pooled test
/// (after against the days), its medians the p95 before and after.
pub fn spread_candidate(
    points: &[TrendPoint],
    history: &[Vec<TrendPoint>],
    floor: &Floor,
    since: usize,
) -> Option<Candidate> {
    let ctx = Ctx::new(points, history, floor);
    let n = points.len();
    let mut merges = (Merges::new(|_| true), Merges::new(failure_free));
    let mut best: Option<(usize, Confirmation)> = None;
    for (k, before, after) in splits(points, history, since) {
        let Some(c) = judge(&ctx, &before, &after, &mut merges) else {
            continue;
        };
        // By z, not p: a long segment's p is 0 at several k.
        if best.is_none_or(|(_, b)| c.test.z > b.test.z) {
            best = Some((k, c));
        }
    }
    let (k, c) = best?;
    let at = n - k;
    // The finding's p95 before and after are read from these points: the
    // same failure-free points the test read.
    let clean = |r: std::ops::Range<usize>| -> Vec<usize> {
        r.filter(|&i| points.get(i).is_some_and(failure_free))
            .collect()
    };
    Some(Candidate::judged(
        0,
        "p95",
        0.95,
        clean(before_from(at, since)..at),
        clean(at..n),
        c,
        at,
    ))
}

/// Whether today's `after` is more scattered than the earlier days' runs
/// around the same clock times and than today's `before` (the module's
/// tests); its confirmation (the pooled test; the p95 before and after)
/// if so. `merges` holds the after segments' runs: all of them, and those
/// of the points without failed runs.
fn judge(
    ctx: &Ctx,
    before: &[&TrendPoint],
    after: &[&TrendPoint],
    merges: &mut (Merges, Merges),
) -> Option<Confirmation> {
    let (all, clean) = merges;
    let (days_before, around) = baselines(before, after, ctx.history, ctx.step)?;
    let at = ctx.points.len().checked_sub(after.len())?;
    let pooled_before: Vec<&TrendPoint> = days_before.iter().flatten().copied().collect();
    let today_after = distances(clean.today(ctx.points, at));
    let pooled_clean = clean.pooled(ctx.history, &around);
    let pooled = compare::mann_whitney(&today_after, &distances(&pooled_clean))?;
    // The pooled test fails on nearly every pass: first.
    let wider = |mw: Option<MannWhitney>, p: f64| mw.is_some_and(|m| m.z > 0.0 && m.p_value < p);
    if !wider(Some(pooled), ctx.strict.max_pvalue) {
        return None;
    }
    // A median that moved is a level step, the location tests' (a spread
    // that widens moves a sum's median a little too: reported twice, as a
    // p50 and a p95 step, in the harness at 10 s).
    let floor = ctx.floor;
    let level_after = bins_of(all.today(ctx.points, at));
    let level_days = bins_of(&all.pooled(ctx.history, &around));
    if compare::confirm(&level_days, &level_after, floor).is_some_and(|c| c.confirmed()) {
        return None;
    }
    let clean_of = |pts: &[&TrendPoint]| merged(pts.iter().copied().filter(|p| failure_free(p)), 0);
    let before_clean = clean_of(before);
    let today_before = distances(&before_clean);
    let p = floor.max_pvalue;
    let passed = wider(compare::mann_whitney(&today_after, &today_before), p)
        && (around.iter()).all(|a| {
            let day = distances(clean.day(ctx.history, a));
            wider(compare::mann_whitney(&today_after, &day), p)
        })
        && !wider(
            compare::mann_whitney(&today_before, &distances(&clean_of(&pooled_before))),
            TAIL_VETO_PVALUE,
        );
    if !passed {
        return None;
    }
    let p95 = |h: &SparseHist| h.value_at_quantile(0.95).map(|v| v as f64);
    let (b, a, d) = (
        p95(&before_clean)?,
        p95(clean.today(ctx.points, at))?,
        p95(&pooled_clean)?,
    );
    let clears = |base: f64| a - base >= floor.min_absolute_us.max(floor.min_relative * base);
    (clears(b) && clears(d)).then(|| Confirmation {
        test: pooled,
        shift_us: a - b,
        median_before: b,
        median_after: a,
        relative_shift: if b > 0.0 { (a - b) / b } else { 0.0 },
        verdict: Verdict::Confirmed,
    })
}

/// Whether a point's runs all succeeded: the points the spread is read from.
fn failure_free(p: &TrendPoint) -> bool {
    p.failures == 0
}

/// The runs of `h` (a segment's merged totals) as their distances from
/// their own median, |ln(v / median)| × [`SCALE`]; empty when it has none.
/// The callers merge only the points without failed runs: a burst of
/// timeouts at 5 s and refusals at a few ms is not the spread of the
/// service's latency (the failure ratio has its own series), and a few
/// minutes of it made a stationary probe's p95 "rise" to 5 s in the harness.
fn distances(h: &SparseHist) -> Vec<Bin> {
    let Some(m) = h.value_at_quantile(0.5).filter(|m| *m > 0) else {
        return Vec::new();
    };
    let m = m as f64;
    let mut out: Vec<Bin> = (bins_of(h).into_iter())
        .filter(|b| b.value > 0)
        .map(|b| Bin {
            value: ((b.value as f64 / m).ln().abs() * SCALE) as u64,
            count: b.count,
        })
        .collect();
    out.sort_by_key(|b| b.value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::hist::SparseHist;

    fn point(days: i64, i: i64, width: f64, runs: u64) -> TrendPoint {
        crate::analysis::tail::test_point(days, i, 100_000.0, width, runs)
    }

    /// `len` points of a day, ×1.2 wide, `wide` from point `from` on.
    fn day(days: i64, len: i64, from: i64, wide: f64) -> Vec<TrendPoint> {
        (0..len)
            .map(|i| point(days, i, if i < from { 1.2 } else { wide }, 10))
            .collect()
    }

    fn history() -> Vec<Vec<TrendPoint>> {
        vec![day(1, 120, 120, 1.2), day(2, 120, 120, 1.2)]
    }

    #[test]
    fn a_doubled_spread_with_the_median_unchanged_is_found_where_it_began() {
        let today = day(0, 96, 84, 1.5);
        let c = spread_candidate(&today, &history(), &Floor::default(), 0)
            .expect("12 points twice as scattered are found");
        assert_eq!(c.at(), 84);
        // The same spread as the earlier days': nothing.
        let flat = day(0, 96, 96, 1.2);
        assert!(spread_candidate(&flat, &history(), &Floor::default(), 0).is_none());
    }

    #[test]
    fn a_level_step_within_reach_holds_the_spread_back() {
        use crate::analysis::steps::{candidates, StepConfig};
        let today = day(0, 96, 84, 1.5);
        let cfg = StepConfig::default();
        let spread = |stepped| {
            candidates(&today, &history(), &[("p50", 0.5)], &cfg, stepped, true)
                .iter()
                .any(|c| c.at() == 84)
        };
        assert!(spread(None));
        // A p50 step stored 3 hours back: the spread may be its doing.
        assert!(!spread(Some(today[60].time)));
        // One stored 7 hours back, beyond the spread test's reach: not.
        assert!(spread(Some(today[12].time)));
    }

    #[test]
    fn a_spread_already_wide_before_the_split_is_not_a_new_one() {
        // Wide since point 40: older than the test reaches, so no split
        // within reach has a before segment like the earlier days'.
        let today = day(0, 96, 40, 1.5);
        assert!(spread_candidate(&today, &history(), &Floor::default(), 0).is_none());
    }

    #[test]
    fn distances_are_from_the_runs_own_median() {
        let p = point(0, 0, 1.5, 10);
        let up: Vec<TrendPoint> = vec![TrendPoint {
            phases: (p.phases.iter())
                .map(|h| {
                    let mut s = SparseHist::default();
                    for (lo, hi, n) in h.bins() {
                        for _ in 0..n {
                            s.record((lo + (hi - lo) / 2) * 2);
                        }
                    }
                    s
                })
                .collect(),
            ..p.clone()
        }];
        // Twice as slow, equally scattered: the same distances (to the bins' precision).
        let (a, b) = (distances(&merged([&p], 0)), distances(&merged(&up, 0)));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x.value as f64 - y.value as f64).abs() < 0.01 * SCALE,
                "{x:?} {y:?}"
            );
        }
    }
}
