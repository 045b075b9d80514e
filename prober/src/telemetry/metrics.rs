//! `/metrics` in the Prometheus text format (being written).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::daemon::Core;

/// Serves the metrics.
pub async fn handler(State(_core): State<Arc<Core>>) -> Response {
    (
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "metrics: not yet\n",
    )
        .into_response()
}
