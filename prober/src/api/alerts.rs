//! `/api/v1/alerts` and `/api/v1/alerts/history`.

use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::alert::{Alert, State as AlertState};

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
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit={limit} must be between 1 and 1000"
        )));
    }
    let rows = core.store.alert_history(q.probe.as_deref(), limit).await?;
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
