//! Alerting for on-call: the alert state machine (ok → pending → firing →
//! resolved), persisted in Postgres with every transition, fed by every run.
//!
//! Rules: `failing` (consecutive failed runs, per location) and
//! `cert_expiry` (per run, per location) are evaluated on every run;
//! `latency` (a quantile over a window from merged bins) and the SLO
//! burn-rate rules `slo_page`/`slo_ticket` are evaluated periodically from
//! Postgres across all locations, by the one replica holding the evaluator
//! lock. Silences and `depends_on` hold back notifications, never state.

pub mod burn;
pub mod engine;
pub mod silence;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::run::ProbeError;

/// The states of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Ok,
    Pending,
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        match s {
            "ok" => Some(State::Ok),
            "pending" => Some(State::Pending),
            "firing" => Some(State::Firing),
            "resolved" => Some(State::Resolved),
            _ => None,
        }
    }
}

/// `page` wakes someone; `ticket` waits for working hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// A probe's alerting rules: when each fires and resolves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub enabled: bool,
    /// `failing`: consecutive failed runs that fire.
    pub failures_to_fire: u32,
    /// `failing`: consecutive successful runs that resolve.
    pub successes_to_resolve: u32,
    /// Severity of `failing`.
    pub severity: Severity,
    /// `latency`: a quantile over a window above a threshold.
    pub latency: Option<LatencyRule>,
    /// `slo_page`/`slo_ticket`: availability objective and burn-rate pairs.
    pub slo: Option<SloRule>,
    /// `cert_expiry` (ticket): fires when a run sees a certificate with fewer days left; 0 = off.
    pub cert_expiry_days: u32,
    /// `failing` pages only when this many locations fail at once (k of n). With
    /// more than 1, each location's `failing` alert is recorded without notifying,
    /// and `<probe>/failing/all` notifies.
    pub min_locations: u32,
}

/// Fires when the quantile of the total latency over the last `over` exceeds `above`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyRule {
    /// 0 < quantile < 1, e.g. 0.99.
    pub quantile: f64,
    pub above: std::time::Duration,
    /// The window, whole minutes (the bins' step).
    pub over: std::time::Duration,
    pub severity: Severity,
}

/// An availability objective over 30 days, alerted on by burn rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloRule {
    /// The objective as a fraction, e.g. 0.999.
    pub objective: f64,
    /// Failed runs the long window of a pair must hold before it can fire,
    /// so a single failure at a low probe rate cannot page.
    pub min_failures: u32,
}

/// Days before expiry at which `cert_expiry` fires when nothing else is set.
pub const DEFAULT_CERT_EXPIRY_DAYS: u32 = 14;
/// Failed runs a burn-rate window needs before it fires when nothing else is set.
pub const DEFAULT_SLO_MIN_FAILURES: u32 = 5;

/// Consecutive failures that fire an alert when nothing else is set.
pub const DEFAULT_FAILURES_TO_FIRE: u32 = 3;
/// Consecutive successes that resolve it.
pub const DEFAULT_SUCCESSES_TO_RESOLVE: u32 = 2;

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            enabled: true,
            failures_to_fire: DEFAULT_FAILURES_TO_FIRE,
            successes_to_resolve: DEFAULT_SUCCESSES_TO_RESOLVE,
            severity: Severity::Page,
            latency: None,
            slo: None,
            cert_expiry_days: DEFAULT_CERT_EXPIRY_DAYS,
            min_locations: 1,
        }
    }
}

/// One alert: a rule of a probe at a location.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Alert {
    /// `probe/rule/location`: stable across restarts; the dedup key for receivers.
    pub key: String,
    pub probe: String,
    pub rule: String,
    pub location: String,
    pub severity: Severity,
    pub state: State,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// When the current state began.
    pub since: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub last_error: Option<ProbeError>,
    /// Failed runs of the probe (at this location) since the incident began.
    pub failed_runs: u32,
    /// The incident's last failed run.
    /// Boxed: ~0.3 KiB that only an alert with a failure holds.
    pub last_failure: Option<Box<crate::notify::LastFailure>>,
    /// Whether a trigger was recorded for the current incident (a resolve follows only then).
    pub notified: bool,
    /// Why the trigger is held back (a silence, a firing upstream); it is sent when that ends.
    pub suppressed: Option<String>,
    /// When the trigger or the last reminder was recorded.
    pub last_notified_at: Option<DateTime<Utc>>,
}

/// A change of state, recorded in the alert history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Transition {
    pub key: String,
    pub from: State,
    pub to: State,
    pub at: DateTime<Utc>,
    pub reason: String,
}

impl Alert {
    /// A new alert in state ok.
    pub fn new(
        probe: &str,
        rule: &str,
        location: &str,
        severity: Severity,
        at: DateTime<Utc>,
    ) -> Alert {
        Alert {
            key: format!("{probe}/{rule}/{location}"),
            probe: probe.to_string(),
            rule: rule.to_string(),
            location: location.to_string(),
            severity,
            state: State::Ok,
            consecutive_failures: 0,
            consecutive_successes: 0,
            since: at,
            fired_at: None,
            resolved_at: None,
            last_error: None,
            failed_runs: 0,
            last_failure: None,
            notified: false,
            suppressed: None,
            last_notified_at: None,
        }
    }

