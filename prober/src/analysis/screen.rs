//! The screen: what a pass needs to know whether a probe's full analysis is
//! worth reading for. Reading a probe's step series (8 hours of every
//! phase's bins, and the same hours of two earlier days) is most of a pass's
//! cost, and on most passes nothing changed. So each probe keeps, between
//! passes, a light copy of its series: per point the runs, failures, and the
//! total's p50 and p95 as ratios to the same clock time on the earlier days
//! (their mean), where the daily cycle cancels. A pass reads only today's
//! points closed since the last one (the earlier days' at those times were
//! read by the last periodic full analysis, two hours ahead), and runs the
//! change-point test on the ratios and on the failure ratio, and a cheap
//! end-of-window test on the p50 ratios ([`tail`], for `tail.rs`). The full
//! analysis runs when either finds a change it has not seen, or
//! one it has seen that is now as strong as its own test asks (a change
//! point) or [`CALL_AGAIN_FACTOR`] times stronger (today's window and the earlier
//! days' at the same times), and otherwise once every
//! [`FULL_EVERY`] (everything read anew, the screen rebuilt), so a step in
//! one phase alone that the total does not show is found within that much
//! more.
//!
//! On the raw total the daily cycle alone makes change points in most 8-hour
//! windows (the full analysis rejects them against the earlier days); on the
//! ratios it does not. A step of the total is a step of its ratio, so the
//! full analysis still runs for it; a probe without an earlier day has no
//! ratios, and no step of it is reported before it has one (`steps.rs`).

use chrono::{DateTime, TimeDelta, Utc};

use super::series::seasonal_base;
use super::steps;
use crate::store::trends::TrendPoint;
use crate::trend::{changepoint, pvalue};

/// The screen's change-point test takes p-values up to this many times the
/// full analysis' threshold.
pub const SCREEN_LAXER: f64 = 10.0;

/// How often a probe's full analysis runs when its screen shows no change.
pub const FULL_EVERY: TimeDelta = TimeDelta::hours(2);

/// A change point the full analysis has seen calls for it again while its
/// p-value is within the full analysis' own threshold (the evidence a
/// finding needs), and otherwise only when its p-value has become this
/// many times smaller (the evidence grew: a real step's p-value falls as
/// points arrive after it; a chance one's wanders in the screen's laxer
/// band). Without this, a change point called for once called every pass
/// while it stayed in the window: on stationary probes, two thirds of the
/// full analyses.
pub const CALL_AGAIN_FACTOR: f64 = 3.0;

/// How far past a full analysis' window the earlier days are read: the
/// bases of the points to come until the next one.
pub fn read_ahead() -> TimeDelta {
    FULL_EVERY
}

/// One point of a screen: 20 bytes (8 hours at 5 minutes: 96 points, about
/// 2.2 KB a probe and location with the bases of the 2 hours ahead, 12
/// bytes a point; 22 MB for 10,000).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Light {
    /// Minutes since the Unix epoch.
    minute: u32,
    runs: u32,
    failures: u32,
    /// The total's p50 and p95 over the mean of the earlier days' at the
    /// same clock time; NaN without a sample or an earlier day.
    p50: f32,
    p95: f32,
}

/// The total's quantile `q` of a point.
fn total_at(p: &TrendPoint, q: f64) -> Option<f64> {
    p.phases
        .first()
        .and_then(|h| h.value_at_quantile(q))
        .map(|v| v as f64)
}

/// The mean of the earlier days' total p50 and p95 at one clock time (NaN
/// where no earlier day has a sample).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Base {
    /// Minutes since the Unix epoch of today's point it is the base of.
    minute: u32,
    p50: f32,
    p95: f32,
}

fn minute_of(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp().div_euclid(60)).unwrap_or(0)
}

impl Base {
    /// The base of today's point at `at` from `earlier` days (day k + 1
    /// back in `earlier[k]`, sorted by time).
    fn at(at: DateTime<Utc>, earlier: &[Vec<TrendPoint>]) -> Base {
        let mean =
            |q: f64| -> f32 { seasonal_base(at, earlier, 0, q).map_or(f32::NAN, |b| b as f32) };
        Base {
            minute: minute_of(at),
            p50: mean(0.5),
            p95: mean(0.95),
        }
    }
}

