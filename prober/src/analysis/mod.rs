//! Trend analysis: every few minutes, on the replica that holds the alert
//! evaluator lock, each probe's recent series is read from the store (merged
//! bins per point), the trend engine looks for steps, each candidate is
//! confirmed on the histograms before and after it, and the findings are
//! stored: once, updated when a later pass moves them.
//!
//! - `screen.rs`: each probe's light series kept between passes, so that a
//!   pass reads only the points closed since the last one, and the full
//!   analysis only when they show a change (or every two hours);
//! - `window.rs`: a probe's step window as of a pass, and when its drifts
//!   are due;
//! - `series.rs`: the resolution from the probe's rate, statistics per point;
//! - `steps.rs`: change points confirmed and named by the phase that moved;
//! - `tail.rs`: a step at the end of the window, as soon as its runs tell;
//! - `spread.rs`: a wider spread at the end of the window (a step of the
//!   p95 with the median unchanged), from the same segments;
//! - `failures.rs`: steps in the failure ratio, confirmed on run counts;
//! - `hold.rs`: a called full analysis' reads held for the passes after,
//!   which the screen is likely to call for again;
//! - `reads.rs`: what a pass reads of its probes, read ahead together;
//! - `hourly.rs`: each probe's hourly medians kept between passes, so a
//!   drift analysis reads the hours closed since the last, not the week;
//! - `drifts.rs`: slow drifts of hourly medians over a week, and the
//!   forecast of a drift crossing the probe's latency alert threshold, once
//!   for each closed hour, spread over the hour's passes by probe.

pub mod drifts;
pub mod failures;
mod hold;
pub mod hourly;
mod reads;
pub mod screen;
pub mod series;
pub mod spread;
pub mod steps;
pub mod tail;
mod window;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::alert::engine::AlertEngine;
use crate::config::policy::LatencyRule;
use crate::config::settings::TrendSettings;
use crate::store::trends::{NewFinding, Saved, Subject, TrendPoint};
use crate::store::{Store, StoreError};
use crate::trend::compare::Floor;
use crate::trend::drift;
use drifts::{drifts, forecast, DRIFT_WINDOW};
use failures::failure_steps;
use hold::{Held, HOLD_BYTES, HOLD_PASSES};
use hourly::Hourly;
use reads::Ahead;
use screen::{Plan, Screen, FULL_EVERY};
use steps::{candidates, steps, StepConfig};
pub use window::next_pass;
use window::{closed_hour, drift_due, StepWindow};

/// How often the analysis runs by default.
pub const ANALYSE_EVERY: Duration = Duration::from_secs(5 * 60);

/// Points of a step series: 8 hours at the finest step, 4 days at the coarsest.
pub const POINTS: i32 = 96;

/// How long after a point ends it is analysed (the fold's delay: runs
/// finish after their tick).
const CLOSE_AFTER: TimeDelta = TimeDelta::minutes(2);

/// The recent window that tells which probes run, and how often.
const RATE_WINDOW: TimeDelta = TimeDelta::hours(2);

/// How long the periodic analysis keeps its list of probes (and their
/// rates) before reading it again: reading it scans two hours of every
/// probe's rows, a third of a quiet pass' reads. A probe that starts
/// running waits this long at most to be analysed; a change needs hours
/// of its points to be found anyway.
const SUBJECTS_EVERY: TimeDelta = TimeDelta::minutes(30);

/// Earlier days read at the same clock times as a step series: a step must be
/// more than the daily cycle moved them (`steps::beyond_the_daily_cycle`).
/// Two, so one unusual day is not the only baseline.
pub const SEASON_DAYS: i64 = 2;

