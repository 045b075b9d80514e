//! Silences and maintenance windows: label matchers with a start and an end,
//! or a recurring cron window. A silenced alert still changes state and is
//! recorded; its notifications are held back until the silence ends.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Alert;

/// Matcher keys that name the alert rather than a probe label.
pub const ALERT_KEYS: [&str; 4] = ["probe", "rule", "location", "severity"];

/// One silence, from `prober.yaml` or the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    /// A UUID for API silences; `file:<index>` for those from prober.yaml.
    pub id: String,
    /// Every matcher must equal: `probe`, `rule`, `location`, `severity`, or a probe label.
    pub matchers: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// A recurring window: it opens at each time of this cron expression
    /// (with seconds, UTC) between `starts_at` and `ends_at` ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// ... and stays open this long, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub comment: String,
    pub created_by: String,
    /// `file` or `api`.
    pub source: String,
}

impl Silence {
    /// Checks a silence before it is stored or applied; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.matchers.is_empty() {
            return Err("matchers: give at least one (e.g. {\"probe\": \"checkout\"}); a silence of everything is refused".into());
        }
        if let Some((k, _)) = self
            .matchers
            .iter()
            .find(|(k, v)| k.is_empty() || v.is_empty())
        {
            return Err(format!("matchers: {k:?} has an empty name or value"));
        }
        if self.ends_at <= self.starts_at {
            return Err(format!(
                "ends_at ({}) must be after starts_at ({})",
                self.ends_at.to_rfc3339(),
                self.starts_at.to_rfc3339()
            ));
        }
        if self.comment.trim().is_empty() {
            return Err("comment: say why (it is shown with the held-back alert)".into());
        }
        match (&self.cron, self.duration_ms) {
            (None, None) => Ok(()),
            (Some(c), Some(d)) if d > 0 => cron::Schedule::from_str(c).map(|_| ()).map_err(|e| {
                format!("cron: {c:?} is not a cron expression ({e}); it has seconds first, e.g. \"0 0 2 * * Sun\"")
            }),
            _ => Err("cron and duration go together: a recurring window needs both (duration > 0)".into()),
        }
    }

    /// Whether the silence holds at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        if now < self.starts_at || now >= self.ends_at {
            return false;
        }
        let (Some(expr), Some(ms)) = (&self.cron, self.duration_ms) else {
            return true;
        };
        let Ok(schedule) = cron::Schedule::from_str(expr) else {
            return false;
        };
        let len = chrono::Duration::from_std(Duration::from_millis(ms))
            .unwrap_or(chrono::Duration::zero());
        // The window open at `now` is the one that opened in (now - len, now].
        let from = now - len;
        schedule.after(&from).next().is_some_and(|open| open <= now)
    }

    /// Whether the silence covers this alert of a probe with these labels.
    pub fn matches(&self, a: &Alert, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|(k, v)| {
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

    /// How a held-back alert names this silence.
    pub fn describe(&self) -> String {
        format!(
            "silenced by {} ({}): {}",
            self.id, self.created_by, self.comment
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;
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
    fn a_silence_holds_between_start_and_end() {
        let s = silence(&[("probe", "api")]);
        assert!(!s.active_at(at(0, 59)));
        assert!(s.active_at(at(1, 0)));
        assert!(s.active_at(at(2, 59)));
        assert!(!s.active_at(at(3, 0)));
    }

    #[test]
    fn matchers_read_alert_fields_and_labels() {
        let a = Alert::new("api", "failing", "eu", Severity::Page, at(1, 0));
        let labels: BTreeMap<String, String> = [("team".to_string(), "pay".to_string())].into();
        assert!(silence(&[("probe", "api")]).matches(&a, &labels));
        assert!(silence(&[("team", "pay"), ("severity", "page")]).matches(&a, &labels));
        assert!(!silence(&[("team", "web")]).matches(&a, &labels));
        assert!(!silence(&[("probe", "api"), ("location", "us")]).matches(&a, &labels));
        assert!(!silence(&[("missing", "x")]).matches(&a, &labels));
    }

    #[test]
    fn a_recurring_window_opens_at_each_cron_time_for_its_duration() {
        // Every day at 02:00 UTC for 30 minutes, for the whole of November 29.
        let mut s = silence(&[("team", "pay")]);
        s.starts_at = at(0, 0);
        s.ends_at = at(23, 59);
        s.cron = Some("0 0 2 * * *".into());
        s.duration_ms = Some(30 * 60 * 1000);
        assert!(s.validate().is_ok());
        assert!(!s.active_at(at(1, 59)));
        assert!(s.active_at(at(2, 0)));
        assert!(s.active_at(at(2, 29)));
        assert!(!s.active_at(at(2, 30)));
        assert!(!s.active_at(at(12, 0)));
    }

    #[test]
    fn validation_refuses_what_cannot_work() {
        let mut s = silence(&[]);
        assert!(s.validate().unwrap_err().contains("at least one"));
        s = silence(&[("probe", "api")]);
        s.ends_at = s.starts_at;
        assert!(s.validate().unwrap_err().contains("must be after"));
        s = silence(&[("probe", "api")]);
        s.cron = Some("not cron".into());
        s.duration_ms = Some(1000);
        assert!(s.validate().unwrap_err().contains("not a cron expression"));
        s.duration_ms = None;
        assert!(s.validate().unwrap_err().contains("go together"));
        s = silence(&[("probe", "api")]);
        s.comment = " ".into();
        assert!(s.validate().unwrap_err().contains("comment"));
    }
}
