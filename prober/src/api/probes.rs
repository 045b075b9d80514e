//! `/api/v1/probes…` and `/api/v1/reload`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header::RETRY_AFTER;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::manual::Busy;
use super::AppState;
use crate::results::{RunSummary, Status};
use crate::run::{Outcome, Phases};
use crate::run::{Trigger, PHASES};
use crate::schedule::Diff;
use crate::store::read::{StoredRun, WindowStats};
use crate::store::Resolution;

/// Most points one latency request may return.
pub const MAX_POINTS: i64 = 10_000;
/// Most runs one history page may return.
pub const MAX_RUNS_PAGE: i64 = 1_000;
/// Runs per history page when `limit` is not given.
pub const DEFAULT_RUNS_PAGE: i64 = 100;

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// Microseconds (as stored) to [`Phases`]' whole microseconds; a negative value (never written) counts as 0.
fn stored_us(us: i32) -> u64 {
    u64::try_from(us).unwrap_or(0)
}

/// A stored `detail` with every duration in milliseconds: rows written before
/// the API settled on milliseconds hold `phases.*_us` and `total_us`.
fn detail_in_ms(mut detail: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    if let Some(steps) = detail.get_mut("steps").and_then(Value::as_array_mut) {
        for phases in steps.iter_mut().filter_map(|s| s.get_mut("phases")) {
            if let Ok(p) = serde_json::from_value::<Phases>(phases.clone()) {
                if let Ok(v) = serde_json::to_value(p) {
                    *phases = v;
                }
            }
        }
    }
    if let Some(attempts) = detail.get_mut("attempts").and_then(Value::as_array_mut) {
        for a in attempts.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(us) = a.remove("total_us").and_then(|v| v.as_u64()) {
                a.insert("total_ms".into(), serde_json::json!(crate::run::ms::of(us)));
            }
        }
    }
    detail
}

fn parse_time(
    field: &str,
    text: Option<&str>,
    default: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    match text {
        None => Ok(default),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "{field}={t:?} is not an RFC 3339 time ({e}), e.g. 2026-11-26T10:00:00Z"
                ))
            }),
    }
}

fn range(
    from: Option<&str>,
    to: Option<&str>,
    default_span: TimeDelta,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = parse_time("to", to, Utc::now())?;
    // Not before year 0: RFC 3339 (the answer's `from`) has no negative years.
    let earliest = DateTime::<Utc>::from_timestamp(-62_167_219_200, 0).unwrap_or(to);
    let default_from = to
        .checked_sub_signed(default_span)
        .map_or(earliest, |f| f.max(earliest));
    let from = parse_time("from", from, default_from)?;
    if from >= to {
        return Err(ApiError::bad_request(format!(
            "from ({from}) must be before to ({to})"
        )));
    }
    Ok((from, to))
}

// === list ===

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
    pub last_run: Option<RunSummary>,
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

fn label_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(LABEL_SELECTOR)),
        )
        .build()
}

/// Every probe with its status, last run, and availability and percentiles over the last hour and day.
#[utoipa::path(get, path = "/api/v1/probes", tag = "probes", params(ListQuery),
    responses((status = 200, body = ProbeList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(core): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<ProbeList>, ApiError> {
    // Read as pairs, not as `ListQuery`, so `label=` may repeat; other keys are ignored.
    let filters: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k == "label")
        .flat_map(|(_, l)| l.split(','))
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ApiError::bad_request(format!(
                "label={l:?}: write it as key=value, e.g. label=team=payments (several: label=a=b,c=d or label=a=b&label=c=d)"
            ))),
        })
        .collect::<Result<_, _>>()?;
    let now = Utc::now();
    let minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    let hour = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    let windows = tokio::try_join!(
        core.store
            .windows(Resolution::Minute, minute - TimeDelta::minutes(59)),
        core.store
            .windows(Resolution::Hour, hour - TimeDelta::hours(23)),
    );
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
            let s = state.lock().unwrap_or_else(|e| e.into_inner());
            (s.status, s.recent.back().cloned())
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
    pub recent_runs: Vec<RunSummary>,
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
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
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
        recent_runs: s.recent.iter().rev().cloned().collect(),
    }))
}

