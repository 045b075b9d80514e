//! Applying silences: which alert a silence covers. A silenced alert still
//! changes state and is recorded; its notifications are held back until the
//! silence ends. The silence itself (matchers, windows, validation) is
//! configuration: [`crate::config::policy::Silence`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::Alert;
use crate::config::policy::Silence;

/// Whether `s` holds at `now` and covers alert `a` of a probe with these labels.
pub fn silences(
    s: &Silence,
    a: &Alert,
    labels: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> bool {
    s.active_at(now) && covers(s, a, labels)
}

/// Whether every matcher of `s` equals the alert's field (`probe`, `rule`,
/// `location`, `severity`) or the probe's label of that name.
pub fn covers(s: &Silence, a: &Alert, labels: &BTreeMap<String, String>) -> bool {
    s.matchers.iter().all(|(k, v)| {
        let actual = match k.as_str() {
            "probe" => Some(a.probe.as_str()),
            "rule" => Some(a.rule.as_str()),
            "location" => Some(a.location.as_str()),
            "severity" => Some(a.severity.as_str()),
            label => labels.get(label).map(String::as_str),
        };
        actual == Some(v.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::Severity;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, h, m, 0).unwrap()
    }

    fn silence(matchers: &[(&str, &str)]) -> Silence {
        Silence {
            id: "s1".into(),
            matchers: matchers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts_at: at(1, 0),
            ends_at: at(3, 0),
            cron: None,
            duration_ms: None,
            comment: "db upgrade".into(),
            created_by: "ops".into(),
            source: "api".into(),
        }
    }

    #[test]
    fn matchers_read_alert_fields_and_labels() {
        let a = Alert::new("api", "failing", "eu", Severity::Page, at(1, 0));
        let labels: BTreeMap<String, String> = [("team".to_string(), "pay".to_string())].into();
        let cases: [(&[(&str, &str)], bool); 5] = [
            (&[("probe", "api")], true),
            (&[("team", "pay"), ("severity", "page")], true),
            (&[("team", "web")], false),
            (&[("probe", "api"), ("location", "us")], false),
            (&[("missing", "x")], false),
        ];
        for (matchers, want) in cases {
            assert_eq!(
                covers(&silence(matchers), &a, &labels),
                want,
                "{matchers:?}"
            );
        }
    }

    #[test]
    fn a_silence_holds_back_only_while_it_is_active() {
        let a = Alert::new("api", "failing", "eu", Severity::Page, at(1, 0));
        let s = silence(&[("probe", "api")]);
        let labels = BTreeMap::new();
        assert!(!silences(&s, &a, &labels, at(0, 59)));
        assert!(silences(&s, &a, &labels, at(2, 0)));
        assert!(!silences(&s, &a, &labels, at(3, 0)));
    }
}
