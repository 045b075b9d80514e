//! Synthetic probes for the trend harness: realistic latency series with one
//! planted change each, deterministic in (seed, probe, tick).
//!
//! Every run: five phases (dns 4, connect 8, tls 18, first byte 60, transfer
//! 8 ms medians; total ≈ 100 ms with 2 ms overhead), each lognormal with the
//! probe's sigma (0.15–0.25) and a shared lognormal factor (sigma / 2); a
//! diurnal cycle (±10–20 %, a phase of the day per probe); 1 % of minutes
//! 5–10× slower (every run of that minute); bursts of failures (2 % of hours
//! hold 2–6 minutes where 70 % of runs fail: half time out at 5 s, half are
//! refused after DNS). The planted change multiplies the phases from its time on.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use prober::run::{ErrorClass, Outcome, Phases, ProbeError, ProbeMeta, RunRecord, Trigger};
use serde::Serialize;

/// The timeout of a failed run.
const TIMEOUT_US: u64 = 5_000_000;
/// Phase medians, µs: dns, connect, tls, first byte, transfer.
const BASE_US: [f64; 5] = [4_000.0, 8_000.0, 18_000.0, 60_000.0, 8_000.0];
/// What the total adds to its phases, µs.
const OVERHEAD_US: u64 = 2_000;
/// The single-phase step: first byte +20 ms (total +20 %).
pub const PHASE_STEP_US: f64 = 20_000.0;

/// xorshift64*: a tiny deterministic generator (the crate has no `rand`).
pub struct XorShift(u64);

impl XorShift {
    /// A generator from any seed (mixed, never zero).
    pub fn new(seed: u64) -> XorShift {
        XorShift(mix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// SplitMix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The change planted in one probe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Scenario {
    /// No change: only noise, the daily cycle, outliers and failure bursts.
    Stationary,
    /// Every phase × (1 + pct / 100) from the change on.
    Step(u32),
    /// Every phase's sigma doubled from the change on (median unchanged).
    Spread,
    /// Every phase × (1 + r)^days from the start of the history (r 1–5 %/day).
    Drift,
    /// First byte + [`PHASE_STEP_US`] (scaled by the cycle); other phases unchanged.
    PhaseStep,
}

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 8] = [
        Scenario::Stationary,
        Scenario::Step(5),
        Scenario::Step(10),
        Scenario::Step(20),
        Scenario::Step(50),
        Scenario::Spread,
        Scenario::Drift,
        Scenario::PhaseStep,
    ];

    pub fn label(&self) -> String {
        match self {
            Scenario::Stationary => "stationary".into(),
            Scenario::Step(p) => format!("step +{p} %"),
            Scenario::Spread => "spread ×2".into(),
            Scenario::Drift => "drift 1–5 %/day".into(),
            Scenario::PhaseStep => "first_byte +20 ms".into(),
        }
    }

    /// A short name for probe names.
    pub fn slug(&self) -> String {
        match self {
            Scenario::Stationary => "none".into(),
            Scenario::Step(p) => format!("step{p}"),
            Scenario::Spread => "spread".into(),
            Scenario::Drift => "drift".into(),
            Scenario::PhaseStep => "phase".into(),
        }
    }

    /// Whether the change is a step at a known time.
    pub fn is_step(&self) -> bool {
        matches!(
            self,
            Scenario::Step(_) | Scenario::Spread | Scenario::PhaseStep
        )
    }
}

/// One synthetic probe.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: u64,
    pub meta: Arc<ProbeMeta>,
    pub scenario: Scenario,
    /// When the step starts (steps only).
    pub change_at: Option<DateTime<Utc>>,
    /// Relative change per day (drifts only).
    pub drift_per_day: f64,
    pub sigma: f64,
    pub diurnal_amp: f64,
    /// Phase of the daily cycle, radians.
    pub diurnal_phase: f64,
}

