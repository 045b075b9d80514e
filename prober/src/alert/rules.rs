//! The alert rules as pure functions: inputs (a run's error or certificate,
//! a quantile, burn-rate counts, failing locations) and the probe's policy
//! in, a [`Verdict`] out. No I/O and no clock: the engine reads the inputs
//! (per run, or from Postgres for the periodic rules) and moves the alert
//! through its state machine with the verdict ([`super::Alert::observe`],
//! [`super::Alert::evaluate`]).
//!
//! A rule returns `None` when it does not apply: the policy turns it off,
//! or the data to judge is missing (then the alert keeps its state).

use std::time::Duration;

use super::burn::{self, Counts};
use crate::config::policy::{Policy, Severity};
use crate::run::{CertInfo, ProbeError};

/// What one evaluation of a rule found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Set when the condition holds: why (the reason of pending and firing).
    pub bad: Option<String>,
    /// Why the condition does not hold (the reason of ok and resolved).
    pub good: String,
    pub severity: Severity,
    /// Bad verdicts in a row that fire, good ones in a row that resolve.
    pub thresholds: (u32, u32),
    /// Failed runs behind a bad verdict, where the rule counts them (the SLO's
    /// long window, the locations of k-of-n): the alert's `failed_runs`.
    pub failed: Option<u32>,
}

impl Verdict {
    /// A condition evaluated once per period: fires and resolves at once.
    fn once(bad: Option<String>, good: String, severity: Severity) -> Verdict {
        Verdict {
            bad,
            good,
            severity,
            thresholds: (1, 1),
            failed: None,
        }
    }
}

/// `failing`: a failed run counts toward firing (`failures_to_fire` in a
/// row), a successful one toward resolving (`successes_to_resolve`).
pub fn failing(error: Option<&ProbeError>, policy: &Policy) -> Verdict {
    Verdict {
        bad: error.map(|e| format!("{}: {}", e.class, e.message)),
        good: "a successful run".to_string(),
        severity: policy.severity,
        thresholds: (policy.failures_to_fire, policy.successes_to_resolve),
        failed: None,
    }
}

/// `cert_expiry` (a ticket): the certificate a run saw has fewer than
/// `cert_expiry_days` days left. `None` when the rule is off or the run saw none.
pub fn cert_expiry(cert: Option<&CertInfo>, policy: &Policy) -> Option<Verdict> {
    let days = policy.cert_expiry_days;
    let cert = cert.filter(|_| days > 0)?;
    let bad = (cert.days_left < i64::from(days)).then(|| {
        format!(
            "the certificate of {} (issuer {}) expires {} ({} days left; the alert is at fewer than {days})",
            cert.subject,
            cert.issuer,
            cert.not_after.to_rfc3339(),
            cert.days_left
        )
    });
    let good = format!(
        "the certificate now expires {} ({} days left)",
        cert.not_after.to_rfc3339(),
        cert.days_left
    );
    Some(Verdict::once(bad, good, Severity::Ticket))
}

/// The open trend findings of a probe (issue 17), as the `trend` rule reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenTrends {
    /// The newest open finding's id and one-line summary.
    pub newest_id: i64,
    pub summary: String,
    /// Open findings of the probe, at every location.
    pub count: usize,
}

/// `trend` (a ticket unless the probe's `alert.trend_severity` says `page`):
/// fires while the probe has an open trend finding, resolves once every
/// finding is acknowledged or ended. `None` while there is nothing open and
/// the alert is not active (no alert is made for it).
pub fn trend(open: Option<&OpenTrends>, active: bool, severity: Severity) -> Option<Verdict> {
    let good = "every trend finding of the probe is acknowledged or ended".to_string();
    match open {
        Some(o) => {
            let more = if o.count > 1 {
                format!("; {} findings open", o.count)
            } else {
                String::new()
            };
            let bad = format!(
                "{} (trend finding {}{more}; acknowledge: POST /api/v1/trends/{}/ack)",
                o.summary, o.newest_id, o.newest_id
            );
            Some(Verdict::once(Some(bad), good, severity))
        }
        None if active => Some(Verdict::once(None, good, severity)),
        None => None,
    }
}

