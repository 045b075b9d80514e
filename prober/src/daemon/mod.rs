//! `prober run`: load the probes, start the store writer, the HTTP server and
//! the scheduler, and shut down cleanly on SIGTERM/SIGINT: stop scheduling,
//! let runs in flight finish (up to the grace period), flush every result.
//!
//! The daemon owns what its parts share ([`Core`]) and is the only module
//! that changes it: [`start`] builds the subsystems and hands the API and the
//! metrics collectors their handles; [`reload`] applies the probe files again
//! (on SIGHUP, a file change or `POST /api/v1/reload`).

mod error;
pub mod members;
pub mod reload;
mod start;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub use error::StartError;

use crate::alert::engine::AlertEngine;
use crate::analysis::AnalysisStats;
use crate::config::load_paths;
use crate::config::settings::Settings;
use crate::config::Probe;
use crate::notify::worker::NotifyStats;
use crate::notify::Receivers;
use crate::probe::Runner;
use crate::results::LiveState;
use crate::schedule::{Executor, Scheduler, SchedulerStats};
use crate::store::audit::AuditLog;
use crate::store::queue::ResultQueue;
use crate::store::writer::StoreHealth;
use crate::store::Store;
use crate::telemetry::otlp::metrics::{MetricsTask, RunMetrics};
use crate::telemetry::otlp::{ExportTask, RunTraces};
use crate::telemetry::reload::{ReloadState, ReloadStatus};

/// How long the final flush may wait for Postgres at shutdown.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What the daemon's parts share: the API and the metrics read it (through
/// handles the daemon gives them), reloads change it.
pub struct Core {
    pub settings: Arc<Settings>,
    pub scheduler: Arc<Scheduler>,
    pub live: Arc<LiveState>,
    pub queue: Arc<ResultQueue>,
    pub store: Store,
    pub store_health: Arc<StoreHealth>,
    pub scheduler_stats: Arc<SchedulerStats>,
    /// The outcome of the last reload.
    pub reload: Arc<ReloadStatus>,
    pub started_at: DateTime<Utc>,
    pub alerts: Arc<AlertEngine>,
    pub notify_stats: Arc<NotifyStats>,
    /// The receivers the notification worker sends to (replaced on reload).
    pub receivers: Receivers,
    /// Write requests and configuration changes, on their way to the audit log.
    pub audit: AuditLog,
    /// The trend analysis' counters.
    pub analysis: Arc<AnalysisStats>,
    /// The replicas of this location sharing its probes (`members.rs`).
    pub members: Arc<members::Members>,
    /// The OTLP export of runs as traces, when `otel` turns it on.
    pub traces: Option<RunTraces>,
    /// The OTLP metrics of the runs, when `otel.metrics` turns them on.
    pub run_metrics: Option<RunMetrics>,
}

impl Core {
    /// A copy of the outcome of the last reload.
    pub fn reload_state(&self) -> ReloadState {
        self.reload.get()
    }
}

/// A running daemon's handles, for tests and the benchmark.
pub struct Daemon {
    pub addr: SocketAddr,
    pub core: Arc<Core>,
    pub live: Arc<LiveState>,
    pub queue: Arc<ResultQueue>,
    pub store_health: Arc<StoreHealth>,
    pub scheduler_stats: Arc<SchedulerStats>,
    writer: tokio::task::JoinHandle<()>,
    spool: Option<SpoolTask>,
    server: tokio::task::JoinHandle<()>,
    notifier: tokio::task::JoinHandle<()>,
    /// Renews this replica's membership; leaves once `leave` is cancelled.
    membership: tokio::task::JoinHandle<()>,
    leave: CancellationToken,
    /// The OTLP export, finished once the last run is recorded.
    export: Option<ExportTask>,
    /// The OTLP metrics export, whose last points go out once the last run is recorded.
    metrics_export: Option<MetricsTask>,
    drain: CancellationToken,
    stop: CancellationToken,
    grace: Duration,
}

