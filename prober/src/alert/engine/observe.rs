//! The per-run rules: `failing` and `cert_expiry`, at this replica's
//! location, evaluated on every run of the probe.

use chrono::{DateTime, Utc};

use super::{AlertEngine, AlertMap, Observed, ProbeEntry, RULE_CERT_EXPIRY, RULE_FAILING};
use crate::alert::{rules, Alert, Before, Change, Severity, State, Transition};

impl AlertEngine {
    /// The alerts a run moves: `failing`, and `cert_expiry` when the run saw a certificate.
    pub(super) fn observe(&self, r: &Observed) -> Vec<Change> {
        let name = r.probe.name.as_str();
        let Some(entry) = self.entry(name) else {
            return Vec::new();
        };
        let policy = entry.policy;
        if !policy.enabled {
            return Vec::new();
        }
        let at = r.at;
        let cfg = self.cfg();
        let loc = cfg.location.as_str();
        let mut alerts = self.alerts.lock();
        let mut changes = Vec::new();

        let key = format!("{name}/{RULE_FAILING}/{loc}");
        let mut alert = alerts.remove(&key).unwrap_or_else(|| {
            let a = Alert::new(name, RULE_FAILING, loc, policy.severity, at);
            Box::new(a)
        });
        let before = Before::of(&alert);
        let error = r.failure.as_ref().map(|f| &f.0);
        if let Some(e) = error {
            alert.last_error = Some(e.clone());
        }
        let t = alert.observe(&rules::failing(error, &policy), at);
        if t.as_ref().is_some_and(starts_incident) {
            alert.failed_runs = 0;
            alert.last_failure = None;
        }
        if let Some(f) = &r.failure {
            alert.failed_runs = alert.failed_runs.saturating_add(1);
            alert.last_failure = Some(Box::new(f.1.clone()));
        }
        let moved = Moved { t, before };
        self.settle(&mut alerts, alert, moved, &entry, at, &mut changes);

        if let Some(v) = rules::cert_expiry(r.cert.as_deref(), &policy) {
            let key = format!("{name}/{RULE_CERT_EXPIRY}/{loc}");
            let mut alert = alerts.remove(&key).unwrap_or_else(|| {
                let a = Alert::new(name, RULE_CERT_EXPIRY, loc, Severity::Ticket, at);
                Box::new(a)
            });
            let before = Before::of(&alert);
            let t = alert.evaluate(&v, at);
            let moved = Moved { t, before };
            self.settle(&mut alerts, alert, moved, &entry, at, &mut changes);
        }
        changes
    }

    /// After an evaluation: the notice of its transition, a change to save
    /// unless the alert is and was a quiet ok, and the alert back in the map.
    pub(super) fn settle(
        &self,
        alerts: &mut AlertMap,
        mut alert: Box<Alert>,
        moved: Moved,
        entry: &ProbeEntry,
        now: DateTime<Utc>,
        changes: &mut Vec<Change>,
    ) {
        let notice = match &moved.t {
            Some(t) => self.on_transition(alerts, &mut alert, t, entry, now),
            None => None,
        };
        if moved.t.is_some() || moved.before.was_active() || alert.is_active() {
            changes.push(Change {
                alert: Alert::clone(&alert),
                transition: moved.t,
                notice,
                before: moved.before,
            });
        }
        alerts.insert(alert.key.clone(), alert);
    }
}

/// What an evaluation did to an alert: its transition, and the alert before.
pub(super) struct Moved {
    pub t: Option<Transition>,
    pub before: Before,
}

/// Whether a transition begins a new incident (its failed-run count starts over).
fn starts_incident(t: &Transition) -> bool {
    t.to == State::Pending || (t.to == State::Firing && t.from != State::Pending)
}