/// `latency`: the quantile of the total latency over the window (µs, from
/// merged bins of every location) is above the threshold. `None` without a
/// latency rule or without runs in the window.
pub fn latency(quantile_us: Option<i64>, policy: &Policy) -> Option<Verdict> {
    let l = policy.latency?;
    let q_us = quantile_us?;
    let above_us = i64::try_from(l.above.as_micros()).unwrap_or(i64::MAX);
    let text = format!(
        "p{} of the total latency over the last {} is {:.1}ms",
        l.quantile * 100.0,
        humantime::format_duration(l.over),
        q_us as f64 / 1000.0
    );
    let bad =
        (q_us > above_us).then(|| format!("{text}, above {}", humantime::format_duration(l.above)));
    let good = format!("{text}, back under {}", humantime::format_duration(l.above));
    Some(Verdict::once(bad, good, l.severity))
}

/// `slo_page` / `slo_ticket`: a burn-rate pair of `severity` fires, given
/// the counts of each window of [`burn::windows`] (in that order; a missing
/// window counts as no runs). `None` without an objective.
pub fn slo(counts: &[Counts], policy: &Policy, severity: Severity) -> Option<Verdict> {
    let slo = policy.slo?;
    let windows = burn::windows();
    let of = |w: Duration| {
        (windows.iter().position(|x| *x == w))
            .and_then(|i| counts.get(i))
            .copied()
            .unwrap_or_default()
    };
    let hit = burn::evaluate(&slo, severity, of);
    let mut v = Verdict::once(
        hit.map(|h| h.reason(slo.objective)),
        "the error budget no longer burns above the thresholds".to_string(),
        severity,
    );
    v.failed = hit.map(|h| u32::try_from(h.long.failures).unwrap_or(u32::MAX));
    Some(v)
}

