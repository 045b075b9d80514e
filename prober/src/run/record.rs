//! A finished run as it is recorded: which probe definition, when, what started it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::outcome::{Outcome, Phases};

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
    /// The definition as written, secret values redacted, as compact JSON text.
    pub definition: std::sync::Arc<serde_json::value::RawValue>,
    pub source: String,
}

/// What started a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its schedule.
    #[default]
    Schedule,
    /// `POST /api/v1/probes/{name}/run`.
    Api,
    /// `prober once` (never stored).
    Manual,
}

impl Trigger {
    /// The stored id (`runs.trigger`).
    pub fn id(self) -> i16 {
        match self {
            Trigger::Schedule => 0,
            Trigger::Api => 1,
            Trigger::Manual => 2,
        }
    }

    /// From the stored id; an unknown id reads as `Api` (not scheduled).
    pub fn from_id(id: i16) -> Trigger {
        match id {
            0 => Trigger::Schedule,
            2 => Trigger::Manual,
            _ => Trigger::Api,
        }
    }
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
    /// Scheduled, or asked for through the API.
    pub trigger: Trigger,
}
