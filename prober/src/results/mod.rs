//! Live state in memory: per probe the last runs, the current status (up or
//! down, since when) and the `/metrics` histograms per phase. Kept small
//! (compact run summaries, a ring allocated once at its length, histograms
//! allocated at the first run) so 10,000 probes fit the budget.

pub mod hist;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::run::{phase_samples, ErrorClass, RunRecord, Trigger};

/// Upper bounds (µs) of the fixed histogram buckets exported in `/metrics`
/// (Prometheus' usual latency buckets, 1 ms to 10 s); a last, implicit
/// bucket holds everything above.
pub const METRIC_BUCKETS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// The bucket of [`METRIC_BUCKETS_US`] holding `us` (bounds are inclusive,
/// as Prometheus' `le`); `METRIC_BUCKETS_US.len()` is the overflow bucket.
pub fn metric_bucket(us: u64) -> usize {
    METRIC_BUCKETS_US.partition_point(|&b| b < us)
}

/// A cumulative fixed-bucket histogram for `/metrics`: 120 bytes, no allocation.
/// Counts are per bucket (not cumulative); the count is their sum, so it can
/// never disagree with the buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricHist {
    /// Per bucket of [`METRIC_BUCKETS_US`], then the overflow bucket.
    pub buckets: [u64; METRIC_BUCKETS_US.len() + 1],
    pub sum_us: u64,
}

impl MetricHist {
    pub fn record(&mut self, us: u64) {
        self.buckets[metric_bucket(us)] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// A compact summary of a run, kept in memory.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
/// Kept in microseconds; in JSON, milliseconds (`lateness_ms`, `total_ms`) like every API duration.
pub struct RunSummary {
    pub run_id: Uuid,
    pub scheduled_at: DateTime<Utc>,
    #[serde(rename = "lateness_ms", serialize_with = "crate::run::ms::signed")]
    #[schema(value_type = f64)]
    pub lateness_us: i64,
    pub success: bool,
    pub error_class: Option<ErrorClass>,
    pub status_code: Option<u16>,
    #[serde(rename = "total_ms", serialize_with = "crate::run::ms::one")]
    #[schema(value_type = f64)]
    pub total_us: u64,
    /// `schedule`, or `api` for a run asked for with `POST …/run`.
    pub trigger: Trigger,
    /// Counted in the status, counters and histograms (scheduled, or an API
    /// run with `api.manual_runs_count`): what an exemplar may name.
    #[serde(skip)]
    pub counted: bool,
}

/// Up or down, and since when.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Status {
    pub up: bool,
    pub since: DateTime<Utc>,
}

/// Everything kept in memory about one probe.
#[derive(Debug, Default)]
pub struct ProbeState {
    pub recent: VecDeque<RunSummary>,
    pub status: Option<Status>,
    pub runs: u64,
    pub failures: u64,
    pub skipped_ticks: u64,
    /// Since the probe's state was created, per phase of [`PHASES`]: for `/metrics`.
    /// Allocated at the first run (720 bytes), so a probe that has not run yet costs nothing here.
    pub phase_totals: Option<Box<[MetricHist; 6]>>,
    /// Failures per error class, only for classes that occurred.
    pub failures_by_class: Vec<(ErrorClass, u64)>,
}

impl ProbeState {
    /// Keeps the run in the recent ones; a `counted` run also moves the status, counters and histograms.
    fn record(&mut self, r: &RunRecord, keep: usize, counted: bool) {
        let o = &r.outcome;
        if counted {
            self.count(r);
        }
        let len = self.recent.len();
        if len == self.recent.capacity() && len < keep {
            // Doubling, but never past `keep`: 4, 8, 16, 20 slots rather than 32 for 20 runs.
            self.recent.reserve_exact(len.max(4).min(keep - len));
        }
        if self.recent.len() >= keep {
            self.recent.pop_front();
        }
        self.recent.push_back(RunSummary {
            run_id: r.run_id,
            scheduled_at: r.scheduled_at,
            lateness_us: r.lateness_us,
            success: o.success,
            error_class: o.error.as_ref().map(|e| e.class),
            status_code: o.status_code,
            total_us: o.phases.total_us,
            trigger: r.trigger,
            counted,
        });
    }

    fn count(&mut self, r: &RunRecord) {
        let o = &r.outcome;
        let samples = phase_samples(&o.phases);
        let totals = self.phase_totals.get_or_insert_with(Default::default);
        for (h, sample) in totals.iter_mut().zip(samples) {
            if let Some(us) = sample {
                h.record(us);
            }
        }
        if let Some(class) = o.error.as_ref().filter(|_| !o.success).map(|e| e.class) {
            match self.failures_by_class.iter_mut().find(|(c, _)| *c == class) {
                Some((_, n)) => *n += 1,
                None => self.failures_by_class.push((class, 1)),
            }
        }
        if self.status.is_none_or(|s| s.up != o.success) {
            self.status = Some(Status {
                up: o.success,
                since: r.started_at,
            });
        }
        self.runs += 1;
        self.failures += u64::from(!o.success);
    }
}

/// Live state of every probe, shared by the scheduler (writes) and the API (reads).
#[derive(Debug)]
pub struct LiveState {
    probes: RwLock<HashMap<String, Arc<Mutex<ProbeState>>>>,
    keep: usize,
}

impl LiveState {
    /// Keeps the last `keep` runs of each probe.
    pub fn new(keep: usize) -> LiveState {
        LiveState {
            probes: RwLock::new(HashMap::new()),
            keep: keep.max(1),
        }
    }

    /// The state of `name`, created on first use.
    pub fn probe(&self, name: &str) -> Arc<Mutex<ProbeState>> {
        if let Some(p) = self.probes.read().get(name).cloned() {
            return p;
        }
        self.probes
            .write()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Drops the state of probes no longer defined.
    pub fn retain(&self, names: &[&str]) {
        self.probes
            .write()
            .retain(|k, _| names.contains(&k.as_str()));
    }

    /// Records a run of a probe that is still defined; a late run of a removed probe is not kept.
    pub fn record(&self, r: &RunRecord) {
        self.record_counted(r, true);
    }

    /// [`LiveState::record`]; an uncounted run (an API run, by default) is only kept among
    /// the recent runs: status, counters and `/metrics` histograms stay as they were.
    pub fn record_counted(&self, r: &RunRecord, counted: bool) {
        let Some(state) = self.probes.read().get(&r.meta.name).cloned() else {
            return;
        };
        state.lock().record(r, self.keep, counted);
    }

    /// The state of `name` if it exists (never creates it, unlike [`LiveState::probe`]).
    pub fn get(&self, name: &str) -> Option<Arc<Mutex<ProbeState>>> {
        self.probes.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.probes.read().keys().cloned().collect()
    }
}
