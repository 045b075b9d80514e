//! `/probes/{name}`: one probe's latency percentiles over a chosen range
//! (merged bins, exact at every range), where the time goes by phase, its
//! last runs and the story of its last failure, its alerts, silences, trend
//! findings and events, and its definition with its version history.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::chart::{self, Marker};
use super::runs::{failure_story, runs_table, versions_section};
use super::{ago, frame, html_response, status_badge, store_error, us, when};
use crate::alert::Transition;
use crate::api::AppState;
use crate::config::policy::Silence;
use crate::config::Probe;
use crate::results::hist::SparseHist;
use crate::results::Status;
use crate::run::PHASES;
use crate::store::events::{ChangeEvent, EventFilter};
use crate::store::history::ProbeVersion;
use crate::store::read::{LatencyPoint, StoredRun};
use crate::store::trends::{Finding, FindingFilter};
use crate::store::{Resolution, StoreError};

/// The ranges a probe page offers, and the step of each chart.
pub const RANGES: [(&str, i64, u64); 5] = [
    ("1h", 3_600, 60),
    ("6h", 21_600, 120),
    ("24h", 86_400, 300),
    ("7d", 604_800, 3_600),
    ("30d", 2_592_000, 3 * 3_600),
];
/// Runs listed on the page.
const RUNS_SHOWN: i64 = 20;
/// Alert transitions listed.
const TRANSITIONS_SHOWN: i64 = 50;
/// Versions of the definition listed.
const VERSIONS_SHOWN: i64 = 10;

#[derive(Debug, Deserialize)]
pub struct ProbeQuery {
    /// One of [`RANGES`] (default `24h`).
    pub range: Option<String>,
}

/// What a probe's page shows, read once per request.
struct ProbeData {
    now: DateTime<Utc>,
    range: &'static str,
    from: DateTime<Utc>,
    points: Vec<LatencyPoint>,
    phases: BTreeMap<i16, SparseHist>,
    runs: Vec<StoredRun>,
    findings: Vec<Finding>,
    transitions: Vec<Transition>,
    events: Vec<ChangeEvent>,
    versions: Vec<ProbeVersion>,
    silences: Vec<Silence>,
}

/// `GET /probes/{name}?range=24h`.
pub async fn page(
    State(core): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ProbeQuery>,
) -> Response {
    let Some(&(range, secs, step)) = RANGES
        .iter()
        .find(|r| Some(r.0) == q.range.as_deref().or(Some("24h")))
    else {
        let known: Vec<&str> = RANGES.iter().map(|r| r.0).collect();
        return super::error_page(
            StatusCode::BAD_REQUEST,
            "No such range",
            &format!(
                "range={:?} is not one of {}; for another, ask the API: /api/v1/probes/{name}/latency?from=…&to=…",
                q.range.unwrap_or_default(),
                known.join(", ")
            ),
        );
    };
    let Some(probe) = core.scheduler.probe(&name) else {
        return super::error_page(
            StatusCode::NOT_FOUND,
            &format!("No probe named {name:?} is scheduled"),
            &format!("Check the name on the overview; a probe removed from the probe files keeps its history in the API (/api/v1/probes/{name}/runs)."),
        );
    };
    let status = core.live.probe(&probe.name).lock().status;
    let data = match read(&core, &probe, range, secs, step).await {
        Ok(d) => d,
        Err(e) => return store_error(&e),
    };
    let trace_url = core.settings.trace_url.as_deref();
    html_response(StatusCode::OK, render(&probe, status, &data, trace_url))
}