    /// Takes one run into account for the `failing` rule; returns the
    /// transition it caused, if any.
    pub fn observe(
        &mut self,
        error: Option<&ProbeError>,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Option<Transition> {
        self.severity = policy.severity;
        if let Some(e) = error {
            self.last_error = Some(e.clone());
        }
        let fire = policy.failures_to_fire;
        let resolve = policy.successes_to_resolve;
        let to = self.next_state(error.is_some(), fire, resolve)?;
        let reason = match (to, error) {
            (State::Firing, Some(e)) => format!(
                "{} consecutive failed runs; last: {}: {}",
                self.consecutive_failures, e.class, e.message
            ),
            (State::Pending, Some(e)) => format!("a failed run ({}: {})", e.class, e.message),
            (State::Resolved, _) => {
                format!("{} consecutive successful runs", self.consecutive_successes)
            }
            (State::Ok, _) => "recovered before firing".to_string(),
            _ => String::new(),
        };
        Some(self.enter(to, at, policy.severity, reason))
    }

    /// Takes one evaluation of a condition into account (`bad` holds the
    /// reason when it is met): fires after `fire` bad evaluations in a row,
    /// resolves after `resolve` good ones.
    pub fn evaluate(
        &mut self,
        bad: Option<&str>,
        good_reason: &str,
        at: DateTime<Utc>,
        severity: Severity,
        (fire, resolve): (u32, u32),
    ) -> Option<Transition> {
        let to = self.next_state(bad.is_some(), fire, resolve)?;
        let reason = match (to, bad) {
            (State::Firing | State::Pending, Some(r)) => r.to_string(),
            _ => good_reason.to_string(),
        };
        Some(self.enter(to, at, severity, reason))
    }

    /// Counts one observation; returns the state it leads to, if it changes.
    fn next_state(&mut self, bad: bool, fire: u32, resolve: u32) -> Option<State> {
        let to = if bad {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
            let enough = self.consecutive_failures >= fire.max(1);
            match (self.state, enough) {
                (State::Ok | State::Resolved | State::Pending, true) => State::Firing,
                (State::Ok | State::Resolved, false) => State::Pending,
                (s, _) => s,
            }
        } else {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
            let enough = self.consecutive_successes >= resolve.max(1);
            match (self.state, enough) {
                (State::Pending, _) => State::Ok,
                (State::Firing, true) => State::Resolved,
                (s, _) => s,
            }
        };
        (to != self.state).then_some(to)
    }

    fn enter(
        &mut self,
        to: State,
        at: DateTime<Utc>,
        severity: Severity,
        reason: String,
    ) -> Transition {
        self.severity = severity;
        let t = Transition {
            key: self.key.clone(),
            from: self.state,
            to,
            at,
            reason,
        };
        self.state = to;
        self.since = at;
        match to {
            State::Firing => {
                self.fired_at = Some(at);
                self.resolved_at = None;
            }
            State::Resolved => self.resolved_at = Some(at),
            _ => {}
        }
        t
    }

    /// Whether the alert needs a row: anything but a quiet ok.
    pub fn is_active(&self) -> bool {
        matches!(self.state, State::Pending | State::Firing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::ErrorClass;

    fn err() -> ProbeError {
        ProbeError {
            class: ErrorClass::HttpStatus,
            message: "status: expected 2xx, got 503".into(),
        }
    }

    fn run(a: &mut Alert, fails: &[bool]) -> Vec<(State, State)> {
        let p = Policy::default();
        let e = err();
        fails
            .iter()
            .filter_map(|f| a.observe(f.then_some(&e), Utc::now(), &p))
            .map(|t| (t.from, t.to))
            .collect()
    }

    #[test]
    fn three_failures_fire_and_two_successes_resolve() {
        let mut a = Alert::new("api", "failing", "local", Severity::Page, Utc::now());
        let t = run(&mut a, &[true, true, true, true, false, false]);
        assert_eq!(
            t,
            [
                (State::Ok, State::Pending),
                (State::Pending, State::Firing),
                (State::Firing, State::Resolved)
            ]
        );
        assert!(a.fired_at.is_some() && a.resolved_at.is_some());
    }

    #[test]
    fn a_blip_never_fires() {
        let mut a = Alert::new("api", "failing", "local", Severity::Page, Utc::now());
        let t = run(&mut a, &[true, false, true, true, false, false, true]);
        assert!(t.iter().all(|(_, to)| *to != State::Firing), "{t:?}");
        assert_eq!(a.state, State::Pending);
    }

    #[test]
    fn a_failure_between_successes_keeps_it_firing() {
        let mut a = Alert::new("api", "failing", "local", Severity::Page, Utc::now());
        let t = run(&mut a, &[true, true, true, false, true, false]);
        assert_eq!(t.last(), Some(&(State::Pending, State::Firing)));
        assert_eq!(a.state, State::Firing);
    }

    #[test]
    fn after_resolving_the_next_failures_start_a_new_incident() {
        let mut a = Alert::new("api", "failing", "local", Severity::Page, Utc::now());
        run(&mut a, &[true, true, true, false, false]);
        let t = run(&mut a, &[true, true, true]);
        assert_eq!(
            t,
            [
                (State::Resolved, State::Pending),
                (State::Pending, State::Firing)
            ]
        );
    }
}
