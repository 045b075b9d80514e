//! Live state in memory: per probe the last runs, the current status (up or
//! down, since when) and the current minute's histogram per phase. Kept small
//! (compact run summaries, sparse histograms) so 10,000 probes fit the budget.

pub mod hist;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::probe::{ErrorClass, Outcome, Phases};
use hist::SparseHist;

/// The phases kept as histograms, in their stored order (the `phase` column).
pub const PHASES: [&str; 6] = ["total", "dns", "connect", "tls", "first_byte", "transfer"];

/// The samples of one run, per phase (index into [`PHASES`]); `None` where not reached.
pub fn phase_samples(p: &Phases) -> [Option<u64>; 6] {
    [
        Some(p.total_us),
        p.dns_us,
        p.connect_us,
        p.tls_us,
        p.first_byte_us,
        p.transfer_us,
    ]
}

/// Identity of the probe definition a run belongs to.
#[derive(Debug)]
pub struct ProbeMeta {
    pub name: String,
    pub version: String,
    /// The definition as written, secret values redacted.
    pub definition: serde_json::Value,
    pub source: String,
}

/// One finished run, as it is stored.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: Uuid,
    pub meta: Arc<ProbeMeta>,
    /// The tick the run belonged to.
    pub scheduled_at: DateTime<Utc>,
    /// When it started: `scheduled_at` + lateness.
    pub started_at: DateTime<Utc>,
    pub lateness_us: i64,
    pub outcome: Outcome,
}

/// A compact summary of a run, kept in memory.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub scheduled_at: DateTime<Utc>,
    pub lateness_us: i64,
    pub success: bool,
    pub error_class: Option<ErrorClass>,
    pub status_code: Option<u16>,
    pub total_us: u64,
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
    /// Start of the minute `minute_hist` covers.
    pub minute: Option<DateTime<Utc>>,
    pub minute_hist: [SparseHist; 6],
    pub runs: u64,
    pub failures: u64,
    pub skipped_ticks: u64,
}

impl ProbeState {
    fn record(&mut self, r: &RunRecord, keep: usize) {
        let o = &r.outcome;
        let minute = r
            .scheduled_at
            .duration_trunc(TimeDelta::minutes(1))
            .unwrap_or(r.scheduled_at);
        if self.minute != Some(minute) {
            self.minute = Some(minute);
            self.minute_hist = Default::default();
        }
        for (h, sample) in self.minute_hist.iter_mut().zip(phase_samples(&o.phases)) {
            if let Some(us) = sample {
                h.record(us);
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
        });
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
        if let Some(p) = self.probes.read().ok().and_then(|m| m.get(name).cloned()) {
            return p;
        }
        let mut map = match self.probes.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(name.to_string()).or_default().clone()
    }

    /// Drops the state of probes no longer defined.
    pub fn retain(&self, names: &[&str]) {
        if let Ok(mut map) = self.probes.write() {
            map.retain(|k, _| names.contains(&k.as_str()));
        }
    }

    pub fn record(&self, r: &RunRecord) {
        let state = self.probe(&r.meta.name);
        let mut s = match state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        s.record(r, self.keep);
    }

    pub fn names(&self) -> Vec<String> {
        self.probes
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}
