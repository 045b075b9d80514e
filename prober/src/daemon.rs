//! `prober run`: load the probes, start the store writer, the HTTP server and
//! the scheduler, and shut down cleanly on SIGTERM/SIGINT: stop scheduling,
//! let runs in flight finish (up to the grace period), flush every result.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::alert::engine::EngineSettings;
use crate::api;
use crate::config::settings::Settings;
use crate::config::{load_paths, Probe};
use crate::probe::Runner;
use crate::results::LiveState;
use crate::schedule::{Clock, Diff, Executor, Limits, Scheduler, SchedulerStats};
use crate::store::audit::{AuditEntry, AuditLog};
use crate::store::queue::ResultQueue;
use crate::store::writer::{self, StoreHealth, WriterConfig};
use crate::store::{redact_url, Store};

/// How long the final flush may wait for Postgres at shutdown.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What the daemon's parts share: the API reads it, reloads change it.
pub struct Core {
    pub settings: Settings,
    pub scheduler: Scheduler,
    pub live: Arc<LiveState>,
    pub queue: Arc<ResultQueue>,
    pub store: Store,
    pub store_health: Arc<StoreHealth>,
    pub scheduler_stats: Arc<SchedulerStats>,
    pub reload: RwLock<ReloadState>,
    pub started_at: DateTime<Utc>,
    pub alerts: Arc<crate::alert::engine::AlertEngine>,
    pub notify_stats: Arc<crate::notify::worker::NotifyStats>,
    /// The receivers the notification worker sends to (replaced on reload).
    pub receivers: crate::notify::Receivers,
    /// Write requests and configuration changes, on their way to `audit_log`.
    pub audit: crate::store::audit::AuditLog,
    /// One API run in flight per probe, and `api.run_min_interval` between two.
    pub manual_runs: crate::api::ManualRuns,
}

/// The outcome of the last reload, shown in `/readyz` and `/metrics` until fixed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadState {
    /// Problems of the last attempt (empty when it applied), each with file:line.
    pub errors: Vec<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub succeeded_total: u64,
    pub failed_total: u64,
    pub last_diff: Option<Diff>,
}

impl Core {
    /// Loads the probe files (and the alerting parts of the settings file the
    /// daemon started with) again and applies them; an invalid set changes nothing.
    pub fn reload(&self, trigger: &str) -> Result<Diff, Vec<String>> {
        let report = load_paths(&self.settings.probes);
        // The same checks as at start: every problem of the file, each at its line.
        let settings = self.settings.file.as_ref().map(|path| {
            let check = Settings::check(
                &crate::config::settings::SettingsArgs {
                    config: Some(path.clone()),
                    ..Default::default()
                },
                crate::config::settings::EnvMode::Require,
            );
            let errors: Vec<String> = (check.errors())
                .map(|d| format!("{d}; fix the settings file and reload again"))
                .collect();
            check.settings.ok_or(errors)
        });
        let now = Utc::now();
        let mut state = match self.reload.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        state.last_attempt_at = Some(now);
        let mut errors: Vec<String> = report.errors().map(ToString::to_string).collect();
        if let Some(Err(e)) = &settings {
            errors.extend(e.iter().cloned());
        }
        if !errors.is_empty() {
            for e in &errors {
                tracing::error!(
                    trigger,
                    "reload refused, the running probes are unchanged: {e}"
                );
            }
            state.failed_total += 1;
            state.errors.clone_from(&errors);
            self.audit.record(AuditEntry::reload(
                trigger,
                false,
                format!("refused, nothing changed: {}", errors.join("; ")),
            ));
            return Err(errors);
        }
        for w in report.warnings() {
            tracing::warn!("{w}");
        }
        if let Some(Ok(new)) = settings {
            // Alerting only: the rest (database, listen address, limits) needs a restart.
            self.alerts
                .set_settings(EngineSettings::from_settings(&new));
            self.receivers.reload(&new);
            tracing::info!(
                receivers = new.receivers.len(),
                silences = new.silences.len(),
                "alerting settings reloaded"
            );
        }
        let mut probes = report.probes;
        keep_probes_of_emptied_files(&self.scheduler.probes(), &report.empty_files, &mut probes);
        let names: Vec<String> = probes.iter().map(|p| p.name.clone()).collect();
        self.alerts.set_probes(&probes);
        let diff = self.scheduler.apply(probes);
        let keep: Vec<&str> = names.iter().map(String::as_str).collect();
        self.live.retain(&keep);
        tracing::info!(
            trigger,
            added = ?diff.added, removed = ?diff.removed, changed = ?diff.changed,
            unchanged = diff.unchanged,
            "probes reloaded"
        );
        self.audit.record(AuditEntry::reload(
            trigger,
            true,
            format!(
                "applied: added {:?}, removed {:?}, changed {:?}, {} unchanged",
                diff.added, diff.removed, diff.changed, diff.unchanged
            ),
        ));
        state.succeeded_total += 1;
        state.errors.clear();
        state.last_success_at = Some(now);
        state.last_diff = Some(diff.clone());
        Ok(diff)
    }

