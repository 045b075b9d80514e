//! Each probe's hourly medians kept between passes, for the drift analysis.
//! A drift is analysed once for every closed hour over the week before it;
//! reading that week of every phase's bins was a fifth of the analysis'
//! cost (5 ms a probe and hour on the benchmark's fleet-like mix), for one
//! new hour of seven days. So a probe keeps, per hour, the few numbers the
//! drift test reads (each phase's median, and the total at the forecast's
//! quantile), each as the key of its bin (a quantile is a bin's high end,
//! and a key fits in 13 bits): 20 bytes an hour, 3.4 KB a probe and
//! location for the week, 34 MB for 10,000. An analysis reads the hours
//! closed since the last one and the last one again (a run that finished
//! after its hour closed), and the whole week once every
//! [`READ_WHOLE_EVERY`] (anything later still).

use chrono::{DateTime, TimeDelta, Utc};

use crate::results::hist::{bin_key, bin_of_key};
use crate::run::PHASES;
use crate::store::trends::TrendPoint;
use crate::trend::drift::Point;

/// How often a probe's week of hours is read whole instead of extended.
pub const READ_WHOLE_EVERY: TimeDelta = TimeDelta::days(1);

/// How far back an extension reads again: the last hour read, whose runs
/// may have grown since.
pub const READ_AGAIN: TimeDelta = TimeDelta::hours(1);

/// A value not there: no sample of the phase in the hour.
const NONE: u16 = u16::MAX;

/// One hour's numbers, as the keys of their bins ([`bin_key`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hour {
    /// Hours since the Unix epoch.
    hour: u32,
    p50: [u16; PHASES.len()],
    /// The total at [`Hourly::q`]; [`NONE`] without a forecast quantile.
    at_q: u16,
}

/// The bin key of a point's phase at `q` (> 0): the quantile is the high
/// end of its bin, which the key gives back exactly ([`value_of`]).
fn key(p: &TrendPoint, phase: usize, q: f64) -> u16 {
    p.phases
        .get(phase)
        .and_then(|h| h.value_at_quantile(q))
        .map_or(NONE, |v| u16::try_from(bin_key(v)).unwrap_or(NONE))
}

/// The value (µs) a [`key`] stands for.
fn value_of(key: u16) -> f64 {
    bin_of_key(i32::from(key)).1 as f64
}

impl Hour {
    fn of(p: &TrendPoint, q: Option<f64>) -> Hour {
        Hour {
            hour: u32::try_from(p.time.timestamp().div_euclid(3600)).unwrap_or(0),
            p50: std::array::from_fn(|phase| key(p, phase, 0.5)),
            at_q: q.map_or(NONE, |q| key(p, 0, q)),
        }
    }

    /// Seconds since the Unix epoch of the hour's start.
    fn at(&self) -> i64 {
        i64::from(self.hour) * 3600
    }
}

/// A probe and location's hourly numbers over the drift window, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Hourly {
    /// The quantile of the total kept beside the medians: the `latency`
    /// alert's, for the forecast.
    q: Option<f64>,
    /// When the window was last read whole (its end).
    whole_at: DateTime<Utc>,
    /// The end of the last hour read.
    to: DateTime<Utc>,
    hours: Vec<Hour>,
}

impl Hourly {
    /// From the whole window's hourly points, read up to `to`.
    pub fn of(points: &[TrendPoint], q: Option<f64>, to: DateTime<Utc>) -> Hourly {
        Hourly {
            q,
            whole_at: to,
            to,
            hours: points.iter().map(|p| Hour::of(p, q)).collect(),
        }
    }

    /// Where to read from to bring these hours up to `to` with the total at
    /// `q` kept: `None` when the window must be read whole (the quantile
    /// changed, time went back, or [`READ_WHOLE_EVERY`] has passed).
    pub fn read_from(&self, q: Option<f64>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let same_q = self.q.map(f64::to_bits) == q.map(f64::to_bits);
        (same_q && to >= self.to && to - self.whole_at < READ_WHOLE_EVERY)
            .then(|| self.to - READ_AGAIN)
    }

    /// Extended by `read`, the hourly points of `[read_from, to)`
    /// ([`Hourly::read_from`]), those before `from` (the window's start) dropped.
    pub fn extend(
        &mut self,
        read: &[TrendPoint],
        read_from: DateTime<Utc>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) {
        let (read_from, from) = (read_from.timestamp(), from.timestamp());
        self.hours.retain(|h| h.at() >= from && h.at() < read_from);
        self.hours.extend(read.iter().map(|p| Hour::of(p, self.q)));
        self.to = to;
    }

    /// The hours of `pick` (a value per hour, [`NONE`] left out) as points.
    fn points(&self, pick: impl Fn(&Hour) -> u16) -> Vec<Point> {
        (self.hours.iter())
            .filter_map(|h| {
                let k = pick(h);
                (k != NONE).then(|| Point {
                    at: h.at() as f64,
                    value: value_of(k),
                })
            })
            .collect()
    }

    /// A phase's (index into [`PHASES`]) hourly medians.
    pub fn medians(&self, phase: usize) -> Vec<Point> {
        self.points(|h| h.p50.get(phase).copied().unwrap_or(NONE))
    }

