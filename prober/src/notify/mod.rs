//! Notifications: receivers (webhook, Slack, PagerDuty, Alertmanager), the
//! content of a notification, and how it is rendered for each receiver.
//!
//! A notification is recorded in the outbox (`notifications`) in the same
//! transaction as the alert's state change; [`worker`] delivers it.

pub mod render;
pub mod worker;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, State};
use crate::run::{Phases, ProbeError};

/// The kinds of receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverKind {
    Webhook,
    Slack,
    PagerDuty,
    Alertmanager,
}

impl ReceiverKind {
    pub fn parse(s: &str) -> Option<ReceiverKind> {
        match s {
            "webhook" => Some(ReceiverKind::Webhook),
            "slack" => Some(ReceiverKind::Slack),
            "pagerduty" => Some(ReceiverKind::PagerDuty),
            "alertmanager" => Some(ReceiverKind::Alertmanager),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Webhook => "webhook",
            ReceiverKind::Slack => "slack",
            ReceiverKind::PagerDuty => "pagerduty",
            ReceiverKind::Alertmanager => "alertmanager",
        }
    }
}

/// PagerDuty's Events API v2 endpoint, used when a pagerduty receiver sets no url.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// A receiver from `prober.yaml`, with `${env:NAME}` already substituted.
#[derive(Clone, PartialEq, Eq)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: String,
    /// Webhook: the HMAC-SHA256 key of `X-Prober-Signature`.
    pub secret: Option<String>,
    /// PagerDuty: the integration's routing key.
    pub routing_key: Option<String>,
    /// Only alerts of probes with all these labels; empty = all.
    pub labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &origin(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field(
                "routing_key",
                &self.routing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("labels", &self.labels)
            .finish()
    }
}

impl Receiver {
    /// Whether alerts of a probe with these labels go to this receiver.
    pub fn routes(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Where the notification is POSTed.
    pub fn endpoint(&self) -> String {
        let base = self.url.trim_end_matches('/');
        match self.kind {
            ReceiverKind::Alertmanager if !base.ends_with("/api/v2/alerts") => {
                format!("{base}/api/v2/alerts")
            }
            ReceiverKind::PagerDuty if !base.ends_with("/v2/enqueue") => {
                format!("{base}/v2/enqueue")
            }
            _ => self.url.clone(),
        }
    }
}

/// The scheme, host and port of a URL: what logs and errors show of a
/// receiver's URL (a Slack webhook's path is its secret).
pub fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "<invalid url>".to_string(),
    }
}

/// Substitutes `${env:NAME}` in a setting; an unset variable is an error.
pub fn expand_env(field: &str, value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "{field}: unclosed ${{env:...}}; write it like ${{env:NAME}}"
            ));
        };
        let name = &after[..end];
        let v = std::env::var(name).map_err(|_| {
            format!("{field}: environment variable {name} is not set; set it or write the value in the file")
        })?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `trigger` when an alert fires, `resolve` when it resolves, `remind`
/// while it keeps firing (`alerting.remind_every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Trigger,
    Resolve,
    Remind,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Trigger => "trigger",
            Event::Resolve => "resolve",
            Event::Remind => "remind",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        match s {
            "trigger" => Some(Event::Trigger),
            "resolve" => Some(Event::Resolve),
            "remind" => Some(Event::Remind),
            _ => None,
        }
    }
}

/// What the probe was, for routing and content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeInfo {
    pub labels: BTreeMap<String, String>,
    pub runbook: Option<String>,
    pub description: Option<String>,
    /// Probes this one depends on (`depends_on`).
    pub depends_on: Vec<String>,
    /// Probes that depend on this one.
    pub dependents: Vec<String>,
}