    pub fn reload_state(&self) -> ReloadState {
        match self.reload.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// A probe file that had probes and now holds none (emptied, or only comments) is
/// most likely being rewritten in place (truncate, then write: `cat >`, `scp`, many
/// tools), so its running probes stay; removing them takes deleting the file.
/// A probe of the file that is now defined elsewhere is not kept twice.
fn keep_probes_of_emptied_files(
    running: &[Arc<Probe>],
    empty_files: &[std::path::PathBuf],
    probes: &mut Vec<Probe>,
) {
    for file in empty_files {
        let kept: Vec<Probe> = running
            .iter()
            .filter(|p| p.source.file == *file)
            .filter(|p| !probes.iter().any(|n| n.name == p.name))
            .map(|p| Probe::clone(p))
            .collect();
        if kept.is_empty() {
            continue;
        }
        let names: Vec<&str> = kept.iter().map(|p| p.name.as_str()).collect();
        tracing::warn!(
            file = %file.display(),
            probes = ?names,
            "the probe file holds no probe now; its {} probe(s) keep running, since an empty \
             file is most likely being written; to remove them, delete the file",
            kept.len()
        );
        probes.extend(kept);
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
    server: tokio::task::JoinHandle<()>,
    notifier: tokio::task::JoinHandle<()>,
    drain: CancellationToken,
    stop: CancellationToken,
    grace: Duration,
}

/// Loads probes or returns every problem, one per line.
pub fn load_probes(settings: &Settings) -> Result<Vec<Probe>, String> {
    let report = load_paths(&settings.probes);
    for w in report.warnings() {
        tracing::warn!("{w}");
    }
    if !report.is_ok() {
        let lines: Vec<String> = report.errors().map(ToString::to_string).collect();
        return Err(format!(
            "{}\nrefusing to start: fix the probe files above (`prober check` shows the same)",
            lines.join("\n")
        ));
    }
    if report.probes.is_empty() {
        tracing::warn!(paths = ?settings.probes, "no probes defined; the daemon idles until some are added");
    }
    Ok(report.probes)
}

/// The production executor.
pub fn http_executor() -> Result<Executor, String> {
    let runner = Arc::new(Runner::new()?);
    Ok(Arc::new(move |p: Arc<Probe>| {
        let runner = runner.clone();
        Box::pin(async move { runner.run(&p).await })
    }))
}

impl Daemon {
    /// Starts everything; returns once the HTTP server is bound.
    pub async fn start(
        settings: &Settings,
        probes: Vec<Probe>,
        exec: Executor,
    ) -> Result<Daemon, String> {
        let store = Store::new(&settings.database_url, &settings.location)
            .map_err(|e| e.to_string())?
            .with_api_runs_counted(settings.api.manual_runs_count);
        let queue = Arc::new(ResultQueue::new(settings.queue_capacity));
        let health = Arc::new(StoreHealth::default());
        let live = Arc::new(LiveState::new(settings.recent_runs));
        let stats = Arc::new(SchedulerStats::default());
        let drain = CancellationToken::new();
        let stop = CancellationToken::new();

        let writer = tokio::spawn(writer::run(
            store.clone(),
            queue.clone(),
            health.clone(),
            WriterConfig {
                database_url: settings.database_url.clone(),
                migrate: settings.migrate,
                batch_size: settings.batch_size,
                flush_interval: settings.flush_interval,
                retention: settings.retention.clone(),
            },
            drain.clone(),
            stop.clone(),
        ));

        let (addr, listener) = api::bind(settings.listen).await?;
        tracing::info!(
            probes = probes.len(),
            %addr,
            location = %settings.location,
            database = %redact_url(&settings.database_url),
            "prober started"
        );
        let receivers = crate::notify::Receivers::from_settings(settings);
        let alerts = crate::alert::engine::AlertEngine::start(
            store.clone(),
            crate::alert::engine::EngineSettings::from_settings(settings),
            &probes,
            Arc::new(crate::notify::outbox::Outbox::new(receivers.clone())),
            health.clone(),
            stop.clone(),
        );
        let notify_stats = Arc::new(crate::notify::worker::NotifyStats::default());
        let notifier = crate::notify::worker::start(
            store.clone(),
            receivers.clone(),
            notify_stats.clone(),
            health.clone(),
            stop.clone(),
        );
        let scheduler = Scheduler::start(
            probes,
            exec,
            live.clone(),
            queue.clone(),
            Clock::system(),
            Limits {
                global: settings.max_concurrency,
                per_host: settings.max_per_host,
            },
            stats.clone(),
        );
        let audit = AuditLog::start(store.clone(), health.clone(), stop.clone());
        scheduler.count_api_runs(settings.api.manual_runs_count);
        let hook = alerts.clone();
        scheduler.on_run(Arc::new(move |r| hook.submit(r)));
        let core = Arc::new(Core {
            settings: settings.clone(),
            scheduler,
            live: live.clone(),
            queue: queue.clone(),
            store,
            store_health: health.clone(),
            scheduler_stats: stats.clone(),
            reload: RwLock::new(ReloadState {
                last_success_at: Some(Utc::now()),
                ..ReloadState::default()
            }),
            started_at: Utc::now(),
            alerts,
            notify_stats,
            receivers,
            audit,
            manual_runs: crate::api::ManualRuns::default(),
        });
        let server = tokio::spawn(api::serve(listener, core.clone(), stop.clone()));
        crate::config::watch::spawn(core.clone(), stop.clone());
        Ok(Daemon {
            addr,
            core,
            live,
            queue,
            store_health: health,
            scheduler_stats: stats,
            writer,
            server,
            notifier,
            drain,
            stop,
            grace: settings.shutdown_grace,
        })
    }

    /// Stops scheduling, waits for runs in flight, flushes the queue, stops the server.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: no new runs; waiting for runs in flight");
        let unfinished = self.core.scheduler.shutdown(self.grace).await;
        self.drain.cancel();
        let mut writer = self.writer;
        if tokio::time::timeout(DRAIN_LIMIT, &mut writer)
            .await
            .is_err()
        {
            self.stop.cancel();
            let _ = writer.await;
        }
        let lost = self.queue.len();
        if lost > 0 {
            tracing::error!(
                results = lost,
                "Postgres did not come back within the shutdown limit: these results are lost"
            );
        }
        self.stop.cancel();
        let _ = self.server.await;
        let _ = self.notifier.await;
        tracing::info!(
            written = self.store_health.runs_written.load(Ordering::Relaxed),
            unfinished_runs = unfinished,
            unwritten_results = lost,
            "prober stopped"
        );
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), String> {
    let probes = load_probes(&settings)?;
    let daemon = Daemon::start(&settings, probes, http_executor()?).await?;
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