/// The probes: `per` of every scenario (`stationary_per` stationary ones),
/// steps planted at `change` plus a per-probe offset of 0–115 minutes; with
/// or without the `diurnal` cycle.
pub fn plans(
    seed: u64,
    per: usize,
    stationary_per: usize,
    change: DateTime<Utc>,
    diurnal: bool,
) -> Vec<Plan> {
    let mut out = Vec::new();
    for scenario in Scenario::ALL {
        let n = if scenario == Scenario::Stationary {
            stationary_per
        } else {
            per
        };
        for i in 0..n {
            let id = out.len() as u64 + 1;
            let mut r = XorShift::new(seed ^ id.wrapping_mul(0x9e37_79b9));
            let name = format!("trend-{}-{:03}", scenario.slug(), i + 1);
            let offset = TimeDelta::minutes(((i * 23) % 120) as i64);
            out.push(Plan {
                id,
                meta: meta(&name),
                scenario,
                change_at: scenario.is_step().then_some(change + offset),
                drift_per_day: 0.01 + 0.04 * i as f64 / (n.max(2) - 1) as f64,
                sigma: 0.15 + 0.10 * r.uniform(),
                diurnal_amp: if diurnal {
                    0.10 + 0.10 * r.uniform()
                } else {
                    0.0
                },
                diurnal_phase: std::f64::consts::TAU * r.uniform(),
            });
        }
    }
    out
}

fn meta(name: &str) -> Arc<ProbeMeta> {
    let json = format!("{{\"name\":\"{name}\"}}");
    let definition = serde_json::value::RawValue::from_string(json).map_or_else(
        |_| Arc::from(serde_json::value::RawValue::NULL.to_owned()),
        Arc::from,
    );
    Arc::new(ProbeMeta {
        name: name.into(),
        version: "trend-bench-v1".into(),
        definition,
        source: "prober-bench --trends".into(),
    })
}

/// What one synthetic run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub phases: Phases,
    pub error: Option<ProbeError>,
}

impl Plan {
    /// The level multiplier of every phase at `at` (cycle, drift, step).
    fn level(&self, at: DateTime<Utc>, start: DateTime<Utc>) -> f64 {
        let day = f64::from(at.num_seconds_from_midnight()) / 86_400.0;
        let mut m =
            1.0 + self.diurnal_amp * (std::f64::consts::TAU * day + self.diurnal_phase).sin();
        if self.scenario == Scenario::Drift {
            let days = (at - start).num_seconds() as f64 / 86_400.0;
            m *= (1.0 + self.drift_per_day).powf(days);
        }
        if let (Scenario::Step(p), true) = (self.scenario, self.changed(at)) {
            m *= 1.0 + f64::from(p) / 100.0;
        }
        m
    }

    fn changed(&self, at: DateTime<Utc>) -> bool {
        self.change_at.is_some_and(|c| at >= c)
    }

    /// The run at `at` (tick `tick`); `start` is the history's start.
    pub fn sample(&self, seed: u64, tick: u64, at: DateTime<Utc>, start: DateTime<Utc>) -> Sample {
        let key = seed ^ self.id.wrapping_mul(0xa076_1d64_78bd_642f);
        let minute = (at.timestamp() / 60) as u64;
        let mut run = XorShift::new(key ^ tick.wrapping_mul(0xe703_7ed1_a0b4_28db));
        let mut per_minute = XorShift::new(key ^ minute.wrapping_mul(0x8ebc_6af0_9c88_c6e3) ^ 1);
        let slow = if per_minute.uniform() < 0.01 {
            5.0 + 5.0 * per_minute.uniform()
        } else {
            1.0
        };
        let level = self.level(at, start) * slow;
        let sigma = if self.scenario == Scenario::Spread && self.changed(at) {
            2.0 * self.sigma
        } else {
            self.sigma
        };
        let shared = (0.5 * sigma * run.normal()).exp();
        let mut us = [0u64; 5];
        for (i, base) in BASE_US.iter().enumerate() {
            let mut median = base * level;
            if i == 3 && self.scenario == Scenario::PhaseStep && self.changed(at) {
                median += PHASE_STEP_US * self.level(at, start);
            }
            us[i] = (median * shared * (sigma * run.normal()).exp()) as u64;
        }
        let total = us.iter().sum::<u64>() + OVERHEAD_US;
        let phases = Phases {
            dns_us: Some(us[0]),
            connect_us: Some(us[1]),
            tls_us: Some(us[2]),
            first_byte_us: Some(us[3]),
            transfer_us: Some(us[4]),
            total_us: total,
        };
        let mut s = Sample {
            phases,
            error: None,
        };
        if self.in_burst(key, at) && run.uniform() < 0.7 {
            fail(&mut s, run.uniform() < 0.5);
        }
        s
    }

