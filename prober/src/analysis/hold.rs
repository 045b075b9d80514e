//! A called full analysis' reads, held for the passes after. When a
//! probe's screen calls for the full analysis, it is often called for again
//! on the passes that follow (a young step's p-value falls as points arrive
//! after it), and each read today's window and the same hours of the
//! earlier days anew: on the benchmark's fleet-like mix those reads were
//! two fifths of the analysis' cost, for points that had not changed. Held,
//! the reads are moved on every pass by the points the screen read (those
//! closed since), their last [`READ_AGAIN_POINTS`] read again (late runs),
//! and those that left the window dropped: a full analysis reads nothing
//! more.
//!
//! The screen calls again only as the evidence grows (its p-value three
//! times smaller), every second or third pass on a young step; so the reads
//! are held until the probe has not been called for [`HOLD_PASSES`]
//! passes, moved on every pass by the points the screen reads.
//!
//! Bounded: only called analyses' reads are held (the periodic ones, every
//! probe's every [`FULL_EVERY`](super::screen::FULL_EVERY), read anew and
//! are not held), until the earlier days read do not reach the window, and
//! at most [`HOLD_BYTES`] in all; past that the reads are not held and the
//! next analysis reads, as it did before.

use chrono::{DateTime, TimeDelta, Utc};

use super::tail::TAIL_WIDEN_MINUTES;
use super::window::StepWindow;
use crate::store::trends::TrendPoint;

/// Most bytes of points held over all probes: 16 MiB (a probe's window and
/// earlier days are 0.2–0.3 MB at a run a minute, about 1 MB at a run every
/// 10 s; few probes are called for at once in a fleet).
pub const HOLD_BYTES: usize = 16 << 20;

/// Passes a probe's reads are held without a full analysis using them.
pub const HOLD_PASSES: u32 = 12;

/// Today's last points held that each pass reads again (and replaces):
/// runs written after their point closed (a writer's retries, a replica's
/// late batch) reach the held copy as they reach a fresh read, up to two
/// points (10 minutes at the finest step) late.
pub const READ_AGAIN_POINTS: i32 = 2;

/// A full analysis' points: today's window up to `to` and the earlier days'
/// (day k + 1 back in `earlier[k]`) up to `earlier_to` less k + 1 days.
#[derive(Debug, Clone)]
pub struct Held {
    step: TimeDelta,
    to: DateTime<Utc>,
    earlier_to: DateTime<Utc>,
    /// Passes since a full analysis used them.
    pub idle: u32,
    pub points: Vec<TrendPoint>,
    pub earlier: Vec<Vec<TrendPoint>>,
}

impl Held {
    /// As read for the window `w`: today's points of `[w.from, w.to)`, the
    /// earlier days' up to `earlier_to` (today's clock).
    pub fn new(
        w: &StepWindow,
        earlier_to: DateTime<Utc>,
        points: Vec<TrendPoint>,
        earlier: Vec<Vec<TrendPoint>>,
    ) -> Held {
        Held {
            step: w.step_delta,
            to: w.to,
            earlier_to,
            idle: 0,
            points,
            earlier,
        }
    }

    /// Moved on to the window `w`, `new` being today's points of
    /// `[read_from, w.to)` that the screen read: `None` unless they start
    /// where these end, or when the earlier days held do not reach far
    /// enough past `w.to` for what the analysis reads of them (the
    /// end-of-window tests' baselines: up to [`TAIL_WIDEN_MINUTES`] past
    /// the window's last point's end; a step more kept as a margin).
    pub fn advance(
        mut self,
        w: &StepWindow,
        read_from: DateTime<Utc>,
        new: &[TrendPoint],
    ) -> Option<Held> {
        if !self.reaches(w) || read_from != self.to || w.to < self.to {
            return None;
        }
        let first = self.points.partition_point(|p| p.time < w.from);
        self.points.drain(..first);
        self.points.extend(
            new.iter()
                .filter(|p| p.time >= read_from && p.time < w.to)
                .cloned(),
        );
        for (k, day) in self.earlier.iter_mut().enumerate() {
            let from = w.from - TimeDelta::days(k as i64 + 1);
            let first = day.partition_point(|p| p.time < from);
            day.drain(..first);
        }
        self.to = w.to;
        Some(self)
    }

    /// Whether these reads can be moved on to the window `w`: the same
    /// step, and earlier days reaching as far past `w.to` as the analysis
    /// reads them (see [`Held::advance`]).
    fn reaches(&self, w: &StepWindow) -> bool {
        let reach = w.to + w.step_delta + TimeDelta::minutes(TAIL_WIDEN_MINUTES);
        w.step_delta == self.step && reach <= self.earlier_to
    }

