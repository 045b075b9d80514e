//! Starting the daemon: the store writer, the alert engine, the notifier, the
//! scheduler, the metrics collectors, the HTTP server and the reload triggers,
//! in that order; returns once the HTTP server is bound.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::members::{adopted, Members};
use super::{reload, Core, Daemon, SpoolTask, StartError};
use crate::alert::engine::leader::Lease;
use crate::alert::engine::{AlertEngine, EngineSettings};
use crate::analysis::{self, AnalysisConfig, AnalysisStats};
use crate::api::{self, ApiState, AppState, ManualRuns};
use crate::config::settings::Settings;
use crate::config::Probe;
use crate::notify::outbox::Outbox;
use crate::notify::worker::{self as notify_worker, NotifyStats};
use crate::notify::Receivers;
use crate::results::LiveState;
use crate::schedule::{Clock, Executor, Limits, Scheduler, SchedulerStats};
use crate::store::audit::AuditLog;
use crate::store::queue::ResultQueue;
use crate::store::spool::Spool;
use crate::store::writer::{self, StoreHealth, WriterConfig};
use crate::store::{redact_url, Store};
use crate::telemetry::metrics::otlp::{OtlpCollector, OtlpMetricsCollector};
use crate::telemetry::metrics::{
    alerts::AlertCollector, notify::NotifyCollector, probes::ProbeCollector,
    process::ProcessCollector, reload::ReloadCollector, scheduler::SchedulerCollector,
    store::StoreCollector, trends::TrendCollector, Metrics,
};
use crate::telemetry::otlp::metrics::RunMetrics;
use crate::telemetry::otlp::{self, RunTraces};
use crate::telemetry::reload::ReloadStatus;

/// The store and what writes to it, started first so results have somewhere to go.
struct Storage {
    store: Store,
    queue: Arc<ResultQueue>,
    health: Arc<StoreHealth>,
    writer: tokio::task::JoinHandle<()>,
    spool: Option<SpoolTask>,
    /// The spool directory's instance id: notification claims are made under it.
    instance: Option<String>,
}

impl Daemon {
    /// Starts everything; returns once the HTTP server is bound.
    pub async fn start(
        settings: &Settings,
        probes: Vec<Probe>,
        exec: Executor,
    ) -> Result<Daemon, StartError> {
        let drain = CancellationToken::new();
        let stop = CancellationToken::new();
        let storage = start_storage(settings, &drain, &stop)?;
        let (addr, listener) = bind(settings.listen).await?;
        tracing::info!(
            probes = probes.len(),
            %addr,
            location = %settings.location,
            database = %redact_url(&settings.database_url),
            "prober started"
        );
        let (run_metrics, metrics_export) =
            match otlp::metrics::start(&settings.otel, &settings.location, probes.len()) {
                Ok(Some((m, task))) => (Some(m), Some(task)),
                Ok(None) => (None, None),
                Err(e) => return Err(StartError::Otlp(e)),
            };
        let (traces, export) = match otlp::start(&settings.otel, &settings.location) {
            Ok(Some((traces, task))) => (Some(traces), Some(task)),
            Ok(None) => (None, None),
            Err(e) => {
                if let Some(task) = metrics_export {
                    task.finish().await;
                }
                return Err(StartError::Otlp(e));
            }
        };
        if let Some(t) = traces.as_ref().filter(|_| settings.otel.self_traces) {
            trace_own_work(t, settings.otel.sample_ratio);
        }
        let (core, tasks) = start_core(
            settings,
            probes,
            exec,
            &storage,
            &stop,
            (traces, run_metrics),
        );
        let state = api_state(&core, Arc::new(metrics(&core)));
        let server = tokio::spawn(api::serve(listener, state, stop.clone()));
        reload::spawn_triggers(core.clone(), stop.clone());
        Ok(Daemon {
            addr,
            live: core.live.clone(),
            queue: core.queue.clone(),
            store_health: core.store_health.clone(),
            scheduler_stats: core.scheduler_stats.clone(),
            core,
            writer: storage.writer,
            spool: storage.spool,
            server,
            notifier: tasks.notifier,
            membership: tasks.membership,
            leave: tasks.leave,
            export,
            metrics_export,
            drain,
            stop,
            grace: settings.shutdown_grace,
        })
    }
}

