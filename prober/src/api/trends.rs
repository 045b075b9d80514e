//! `/api/v1/trends`, `/api/v1/probes/{name}/trends` and acknowledging a finding.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::probes::{label_filters, label_schema};
use super::AppState;
use crate::store::trends::{Finding, FindingFilter};

/// The query of the trend lists, for the document: the handlers read
/// `since`, `state` and `limit` as [`TrendArgs`] and `label` from the
/// query's pairs, so that it may repeat.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TrendQuery {
    /// Findings detected or updated in this window: a duration (`7d`, `12h`)
    /// or an RFC 3339 time. All when absent.
    pub since: Option<String>,
    /// Only findings in this state.
    pub state: Option<TrendState>,
    /// Keep findings whose probe has this label (its newest definition's), as
    /// `key=value`; several separated by commas or by repeating `label`; every
    /// one must hold.
    #[param(style = Form, explode, schema_with = label_schema)]
    pub label: Option<Vec<String>>,
    /// Findings to return, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// [`TrendQuery`] less `label`, as the handlers parse it.
#[derive(Debug, Deserialize)]
pub struct TrendArgs {
    since: Option<String>,
    state: Option<TrendState>,
    limit: Option<i64>,
}

/// A finding's state.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrendState {
    Open,
    Acknowledged,
    Ended,
}

impl TrendState {
    fn as_str(self) -> &'static str {
        match self {
            TrendState::Open => "open",
            TrendState::Acknowledged => "acknowledged",
            TrendState::Ended => "ended",
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrendList {
    /// Newest first.
    pub trends: Vec<Finding>,
}

/// Changes the trend analysis found: steps (confirmed on the histograms
/// before and after) and drifts, newest first.
#[utoipa::path(get, path = "/api/v1/trends", tag = "trends", params(TrendQuery),
    responses((status = 200, body = TrendList), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(core): State<AppState>,
    Query(q): Query<TrendArgs>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<TrendList>, ApiError> {
    let filter = filter(None, &q, &pairs)?;
    Ok(Json(TrendList {
        trends: core.store.findings(&filter).await?,
    }))
}

/// One probe's findings, newest first.
#[utoipa::path(get, path = "/api/v1/probes/{name}/trends", tag = "trends",
    params(("name" = String, Path, description = "The probe's name"), TrendQuery),
    responses((status = 200, body = TrendList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn for_probe(
    State(core): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<TrendArgs>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<TrendList>, ApiError> {
    if !core.store.probe_exists(&name).await? {
        return Err(ApiError::not_found(format!(
            "no probe named {name:?} has been stored; GET /api/v1/probes lists them"
        )));
    }
    let filter = filter(Some(name), &q, &pairs)?;
    Ok(Json(TrendList {
        trends: core.store.findings(&filter).await?,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Who acknowledges; the token's name when absent.
    #[schema(min_length = 1, max_length = 200)]
    pub by: Option<String>,
}

/// Longest `by` accepted, in bytes.
const MAX_BY: usize = 200;

/// Acknowledges a finding: someone has looked. It stays listed, with who and when.
#[utoipa::path(post, path = "/api/v1/trends/{id}/ack", tag = "trends",
    params(("id" = i64, Path, description = "The finding's id")),
    request_body(content = Ack, description = "Optional: `{\"by\": \"alice\"}`"),
    security(("bearer" = ["admin"])),
    responses((status = 200, body = Finding), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn ack(
    State(core): State<AppState>,
    Path(id): Path<i64>,
    caller: Option<Extension<Caller>>,
    body: Option<Json<Ack>>,
) -> Result<Json<Finding>, ApiError> {
    let given = body.and_then(|Json(a)| a.by);
    if given
        .as_ref()
        .is_some_and(|b| b.len() > MAX_BY || b.trim().is_empty())
    {
        return Err(ApiError::bad_request(format!(
            "`by` must be 1–{MAX_BY} bytes naming who acknowledges"
        )));
    }
    let by = given
        .or_else(|| caller.and_then(|Extension(c)| c.token))
        .unwrap_or_else(|| "anonymous".to_string());
    match core.store.ack_finding(id, &by, Utc::now()).await? {
        Some(f) => Ok(Json(f)),
        None => Err(ApiError::not_found(format!(
            "no trend finding has id {id}; GET /api/v1/trends lists them"
        ))),
    }
}

fn filter(
    probe: Option<String>,
    q: &TrendArgs,
    pairs: &[(String, String)],
) -> Result<FindingFilter, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit={limit} must be between 1 and 1000"
        )));
    }
    Ok(FindingFilter {
        probe,
        since: q.since.as_deref().map(since).transpose()?,
        state: q.state.map(|s| s.as_str().to_string()),
        labels: label_filters(pairs)?,
        limit,
    })
}

/// `7d` (ago) or an RFC 3339 time.
pub(super) fn since(s: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        ApiError::bad_request(format!(
            "since={s:?} is neither a duration like 7d nor an RFC 3339 time: {e}"
        ))
    })?;
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .ok_or_else(|| ApiError::bad_request(format!("since={s:?} reaches before year 0")))
}