// === runs ===

#[derive(Debug, Deserialize, IntoParams)]
pub struct RunsQuery {
    /// RFC 3339, before `to`; default: 24 hours before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// Runs per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, unchanged.
    #[param(pattern = "^[0-9]{1,17}_[0-9a-f]{32}$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub run_id: Uuid,
    pub scheduled_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub lateness_ms: f64,
    pub location: String,
    pub version: String,
    pub success: bool,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub status_code: Option<i16>,
    /// In milliseconds, the same object as an outcome's `phases`; null for a phase that did not happen.
    pub phases: Phases,
    pub response_bytes: i32,
    /// `schedule`, or `api` for a run asked for with `POST …/run`.
    pub trigger: Trigger,
    /// A scenario's `steps`, a retried run's `attempts`, and kind-specific `info`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

impl From<StoredRun> for RunView {
    fn from(r: StoredRun) -> RunView {
        let p = r.phases_us.map(|v| v.map(stored_us));
        RunView {
            run_id: r.run_id,
            scheduled_at: r.scheduled_at,
            started_at: r.scheduled_at + TimeDelta::microseconds(i64::from(r.lateness_us)),
            lateness_ms: ms(i64::from(r.lateness_us)),
            location: r.location,
            version: r.version,
            success: r.success,
            error_class: r.error_class,
            error_message: r.error_message,
            status_code: r.status_code,
            phases: Phases {
                total_us: p[0].unwrap_or(0),
                dns_us: p[1],
                connect_us: p[2],
                tls_us: p[3],
                first_byte_us: p[4],
                transfer_us: p[5],
            },
            response_bytes: r.response_bytes,
            trigger: Trigger::from_id(r.trigger),
            detail: r.detail.map(detail_in_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    /// Newest first.
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros(), id.simple())
}

fn decode_cursor(c: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "cursor {c:?} is not a cursor from this API; pass next_cursor unchanged"
        ))
    };
    let (at, id) = c.split_once('_').ok_or_else(bad)?;
    // Exactly what encode_cursor writes: 1–17 digits (up to year 5138), 32 lowercase hex digits.
    let digits = |s: &str, n: std::ops::RangeInclusive<usize>, hex: bool| {
        n.contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&b)))
    };
    if !digits(at, 1..=17, false) || !digits(id, 32..=32, true) {
        return Err(bad());
    }
    let at = at
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((at, id))
}

/// A probe's run history, newest first, with phases and errors; paged by cursor.
#[utoipa::path(get, path = "/api/v1/probes/{name}/runs", tag = "probes",
    params(("name" = String, Path, description = "probe name"), RunsQuery),
    responses((status = 200, body = RunPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn runs(
    State(core): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let (from, to) = range(q.from.as_deref(), q.to.as_deref(), TimeDelta::days(1))?;
    let limit = q.limit.unwrap_or(DEFAULT_RUNS_PAGE);
    if !(1..=MAX_RUNS_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit={limit} must be between 1 and {MAX_RUNS_PAGE}"
        )));
    }
    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
    known_probe(&core, &name).await?;
    let rows = core.store.runs(&name, from, to, cursor, limit).await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| encode_cursor(r.scheduled_at, r.run_id)))
        .flatten();
    Ok(Json(RunPage {
        runs: rows.into_iter().map(RunView::from).collect(),
        next_cursor,
    }))
}

/// A probe is known if it is scheduled now or has history.
async fn known_probe(core: &AppState, name: &str) -> Result<(), ApiError> {
    if core.scheduler.probe(name).is_some() || core.store.probe_exists(name).await? {
        Ok(())
    } else {
        Err(ApiError::unknown_probe(name))
    }
}

// === latency ===

