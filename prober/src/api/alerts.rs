//! `/api/v1/alerts`, `/api/v1/alerts/history` and `/api/v1/silences`.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::contract::json_rejection;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::alert::{Alert, State as AlertState};
use crate::config::policy::{is_open_end, Silence, MAX_MATCHERS, MAX_MATCHER_VALUE, MAX_WINDOW};

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Alerts pending or firing, by key.
    pub alerts: Vec<Alert>,
}

/// The alerts pending or firing now.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    responses((status = 200, body = AlertList)))]
pub async fn list(State(core): State<AppState>) -> Json<AlertList> {
    Json(AlertList {
        alerts: core.alerts.active(),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Only this probe's alerts.
    pub probe: Option<String>,
    /// Transitions to return, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransitionView {
    pub key: String,
    pub probe: String,
    pub from: AlertState,
    pub to: AlertState,
    pub at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertHistory {
    /// Newest first.
    pub transitions: Vec<TransitionView>,
}

/// Every change of state of every alert, newest first.
#[utoipa::path(get, path = "/api/v1/alerts/history", tag = "alerts", params(HistoryQuery),
    responses((status = 200, body = AlertHistory), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn history(
    State(core): State<AppState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<AlertHistory>, ApiError> {
    let limit = limit(q.limit)?;
    let rows = crate::alert::persist::history(&core.store, q.probe.as_deref(), limit).await?;
    Ok(Json(AlertHistory {
        transitions: rows
            .into_iter()
            .map(|(t, probe)| TransitionView {
                key: t.key,
                probe,
                from: t.from,
                to: t.to,
                at: t.at,
                reason: t.reason,
            })
            .collect(),
    }))
}

/// A list's `limit`: 1–1000, 100 unless given.
fn limit(given: Option<i64>) -> Result<i64, ApiError> {
    let limit = given.unwrap_or(100);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(format!(
            "limit={limit} must be between 1 and 1000"
        )))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SilenceQuery {
    /// Include silences that have ended (API ones keep their rows as history).
    pub all: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceView {
    #[serde(flatten)]
    pub silence: Silence,
    /// Whether it holds back notifications right now.
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceList {
    /// Silences from prober.yaml first, then those from the API, newest first.
    pub silences: Vec<SilenceView>,
}

/// A new silence or maintenance window.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// All must equal: `probe`, `rule`, `location`, `severity`, or a probe label.
    #[schema(schema_with = matchers_schema)]
    pub matchers: BTreeMap<String, String>,
    /// Default: now.
    pub starts_at: Option<DateTime<Utc>>,
    /// The end; or give `duration` instead.
    pub ends_at: Option<DateTime<Utc>>,
    /// How long from `starts_at`, like `2h` (instead of `ends_at`).
    pub duration: Option<String>,
    /// A recurring window: opens at each time of this cron expression (seconds first, UTC) ...
    pub cron: Option<String>,
    /// ... for this long, like `30m`.
    pub window: Option<String>,
    /// Why: shown with every held-back alert. Not blank; no NUL.
    #[schema(max_length = 1024, pattern = "\\S")]
    pub comment: String,
    /// Who: shown with every held-back alert. No control characters.
    #[schema(max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub created_by: String,
}

/// `matchers`' schema: 1–32 names of the matcher-name format, each with a value
/// of 1–1024 characters without control characters.
fn matchers_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z_][A-Za-z0-9_./-]{0,127}$"));
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_MATCHER_VALUE))
        .pattern(Some("^[^\\x00-\\x1f\\x7f-\\x9f]+$"));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(name))
        .additional_properties(Some(value))
        .min_properties(Some(1))
        .max_properties(Some(MAX_MATCHERS))
        .description(Some("All must equal: `probe`, `rule`, `location`, `severity`, or a probe label. Names: a letter or `_`, then letters, digits, `_ . / -`, at most 128 characters."))
        .build()
}

/// Silences and maintenance windows (a read: public unless `api.public_read` is false).
#[utoipa::path(get, path = "/api/v1/silences", tag = "alerts", params(SilenceQuery),
    responses((status = 200, body = SilenceList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn silences(
    State(core): State<AppState>,
    Query(q): Query<SilenceQuery>,
) -> Result<Json<SilenceList>, ApiError> {
    let now = Utc::now();
    let from_api =
        crate::alert::persist::silences(&core.store, (!q.all.unwrap_or(false)).then_some(now))
            .await?;
    let silences = core
        .alerts
        .file_silences()
        .into_iter()
        .chain(from_api)
        .map(|s| SilenceView {
            active: s.active_at(now),
            silence: s,
        })
        .collect();
    Ok(Json(SilenceList { silences }))
}

/// The longest one-off silence: longer ones are refused (end it and make another,
/// or use a recurring window, which may be open-ended).
pub const MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

fn too_long() -> ApiError {
    ApiError::bad_request(format!(
        "a silence lasts at most {} days (from starts_at to ends_at, or its duration); for longer, use a recurring window (cron and window)",
        MAX_SILENCE.as_secs() / 86_400
    ))
}

fn parse_duration(field: &str, text: &str) -> Result<std::time::Duration, ApiError> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field}: {text:?} is not a duration; write it like 30m, 2h or 1d"
            ))
        })
}

