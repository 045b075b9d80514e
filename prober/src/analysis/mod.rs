//! Trend analysis: every few minutes, on the replica that holds the alert
//! evaluator lock, each probe's recent series is read from the store (merged
//! bins per point), the trend engine looks for steps, each candidate is
//! confirmed on the histograms before and after it, and the findings are
//! stored: once, updated when a later pass moves them.
//!
//! - `series.rs`: the resolution from the probe's rate, statistics per point;
//! - `steps.rs`: change points confirmed and named by the phase that moved;
//! - `failures.rs`: steps in the failure ratio, confirmed on run counts;
//! - `drifts.rs`: slow drifts of hourly medians over a week, and the
//!   forecast of a drift crossing the probe's latency alert threshold.

pub mod drifts;
pub mod failures;
pub mod series;
pub mod steps;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::alert::engine::AlertEngine;
use crate::config::policy::LatencyRule;
use crate::config::settings::TrendSettings;
use crate::store::trends::{Saved, Subject};
use crate::store::{Store, StoreError};
use crate::trend::compare::Floor;
use crate::trend::drift;
use drifts::{drifts, forecast, DRIFT_WINDOW};
use failures::failure_steps;
use series::{step_for, MIN_RUNS_FOR_P95};
use steps::{steps, StepConfig};

/// How often the analysis runs by default.
pub const ANALYSE_EVERY: Duration = Duration::from_secs(5 * 60);

/// Points of a step series: 8 hours at the finest step, 4 days at the coarsest.
pub const POINTS: i32 = 96;

/// How long after a point ends it is analysed (the fold's delay: runs
/// finish after their tick).
const CLOSE_AFTER: TimeDelta = TimeDelta::minutes(2);

/// The recent window that tells which probes run, and how often.
const RATE_WINDOW: TimeDelta = TimeDelta::hours(2);

/// Earlier days read at the same clock times as a step series: a step must be
/// more than the daily cycle moved them (`steps::beyond_the_daily_cycle`).
/// Two, so one unusual day is not the only baseline.
pub const SEASON_DAYS: i64 = 2;

/// What the analysis is told.
#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    pub every: Duration,
    pub steps: StepConfig,
    pub drift: drift::Config,
    /// The `latency` alert rule of each probe that has one (by name): the
    /// forecast's threshold. The daemon refreshes it before every pass.
    pub latency: HashMap<String, LatencyRule>,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            every: ANALYSE_EVERY,
            steps: StepConfig::default(),
            drift: drift::Config::default(),
            latency: HashMap::new(),
        }
    }
}

impl AnalysisConfig {
    /// The analysis as `trends:` in prober.yaml sets it.
    pub fn from_settings(t: &TrendSettings) -> AnalysisConfig {
        let mut cfg = AnalysisConfig {
            every: t.analyse_every,
            ..AnalysisConfig::default()
        };
        cfg.steps.floor = Floor {
            max_pvalue: t.max_pvalue,
            min_relative: t.min_shift_ratio,
            min_absolute_us: t.min_shift.as_secs_f64() * 1e6,
        };
        cfg
    }
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct AnalysisStats {
    pub passes: AtomicU64,
    pub failed_passes: AtomicU64,
    pub subjects: AtomicU64,
    pub new_findings: AtomicU64,
    pub updated_findings: AtomicU64,
    /// Microseconds the last pass took.
    pub last_pass_us: AtomicU64,
    /// Stored findings by kind and state, as of the last pass.
    pub findings: parking_lot::Mutex<Vec<(String, String, u64)>>,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub subjects: u64,
    pub new: u64,
    pub updated: u64,
}

/// Starts the periodic analysis; it analyses only while this replica holds
/// the evaluator lease (`alerts.is_leader()`), from the moment it takes it.
pub fn start(
    store: Store,
    alerts: Arc<AlertEngine>,
    mut cfg: AnalysisConfig,
    stats: Arc<AnalysisStats>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            // A follower waits here and analyses as soon as it leads (a
            // takeover, or the first renewal after start), not a period later.
            while !alerts.is_leader() {
                tokio::select! {
                    _ = tokio::time::sleep(crate::alert::engine::RENEW_EVERY) => {}
                    _ = stop.cancelled() => return,
                }
            }
            let started = std::time::Instant::now();
            cfg.latency = alerts.latency_rules();
            match analyse(&store, &cfg, Utc::now()).await {
                Ok(p) => {
                    stats.passes.fetch_add(1, Ordering::Relaxed);
                    stats.subjects.store(p.subjects, Ordering::Relaxed);
                    stats.new_findings.fetch_add(p.new, Ordering::Relaxed);
                    stats
                        .updated_findings
                        .fetch_add(p.updated, Ordering::Relaxed);
                    tracing::debug!(
                        subjects = p.subjects,
                        new = p.new,
                        updated = p.updated,
                        "trend analysis done"
                    );
                    match store.finding_counts().await {
                        Ok(counts) => *stats.findings.lock() = counts,
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot count trend findings for /metrics")
                        }
                    }
                }
                Err(e) => {
                    stats.failed_passes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "trend analysis failed; findings wait for the next pass");
                }
            }
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            stats.last_pass_us.store(us, Ordering::Relaxed);
        }
    })
}