#[derive(Debug, Deserialize, IntoParams)]
pub struct LatencyQuery {
    /// RFC 3339, before `to`; default: 24 hours before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// A whole number of minutes, hours or days (`1m`, `90m`, `1h`, `1d`); default: about 300 points. At most 10000 points from `from` to `to`.
    #[param(pattern = "^[1-9][0-9]{0,5}[mhd]$")]
    pub step: Option<String>,
    /// `total` (default), `dns`, `connect`, `tls`, `first_byte`, `transfer`, or `step:<name>` for a scenario's step.
    #[param(pattern = "^(total|dns|connect|tls|first_byte|transfer|step:.+)$")]
    pub phase: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyPointView {
    /// Start of the step (steps are aligned to multiples of the step since the Unix epoch, in UTC).
    pub time: DateTime<Utc>,
    pub count: i64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencySeries {
    pub probe: String,
    pub phase: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The step, in milliseconds like every duration of the API (60000 for `1m`).
    pub step_ms: i64,
    /// Steps without runs are omitted.
    pub points: Vec<LatencyPointView>,
}

fn default_step(span: TimeDelta) -> Duration {
    let secs = (span.num_seconds() / 300).max(60);
    let unit = if secs >= 86_400 {
        86_400
    } else if secs >= 3_600 {
        3_600
    } else {
        60
    };
    Duration::from_secs(((secs + unit - 1) / unit * unit) as u64)
}

/// A `step`: a whole number (1–999999) of minutes, hours or days, like `5m`, `1h`, `1d`.
fn parse_step(s: &str) -> Result<Duration, ApiError> {
    let (digits, unit) = s.split_at(s.len() - s.chars().last().map_or(0, char::len_utf8));
    let unit_secs = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => 0,
    };
    let n = Some(digits)
        .filter(|d| (1..=6).contains(&d.len()) && !d.starts_with('0'))
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok());
    match n {
        Some(n) if unit_secs > 0 => Ok(Duration::from_secs(n * unit_secs)),
        _ if humantime::parse_duration(s).is_ok() => Err(ApiError::bad_request(format!(
            "step={s:?} must be a whole number of minutes, hours or days, like 5m, 1h or 1d (histograms are stored per minute)"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "step={s:?} is not a duration; use 1m, 5m, 1h, 1d"
        ))),
    }
}

/// Percentiles (exact to the bin, merged from stored bins) and counts per step.
#[utoipa::path(get, path = "/api/v1/probes/{name}/latency", tag = "probes",
    params(("name" = String, Path, description = "probe name"), LatencyQuery),
    responses((status = 200, body = LatencySeries), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn latency(
    State(core): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LatencyQuery>,
) -> Result<Json<LatencySeries>, ApiError> {
    let (from, to) = range(q.from.as_deref(), q.to.as_deref(), TimeDelta::days(1))?;
    let phase_name = q.phase.as_deref().unwrap_or("total");
    let phase = phase_id(&core, &name, phase_name)?;
    let step = match q.step.as_deref() {
        None => default_step(to - from),
        Some(s) => parse_step(s)?,
    };
    let step_secs = i64::try_from(step.as_secs()).unwrap_or(i64::MAX);
    let points = (to - from).num_seconds() / step_secs;
    if points > MAX_POINTS {
        return Err(ApiError::bad_request(format!(
            "from–to at step {} is {points} points; at most {MAX_POINTS}: raise the step or narrow the range",
            humantime::format_duration(step)
        )));
    }
    known_probe(&core, &name).await?;
    let series = core
        .store
        .latency_series(&name, phase, from, to, step)
        .await?;
    Ok(Json(LatencySeries {
        probe: name,
        phase: phase_name.to_string(),
        from,
        to,
        step_ms: step_secs.saturating_mul(1000),
        points: series
            .into_iter()
            .map(|p| LatencyPointView {
                time: p.time,
                count: p.count,
                p50_ms: p.p50_us.map(ms),
                p90_ms: p.p90_us.map(ms),
                p95_ms: p.p95_us.map(ms),
                p99_ms: p.p99_us.map(ms),
                max_ms: p.max_us.map(ms),
            })
            .collect(),
    }))
}

/// The stored phase id of `phase`: a fixed phase, or `step:<name>` of the probe's current definition.
fn phase_id(core: &AppState, probe: &str, phase: &str) -> Result<i16, ApiError> {
    if let Some(i) = PHASES.iter().position(|p| *p == phase) {
        return Ok(i as i16);
    }
    let Some(step) = phase.strip_prefix("step:") else {
        return Err(ApiError::bad_request(format!(
            "phase={phase:?} is not one of {}, or step:<name>",
            PHASES.join(", ")
        )));
    };
    let steps = match core.scheduler.probe(probe).as_deref().map(|p| &p.check) {
        Some(crate::config::Check::Steps(s)) => s.steps.iter().map(|s| s.name.clone()).collect(),
        _ => Vec::new(),
    };
    steps
        .iter()
        .position(|s| s == step)
        .map(|i| 100 + i as i16)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "phase={phase:?}: probe {probe:?} has no step named {step:?} (steps: {})",
                if steps.is_empty() {
                    "none".to_string()
                } else {
                    steps.join(", ")
                }
            ))
        })
}

