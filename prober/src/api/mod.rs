//! The HTTP server: `/healthz` (the process only, fast), `/readyz` (probes,
//! store, queue, last reload), `/metrics`, and the JSON API under `/api/v1`.
//! Times are RFC 3339, units are in field names, errors are
//! `{"error": {"code", "message"}}` with the right status.

mod alerts;
mod contract;
mod error;
mod openapi;
mod probes;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use contract::{MAX_BODY_BYTES, REQUEST_ID};
pub use error::ApiError;
use openapi::Contract;

use crate::daemon::Core;
use crate::store::writer::StoreState;

/// What the handlers read.
pub type AppState = Arc<Core>;

/// The OpenAPI document, generated from the handlers' types.
#[derive(OpenApi)]
#[openapi(
    info(title = "prober API", description = "Probes, their runs and exact latency percentiles. Every duration is in milliseconds, a number named `*_ms` (e.g. `total_ms: 13.812`); a phase that did not happen is null. Every list of runs is newest first."),
    paths(
        healthz,
        readyz,
        openapi::metrics,
        probes::list,
        probes::detail,
        probes::runs,
        probes::latency,
        probes::run_now,
        probes::reload,
        alerts::list,
        alerts::history,
        alerts::silences,
        alerts::create_silence,
        alerts::delete_silence,
        alerts::notifications,
    ),
    modifiers(&Contract),
    tags(
        (name = "operations", description = "Liveness, readiness and Prometheus metrics"),
        (name = "probes", description = "Probe definitions, status, history and latency"),
        (name = "alerts", description = "Alert state and history")
    )
)]
pub struct ApiDoc;

/// The router, for the server and for tests.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::telemetry::metrics::handler))
        .route("/api/v1/probes", get(probes::list))
        .route("/api/v1/probes/{name}", get(probes::detail))
        .route("/api/v1/probes/{name}/runs", get(probes::runs))
        .route("/api/v1/probes/{name}/latency", get(probes::latency))
        .route("/api/v1/probes/{name}/run", post(probes::run_now))
        .route("/api/v1/reload", post(probes::reload))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/history", get(alerts::history))
        .route("/api/v1/notifications", get(alerts::notifications))
        .route(
            "/api/v1/silences",
            get(alerts::silences).post(alerts::create_silence),
        )
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(alerts::delete_silence),
        )
        .route("/api/v1/openapi.json", get(openapi))
        .fallback(not_found);
    contract::layers(routes.with_state(state))
}

/// Binds `addr`; returns the bound address (port 0 picks one) and the listener.
pub async fn bind(addr: SocketAddr) -> Result<(SocketAddr, TcpListener), String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr}: {e}; pick another address with --listen or PROBER_LISTEN")
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    Ok((bound, listener))
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: AppState, stop: CancellationToken) {
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// The process is alive. Checks nothing else, so it stays fast under any load.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/openapi.json")
}

/// Ready when probes are loaded; says `degraded` (still 200: probing goes on)
/// while Postgres is unavailable or the last reload failed, and why.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`status` is `ready` or `degraded`; `store`, `queue`, `scheduler` and `reload` say why.", body = Object)))]
async fn readyz(State(core): State<AppState>) -> Response {
    let store = core.store_health.state();
    let probes = core.scheduler.probes().len();
    let reload = core.reload_state();
    let status = match (&store, reload.errors.is_empty()) {
        (StoreState::Ok, true) => "ready",
        _ => "degraded",
    };
    let stats = &core.scheduler_stats;
    let body = json!({
        "status": status,
        "location": core.settings.location,
        "probes": probes,
        "store": store,
        "queue": {
            "depth": core.queue.len(),
            "capacity": core.queue.capacity(),
            "dropped_total": core.queue.dropped(),
        },
        "scheduler": {
            "in_flight": stats.in_flight.load(Ordering::Relaxed),
            "skipped_ticks_total": stats.skipped_ticks.load(Ordering::Relaxed),
        },
        "reload": reload,
    });
    (StatusCode::OK, Json(body)).into_response()
}
