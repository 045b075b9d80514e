//! Change points (steps in level or spread) by E-divisive means, as Apache
//! Otava runs it (Fleming et al., ICPE 2023; `docs/MATH.md` of apache/otava):
//!
//! 1. **Windows.** The series is cut into sliding windows of `window_len`
//!    points; the next window starts half a window later, or at the last change
//!    point found, whichever is later. Results are unioned, so two nearby
//!    changes are not merged into one.
//! 2. **Within a window**, E-divisive: the split maximising Q̂ ([`q_hat`]) over
//!    all current segments is tested between its two enclosing segments; a
//!    significant one is kept and the search goes on, the first one that is not
//!    significant stops it. This first pass accepts p < 10 × `max_pvalue`
//!    ("weak" points).
//! 3. **Merge.** Over the whole series, the weakest point (highest p-value, if
//!    it is ≥ `max_pvalue`; otherwise the smallest relative change of the mean,
//!    if it is < `min_magnitude`) is removed and its neighbours are re-tested
//!    against their new neighbours, until every point passes.
//!
//! Where we differ from Otava, and why:
//! - **Ranks, not raw values.** A split is tested with Student's t on the
//!   pooled ranks of the two sides (level) and on Fligner–Killeen scores of
//!   the absolute deviations from each side's median (spread). Both are
//!   deterministic like Otava's t-test, but a single huge outlier only takes
//!   the top rank: with raw values, one bad minute near the end of a series
//!   dragged a short segment's mean far enough to pass p < 0.001. Testing
//!   spread too catches a change of spread with the same mean, which a test of
//!   means passes as noise. The split's p-value is the smaller one, doubled.
//! - **A selection penalty.** The tested split is the best of m admissible
//!   positions, so its raw p-value is optimistic (Otava's false points on
//!   noise). It is multiplied by 1 + ln m (see `split_test`): on 20,000 points
//!   of stationary noise this took false points from 9 to 0.
//! - **Persistence.** Every side of a split holds at least `min_segment`
//!   points (default 5), so a single bad minute cannot be a segment of its
//!   own, and a change is reported only once enough points after it exist.
//!
//! A change of spread alone is found reliably with about 100 points a side
//! (`window_len` 200); with the default windows of 50 only sometimes. The
//! series fed here are quantiles per period, where a wider spread shows as a
//! level step of p95 and p99.
//!
//! Points are treated as independent; latency series are autocorrelated, so
//! p-values are optimistic. Feed aggregated points (minute or hour quantiles)
//! and confirm candidates from the histograms ([`crate::trend::compare`]).

mod energy;
mod incremental;
#[cfg(test)]
mod tests;

pub use energy::q_hat;
pub use incremental::Incremental;

use super::{check_finite, median_in_place, pvalue, TrendError};
use energy::Energy;

/// Settings of the change-point detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Points per sliding window (default 50, Otava's). At least
    /// `2 × min_segment`, at most [`MAX_WINDOW_LEN`]; values outside are
    /// brought to the nearest bound.
    pub window_len: usize,
    /// A change point is kept when its p-value is below this (default 0.001,
    /// Otava's). The first pass inside windows uses ten times it.
    pub max_pvalue: f64,
    /// A change point whose relative change of the mean is below this is
    /// merged away (default 0: keep every significant one, Otava's default).
    /// A pure change of spread has a relative change near 0: raise this only
    /// if spread changes do not matter.
    pub min_magnitude: f64,
    /// Fewest points on each side of a change point (default 5): the
    /// persistence rule that keeps single outliers from being change points.
    /// At least 2 (a variance needs two points), at most half a window.
    pub min_segment: usize,
}

/// The largest window: its distance table is `(n + 1)²` floats (8 MB here).
pub const MAX_WINDOW_LEN: usize = 1_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            window_len: 50,
            max_pvalue: 0.001,
            min_magnitude: 0.0,
            min_segment: 5,
        }
    }
}

impl Config {
    /// The settings actually used: `min_segment` in [2, `MAX_WINDOW_LEN` / 2],
    /// `window_len` in [2 × `min_segment`, `MAX_WINDOW_LEN`], p-value in (0, 1].
    fn effective(&self) -> Config {
        let min_segment = self.min_segment.clamp(2, MAX_WINDOW_LEN / 2);
        let max_pvalue = if self.max_pvalue > 0.0 {
            self.max_pvalue.min(1.0)
        } else {
            f64::MIN_POSITIVE
        };
        Config {
            window_len: self.window_len.clamp(2 * min_segment, MAX_WINDOW_LEN),
            max_pvalue,
            min_magnitude: self.min_magnitude.max(0.0),
            min_segment,
        }
    }

    /// The first pass's threshold: 10 × `max_pvalue`, at most 1.
    fn weak_pvalue(&self) -> f64 {
        (self.max_pvalue * 10.0).min(1.0)
    }
}

