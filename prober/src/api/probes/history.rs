//! `GET /api/v1/probes/{name}/runs`: a probe's run history, paged by cursor.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{detail_in_ms, known_probe, ms, range, stored_us, DEFAULT_RUNS_PAGE, MAX_RUNS_PAGE};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::run::Phases;
use crate::run::{trace_id, Trigger};
use crate::store::read::StoredRun;

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
    /// The run's W3C trace id, its run id's 32 hex digits: sent in `traceparent`
    /// unless the probe says `trace: false`.
    pub trace_id: String,
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
            trace_id: trace_id(r.run_id),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