/// Creates a silence: matching alerts still change state and are recorded, but do not notify.
#[utoipa::path(post, path = "/api/v1/silences", tag = "alerts", request_body = NewSilence,
    security(("bearer" = ["admin"])),
    responses((status = 201, body = Silence), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_silence(
    State(core): State<AppState>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Result<(StatusCode, Json<Silence>), ApiError> {
    let Json(n) = body.map_err(|e| {
        json_rejection(
            e,
            r#"send JSON like {"matchers": {"probe": "checkout"}, "duration": "2h", "comment": "deploy", "created_by": "alice"}"#,
        )
    })?;
    let starts_at = n.starts_at.unwrap_or_else(Utc::now);
    let ends_at =
        match (n.ends_at, &n.duration) {
            (Some(e), None) => e,
            (None, Some(d)) => {
                let d = parse_duration("duration", d)?;
                chrono::Duration::from_std(d)
                    .ok()
                    .filter(|_| d <= MAX_SILENCE)
                    .and_then(|d| starts_at.checked_add_signed(d))
                    .ok_or_else(too_long)?
            }
            (None, None) if n.cron.is_some() => DateTime::<Utc>::MAX_UTC,
            _ => return Err(ApiError::bad_request(
                "give exactly one of ends_at and duration (a recurring window may give neither)",
            )),
        };
    // A silence that has already ended would be created and at once unlistable and
    // undeletable ("no active silence"): refuse it.
    if ends_at <= Utc::now() {
        return Err(ApiError::bad_request(format!(
            "this silence ends at {} (starts_at plus duration, or ends_at), which has passed; give an end in the future",
            ends_at.to_rfc3339()
        )));
    }
    // A one-off silence lasts at most MAX_SILENCE; a recurring window may be open-ended.
    if !is_open_end(&ends_at)
        && ends_at.signed_duration_since(starts_at)
            > TimeDelta::seconds(MAX_SILENCE.as_secs() as i64)
    {
        return Err(too_long());
    }
    let duration_ms = match &n.window {
        Some(w) => {
            let w = parse_duration("window", w)?;
            if w > MAX_WINDOW {
                return Err(ApiError::bad_request(format!(
                    "window: {} is longer than the {} days a recurring window may stay open",
                    humantime::format_duration(w),
                    MAX_WINDOW.as_secs() / 86_400
                )));
            }
            Some(u64::try_from(w.as_millis()).unwrap_or(u64::MAX))
        }
        None => None,
    };
    let id = uuid::Uuid::new_v4();
    let s = Silence {
        id: id.to_string(),
        matchers: n.matchers,
        starts_at,
        ends_at,
        cron: n.cron,
        duration_ms,
        comment: n.comment,
        created_by: n.created_by,
        source: "api".into(),
    };
    s.validate().map_err(ApiError::bad_request)?;
    crate::alert::persist::insert_silence(&core.store, &s, id).await?;
    core.alerts.evaluate_soon();
    tracing::info!(silence = %s.id, matchers = ?s.matchers, by = %s.created_by, "silence created");
    Ok((StatusCode::CREATED, Json(s)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceEnded {
    pub id: String,
    pub ended_at: DateTime<Utc>,
}

/// Ends a silence now; held-back alerts that still fire notify at the next evaluation.
#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "alerts",
    security(("bearer" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The silence's id (silences from prober.yaml cannot be ended here)")),
    responses((status = 200, body = SilenceEnded), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_silence(
    State(core): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SilenceEnded>, ApiError> {
    if id.starts_with("file:") {
        return Err(ApiError::bad_request(format!(
            "silence {id} comes from prober.yaml; remove it there and restart"
        )));
    }
    let uuid = uuid::Uuid::parse_str(&id).map_err(|_| {
        ApiError::bad_request(format!(
            "{id:?} is not a silence id; GET /api/v1/silences lists them"
        ))
    })?;
    if !crate::alert::persist::expire_silence(&core.store, uuid).await? {
        return Err(ApiError::not_found(format!(
            "no active silence {id}; GET /api/v1/silences?all=true lists ended ones too"
        )));
    }
    core.alerts.evaluate_soon();
    tracing::info!(silence = %id, "silence ended");
    Ok(Json(SilenceEnded {
        id,
        ended_at: Utc::now(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct OutboxQuery {
    /// Only this alert's notifications (its key, e.g. `checkout/failing/eu-west-1`).
    pub alert_key: Option<String>,
    /// Only those not delivered: waiting, retrying, or given up.
    pub undelivered: Option<bool>,
    /// Rows to return, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Outbox {
    /// Newest first.
    pub notifications: Vec<crate::notify::outbox::OutboxRow>,
}

/// The notification outbox: what was sent to which receiver, what is retrying and why.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "alerts", params(OutboxQuery),
    responses((status = 200, body = Outbox), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn notifications(
    State(core): State<AppState>,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<Outbox>, ApiError> {
    let limit = limit(q.limit)?;
    let rows = crate::notify::outbox::recent(
        &core.store,
        q.alert_key.as_deref(),
        q.undelivered.unwrap_or(false),
        limit,
    )
    .await?;
    Ok(Json(Outbox {
        notifications: rows,
    }))
}