/// Hands every finished run to the OTLP exports that are on: all to the
/// traces, the counted ones to the metrics.
fn export_runs(scheduler: &Scheduler, traces: Option<RunTraces>, metrics: Option<RunMetrics>) {
    if traces.is_none() && metrics.is_none() {
        return;
    }
    scheduler.on_finished(Arc::new(move |r, probe, counted| {
        if let Some(t) = &traces {
            t.record(r);
        }
        if let Some(m) = metrics.as_ref().filter(|_| counted) {
            m.record(r, probe);
        }
    }));
}

/// The prober's own spans through `traces`' queue, `ratio` of the traces kept.
fn trace_own_work(traces: &RunTraces, ratio: f64) {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    let provider = SdkTracerProvider::builder()
        .with_span_processor(traces.own_spans())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .build();
    if !crate::telemetry::trace_own_work(provider.tracer("prober")) {
        tracing::warn!("otel.self_traces: logging was set up by the program embedding the prober, not by it; the prober's own spans are not exported");
    }
}

/// The store, its result queue and the writer task.
fn start_storage(
    settings: &Settings,
    drain: &CancellationToken,
    stop: &CancellationToken,
) -> Result<Storage, StartError> {
    let store = Store::new(&settings.database_url, &settings.location)?
        .with_api_runs_counted(settings.api.manual_runs_count);
    let (spool, replayed) = match &settings.spool.dir {
        None => (None, Vec::new()),
        Some(dir) => {
            let (spool, replayed) = Spool::open(dir, settings.spool.sync_every)?;
            (Some(Arc::new(spool)), replayed)
        }
    };
    let queue = Arc::new(ResultQueue::bounded(
        settings.queue_capacity,
        settings.queue_max_bytes,
        spool.clone().map(|s| (s, settings.spool.memory_bytes)),
        replayed,
    ));
    let instance = spool.as_ref().map(|s| s.instance().to_string());
    let spool = match spool {
        None => None,
        Some(spool) => {
            let stop = CancellationToken::new();
            let thread = spool.run(stop.clone())?;
            Some(SpoolTask { stop, thread })
        }
    };
    let health = Arc::new(StoreHealth::default());
    let writer = tokio::spawn(writer::run(
        store.clone(),
        queue.clone(),
        health.clone(),
        WriterConfig {
            migrate: settings.migrate,
            batch_size: settings.batch_size,
            flush_interval: settings.flush_interval,
            retention: settings.retention.clone(),
        },
        drain.clone(),
        stop.clone(),
    ));
    Ok(Storage {
        store,
        queue,
        health,
        writer,
        spool,
        instance,
    })
}

/// Binds `addr`; returns the bound address (port 0 picks one) and the listener.
async fn bind(addr: SocketAddr) -> Result<(SocketAddr, TcpListener), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(StartError::BoundAddress)?;
    Ok((bound, listener))
}

