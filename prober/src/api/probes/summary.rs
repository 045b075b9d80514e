//! `GET /api/v1/probes` and `GET /api/v1/probes/{name}`: every probe with its
//! status and windows, and one probe's definition and recent runs.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::ms;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::results::{RunSummary, Status};
use crate::run::trace_id;
use crate::store::read::WindowStats;

/// Counts and percentiles over a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct Window {
    pub runs: i64,
    pub failures: i64,
    /// Successful runs ÷ runs; null without runs.
    pub availability: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl From<&WindowStats> for Window {
    fn from(w: &WindowStats) -> Window {
        Window {
            runs: w.runs,
            failures: w.failures,
            availability: (w.runs > 0).then(|| (w.runs - w.failures) as f64 / w.runs as f64),
            p50_ms: w.p50_us.map(ms),
            p95_ms: w.p95_us.map(ms),
            p99_ms: w.p99_us.map(ms),
        }
    }
}

/// A probe in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeSummary {
    pub name: String,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub runbook: Option<String>,
    pub schedule: String,
    pub version: String,
    /// Up or down since when; null before the first run.
    pub status: Option<Status>,
    pub last_run: Option<RecentRun>,
    /// The current minute and the 59 before it.
    pub last_hour: Option<Window>,
    /// The current hour and the 23 before it.
    pub last_day: Option<Window>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeList {
    pub probes: Vec<ProbeSummary>,
    /// `ok`, or why the windows are missing (the history store is unavailable).
    pub store: String,
}

/// The format of one `label` filter: `key=value` (the key without `=` or `,`,
/// the value without `,`), several separated by commas.
pub const LABEL_SELECTOR: &str = "^[^=,\\x00]+=[^,\\x00]*(,[^=,\\x00]+=[^,\\x00]*)*$";

/// The query of `GET /api/v1/probes`, for the document: `list` reads the pairs
/// itself, so that `label` may repeat.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListQuery {
    /// Keep probes with this label, as `key=value` (the key without `=` or `,`, the value without `,`); several separated by commas or by repeating `label`; every one must hold. E.g. `label=team=payments&label=env=prod`.
    #[param(style = Form, explode, schema_with = label_schema)]
    pub label: Option<Vec<String>>,
}

pub fn label_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(LABEL_SELECTOR)),
        )
        .build()
}

/// The `label` filters of a query read as pairs: `key=value`, several
/// separated by commas or by repeating `label`; every one must hold.
pub fn label_filters(pairs: &[(String, String)]) -> Result<Vec<(String, String)>, ApiError> {
    pairs
        .iter()
        .filter(|(k, _)| k == "label")
        .flat_map(|(_, l)| l.split(','))
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ApiError::bad_request(format!(
                "label={l:?}: write it as key=value, e.g. label=team=payments (several: label=a=b,c=d or label=a=b&label=c=d)"
            ))),
        })
        .collect()
}

/// Every probe with its status, last run, and availability and percentiles over the last hour and day.
#[utoipa::path(get, path = "/api/v1/probes", tag = "probes", params(ListQuery),
    responses((status = 200, body = ProbeList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(core): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<ProbeList>, ApiError> {
    // Read as pairs, not as `ListQuery`, so `label=` may repeat; other keys are ignored.
    let filters = label_filters(&pairs)?;
    let windows = tokio::try_join!(core.store.last_hour(), core.store.last_day());
    let (hourly, daily, store) = match windows {
        Ok((h, d)) => (Some(h), Some(d), "ok".to_string()),
        Err(e) => (None, None, format!("unavailable: {e}")),
    };
    let mut probes = Vec::new();
    for p in core.scheduler.probes() {
        if !filters.iter().all(|(k, v)| p.labels.get(k) == Some(v)) {
            continue;
        }
        let (status, last_run) = {
            let state = core.live.probe(&p.name);
            let s = state.lock();
            (s.status, s.recent.back().map(RecentRun::from))
        };
        let window = |m: &Option<std::collections::HashMap<String, WindowStats>>| {
            m.as_ref()
                .map(|m| Window::from(m.get(&p.name).unwrap_or(&WindowStats::default())))
        };
        probes.push(ProbeSummary {
            name: p.name.clone(),
            description: p.description.clone(),
            labels: p.labels.clone(),
            runbook: p.runbook.clone(),
            schedule: p.schedule.to_string(),
            version: p.version.clone(),
            status,
            last_run,
            last_hour: window(&hourly),
            last_day: window(&daily),
        });
    }
    Ok(Json(ProbeList { probes, store }))
}

// === detail ===

#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeDetail {
    pub name: String,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub runbook: Option<String>,
    pub schedule: String,
    pub timeout_ms: f64,
    pub version: String,
    /// file:line of the definition.
    pub source: String,
    /// The definition as written, secret header values redacted.
    #[schema(value_type = Object)]
    pub definition: Box<serde_json::value::RawValue>,
    pub status: Option<Status>,
    pub skipped_ticks: u64,
    /// The most recent runs kept in memory, newest first.
    pub recent_runs: Vec<RecentRun>,
}

/// A run kept in memory, with its trace id.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecentRun {
    #[serde(flatten)]
    pub run: RunSummary,
    /// The run's W3C trace id, its run id's 32 hex digits: sent in `traceparent`
    /// unless the probe says `trace: false`.
    pub trace_id: String,
}

impl From<&RunSummary> for RecentRun {
    fn from(r: &RunSummary) -> RecentRun {
        RecentRun {
            run: r.clone(),
            trace_id: trace_id(r.run_id),
        }
    }
}

/// A probe's definition (secrets redacted), version and recent runs, newest first.
#[utoipa::path(get, path = "/api/v1/probes/{name}", tag = "probes",
    params(("name" = String, Path, description = "probe name")),
    responses((status = 200, body = ProbeDetail), (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(core): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ProbeDetail>, ApiError> {
    let p = core
        .scheduler
        .probe(&name)
        .ok_or_else(|| ApiError::unknown_probe(&name))?;
    let state = core.live.probe(&p.name);
    let s = state.lock();
    Ok(Json(ProbeDetail {
        name: p.name.clone(),
        description: p.description.clone(),
        labels: p.labels.clone(),
        runbook: p.runbook.clone(),
        schedule: p.schedule.to_string(),
        timeout_ms: p.timeout.as_secs_f64() * 1000.0,
        version: p.version.clone(),
        source: p.source.to_string(),
        definition: p.definition.as_ref().to_owned(),
        status: s.status,
        skipped_ticks: s.skipped_ticks,
        recent_runs: s.recent.iter().rev().map(RecentRun::from).collect(),
    }))
}
