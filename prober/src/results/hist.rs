//! Sparse latency histograms with HdrHistogram's bins.
//!
//! A dense `Histogram` per probe and phase is 10+ KiB; 10,000 probes would
//! blow the memory budget. So one shared HdrHistogram instance only
//! quantises values (2 significant digits, 1 µs to 1 h: at most ~1% error per
//! bin), and each histogram keeps just its non-empty bins. The quantile rule
//! is HdrHistogram's `value_at_quantile`, the same as the SQL function
//! `prober_quantile` over stored bins.

use std::sync::OnceLock;

use hdrhistogram::Histogram;

/// Highest value tracked exactly by the bins, in µs (1 h); larger values land in the last bin.
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;
/// HdrHistogram precision of the bins.
pub const SIGNIFICANT_DIGITS: u8 = 2;

/// Maps a value to its HdrHistogram bin.
pub struct Quantiser {
    h: Histogram<u64>,
}

static QUANTISER: OnceLock<Quantiser> = OnceLock::new();

impl Quantiser {
    /// The process-wide quantiser.
    pub fn get() -> &'static Quantiser {
        QUANTISER.get_or_init(|| {
            let h = Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGNIFICANT_DIGITS)
                .unwrap_or_else(|_| unreachable!("constant bounds are valid"));
            Quantiser { h }
        })
    }

    /// The bin holding `us`: its lowest and highest value.
    pub fn bin(&self, us: u64) -> (u64, u64) {
        let v = us.min(MAX_TRACKABLE_US);
        (self.h.lowest_equivalent(v), self.h.highest_equivalent(v))
    }
}

/// The stored key of the bin holding `us` (migration 0011): `bucket << 8 | sub`,
/// whose low end is `sub << bucket` and high end `low + 2^bucket - 1`, the
/// same bins as [`Quantiser::bin`] computed without the HdrHistogram instance.
pub fn bin_key(us: u64) -> i32 {
    let v = us.min(MAX_TRACKABLE_US);
    // 256 sub-buckets (2 significant digits), half of them per bucket past the first.
    let bucket = (64 - (v | 255).leading_zeros()).saturating_sub(8);
    // v < 2^32, so bucket ≤ 24 and sub < 256: the key fits in 13 bits.
    ((bucket << 8) | (v >> bucket) as u32) as i32
}

/// The lowest and highest value of the bin with stored key `key`. A key
/// [`bin_key`] cannot write (a bucket past 24: a damaged or hand-written
/// row) is read in the last bucket, never as an overflowing value.
pub fn bin_of_key(key: i32) -> (u64, u64) {
    let (bucket, sub) = (((key >> 8) as u32 & 63).min(24), (key & 255) as u64);
    let lo = sub << bucket;
    (lo, lo + (1u64 << bucket) - 1)
}

/// A histogram of non-empty bins, sorted by the bin's low value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseHist {
    bins: Vec<(u64, u64)>,
    total: u64,
}

impl SparseHist {
    pub fn record(&mut self, us: u64) {
        let (lo, _) = Quantiser::get().bin(us);
        self.add_bin(lo, 1);
    }

    /// Adds `count` to the bin starting at `lo`.
    pub fn add_bin(&mut self, lo: u64, count: u64) {
        match self.bins.binary_search_by_key(&lo, |b| b.0) {
            Ok(i) => self.bins[i].1 += count,
            Err(i) => self.bins.insert(i, (lo, count)),
        }
        self.total += count;
    }

    /// Room for `bins` more bins without a reallocation.
    pub fn reserve(&mut self, bins: usize) {
        self.bins.reserve_exact(bins);
    }

    /// [`SparseHist::add_bin`] for bins that mostly come in ascending
    /// order: at the end without a search when `lo` is not below the last
    /// bin's (decoding a stored point's sorted bins searched the list at
    /// every bin), anywhere else as `add_bin` puts it.
    pub fn add_bin_ascending(&mut self, lo: u64, count: u64) {
        match self.bins.last_mut() {
            Some(last) if last.0 == lo => last.1 += count,
            Some(last) if last.0 > lo => return self.add_bin(lo, count),
            _ => self.bins.push((lo, count)),
        }
        self.total += count;
    }

