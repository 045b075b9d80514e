//! What on-call is owed: suppression (silences, k-of-n, a firing
//! upstream) holds a trigger back; a held-back trigger is released once its
//! reason ends; reminders repeat while an alert keeps firing. The state
//! change is always recorded: these decide only the [`Notice`].

use chrono::{DateTime, Utc};

use super::{AlertEngine, AlertMap, ProbeEntry, ALL_LOCATIONS, RULE_FAILING};
use crate::alert::silence;
use crate::alert::{Alert, Before, Change, Event, Notice, State, Transition};

/// A notice of `event` for the probe of `entry`.
fn notice(event: Event, reason: String, entry: &ProbeEntry) -> Notice {
    Notice {
        event,
        reason,
        probe: entry.info.clone(),
    }
}

impl AlertEngine {
    /// The resolve of an incident paged provisionally (before the saved
    /// state was read) that the saved state does not hold.
    pub(super) fn withdrawal(&self, paged: &Alert) -> (Alert, Notice) {
        let entry = self.entry(&paged.probe).unwrap_or_default();
        let mut a = paged.clone();
        a.state = State::Resolved;
        a.resolved_at = Some(Utc::now());
        let n = notice(
            Event::Resolve,
            "paged while the saved alert state could not be read (Postgres away at start); the saved state holds this alert under its own notification".into(),
            &entry,
        );
        (a, n)
    }

    /// The trigger notice of `a` (to forget a provisional one sent directly).
    pub(super) fn trigger_of(&self, a: &Alert) -> Notice {
        let entry = self.entry(&a.probe).unwrap_or_default();
        notice(Event::Trigger, String::new(), &entry)
    }

    /// Why notifications of this alert are held back now, if they are: an
    /// active silence that matches it, or an upstream (`depends_on`) firing.
    fn suppression(
        &self,
        alerts: &AlertMap,
        a: &Alert,
        entry: &ProbeEntry,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let info = &entry.info;
        let k = entry.policy.min_locations;
        if k > 1 && a.rule == RULE_FAILING && a.location != ALL_LOCATIONS {
            return Some(format!(
                "pages only when {k} locations fail at once (min_locations); {}/{RULE_FAILING}/{ALL_LOCATIONS} notifies",
                a.probe
            ));
        }
        let api = self.api_silences.read();
        let cfg = self.cfg();
        let silenced = (cfg.silences.iter().chain(api.iter()))
            .find(|s| silence::silences(s, a, &info.labels, now));
        if let Some(s) = silenced {
            return Some(s.describe());
        }
        info.depends_on.iter().find_map(|d| {
            alerts
                .values()
                .find(|u| &u.probe == d && u.state == State::Firing)
                .map(|u| format!("upstream probe {d} is firing ({})", u.key))
        })
    }

    /// The notice a transition owes. A trigger is held back while the alert
    /// is silenced or an upstream fires; a resolve follows only a trigger
    /// that was recorded.
    pub(super) fn on_transition(
        &self,
        alerts: &AlertMap,
        a: &mut Alert,
        t: &Transition,
        entry: &ProbeEntry,
        now: DateTime<Utc>,
    ) -> Option<Notice> {
        tracing::warn!(alert = %t.key, from = t.from.as_str(), to = t.to.as_str(), reason = %t.reason, "alert changed state");
        match t.to {
            State::Firing => {
                if let Some(why) = self.suppression(alerts, a, entry, now) {
                    tracing::info!(alert = %a.key, reason = %why, "alert fires; its notification is held back");
                    a.notified = false;
                    a.suppressed = Some(why);
                    return None;
                }
                a.notified = true;
                a.suppressed = None;
                a.last_notified_at = Some(now);
                Some(notice(Event::Trigger, t.reason.clone(), entry))
            }
            State::Resolved => {
                let n = a
                    .notified
                    .then(|| notice(Event::Resolve, t.reason.clone(), entry));
                a.notified = false;
                a.suppressed = None;
                n
            }
            State::Ok | State::Pending => None,
        }
    }

    /// Held-back triggers whose reason ended, and reminders, for the alerts
    /// this replica owns (its location; `all` too while it is the evaluator).
    pub(super) fn release_and_remind(&self, now: DateTime<Utc>) -> Vec<Change> {
        let cfg = self.cfg();
        let leader = self.is_leader();
        let mut alerts = self.alerts.lock();
        let keys: Vec<String> = (alerts.values())
            .filter(|a| a.state == State::Firing)
            .filter(|a| a.location == cfg.location || (leader && a.location == ALL_LOCATIONS))
            .map(|a| a.key.clone())
            .collect();
        let mut changes = Vec::new();
        for key in keys {
            let Some(mut a) = alerts.remove(&key) else {
                continue;
            };
            let entry = self.entry(&a.probe).unwrap_or_default();
            let before = Before::of(&a);
            let change = if a.notified {
                remind(&mut a, cfg.remind_every, &entry, now)
            } else {
                let why = self.suppression(&alerts, &a, &entry, now);
                release(&mut a, why, &entry, now)
            };
            changes.extend(change.map(|c| Change { before, ..c }));
            alerts.insert(key, a);
        }
        changes
    }
}

