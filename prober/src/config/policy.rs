//! Alert policy as configured: when each rule fires and resolves
//! ([`Policy`], from `alerting:` in prober.yaml, `alerting.by_label` and a
//! probe's own `alert:`), and silences ([`Silence`]: label matchers with a
//! start and an end, or a recurring cron window) with their validation.
//! The alert engine applies them; config only defines and checks them.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    /// Severity of `trend` (default ticket: a trend is rarely an emergency).
    pub trend_severity: Severity,
}

/// Fires when the quantile of the total latency over the last `over` exceeds `above`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyRule {
    /// 0 < quantile < 1, e.g. 0.99.
    pub quantile: f64,
    pub above: Duration,
    /// The window, whole minutes (the bins' step).
    pub over: Duration,
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
            trend_severity: Severity::Ticket,
        }
    }
}

/// Matcher keys that name the alert rather than a probe label.
pub const ALERT_KEYS: [&str; 4] = ["probe", "rule", "location", "severity"];

/// Most matchers in one silence.
pub const MAX_MATCHERS: usize = 32;
/// Longest matcher name, in characters.
pub const MAX_MATCHER_NAME: usize = 128;
/// Longest matcher value, in characters.
pub const MAX_MATCHER_VALUE: usize = 1024;
/// Longest `comment`, in characters.
pub const MAX_COMMENT: usize = 1024;
/// Longest `created_by`, in characters.
pub const MAX_CREATED_BY: usize = 256;
/// Longest recurring window (`duration_ms`).
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 86_400);

/// A matcher name: a letter or `_`, then letters, digits, `_`, `-`, `.` or `/`.
pub fn valid_matcher_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && name.chars().count() <= MAX_MATCHER_NAME
}

/// A text field's problem, if any: too long, a NUL, or (unless `multiline`) another control character.
fn text_problem(field: &str, text: &str, max: usize, multiline: bool) -> Option<String> {
    if text.chars().count() > max {
        return Some(format!("{field}: longer than {max} characters"));
    }
    let bad = text.chars().find(|c| {
        *c == '\0' || (c.is_control() && !(multiline && matches!(c, '\n' | '\t' | '\r')))
    });
    bad.map(|c| format!("{field}: holds the control character {c:?}; remove it"))
}

/// An open-ended silence ends at [`DateTime::MAX_UTC`], which RFC 3339 cannot
/// write (years stop at 9999): it is written as null.
fn ends_at_or_null<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    if is_open_end(t) {
        s.serialize_none()
    } else {
        s.serialize_some(t)
    }
}

fn null_or_ends_at<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    Ok(Option::<DateTime<Utc>>::deserialize(d)?.unwrap_or(DateTime::<Utc>::MAX_UTC))
}

/// Past year 9999: an open end (RFC 3339 has four-digit years).
pub fn is_open_end(t: &DateTime<Utc>) -> bool {
    use chrono::Datelike;
    t.year() > 9999
}

/// One silence, from `prober.yaml` or the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    /// A UUID for API silences; `file:<index>` for those from prober.yaml.
    pub id: String,
    /// Every matcher must equal: `probe`, `rule`, `location`, `severity`, or a probe label.
    pub matchers: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    /// The end; null for a recurring window without one (open-ended).
    #[serde(
        serialize_with = "ends_at_or_null",
        deserialize_with = "null_or_ends_at"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
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
        if self.matchers.len() > MAX_MATCHERS {
            return Err(format!(
                "matchers: {} given, at most {MAX_MATCHERS}",
                self.matchers.len()
            ));
        }
        for (k, v) in &self.matchers {
            if !valid_matcher_name(k) {
                return Err(format!(
                    "matchers: {k:?} is not a matcher name: a letter or _, then letters, digits, _ - . or /, at most {MAX_MATCHER_NAME} characters"
                ));
            }
            if let Some(p) = text_problem(&format!("matchers.{k}"), v, MAX_MATCHER_VALUE, false) {
                return Err(p);
            }
        }
        if let Some(p) = text_problem("comment", &self.comment, MAX_COMMENT, true)
            .or_else(|| text_problem("created_by", &self.created_by, MAX_CREATED_BY, false))
        {
            return Err(p);
        }
        if is_open_end(&self.starts_at) {
            return Err("starts_at: after year 9999".into());
        }
        if is_open_end(&self.ends_at) && self.cron.is_none() {
            return Err(
                "ends_at: after year 9999; only a recurring window may be open-ended".into(),
            );
        }
        if self
            .duration_ms
            .is_some_and(|d| u128::from(d) > MAX_WINDOW.as_millis())
        {
            return Err(format!(
                "a recurring window stays open at most {} days",
                MAX_WINDOW.as_secs() / 86_400
            ));
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
        let Some(from) = now.checked_sub_signed(len) else {
            return false;
        };
        schedule.after(&from).next().is_some_and(|open| open <= now)
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
    fn bad_matchers_and_texts_are_refused_before_they_reach_postgres() {
        type Matchers<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Matchers, &str, &str); 6] = [
            (&[("probe", "a\0b")], "c", "control character"),
            (&[("probe", "a\nb")], "c", "control character"),
            (&[("no spaces", "x")], "c", "matcher name"),
            (&[("9lives", "x")], "c", "matcher name"),
            (&[("probe", "x")], "c\0", "comment"),
            (&[("probe", "x")], "   ", "comment"),
        ];
        for (matchers, comment, words) in cases {
            let mut s = silence(matchers);
            s.comment = comment.into();
            let e = s.validate().unwrap_err();
            assert!(e.contains(words), "{matchers:?} {comment:?}: {e}");
        }
        let mut s = silence(&[("team-name/sub.x", "v")]);
        s.comment = "line one\nline two".into();
        assert_eq!(s.validate(), Ok(()));
        s.matchers = (0..=MAX_MATCHERS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(s.validate().unwrap_err().contains("at most"));
    }

    #[test]
    fn an_open_end_is_written_as_null_and_read_back() {
        let mut s = silence(&[("probe", "x")]);
        s.cron = Some("0 0 2 * * Sun".into());
        s.duration_ms = Some(3_600_000);
        s.ends_at = DateTime::<Utc>::MAX_UTC;
        assert_eq!(s.validate(), Ok(()));
        let v = serde_json::to_value(&s).unwrap();
        assert!(v["ends_at"].is_null(), "{v}");
        let back: Silence = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        s.cron = None;
        s.duration_ms = None;
        assert!(s.validate().unwrap_err().contains("open-ended"));
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
