//! When probes run: interval or cron ticks on the wall clock, a stable spread
//! across the interval, no overlapping runs (a tick that finds the previous
//! run still going is skipped and counted), and admission control (a global
//! and a per-host limit on runs in flight).
//!
//! Time comes from a [`Clock`] that derives the wall clock from tokio's
//! monotonic clock, so tests run the scheduler on paused time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::{Probe, Schedule};
use crate::probe::run_limit;
use crate::results::{metric_bucket, LiveState, MetricHist, METRIC_BUCKETS_US};
use crate::run::{tick_run_id, trace_id, ProbeMeta, RunRecord, Trigger};
use crate::run::{ErrorClass, Outcome};
use crate::store::queue::ResultQueue;

mod clock;
mod precise;

pub use clock::{next_tick, spread_offset, Clock};
pub use precise::timer_realtime;

/// Runs a probe once as the run with this id (its trace id is the run id's);
/// the production executor is `probe::Runner::run_as`.
pub type Executor =
    Arc<dyn Fn(Arc<Probe>, Uuid) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Runs a probe once through `exec`, as every scheduled run does (and `prober
/// once`): the runner keeps the run's budget itself; this gives up only on a
/// stuck executor, past [`run_limit`] (the budget and a guard), and records
/// that as a timeout.
pub async fn run_guarded(
    exec: &Executor,
    probe: Arc<Probe>,
    run_id: Uuid,
    started_at: DateTime<Utc>,
) -> Outcome {
    let limit = run_limit(&probe);
    match tokio::time::timeout(limit, exec(probe.clone(), run_id)).await {
        Ok(o) => o,
        Err(_) => Outcome {
            trace_id: trace_id(run_id),
            ..Outcome::failed(
            &probe.name,
            &probe.version,
            started_at,
            ErrorClass::Timeout,
            format!(
                "the run did not end within its budget of {} (every attempt's timeout and the retry delays)",
                humantime::format_duration(probe.budget().total())
            ),
            limit,
        )
        },
    }
}

/// Counters of the scheduler, for metrics and the benchmark.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub runs_started: AtomicU64,
    pub runs_finished: AtomicU64,
    pub skipped_ticks: AtomicU64,
    pub in_flight: AtomicU64,
    /// Lateness of every run, per bucket of [`METRIC_BUCKETS_US`] and then the
    /// overflow bucket (not cumulative); the count is their sum.
    pub lateness_buckets: [AtomicU64; METRIC_BUCKETS_US.len() + 1],
    /// Sum of the lateness of every run, in µs.
    pub lateness_sum_us: AtomicU64,
}