async fn read(
    core: &AppState,
    probe: &Probe,
    range: &'static str,
    secs: i64,
    step: u64,
) -> Result<ProbeData, StoreError> {
    let now = Utc::now();
    let from = now - TimeDelta::seconds(secs);
    let store = &core.store;
    let name = probe.name.as_str();
    let resolution = if secs >= 2 * 86_400 {
        Resolution::Hour
    } else {
        Resolution::Minute
    };
    let findings = FindingFilter {
        probe: Some(name.to_string()),
        since: Some(from),
        limit: 100,
        ..FindingFilter::default()
    };
    let events = EventFilter {
        since: Some(from),
        labels: Vec::new(),
        of_probe: Some(probe.labels.clone()),
        limit: 500,
    };
    let (points, phases, runs, findings, transitions, events, versions, silences) = tokio::try_join!(
        store.latency_series(name, 0, from, now, std::time::Duration::from_secs(step)),
        store.phase_hists(name, resolution, from, now),
        store.runs(name, now - TimeDelta::days(7), now, None, RUNS_SHOWN),
        store.findings(&findings),
        crate::alert::persist::history(store, Some(name), TRANSITIONS_SHOWN),
        store.events(&events),
        store.probe_versions(name, VERSIONS_SHOWN),
        crate::alert::persist::active_silences(store, now),
    )?;
    let silences = (silences.into_iter())
        .filter(|s| silences_probe(s, probe))
        .collect();
    Ok(ProbeData {
        now,
        range,
        from,
        points,
        phases,
        runs,
        findings,
        transitions: transitions.into_iter().map(|(t, _)| t).collect(),
        events,
        versions,
        silences,
    })
}

/// Whether a silence's matchers can hold for this probe (its name and labels;
/// rule, location and severity may hold for some of its alerts).
fn silences_probe(s: &Silence, probe: &Probe) -> bool {
    s.matchers.iter().all(|(k, v)| match k.as_str() {
        "probe" => *v == probe.name,
        "rule" | "location" | "severity" => true,
        label => probe.labels.get(label) == Some(v),
    })
}

fn render(
    probe: &Arc<Probe>,
    status: Option<Status>,
    d: &ProbeData,
    trace_url: Option<&str>,
) -> Markup {
    let markers = markers(d);
    frame(
        &format!("{}: prober", probe.name),
        None,
        false,
        html! {
            (header(probe, status, d.now))
            nav aria-label="Range" {
                "Range: "
                @for (r, _, _) in RANGES {
                    @if r == d.range { b aria-current="page" { (r) } } @else { a href={"?range=" (r)} { (r) } }
                    " "
                }
            }
            h2 { "Latency, last " (d.range) }
            (chart::latency(&d.points, d.from, d.now, &markers))
            (points_table(&d.points))
            h2 { "Where the time goes, last " (d.range) }
            (phase_table(probe, &d.phases))
            h2 { "Last runs" }
            (runs_table(&d.runs, trace_url))
            (failure_story(probe, &d.versions, &d.runs, trace_url))
            h2 { "Alerts" }
            (alerts_table(&d.transitions, d.now))
            (silences_list(&d.silences))
            h2 { "Trend findings, last " (d.range) }
            @if d.findings.is_empty() { p.muted { "None." } }
            ul.plain { @for f in &d.findings { li { span.warn { (f.kind) } " [" (f.state) "] " (when(f.detected_at)) ": " (f.summary) } } }
            (versions_section(probe, &d.versions))
        },
    )
}

fn header(probe: &Probe, status: Option<Status>, now: DateTime<Utc>) -> Markup {
    html! {
        h1 { (probe.name) " " (status_badge(status.map(|s| s.up))) }
        @if let Some(s) = status {
            p { (if s.up { "Up" } else { "Down" }) " since " (when(s.since)) " (" (ago(s.since, now)) ")." }
        }
        @if let Some(d) = &probe.description { p { (d) } }
        p.muted {
            "Runs " (probe.schedule.to_string()) " · timeout " (humantime::format_duration(probe.timeout)) " · version " code { (probe.version) } " · " (probe.source.to_string())
            @for (k, v) in &probe.labels { " · " span.badge { (k) "=" (v) } }
        }
        @if let Some(r) = &probe.runbook { p { "Runbook: " a href=(r) rel="noopener noreferrer" { (r) } } }
    }
}

