//! The rules that read merged data of every location, evaluated by the
//! replica holding the evaluator lock: `latency`, `slo_page`/`slo_ticket`,
//! k-of-n `failing/all` and `trend` (open trend findings). The inputs are read first (a few queries for
//! every probe), then each rule's verdict moves its `…/all` alert.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::observe::Moved;
use super::{AlertEngine, AlertMap, ProbeEntry, ALL_LOCATIONS, RULE_FAILING};
use super::{RULE_LATENCY, RULE_SLO_PAGE, RULE_SLO_TICKET, RULE_TREND};
use crate::alert::burn::{self, Counts};
use crate::alert::rules::OpenTrends;
use crate::alert::{persist, rules, Alert, Before, Change, LastFailure, Severity, Verdict};
use crate::store::trends::FindingFilter;
use crate::store::{Resolution, Store};

/// Most open trend findings read per evaluation (newest first).
const MAX_OPEN_TRENDS: i64 = 1000;

/// What the periodic rules read from Postgres, by probe.
#[derive(Debug, Default)]
struct Inputs {
    /// Runs and failures of each burn-rate window ([`burn::windows`] order).
    counts: HashMap<String, Vec<Counts>>,
    /// Locations where the probe's `failing` alert fires.
    failing_at: HashMap<String, Vec<String>>,
    /// The latency rule's quantile (µs); `None` inside: no runs in the window.
    quantiles: HashMap<String, Option<i64>>,
    /// Open trend findings by probe; `None`: they could not be read (the
    /// `trend` rule waits for the next evaluation rather than resolve).
    trends: Option<HashMap<String, OpenTrends>>,
    /// Probes whose `trend` alert is active.
    trend_active: Vec<String>,
}

impl AlertEngine {
    /// The periodic rules of every probe that has one, from merged data of every location.
    pub(super) async fn evaluate_periodic(&self, now: DateTime<Utc>) -> Vec<Change> {
        let trends = open_trends(&self.store).await;
        let trend_active: Vec<String> = (self.alerts.lock().values())
            .filter(|a| a.rule == RULE_TREND && a.is_active())
            .map(|a| a.probe.clone())
            .collect();
        let entries: Vec<(String, Arc<ProbeEntry>)> = (self.probes.read().iter())
            .filter(|(n, e)| {
                let p = &e.policy;
                let trend =
                    trends.as_ref().is_some_and(|t| t.contains_key(*n)) || trend_active.contains(n);
                p.enabled
                    && (p.latency.is_some() || p.slo.is_some() || p.min_locations > 1 || trend)
            })
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        if entries.is_empty() {
            return Vec::new();
        }
        let Some(mut inputs) = self.read_inputs(&entries, now).await else {
            return Vec::new();
        };
        inputs.trends = trends;
        inputs.trend_active = trend_active;
        let mut alerts = self.alerts.lock();
        let mut changes = Vec::new();
        for (name, entry) in &entries {
            for (rule, v) in verdicts(name, entry, &inputs) {
                let mut a = alerts
                    .remove(&format!("{name}/{rule}/{ALL_LOCATIONS}"))
                    .unwrap_or_else(|| {
                        Box::new(Alert::new(name, rule, ALL_LOCATIONS, v.severity, now))
                    });
                let before = Before::of(&a);
                let t = a.evaluate(&v, now);
                if let Some(f) = v.failed {
                    a.failed_runs = f;
                    a.last_failure = latest_failure(&alerts, name);
                }
                let moved = Moved { t, before };
                self.settle(&mut alerts, a, moved, entry, now, &mut changes);
            }
        }
        changes
    }