impl SchedulerStats {
    /// Adds one run's lateness (negative counts as 0) to the histogram.
    pub fn record_lateness(&self, lateness_us: i64) {
        let us = u64::try_from(lateness_us).unwrap_or(0);
        self.lateness_buckets[metric_bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.lateness_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The lateness histogram now (each bucket read once; the count is their sum).
    pub fn lateness(&self) -> MetricHist {
        MetricHist {
            buckets: std::array::from_fn(|i| self.lateness_buckets[i].load(Ordering::Relaxed)),
            sum_us: self.lateness_sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Limits on runs in flight.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub global: usize,
    pub per_host: usize,
}

/// Everything the per-probe loops share.
struct Shared {
    exec: Executor,
    live: Arc<LiveState>,
    queue: Arc<ResultQueue>,
    clock: Clock,
    global: Arc<Semaphore>,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_host: usize,
    stats: Arc<SchedulerStats>,
    runs: TaskTracker,
    /// Told of every counted run (the alert engine).
    on_run: std::sync::OnceLock<RunHook>,
    /// Told of every run, counted or not (the OTLP export).
    on_finished: std::sync::OnceLock<FinishedHook>,
    /// API runs count like scheduled ones (`api.manual_runs_count`).
    count_api_runs: AtomicBool,
    /// Replicas sharing the probes: the location (a tick's run id is derived
    /// from it) and whether this replica runs a probe now.
    shared_by: std::sync::OnceLock<(String, OwnsHook)>,
}

/// A function told of every finished run; it must not wait.
pub type RunHook = Arc<dyn Fn(&RunRecord) + Send + Sync>;

/// A function told of every finished run, with its probe and whether it is
/// counted (scheduled, or an API run with `api.manual_runs_count`); it must not wait.
pub type FinishedHook = Arc<dyn Fn(&RunRecord, &Probe, bool) + Send + Sync>;

/// Whose turn the named probe's tick is now; it must not wait.
pub type OwnsHook = Arc<dyn Fn(&str) -> Turn + Send + Sync>;

/// Who runs a tick among the replicas sharing the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// This replica.
    Mine,
    /// Another replica: not run here, not skipped.
    Theirs,
    /// Not known yet (this replica is joining): not run, counted as skipped.
    Unknown,
}

impl Shared {
    fn host_limit(&self, host: &str) -> Arc<Semaphore> {
        self.hosts
            .lock()
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }
}

/// One probe's loop: the version it runs, how to stop it, and its "run in flight" flag.
struct LoopHandle {
    probe: Arc<Probe>,
    stop: CancellationToken,
    busy: Arc<AtomicBool>,
}

/// What applying a new probe set changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
}

/// The running scheduler: one loop per probe.
pub struct Scheduler {
    shared: Arc<Shared>,
    loops: Mutex<HashMap<String, LoopHandle>>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Scheduler {
    pub fn start(
        probes: Vec<Probe>,
        exec: Executor,
        live: Arc<LiveState>,
        queue: Arc<ResultQueue>,
        clock: Clock,
        limits: Limits,
        stats: Arc<SchedulerStats>,
    ) -> Scheduler {
        let shared = Arc::new(Shared {
            exec,
            live,
            queue,
            clock,
            global: Arc::new(Semaphore::new(limits.global.max(1))),
            hosts: Mutex::new(HashMap::new()),
            per_host: limits.per_host.max(1),
            stats,
            runs: TaskTracker::new(),
            on_run: std::sync::OnceLock::new(),
            on_finished: std::sync::OnceLock::new(),
            count_api_runs: AtomicBool::new(false),
            shared_by: std::sync::OnceLock::new(),
        });
        let scheduler = Scheduler {
            shared,
            loops: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        scheduler.apply(probes);
        scheduler
    }

    fn lock_loops(&self) -> MutexGuard<'_, HashMap<String, LoopHandle>> {
        self.loops.lock()
    }

    /// Makes `probes` the running set: unchanged probes keep their loop (and so
    /// their phase and state), removed ones stop, new ones start, changed ones restart.
    pub fn apply(&self, probes: Vec<Probe>) -> Diff {
        let mut diff = Diff::default();
        if self.stop.is_cancelled() {
            // Shutting down: a late reload must not start loops that would exit at once.
            return diff;
        }
        // Each probe moves into its `Arc` first and the `Vec<Probe>` (len × the size of a
        // probe, and up to twice that in capacity) is freed before the loops, their tasks
        // and metas are allocated.
        let mut shared_probes: Vec<Arc<Probe>> = Vec::with_capacity(probes.len());
        shared_probes.extend(probes.into_iter().map(Arc::new));
        let mut loops = self.lock_loops();
        let gone: Vec<String> = {
            let names: HashSet<&str> = shared_probes.iter().map(|p| p.name.as_str()).collect();
            loops
                .keys()
                .filter(|k| !names.contains(k.as_str()))
                .cloned()
                .collect()
        };
        for name in gone {
            if let Some(h) = loops.remove(&name) {
                h.stop.cancel();
            }
            diff.removed.push(name);
        }
        for probe in shared_probes {
            let busy = match loops.get(&probe.name) {
                Some(h) if h.probe.version == probe.version => {
                    diff.unchanged += 1;
                    continue;
                }
                Some(h) => {
                    h.stop.cancel();
                    diff.changed.push(probe.name.clone());
                    // A run of the old version still in flight keeps the new loop from overlapping it.
                    h.busy.clone()
                }
                None => {
                    diff.added.push(probe.name.clone());
                    Arc::new(AtomicBool::new(false))
                }
            };
            let stop = self.stop.child_token();
            let meta = Arc::new(ProbeMeta {
                name: probe.name.clone(),
                version: probe.version.clone(),
                definition: probe.definition.clone(),
                source: probe.source.to_string(),
            });
            self.tracker.spawn(probe_loop(
                probe.clone(),
                meta,
                self.shared.clone(),
                stop.clone(),
                busy.clone(),
            ));
            loops.insert(probe.name.clone(), LoopHandle { probe, stop, busy });
        }
        diff.added.sort();
        diff.removed.sort();
        diff.changed.sort();
        diff
    }

    /// Whether runs asked for through the API move live status, counters and
    /// alerts (`api.manual_runs_count`); by default they do not.
    pub fn count_api_runs(&self, yes: bool) {
        self.shared.count_api_runs.store(yes, Ordering::Relaxed);
    }

    /// Sets the function told of every counted run (once).
    pub fn on_run(&self, hook: RunHook) {
        let _ = self.shared.on_run.set(hook);
    }

    /// Sets the function told of every run, counted or not (once); it must not wait.
    pub fn on_finished(&self, hook: FinishedHook) {
        let _ = self.shared.on_finished.set(hook);
    }

    /// Shares the probes with the other replicas of `location` (once): a
    /// tick runs only where `owns` says, and its run id is
    /// [`tick_run_id`], the same on every replica. Without this every tick
    /// runs here, with a random run id.
    pub fn share(&self, location: &str, owns: OwnsHook) {
        let _ = self.shared.shared_by.set((location.to_string(), owns));
    }

    /// The probes being scheduled, by name.
    pub fn probes(&self) -> Vec<Arc<Probe>> {
        let mut v: Vec<Arc<Probe>> = self
            .lock_loops()
            .values()
            .map(|h| h.probe.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The probe named `name`, if scheduled.
    pub fn probe(&self, name: &str) -> Option<Arc<Probe>> {
        self.lock_loops().get(name).map(|h| h.probe.clone())
    }

    /// Runs a probe now, outside its schedule, recorded as an `api` run.
    pub async fn run_now(&self, name: &str) -> Option<RunRecord> {
        let (probe, meta) = {
            let loops = self.lock_loops();
            let h = loops.get(name)?;
            let meta = Arc::new(ProbeMeta {
                name: h.probe.name.clone(),
                version: h.probe.version.clone(),
                definition: h.probe.definition.clone(),
                source: h.probe.source.to_string(),
            });
            (h.probe.clone(), meta)
        };
        let host = host_of(&probe);
        let now = self.shared.clock.now();
        let task = self.shared.runs.spawn(execute(
            probe,
            meta,
            self.shared.clone(),
            now,
            host,
            Trigger::Api,
        ));
        task.await.ok()
    }

    /// Stops scheduling and waits up to `grace` for runs in flight; returns how many did not finish.
    pub async fn shutdown(&self, grace: Duration) -> u64 {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.shared.runs.close();
        if tokio::time::timeout(grace, self.shared.runs.wait())
            .await
            .is_err()
        {
            let left = self.shared.stats.in_flight.load(Ordering::Relaxed);
            tracing::warn!(
                runs = left,
                "shutdown grace elapsed with runs still in flight; their results are lost"
            );
            return left;
        }
        0
    }
}

async fn probe_loop(
    probe: Arc<Probe>,
    meta: Arc<ProbeMeta>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    busy: Arc<AtomicBool>,
) {
    let interval = probe.schedule.min_interval();
    let offset = match probe.schedule {
        Schedule::Every(d) => spread_offset(&probe.name, d),
        Schedule::Cron { .. } => Duration::ZERO,
    };
    let host = host_of(&probe);
    let state = shared.live.probe(&probe.name);
    let mut last = shared.clock.now();
    loop {
        let Some(tick) = next_tick(&probe.schedule, offset, last) else {
            tracing::warn!(probe = %probe.name, "the schedule has no further tick; the probe stops");
            return;
        };
        tokio::select! {
            _ = shared.clock.sleep_until(tick) => {}
            _ = stop.cancelled() => return,
        }
        last = tick;
        match shared.shared_by.get().map(|(_, owns)| owns(&probe.name)) {
            None | Some(Turn::Mine) => {}
            Some(Turn::Theirs) => continue,
            Some(Turn::Unknown) => {
                shared.stats.skipped_ticks.fetch_add(1, Ordering::Relaxed);
                state.lock().skipped_ticks += 1;
                continue;
            }
        }
        // Woken more than a tick late (a stalled process): the ticks in between are skipped.
        let now = shared.clock.now();
        let mut missed = 0u64;
        while let Some(t) = next_tick(&probe.schedule, offset, last).filter(|t| *t <= now) {
            last = t;
            missed += 1;
        }
        if busy.swap(true, Ordering::AcqRel) {
            missed += 1;
        } else {
            let run = run_one(
                probe.clone(),
                meta.clone(),
                shared.clone(),
                last,
                host.clone(),
                busy.clone(),
            );
            shared.runs.spawn(run);
        }
        if missed > 0 {
            shared
                .stats
                .skipped_ticks
                .fetch_add(missed, Ordering::Relaxed);
            state.lock().skipped_ticks += missed;
            tracing::warn!(
                probe = %probe.name, skipped = missed, interval = ?interval,
                "skipped tick(s): the previous run was still going; lower the timeout or raise the interval"
            );
        }
    }
}

fn host_of(probe: &Probe) -> String {
    probe.target_host()
}

async fn run_one(
    probe: Arc<Probe>,
    meta: Arc<ProbeMeta>,
    shared: Arc<Shared>,
    scheduled_at: DateTime<Utc>,
    host: String,
    busy: Arc<AtomicBool>,
) {
    // Reset however the run ends, a panic included: a probe never stays
    // "still running" with every later tick skipped.
    let _free = Reset(busy);
    execute(probe, meta, shared, scheduled_at, host, Trigger::Schedule).await;
}

/// Clears the flag when dropped.
struct Reset(Arc<AtomicBool>);

impl Drop for Reset {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Decrements the in-flight count when dropped.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs a probe within the limits, then records the run in live state and the store queue.
async fn execute(
    probe: Arc<Probe>,
    meta: Arc<ProbeMeta>,
    shared: Arc<Shared>,
    scheduled_at: DateTime<Utc>,
    host: String,
    trigger: Trigger,
) -> RunRecord {
    shared.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight(&shared.stats.in_flight);
    let global = shared.global.clone().acquire_owned().await;
    let per_host = shared.host_limit(&host).acquire_owned().await;
    let started_at = shared.clock.now();
    shared.stats.runs_started.fetch_add(1, Ordering::Relaxed);
    // Known before the run: its trace id, sent to the target, is the run id's.
    let run_id = match shared.shared_by.get() {
        Some((location, _)) if trigger == Trigger::Schedule => {
            tick_run_id(location, &meta.name, scheduled_at)
        }
        _ => Uuid::now_v7(),
    };
    let outcome = run_guarded(&shared.exec, probe.clone(), run_id, started_at).await;
    drop((global, per_host));
    let lateness = started_at - scheduled_at;
    let lateness_us = lateness.num_microseconds().unwrap_or(i64::MAX);
    shared.stats.record_lateness(lateness_us);
    let record = RunRecord {
        run_id,
        meta,
        scheduled_at,
        started_at,
        lateness_us,
        outcome,
        trigger,
    };
    // An API run is stored (marked) but, unless configured, moves neither status nor alerts.
    let counted = trigger == Trigger::Schedule || shared.count_api_runs.load(Ordering::Relaxed);
    shared.live.record_counted(&record, counted);
    if let Some(hook) = shared.on_run.get().filter(|_| counted) {
        hook(&record);
    }
    if let Some(hook) = shared.on_finished.get() {
        hook(&record, &probe, counted);
    }
    shared.queue.push(&record);
    shared.stats.runs_finished.fetch_add(1, Ordering::Relaxed);
    record
}
