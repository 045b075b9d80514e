//! A finished run as it is recorded: which probe definition, when, what started it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::outcome::{Outcome, Phases};

/// The phases kept as histograms, in their stored order (the `phase` column).
pub const PHASES: [&str; 6] = ["total", "dns", "connect", "tls", "first_byte", "transfer"];

/// A browser check's Web Vitals kept as histograms: `(stored phase id,
/// phase name, the run's fact, its scale to the stored value)`. The times
/// are kept in µs like every phase; CLS, which has no unit, is kept × 10⁶,
/// so its quantiles read in milliseconds are CLS × 1000 (0.1 reads 100).
pub const VITALS: [(i16, &str, &str, f64); 4] = [
    (200, "vital:ttfb", "browser.ttfb_ms", 1000.0),
    (201, "vital:fcp", "browser.fcp_ms", 1000.0),
    (202, "vital:lcp", "browser.lcp_ms", 1000.0),
    (203, "vital:cls", "browser.cls", 1_000_000.0),
];

/// The stored phase ids and values of a run's Web Vitals (a browser check's facts).
pub fn vital_samples(o: &Outcome) -> impl Iterator<Item = (i16, u64)> + '_ {
    VITALS.iter().filter_map(|(id, _, fact, scale)| {
        let v: f64 = o.info.get(*fact)?.parse().ok()?;
        (v.is_finite() && v >= 0.0).then(|| (*id, (v * scale).round() as u64))
    })
}

/// The name of a stored Web Vitals phase id (`vital:lcp`).
pub fn vital_name(id: i16) -> Option<&'static str> {
    VITALS.iter().find(|v| v.0 == id).map(|v| v.1)
}

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

/// A run's W3C trace id: its run id's 32 lowercase hex digits. Every run has
/// one (a UUID is never all zero, which W3C forbids); `traceparent` carries it
/// to the target unless the probe says `trace: false`. Stored as the run id
/// itself: no byte of its own in `runs` or `run_blocks` (ARCHITECTURE.md,
/// "A run's trace id is its run id").
pub fn trace_id(run_id: Uuid) -> String {
    run_id.simple().to_string()
}

/// The W3C span id of a part of a run: `(0, 0, 0)` the run itself; `(a, 0, 0)`
/// its attempt `a` (from 1); `(a, s, 0)` the request of step `s` (from 1; a
/// single request is step 1) in attempt `a`, the parent id its `traceparent`
/// names; `(a, s, p)` that request's phase `p` (1–5: dns, connect, tls, first
/// byte, transfer). Derived from the run id (SplitMix64 of its two halves and
/// the part), so the spans exported after the run carry the ids the target was
/// told of, and nothing is kept to remember them. Never zero, as W3C requires.
pub fn span_id(run_id: Uuid, attempt: u32, step: u32, phase: u8) -> u64 {
    let (hi, lo) = run_id.as_u64_pair();
    let part = (u64::from(attempt) << 32) | (u64::from(step) << 8) | u64::from(phase);
    let mut z = (hi ^ lo.rotate_left(17))
        .wrapping_add(0x9E37_79B9_7F4A_7C15_u64.wrapping_mul(part.wrapping_add(1)));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
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
    fn span_ids_differ_by_part_and_run_and_are_never_zero() {
        let run = Uuid::now_v7();
        let other = Uuid::now_v7();
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..4 {
            for step in 0..20 {
                for phase in 0..6 {
                    let id = span_id(run, attempt, step, phase);
                    assert_ne!(id, 0);
                    assert!(seen.insert(id), "({attempt}, {step}, {phase})");
                    assert_ne!(id, span_id(other, attempt, step, phase));
                }
            }
        }
    }

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
