//! The HTTP server: `/healthz` (the process only, fast), `/readyz` (probes
//! loaded, store state, queue). The JSON API and `/metrics` come next.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::schedule::SchedulerStats;
use crate::store::queue::ResultQueue;
use crate::store::writer::{StoreHealth, StoreState};

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub probes: Arc<std::sync::atomic::AtomicUsize>,
    pub store: Arc<StoreHealth>,
    pub queue: Arc<ResultQueue>,
    pub scheduler: Arc<SchedulerStats>,
    pub location: String,
}

/// The router, for the server and for tests.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
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
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when probes are loaded; says `degraded` (still 200: probing goes on) while
/// Postgres is unavailable, with the reason and the queue's depth.
async fn readyz(State(s): State<AppState>) -> Response {
    let store = s.store.state();
    let probes = s.probes.load(Ordering::Relaxed);
    let status = match (&store, probes) {
        (_, 0) => "not_ready",
        (StoreState::Ok, _) => "ready",
        _ => "degraded",
    };
    let body = json!({
        "status": status,
        "location": s.location,
        "probes": probes,
        "store": store,
        "queue": {
            "depth": s.queue.len(),
            "capacity": s.queue.capacity(),
            "dropped_total": s.queue.dropped(),
        },
        "scheduler": {
            "in_flight": s.scheduler.in_flight.load(Ordering::Relaxed),
            "skipped_ticks_total": s.scheduler.skipped_ticks.load(Ordering::Relaxed),
        },
    });
    let code = if probes == 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}