/// A held-back trigger: sent now if nothing holds it back any more (`why`
/// is `None`), or the new reason recorded if it changed.
fn release(
    a: &mut Alert,
    why: Option<String>,
    entry: &ProbeEntry,
    now: DateTime<Utc>,
) -> Option<Change> {
    if why.is_none() {
        a.notified = true;
        a.suppressed = None;
        a.last_notified_at = Some(now);
        let reason = format!(
            "still firing after the notification was held back; {}",
            a.last_error.as_ref().map_or(String::new(), |e| format!(
                "last: {}: {}",
                e.class, e.message
            ))
        );
        tracing::warn!(alert = %a.key, "held-back alert released: notifying");
        let n = notice(Event::Trigger, reason, entry);
        return Some(change(a, Some(n)));
    }
    if why != a.suppressed {
        a.suppressed = why;
        return Some(change(a, None));
    }
    None
}

/// A reminder of a firing, notified alert, when `every` has passed since the last notice.
fn remind(
    a: &mut Alert,
    every: Option<std::time::Duration>,
    entry: &ProbeEntry,
    now: DateTime<Utc>,
) -> Option<Change> {
    let every = every?;
    let due = a.last_notified_at.is_none_or(|last| {
        now - last >= chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX)
    });
    if !due {
        return None;
    }
    a.last_notified_at = Some(now);
    let since = a.fired_at.unwrap_or(a.since);
    let reason = format!("still firing since {}", since.to_rfc3339());
    let n = notice(Event::Remind, reason, entry);
    Some(change(a, Some(n)))
}

/// A change without a transition; `before` is the alert as it is now
/// ([`AlertEngine::release_and_remind`] sets it to the alert before).
fn change(a: &Alert, notice: Option<Notice>) -> Change {
    Change {
        alert: a.clone(),
        transition: None,
        notice,
        before: Before::of(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::Severity;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, h, m, 0).unwrap()
    }

    fn firing(last_notified_at: Option<DateTime<Utc>>) -> Alert {
        let mut a = Alert::new("api", "failing", "eu", Severity::Page, at(1, 0));
        a.state = State::Firing;
        a.fired_at = Some(at(1, 0));
        a.notified = true;
        a.last_notified_at = last_notified_at;
        a
    }

    #[test]
    fn a_reminder_is_due_once_every_period_after_the_last_notice() {
        let e = ProbeEntry::default();
        let hour = Some(std::time::Duration::from_secs(3_600));
        // (last notice, remind_every, now, reminded)
        let cases = [
            (Some(at(1, 0)), hour, at(1, 59), false),
            (Some(at(1, 0)), hour, at(2, 0), true), // boundary: exactly one period
            (Some(at(1, 0)), hour, at(5, 0), true),
            (None, hour, at(1, 1), true),
            (Some(at(1, 0)), None, at(9, 0), false), // reminders off
        ];
        for (last, every, now, want) in cases {
            let mut a = firing(last);
            let c = remind(&mut a, every, &e, now);
            assert_eq!(c.is_some(), want, "{last:?} {every:?} {now}");
            if let Some(c) = c {
                let n = c.notice.unwrap();
                assert_eq!(n.event, Event::Remind);
                assert_eq!(
                    n.reason,
                    format!("still firing since {}", at(1, 0).to_rfc3339())
                );
                assert_eq!(c.alert.last_notified_at, Some(now));
            }
        }
    }

    #[test]
    fn a_held_back_trigger_is_released_when_its_reason_ends_and_only_then() {
        let e = ProbeEntry::default();
        let mut a = firing(None);
        a.notified = false;
        a.suppressed = Some("silenced by s1".into());

        let same = release(&mut a, Some("silenced by s1".into()), &e, at(2, 0));
        assert_eq!(same, None, "nothing changed, nothing to save");
        let other = release(
            &mut a,
            Some("upstream probe db is firing".into()),
            &e,
            at(2, 0),
        );
        let other = other.unwrap();
        assert_eq!(
            other.notice, None,
            "still held back: the new reason is saved"
        );
        assert_eq!(
            other.alert.suppressed.as_deref(),
            Some("upstream probe db is firing")
        );

        let released = release(&mut a, None, &e, at(3, 0)).unwrap();
        assert_eq!(released.notice.map(|n| n.event), Some(Event::Trigger));
        assert!(a.notified && a.suppressed.is_none());
        assert_eq!(a.last_notified_at, Some(at(3, 0)));
    }
}