impl Light {
    /// `p` with its ratios to `base` (NaN without one).
    fn of(p: &TrendPoint, base: Option<&Base>) -> Light {
        let ratio = |q: f64, b: Option<f32>| -> f32 {
            match (total_at(p, q), b) {
                (Some(v), Some(b)) if b > 0.0 => (v / f64::from(b)) as f32,
                _ => f32::NAN,
            }
        };
        Light {
            minute: minute_of(p.time),
            runs: u32::try_from(p.runs.max(0)).unwrap_or(u32::MAX),
            failures: u32::try_from(p.failures.max(0)).unwrap_or(u32::MAX),
            p50: ratio(0.5, base.map(|b| b.p50)),
            p95: ratio(0.95, base.map(|b| b.p95)),
        }
    }

    fn time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(i64::from(self.minute) * 60, 0).unwrap_or_default()
    }
}

/// A probe's light series at one location, as of the last pass.
#[derive(Debug, Clone)]
pub struct Screen {
    step: TimeDelta,
    /// The end of the last point read.
    to: DateTime<Utc>,
    /// When the last full analysis ran (its `to`).
    full_at: DateTime<Utc>,
    points: Vec<Light>,
    /// The bases of the points to come until the next full analysis, from
    /// the earlier days it read: a pass reads only today's new points.
    ahead: Vec<Base>,
    /// The change points (and end-of-window changes) the full analysis has
    /// seen since: not called for again (`CALL_AGAIN_FACTOR`).
    seen: Vec<Seen>,
    /// Those the last `extend` called the full analysis for: seen once it
    /// has run ([`Screen::acted`]); a pass that failed calls again.
    called: Vec<Seen>,
}

/// Which of the screen's series a change point is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Series {
    P50,
    P95,
    Failures,
    /// The p50 ratios' end-of-window test ([`tail`]).
    Tail,
}

/// A change point (or end-of-window change, [`Series::Tail`]) the full
/// analysis has seen.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    series: Series,
    /// Minutes since the Unix epoch of its first point after.
    minute: u32,
    rising: bool,
    p_value: f64,
}

impl Seen {
    /// Whether `other` is this change point again (moved by at most `near`
    /// minutes as points arrive).
    fn matches(&self, other: &Seen, near: u32) -> bool {
        self.series == other.series
            && self.rising == other.rising
            && self.minute.abs_diff(other.minute) <= near
    }
}

/// What a pass does for one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No point closed since the last pass: nothing to analyse.
    Nothing,
    /// Read the points in `[from, to)` and [`Screen::extend`] with them.
    Extend { from: DateTime<Utc> },
    /// Read the whole window and analyse it fully.
    Full,
}

impl Screen {
    /// A screen from a full analysis' points of `[.., to)` at `step`, and
    /// the earlier days' (day k + 1 back in `earlier[k]`), which must reach
    /// [`FULL_EVERY`] past `to` (see [`read_ahead`]). The next full analysis
    /// is due after `FULL_EVERY` less `offset` (spread over probes, so the
    /// passes that run them do not all fall together).
    pub fn new(
        step: TimeDelta,
        to: DateTime<Utc>,
        offset: TimeDelta,
        points: &[TrendPoint],
        earlier: &[Vec<TrendPoint>],
    ) -> Screen {
        let full_at = to - offset;
        let mut ahead = Vec::new();
        let mut t = to;
        while t < full_at + FULL_EVERY && step > TimeDelta::zero() {
            ahead.push(Base::at(t, earlier));
            t += step;
        }
        Screen {
            step,
            to,
            full_at,
            points: (points.iter())
                .map(|p| Light::of(p, Some(&Base::at(p.time, earlier))))
                .collect(),
            ahead,
            seen: Vec::new(),
            called: Vec::new(),
        }
    }

    /// How far `to` is past the last due time of the periodic analysis
    /// (less than [`FULL_EVERY`]): the offset that keeps a rebuilt screen
    /// on its schedule.
    pub fn behind_schedule(&self, to: DateTime<Utc>) -> TimeDelta {
        let every = FULL_EVERY.num_seconds().max(1);
        TimeDelta::seconds((to - self.full_at).num_seconds().rem_euclid(every))
    }

