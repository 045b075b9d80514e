//! Minute blocks (migration 0015) opened here rather than in Postgres, for
//! the trend series. `prober_block_minutes` splits a block into minute rows
//! in PL/pgSQL, about 1 ms a block at a 60 s interval; the analysis reads
//! a day and more of blocks per probe when it reads in full, so the
//! decoding was most of its cost. Here a block is a walk over its sorted
//! arrays: each tagged element goes to the point its minute falls in, and a
//! one-sample cell without a bin gets back the bin of its sum, exactly as
//! `prober_block_full` puts it back.

use std::collections::{BTreeMap, HashMap};

use chrono::DateTime;

use super::read::unpack_phases;
use super::trends::TrendPoint;
use crate::results::hist::bin_key;
use crate::run::PHASES;

/// A block element's minute of the hour is in bits 56-61.
const MINUTE_SHIFT: u32 = 56;
/// A cell (minute and phase) is an element's bits from 48 up.
const CELL_SHIFT: u32 = 48;
/// An element without its minute: migration 0011's encoding.
const UNTAG: i64 = (1 << MINUTE_SHIFT) - 1;
/// Runs and failures of a stats element (24 bits each).
const COUNT_MASK: i64 = 0xff_ffff;

/// What a point of a series gathers before its bins are unpacked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Gathered {
    /// Runs and failures of phase 0 (every run counts there).
    pub runs: i64,
    pub failures: i64,
    /// Elements in migration 0011's encoding (`phase << 48 | key << 32 |
    /// count`), in any order, repeats allowed.
    pub bins: Vec<i64>,
}

impl Gathered {
    /// Adds a point read already merged (a row's concatenated bins).
    pub fn add(&mut self, runs: i64, failures: i64, bins: &[i64]) {
        self.runs += runs;
        self.failures += failures;
        self.bins.extend_from_slice(bins);
    }
}

/// Where a block's cells go: the points of one series, keyed by their start
/// (Unix seconds, a multiple of the step, as SQL's `date_bin` from the
/// epoch puts them), for the minutes in `[from, to)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub from: i64,
    pub to: i64,
    pub step: i64,
}

impl Span {
    /// The start of the point holding minute `minute` of the block of
    /// `hour` (Unix seconds), if the minute is in the span.
    fn point_of(&self, hour: i64, minute: i64) -> Option<i64> {
        let t = hour + (minute & 63) * 60;
        (t >= self.from && t < self.to).then(|| t.div_euclid(self.step.max(1)) * self.step)
    }
}

/// Adds the cells of one minute block (its `hour`, Unix seconds, and its
/// tagged `bins`, `stats`, `sums`) that fall in `span` to `points`.
pub(super) fn add_block(
    points: &mut BTreeMap<i64, Gathered>,
    span: Span,
    hour: i64,
    bins: &[i64],
    stats: &[i64],
    sums: &[i64],
) {
    for (&e, &sum) in stats.iter().zip(sums) {
        let Some(p) = span.point_of(hour, e >> MINUTE_SHIFT) else {
            continue;
        };
        let g = points.entry(p).or_default();
        let phase = (e & UNTAG) >> CELL_SHIFT;
        let runs = (e >> 24) & COUNT_MASK;
        if phase == 0 {
            g.runs += runs;
            g.failures += e & COUNT_MASK;
        }
        if runs == 1 && !has_cell(bins, e >> CELL_SHIFT) {
            let key = i64::from(bin_key(u64::try_from(sum).unwrap_or(0)));
            g.bins.push((phase << CELL_SHIFT) | (key << 32) | 1);
        }
    }
    // The bins are sorted by minute: each run of a point's elements is
    // added with one look-up of the point, not one an element (a look-up
    // an element was most of this function's time at 30 runs a point).
    let mut rest = bins;
    while let Some(&first) = rest.first() {
        let p = span.point_of(hour, first >> MINUTE_SHIFT);
        let same = rest
            .iter()
            .position(|&e| span.point_of(hour, e >> MINUTE_SHIFT) != p)
            .unwrap_or(rest.len());
        let (run, after) = rest.split_at(same);
        if let Some(p) = p {
            (points.entry(p).or_default().bins).extend(run.iter().map(|&e| e & UNTAG));
        }
        rest = after;
    }
}