/// Summary of the points on one side of a change point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// First index of the segment.
    pub start: usize,
    /// One past its last index.
    pub end: usize,
    /// Mean of its values.
    pub mean: f64,
    /// Sample standard deviation of its values (0 for one point).
    pub std_dev: f64,
}

/// A step in level or spread at `index`: the first point of the new regime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangePoint {
    /// Index of the first point after the change.
    pub index: usize,
    /// The segment before, back to the previous change point or the start.
    pub before: Segment,
    /// The segment after, up to the next change point or the end.
    pub after: Segment,
    /// Two-sided p-value of the split against its neighbouring change points:
    /// the smaller of level and spread, doubled, times the selection penalty.
    pub p_value: f64,
}

impl ChangePoint {
    /// (after − before) / |before| of the means; infinite when the mean before
    /// is 0 and the mean after is not.
    pub fn relative_change(&self) -> f64 {
        let (b, a) = (self.before.mean, self.after.mean);
        if b == 0.0 {
            return if a == 0.0 { 0.0 } else { f64::INFINITY };
        }
        (a - b) / b.abs()
    }
}

/// The change points of `series`, in index order. Empty for a series too
/// short to split; an error only for a non-finite value.
pub fn detect(series: &[f64], config: &Config) -> Result<Vec<ChangePoint>, TrendError> {
    check_finite(series.iter().copied())?;
    let config = config.effective();
    let mut windows = Vec::new();
    scan_windows(series, &config, 0, &mut windows);
    Ok(merge(series, weak_points(&windows), &config))
}

/// One analysed window and the weak change points it yielded (absolute indexes).
#[derive(Debug, Clone, PartialEq)]
struct Window {
    start: usize,
    end: usize,
    found: Vec<usize>,
}

/// Analyses windows from `start` to the end of the series, appending them.
fn scan_windows(series: &[f64], config: &Config, mut start: usize, out: &mut Vec<Window>) {
    let step = (config.window_len / 2).max(1);
    while start < series.len() {
        let end = (start + config.window_len).min(series.len());
        let found: Vec<usize> = divide(&series[start..end], config)
            .into_iter()
            .map(|i| i + start)
            .collect();
        let next = found.last().copied().unwrap_or(0).max(start + step);
        out.push(Window { start, end, found });
        start = next;
    }
}

/// The union of the windows' points, sorted, without duplicates.
fn weak_points(windows: &[Window]) -> Vec<usize> {
    let mut all: Vec<usize> = windows
        .iter()
        .flat_map(|w| w.found.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// E-divisive within one window: indexes local to `z`, sorted.
fn divide(z: &[f64], config: &Config) -> Vec<usize> {
    if z.len() < 2 * config.min_segment {
        return Vec::new();
    }
    let energy = Energy::new(z);
    let mut points: Vec<usize> = Vec::new();
    loop {
        let mut bounds = Vec::with_capacity(points.len() + 2);
        bounds.push(0);
        bounds.extend(&points);
        bounds.push(z.len());
        let best = bounds
            .windows(2)
            .filter_map(|b| {
                energy
                    .best_split(b[0], b[1], config.min_segment)
                    .map(|c| (b, c))
            })
            .fold(
                None,
                |acc: Option<(&[usize], (usize, f64))>, (b, c)| match acc {
                    Some((_, (_, q))) if q >= c.1 => acc,
                    _ => Some((b, c)),
                },
            );
        let Some((b, (tau, _))) = best else { break };
        if split_test(z, (b[0], tau, b[1]), config.min_segment).p_value >= config.weak_pvalue() {
            break;
        }
        let at = points.partition_point(|&p| p < tau);
        points.insert(at, tau);
    }
    points
}

/// Removes the weakest points until every one passes; neighbours of a removed
/// point are re-tested against their new neighbours.
fn merge(series: &[f64], indexes: Vec<usize>, config: &Config) -> Vec<ChangePoint> {
    let bound = |idx: &[usize], k: usize| -> (usize, usize) {
        let left = if k == 0 { 0 } else { idx[k - 1] };
        let right = idx.get(k + 1).copied().unwrap_or(series.len());
        (left, right)
    };
    let mut idx = indexes;
    let mut points: Vec<ChangePoint> = (0..idx.len())
        .map(|k| {
            let (l, r) = bound(&idx, k);
            split_test(series, (l, idx[k], r), config.min_segment)
        })
        .collect();
    while let Some(k) = weakest(&points, config) {
        points.remove(k);
        idx.remove(k);
        for j in [k.wrapping_sub(1), k] {
            if j < idx.len() {
                let (l, r) = bound(&idx, j);
                points[j] = split_test(series, (l, idx[j], r), config.min_segment);
            }
        }
    }
    points
}

/// The point to remove next, if any fails.
fn weakest(points: &[ChangePoint], config: &Config) -> Option<usize> {
    let (k, p) = points
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.p_value.total_cmp(&b.1.p_value).then(b.0.cmp(&a.0)))?;
    if p.p_value >= config.max_pvalue {
        return Some(k);
    }
    let (k, p) = points.iter().enumerate().min_by(|a, b| {
        let m = |c: &ChangePoint| c.relative_change().abs();
        m(a.1).total_cmp(&m(b.1)).then(a.0.cmp(&b.0))
    })?;
    (p.relative_change().abs() < config.min_magnitude).then_some(k)
}

/// Count, mean and unbiased variance of a sample.
#[derive(Debug, Clone, Copy)]
struct Moments {
    n: f64,
    mean: f64,
    var: f64,
}

impl Moments {
    fn of(values: impl Iterator<Item = f64> + Clone) -> Moments {
        let (n, sum) = values
            .clone()
            .fold((0.0, 0.0), |(n, s), v| (n + 1.0, s + v));
        let mean = if n > 0.0 { sum / n } else { 0.0 };
        let ss: f64 = values.map(|v| (v - mean) * (v - mean)).sum();
        let var = if n > 1.0 { ss / (n - 1.0) } else { 0.0 };
        Moments { n, mean, var }
    }
}

/// Two-sided pooled-variance Student t-test of equal means.
fn student_t(a: Moments, b: Moments) -> f64 {
    let df = a.n + b.n - 2.0;
    if a.n < 2.0 || b.n < 2.0 {
        return 1.0;
    }
    let pooled = ((a.n - 1.0) * a.var + (b.n - 1.0) * b.var) / df;
    let diff = (a.mean - b.mean).abs();
    if pooled <= 0.0 {
        return if diff > 0.0 { 0.0 } else { 1.0 };
    }
    pvalue::student_t_two_sided(diff / (pooled * (1.0 / a.n + 1.0 / b.n)).sqrt(), df)
}

/// Absolute deviations from the median, for the Brown–Forsythe spread test.
fn deviations(values: &[f64]) -> Vec<f64> {
    let mut scratch = values.to_vec();
    let med = median_in_place(&mut scratch).unwrap_or(0.0);
    values.iter().map(|v| (v - med).abs()).collect()
}

/// Midranks (1-based, ties share their mean rank) of `values`.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && values[order[j]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j + 1) as f64 / 2.0;
        for &k in &order[i..j] {
            out[k] = rank;
        }
        i = j;
    }
    out
}