    /// The total's hourly values at the quantile these hours keep; empty
    /// when they keep none.
    pub fn at_quantile(&self) -> Vec<Point> {
        self.points(|h| h.at_q)
    }

    /// The quantile of the total these hours keep.
    pub fn quantile(&self) -> Option<f64> {
        self.q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::hist::SparseHist;

    fn at(hour: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000 / 3600 * 3600 + hour * 3600, 0).unwrap()
    }

    /// An hour whose every phase holds `runs` samples around `base` µs.
    fn hour(h: i64, base: u64, runs: u64) -> TrendPoint {
        let phase = |k: u64| {
            let mut s = SparseHist::default();
            for r in 0..runs {
                s.record(base * (k + 1) + r * 37 + (h as u64 % 7) * 101);
            }
            s
        };
        TrendPoint {
            time: at(h),
            runs: runs as i64,
            failures: 0,
            phases: (0..PHASES.len() as u64).map(phase).collect(),
        }
    }

    #[test]
    fn extending_hour_by_hour_keeps_what_a_whole_read_gives() {
        let week: Vec<TrendPoint> = (0..200).map(|h| hour(h, 20_000, 60)).collect();
        let window = 168;
        let q = Some(0.99);
        let mut kept = Hourly::of(&week[..window], q, at(window as i64));
        let mut whole_reads = 0;
        for end in window + 1..=week.len() {
            let (from, to) = (at((end - window) as i64), at(end as i64));
            let whole = Hourly::of(&week[end - window..end], q, to);
            match kept.read_from(q, to) {
                Some(read_from) => {
                    let first = week.iter().position(|p| p.time >= read_from).unwrap();
                    assert_eq!(first, end - 2, "the last hour read again, and the new one");
                    kept.extend(&week[first..end], read_from, from, to);
                }
                None => {
                    whole_reads += 1;
                    kept = whole.clone();
                }
            }
            for phase in 0..PHASES.len() {
                assert_eq!(kept.medians(phase), whole.medians(phase), "phase {phase}");
            }
            assert_eq!(kept.at_quantile(), whole.at_quantile());
            assert_eq!(kept.medians(0).len(), window);
        }
        // 32 hours: read whole once, after a day.
        assert_eq!(whole_reads, 1);
    }

    #[test]
    fn the_last_hour_read_again_takes_its_late_runs() {
        let mut week: Vec<TrendPoint> = (0..169).map(|h| hour(h, 20_000, 60)).collect();
        let mut kept = Hourly::of(&week[1..168], None, at(168));
        assert!(kept.medians(0)[166].value < 30_000.0);
        // Hour 167 grows after it was read: its median moves.
        week[167] = hour(167, 40_000, 600);
        let from = kept.read_from(None, at(169)).unwrap();
        assert_eq!(from, at(167));
        kept.extend(&week[167..], from, at(1), at(169));
        let whole = Hourly::of(&week[1..], None, at(169));
        assert_eq!(kept.medians(0), whole.medians(0));
        assert_eq!(kept.medians(0)[166].at, at(167).timestamp() as f64);
        assert!(kept.medians(0)[166].value >= 40_000.0);
        assert!(kept.at_quantile().is_empty(), "no forecast quantile kept");
    }

    #[test]
    fn a_new_quantile_time_going_back_or_a_day_read_the_window_whole() {
        let week: Vec<TrendPoint> = (0..168).map(|h| hour(h, 20_000, 10)).collect();
        let kept = Hourly::of(&week, Some(0.95), at(168));
        assert!(kept.read_from(Some(0.95), at(169)).is_some());
        assert!(kept.read_from(Some(0.99), at(169)).is_none());
        assert!(kept.read_from(None, at(169)).is_none());
        assert!(kept.read_from(Some(0.95), at(167)).is_none());
        assert!(kept.read_from(Some(0.95), at(168 + 23)).is_some());
        assert!(kept.read_from(Some(0.95), at(168 + 24)).is_none());
        assert_eq!(kept.quantile(), Some(0.95));
    }

    /// The keys give back exactly the quantiles the drift test read
    /// before they were kept as keys, from a µs to the bins' top.
    #[test]
    fn a_kept_key_is_the_quantile_it_stands_for() {
        let mut values: Vec<u64> = (0..40).map(|e| 1u64 << (e * 32 / 40)).collect();
        values.extend([1, 7, 255, 256, 257, 999, 12_345, 3_600_000_000, u64::MAX]);
        for v in values {
            let mut h = SparseHist::default();
            h.record(v);
            let p = TrendPoint {
                time: at(0),
                runs: 1,
                failures: 0,
                phases: vec![h.clone()],
            };
            for q in [0.5, 0.99] {
                let exact = h.value_at_quantile(q).unwrap() as f64;
                assert_eq!(value_of(key(&p, 0, q)), exact, "{v} at {q}");
            }
        }
        assert_eq!(std::mem::size_of::<Hour>(), 20);
    }

    #[test]
    fn an_hour_without_a_phase_is_left_out_of_its_series() {
        let mut p = hour(0, 20_000, 5);
        p.phases[3] = SparseHist::default();
        let kept = Hourly::of(&[p, hour(1, 20_000, 5)], None, at(2));
        assert_eq!(kept.medians(3).len(), 1);
        assert_eq!(kept.medians(0).len(), 2);
        assert_eq!(kept.medians(PHASES.len()).len(), 0);
    }
}
