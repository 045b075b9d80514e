//! `POST /api/v1/probes/{name}/run` and `POST /api/v1/reload`: the probe API's writes.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::RETRY_AFTER;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::{ApiError, ErrorBody};
use crate::api::manual::Busy;
use crate::api::AppState;
use crate::run::Outcome;
use crate::run::Trigger;
use crate::schedule::Diff;

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
    let result = tokio::task::spawn_blocking(move || c.reloader.reload("api"))
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