/// The alert engine, the notifier, the scheduler and the audit log, wired
/// together into the [`Core`]; also returns the notifier's task.
fn start_core(
    settings: &Settings,
    probes: Vec<Probe>,
    exec: Executor,
    storage: &Storage,
    stop: &CancellationToken,
    (traces, run_metrics): (Option<RunTraces>, Option<RunMetrics>),
) -> (Arc<Core>, Tasks) {
    let Storage {
        store,
        queue,
        health,
        ..
    } = storage;
    let live = Arc::new(LiveState::new(settings.recent_runs));
    let stats = Arc::new(SchedulerStats::default());
    let receivers = Receivers::from_settings(settings);
    let alerts = AlertEngine::start(
        store.clone(),
        EngineSettings::from_settings(settings),
        &probes,
        Arc::new(Outbox::new(receivers.clone())),
        health.clone(),
        stop.clone(),
    );
    let analysis_stats = Arc::new(AnalysisStats::default());
    if settings.trends.enabled {
        analysis::start(
            store.clone(),
            alerts.clone(),
            AnalysisConfig::from_settings(&settings.trends),
            analysis_stats.clone(),
            stop.clone(),
        );
    }
    let notify_stats = Arc::new(NotifyStats::default());
    let notifier = notify_worker::start(
        store.clone(),
        receivers.clone(),
        notify_stats.clone(),
        health.clone(),
        storage.instance.clone(),
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
    let traced = traces.clone().filter(|_| settings.otel.traces);
    export_runs(&scheduler, traced, run_metrics.clone());
    let scheduler = Arc::new(scheduler);
    let (members, membership, leave) = share_probes(settings, &scheduler, &alerts, storage);
    let core = Arc::new(Core {
        settings: Arc::new(settings.clone()),
        scheduler,
        live,
        queue: queue.clone(),
        store: store.clone(),
        store_health: health.clone(),
        scheduler_stats: stats,
        reload: Arc::new(ReloadStatus::loaded_at(Utc::now())),
        started_at: Utc::now(),
        alerts,
        notify_stats,
        receivers,
        audit,
        analysis: analysis_stats,
        members,
        traces,
        run_metrics,
    });
    (
        core,
        Tasks {
            notifier,
            membership,
            leave,
        },
    )
}

/// Makes this replica a member of its location: the scheduler runs only
/// its share of the probes, and the alerts of probes it takes over are read
/// again. Returns the members, their task and what makes it leave.
fn share_probes(
    settings: &Settings,
    scheduler: &Arc<Scheduler>,
    alerts: &Arc<AlertEngine>,
    storage: &Storage,
) -> (Arc<Members>, tokio::task::JoinHandle<()>, CancellationToken) {
    let members = Arc::new(Members::new(
        &settings.location,
        Lease::holder_for(&settings.location),
    ));
    let owns = members.clone();
    scheduler.share(&settings.location, Arc::new(move |p| owns.turn(p)));
    // Probes taken over from another replica: their alerts as it saved them.
    let (sched, engine, me) = (scheduler.clone(), alerts.clone(), members.me.clone());
    let changed = move |before: &[String], after: &[String]| {
        let probes = sched.probes();
        let adopted = adopted(probes.iter().map(|p| p.name.as_str()), &me, before, after);
        if !adopted.is_empty() {
            engine.adopt(adopted);
        }
    };
    let leave = CancellationToken::new();
    let membership = tokio::spawn(members.clone().run(
        storage.store.clone(),
        storage.health.clone(),
        leave.clone(),
        changed,
    ));
    (members, membership, leave)
}

/// Tasks the daemon waits for when it stops.
struct Tasks {
    notifier: tokio::task::JoinHandle<()>,
    membership: tokio::task::JoinHandle<()>,
    /// Cancelled as the daemon stops: this replica leaves the members.
    leave: CancellationToken,
}

/// One collector per subsystem, in the order of the page.
fn metrics(core: &Core) -> Metrics {
    let mut m = Metrics::default();
    m.register_probes(ProbeCollector::new(
        core.scheduler.clone(),
        core.live.clone(),
        core.settings.metrics_labels.clone(),
    ));
    m.register(SchedulerCollector(core.scheduler_stats.clone()));
    m.register(StoreCollector {
        queue: core.queue.clone(),
        audit: core.audit.clone(),
        health: core.store_health.clone(),
    });
    m.register(ReloadCollector(core.reload.clone()));
    m.register(AlertCollector(core.alerts.clone()));
    m.register(NotifyCollector(core.notify_stats.clone()));
    m.register(TrendCollector(core.analysis.clone()));
    if let Some(t) = &core.run_metrics {
        m.register(OtlpMetricsCollector(t.stats()));
    }
    if let Some(t) = &core.traces {
        m.register(OtlpCollector(t.clone()));
    }
    m.register(ProcessCollector {
        scheduler: core.scheduler.clone(),
        started_at: core.started_at,
    });
    m
}

/// The API's handles on the subsystems; `POST /api/v1/reload` calls back into [`Core`].
fn api_state(core: &Arc<Core>, metrics: Arc<Metrics>) -> AppState {
    Arc::new(ApiState {
        settings: core.settings.clone(),
        scheduler: core.scheduler.clone(),
        live: core.live.clone(),
        queue: core.queue.clone(),
        store: core.store.clone(),
        store_health: core.store_health.clone(),
        scheduler_stats: core.scheduler_stats.clone(),
        alerts: core.alerts.clone(),
        audit: core.audit.clone(),
        manual_runs: ManualRuns::default(),
        reloader: core.clone(),
        reload_status: core.reload.clone(),
        metrics,
        status_reads: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_listen_address_says_which_and_how_to_pick_another() {
        let taken = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let Err(e) = bind(addr).await else {
            panic!("{addr} was bound twice")
        };
        assert!(matches!(e, StartError::Bind { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("cannot listen on {addr}: ")),
            "{message}"
        );
        assert!(
            message.ends_with("; pick another address with --listen or PROBER_LISTEN"),
            "{message}"
        );
    }
}