    /// What to read for the window ending at `to`, at `step`.
    pub fn plan(&self, step: TimeDelta, to: DateTime<Utc>) -> Plan {
        if step != self.step || to < self.to {
            Plan::Full
        } else if to == self.to {
            Plan::Nothing
        } else if to - self.full_at >= FULL_EVERY {
            Plan::Full
        } else {
            Plan::Extend { from: self.to }
        }
    }

    /// Appends the points read for `[self.to, to)`, drops those before
    /// `from`, and says whether the change-point test finds a change in the
    /// total's p50 ratios (and p95's when `with_p95`) or the failure ratio
    /// with at least `min_after` points after it, or the end-of-window test
    /// a change of the p50 ratios, that calls for the full analysis (see
    /// [`Screen::test`]): it is then due, and
    /// [`Screen::acted`] once it has run.
    pub fn extend(
        &mut self,
        new: &[TrendPoint],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        with_p95: bool,
        cfg: &changepoint::Config,
        min_after: usize,
    ) -> bool {
        for p in new {
            let m = minute_of(p.time);
            let base = (self.ahead.binary_search_by_key(&m, |b| b.minute).ok())
                .and_then(|i| self.ahead.get(i));
            self.points.push(Light::of(p, base));
        }
        let first = self.points.partition_point(|p| p.time() < from);
        self.points.drain(..first);
        self.to = to;
        self.seen.retain(|c| c.minute >= minute_of(from));
        self.test(with_p95, cfg, min_after, true)
    }

    /// Records every change point the screen's test finds now as seen: the
    /// full analysis has just read the whole window.
    pub fn settle(&mut self, with_p95: bool, cfg: &changepoint::Config, min_after: usize) {
        self.test(with_p95, cfg, min_after, false);
    }

    /// The full analysis the last `extend` called for has run and its
    /// findings are saved: the change points it was called for are seen.
    pub fn acted(&mut self) {
        for c in std::mem::take(&mut self.called) {
            self.see(c);
        }
    }

    /// Records `c` as seen, in place of the one it matches.
    fn see(&mut self, c: Seen) {
        let near = self.near();
        match self.seen.iter_mut().find(|s| s.matches(&c, near)) {
            Some(s) => *s = c,
            None => self.seen.push(c),
        }
    }

    /// How far apart (minutes) two change points may be and be one.
    fn near(&self) -> u32 {
        u32::try_from(self.step.num_minutes() * i64::from(steps::SPREAD_POINTS)).unwrap_or(u32::MAX)
    }

