//! Steps at the end of the window, found as soon as the runs after them can
//! tell, not when the change-point test has [`changepoint::Config`]'s
//! `min_segment` points on each side (five 5-minute points: a step waited
//! 30–45 minutes at one run a minute, most of it for points, not evidence).
//!
//! The question asked at each pass is: do the last k points' runs differ
//! from the same clock times on the earlier days, beyond chance, when the
//! runs before them did not? For each k of [`TAIL_MIN_POINTS`] to
//! [`TAIL_MAX_POINTS`]:
//! - today's last k points (after) against the up to [`TAIL_BEFORE_POINTS`]
//!   before them (`compare::confirm` at the floor);
//! - after against each earlier day's runs at the same clock times widened
//!   by [`TAIL_WIDEN_MINUTES`] on each side (the floor), and against those
//!   days pooled at the floor's p / [`TAIL_STRICTER`]: a baseline several
//!   times the size of the after segment, so the evidence is in today's
//!   runs, and the cycle's slope over half an hour either side is a few
//!   percent that cancels for the most part;
//! - today's before must not already differ from any earlier day's, nor
//!   from their pooled, at the same times, at a lax test
//!   ([`TAIL_VETO_PVALUE`], half the floor's shift: the change is then
//!   older, the change-point test's to place).
//!
//! A step is found when some k passes them all; it is placed at the k whose
//! runs differ most from the earlier days' (the smallest pooled p, the same
//! way), if today's runs on either side of it differ that way at the floor,
//! else at the strongest passing k. The search over k and the passes are
//! why the pooled test is stricter than the floor; the harness's 1,000
//! stationary probe-days measure what it costs (BENCHMARKS.md, Trends).

use std::ops::Range;

use chrono::TimeDelta;

use super::series::{bins_of, merged};
use super::steps::{pick, point_step, Candidate, MIN_BASELINES};
use crate::results::hist::SparseHist;
use crate::store::trends::TrendPoint;
use crate::trend::compare::{self, Floor, MannWhitney};

/// The fewest points after a split the end-of-window test reads (15 minutes
/// at the finest step).
pub const TAIL_MIN_POINTS: usize = 3;

/// The most points after a split it reads (2 hours at the finest step):
/// older changes are the change-point test's.
pub const TAIL_MAX_POINTS: usize = 24;

/// Today's points before a split it compares with (2 hours at the finest
/// step); at least [`TAIL_MIN_BEFORE`].
pub const TAIL_BEFORE_POINTS: usize = 24;

/// The fewest points before a split.
pub const TAIL_MIN_BEFORE: usize = 12;

/// Minutes each earlier day's baseline is widened by on each side of the
/// after segment's clock times: the daily cycle's slope over half an hour
/// is a few percent, and cancels for the most part on the two sides (the
/// earlier days are read 2 hours past the window). In time, not points:
/// a probe at 30- or 60-minute points would take hours of the cycle.
pub const TAIL_WIDEN_MINUTES: i64 = 30;

/// How much smaller than the floor's p the pooled test's must be.
pub const TAIL_STRICTER: f64 = 100.0;

/// Today's before segment differing from an earlier day's (or the pooled
/// days') the way of the step at this p, by half the floor's shift or
/// more, vetoes it.
pub const TAIL_VETO_PVALUE: f64 = 0.05;

