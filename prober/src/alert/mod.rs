//! Alerting for on-call: the alert state machine (ok → pending → firing →
//! resolved), persisted in Postgres with every transition, fed by every run.
//!
//! Rules: `failing` (consecutive failed runs, per location) and
//! `cert_expiry` (per run, per location) are evaluated on every run;
//! `latency` (a quantile over a window from merged bins) and the SLO
//! burn-rate rules `slo_page`/`slo_ticket` are evaluated periodically from
//! Postgres across all locations, by the one replica holding the evaluator
//! lock. Silences and `depends_on` hold back notifications, never state.
//!
//! Layout: the rules are pure functions (`rules.rs`, `burn.rs`) of inputs
//! and the policy (configuration: [`crate::config::policy`]); this file is
//! the state machine; `engine/` runs it; `persist.rs` is alerting's SQL;
//! `change.rs` is what a change owes on-call. Alerting knows nothing of
//! receivers: notify implements [`NoticeWriter`] and imports alert, never
//! the other way.

pub mod burn;
pub mod change;
pub mod engine;
pub mod persist;
pub mod rules;
pub mod silence;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::config::policy::{Policy, Severity};
use crate::run::ProbeError;
pub use change::{Before, Change, Event, LastFailure, Notice, NoticeWriter, ProbeInfo};
pub use rules::Verdict;

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
    pub last_failure: Option<Box<LastFailure>>,
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

    /// Takes one run's [`rules::failing`] verdict into account (its
    /// thresholds are the policy's consecutive counts); returns the
    /// transition it caused, if any. The reason counts the runs.
    pub fn observe(&mut self, v: &Verdict, at: DateTime<Utc>) -> Option<Transition> {
        self.severity = v.severity;
        let (fire, resolve) = v.thresholds;
        let to = self.next_state(v.bad.is_some(), fire, resolve)?;
        let reason = match (to, &v.bad) {
            (State::Firing, Some(e)) => format!(
                "{} consecutive failed runs; last: {e}",
                self.consecutive_failures
            ),
            (State::Pending, Some(e)) => format!("a failed run ({e})"),
            (State::Resolved, _) => {
                format!("{} consecutive successful runs", self.consecutive_successes)
            }
            (State::Ok, _) => "recovered before firing".to_string(),
            _ => String::new(),
        };
        Some(self.enter(to, at, v.severity, reason))
    }

    /// Takes one evaluation of a condition into account: fires after
    /// `v.thresholds.0` bad verdicts in a row, resolves after `.1` good ones;
    /// the transition's reason is the verdict's.
    pub fn evaluate(&mut self, v: &Verdict, at: DateTime<Utc>) -> Option<Transition> {
        let (fire, resolve) = v.thresholds;
        let to = self.next_state(v.bad.is_some(), fire, resolve)?;
        let reason = match (to, &v.bad) {
            (State::Firing | State::Pending, Some(r)) => r.clone(),
            _ => v.good.clone(),
        };
        Some(self.enter(to, at, v.severity, reason))
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
            .filter_map(|f| a.observe(&rules::failing(f.then_some(&e), &p), Utc::now()))
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
