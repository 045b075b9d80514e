//! Synthetic runs of an HTTPS probe, deterministic in (probe, tick): phase
//! timings from skewed distributions whose total centres near 47 ms (p5 ≈ 41
//! ms, p95 ≈ 60 ms, a tail to ≈ 0.5 s on 3 % of runs), 1 % failures with an error class
//! and a short message, status 200 otherwise.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use prober::run::{ErrorClass, Outcome, Phases, ProbeError, ProbeMeta, RunRecord, Trigger};

/// The probes' timeout: a timed-out run lasts this long.
pub const TIMEOUT_US: u64 = 5_000_000;

/// SplitMix64's finaliser: a well-mixed 64-bit value from any input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Independent uniform draws in [0, 1) for one run.
struct Draws(u64);

impl Draws {
    fn new(probe: u64, tick: u64) -> Draws {
        Draws(mix(mix(probe) ^ tick.wrapping_mul(0xa076_1d64_78bd_642f)))
    }

    fn next(&mut self) -> f64 {
        self.0 = mix(self.0);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `lo + span · u^power`: skewed towards `lo` for `power` > 1.
    fn skewed(&mut self, lo: f64, span: f64, power: i32) -> u64 {
        (lo + span * self.next().powi(power)) as u64
    }
}

/// What one synthetic run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    pub phases: Phases,
    pub lateness_us: i64,
    pub status_code: Option<u16>,
    pub error: Option<ProbeError>,
    pub response_bytes: u64,
}

/// The run of probe `probe` at tick `tick`.
pub fn synthetic(probe: u64, tick: u64) -> Synthetic {
    let mut d = Draws::new(probe, tick);
    let dns = d.skewed(600.0, 2_400.0, 3);
    let connect = d.skewed(2_000.0, 4_000.0, 2);
    let tls = d.skewed(8_000.0, 6_000.0, 2);
    let mut first_byte = d.skewed(28_000.0, 16_000.0, 3);
    if d.next() < 0.03 {
        // The tail: 50 ms to 500 ms more, log-uniform.
        first_byte += (50_000.0 * 10f64.powf(d.next())) as u64;
    }
    let transfer = d.skewed(200.0, 2_800.0, 3);
    let overhead = d.skewed(150.0, 250.0, 1);
    let lateness_us = d.skewed(300.0, 4_000.0, 4) as i64;
    let fail = d.next() < 0.01;
    let class = d.next();
    let mut s = Synthetic {
        phases: Phases {
            dns_us: Some(dns),
            connect_us: Some(connect),
            tls_us: Some(tls),
            first_byte_us: Some(first_byte),
            transfer_us: Some(transfer),
            total_us: dns + connect + tls + first_byte + transfer + overhead,
        },
        lateness_us,
        status_code: Some(200),
        error: None,
        response_bytes: 1_200 + d.skewed(0.0, 400.0, 1),
    };
    if fail {
        fail_run(&mut s, class);
    }
    s
}

/// Makes `s` a failure: a timeout (half), a refused connection (30 %) or a 503.
fn fail_run(s: &mut Synthetic, class: f64) {
    let p = &mut s.phases;
    let (class, message) = if class < 0.5 {
        (p.first_byte_us, p.transfer_us) = (None, None);
        p.total_us = TIMEOUT_US + 200;
        s.status_code = None;
        s.response_bytes = 0;
        (ErrorClass::Timeout, "no response within 5s".to_string())
    } else if class < 0.8 {
        let dns = p.dns_us.unwrap_or(0);
        *p = Phases {
            dns_us: Some(dns),
            total_us: dns + 400,
            ..Phases::default()
        };
        s.status_code = None;
        s.response_bytes = 0;
        (
            ErrorClass::Connect,
            "connection refused (os error 111)".to_string(),
        )
    } else {
        s.status_code = Some(503);
        s.response_bytes = 19;
        (
            ErrorClass::HttpStatus,
            "status: expected 2xx, got 503".to_string(),
        )
    };
    s.error = Some(ProbeError { class, message });
}

/// The stored record of probe `probe`'s run at tick `tick`, scheduled `at`,
/// built as the integration tests build theirs (`Outcome::failed`, then the
/// measured fields), with the run id the daemon's scheduler gives a tick of
/// `location` (`tick_run_id`).
pub fn record(
    meta: &Arc<ProbeMeta>,
    location: &str,
    probe: u64,
    tick: u64,
    at: DateTime<Utc>,
) -> RunRecord {
    let s = synthetic(probe, tick);
    let started_at = at + TimeDelta::microseconds(s.lateness_us);
    let mut o = Outcome::failed(
        &meta.name,
        &meta.version,
        started_at,
        ErrorClass::Timeout,
        String::new(),
        std::time::Duration::from_micros(s.phases.total_us),
    );
    o.success = s.error.is_none();
    o.error = s.error;
    o.status_code = s.status_code;
    o.phases = s.phases;
    o.response_bytes = s.response_bytes;
    o.request = format!("GET https://bench-{probe:05}.example/health");
    o.remote_addr = Some("192.0.2.10:443".into());
    o.trace_id = format!("{:016x}{:016x}", mix(probe), mix(tick));
    RunRecord {
        run_id: prober::run::tick_run_id(location, &meta.name, at),
        meta: meta.clone(),
        scheduled_at: at,
        started_at,
        lateness_us: s.lateness_us,
        outcome: o,
        trigger: Trigger::Schedule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_deterministic_and_differ_by_probe_and_tick() {
        assert_eq!(synthetic(3, 7), synthetic(3, 7));
        assert_ne!(synthetic(3, 7), synthetic(3, 8));
        assert_ne!(synthetic(3, 7), synthetic(4, 7));
    }

    #[test]
    fn totals_centre_near_47_ms_with_a_tail_and_one_percent_failures() {
        let runs: Vec<Synthetic> = (0..20_000).map(|i| synthetic(i % 100, i / 100)).collect();
        let failed = runs.iter().filter(|s| s.error.is_some()).count();
        assert!((150..=250).contains(&failed), "{failed} failures in 20000");
        let mut ok: Vec<u64> = runs
            .iter()
            .filter(|s| s.error.is_none())
            .map(|s| s.phases.total_us)
            .collect();
        ok.sort_unstable();
        let q = |f: f64| ok[((ok.len() - 1) as f64 * f) as usize];
        assert!((38_900..=42_000).contains(&ok[0]), "min {}", ok[0]);
        assert!((44_000..=52_000).contains(&q(0.5)), "p50 {}", q(0.5));
        assert!((55_000..=63_000).contains(&q(0.95)), "p95 {}", q(0.95));
        assert!(q(0.99) > 80_000, "p99 {}", q(0.99));
        assert!(*ok.last().unwrap() < 600_000);
        for s in &runs {
            let p = &s.phases;
            let sum: u64 = [
                p.dns_us,
                p.connect_us,
                p.tls_us,
                p.first_byte_us,
                p.transfer_us,
            ]
            .iter()
            .flatten()
            .sum();
            assert!(sum <= p.total_us, "phases within the total: {s:?}");
            assert!((300..4_300).contains(&s.lateness_us));
            assert_eq!(s.error.is_none(), s.status_code == Some(200));
        }
    }
}