/// The step at the end of `points` (one subject's total, oldest first), if
/// one passes the tests of this module against `history` (day k + 1 back in
/// `history[k]`, sorted by time). Today's before segments start at `since`
/// at the earliest: the total's latest change point older than this test
/// reaches, whose step would otherwise be in them, read as the level before
/// a second one (the same change found again 70–95 minutes later on the
/// harness's fleet-like mix).
pub fn tail_candidate(
    points: &[TrendPoint],
    history: &[Vec<TrendPoint>],
    floor: &Floor,
    since: usize,
) -> Option<Candidate> {
    let ctx = Ctx::new(points, history, floor);
    let n = points.len();
    let mut merges = Merges::new(|_| true);
    // Every k's pooled test (for the place), and the strongest k that
    // passes every test (for the decision and the direction).
    let mut pooled: Vec<(usize, MannWhitney)> = Vec::new();
    let mut passed: Option<(usize, MannWhitney)> = None;
    for (k, before, after) in splits(points, history, since) {
        let Some(j) = judge(&ctx, &before, &after, &mut merges) else {
            continue;
        };
        pooled.push((k, j.pooled));
        if j.passed && passed.is_none_or(|(_, p)| j.pooled.p_value < p.p_value) {
            passed = Some((k, j.pooled));
        }
    }
    // The place: the k whose runs differ most from the earlier days' the
    // way the change went, whether or not all its own tests pass (the
    // strongest passing k is often a chance high at the very end, with the
    // change half an hour before it, whose longer segment misses the
    // floor's p against one day), as long as today's runs on either side
    // of it differ that way at the floor; else the strongest passing k.
    let (strongest, mw) = passed?;
    let rising = mw.z > 0.0;
    let place = (pooled.iter())
        .filter(|(_, mw)| (mw.z > 0.0) == rising)
        .min_by(|a, b| a.1.p_value.total_cmp(&b.1.p_value))
        .map_or(strongest, |(k, _)| *k);
    [place, strongest].into_iter().find_map(|k| {
        let at = n - k;
        let before: Vec<usize> = (before_from(at, since)..at).collect();
        let after: Vec<usize> = (at..n).collect();
        let c = compare::confirm(
            &bins_of(&merged(pick(points, &before), 0)),
            &bins_of(&merged(pick(points, &after), 0)),
            floor,
        )?;
        (c.confirmed() && (c.shift_us > 0.0) == rising)
            .then(|| Candidate::judged(0, "p50", 0.5, before, after, c, at))
    })
}

/// The splits the end-of-window tests read: for each k of
/// [`TAIL_MIN_POINTS`] to [`TAIL_MAX_POINTS`] with at least
/// [`TAIL_MIN_BEFORE`] points before it (from `since` on), k and today's
/// points before and after it. Empty when the points have no step between
/// them or `history` holds fewer than [`MIN_BASELINES`] days.
pub(super) fn splits<'a>(
    points: &'a [TrendPoint],
    history: &[Vec<TrendPoint>],
    since: usize,
) -> Vec<(usize, Vec<&'a TrendPoint>, Vec<&'a TrendPoint>)> {
    if point_step(points) <= TimeDelta::zero() || history.len() < MIN_BASELINES {
        return Vec::new();
    }
    let n = points.len();
    let most = TAIL_MAX_POINTS.min(n.saturating_sub(TAIL_MIN_BEFORE));
    (TAIL_MIN_POINTS..=most)
        .filter_map(|k| {
            let at = n - k;
            let from = before_from(at, since);
            (at.saturating_sub(from) >= TAIL_MIN_BEFORE).then(|| {
                let before = pick(points, &(from..at).collect::<Vec<_>>());
                (k, before, pick(points, &(at..n).collect::<Vec<_>>()))
            })
        })
        .collect()
}

/// The floor of the pooled test: the floor's p / [`TAIL_STRICTER`].
pub(super) fn stricter(floor: &Floor) -> Floor {
    Floor {
        max_pvalue: floor.max_pvalue / TAIL_STRICTER,
        ..floor.clone()
    }
}

/// The first point of today's before segment of a split at `at`: up to
/// [`TAIL_BEFORE_POINTS`] back, not before `since`.
pub(super) fn before_from(at: usize, since: usize) -> usize {
    at.saturating_sub(TAIL_BEFORE_POINTS).max(since)
}

/// What [`judge`] found of one split.
struct Judged {
    /// Today's after against the earlier days' pooled runs around the same
    /// clock times.
    pooled: MannWhitney,
    /// Whether every test passed.
    passed: bool,
}

/// What the judges of a split read besides its segments.
pub(super) struct Ctx<'a> {
    /// Today's points (one subject's total, oldest first).
    pub points: &'a [TrendPoint],
    /// The earlier days' (day k + 1 back in `history[k]`).
    pub history: &'a [Vec<TrendPoint>],
    pub step: TimeDelta,
    pub floor: &'a Floor,
    /// The pooled test's floor ([`stricter`]).
    pub strict: Floor,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        points: &'a [TrendPoint],
        history: &'a [Vec<TrendPoint>],
        floor: &'a Floor,
    ) -> Self {
        Ctx {
            points,
            history,
            step: point_step(points),
            floor,
            strict: stricter(floor),
        }
    }
}

