//! The HTTP server: `/healthz` (the process only, fast), `/readyz` (probes,
//! store, queue, last reload), `/metrics`, and the JSON API under `/api/v1`.
//! Times are RFC 3339, units are in field names, errors are
//! `{"error": {"code", "message"}}` with the right status.

mod alerts;
mod audit;
pub mod auth;
mod contract;
mod error;
mod events;
mod manual;
mod openapi;
pub(crate) mod probes;
mod trends;
pub mod ui;

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

use auth::SecurityScheme as BearerScheme;
pub use contract::{MAX_BODY_BYTES, REQUEST_ID};
pub use error::ApiError;
pub use manual::ManualRuns;
use openapi::Contract;

use crate::alert::engine::AlertEngine;
use crate::config::settings::Settings;
use crate::results::LiveState;
use crate::schedule::{Diff, Scheduler, SchedulerStats};
use crate::store::audit::AuditLog;
use crate::store::queue::ResultQueue;
use crate::store::writer::{StoreHealth, StoreState};
use crate::store::Store;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::reload::ReloadStatus;

/// What the handlers read: the daemon's subsystems, each shared with the
/// daemon that built them (the API owns none of them).
pub struct ApiState {
    pub settings: Arc<Settings>,
    pub scheduler: Arc<Scheduler>,
    pub live: Arc<LiveState>,
    pub queue: Arc<ResultQueue>,
    pub store: Store,
    pub store_health: Arc<StoreHealth>,
    pub scheduler_stats: Arc<SchedulerStats>,
    pub alerts: Arc<AlertEngine>,
    /// Write requests, on their way to the audit log.
    pub audit: AuditLog,
    /// One API run in flight per probe, and `api.run_min_interval` between two.
    pub manual_runs: ManualRuns,
    /// `POST /api/v1/reload`: the daemon's reload.
    pub reloader: Arc<dyn Reloader>,
    /// The outcome of the last reload, for `/readyz`.
    pub reload_status: Arc<ReloadStatus>,
    /// The collectors `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// The public status page's store reads, reused for a while.
    pub status_reads: ui::status::StatusReads,
}

/// What the handlers get, cheap to clone.
pub type AppState = Arc<ApiState>;

/// Reloads the probe files now, as the daemon does on SIGHUP or a file change.
pub trait Reloader: Send + Sync {
    /// Applies a valid probe set as a diff; an invalid one changes nothing and
    /// comes back as its problems, each with file:line. Blocking: reads files.
    fn reload(&self, trigger: &str) -> Result<Diff, Vec<String>>;
}

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
        probes::screenshot,
        probes::run_now,
        probes::reload,
        alerts::list,
        alerts::history,
        alerts::silences,
        alerts::create_silence,
        alerts::delete_silence,
        alerts::notifications,
        audit::list,
        trends::list,
        trends::for_probe,
        trends::ack,
        events::create,
        events::list,
    ),
    modifiers(&BearerScheme, &Contract),
    tags(
        (name = "operations", description = "Liveness, readiness and Prometheus metrics"),
        (name = "probes", description = "Probe definitions, status, history and latency"),
        (name = "alerts", description = "Alert state and history"),
        (name = "trends", description = "Changes found in probes' latency (steps and drifts) and the change events (deploys) shown with them"),
        (name = "audit", description = "Who changed what (admin token)")
    )
)]
pub struct ApiDoc;

/// The router, for the server and for tests.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/probes", get(probes::list))
        .route("/api/v1/probes/{name}", get(probes::detail))
        .route("/api/v1/probes/{name}/runs", get(probes::runs))
        .route("/api/v1/probes/{name}/latency", get(probes::latency))
        .route(
            "/api/v1/probes/{name}/screenshots/{file}",
            get(probes::screenshot),
        )
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
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/trends", get(trends::list))
        .route("/api/v1/probes/{name}/trends", get(trends::for_probe))
        .route("/api/v1/trends/{id}/ack", post(trends::ack))
        .route("/api/v1/events", get(events::list).post(events::create))
        .route("/api/v1/openapi.json", get(openapi));
    let routes = if state.settings.ui.enabled {
        routes.merge(ui::routes())
    } else {
        routes
    };
    let routes = routes
        .fallback(not_found)
        // Inside the contract's layers: a refusal gets the request id and the envelope too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ));
    contract::layers(routes.with_state(state))
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: AppState, stop: CancellationToken) {
    // The peer address reaches the handlers (and the audit log) as `ConnectInfo`.
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, service)
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

/// The Prometheus page (documented in [`openapi::metrics`]).
async fn metrics(State(core): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    crate::telemetry::metrics::respond(core.metrics.clone(), &headers)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/openapi.json")
}

/// Ready (200) when results reach Postgres; 503 while they do not (the store
/// starting or degraded: probing goes on, results wait in the queue), with
/// the reason, since when and for how long. A failed reload says `degraded`
/// with its errors but stays 200: the last good probe set still runs and is stored.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Results reach Postgres. `status` is `ready`, or `degraded` when the last reload failed; `store`, `queue`, `scheduler` and `reload` say why.", body = Object),
        (status = 503, description = "Results are not reaching Postgres (starting or degraded); `store` gives the reason, `store_degraded_for_s` how long.", body = Object)))]
async fn readyz(State(core): State<AppState>) -> Response {
    let store = core.store_health.state();
    let probes = core.scheduler.probes().len();
    let reload = core.reload_status.get();
    let status = match (&store, reload.errors.is_empty()) {
        (StoreState::Ok, true) => "ready",
        _ => "degraded",
    };
    // Not ready while results are not reaching Postgres: a load balancer or
    // Kubernetes should know, and the body says why and since when.
    let code = match &store {
        StoreState::Ok => StatusCode::OK,
        StoreState::Starting | StoreState::Degraded { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    let degraded_for_s = match &store {
        StoreState::Degraded { since, .. } => {
            Some((chrono::Utc::now() - *since).num_seconds().max(0))
        }
        _ => None,
    };
    let stats = &core.scheduler_stats;
    let body = json!({
        "status": status,
        "location": core.settings.location,
        "probes": probes,
        "store": store,
        "store_degraded_for_s": degraded_for_s,
        "queue": {
            "depth": core.queue.depth(),
            "capacity": core.queue.capacity(),
            "dropped_total": core.queue.dropped(),
        },
        "scheduler": {
            "in_flight": stats.in_flight.load(Ordering::Relaxed),
            "skipped_ticks_total": stats.skipped_ticks.load(Ordering::Relaxed),
        },
        "reload": reload,
    });
    (code, Json(body)).into_response()
}
