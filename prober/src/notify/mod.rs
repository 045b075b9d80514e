//! Notifications: the content of a notification, how it is rendered for
//! each receiver (webhook, Slack, PagerDuty, Alertmanager), the outbox and
//! its delivery worker.
//!
//! Alerting owes on-call a [`Notice`](crate::alert::Notice) with some
//! changes; [`outbox::Outbox`] turns it into one notification per routed
//! receiver in the same transaction as the alert's state change; [`worker`]
//! delivers them. Receivers are configuration ([`crate::config::receivers`]).

pub mod direct;
pub mod outbox;
pub mod render;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Event, LastFailure, ProbeInfo, State};
use crate::config::receivers::Receiver;
use crate::config::settings::Settings;

/// Where notifications go: the receivers and the dashboard link of `prober.yaml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    pub receivers: Vec<Receiver>,
    /// `{probe}` is replaced by the probe's name.
    pub dashboard_url: Option<String>,
    /// `{trace_id}` is replaced by the last failed run's trace id.
    pub trace_url: Option<String>,
}

impl Routing {
    pub fn from_settings(s: &Settings) -> Routing {
        Routing {
            receivers: s.receivers.clone(),
            dashboard_url: s.dashboard_url.clone(),
            trace_url: s.trace_url.clone(),
        }
    }
}

/// The routing now in force, shared by the outbox and the worker; replaced
/// when prober.yaml is reloaded. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Receivers(Arc<RwLock<Arc<Routing>>>);

impl Receivers {
    pub fn new(routing: Routing) -> Receivers {
        Receivers(Arc::new(RwLock::new(Arc::new(routing))))
    }

    /// The routing of these settings.
    pub fn from_settings(s: &Settings) -> Receivers {
        Receivers::new(Routing::from_settings(s))
    }

    /// Replaces the routing with that of reloaded settings.
    pub fn reload(&self, s: &Settings) {
        self.set(Routing::from_settings(s));
    }

    /// The routing now in force (a snapshot: a reload does not change it).
    pub fn get(&self) -> Arc<Routing> {
        self.0.read().clone()
    }

    /// Replaces the routing (a reloaded prober.yaml).
    pub fn set(&self, routing: Routing) {
        *self.0.write() = Arc::new(routing);
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
    /// The last failed run's trace in the tracing backend (`trace_url` with its trace id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
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
    routing: &Routing,
) -> Content {
    let last_failure = a.last_failure.as_deref().cloned();
    let trace_id = last_failure.as_ref().and_then(|f| f.trace_id.as_deref());
    let trace_url = (routing.trace_url.as_deref())
        .zip(trace_id)
        .map(|(t, id)| crate::config::settings::trace_link(t, id));
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
        last_failure,
        description: info.description.clone(),
        runbook_url: info.runbook.clone(),
        dashboard_url: dashboard(routing.dashboard_url.as_deref(), &a.probe),
        trace_url,
        labels: info.labels.clone(),
        suppressed_dependents: info.dependents.clone(),
    }
}