/// Today's `after` against the earlier days' runs around the same clock
/// times (pooled), and whether the split passes: today's after differs
/// from today's `before` (at the floor), from each earlier day's runs
/// around the same clock times (at the floor) and from their pooled (at
/// the stricter floor), all the same way, and today's `before` differs
/// from none of them that way at the same times. `None` with fewer than
/// [`MIN_BASELINES`] days holding at least today's runs.
fn judge(
    ctx: &Ctx,
    before: &[&TrendPoint],
    after: &[&TrendPoint],
    m: &mut Merges,
) -> Option<Judged> {
    let bins = |pts: &[&TrendPoint]| bins_of(&merged(pts.iter().copied(), 0));
    let (days_before, around) = baselines(before, after, ctx.history, ctx.step)?;
    let at = ctx.points.len().checked_sub(after.len())?;
    let today_after = bins_of(m.today(ctx.points, at));
    let pooled_before: Vec<&TrendPoint> = days_before.iter().flatten().copied().collect();
    let pooled_bins = bins_of(&m.pooled(ctx.history, &around));
    let pooled = compare::mann_whitney(&today_after, &pooled_bins)?;
    let failed = Some(Judged {
        pooled,
        passed: false,
    });
    // The pooled test fails on nearly every pass and is the cheapest (no
    // shift to compute): first.
    if pooled.p_value >= ctx.strict.max_pvalue {
        return failed;
    }
    let (floor, today_before) = (ctx.floor, bins(before));
    let shift = match compare::confirm(&today_before, &today_after, floor) {
        Some(c) if c.confirmed() => c.shift_us,
        _ => return failed,
    };
    let same_way = |d: Option<compare::Confirmation>| {
        d.is_some_and(|d| d.confirmed() && d.shift_us.signum() == shift.signum())
    };
    // Today's before vetoes at a lax test (half the floor's shift): a
    // step older than the split that is partly in the before segment must
    // not be taken for the baseline of a second one.
    let veto = Floor {
        max_pvalue: TAIL_VETO_PVALUE,
        min_relative: floor.min_relative / 2.0,
        min_absolute_us: floor.min_absolute_us / 2.0,
    };
    let passed = same_way(compare::confirm(&pooled_bins, &today_after, &ctx.strict))
        && (around.iter()).all(|a| {
            let day = bins_of(m.day(ctx.history, a));
            same_way(compare::confirm(&day, &today_after, floor))
        })
        && !same_way(compare::confirm(
            &bins(&pooled_before),
            &today_before,
            &veto,
        ))
        && !(days_before.iter())
            .any(|b| same_way(compare::confirm(&bins(b), &today_before, &veto)));
    Some(Judged { pooled, passed })
}

/// Each earlier day's points of one segment.
pub(super) type Days<'a> = Vec<Vec<&'a TrendPoint>>;

/// An earlier day's points around the clock times of a split's after
/// segment: `history[day][range]`.
pub(super) type Around = (usize, Range<usize>);

/// The earlier days' points a split at the end of the window is judged
/// against: for each day (k + 1 back in `history[k]`), its points at the
/// clock times of `before`, and the range of its points around the clock
/// times of `after` (widened by [`TAIL_WIDEN_MINUTES`] on each side); a
/// day holding fewer runs than today's after, or fewer than half of
/// today's before, is left out. `None` with fewer than [`MIN_BASELINES`]
/// days left.
pub(super) fn baselines<'a>(
    before: &[&TrendPoint],
    after: &[&TrendPoint],
    history: &'a [Vec<TrendPoint>],
    step: TimeDelta,
) -> Option<(Days<'a>, Vec<Around>)> {
    let (first, last) = (after.first()?.time, after.last()?.time);
    let widen = TimeDelta::minutes(TAIL_WIDEN_MINUTES);
    let runs = |pts: &[&TrendPoint]| pts.iter().map(|p| p.runs).sum::<i64>();
    let (after_runs, before_runs) = (runs(after), runs(before));
    let (mut days_before, mut around) = (Vec::new(), Vec::new());
    for (k, day) in history.iter().enumerate() {
        let back = TimeDelta::days(k as i64 + 1);
        let (from, to) = (first - widen - back, last + step + widen - back);
        let lo = day.partition_point(|d| d.time < from);
        let hi = day.partition_point(|d| d.time < to).max(lo);
        let b: Vec<&TrendPoint> = before
            .iter()
            .filter_map(|p| {
                let i = day
                    .binary_search_by_key(&(p.time - back), |d| d.time)
                    .ok()?;
                day.get(i)
            })
            .collect();
        let a_runs: i64 = day[lo..hi].iter().map(|p| p.runs).sum();
        if a_runs >= after_runs && 2 * runs(&b) >= before_runs {
            days_before.push(b);
            around.push((k, lo..hi));
        }
    }
    (around.len() >= MIN_BASELINES).then_some((days_before, around))
}

