//! Confirmation of a candidate change from the histograms before and after
//! it: Mann–Whitney U computed on the bins (ties handled exactly), the
//! Hodges–Lehmann shift, and an effect floor.
//!
//! Every sample is taken to sit at its bin's value, so the results equal the
//! same statistics on the raw samples expanded from the bins (tested). All of
//! it is O(bins), or O(bins · log range) for the shift, whatever the counts:
//! a million runs cost no more than a hundred.
//!
//! Significance alone is not a finding: at large sample sizes a 0.1 ms wobble
//! is "significant" (Kayenta's lesson). [`confirm`] also asks the shift to
//! clear a [`Floor`], relative to the median before and absolute.

use std::borrow::Cow;

use super::pvalue;

/// One histogram bin: `count` samples, all taken to be `value` (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    /// The bin's value, µs.
    pub value: u64,
    /// Samples in the bin.
    pub count: u64,
}

/// Mann–Whitney U of sample A against sample B.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// Size of A.
    pub n_a: u64,
    /// Size of B.
    pub n_b: u64,
    /// U_A: pairs (a, b) with a > b, plus half the ties.
    pub u: f64,
    /// Common-language effect size U_A / (n_A n_B): P(a > b) + ½ P(a = b); 0.5 is no difference.
    pub cles: f64,
    /// Normal approximation with tie and continuity corrections; 0 when all samples tie.
    pub z: f64,
    /// Two-sided p-value of z.
    pub p_value: f64,
}

/// Sorted by value, equal values merged, empty bins dropped: `bins` itself
/// when it is so already (the store's merged bins always are).
fn normalise(bins: &[Bin]) -> Cow<'_, [Bin]> {
    let sorted = bins.windows(2).all(|w| w[0].value < w[1].value);
    if sorted && bins.iter().all(|b| b.count > 0) {
        return Cow::Borrowed(bins);
    }
    let mut out: Vec<Bin> = bins.iter().filter(|b| b.count > 0).copied().collect();
    out.sort_unstable_by_key(|b| b.value);
    out.dedup_by(|later, kept| {
        let same = later.value == kept.value;
        if same {
            kept.count += later.count;
        }
        same
    });
    Cow::Owned(out)
}

fn total(bins: &[Bin]) -> u64 {
    bins.iter().fold(0u64, |s, b| s.saturating_add(b.count))
}

/// Mann–Whitney U of `a` against `b` from their bins, which may be unsorted
/// and on different bin sets. `None` when either side is empty.
///
/// ```text
/// U_A = Σ_v a_v (B_{<v} + b_v / 2)
/// σ²  = n_A n_B / 12 · [(N + 1) − Σ_v (t_v³ − t_v) / (N (N − 1))],  t_v = a_v + b_v
/// z   = (U_A − n_A n_B / 2 − ½ sign) / σ
/// ```
pub fn mann_whitney(a: &[Bin], b: &[Bin]) -> Option<MannWhitney> {
    let (a, b) = (normalise(a), normalise(b));
    let (n_a, n_b) = (total(&a), total(&b));
    if n_a == 0 || n_b == 0 {
        return None;
    }
    // The joint values in order: both lists are sorted.
    let (mut u, mut b_below, mut ties) = (0.0, 0.0, 0.0);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let (x, y) = (a.get(i), b.get(j));
        let v = match (x, y) {
            (Some(x), Some(y)) => x.value.min(y.value),
            (Some(x), None) => x.value,
            (None, Some(y)) => y.value,
            (None, None) => break,
        };
        let take = |bin: Option<&Bin>, at: &mut usize| match bin {
            Some(bin) if bin.value == v => {
                *at += 1;
                bin.count as f64
            }
            _ => 0.0,
        };
        let (ca, cb) = (take(x, &mut i), take(y, &mut j));
        u += ca * (b_below + cb / 2.0);
        b_below += cb;
        let t = ca + cb;
        ties += t * t * t - t;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let n = na + nb;
    let var = na * nb / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let d = u - na * nb / 2.0;
    let z = if var > 0.0 {
        (d - 0.5 * d.signum()) / var.sqrt()
    } else {
        0.0
    };
    Some(MannWhitney {
        n_a,
        n_b,
        u,
        cles: u / (na * nb),
        z,
        p_value: pvalue::normal_two_sided(z),
    })
}

/// The median of a histogram: the mean of the two middle samples for an even
/// count. `None` when empty.
pub fn median(bins: &[Bin]) -> Option<f64> {
    let bins = normalise(bins);
    let n = total(&bins);
    let kth = |k: u64| -> f64 {
        let mut seen = 0;
        for b in bins.iter() {
            seen += b.count;
            if seen > k {
                return b.value as f64;
            }
        }
        0.0
    };
    match n {
        0 => None,
        n if n % 2 == 1 => Some(kth(n / 2)),
        n => Some((kth(n / 2 - 1) + kth(n / 2)) / 2.0),
    }
}