/// The last failed run of an alert: what on-call needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastFailure {
    pub at: DateTime<Utc>,
    pub run_id: String,
    pub error_class: String,
    pub error: String,
    /// The scenario step that failed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The first expectation that failed (of the failed step in a scenario): expected vs actual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<crate::run::AssertionResult>,
    /// What was requested (method and URL; secrets are never part of it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    pub phases: Phases,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl LastFailure {
    pub fn of(r: &crate::run::RunRecord, e: &ProbeError) -> LastFailure {
        let o = &r.outcome;
        let failed_step = o.steps.iter().find(|s| s.error.is_some());
        let assertions = failed_step.map_or(&o.assertions, |s| &s.assertions);
        LastFailure {
            assertion: assertions.iter().find(|a| !a.passed).cloned(),
            request: failed_step.map_or(o.request.clone(), |s| s.request.clone()),
            at: r.started_at,
            run_id: r.run_id.to_string(),
            error_class: e.class.as_str().to_string(),
            error: e.message.clone(),
            step: failed_step.map(|s| s.name.clone()),
            phases: o.phases,
            trace_id: (!o.trace_id.is_empty()).then(|| o.trace_id.clone()),
        }
    }
}

/// The stored payload of a notification: everything the renderers need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    pub event: Event,
    pub alert_key: String,
    pub dedup_key: String,
    pub probe: String,
    pub rule: String,
    pub location: String,
    pub severity: String,
    pub state: String,
    pub since: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Consecutive failed runs (at firing; at resolve, those of the incident).
    pub failed_runs: u32,
    /// Why the state changed.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<LastFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Probes that declare `depends_on` this one: their alerts are held back while this fires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed_dependents: Vec<String>,
}

/// A notification to record with an alert's state change.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub receiver: String,
    pub event: Event,
    pub dedup_key: String,
    pub payload: serde_json::Value,
}

/// The dedup key of an alert's current incident: its key and when it fired.
pub fn dedup_key(a: &Alert) -> String {
    match a.fired_at {
        Some(t) => format!(
            "{}@{}",
            a.key,
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        None => a.key.clone(),
    }
}

/// The dashboard link for a probe: `{probe}` in the template replaced.
pub fn dashboard(template: Option<&str>, probe: &str) -> Option<String> {
    template.map(|t| t.replace("{probe}", probe))
}

/// Builds the content of a notification for an alert that just fired or resolved.
pub fn content(
    a: &Alert,
    event: Event,
    reason: &str,
    info: &ProbeInfo,
    dashboard_url: Option<&str>,
) -> Content {
    Content {
        event,
        alert_key: a.key.clone(),
        dedup_key: dedup_key(a),
        probe: a.probe.clone(),
        rule: a.rule.clone(),
        location: a.location.clone(),
        severity: a.severity.as_str().to_string(),
        state: a.state.as_str().to_string(),
        since: a.since,
        fired_at: a.fired_at,
        resolved_at: (a.state == State::Resolved)
            .then_some(a.resolved_at)
            .flatten(),
        failed_runs: a.failed_runs,
        reason: reason.to_string(),
        last_failure: a.last_failure.as_deref().cloned(),
        description: info.description.clone(),
        runbook_url: info.runbook.clone(),
        dashboard_url: dashboard(dashboard_url, &a.probe),
        labels: info.labels.clone(),
        suppressed_dependents: info.dependents.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_are_substituted_and_a_missing_one_is_an_error() {
        std::env::set_var("PROBER_TEST_NOTIFY_SECRET", "s3cret");
        assert_eq!(
            expand_env("x", "a${env:PROBER_TEST_NOTIFY_SECRET}b").ok(),
            Some("as3cretb".to_string())
        );
        let e = expand_env("receivers[0].secret", "${env:PROBER_TEST_SURELY_UNSET}");
        assert!(e.is_err_and(|e| e.contains("PROBER_TEST_SURELY_UNSET")));
    }

    #[test]
    fn routing_needs_every_label() {
        let r = Receiver {
            name: "r".into(),
            kind: ReceiverKind::Webhook,
            url: "http://127.0.0.1/".into(),
            secret: None,
            routing_key: None,
            labels: [("team".to_string(), "pay".to_string())].into(),
        };
        assert!(r.routes(&[("team".to_string(), "pay".to_string())].into()));
        assert!(!r.routes(&BTreeMap::new()));
        assert!(!r.routes(&[("team".to_string(), "web".to_string())].into()));
    }
}
