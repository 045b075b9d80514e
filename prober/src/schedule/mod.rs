//! When probes run: interval or cron ticks on the wall clock, a stable spread
//! across the interval, no overlapping runs (a tick that finds the previous
//! run still going is skipped and counted), and admission control (a global
//! and a per-host limit on runs in flight).
//!
//! Time comes from a [`Clock`] that derives the wall clock from tokio's
//! monotonic clock, so tests run the scheduler on paused time.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::{Check, Probe, Schedule};
use crate::probe::{ErrorClass, Outcome};
use crate::results::{LiveState, ProbeMeta, RunRecord};
use crate::store::queue::ResultQueue;

/// Extra time past a probe's own timeout before the scheduler gives up on a run
/// (the run enforces its timeout itself; this only guards against a stuck executor).
const TIMEOUT_GUARD: Duration = Duration::from_secs(1);

/// The wall clock, derived from tokio's clock from an anchor.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: DateTime<Utc>,
    mono: Instant,
}

impl Clock {
    /// Anchored at the system's wall clock now.
    pub fn system() -> Clock {
        Clock::anchored(Utc::now())
    }

    /// Anchored at `wall` now (tests: a fixed wall time with paused tokio time).
    pub fn anchored(wall: DateTime<Utc>) -> Clock {
        Clock {
            wall,
            mono: Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.wall + TimeDelta::from_std(self.mono.elapsed()).unwrap_or_default()
    }

    /// The tokio instant at which the wall clock reads `at` (now, if `at` is past).
    pub fn instant_at(&self, at: DateTime<Utc>) -> Instant {
        match (at - self.wall).to_std() {
            Ok(d) => self.mono + d,
            Err(_) => self.mono,
        }
    }
}

/// A probe's phase offset within its interval: a stable hash of its name, so
/// probes spread across the interval and keep their phase across restarts.
pub fn spread_offset(name: &str, interval: Duration) -> Duration {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let h = u64::from_be_bytes(first);
    let micros = u64::try_from(interval.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_micros(h % micros)
}

/// The first tick strictly after `after`.
pub fn next_tick(
    schedule: &Schedule,
    offset: Duration,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match schedule {
        Schedule::Every(interval) => {
            let step = i64::try_from(interval.as_micros()).ok()?.max(1);
            let off = i64::try_from(offset.as_micros()).ok()?;
            let t = after.timestamp_micros();
            // Ticks are at epoch + offset + k·step.
            let k = (t - off).div_euclid(step) + 1;
            DateTime::from_timestamp_micros(off + k * step)
        }
        Schedule::Cron { schedule, .. } => schedule.after(&after).next(),
    }
}

/// Runs a probe once; the production executor is `probe::Runner::run`.
pub type Executor =
    Arc<dyn Fn(Arc<Probe>) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Counters of the scheduler, for metrics and the benchmark.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub runs_started: AtomicU64,
    pub runs_finished: AtomicU64,
    pub skipped_ticks: AtomicU64,
    pub in_flight: AtomicU64,
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
}

impl Shared {
    fn host_limit(&self, host: &str) -> Arc<Semaphore> {
        let mut map = match self.hosts.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }
}

/// The running scheduler: one loop per probe.
pub struct Scheduler {
    shared: Arc<Shared>,
    loops: TaskTracker,
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
        });
        let loops = TaskTracker::new();
        let stop = CancellationToken::new();
        for p in probes {
            let meta = Arc::new(ProbeMeta {
                name: p.name.clone(),
                version: p.version.clone(),
                definition: p.definition.clone(),
                source: p.source.to_string(),
            });
            loops.spawn(probe_loop(Arc::new(p), meta, shared.clone(), stop.clone()));
        }
        loops.close();
        Scheduler {
            shared,
            loops,
            stop,
        }
    }

    /// Stops scheduling and waits up to `grace` for runs in flight; returns how many did not finish.
    pub async fn shutdown(self, grace: Duration) -> u64 {
        self.stop.cancel();
        self.loops.wait().await;
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
) {
    let interval = probe.schedule.min_interval();
    let offset = match probe.schedule {
        Schedule::Every(d) => spread_offset(&probe.name, d),
        Schedule::Cron { .. } => Duration::ZERO,
    };
    let host = host_of(&probe);
    let busy = Arc::new(AtomicBool::new(false));
    let state = shared.live.probe(&probe.name);
    let mut last = shared.clock.now();
    loop {
        let Some(tick) = next_tick(&probe.schedule, offset, last) else {
            tracing::warn!(probe = %probe.name, "the schedule has no further tick; the probe stops");
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(shared.clock.instant_at(tick)) => {}
            _ = stop.cancelled() => return,
        }
        last = tick;
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
            if let Ok(mut s) = state.lock() {
                s.skipped_ticks += missed;
            }
            tracing::warn!(
                probe = %probe.name, skipped = missed, interval = ?interval,
                "skipped tick(s): the previous run was still going; lower the timeout or raise the interval"
            );
        }
    }
}

fn host_of(probe: &Probe) -> String {
    let Check::Http(h) = &probe.check;
    h.request
        .url
        .render()
        .ok()
        .and_then(|u| url::Url::parse(&u).ok())
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

async fn run_one(
    probe: Arc<Probe>,
    meta: Arc<ProbeMeta>,
    shared: Arc<Shared>,
    scheduled_at: DateTime<Utc>,
    host: String,
    busy: Arc<AtomicBool>,
) {
    shared.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let global = shared.global.clone().acquire_owned().await;
    let per_host = shared.host_limit(&host).acquire_owned().await;
    let started_at = shared.clock.now();
    shared.stats.runs_started.fetch_add(1, Ordering::Relaxed);
    let limit = probe.timeout + TIMEOUT_GUARD;
    let outcome = match tokio::time::timeout(limit, (shared.exec)(probe.clone())).await {
        Ok(o) => o,
        Err(_) => Outcome::failed(
            &probe.name,
            &probe.version,
            started_at,
            ErrorClass::Timeout,
            format!(
                "the run did not end within its timeout of {}",
                humantime::format_duration(probe.timeout)
            ),
            limit,
        ),
    };
    drop((global, per_host));
    let lateness = started_at - scheduled_at;
    let record = RunRecord {
        run_id: Uuid::now_v7(),
        meta,
        scheduled_at,
        started_at,
        lateness_us: lateness.num_microseconds().unwrap_or(i64::MAX),
        outcome,
    };
    shared.live.record(&record);
    shared.queue.push(record);
    shared.stats.runs_finished.fetch_add(1, Ordering::Relaxed);
    shared.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    busy.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn interval_ticks_keep_their_offset() {
        let s = Schedule::Every(Duration::from_secs(60));
        let off = Duration::from_secs(7);
        let a = next_tick(&s, off, t("2026-11-26T10:00:00Z")).unwrap();
        assert_eq!(a, t("2026-11-26T10:00:07Z"));
        let b = next_tick(&s, off, a).unwrap();
        assert_eq!(b, t("2026-11-26T10:01:07Z"));
    }

    #[test]
    fn the_spread_is_stable_and_within_the_interval() {
        let i = Duration::from_secs(60);
        assert_eq!(spread_offset("checkout", i), spread_offset("checkout", i));
        assert_ne!(spread_offset("checkout", i), spread_offset("search", i));
        assert!(spread_offset("checkout", i) < i);
    }
}