    /// The span of today's points to read again before moving on to the
    /// window `w` ([`READ_AGAIN_POINTS`]); `None` when they cannot be moved
    /// on to it ([`Held::reaches`]): nothing is read for them then.
    pub fn again(&self, w: &StepWindow) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.reaches(w)
            .then(|| (self.to - self.step * READ_AGAIN_POINTS, self.to))
    }

    /// Today's points from `from` (to the end held) replaced by `read`,
    /// read again ([`Held::again`]).
    pub fn refresh(&mut self, from: DateTime<Utc>, read: Vec<TrendPoint>) {
        let first = self.points.partition_point(|p| p.time < from);
        self.points.truncate(first);
        self.points.extend(
            read.into_iter()
                .filter(|p| p.time >= from && p.time < self.to),
        );
    }

    /// The bytes the points held take: the vectors' capacities, inline
    /// and on the heap.
    pub fn bytes(&self) -> usize {
        let point = |p: &TrendPoint| {
            p.phases.capacity() * std::mem::size_of::<crate::results::hist::SparseHist>()
                + p.phases.iter().map(|h| h.heap_bytes()).sum::<usize>()
        };
        let vecs = self.points.capacity() + self.earlier.iter().map(Vec::capacity).sum::<usize>();
        vecs * std::mem::size_of::<TrendPoint>()
            + (self.points.iter())
                .chain(self.earlier.iter().flatten())
                .map(point)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::hist::SparseHist;
    use std::time::Duration;

    const STEP: TimeDelta = TimeDelta::minutes(5);

    fn t(i: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_201_600 + i * 300, 0).unwrap()
    }

    fn point(i: i64) -> TrendPoint {
        let mut h = SparseHist::default();
        h.record(10_000 + i.rem_euclid(288) as u64);
        TrendPoint {
            time: t(i),
            runs: 1,
            failures: 0,
            phases: vec![h],
        }
    }

    fn window(to: i64) -> StepWindow {
        StepWindow {
            step: Duration::from_secs(300),
            step_delta: STEP,
            from: t(to - 96),
            to: t(to),
            stats: vec![("p50", 0.5)],
        }
    }

    /// Day `back` days back: points of today's clock times `[from, to)`.
    fn day(back: i64, from: i64, to: i64) -> Vec<TrendPoint> {
        (from..to)
            .map(|i| point(i - back * 288))
            .collect::<Vec<_>>()
    }

    #[test]
    fn advanced_it_holds_what_a_read_of_the_new_window_gives() {
        let read_to = 200 + 24; // the earlier days read 2 hours past the window
        let held = Held::new(
            &window(200),
            t(read_to),
            (104..200).map(point).collect(),
            vec![day(1, 104, read_to), day(2, 104, read_to)],
        );
        let new: Vec<TrendPoint> = (200..201).map(point).collect();
        let held = held
            .advance(&window(201), t(200), &new)
            .expect("consecutive");
        let times = |ps: &[TrendPoint]| ps.iter().map(|p| p.time).collect::<Vec<_>>();
        assert_eq!(
            times(&held.points),
            times(&(105..201).map(point).collect::<Vec<_>>())
        );
        assert_eq!(held.earlier[0].first().unwrap().time, t(105 - 288));
        assert_eq!(held.earlier[1].first().unwrap().time, t(105 - 2 * 288));
        assert_eq!(held.earlier[0].len(), read_to as usize - 105);
        assert!(held.bytes() > 0);
    }

    #[test]
    fn the_last_points_read_again_replace_those_held() {
        let mut held = Held::new(
            &window(200),
            t(224),
            (104..200).map(point).collect(),
            vec![day(1, 104, 224), day(2, 104, 224)],
        );
        let (from, to) = held.again(&window(201)).unwrap();
        assert_eq!((from, to), (t(198), t(200)));
        // Point 199 gained late runs; 198 none.
        let mut late = point(199);
        late.runs = 7;
        held.refresh(from, vec![point(198), late]);
        assert_eq!(held.points.len(), 96);
        assert_eq!(held.points.last().unwrap().runs, 7);
        assert_eq!(held.points[94].time, t(198));
        let mut other = window(201);
        other.step_delta = TimeDelta::minutes(10);
        assert!(held.again(&other).is_none());
    }

    #[test]
    fn a_gap_another_step_or_earlier_days_too_short_read_anew() {
        let held = || {
            Held::new(
                &window(200),
                t(224),
                (104..200).map(point).collect(),
                vec![day(1, 104, 224), day(2, 104, 224)],
            )
        };
        let new: Vec<TrendPoint> = (200..202).map(point).collect();
        // A pass without a full analysis in between: the screen read from
        // 201, not where these end.
        assert!(held().advance(&window(202), t(201), &new[1..]).is_none());
        let mut other = window(201);
        other.step_delta = TimeDelta::minutes(10);
        assert!(held().advance(&other, t(200), &new[..1]).is_none());
        // The earlier days reach 224: a window to 217 reads up to 224
        // (a step and 30 minutes on); one to 218 would read past them.
        assert!(held().advance(&window(217), t(200), &new).is_some());
        assert!(held().advance(&window(218), t(200), &new).is_none());
    }
}