// A step needs `MIN_BASELINES` earlier days: fewer read, and none is reported.
const _: () = assert!(steps::MIN_BASELINES as i64 <= SEASON_DAYS);

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
    /// Subjects whose full step analysis ran (the others' screens showed no
    /// change, or no point had closed).
    pub full: u64,
    /// Of `full`, those that read held points (`hold.rs`), not their window.
    pub held: u64,
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
        let mut analyser = Analyser::default();
        // The first pass at once, the others as points close (`next_pass`);
        // a pass that overran its period is followed at the next due time.
        // The due time is the pass' `now` at the least: a timer that ends a
        // little early must not analyse the points as of before they closed.
        let mut due: Option<DateTime<Utc>> = None;
        loop {
            let wait = match due {
                None => Duration::ZERO,
                Some(d) => (d - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
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
            let now = due.map_or_else(Utc::now, |d| Utc::now().max(d));
            due = Some(next_pass(now, cfg.every));
            match analyser.pass(&store, &cfg, now).await {
                Ok(p) => {
                    stats.passes.fetch_add(1, Ordering::Relaxed);
                    stats.subjects.store(p.subjects, Ordering::Relaxed);
                    stats.new_findings.fetch_add(p.new, Ordering::Relaxed);
                    stats
                        .updated_findings
                        .fetch_add(p.updated, Ordering::Relaxed);
                    tracing::debug!(
                        subjects = p.subjects,
                        full = p.full,
                        held = p.held,
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

/// One pass over every probe with recent runs, as of `now`, with nothing
/// remembered from earlier passes (drifts analysed whatever the hour). A
/// probe whose series cannot be read is skipped (logged); the pass goes on.
pub async fn analyse(
    store: &Store,
    cfg: &AnalysisConfig,
    now: DateTime<Utc>,
) -> Result<Pass, StoreError> {
    Analyser::default().pass(store, cfg, now).await
}

/// The periodic analysis' memory between passes: what it need not read again.
#[derive(Debug, Default)]
pub struct Analyser {
    /// Each probe and location's last closed hour whose drifts were
    /// analysed: hourly points change only when an hour closes, so drifts
    /// are analysed once an hour, not every pass, and spread over the
    /// hour's passes by probe (`drift_due`).
    drifted: HashMap<(i32, i16), DateTime<Utc>>,
    /// Each probe and location's light series (`screen.rs`).
    screens: HashMap<(i32, i16), Screen>,
    /// Each probe and location's hourly medians (`hourly.rs`).
    hourly: HashMap<(i32, i16), Hourly>,
    /// The reads of called full analyses, held for the passes after
    /// (`hold.rs`), and their bytes (with those waiting in a pass).
    held: HashMap<(i32, i16), Held>,
    held_bytes: usize,
    /// The probes to analyse, and when they were read (`SUBJECTS_EVERY`).
    subjects: Option<(DateTime<Utc>, Arc<[Subject]>)>,
}

impl Analyser {
    /// One pass over every probe with recent runs, as of `now`. A probe
    /// whose series cannot be read is skipped (logged); the pass goes on.
    pub async fn pass(
        &mut self,
        store: &Store,
        cfg: &AnalysisConfig,
        now: DateTime<Utc>,
    ) -> Result<Pass, StoreError> {
        let subjects = match self.subjects.take() {
            Some((at, subjects)) if at <= now && now - at < SUBJECTS_EVERY => (at, subjects),
            _ => {
                let read = store.trend_subjects(now - RATE_WINDOW, now).await?;
                (now, Arc::from(read))
            }
        };
        let (counted, subjects) = self.subjects.insert(subjects).clone();
        let subjects = &subjects[..];
        let mut pass = Pass {
            subjects: subjects.len() as u64,
            ..Pass::default()
        };
        let to_hour = closed_hour(now);
        // The last pass' held reads: each moved on, or dropped (`hold`);
        // those waiting count against the bound until taken.
        let mut held = std::mem::take(&mut self.held);
        let mut works = Vec::with_capacity(subjects.len());
        let mut light = Vec::new();
        for s in subjects {
            let key = (s.probe_id, s.location_id);
            let w = StepWindow::of(s, counted, now);
            let plan =
                (self.screens.get(&key)).map_or(Plan::Full, |sc| sc.plan(w.step_delta, w.to));
            let held = held.remove(&key);
            if let (Plan::Extend { from }, Some(h)) = (plan, &held) {
                light.extend(h.again(&w).map(|(from, to)| (key, from, to, w.step)));
                light.push((key, from, w.to, w.step));
            } else if let Plan::Extend { from } = plan {
                light.push((key, from, w.to, w.step));
            }
            let q = cfg.latency.get(&s.probe).map(|rule| rule.quantile);
            let hours = drift_due(self.drifted.get(&key), s.probe_id, now, cfg.every).then(|| {
                (
                    reads::hours_from(self.hourly.get(&key), q, to_hour),
                    to_hour,
                )
            });
            works.push(Work {
                w,
                plan,
                hours,
                held,
            });
        }
        // Those of probes no longer analysed.
        drop(held);
        self.held_bytes = (works.iter().filter_map(|w| w.held.as_ref()))
            .map(Held::bytes)
            .sum();
        let keys: Vec<(i32, i16)> = subjects
            .iter()
            .map(|s| (s.probe_id, s.location_id))
            .collect();
        let steps_from = (works.iter()).map(|w| w.w.from).min().unwrap_or(now);
        let mut ahead = Ahead::read(store, light, &keys, steps_from).await;
        let mut works = works.into_iter();
        for group in subjects.chunks(reads::GROUP) {
            let group: Vec<(&Subject, Work)> = group.iter().zip(works.by_ref()).collect();
            let heavy = (group.iter())
                .flat_map(|(s, w)| {
                    reads::heavy_spans((s.probe_id, s.location_id), &w.w, w.plan, w.hours)
                })
                .collect();
            ahead.add(store, heavy).await;
            for (s, work) in group {
                let (key, drifts_too) = ((s.probe_id, s.location_id), work.hours.is_some());
                match self.analyse_one(store, cfg, s, work, &mut ahead, now).await {
                    Ok((full, held, new, updated)) => {
                        pass.full += u64::from(full);
                        pass.held += u64::from(held);
                        pass.new += new;
                        pass.updated += updated;
                        if drifts_too {
                            self.drifted.insert(key, to_hour);
                        }
                    }
                    Err(e) => tracing::warn!(probe = %s.probe, location = %s.location, error = %e,
                        "trend analysis of this probe failed; the next pass retries"),
                }
            }
        }
        let live: HashSet<(i32, i16)> = subjects
            .iter()
            .map(|s| (s.probe_id, s.location_id))
            .collect();
        self.screens.retain(|k, _| live.contains(k));
        self.hourly.retain(|k, _| live.contains(k));
        self.drifted.retain(|k, _| live.contains(k));
        Ok(pass)
    }

    /// One probe and location's share of a pass: its screen extended by
    /// the points closed since the last pass (read ahead, `reads.rs`), and
    /// the full analysis when the screen calls for it or two hours have
    /// passed (`screen.rs`).
    async fn analyse_one(
        &mut self,
        store: &Store,
        cfg: &AnalysisConfig,
        s: &Subject,
        work: Work,
        ahead: &mut Ahead,
        now: DateTime<Utc>,
    ) -> Result<(bool, bool, u64, u64), StoreError> {
        let Work {
            w,
            plan,
            hours,
            held,
        } = work;
        if let Some(h) = &held {
            self.held_bytes = self.held_bytes.saturating_sub(h.bytes());
        }
        let key = (s.probe_id, s.location_id);
        let st = &cfg.steps;
        // Periodic: the screen is built anew from every read (late runs
        // included, the earlier days' bases of the coming points). On the
        // screen's call: today's window and the earlier days' (the total's
        // change points are looked for over the cycle), the screen kept as
        // extended, the reads held for the passes after (`hold.rs`).
        let (full, periodic, held) = match (plan, self.screens.get_mut(&key)) {
            (Plan::Extend { from }, Some(screen)) => {
                let new = ahead.points(store, key, from, w.to, w.step).await?;
                let with_p95 = w.stats.len() > 1;
                let called = screen.extend(
                    &new,
                    w.from,
                    w.to,
                    with_p95,
                    &st.changepoint,
                    st.min_points_after,
                );
                let held = match held.and_then(|h| h.again(&w).map(|span| (h, span))) {
                    Some((mut h, (again, to))) => {
                        // A failed read drops the reads held: a called
                        // analysis reads its window anew.
                        match ahead.points(store, key, again, to, w.step).await {
                            Ok(read) => {
                                h.refresh(again, read);
                                h.advance(&w, from, &new)
                            }
                            Err(e) => {
                                tracing::warn!(probe = %s.probe, error = %e,
                                    "reading a held trend window's last points again failed; its next analysis reads it whole");
                                None
                            }
                        }
                    }
                    None => None,
                };
                (called, false, held)
            }
            (Plan::Nothing, Some(_)) => (false, false, held),
            _ => (true, true, None),
        };
        let mut found = Vec::new();
        let from_held = full && held.is_some();
        if full {
            let held = match held {
                Some(held) => held,
                None => ahead.window(store, s, &w).await?,
            };
            let stepped = ahead.latest_step(store, key, w.from).await?;
            found = self.full_analysis(cfg, s, &w, &held, stepped, periodic);
            if !periodic {
                self.hold(key, held, 0);
            }
        } else if let Some(held) = held {
            let idle = held.idle + 1;
            self.hold(key, held, idle);
        }
        if let Some(span) = hours {
            let kept = self.hourly.remove(&key);
            let q = cfg.latency.get(&s.probe).map(|rule| rule.quantile);
            let hourly = ahead.hours(store, key, q, span, kept).await?;
            found.extend(drift_findings(cfg, s, &hourly));
            self.hourly.insert(key, hourly);
        }
        let (new, updated) = save(store, &found, now).await?;
        if full && !periodic {
            // Its findings saved: what the screen called for is seen.
            if let Some(screen) = self.screens.get_mut(&key) {
                screen.acted();
            }
        }
        Ok((full, from_held, new, updated))
    }

    /// Holds a probe's reads for the passes after (`hold.rs`), unless they
    /// have been idle [`HOLD_PASSES`] or [`HOLD_BYTES`] are held already.
    fn hold(&mut self, key: (i32, i16), mut held: Held, idle: u32) {
        held.idle = idle;
        let bytes = held.bytes();
        if idle < HOLD_PASSES && self.held_bytes + bytes <= HOLD_BYTES {
            self.held_bytes += bytes;
            self.held.insert(key, held);
        }
    }

    /// The full step analysis of `w` over `held` (today's window and the
    /// earlier days at the same times), `stepped` the latest stored step of
    /// the total's p50 in the window; when `periodic`, every phase's change
    /// points looked for (else the total's) and the screen rebuilt from them.
    fn full_analysis(
        &mut self,
        cfg: &AnalysisConfig,
        s: &Subject,
        w: &StepWindow,
        held: &Held,
        stepped: Option<DateTime<Utc>>,
        periodic: bool,
    ) -> Vec<Found> {
        let key = (s.probe_id, s.location_id);
        let st = &cfg.steps;
        let (points, earlier) = (&held.points, &held.earlier);
        let cands = candidates(points, earlier, &w.stats, st, stepped, periodic);
        let found = step_findings(cfg, s, w, points, cands, earlier);
        if periodic {
            // A new screen's next full analysis comes sooner by a share
            // of `FULL_EVERY` taken from the probe's id, so they are
            // spread over passes; a rebuilt one keeps its share (a late
            // pass or a long absence does not bunch them).
            let offset = match self.screens.get(&key) {
                Some(old) => old.behind_schedule(w.to),
                None => FULL_EVERY * s.probe_id.rem_euclid(12) / 12,
            };
            let mut screen = Screen::new(w.step_delta, w.to, offset, points, earlier);
            screen.settle(w.stats.len() > 1, &st.changepoint, st.min_points_after);
            self.screens.insert(key, screen);
        }
        found
    }
}

/// One probe and location's share of a pass, as the pass found it.
struct Work {
    w: StepWindow,
    /// Its screen's plan (a full analysis without a screen).
    plan: Plan,
    /// The span of its drift's hours to read when its drifts are due
    /// (`drift_due`).
    hours: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// A called full analysis' reads, when they are held (`hold.rs`).
    held: Option<Held>,
}

/// A finding and how far from it a stored one may be and still report the
/// same change.
type Found = (NewFinding, TimeDelta);

/// The steps of latency (from `cands`, [`candidates`] of `points`) and of
/// the failure ratio in `points`, the full step window of `w`; `history`
/// holds the earlier days' points.
fn step_findings(
    cfg: &AnalysisConfig,
    s: &Subject,
    w: &StepWindow,
    points: &[TrendPoint],
    cands: Vec<steps::Candidate>,
    history: &[Vec<TrendPoint>],
) -> Vec<Found> {
    // The same change seen again may move by a few points as points arrive
    // (within the spread `steps::one_per_change` folds in one pass).
    let same = w.step_delta * steps::SPREAD_POINTS;
    let mut found: Vec<Found> = steps(s, points, cands, history, &cfg.steps)
        .into_iter()
        .map(|f| (f, same))
        .collect();
    let st = &cfg.steps;
    found.extend(
        failure_steps(
            s,
            points,
            &st.changepoint,
            st.floor.max_pvalue,
            st.min_points_after,
        )
        .into_iter()
        .map(|f| (f, same)),
    );
    found
}

/// The drifts of the hourly points of the last [`DRIFT_WINDOW`], and the
/// forecast of the probe's latency alert. A drift's window start moves with
/// every pass.
fn drift_findings(cfg: &AnalysisConfig, s: &Subject, hourly: &Hourly) -> Vec<Found> {
    let mut found: Vec<Found> = drifts(s, hourly, &cfg.drift, &cfg.steps.changepoint)
        .into_iter()
        .map(|f| (f, DRIFT_WINDOW))
        .collect();
    if let Some(rule) = cfg.latency.get(&s.probe) {
        found.extend(
            forecast(s, hourly, rule, &cfg.drift, &cfg.steps.changepoint)
                .map(|f| (f, DRIFT_WINDOW)),
        );
    }
    found
}

/// Stores the findings of a pass: (new, updated).
async fn save(
    store: &Store,
    found: &[Found],
    now: DateTime<Utc>,
) -> Result<(u64, u64), StoreError> {
    let (mut new, mut updated) = (0, 0);
    for (f, same_within) in found {
        match store.save_finding(f, now, *same_within).await? {
            Saved::New(id) => {
                tracing::info!(id, summary = %f.summary, "trend found");
                new += 1;
            }
            Saved::Updated(_) => updated += 1,
        }
    }
    Ok((new, updated))
}