/// One pass over every probe with recent runs, as of `now`. A probe whose
/// series cannot be read is skipped (logged); the pass goes on.
pub async fn analyse(
    store: &Store,
    cfg: &AnalysisConfig,
    now: DateTime<Utc>,
) -> Result<Pass, StoreError> {
    let subjects = store.trend_subjects(now - RATE_WINDOW, now).await?;
    let mut pass = Pass {
        subjects: subjects.len() as u64,
        ..Pass::default()
    };
    for s in &subjects {
        match analyse_one(store, cfg, s, now).await {
            Ok((new, updated)) => {
                pass.new += new;
                pass.updated += updated;
            }
            Err(e) => tracing::warn!(probe = %s.probe, location = %s.location, error = %e,
                "trend analysis of this probe failed; the next pass retries"),
        }
    }
    Ok(pass)
}

async fn analyse_one(
    store: &Store,
    cfg: &AnalysisConfig,
    s: &Subject,
    now: DateTime<Utc>,
) -> Result<(u64, u64), StoreError> {
    // The rate window starts at the hour before `now - 2h`: up to 3 hours.
    let from_hour = (now - RATE_WINDOW)
        .duration_trunc(TimeDelta::hours(1))
        .unwrap_or(now - RATE_WINDOW);
    let hours = ((now - from_hour).num_seconds() as f64 / 3600.0).max(1.0);
    let rate = s.runs as f64 / hours;
    let step = step_for(rate);
    let step_delta = TimeDelta::from_std(step).unwrap_or(TimeDelta::hours(1));
    let to = (now - CLOSE_AFTER)
        .duration_trunc(step_delta)
        .unwrap_or(now - CLOSE_AFTER);
    let from = to - step_delta * POINTS;
    let points = store
        .trend_points(s.probe_id, s.location_id, from, to, step)
        .await?;
    // The same clock times on earlier days: the daily cycle a step is judged against.
    let mut history = Vec::with_capacity(SEASON_DAYS as usize);
    for day in 1..=SEASON_DAYS {
        let back = TimeDelta::days(day);
        history.push(
            store
                .trend_points(s.probe_id, s.location_id, from - back, to - back, step)
                .await?,
        );
    }
    let mut stats = vec![("p50", 0.5)];
    if rate * step.as_secs_f64() / 3600.0 >= MIN_RUNS_FOR_P95 {
        stats.push(("p95", 0.95));
    }
    // The same change seen again may move by a few points as points arrive;
    // a drift's window start moves with every pass.
    let mut found: Vec<_> = steps(s, &points, &history, &stats, &cfg.steps)
        .into_iter()
        .map(|f| (f, step_delta * 6))
        .collect();
    let st = &cfg.steps;
    found.extend(
        failure_steps(
            s,
            &points,
            &st.changepoint,
            st.floor.max_pvalue,
            st.min_points_after,
        )
        .into_iter()
        .map(|f| (f, step_delta * 6)),
    );
    let hour = TimeDelta::hours(1);
    let to_hour = (now - CLOSE_AFTER).duration_trunc(hour).unwrap_or(now);
    let hourly = store
        .trend_points(
            s.probe_id,
            s.location_id,
            to_hour - DRIFT_WINDOW,
            to_hour,
            Duration::from_secs(3600),
        )
        .await?;
    found.extend(
        drifts(s, &hourly, &cfg.drift, &cfg.steps.changepoint)
            .into_iter()
            .map(|f| (f, DRIFT_WINDOW)),
    );
    if let Some(rule) = cfg.latency.get(&s.probe) {
        found.extend(
            forecast(s, &hourly, rule, &cfg.drift, &cfg.steps.changepoint)
                .map(|f| (f, DRIFT_WINDOW)),
        );
    }
    let (mut new, mut updated) = (0, 0);
    for (f, same_within) in found {
        match store.save_finding(&f, now, same_within).await? {
            Saved::New(id) => {
                tracing::info!(id, summary = %f.summary, "trend found");
                new += 1;
            }
            Saved::Updated(_) => updated += 1,
        }
    }
    Ok((new, updated))
}