/// The Hodges–Lehmann shift of `a` against `b`: the median of all pairwise
/// differences a − b, each bin pair weighted by the product of its counts.
/// `None` when either side is empty.
pub fn hodges_lehmann(a: &[Bin], b: &[Bin]) -> Option<f64> {
    let (a, b) = (normalise(a), normalise(b));
    let w = u128::from(total(&a)) * u128::from(total(&b));
    if w == 0 {
        return None;
    }
    Some(if w % 2 == 1 {
        kth_difference(&a, &b, w / 2) as f64
    } else {
        (kth_difference(&a, &b, w / 2 - 1) + kth_difference(&a, &b, w / 2)) as f64 / 2.0
    })
}

/// Weight of the pairs with x − y ≤ d (both sides normalised): one pass, as
/// the threshold x − d only grows with x.
fn weight_at_most(a: &[Bin], b: &[Bin], d: i128) -> u128 {
    let total_b = u128::from(total(b));
    let (mut j, mut below, mut sum) = (0, 0u128, 0u128);
    for x in a {
        let threshold = i128::from(x.value) - d;
        while j < b.len() && i128::from(b[j].value) < threshold {
            below = below.saturating_add(u128::from(b[j].count));
            j += 1;
        }
        let above = total_b.saturating_sub(below);
        sum = sum.saturating_add(u128::from(x.count).saturating_mul(above));
    }
    sum
}

/// The k-th smallest (from 0) weighted pairwise difference, by bisection on
/// the integer differences.
fn kth_difference(a: &[Bin], b: &[Bin], k: u128) -> i128 {
    let value = |bins: &[Bin], i: usize| i128::from(bins[i].value);
    let (mut lo, mut hi) = (
        value(a, 0) - value(b, b.len() - 1),
        value(a, a.len() - 1) - value(b, 0),
    );
    while lo < hi {
        let mid = lo + (hi - lo).div_euclid(2);
        if weight_at_most(a, b, mid) > k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// How large a confirmed change must be, and how significant.
#[derive(Debug, Clone, PartialEq)]
pub struct Floor {
    /// Mann–Whitney p-value below which the difference is significant (default 0.001).
    pub max_pvalue: f64,
    /// The shift must be at least this fraction of the median before (default 0.05).
    pub min_relative: f64,
    /// ... and at least this many µs (default 1,000: 1 ms).
    pub min_absolute_us: f64,
}

impl Default for Floor {
    fn default() -> Self {
        Floor {
            max_pvalue: 0.001,
            min_relative: 0.05,
            min_absolute_us: 1_000.0,
        }
    }
}

/// What [`confirm`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Significant and large enough: report it.
    Confirmed,
    /// The histograms do not differ significantly.
    NotSignificant,
    /// Significant, but the shift is under the floor.
    BelowFloor,
}

/// The comparison of the histograms before and after a candidate change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confirmation {
    /// Mann–Whitney of after against before (CLES > 0.5: after is slower).
    pub test: MannWhitney,
    /// Hodges–Lehmann shift after − before, µs.
    pub shift_us: f64,
    /// Median before, µs.
    pub median_before: f64,
    /// Median after, µs.
    pub median_after: f64,
    /// The shift as a fraction of the median before (infinite if that is 0).
    pub relative_shift: f64,
    /// The conclusion.
    pub verdict: Verdict,
}

impl Confirmation {
    /// Whether the change is to be reported.
    pub fn confirmed(&self) -> bool {
        self.verdict == Verdict::Confirmed
    }
}

/// Confirms (or not) a change between the `before` and `after` histograms: it
/// needs p < `floor.max_pvalue` and a shift of at least both floors. `None`
/// when either side is empty.
pub fn confirm(before: &[Bin], after: &[Bin], floor: &Floor) -> Option<Confirmation> {
    let test = mann_whitney(after, before)?;
    let shift_us = hodges_lehmann(after, before)?;
    let (median_before, median_after) = (median(before)?, median(after)?);
    let relative_shift = if median_before > 0.0 {
        shift_us / median_before
    } else if shift_us == 0.0 {
        0.0
    } else {
        f64::INFINITY * shift_us.signum()
    };
    let size = shift_us.abs();
    let verdict = if test.p_value >= floor.max_pvalue {
        Verdict::NotSignificant
    } else if size < floor.min_absolute_us || size < floor.min_relative * median_before {
        Verdict::BelowFloor
    } else {
        Verdict::Confirmed
    };
    Some(Confirmation {
        test,
        shift_us,
        median_before,
        median_after,
        relative_shift,
        verdict,
    })
}

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
