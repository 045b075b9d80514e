//! SLO burn-rate math: the multi-window, multi-burn-rate alerts of the
//! Google SRE Workbook (chapter "Alerting on SLOs"), for an availability
//! objective over 30 days.
//!
//! The burn rate of a window is its error ratio divided by the error budget
//! (1 − objective): a burn rate of 1 spends exactly the budget in 30 days.
//! A pair fires when both its long and its short window burn faster than its
//! factor (the short window makes it resolve soon after the burning stops),
//! and only when the long window holds at least `min_failures` failed runs,
//! so one failure of a probe that runs once an hour cannot page.

use std::time::Duration;

use crate::config::policy::{Severity, SloRule};

/// The period of the objective.
pub const SLO_PERIOD: Duration = Duration::from_secs(30 * 86_400);

/// One pair of windows and the burn rate both must exceed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub long: Duration,
    pub short: Duration,
    pub factor: f64,
    pub severity: Severity,
}

const fn mins(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

/// The Workbook's pairs: 2 % of a 30-day budget in 1 h and 5 % in 6 h page;
/// 10 % in 1 d and 10 % in 3 d open a ticket.
pub const PAIRS: [Pair; 4] = [
    Pair {
        long: mins(60),
        short: mins(5),
        factor: 14.4,
        severity: Severity::Page,
    },
    Pair {
        long: mins(6 * 60),
        short: mins(30),
        factor: 6.0,
        severity: Severity::Page,
    },
    Pair {
        long: mins(24 * 60),
        short: mins(2 * 60),
        factor: 3.0,
        severity: Severity::Ticket,
    },
    Pair {
        long: mins(3 * 24 * 60),
        short: mins(6 * 60),
        factor: 1.0,
        severity: Severity::Ticket,
    },
];

/// Every window any pair reads, shortest first.
pub fn windows() -> Vec<Duration> {
    let mut w: Vec<Duration> = PAIRS.iter().flat_map(|p| [p.long, p.short]).collect();
    w.sort();
    w.dedup();
    w
}

/// Runs and failed runs in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub runs: u64,
    pub failures: u64,
}

/// The burn rate of a window: its error ratio over the error budget. 0 without runs.
pub fn burn_rate(c: Counts, objective: f64) -> f64 {
    let budget = 1.0 - objective;
    if c.runs == 0 || budget <= 0.0 {
        return 0.0;
    }
    (c.failures as f64 / c.runs as f64) / budget
}

/// A pair that fires, with what it saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub pair: Pair,
    pub long_burn: f64,
    pub short_burn: f64,
    pub long: Counts,
}

impl Hit {
    /// Why it fires, for the transition and the notification.
    pub fn reason(&self, objective: f64) -> String {
        format!(
            "error budget burning {:.1}x over {} and {:.1}x over {} (threshold {}x; objective {}%; {} of {} runs failed in {})",
            self.long_burn,
            humantime::format_duration(self.pair.long),
            self.short_burn,
            humantime::format_duration(self.pair.short),
            self.pair.factor,
            objective * 100.0,
            self.long.failures,
            self.long.runs,
            humantime::format_duration(self.pair.long),
        )
    }
}