fn markers(d: &ProbeData) -> Vec<Marker> {
    let mut out = Vec::new();
    for f in &d.findings {
        out.push(Marker {
            at: f.change_at,
            kind: "trend",
            label: format!("trend {}: {}", f.kind, f.summary),
        });
    }
    for e in &d.events {
        out.push(Marker {
            at: e.at,
            kind: "event",
            label: format!("event: {}", e.title),
        });
    }
    for t in d
        .transitions
        .iter()
        .filter(|t| t.to == crate::alert::State::Firing)
    {
        out.push(Marker {
            at: t.at,
            kind: "alert",
            label: format!("alert {} fired: {}", t.key, t.reason),
        });
    }
    out
}

fn points_table(points: &[LatencyPoint]) -> Markup {
    html! {
        details {
            summary { "The chart's numbers (" (points.len()) " points)" }
            div.scroll { table {
                thead { tr { th scope="col" { "Time (UTC)" } th.num scope="col" { "Runs" } th.num scope="col" { "p50" } th.num scope="col" { "p95" } th.num scope="col" { "p99" } th.num scope="col" { "max" } } }
                tbody { @for p in points.iter().rev() {
                    tr { td { (p.time.format("%Y-%m-%d %H:%M")) } td.num { (p.count) } td.num { (us(p.p50_us)) } td.num { (us(p.p95_us)) } td.num { (us(p.p99_us)) } td.num { (us(p.max_us)) } }
                } }
            } }
        }
    }
}

/// The name of a stored phase id: a fixed phase, or a scenario's step.
fn phase_name(probe: &Probe, id: i16) -> String {
    if let Some(p) = usize::try_from(id).ok().and_then(|i| PHASES.get(i)) {
        return (*p).to_string();
    }
    if let Some(v) = crate::run::vital_name(id) {
        return v.to_string();
    }
    match usize::try_from(id - 100).ok().filter(|i| *i < 100) {
        Some(i) => (probe.step_names().get(i))
            .map_or_else(|| format!("step {i}"), |name| format!("step: {name}")),
        None => format!("phase {id}"),
    }
}

fn phase_table(probe: &Probe, phases: &BTreeMap<i16, SparseHist>) -> Markup {
    let q = |h: &SparseHist, q: f64| h.value_at_quantile(q).and_then(|v| i64::try_from(v).ok());
    let total_p50 = phases.get(&0).and_then(|h| q(h, 0.5)).unwrap_or(0).max(1) as f64;
    html! {
        @if phases.is_empty() { p.muted { "No runs in this range." } }
        @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Phase" } th.num scope="col" { "Runs" } th.num scope="col" { "p50" } th.num scope="col" { "p95" } th.num scope="col" { "p99" } th.num scope="col" { "Share of p50" } } }
                tbody { @for (id, h) in phases {
                    @let p50 = q(h, 0.5);
                    tr data-phase=(phase_name(probe, *id)) {
                        th scope="row" { (phase_name(probe, *id)) }
                        td.num { (h.total()) }
                        td.num { (us(p50)) }
                        td.num { (us(q(h, 0.95))) }
                        td.num { (us(q(h, 0.99))) }
                        td.num { @if *id != 0 { (format!("{:.0} %", p50.unwrap_or(0) as f64 / total_p50 * 100.0)) } }
                    }
                } }
            } }
        }
    }
}

fn alerts_table(transitions: &[Transition], now: DateTime<Utc>) -> Markup {
    html! {
        @if transitions.is_empty() { p.muted { "No alert has changed state." } }
        @else {
            div.scroll { table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Alert" } th scope="col" { "Change" } th scope="col" { "Why" } } }
                tbody { @for t in transitions {
                    tr { td { (when(t.at)) br; span.muted { (ago(t.at, now)) } } td { (t.key) }
                         td { (t.from.as_str()) " → " span class=(if t.to == crate::alert::State::Firing { "down" } else { "" }) { (t.to.as_str()) } }
                         td { (t.reason) } }
                } }
            } }
        }
    }
}

fn silences_list(silences: &[Silence]) -> Markup {
    html! {
        @if !silences.is_empty() {
            h2 { "Silences that can hold its alerts" }
            ul.plain { @for s in silences {
                li {
                    (s.matchers.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
                    " · from " (when(s.starts_at))
                    @if let Some(c) = &s.cron { " · recurring " code { (c) } }
                    " · " (s.comment)
                }
            } }
        }
    }
}