/// The spool's thread and what stops it (after the writer's last batch).
struct SpoolTask {
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

/// Loads probes or returns every problem, each with file:line.
pub fn load_probes(settings: &Settings) -> Result<Vec<Probe>, StartError> {
    let report = load_paths(&settings.probes);
    for w in report.warnings() {
        tracing::warn!("{w}");
    }
    if !report.is_ok() {
        let lines: Vec<String> = report.errors().map(ToString::to_string).collect();
        return Err(StartError::ProbesInvalid(lines));
    }
    if report.probes.is_empty() {
        tracing::warn!(paths = ?settings.probes, "no probes defined; the daemon idles until some are added");
    }
    warn_status_page(settings, &report.probes);
    Ok(report.probes)
}

/// Warns of each `ui.status_page.probes` name that no loaded probe has.
pub fn warn_status_page(settings: &Settings, probes: &[Probe]) {
    let loaded: Vec<&str> = probes.iter().map(|p| p.name.as_str()).collect();
    for name in settings.ui.status_page.unknown(&loaded) {
        tracing::warn!(
            probe = name,
            "ui.status_page.probes names {name:?}, but no loaded probe has that name, so the public status page cannot show it; check the name against GET /api/v1/probes"
        );
    }
}

/// The production executor, browser checks run as [`BrowserOptions::default`](crate::probe::browser::BrowserOptions) says.
pub fn http_executor() -> Result<Executor, StartError> {
    executor_of(Runner::new().map_err(StartError::Runner)?)
}

/// The production executor as the settings say: browser checks as `browser:`,
/// HTTP probes without a proxy of their own through `proxy`.
pub fn executor(settings: &Settings) -> Result<Executor, StartError> {
    let runner = Runner::with_browsers(settings.browser.clone()).map_err(StartError::Runner)?;
    executor_of(runner.with_default_proxy(settings.proxy.clone()))
}

fn executor_of(runner: Runner) -> Result<Executor, StartError> {
    let runner = Arc::new(runner);
    Ok(Arc::new(move |p: Arc<Probe>, run_id| {
        let runner = runner.clone();
        Box::pin(async move { runner.run_as(&p, run_id).await })
    }))
}

impl Daemon {
    /// Stops scheduling, waits for runs in flight, flushes the queue, stops the server.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: no new runs; waiting for runs in flight");
        // Leaving first hands this replica's probes over at the others' next
        // renewal, while its last runs finish (a tick both run is stored once).
        self.leave.cancel();
        let _ = tokio::time::timeout(members::RENEW_EVERY, self.membership).await;
        let unfinished = self.core.scheduler.shutdown(self.grace).await;
        // No run is left to record: the last spans go out beside the queue's drain.
        let export = (self.export.zip(self.core.traces.clone()))
            .map(|(task, traces)| tokio::spawn(async move { task.finish(&traces).await }));
        let metrics_export = (self.metrics_export).map(|task| tokio::spawn(task.finish()));
        self.drain.cancel();
        let mut writer = self.writer;
        if tokio::time::timeout(DRAIN_LIMIT, &mut writer)
            .await
            .is_err()
        {
            self.stop.cancel();
            let _ = writer.await;
        }
        self.queue.report_drops();
        let lost = self.queue.depth();
        let spooled = self.spool.is_some();
        if let Some(spool) = self.spool {
            // The last write and sync; a segment whose runs are all stored goes.
            spool.stop.cancel();
            let _ = tokio::task::spawn_blocking(move || spool.thread.join()).await;
        }
        if lost > 0 && spooled {
            tracing::warn!(
                results = lost,
                "Postgres did not come back within the shutdown limit: these results stay in the spool and are stored at the next start"
            );
        } else if lost > 0 {
            tracing::error!(
                results = lost,
                "Postgres did not come back within the shutdown limit: these results are lost (no spool.dir is set)"
            );
        }
        self.stop.cancel();
        let _ = self.server.await;
        let _ = self.notifier.await;
        if let Some(export) = metrics_export {
            let _ = export.await;
        }
        if let Some(export) = export {
            let _ = export.await;
        }
        tracing::info!(
            written = self.store_health.runs_written.load(Ordering::Relaxed),
            unfinished_runs = unfinished,
            unwritten_results = lost,
            "prober stopped"
        );
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    let probes = load_probes(&settings)?;
    let daemon = Daemon::start(&settings, probes, executor(&settings)?).await?;
    shutdown_signal().await;
    daemon.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