/// Each probe and location's gathered points as a series: every phase's
/// bins unpacked, the points without runs left out, in time order.
pub(super) fn series_of(
    gathered: HashMap<(i32, i16), BTreeMap<i64, Gathered>>,
) -> HashMap<(i32, i16), Vec<TrendPoint>> {
    let mut out: HashMap<(i32, i16), Vec<TrendPoint>> = HashMap::new();
    for (key, points) in gathered {
        let series: Vec<TrendPoint> = (points.into_iter())
            .filter(|(_, g)| g.runs != 0)
            .filter_map(|(t, g)| {
                Some(TrendPoint {
                    time: DateTime::from_timestamp(t, 0)?,
                    runs: g.runs,
                    failures: g.failures,
                    phases: unpack_phases(g.bins, PHASES.len()),
                })
            })
            .collect();
        if !series.is_empty() {
            out.insert(key, series);
        }
    }
    out
}

/// Whether the sorted `bins` hold an element of `cell` (minute and phase).
fn has_cell(bins: &[i64], cell: i64) -> bool {
    let i = bins.partition_point(|&e| (e >> CELL_SHIFT) < cell);
    bins.get(i).is_some_and(|&e| e >> CELL_SHIFT == cell)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(minute: i64, phase: i64, key: i64, count: i64) -> i64 {
        (minute << 56) | (phase << 48) | (key << 32) | count
    }

    fn stat(minute: i64, phase: i64, runs: i64, failures: i64) -> i64 {
        (minute << 56) | (phase << 48) | (runs << 24) | failures
    }

    // 2025-11-24T16:00:00Z, a whole hour.
    const HOUR: i64 = 1_764_000_000;

    #[test]
    fn cells_go_to_their_point_and_one_sample_cells_get_their_bin_back() {
        // Minute 3: two samples of phase 0 with bins; phase 1 one sample, no
        // bin (implied: 1,500 µs). Minute 7: one sample of phase 0 with a
        // failure, no bin (implied: 80,000 µs). Minute 12: outside the span.
        let bins = vec![bin(3, 0, 100, 1), bin(3, 0, 101, 1), bin(12, 0, 50, 4)];
        let stats = vec![
            stat(3, 0, 2, 0),
            stat(3, 1, 1, 0),
            stat(7, 0, 1, 1),
            stat(12, 0, 4, 0),
        ];
        let sums = vec![300, 1_500, 80_000, 400];
        let mut points = BTreeMap::new();
        let span = Span {
            from: HOUR,
            to: HOUR + 10 * 60,
            step: 300,
        };
        add_block(&mut points, span, HOUR, &bins, &stats, &sums);
        assert_eq!(points.len(), 2, "{points:?}");
        let first = &points[&HOUR];
        assert_eq!((first.runs, first.failures), (2, 0));
        let mut b = first.bins.clone();
        b.sort_unstable();
        let implied = (1 << 48) | (i64::from(bin_key(1_500)) << 32) | 1;
        assert_eq!(b, vec![(100 << 32) | 1, (101 << 32) | 1, implied]);
        let second = &points[&(HOUR + 300)];
        assert_eq!((second.runs, second.failures), (1, 1));
        assert_eq!(second.bins, vec![(i64::from(bin_key(80_000)) << 32) | 1]);
    }

    #[test]
    fn a_one_sample_cell_with_its_bin_stored_is_not_counted_twice() {
        let bins = vec![bin(0, 0, 77, 1)];
        let stats = vec![stat(0, 0, 1, 0)];
        let mut points = BTreeMap::new();
        let span = Span {
            from: HOUR,
            to: HOUR + 3600,
            step: 60,
        };
        add_block(&mut points, span, HOUR, &bins, &stats, &[5]);
        assert_eq!(points[&HOUR].bins, vec![(77 << 32) | 1]);
    }
}