/// The merged totals of the splits' after segments, today's and each
/// earlier day's, kept from one split to the next: the splits are read
/// k = 3, 4, …, so each segment only gains a point or two at its start
/// (merging every segment anew at every split was about a tenth of the
/// analysis' time). Only points `keep` takes are merged.
pub(super) struct Merges {
    keep: fn(&TrendPoint) -> bool,
    today: Grown,
    days: Vec<Grown>,
}

impl Merges {
    pub(super) fn new(keep: fn(&TrendPoint) -> bool) -> Self {
        Merges {
            keep,
            today: Grown::default(),
            days: Vec::new(),
        }
    }

    /// `points[at..]` merged.
    pub(super) fn today(&mut self, points: &[TrendPoint], at: usize) -> &SparseHist {
        self.today.of(points, at..points.len(), self.keep)
    }

    /// An earlier day's segment merged.
    pub(super) fn day(&mut self, history: &[Vec<TrendPoint>], a: &Around) -> &SparseHist {
        let (d, range) = (a.0, a.1.clone());
        if self.days.len() <= d {
            self.days.resize_with(d + 1, Grown::default);
        }
        let pts = history.get(d).map_or(&[][..], |v| &v[..]);
        self.days[d].of(pts, range, self.keep)
    }

    /// The earlier days' segments merged together.
    pub(super) fn pooled(&mut self, history: &[Vec<TrendPoint>], around: &[Around]) -> SparseHist {
        let mut pooled = SparseHist::default();
        for a in around {
            pooled.merge(self.day(history, a));
        }
        pooled
    }
}

/// One segment's merged totals, `pts[lo..hi]`.
#[derive(Default)]
struct Grown {
    lo: usize,
    hi: usize,
    hist: SparseHist,
}

impl Grown {
    /// `pts[range]` merged: the points before the kept start merged in when
    /// the end is the same and the start no later, else merged anew.
    fn of(
        &mut self,
        pts: &[TrendPoint],
        range: Range<usize>,
        keep: fn(&TrendPoint) -> bool,
    ) -> &SparseHist {
        let end = range.end.min(pts.len());
        let start = range.start.min(end);
        if end != self.hi || start > self.lo {
            *self = Grown {
                lo: end,
                hi: end,
                hist: SparseHist::default(),
            };
        }
        let new = pts.get(start..self.lo).unwrap_or_default();
        for p in new.iter().filter(|p| keep(p)) {
            if let Some(h) = p.phases.first() {
                self.hist.merge(h);
            }
        }
        self.lo = start;
        &self.hist
    }
}

