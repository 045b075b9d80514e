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

/// The run id of a scheduled tick: the same for every replica of a location
/// that runs that tick, so the store (whose key holds the run id) keeps one
/// of them when replicas sharing the location's probes both run it during a
/// handover. A UUID v7 with the tick's millisecond (time-ordered like any
/// other run id) and 74 bits of SHA-256 of location, probe and tick.
/// Packed runs store no id where it is this one: the store derives it
/// again in SQL (`prober_tick_run_id`, migration 0021), so a change here
/// is a change there too (`tests/it/run_blocks.rs` compares the two).
pub fn tick_run_id(location: &str, probe: &str, tick: DateTime<Utc>) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [location.as_bytes(), probe.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(tick.timestamp_nanos_opt().unwrap_or(i64::MAX).to_le_bytes());
    let digest = h.finalize();
    let mut rest = [0u8; 10];
    rest.copy_from_slice(&digest[..10]);
    let ms = u64::try_from(tick.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &rest).into_uuid()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_s_run_id_is_its_location_probe_and_tick_and_time_ordered() {
        let t: DateTime<Utc> = "2026-12-01T10:00:00.250Z".parse().unwrap();
        let id = tick_run_id("eu", "home", t);
        assert_eq!(
            id,
            tick_run_id("eu", "home", t),
            "every replica computes the same"
        );
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos), (t.timestamp() as u64, 250_000_000));
        for other in [
            tick_run_id("us", "home", t),
            tick_run_id("eu", "homes", t),
            tick_run_id("e", "uhome", t),
            tick_run_id("eu", "home", t + chrono::TimeDelta::microseconds(1)),
        ] {
            assert_ne!(id, other);
        }
        assert!(id < tick_run_id("eu", "home", t + chrono::TimeDelta::milliseconds(1)));
    }
}
