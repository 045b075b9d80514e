//! Steps in one probe's series: change points of each phase's median (and
//! p95 where points hold enough runs), each confirmed on the histograms
//! before and after it, then named by the phases that moved with it.

use chrono::{DateTime, Utc};

use super::series::{bins_of, human_us, merged, phase_name, quantile_series, signed_us};
use crate::run::PHASES;
use crate::store::trends::{NewFinding, Subject, TrendPoint};
use crate::trend::changepoint::{self, ChangePoint};
use crate::trend::compare::{self, Confirmation, Floor};

/// What the step analysis is told.
#[derive(Debug, Clone)]
pub struct StepConfig {
    pub changepoint: changepoint::Config,
    /// The effect a change must have to be reported, and its significance.
    pub floor: Floor,
    /// Points a change needs after it before it is reported: a single bad
    /// point is an outlier, not a step.
    pub min_points_after: usize,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            changepoint: changepoint::Config::default(),
            floor: Floor::default(),
            min_points_after: 4,
        }
    }
}

/// The confirmed steps in `points` (one subject, oldest first).
pub fn steps(
    subject: &Subject,
    points: &[TrendPoint],
    stats: &[(&'static str, f64)],
    cfg: &StepConfig,
) -> Vec<NewFinding> {
    let mut out = Vec::new();
    for phase in 0..PHASES.len() {
        for &(statistic, q) in stats {
            let series = quantile_series(points, phase, q);
            let Ok(found) = changepoint::detect(&series.values, &cfg.changepoint) else {
                continue;
            };
            for cp in &found {
                let (before, after) = segments(&series.index, cp);
                if after.len() < cfg.min_points_after {
                    continue;
                }
                let (b, a) = (pick(points, &before), pick(points, &after));
                let Some(c) = confirmed(&b, &a, phase, &cfg.floor) else {
                    continue;
                };
                let at = points[series.index[cp.index]].time;
                let end = points.last().map_or(at, |p| p.time);
                let moved = if phase == 0 {
                    phase_breakdown(&b, &a, &cfg.floor)
                } else {
                    String::new()
                };
                out.push(finding(
                    subject, phase, statistic, q, &b, &a, &c, at, end, &moved,
                ));
            }
        }
    }
    without_named_phases(out, points)
}

/// A phase's step that the total shows too is already named in the total's
/// finding ("first_byte +48 ms"): one finding per change, not one per phase.
fn without_named_phases(mut found: Vec<NewFinding>, points: &[TrendPoint]) -> Vec<NewFinding> {
    let step = match points {
        [a, b, ..] => (b.time - a.time).abs(),
        _ => chrono::TimeDelta::zero(),
    };
    let totals: Vec<(&'static str, DateTime<Utc>)> = found
        .iter()
        .filter(|f| f.phase == 0)
        .map(|f| (f.statistic, f.change_at))
        .collect();
    found.retain(|f| {
        f.phase == 0
            || !totals
                .iter()
                .any(|(s, at)| *s == f.statistic && (f.change_at - *at).abs() <= step * 6)
    });
    found
}

/// The point indexes of the segments on either side of a change point.
fn segments(index: &[usize], cp: &ChangePoint) -> (Vec<usize>, Vec<usize>) {
    let before = index[cp.before.start..cp.before.end.min(index.len())].to_vec();
    let after = index[cp.after.start.min(index.len())..cp.after.end.min(index.len())].to_vec();
    (before, after)
}

/// The points at `at`, borrowed (a segment's points are merged, not copied).
fn pick<'a>(points: &'a [TrendPoint], at: &[usize]) -> Vec<&'a TrendPoint> {
    at.iter().filter_map(|&i| points.get(i)).collect()
}

/// The distribution test on the merged bins of each side, with the floor.
fn confirmed(
    before: &[&TrendPoint],
    after: &[&TrendPoint],
    phase: usize,
    floor: &Floor,
) -> Option<Confirmation> {
    let (b, a) = (
        merged(before.iter().copied(), phase),
        merged(after.iter().copied(), phase),
    );
    let c = compare::confirm(&bins_of(&b), &bins_of(&a), floor)?;
    c.confirmed().then_some(c)
}

/// "first_byte +48.0 ms; dns, connect, tls unchanged".
fn phase_breakdown(before: &[&TrendPoint], after: &[&TrendPoint], floor: &Floor) -> String {
    let mut moved = Vec::new();
    let mut unchanged = Vec::new();
    for phase in 1..PHASES.len() {
        let (b, a) = (
            merged(before.iter().copied(), phase),
            merged(after.iter().copied(), phase),
        );
        if b.is_empty() || a.is_empty() {
            continue;
        }
        match compare::confirm(&bins_of(&b), &bins_of(&a), floor) {
            Some(c) if c.confirmed() => {
                moved.push(format!("{} {}", phase_name(phase), signed_us(c.shift_us)));
            }
            _ => unchanged.push(phase_name(phase)),
        }
    }
    let mut parts = Vec::new();
    if !moved.is_empty() {
        parts.push(moved.join(", "));
    }
    if !unchanged.is_empty() {
        parts.push(format!("{} unchanged", unchanged.join(", ")));
    }
    parts.join("; ")
}

#[allow(clippy::too_many_arguments)]
fn finding(
    subject: &Subject,
    phase: usize,
    statistic: &'static str,
    q: f64,
    before: &[&TrendPoint],
    after: &[&TrendPoint],
    c: &Confirmation,
    at: DateTime<Utc>,
    end: DateTime<Utc>,
    moved: &str,
) -> NewFinding {
    let value = |pts: &[&TrendPoint]| {
        merged(pts.iter().copied(), phase)
            .value_at_quantile(q)
            .map_or(0.0, |v| v as f64)
    };
    let (b, a) = (value(before), value(after));
    let pct = if b > 0.0 { 100.0 * (a - b) / b } else { 0.0 };
    let mut summary = format!(
        "{} ({}): {} {} {} ({} → {}, {:+.0} %) since {}",
        subject.probe,
        subject.location,
        phase_name(phase),
        statistic,
        signed_us(a - b),
        human_us(b),
        human_us(a),
        pct,
        at.format("%Y-%m-%d %H:%M UTC"),
    );
    if !moved.is_empty() {
        summary.push_str("; ");
        summary.push_str(moved);
    }
    NewFinding {
        probe_id: subject.probe_id,
        location_id: subject.location_id,
        phase: i16::try_from(phase).unwrap_or(0),
        statistic,
        kind: "step",
        change_at: at,
        window_end: end,
        before: b,
        after: a,
        p_value: c.test.p_value,
        effect_size: Some(c.test.cles),
        summary,
    }
}