    /// Reads what the rules of `entries` need; `None` when a read every
    /// probe depends on failed (the next evaluation tries again).
    async fn read_inputs(
        &self,
        entries: &[(String, Arc<ProbeEntry>)],
        now: DateTime<Utc>,
    ) -> Option<Inputs> {
        let names = |f: fn(&ProbeEntry) -> bool| -> Vec<String> {
            (entries.iter())
                .filter(|(_, e)| f(e))
                .map(|(n, _)| n.clone())
                .collect()
        };
        let mut inputs = Inputs::default();
        // Burn-rate windows of every SLO probe, in two queries.
        let slo_names = names(|e| e.policy.slo.is_some());
        if !slo_names.is_empty() {
            match persist::window_counts(&self.store, &slo_names, &burn::windows(), now).await {
                Ok(c) => inputs.counts = c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read run counts for SLO burn rates; will retry at the next evaluation");
                    return None;
                }
            }
        }
        // Locations where each k-of-n probe's `failing` alert fires.
        let kn_names = names(|e| e.policy.min_locations > 1);
        if !kn_names.is_empty() {
            match persist::firing_locations(&self.store, &kn_names, RULE_FAILING).await {
                Ok(f) => inputs.failing_at = f,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read which locations fail; will retry at the next evaluation");
                    return None;
                }
            }
        }
        // Latency quantiles, one query per probe with a latency rule.
        for (name, e) in entries {
            let Some(l) = e.policy.latency else { continue };
            let from = now - chrono::Duration::from_std(l.over).unwrap_or(chrono::Duration::zero());
            let to = now + chrono::Duration::minutes(1);
            let q = (self.store)
                .quantile(name, 0, Resolution::Minute, from, to, l.quantile)
                .await;
            match q {
                Ok(q) => {
                    inputs.quantiles.insert(name.clone(), q);
                }
                Err(e) => {
                    tracing::warn!(probe = %name, error = %e, "cannot read latency for the latency rule; will retry at the next evaluation");
                }
            }
        }
        Some(inputs)
    }
}

/// The verdicts of a probe's periodic rules, in the order they are applied.
fn verdicts(name: &str, entry: &ProbeEntry, inputs: &Inputs) -> Vec<(&'static str, Verdict)> {
    let p = &entry.policy;
    let counts = inputs.counts.get(name).map_or(&[][..], Vec::as_slice);
    let failing_at = inputs.failing_at.get(name).map_or(&[][..], Vec::as_slice);
    let quantile = inputs.quantiles.get(name).copied().flatten();
    let trend = inputs.trends.as_ref().and_then(|t| {
        let active = inputs.trend_active.iter().any(|n| n == name);
        rules::trend(t.get(name), active, p.trend_severity)
    });
    [
        (RULE_SLO_PAGE, rules::slo(counts, p, Severity::Page)),
        (RULE_SLO_TICKET, rules::slo(counts, p, Severity::Ticket)),
        (RULE_FAILING, rules::k_of_n(failing_at, p)),
        (RULE_LATENCY, rules::latency(quantile, p)),
        (RULE_TREND, trend),
    ]
    .into_iter()
    .filter_map(|(rule, v)| Some((rule, v?)))
    .collect()
}

/// The newest last failure among a probe's `failing` alerts (any location).
fn latest_failure(alerts: &AlertMap, probe: &str) -> Option<Box<LastFailure>> {
    alerts
        .values()
        .filter(|a| a.probe == probe && a.rule == RULE_FAILING)
        .filter_map(|a| a.last_failure.clone())
        .max_by_key(|f| f.at)
}

/// The open trend findings by probe (newest first, so the first seen is the
/// newest); `None` when they cannot be read.
async fn open_trends(store: &Store) -> Option<HashMap<String, OpenTrends>> {
    let filter = FindingFilter {
        state: Some("open".into()),
        limit: MAX_OPEN_TRENDS,
        ..FindingFilter::default()
    };
    let found = match store.findings(&filter).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read open trend findings for the trend rule; will retry at the next evaluation");
            return None;
        }
    };
    let mut by_probe: HashMap<String, OpenTrends> = HashMap::new();
    for f in found {
        by_probe
            .entry(f.probe)
            .and_modify(|o| o.count += 1)
            .or_insert(OpenTrends {
                newest_id: f.id,
                summary: f.summary,
                count: 1,
            });
    }
    Some(by_probe)
}