    /// Whether `at` is inside a burst of failures: 2 % of hours hold one,
    /// 2–6 minutes long.
    fn in_burst(&self, key: u64, at: DateTime<Utc>) -> bool {
        let hour = (at.timestamp() / 3600) as u64;
        let mut h = XorShift::new(key ^ hour.wrapping_mul(0x5851_f42d_4c95_7f2d) ^ 2);
        if h.uniform() >= 0.02 {
            return false;
        }
        let from = (h.uniform() * 54.0) as u32;
        let len = 2 + (h.uniform() * 5.0) as u32;
        (from..from + len).contains(&at.minute())
    }
}

/// A timeout (no first byte, 5 s) or a refused connection (DNS only).
fn fail(s: &mut Sample, timeout: bool) {
    let p = &mut s.phases;
    let (class, message) = if timeout {
        (p.first_byte_us, p.transfer_us) = (None, None);
        p.total_us = TIMEOUT_US;
        (ErrorClass::Timeout, "no response within 5s")
    } else {
        let dns = p.dns_us.unwrap_or(0);
        *p = Phases {
            dns_us: Some(dns),
            total_us: dns + 400,
            ..Phases::default()
        };
        (ErrorClass::Connect, "connection refused (os error 111)")
    };
    s.error = Some(ProbeError {
        class,
        message: message.into(),
    });
}

/// The stored record of a sample.
pub fn record(plan: &Plan, s: Sample, at: DateTime<Utc>) -> RunRecord {
    let meta = &plan.meta;
    let mut o = Outcome::failed(
        &meta.name,
        &meta.version,
        at,
        ErrorClass::Timeout,
        String::new(),
        std::time::Duration::from_micros(s.phases.total_us),
    );
    o.success = s.error.is_none();
    o.status_code = o.success.then_some(200);
    o.error = s.error;
    o.phases = s.phases;
    o.response_bytes = if o.success { 1_500 } else { 0 };
    o.request = format!("GET https://{}.example/health", meta.name);
    RunRecord {
        run_id: uuid::Uuid::now_v7(),
        meta: meta.clone(),
        scheduled_at: at,
        started_at: at,
        lateness_us: 0,
        outcome: o,
        trigger: Trigger::Schedule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn samples_are_deterministic_and_centre_near_100_ms() {
        let start = t("2026-11-20T00:00:00Z");
        let change = t("2026-11-26T18:00:00Z");
        let plans = plans(42, 2, 2, change, true);
        assert_eq!(plans.len(), 16);
        let p = &plans[0];
        let at = start + TimeDelta::minutes(7);
        assert_eq!(p.sample(1, 7, at, start), p.sample(1, 7, at, start));
        let mut totals: Vec<u64> = (0..5000)
            .map(|k| {
                let at = start + TimeDelta::minutes(k);
                p.sample(1, k as u64, at, start).phases.total_us
            })
            .collect();
        totals.sort_unstable();
        let median = totals[totals.len() / 2];
        assert!((80_000..125_000).contains(&median), "median {median}");
    }

    #[test]
    fn a_step_raises_the_level_from_its_time_on() {
        let start = t("2026-11-20T00:00:00Z");
        let change = t("2026-11-20T12:00:00Z");
        let plans = plans(42, 1, 1, change, true);
        let p = plans
            .iter()
            .find(|p| p.scenario == Scenario::Step(50))
            .unwrap();
        let c = p.change_at.unwrap();
        let before = p.level(c - TimeDelta::seconds(1), start);
        let after = p.level(c, start);
        assert!((after / before - 1.5).abs() < 0.01, "{before} {after}");
    }
}