    /// Adds `other`'s bins in place: a count of the bins `other` adds, then
    /// one pass over both sorted lists from their ends into this one's grown
    /// list (adding them bin by bin moved this one's tail at every new bin:
    /// quadratic in the bins of a day's merged points; a new list per merge
    /// was a tenth of the trend analysis' time in allocation and copies,
    /// though after a few points merged most bins are already present).
    pub fn merge(&mut self, other: &SparseHist) {
        let theirs = &other.bins;
        if theirs.is_empty() {
            return;
        }
        self.total += other.total;
        let mine_len = self.bins.len();
        let (mut i, mut new) = (0, 0);
        for &(lo, _) in theirs {
            while self.bins.get(i).is_some_and(|b| b.0 < lo) {
                i += 1;
            }
            match self.bins.get(i) {
                Some(b) if b.0 == lo => i += 1,
                _ => new += 1,
            }
        }
        if new == 0 {
            // Every bin present: counts added in order, no move.
            let mut mine = self.bins.iter_mut();
            for &(lo, count) in theirs {
                if let Some(b) = mine.find(|b| b.0 == lo) {
                    b.1 += count;
                }
            }
            return;
        }
        self.bins.resize(mine_len + new, (0, 0));
        // From the ends: the write index stays at or past the read index of
        // this list, so no bin is overwritten before it is read.
        let (mut i, mut j, mut w) = (mine_len, theirs.len(), mine_len + new);
        while j > 0 {
            w -= 1;
            let y = theirs[j - 1];
            match i.checked_sub(1).map(|k| self.bins[k]) {
                Some(x) if x.0 > y.0 => {
                    self.bins[w] = x;
                    i -= 1;
                }
                Some(x) if x.0 == y.0 => {
                    self.bins[w] = (x.0, x.1 + y.1);
                    i -= 1;
                    j -= 1;
                }
                _ => {
                    self.bins[w] = y;
                    j -= 1;
                }
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Non-empty bins as (low, high, count).
    pub fn bins(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let q = Quantiser::get();
        self.bins.iter().map(move |&(lo, c)| (lo, q.bin(lo).1, c))
    }

    /// HdrHistogram's `value_at_quantile`: the high end of the first bin whose
    /// running count reaches `max(1, ceil(q · total))`; for q ≤ 0 the low end
    /// of the first bin (HdrHistogram's `lowest_equivalent` at q = 0).
    pub fn value_at_quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        if q <= 0.0 {
            return self.bins.first().map(|b| b.0);
        }
        let q = q.min(1.0);
        let target = ((q * self.total as f64).ceil() as u64).max(1);
        let mut running = 0;
        for (_, hi, c) in self.bins() {
            running += c;
            if running >= target {
                return Some(hi);
            }
        }
        self.bins().last().map(|b| b.1)
    }

    pub fn max(&self) -> Option<u64> {
        self.bins().last().map(|b| b.1)
    }

    /// Bytes this histogram holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<(u64, u64)>()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bins_added_ascending_equal_bins_added_by_search_in_any_order() {
        let bins = [
            (100, 1),
            (100, 2),
            (300, 1),
            (200, 4),
            (300, 1),
            (50, 1),
            (400, 3),
        ];
        let (mut searched, mut ascending) =
            (super::SparseHist::default(), super::SparseHist::default());
        for (lo, n) in bins {
            searched.add_bin(lo, n);
            ascending.add_bin_ascending(lo, n);
        }
        assert_eq!(ascending, searched);
        assert_eq!(ascending.total(), 13);
    }

    #[test]
    fn a_key_no_bin_has_is_read_in_the_last_bucket_without_overflow() {
        assert_eq!(bin_of_key(63 << 8 | 255), bin_of_key(24 << 8 | 255));
        assert!(bin_of_key(bin_key(MAX_TRACKABLE_US)).1 >= MAX_TRACKABLE_US);
    }

    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn stored_keys_are_the_quantisers_bins() {
        let q = Quantiser::get();
        let mut seed = 7;
        let edges = (0..34).flat_map(|b| {
            let p = 1u64 << b;
            [p.saturating_sub(1), p, p + 1]
        });
        let random = (0..200_000).map(|_| lcg(&mut seed) % (MAX_TRACKABLE_US + 1_000_000));
        for v in (0..2_000)
            .chain(edges)
            .chain(random)
            .chain([MAX_TRACKABLE_US, u64::MAX])
        {
            let key = bin_key(v);
            assert!((0..1 << 13).contains(&key), "{v}: key {key}");
            assert_eq!(bin_of_key(key), q.bin(v), "value {v}, key {key}");
        }
    }

    #[test]
    fn quantiles_equal_hdrhistogram_on_the_same_samples() {
        let mut dense = Histogram::<u64>::new_with_bounds(1, MAX_TRACKABLE_US, 2).unwrap();
        let mut sparse = SparseHist::default();
        let mut seed = 42;
        for i in 0..20_000 {
            // A long-tailed mix: mostly ~50 ms, some fast, a few very slow.
            let v = match i % 10 {
                0 => 1 + lcg(&mut seed) % 2_000,
                9 => 200_000 + lcg(&mut seed) % 5_000_000,
                _ => 50_000 + lcg(&mut seed) % 3_000,
            };
            dense.record(v).unwrap();
            sparse.record(v);
        }
        for q in [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                sparse.value_at_quantile(q),
                Some(dense.value_at_quantile(q)),
                "q={q}"
            );
        }
        assert_eq!(sparse.total(), dense.len());
    }

    #[test]
    fn merging_is_exact() {
        let (mut a, mut b, mut all) = (
            SparseHist::default(),
            SparseHist::default(),
            SparseHist::default(),
        );
        for v in [10, 20, 30, 1_000, 50_000] {
            a.record(v);
            all.record(v);
        }
        for v in [20, 40, 2_000_000] {
            b.record(v);
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn merging_in_place_equals_recording_every_sample() {
        // Every shape of overlap: disjoint, interleaved, contained, equal,
        // one side empty, new bins at both ends; merged either way round.
        let sets: [&[u64]; 7] = [
            &[],
            &[5],
            &[10, 20, 30, 1_000, 50_000],
            &[1, 20, 40, 2_000_000],
            &[10, 20, 30, 1_000, 50_000],
            &[15, 25, 35, 45, 55, 65],
            &[3, 9_999_999],
        ];
        let hist = |vs: &[u64]| {
            let mut h = SparseHist::default();
            vs.iter().for_each(|&v| h.record(v));
            h
        };
        for a in sets {
            for b in sets {
                let mut merged = hist(a);
                merged.merge(&hist(b));
                let both: Vec<u64> = a.iter().chain(b).copied().collect();
                assert_eq!(merged, hist(&both), "{a:?} + {b:?}");
            }
        }
    }

    #[test]
    fn bins_are_within_one_percent() {
        let q = Quantiser::get();
        for v in [1, 99, 255, 256, 1_000, 123_456, 50_000_000] {
            let (lo, hi) = q.bin(v);
            assert!(lo <= v && v <= hi);
            assert!((hi - lo) as f64 <= v as f64 * 0.01 + 1.0, "{v}: {lo}..{hi}");
        }
    }
}
