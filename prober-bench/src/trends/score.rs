//! Findings scored against the plan, one row per scenario.
//!
//! A step is **detected** by a `step` finding within ±30 minutes of the planted
//! time on `total` (the single-phase step: on `total` or `first_byte`); its
//! **delay** is the finding's `detected_at` (the pass that first stored it)
//! less the planted time; a finding stored before the pass that first read
//! the change's 5-minute point ([`read`]) is not a detection of it, ours or
//! Otava's. A drift is detected by a `drift` finding on
//! `total`. Every other finding is **false**: any finding on a stationary
//! probe, one at the wrong time, phase or kind, and a second finding of the
//! same planted change (counted apart as `duplicates` too). The **phase is
//! named** when the matching finding is on `total` and its summary says
//! "first_byte +" and none of dns, connect, tls moved.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use prober::store::trends::Finding;
use serde::Serialize;

use super::synth::{Plan, Scenario};

/// How far from the planted time a finding may place the change.
pub const TOLERANCE: TimeDelta = TimeDelta::minutes(30);

/// One scenario's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub scenario: String,
    pub every_s: u64,
    pub probes: usize,
    pub detected: usize,
    pub recall: f64,
    /// Minutes from the planted time to the first pass that reported it.
    pub delay_p50_min: Option<f64>,
    pub delay_max_min: Option<f64>,
    pub false_findings: usize,
    pub duplicates: usize,
    pub probe_days: f64,
    pub false_per_1000_probe_days: f64,
    /// Detected changes over all findings of the row's probes.
    pub precision: Option<f64>,
    /// Single-phase steps: changes whose finding named the phase, of those detected.
    pub phase_named: Option<usize>,
}

/// A finding as the scoring needs it, from ours or Otava.
#[derive(Debug, Clone)]
pub struct Found {
    pub probe: String,
    pub kind: String,
    pub phase: String,
    pub change_at: DateTime<Utc>,
    pub detected_at: DateTime<Utc>,
    pub summary: String,
}

impl From<&Finding> for Found {
    fn from(f: &Finding) -> Found {
        Found {
            probe: f.probe.clone(),
            kind: f.kind.clone(),
            phase: f.phase.clone(),
            change_at: f.change_at,
            detected_at: f.detected_at,
            summary: f.summary.clone(),
        }
    }
}

/// Our findings, scored.
pub fn ours(plans: &[Plan], findings: &[Finding], days: f64, every: Duration) -> Vec<Row> {
    let found: Vec<Found> = findings.iter().map(Found::from).collect();
    score(plans, &found, days, every)
}

/// When the 5-minute point holding `change` is first read: the point's end
/// and the 2 minutes a point takes to close (`analysis::next_pass`). A
/// finding stored before it cannot come from the change's runs.
pub fn read(change: DateTime<Utc>) -> DateTime<Utc> {
    let point = TimeDelta::minutes(5);
    change.duration_trunc(point).unwrap_or(change) + point + TimeDelta::minutes(2)
}

/// Whether `f` reports `plan`'s planted change.
fn matches(plan: &Plan, f: &Found) -> bool {
    match plan.scenario {
        Scenario::Stationary => false,
        Scenario::Drift => f.kind == "drift" && f.phase == "total",
        s => {
            let phase_ok =
                f.phase == "total" || (s == Scenario::PhaseStep && f.phase == "first_byte");
            let at_ok = plan
                .change_at
                .is_some_and(|c| (f.change_at - c).abs() <= TOLERANCE && f.detected_at >= read(c));
            f.kind == "step" && phase_ok && at_ok
        }
    }
}

/// "first_byte +…" named, and no other early phase said to have moved.
fn names_phase(f: &Found) -> bool {
    f.phase == "total"
        && f.summary.contains("first_byte +")
        && !["dns +", "connect +", "tls +", "dns -", "connect -", "tls -"]
            .iter()
            .any(|p| f.summary.contains(p))
}

/// Every scenario's row, in plan order.
pub fn score(plans: &[Plan], found: &[Found], days: f64, every: Duration) -> Vec<Row> {
    let mut by_probe: HashMap<&str, Vec<&Found>> = HashMap::new();
    for f in found {
        by_probe.entry(f.probe.as_str()).or_default().push(f);
    }
    let mut rows: Vec<(Scenario, Row, Vec<f64>)> = Vec::new();
    for plan in plans {
        if !rows.iter().any(|(s, _, _)| *s == plan.scenario) {
            let row = Row {
                scenario: plan.scenario.label(),
                every_s: every.as_secs(),
                ..Row::default()
            };
            rows.push((plan.scenario, row, Vec::new()));
        }
        let Some((_, row, delays)) = rows.iter_mut().find(|(s, _, _)| *s == plan.scenario) else {
            continue;
        };
        row.probes += 1;
        row.probe_days += days;
        let mine = by_probe
            .get(plan.meta.name.as_str())
            .cloned()
            .unwrap_or_default();
        let mut hits: Vec<&Found> = mine.iter().copied().filter(|f| matches(plan, f)).collect();
        hits.sort_by_key(|f| f.detected_at);
        row.false_findings += mine.len() - hits.len().min(1);
        row.duplicates += hits.len().saturating_sub(1);
        if let Some(first) = hits.first() {
            row.detected += 1;
            if let Some(c) = plan.change_at {
                delays.push((first.detected_at - c).num_seconds() as f64 / 60.0);
            }
            if plan.scenario == Scenario::PhaseStep {
                let named = hits.iter().any(|f| names_phase(f));
                *row.phase_named.get_or_insert(0) += usize::from(named);
            }
        }
    }
    rows.into_iter()
        .map(|(scenario, mut row, mut delays)| {
            row.recall = row.detected as f64 / row.probes.max(1) as f64;
            row.false_per_1000_probe_days =
                1_000.0 * row.false_findings as f64 / row.probe_days.max(f64::MIN_POSITIVE);
            if scenario != Scenario::Stationary {
                let all = row.detected + row.false_findings;
                row.precision = (all > 0).then(|| row.detected as f64 / all as f64);
            }
            if scenario == Scenario::PhaseStep && row.phase_named.is_none() {
                row.phase_named = Some(0);
            }
            delays.sort_by(f64::total_cmp);
            row.delay_p50_min = delays.get(delays.len().saturating_sub(1) / 2).copied();
            row.delay_max_min = delays.last().copied();
            row
        })
        .collect()
}