/// A 5-minute point `i` of day `days` back before 2026-11-29 holding
/// `runs` totals spread log-evenly over ×1/`width`–×`width` around
/// `median_us` (the tests of this module and `spread.rs`).
#[cfg(test)]
pub(super) fn test_point(days: i64, i: i64, median_us: f64, width: f64, runs: u64) -> TrendPoint {
    use crate::results::hist::SparseHist;
    let mut total = SparseHist::default();
    for r in 0..runs {
        let u = (r as f64 + 0.5) / runs as f64;
        total.record((median_us * width.powf(2.0 * u - 1.0)) as u64);
    }
    let mut phases = vec![SparseHist::default(); crate::run::PHASES.len()];
    phases[0] = total;
    let end: chrono::DateTime<chrono::Utc> = "2026-11-29T00:00:00Z".parse().unwrap_or_default();
    TrendPoint {
        time: end - TimeDelta::days(days) + TimeDelta::minutes(5 * i),
        runs: runs as i64,
        failures: 0,
        phases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 5-minute point `i` of day `days` back holding `runs` totals
    /// spread log-evenly over ×0.8–1.25 around `median_us`.
    fn point(days: i64, i: i64, median_us: f64, runs: u64) -> TrendPoint {
        test_point(days, i, median_us, 1.25, runs)
    }

    /// 96 points (8 hours) of a day, 100 ms, `after_us` from point `from`;
    /// the earlier days hold 120 points (the 2 hours ahead too).
    fn day(days: i64, len: i64, from: i64, after_us: f64) -> Vec<TrendPoint> {
        (0..len)
            .map(|i| point(days, i, if i < from { 100_000.0 } else { after_us }, 5))
            .collect()
    }

    fn history(after: &[f64]) -> Vec<Vec<TrendPoint>> {
        (after.iter().enumerate())
            .map(|(k, &a)| day(k as i64 + 1, 120, 90, a))
            .collect()
    }

    #[test]
    fn grown_merges_equal_merging_anew_for_every_order_of_segments() {
        let pts: Vec<TrendPoint> = (0..30)
            .map(|i| {
                let mut p = point(0, i, 50_000.0 + 3_000.0 * i as f64, 5);
                p.failures = i % 4;
                p
            })
            .collect();
        let keep: fn(&TrendPoint) -> bool = |p| p.failures == 0;
        let mut m = Merges::new(keep);
        // Growing at the start (the splits' order), then a later start, a
        // new end, an empty range and past the end.
        for at in [27, 26, 24, 20, 3, 0, 10, 0, 30, 31, 5] {
            let want = merged(
                pts.get(at..).unwrap_or_default().iter().filter(|p| keep(p)),
                0,
            );
            assert_eq!(m.today(&pts, at), &want, "at {at}");
        }
        let history = vec![pts.clone()];
        for r in [20..30, 15..30, 15..25, 0..25, 10..25, 25..25] {
            let want = merged(pts[r.clone()].iter().filter(|p| keep(p)), 0);
            assert_eq!(m.day(&history, &(0, r.clone())), &want, "{r:?}");
            assert_eq!(m.pooled(&history, &[(0, r.clone())]), want, "{r:?}");
        }
    }

    #[test]
    fn a_step_five_points_old_is_found_where_it_began() {
        let today = day(0, 96, 91, 130_000.0);
        let c = tail_candidate(
            &today,
            &history(&[100_000.0, 100_000.0]),
            &Floor::default(),
            0,
        )
        .expect("a 30 % step of 25 runs against 2 days is found");
        assert_eq!(c.at(), 91);
        // Two points after are too few to ask.
        let today = day(0, 96, 94, 130_000.0);
        assert!(tail_candidate(
            &today,
            &history(&[100_000.0, 100_000.0]),
            &Floor::default(),
            0
        )
        .is_none());
    }

    #[test]
    fn no_step_when_the_earlier_days_moved_the_same_or_one_is_missing() {
        let today = day(0, 96, 91, 130_000.0);
        // Both earlier days rose at these hours: the cycle.
        assert!(tail_candidate(
            &today,
            &history(&[130_000.0, 130_000.0]),
            &Floor::default(),
            0
        )
        .is_none());
        // One earlier day did: one day like today explains it.
        assert!(tail_candidate(
            &today,
            &history(&[100_000.0, 130_000.0]),
            &Floor::default(),
            0
        )
        .is_none());
        // One earlier day only: no baseline for the cycle.
        assert!(tail_candidate(&today, &history(&[100_000.0]), &Floor::default(), 0).is_none());
        // Nothing moved.
        let flat = day(0, 96, 96, 100_000.0);
        assert!(tail_candidate(
            &flat,
            &history(&[100_000.0, 100_000.0]),
            &Floor::default(),
            0
        )
        .is_none());
    }

    #[test]
    fn a_change_point_near_the_end_leaves_too_few_points_before() {
        let today = day(0, 96, 91, 130_000.0);
        let history = history(&[100_000.0, 100_000.0]);
        // The total's latest change point at the step: no before segment
        // of 12 points is left (nor one past the end: no panic).
        for since in [91, 94, 96, 200] {
            assert!(tail_candidate(&today, &history, &Floor::default(), since).is_none());
        }
        assert!(tail_candidate(&today, &history, &Floor::default(), 70).is_some());
    }

    #[test]
    fn a_step_older_than_the_reach_is_not_found_again_at_its_edge() {
        // The step is 30 points old: the farthest split (24) has 6 stepped
        // points in its before segment, which differs from the earlier
        // days' that way (the lax veto), so no second step is placed there.
        let today = day(0, 96, 66, 130_000.0);
        let history = history(&[100_000.0, 100_000.0]);
        assert!(tail_candidate(&today, &history, &Floor::default(), 0).is_none());
    }

    #[test]
    fn an_older_change_is_not_placed_at_the_end() {
        // Today has been 30 % slower than the earlier days for 4 hours and
        // its last points are as the rest: today's before and after do not
        // differ, and the before segment differs from the earlier days'.
        let today = day(0, 96, 48, 130_000.0);
        assert!(tail_candidate(
            &today,
            &history(&[100_000.0, 100_000.0]),
            &Floor::default(),
            0
        )
        .is_none());
    }
}
