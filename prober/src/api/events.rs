//! `/api/v1/events`: change events (deploys and other marks) that findings
//! list when their labels match the probe's (`store/events.rs`).

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::contract::json_rejection;
use super::error::{ApiError, ErrorBody};
use super::probes::{label_filters, label_schema};
use super::AppState;
use crate::store::events::{ChangeEvent, EventFilter, NewEvent};

/// Longest title, in bytes.
pub const MAX_TITLE: usize = 200;
/// Most labels on one event.
pub const MAX_LABELS: usize = 16;
/// Longest label key or value, in bytes.
pub const MAX_LABEL: usize = 100;
/// How far ahead of now an event may be placed.
pub const MAX_AHEAD: TimeDelta = TimeDelta::days(1);

const EXAMPLE: &str = r#"send JSON like {"title": "deploy checkout v2.3", "at": "2026-12-02T10:00:00Z", "labels": {"service": "checkout", "team": "payments"}} (`at` defaults to now, `labels` to none)"#;

/// A change to mark: a deploy, a configuration change, a provider incident.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChangeEvent {
    /// What changed: 1–200 bytes, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub title: String,
    /// When it happened (RFC 3339); default now; at most a day ahead.
    pub at: Option<DateTime<Utc>>,
    /// Up to 16; keys 1–100 bytes without `=` or `,`, values up to 100 bytes
    /// without `,`. A finding lists the event when every label is among its
    /// probe's labels (an event without labels: every probe's findings).
    #[serde(default)]
    #[schema(schema_with = labels_schema)]
    pub labels: BTreeMap<String, String>,
}

fn labels_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    let key = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[^=,\\x00-\\x1f\\x7f-\\x9f]{1,100}$"));
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_LABEL))
        .pattern(Some("^[^,\\x00-\\x1f\\x7f-\\x9f]*$"));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(key))
        .additional_properties(Some(value))
        .max_properties(Some(MAX_LABELS))
        .description(Some(
            "E.g. {\"service\": \"checkout\", \"team\": \"payments\"}",
        ))
        .build()
}

/// The query of `GET /api/v1/events`, for the document: `list` reads the
/// pairs itself, so that `label` may repeat.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct EventQuery {
    /// Events at or after this: a duration ago (`7d`, `12h`) or an RFC 3339 time. All when absent.
    pub since: Option<String>,
    /// Keep events with this label, as `key=value`; several separated by commas or by repeating `label`; every one must hold.
    #[param(style = Form, explode, schema_with = label_schema)]
    pub label: Option<Vec<String>>,
    /// Events to return, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// Newest first.
    pub events: Vec<ChangeEvent>,
}

/// Marks a change (a deploy, a configuration change): findings within an hour
/// of it whose probe has all its labels list it.
#[utoipa::path(post, path = "/api/v1/events", tag = "trends", request_body = NewChangeEvent,
    security(("bearer" = ["admin"])),
    responses((status = 201, body = ChangeEvent), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    State(core): State<AppState>,
    body: Result<Json<NewChangeEvent>, JsonRejection>,
) -> Result<(StatusCode, Json<ChangeEvent>), ApiError> {
    let Json(n) = body.map_err(|e| json_rejection(e, EXAMPLE))?;
    let now = Utc::now();
    let event = checked(n, now)?;
    let stored = core.store.add_event(&event).await?;
    tracing::info!(event = stored.id, title = %stored.title, at = %stored.at, "change event recorded");
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Change events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "trends", params(EventQuery),
    responses((status = 200, body = EventList), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(core): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<EventList>, ApiError> {
    // Read as pairs so that `label` may repeat; other keys are ignored.
    let one = |name: &str| pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    let limit = match one("limit") {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit={l:?} must be a whole number between 1 and 1000"
                ))
            })?,
    };
    let filter = EventFilter {
        since: one("since").map(|s| super::trends::since(s)).transpose()?,
        labels: label_filters(&pairs)?,
        of_probe: None,
        limit,
    };
    Ok(Json(EventList {
        events: core.store.events(&filter).await?,
    }))
}

/// The event as it will be stored, or a 400 saying what to send instead.
fn checked(n: NewChangeEvent, now: DateTime<Utc>) -> Result<NewEvent, ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("{m}; {EXAMPLE}"));
    let control = |s: &str| s.chars().any(char::is_control);
    if n.title.trim().is_empty() || n.title.len() > MAX_TITLE || control(&n.title) {
        return Err(bad(format!(
            "title must be 1–{MAX_TITLE} bytes of text, not blank and without control characters (got {} bytes)",
            n.title.len()
        )));
    }
    if n.labels.len() > MAX_LABELS {
        return Err(bad(format!(
            "labels: at most {MAX_LABELS} (got {})",
            n.labels.len()
        )));
    }
    for (k, v) in &n.labels {
        if k.is_empty() || k.len() > MAX_LABEL || k.contains(['=', ',']) || control(k) {
            return Err(bad(format!(
                "label key {k:?} must be 1–{MAX_LABEL} bytes without `=`, `,` or control characters"
            )));
        }
        if v.len() > MAX_LABEL || v.contains(',') || control(v) {
            return Err(bad(format!(
                "label {k:?}: the value must be at most {MAX_LABEL} bytes without `,` or control characters"
            )));
        }
    }
    let at = n.at.unwrap_or(now);
    if at > now + MAX_AHEAD {
        return Err(bad(format!(
            "at = {} is more than a day ahead; give when the change happened (or is about to), RFC 3339, or leave it out for now",
            at.to_rfc3339()
        )));
    }
    Ok(NewEvent {
        at,
        title: n.title,
        labels: n.labels,
    })
}