// === run now, reload ===

#[derive(Debug, Serialize, ToSchema)]
pub struct RunResult {
    pub run_id: Uuid,
    pub scheduled_at: DateTime<Utc>,
    /// Always `api`: stored with the run; by default such runs move neither
    /// alerts nor availability, counters or percentiles (`api.manual_runs_count`).
    pub trigger: Trigger,
    pub outcome: Outcome,
}

/// Runs the probe now and answers with the outcome. The run is stored, marked
/// `trigger: api`; at most one per probe is in flight, and they start at least
/// `api.run_min_interval` apart (429 with `Retry-After` otherwise).
#[utoipa::path(post, path = "/api/v1/probes/{name}/run", tag = "probes",
    params(("name" = String, Path, description = "probe name")),
    security(("bearer" = ["run"])),
    responses((status = 200, body = RunResult), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, description = "a run of this probe is in flight or started less than api.run_min_interval ago; see Retry-After", body = ErrorBody)))]
pub async fn run_now(State(core): State<AppState>, Path(name): Path<String>) -> Response {
    if core.scheduler.probe(&name).is_none() {
        return ApiError::unknown_probe(&name).into_response();
    }
    let min = core.settings.api.run_min_interval;
    let permit = match core
        .manual_runs
        .admit(&name, min, tokio::time::Instant::now())
    {
        Ok(p) => p,
        Err(busy) => return too_many(&name, min, busy),
    };
    // The run goes on (and holds its permit) even if the client goes away.
    let c = core.clone();
    let n = name.clone();
    let run = tokio::spawn(async move {
        let record = c.scheduler.run_now(&n).await;
        drop(permit);
        record
    });
    match run.await {
        Ok(Some(record)) => Json(RunResult {
            run_id: record.run_id,
            scheduled_at: record.scheduled_at,
            trigger: record.trigger,
            outcome: record.outcome,
        })
        .into_response(),
        // Removed by a reload while the request waited.
        Ok(None) => ApiError::unknown_probe(&name).into_response(),
        Err(e) => ApiError::internal(&format!("the run of {name:?} failed inside the prober"), &e)
            .into_response(),
    }
}

/// 429 with `Retry-After` (whole seconds, at least 1) and the envelope.
fn too_many(name: &str, min: Duration, busy: Busy) -> Response {
    let (wait, why) = match busy {
        Busy::InFlight => (
            Duration::from_secs(1),
            "a run of it asked for through the API is still in flight".to_string(),
        ),
        Busy::TooSoon(left) => (
            left,
            format!(
                "the last one started less than api.run_min_interval ({}) ago",
                humantime::format_duration(min)
            ),
        ),
    };
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let e = ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "rate_limited",
        message: format!(
            "probe {name:?} was not run: {why}; try again in {secs} s (Retry-After), or wait for its schedule"
        ),
        details: Vec::new(),
    };
    ([(RETRY_AFTER, secs.to_string())], e).into_response()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadResult {
    pub applied: bool,
    pub diff: Diff,
}