    /// Runs the change-point test on the total's p50 ratios (and p95's when
    /// `with_p95`) and the failure ratio; says, when `call`, whether it
    /// finds a change point with at least `min_after` points after it that
    /// the full analysis has not seen, or has seen but that is now as
    /// strong as the full test asks or [`CALL_AGAIN_FACTOR`] times stronger
    /// than when seen, or an end-of-window change of the p50 ratios ([`tail`])
    /// not seen or [`CALL_AGAIN_FACTOR`] times stronger than when seen;
    /// those are kept in `called` until [`Screen::acted`]. Without `call`,
    /// every one found is recorded as seen.
    fn test(
        &mut self,
        with_p95: bool,
        cfg: &changepoint::Config,
        min_after: usize,
        call: bool,
    ) -> bool {
        // A laxer test than the full analysis': the ratios are noisier than
        // the total (an earlier day's noise is in them), and a change the
        // full analysis would find must not wait for the screen.
        let strong = cfg.max_pvalue;
        let cfg = changepoint::Config {
            max_pvalue: (cfg.max_pvalue * SCREEN_LAXER).min(1.0),
            ..cfg.clone()
        };
        let latency = |q: fn(&Light) -> f32| -> Vec<(u32, f64)> {
            (self.points.iter())
                .filter(|p| !q(p).is_nan())
                .map(|p| (p.minute, f64::from(q(p))))
                .collect()
        };
        let failures: Vec<(u32, f64)> = (self.points.iter())
            .map(|p| (p.minute, f64::from(p.failures) / f64::from(p.runs.max(1))))
            .collect();
        let mut series = vec![(Series::P50, latency(|p| p.p50))];
        if with_p95 {
            series.push((Series::P95, latency(|p| p.p95)));
        }
        series.push((Series::Failures, failures));
        let near = self.near();
        self.called.clear();
        let mut called = false;
        let tail_found = tail(&series[0].1);
        for (which, points) in series {
            let values: Vec<f64> = points.iter().map(|p| p.1).collect();
            let Ok(cps) = changepoint::detect(&values, &cfg) else {
                continue;
            };
            for cp in cps {
                let after = cp.after.end.saturating_sub(cp.after.start);
                let Some(&(minute, _)) = points.get(cp.index) else {
                    continue;
                };
                if after < min_after {
                    continue;
                }
                let found = Seen {
                    series: which,
                    minute,
                    rising: cp.after.mean > cp.before.mean,
                    p_value: cp.p_value,
                };
                let same = self.seen.iter().find(|c| c.matches(&found, near));
                match same {
                    Some(c)
                        if cp.p_value > strong && cp.p_value * CALL_AGAIN_FACTOR > c.p_value => {}
                    _ if call => {
                        self.called.push(found);
                        called = true;
                    }
                    _ => self.see(found),
                }
            }
        }
        // The end-of-window test's p-value of a real step falls fast as
        // its runs arrive; it calls again only as it does (about every
        // pass while the step is young), whatever its size, and is seen as
        // a change point is.
        if let Some(found) = tail_found {
            match self.seen.iter().find(|c| c.matches(&found, near)) {
                // `>=`: two p-values of 0 (|z| over ~38 on a high-rate
                // probe) are not a stronger call.
                Some(c) if found.p_value * CALL_AGAIN_FACTOR >= c.p_value => {}
                _ if call => {
                    self.called.push(found);
                    called = true;
                }
                _ => self.see(found),
            }
        }
        called
    }
}

/// The screen's p-value below which the end of the p50 ratios calls for the
/// full analysis (its end-of-window test, `tail.rs`).
pub const TAIL_CALL_PVALUE: f64 = 0.01;

/// The end-of-window test on the total's p50 ratios (minute, ratio), a
/// cheap stand-in for `tail.rs`' on the runs: for each k of
/// `TAIL_MIN_POINTS` to `TAIL_MAX_POINTS`, the mean log ratio of the last k
/// points against the up to `TAIL_BEFORE_POINTS` before them (z with the
/// before segment's variance); the k with the smallest p, if under
/// [`TAIL_CALL_PVALUE`].
fn tail(points: &[(u32, f64)]) -> Option<Seen> {
    use super::tail::{TAIL_BEFORE_POINTS, TAIL_MAX_POINTS, TAIL_MIN_BEFORE, TAIL_MIN_POINTS};
    let logs: Vec<f64> = (points.iter())
        .map(|p| if p.1 > 0.0 { p.1.ln() } else { f64::NAN })
        .collect();
    if logs.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let n = logs.len();
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let mut best: Option<Seen> = None;
    for k in TAIL_MIN_POINTS..=TAIL_MAX_POINTS.min(n.saturating_sub(TAIL_MIN_BEFORE)) {
        let at = n - k;
        let (before, after) = (
            &logs[at.saturating_sub(TAIL_BEFORE_POINTS)..at],
            &logs[at..],
        );
        let mb = mean(before);
        let var = before.iter().map(|v| (v - mb).powi(2)).sum::<f64>() / (before.len() - 1) as f64;
        if var <= 0.0 {
            continue;
        }
        let d = mean(after) - mb;
        let z = d / (var * (1.0 / k as f64 + 1.0 / before.len() as f64)).sqrt();
        let p_value = pvalue::normal_two_sided(z);
        if p_value < TAIL_CALL_PVALUE && best.is_none_or(|b| p_value < b.p_value) {
            best = Some(Seen {
                series: Series::Tail,
                minute: points[at].0,
                rising: d > 0.0,
                p_value,
            });
        }
    }
    best
}

#[cfg(test)]
#[path = "screen_tests.rs"]
mod tests;