/// The first pair of `severity` that fires, given the counts of each window.
pub fn evaluate(
    rule: &SloRule,
    severity: Severity,
    counts: impl Fn(Duration) -> Counts,
) -> Option<Hit> {
    PAIRS
        .iter()
        .filter(|p| p.severity == severity)
        .find_map(|p| {
            let long = counts(p.long);
            let short = counts(p.short);
            let long_burn = burn_rate(long, rule.objective);
            let short_burn = burn_rate(short, rule.objective);
            (long.failures >= u64::from(rule.min_failures.max(1))
                && long_burn > p.factor
                && short_burn > p.factor)
                .then_some(Hit {
                    pair: *p,
                    long_burn,
                    short_burn,
                    long,
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(objective: f64, min_failures: u32) -> SloRule {
        SloRule {
            objective,
            min_failures,
        }
    }

    /// Counts per window from a table; windows not listed saw `rest`.
    fn table(rows: &[(u64, u64, u64)], rest: Counts) -> impl Fn(Duration) -> Counts + '_ {
        move |w| {
            rows.iter()
                .find(|(m, _, _)| mins(*m) == w)
                .map_or(rest, |(_, runs, failures)| Counts {
                    runs: *runs,
                    failures: *failures,
                })
        }
    }

    #[test]
    fn burn_rate_is_the_error_ratio_over_the_budget() {
        // 99.9 %: budget 0.001. 2 failed of 100 = 0.02 → 20x.
        let b = burn_rate(
            Counts {
                runs: 100,
                failures: 2,
            },
            0.999,
        );
        assert!((b - 20.0).abs() < 1e-9, "{b}");
        // 99 %: budget 0.01. 1 of 1000 = 0.001 → 0.1x.
        let b = burn_rate(
            Counts {
                runs: 1000,
                failures: 1,
            },
            0.99,
        );
        assert!((b - 0.1).abs() < 1e-9, "{b}");
        assert_eq!(burn_rate(Counts::default(), 0.999), 0.0);
    }

    #[test]
    fn the_fast_pair_pages_when_both_windows_burn_above_14_4() {
        // A probe every 10 s: 360 runs an hour, 30 in 5 min. 99.9 %.
        // 1 h: 6 failed of 360 = 1.667 % → 16.7x; 5 m: 6 of 30 = 20 % → 200x.
        let r = rule(0.999, 5);
        let counts = table(&[(60, 360, 6), (5, 30, 6)], Counts::default());
        let hit = evaluate(&r, Severity::Page, counts).expect("pages");
        assert_eq!(hit.pair.factor, 14.4);
        assert!(
            (hit.long_burn - 16.666_666).abs() < 1e-3,
            "{}",
            hit.long_burn
        );
        assert!((hit.short_burn - 200.0).abs() < 1e-6);
        assert!(hit.reason(0.999).contains("6 of 360 runs failed in 1h"));
    }

    #[test]
    fn a_stopped_burn_does_not_page_even_with_a_hot_long_window() {
        // 1 h still at 16.7x, but the last 5 minutes are clean: the short window resets it.
        let r = rule(0.999, 5);
        let counts = table(&[(60, 360, 6), (5, 30, 0)], Counts::default());
        assert_eq!(evaluate(&r, Severity::Page, counts), None);
    }

    #[test]
    fn just_below_the_factor_does_not_page() {
        // 5 of 360 = 1.389 % → 13.9x < 14.4.
        let r = rule(0.999, 5);
        let counts = table(&[(60, 360, 5), (5, 30, 5)], Counts::default());
        assert_eq!(evaluate(&r, Severity::Page, counts), None);
    }

    #[test]
    fn one_failure_at_a_low_probe_rate_cannot_page() {
        // A probe every 5 min: 12 runs an hour, 1 in 5 min. One failure:
        // 1 h 1/12 = 83x, 5 m 1/1 = 1000x — far above 14.4, but only 1 failure.
        let r = rule(0.999, 5);
        let counts = table(&[(60, 12, 1), (5, 1, 1)], Counts::default());
        assert_eq!(evaluate(&r, Severity::Page, counts), None);
        // With min_failures 1 the same counts page.
        let counts = table(&[(60, 12, 1), (5, 1, 1)], Counts::default());
        assert!(evaluate(&rule(0.999, 1), Severity::Page, counts).is_some());
    }

    #[test]
    fn the_slow_pairs_open_tickets() {
        // 99 %: budget 1 %. 1 d: 50 failed of 1440 = 3.47 % → 3.47x > 3;
        // 2 h: 8 of 120 = 6.7 % → 6.7x > 3. Page pairs: 1 h 2/60 = 3.3x, not > 14.4.
        let r = rule(0.99, 5);
        let rows = [
            (24 * 60, 1440, 50),
            (120, 120, 8),
            (60, 60, 2),
            (5, 5, 0),
            (360, 360, 10),
            (30, 30, 0),
        ];
        assert_eq!(
            evaluate(&r, Severity::Page, table(&rows, Counts::default())),
            None
        );
        let hit = evaluate(&r, Severity::Ticket, table(&rows, Counts::default())).expect("ticket");
        assert_eq!(hit.pair.factor, 3.0);
        assert!((hit.long_burn - 50.0 / 1440.0 / 0.01).abs() < 1e-9);
    }

    #[test]
    fn the_three_day_pair_catches_a_slow_steady_burn() {
        // 99.9 %, 1 run a minute: 3 d = 4320 runs, 6 failed = 0.139 % → 1.39x > 1;
        // 6 h = 360 runs, 1 failed = 0.278 % → 2.78x > 1. 1 d pair: 2 of 1440 → 1.39x < 3.
        let r = rule(0.999, 5);
        let rows = [
            (3 * 24 * 60, 4320, 6),
            (360, 360, 1),
            (24 * 60, 1440, 2),
            (120, 120, 0),
        ];
        let hit = evaluate(&r, Severity::Ticket, table(&rows, Counts::default())).expect("ticket");
        assert_eq!(hit.pair.long, mins(3 * 24 * 60));
    }

    #[test]
    fn windows_lists_each_once() {
        let w = windows();
        assert_eq!(w.len(), 7);
        assert_eq!(w.first(), Some(&mins(5)));
        assert_eq!(w.last(), Some(&mins(3 * 24 * 60)));
    }
}