/// Loads the probe files again; a valid set applies as a diff, an invalid one changes nothing.
#[utoipa::path(post, path = "/api/v1/reload", tag = "probes", security(("bearer" = ["admin"])),
    responses((status = 200, body = ReloadResult), (status = 422, description = "invalid probe files: nothing changed", body = ErrorBody)))]
pub async fn reload(State(core): State<AppState>) -> Result<Json<ReloadResult>, ApiError> {
    // Reading the probe files is blocking I/O: keep it off the async workers.
    let c = core.clone();
    let result = tokio::task::spawn_blocking(move || c.reload("api"))
        .await
        .map_err(|e| ApiError::internal("the reload task failed", &e))?;
    match result {
        Ok(diff) => Ok(Json(ReloadResult { applied: true, diff })),
        Err(errors) => Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_probes",
            message: format!(
                "{} problem(s) in the probe files; nothing was changed, the running probes stay as they were",
                errors.len()
            ),
            details: errors,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_from_never_goes_before_year_0() {
        let (from, to) = range(None, Some("0000-01-01T01:00:00Z"), TimeDelta::days(1))
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(from.to_rfc3339(), "0000-01-01T00:00:00+00:00");
        assert!(from < to);
    }

    #[test]
    fn steps_are_whole_minutes_hours_or_days() {
        let ok = |s: &str| parse_step(s).map(|d| d.as_secs()).map_err(|e| e.message);
        assert_eq!(ok("1m"), Ok(60));
        assert_eq!(ok("90m"), Ok(5_400));
        assert_eq!(ok("2h"), Ok(7_200));
        assert_eq!(ok("999999d"), Ok(999_999 * 86_400));
        for bad in [
            "", "m", "0m", "01m", "1000000d", "90s", "1h 30m", "1 m", "1M", "-1m", "1é",
        ] {
            assert!(ok(bad).is_err(), "{bad:?} is refused");
        }
        assert!(ok("90s").unwrap_err().contains("whole number"));
        assert!(ok("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn cursors_are_exactly_what_encode_cursor_writes() {
        let id = Uuid::nil().simple().to_string();
        assert!(decode_cursor(&format!("123_{id}")).is_ok());
        for bad in [
            format!("-1_{id}"),
            format!("+1_{id}"),
            format!("123456789012345678_{id}"),
            format!("123_{}", id.to_uppercase().replace('0', "A")),
            format!("123_{}", Uuid::nil().hyphenated()),
            "123_".to_string(),
        ] {
            assert!(decode_cursor(&bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn cursors_round_trip() {
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        assert!(decode_cursor("garbage").is_err());
    }

    #[test]
    fn a_detail_stored_in_microseconds_is_given_in_milliseconds() {
        let old = serde_json::json!({
            "steps": [{"name": "login", "phases": {"dns_us": null, "connect_us": 1500, "tls_us": null,
                "first_byte_us": 2000, "transfer_us": 10, "total_us": 4000}}],
            "attempts": [{"attempt": 1, "success": false, "total_us": 2500}],
            "info": {}
        });
        let new = detail_in_ms(old);
        assert_eq!(new["steps"][0]["phases"]["total_ms"], 4.0);
        assert_eq!(new["steps"][0]["phases"]["connect_ms"], 1.5);
        assert!(new["steps"][0]["phases"]["tls_ms"].is_null());
        assert!(new["steps"][0]["phases"].get("total_us").is_none());
        assert_eq!(new["attempts"][0]["total_ms"], 2.5);
        assert!(new["attempts"][0].get("total_us").is_none());
        // Already in milliseconds: unchanged.
        assert_eq!(detail_in_ms(new.clone()), new);
    }

    #[test]
    fn default_steps_are_whole_units_near_300_points() {
        assert_eq!(default_step(TimeDelta::hours(1)), Duration::from_secs(60));
        assert_eq!(default_step(TimeDelta::days(1)), Duration::from_secs(300));
        assert_eq!(
            default_step(TimeDelta::days(30)),
            Duration::from_secs(3 * 3_600)
        );
    }
}