/// Student's t on the pooled ranks of `x` and `y` (the rank-transform test,
/// close to Mann–Whitney): one outlier only takes the top rank.
fn rank_t(x: &[f64], y: &[f64]) -> f64 {
    let mut both = x.to_vec();
    both.extend_from_slice(y);
    let r = ranks(&both);
    let (rx, ry) = r.split_at(x.len());
    student_t(
        Moments::of(rx.iter().copied()),
        Moments::of(ry.iter().copied()),
    )
}

/// Fligner–Killeen scores of the spread: the ranks of the absolute deviations
/// from each side's median, mapped to normal quantiles. An outlier only takes
/// the top score (≈ 2.6 for 50 points).
fn spread_scores(x: &[f64], y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut dev = deviations(x);
    dev.extend(deviations(y));
    let n = dev.len() as f64;
    let scores: Vec<f64> = ranks(&dev)
        .into_iter()
        .map(|r| pvalue::normal_quantile((1.0 + r / (n + 1.0)) / 2.0))
        .collect();
    let (a, b) = scores.split_at(x.len());
    (a.to_vec(), b.to_vec())
}

/// Tests `series[left..index)` against `series[index..right)`: level on the
/// ranks of the values, spread on Fligner–Killeen scores; the smaller p-value,
/// doubled for the two tests, then multiplied by the selection penalty.
///
/// The split was chosen as the best of `m` admissible positions, so its raw
/// p-value is optimistic. Bonferroni (× m) would be far too strict, since
/// neighbouring splits are nearly the same test; the maximum of a scan
/// statistic over m positions behaves like about ln m independent tests, so
/// the penalty is 1 + ln m.
fn split_test(
    series: &[f64],
    (left, index, right): (usize, usize, usize),
    min_segment: usize,
) -> ChangePoint {
    let (x, y) = (&series[left..index], &series[index..right]);
    let (mx, my) = (
        Moments::of(x.iter().copied()),
        Moments::of(y.iter().copied()),
    );
    let level = rank_t(x, y);
    let (sx, sy) = spread_scores(x, y);
    let spread = student_t(Moments::of(sx.into_iter()), Moments::of(sy.into_iter()));
    let segment = |start, end, m: Moments| Segment {
        start,
        end,
        mean: m.mean,
        std_dev: m.var.sqrt(),
    };
    ChangePoint {
        index,
        before: segment(left, index, mx),
        after: segment(index, right, my),
        p_value: (2.0 * level.min(spread) * selection_penalty(right - left, min_segment)).min(1.0),
    }
}

/// 1 + ln m for the m positions where a segment of `len` points can be split
/// with `min_segment` points on each side.
fn selection_penalty(len: usize, min_segment: usize) -> f64 {
    let m = (len + 1).saturating_sub(2 * min_segment).max(1);
    1.0 + (m as f64).ln()
}
