//! A batch's `hist_pending` rows, built in Rust: one row per (probe, minute)
//! with every phase's bins and counters (encoding: migration 0011), the same
//! arrays the writer's SQL would group out of the samples. The statement
//! inserts these when every counted run of the batch was new, and groups the
//! samples of the runs it inserted otherwise (a replay): grouping in SQL was
//! half of the writer's Postgres time (ARCHITECTURE.md, "Pending rows built
//! by the writer").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// One (probe, minute)'s bins and counters.
#[derive(Default)]
struct Group {
    /// (phase, bin key) → samples.
    bins: BTreeMap<(i16, i32), i64>,
    /// phase → (samples, failed runs' samples, sum of µs).
    stats: BTreeMap<i16, (i64, i64, i64)>,
}

/// The pending rows of a batch's counted runs, built as the runs are added.
#[derive(Default)]
pub(super) struct PendingRows {
    groups: BTreeMap<(i32, i64), Group>,
    /// Counted runs added.
    pub counted: i64,
    /// A sum overflowed `i64`: the rows are not used (the SQL path errs as before).
    overflow: bool,
}

/// The rows as columns: flat element arrays and each row's 1-based slice.
#[derive(Default)]
pub(super) struct PendingColumns {
    pub probe_id: Vec<i32>,
    pub minute: Vec<DateTime<Utc>>,
    pub bins_from: Vec<i32>,
    pub bins_to: Vec<i32>,
    pub stats_from: Vec<i32>,
    pub stats_to: Vec<i32>,
    pub bins: Vec<i64>,
    pub stats: Vec<i64>,
    pub sums: Vec<i64>,
    /// Counted runs the rows hold; -1 when they must not be used.
    pub counted: i64,
}

const MINUTE_US: i64 = 60_000_000;

impl PendingRows {
    /// Starts a counted run of `probe_id` scheduled at `at`; returns its key.
    pub fn run(&mut self, probe_id: i32, at: DateTime<Utc>) -> (i32, i64) {
        self.counted += 1;
        (probe_id, at.timestamp_micros().div_euclid(MINUTE_US))
    }

    /// Adds one sample of the run `key`.
    pub fn sample(&mut self, key: (i32, i64), phase: i16, us: i64, bin: i32, failed: bool) {
        let g = self.groups.entry(key).or_default();
        *g.bins.entry((phase, bin)).or_insert(0) += 1;
        let s = g.stats.entry(phase).or_insert((0, 0, 0));
        s.0 += 1;
        s.1 += i64::from(failed);
        match s.2.checked_add(us) {
            Some(sum) => s.2 = sum,
            None => self.overflow = true,
        }
    }

    /// The rows as columns, encoded as the writer's SQL encodes them.
    pub fn columns(&self) -> PendingColumns {
        let mut c = PendingColumns {
            counted: if self.overflow { -1 } else { self.counted },
            ..PendingColumns::default()
        };
        for (&(probe_id, minute), g) in &self.groups {
            let Some(at) = DateTime::from_timestamp_micros(minute * MINUTE_US) else {
                c.counted = -1;
                continue;
            };
            c.probe_id.push(probe_id);
            c.minute.push(at);
            c.bins_from.push(slice_start(c.bins.len()));
            for (&(phase, bin), &n) in &g.bins {
                c.bins
                    .push((i64::from(phase) << 48) | (i64::from(bin) << 32) | n);
            }
            c.bins_to.push(slice_start(c.bins.len()) - 1);
            c.stats_from.push(slice_start(c.stats.len()));
            for (&phase, &(runs, failures, sum)) in &g.stats {
                c.stats
                    .push((i64::from(phase) << 48) | (runs << 24) | failures);
                c.sums.push(sum);
            }
            c.stats_to.push(slice_start(c.stats.len()) - 1);
        }
        c
    }
}

/// The 1-based index of the element after the first `len`.
fn slice_start(len: usize) -> i32 {
    i32::try_from(len).map_or(i32::MAX, |n| n.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_grouped_by_probe_and_minute_and_sorted_like_the_sql() {
        let mut p = PendingRows::default();
        let t0: DateTime<Utc> = "2026-12-02T10:30:59.9Z".parse().unwrap();
        let t1: DateTime<Utc> = "2026-12-02T10:31:00Z".parse().unwrap();
        let a = p.run(7, t0);
        p.sample(a, 5, 120, 120, false);
        p.sample(a, 0, 300, 300, false);
        let b = p.run(7, t0);
        p.sample(b, 0, 300, 300, true);
        let c = p.run(7, t1);
        p.sample(c, 0, 10, 10, false);
        let cols = p.columns();
        assert_eq!(cols.counted, 3);
        assert_eq!(cols.probe_id, vec![7, 7]);
        assert_eq!(
            cols.minute,
            vec!["2026-12-02T10:30:00Z".parse::<DateTime<Utc>>().unwrap(), t1]
        );
        assert_eq!(
            (cols.bins_from.clone(), cols.bins_to.clone()),
            (vec![1, 3], vec![2, 3])
        );
        assert_eq!(
            cols.bins,
            vec![(300 << 32) | 2, (5 << 48) | (120 << 32) | 1, (10 << 32) | 1]
        );
        assert_eq!((cols.stats_from, cols.stats_to), (vec![1, 3], vec![2, 3]));
        assert_eq!(
            cols.stats,
            vec![(2 << 24) | 1, (5 << 48) | (1 << 24), 1 << 24]
        );
        assert_eq!(cols.sums, vec![600, 120, 10]);
    }

    #[test]
    fn a_minute_before_1970_is_floored_like_date_trunc() {
        let mut p = PendingRows::default();
        let t: DateTime<Utc> = "1969-12-31T23:59:30Z".parse().unwrap();
        let k = p.run(1, t);
        p.sample(k, 0, 1, 1, false);
        assert_eq!(
            p.columns().minute,
            vec!["1969-12-31T23:59:00Z".parse::<DateTime<Utc>>().unwrap()]
        );
    }

    #[test]
    fn an_overflowing_sum_leaves_the_rows_unused() {
        let mut p = PendingRows::default();
        let t: DateTime<Utc> = "2026-12-02T10:30:00Z".parse().unwrap();
        let k = p.run(1, t);
        p.sample(k, 0, i64::MAX, 1, false);
        p.sample(k, 0, 1, 1, false);
        assert_eq!(p.columns().counted, -1);
    }
}