/// `failing` across locations (k of n): at least `min_locations` locations'
/// `failing` alerts fire. `None` unless `min_locations` is above 1.
pub fn k_of_n(failing_at: &[String], policy: &Policy) -> Option<Verdict> {
    let k = policy.min_locations;
    if k <= 1 {
        return None;
    }
    let n = u32::try_from(failing_at.len()).unwrap_or(u32::MAX);
    let text = format!(
        "failing at {n} location(s){}{}; pages at {k}",
        if failing_at.is_empty() { "" } else { ": " },
        failing_at.join(", ")
    );
    let mut v = Verdict::once((n >= k).then(|| text.clone()), text, policy.severity);
    v.failed = (n >= k).then_some(n);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::{LatencyRule, SloRule};
    use crate::run::ErrorClass;
    use chrono::TimeZone;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn trend_fires_on_an_open_finding_and_resolves_only_an_active_alert() {
        let open = OpenTrends {
            newest_id: 7,
            summary: "api (eu): total p50 +20.0 ms".into(),
            count: 2,
        };
        let v = trend(Some(&open), false, Severity::Ticket).unwrap();
        assert_eq!(v.severity, Severity::Ticket);
        let paged = trend(Some(&open), false, Severity::Page).unwrap();
        assert_eq!(paged.severity, Severity::Page, "alert.trend_severity: page");
        assert_eq!(v.thresholds, (1, 1));
        let bad = v.bad.unwrap();
        assert!(
            bad.starts_with("api (eu): total p50 +20.0 ms (trend finding 7; 2 findings open"),
            "{bad}"
        );
        assert!(bad.ends_with("POST /api/v1/trends/7/ack)"), "{bad}");
        let resolve = trend(None, true, Severity::Ticket).unwrap();
        assert!(resolve.bad.is_none());
        assert!(resolve.good.contains("acknowledged or ended"));
        assert!(
            trend(None, false, Severity::Ticket).is_none(),
            "nothing open, nothing active: no alert"
        );
    }

    #[test]
    fn failing_counts_a_failed_run_with_the_policy_thresholds() {
        let e = ProbeError {
            class: ErrorClass::HttpStatus,
            message: "status: expected 2xx, got 503".into(),
        };
        let ticket = Policy {
            failures_to_fire: 5,
            successes_to_resolve: 1,
            severity: Severity::Ticket,
            ..Policy::default()
        };
        // (error, policy, bad, thresholds, severity)
        let cases = [
            (
                Some(&e),
                Policy::default(),
                Some("http_status: status: expected 2xx, got 503"),
                (3, 2),
                Severity::Page,
            ),
            (None, Policy::default(), None, (3, 2), Severity::Page),
            (
                Some(&e),
                ticket,
                Some("http_status: status: expected 2xx, got 503"),
                (5, 1),
                Severity::Ticket,
            ),
            (None, ticket, None, (5, 1), Severity::Ticket),
        ];
        for (i, (error, policy, bad, thresholds, severity)) in cases.into_iter().enumerate() {
            let v = failing(error, &policy);
            assert_eq!(v.bad.as_deref(), bad, "row {i}");
            assert_eq!(
                (v.thresholds, v.severity),
                (thresholds, severity),
                "row {i}"
            );
        }
    }

    #[test]
    fn cert_expiry_fires_below_the_days_left_and_not_at_them() {
        let cert = |days_left: i64| CertInfo {
            subject: "CN=shop.example".into(),
            issuer: "CN=Example CA".into(),
            not_after: chrono::Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            days_left,
        };
        let off = Policy {
            cert_expiry_days: 0,
            ..Policy::default()
        };
        // (days left, policy, expected: None = not evaluated, Some(fires))
        let cases = [
            (Some(3), Policy::default(), Some(true)),
            (Some(13), Policy::default(), Some(true)),
            (Some(14), Policy::default(), Some(false)), // boundary: "fewer than 14"
            (Some(90), Policy::default(), Some(false)),
            (Some(-2), Policy::default(), Some(true)), // already expired
            (Some(3), off, None),                      // rule off
            (None, Policy::default(), None),           // the run saw no certificate
        ];
        for (days, policy, want) in cases {
            let c = days.map(cert);
            let v = cert_expiry(c.as_ref(), &policy);
            assert_eq!(
                v.as_ref().map(|v| v.bad.is_some()),
                want,
                "{days:?} {policy:?}"
            );
            if let Some(v) = v {
                assert_eq!((v.severity, v.thresholds), (Severity::Ticket, (1, 1)));
                assert!(v.good.contains("2027-01-01"), "{}", v.good);
            }
        }
        let v = cert_expiry(Some(&cert(3)), &Policy::default()).unwrap();
        assert!(v
            .bad
            .unwrap()
            .contains("CN=shop.example (issuer CN=Example CA)"));
    }

    #[test]
    fn latency_fires_above_the_threshold_only() {
        let rule = Policy {
            latency: Some(LatencyRule {
                quantile: 0.99,
                above: ms(800),
                over: Duration::from_secs(300),
                severity: Severity::Page,
            }),
            ..Policy::default()
        };
        // (quantile µs, policy, expected: None = not evaluated, Some(fires))
        let cases = [
            (Some(950_000), rule, Some(true)),
            (Some(800_001), rule, Some(true)),
            (Some(800_000), rule, Some(false)), // boundary: "above", not "at"
            (Some(12_000), rule, Some(false)),
            (None, rule, None),                       // no runs in the window
            (Some(950_000), Policy::default(), None), // no latency rule
        ];
        for (q, policy, want) in cases {
            let v = latency(q, &policy);
            assert_eq!(v.as_ref().map(|v| v.bad.is_some()), want, "{q:?}");
        }
        let v = latency(Some(950_000), &rule).unwrap();
        assert_eq!(
            v.bad.as_deref(),
            Some("p99 of the total latency over the last 5m is 950.0ms, above 800ms")
        );
        assert_eq!(
            v.good,
            "p99 of the total latency over the last 5m is 950.0ms, back under 800ms"
        );
        assert_eq!(v.severity, Severity::Page);
    }

    /// Counts for every window: `long` for windows of an hour and more, `short` below.
    fn counts(long: Counts, short: Counts) -> Vec<Counts> {
        burn::windows()
            .iter()
            .map(|w| {
                if *w >= Duration::from_secs(3_600) {
                    long
                } else {
                    short
                }
            })
            .collect()
    }

    #[test]
    fn slo_fires_when_both_windows_of_a_pair_burn_and_enough_runs_failed() {
        let policy = Policy {
            slo: Some(SloRule {
                objective: 0.999,
                min_failures: 5,
            }),
            ..Policy::default()
        };
        let c = |runs, failures| Counts { runs, failures };
        // (counts, severity, expected: None = not evaluated, Some(fires), failed runs)
        let cases = [
            // 10 % errors burn 100x the 0.1 % budget: both pairs fire.
            (
                counts(c(1_000, 100), c(100, 10)),
                Severity::Page,
                Some(true),
                Some(100),
            ),
            (
                counts(c(1_000, 100), c(100, 10)),
                Severity::Ticket,
                Some(true),
                Some(100),
            ),
            // Burning, but only 4 failed runs: below min_failures.
            (
                counts(c(40, 4), c(10, 4)),
                Severity::Page,
                Some(false),
                None,
            ),
            // The long window burns, the short one has recovered.
            (
                counts(c(1_000, 100), c(100, 0)),
                Severity::Page,
                Some(false),
                None,
            ),
            (
                counts(c(1_000, 0), c(100, 0)),
                Severity::Page,
                Some(false),
                None,
            ),
            // No data at all: nothing burns.
            (Vec::new(), Severity::Page, Some(false), None),
        ];
        for (i, (counts, severity, want, failed)) in cases.into_iter().enumerate() {
            let v = slo(&counts, &policy, severity);
            assert_eq!(v.as_ref().map(|v| v.bad.is_some()), want, "row {i}");
            assert_eq!(v.as_ref().and_then(|v| v.failed), failed, "row {i}");
            assert_eq!(v.map(|v| v.severity), Some(severity), "row {i}");
        }
        let no_slo = slo(
            &counts(c(1_000, 100), c(100, 10)),
            &Policy::default(),
            Severity::Page,
        );
        assert_eq!(no_slo, None, "no objective, no evaluation");
    }

    #[test]
    fn k_of_n_fires_when_enough_locations_fail() {
        let two = Policy {
            min_locations: 2,
            ..Policy::default()
        };
        let locs = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (failing locations, policy, expected: None = not evaluated, Some(fires), failed)
        let cases = [
            (locs(&["eu", "us"]), two, Some(true), Some(2)),
            (locs(&["eu", "us", "ap"]), two, Some(true), Some(3)),
            (locs(&["eu"]), two, Some(false), None), // boundary: one short
            (locs(&[]), two, Some(false), None),
            (locs(&["eu", "us"]), Policy::default(), None, None), // k = 1: per location only
        ];
        for (at, policy, want, failed) in cases {
            let v = k_of_n(&at, &policy);
            assert_eq!(v.as_ref().map(|v| v.bad.is_some()), want, "{at:?}");
            assert_eq!(v.and_then(|v| v.failed), failed, "{at:?}");
        }
        let v = k_of_n(&locs(&["eu", "us"]), &two).unwrap();
        assert_eq!(
            v.bad.as_deref(),
            Some("failing at 2 location(s): eu, us; pages at 2")
        );
        assert_eq!(
            k_of_n(&[], &two).unwrap().good,
            "failing at 0 location(s); pages at 2"
        );
    }
}
