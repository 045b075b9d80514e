//! The trend engine: pure functions over series, no I/O, no clock.
//!
//! Three detectors, each for what it finds:
//! - [`changepoint`]: steps in level or spread (E-divisive means as Apache
//!   Otava runs it: sliding windows, a deterministic significance test, weak
//!   points merged away), in batch and incremental form;
//! - [`drift`]: slow drifts (Mann–Kendall with a Theil–Sen slope) over
//!   deseasonalised hourly points, so a daily cycle is not a drift;
//! - [`compare`]: confirmation of a candidate from the histograms before and
//!   after it (Mann–Whitney U from bins, Hodges–Lehmann shift, an effect floor).
//!
//! A series with a non-finite value is rejected with [`TrendError`]; a series
//! too short to say anything yields no finding, never a panic.

pub mod changepoint;
pub mod compare;
pub mod drift;
pub mod pvalue;

#[cfg(test)]
mod noise;

/// Why a series cannot be analysed at all (too little data is not an error: it
/// is "no finding").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrendError {
    /// A value is NaN or infinite; the index is its position in the input.
    #[error("value {index} of the series is not a finite number")]
    NotFinite {
        /// Position of the offending value.
        index: usize,
    },
    /// More points than the detector accepts (its cost grows with the square).
    #[error("{len} points, at most {max} accepted")]
    TooManyPoints {
        /// Points given.
        len: usize,
        /// Points accepted.
        max: usize,
    },
}

/// `Ok` when every value is finite, else the first offending position.
pub(crate) fn check_finite(values: impl IntoIterator<Item = f64>) -> Result<(), TrendError> {
    match values.into_iter().position(|v| !v.is_finite()) {
        Some(index) => Err(TrendError::NotFinite { index }),
        None => Ok(()),
    }
}

/// The median of `values` (reordered in place by a linear selection, not
/// sorted: sorting the ~14,000 pairwise slopes of a week of hourly points
/// for Theil–Sen stood out in the analysis' profile); `None` when empty.
/// The mean of the two middle values for an even count.
pub(crate) fn median_in_place(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    let even = values.len().is_multiple_of(2);
    let (lower, m, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if even {
        // The other middle value: the largest of those below.
        let below = lower.iter().copied().max_by(f64::total_cmp)?;
        Some((below + m) / 2.0)
    } else {
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_median_by_selection_is_the_sorted_one() {
        let mut seed = 7u64;
        for len in [1usize, 2, 3, 4, 5, 10, 11, 100, 101] {
            let values: Vec<f64> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((seed >> 40) % 50) as f64 - 20.0
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let m = len / 2;
            let want = if !len.is_multiple_of(2) {
                sorted[m]
            } else {
                (sorted[m - 1] + sorted[m]) / 2.0
            };
            let got = super::median_in_place(&mut values.clone());
            assert_eq!(got, Some(want), "{len} values");
        }
        assert_eq!(super::median_in_place(&mut []), None);
    }
}
