//! What a change of an alert tells the rest of the daemon: the [`Change`]
//! to save (the alert, its transition, and the [`Notice`] on-call is owed),
//! and [`NoticeWriter`], the one way notices leave alerting. The engine knows
//! nothing of receivers: a higher layer (notify's outbox) implements
//! `NoticeWriter` and turns each notice into notifications inside the
//! transaction that saves the change, so a notification is recorded exactly
//! when its transition is.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Alert, Transition};
use crate::run::{AssertionResult, Phases, ProbeError, RunRecord};
use crate::store::StoreError;

/// `trigger` when an alert fires, `resolve` when it resolves, `remind`
/// while it keeps firing (`alerting.remind_every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    pub assertion: Option<AssertionResult>,
    /// What was requested (method and URL; secrets are never part of it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    pub phases: Phases,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl LastFailure {
    pub fn of(r: &RunRecord, e: &ProbeError) -> LastFailure {
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

/// What on-call is owed for a change: an event and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub event: Event,
    /// Why: the transition's reason, or why a reminder or a release is sent.
    pub reason: String,
    /// The probe's labels (for routing), runbook, description, dependents.
    pub probe: Arc<ProbeInfo>,
}

/// A change to save, in order: the alert as it is now, the transition that
/// changed it (if it changed state), and the notice it owes (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub alert: Alert,
    pub transition: Option<Transition>,
    pub notice: Option<Notice>,
    /// The alert as it was before the change.
    pub before: Before,
}

/// What a per-run alert looked like before a change. Its change is saved
/// only over a row that still looks so (`persist::save`), so when two
/// replicas evaluate one probe's runs for a moment (a handover, views of
/// the members that differ for a few seconds), each transition, trigger
/// and reminder is recorded once: the second is refused and its replica
/// reads the alert again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Before {
    pub state: super::State,
    pub since: DateTime<Utc>,
    pub last_notified_at: Option<DateTime<Utc>>,
}

impl Before {
    pub fn of(a: &Alert) -> Before {
        Before {
            state: a.state,
            since: a.since,
            last_notified_at: a.last_notified_at,
        }
    }

    /// Whether the alert was pending or firing.
    pub fn was_active(&self) -> bool {
        matches!(self.state, super::State::Pending | super::State::Firing)
    }
}

/// A boxed future of a [`NoticeWriter`] (a trait object cannot have an `async fn`).
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Records the notice of a change inside the transaction that saves it
/// ([`super::persist::save`]): implemented by notify's outbox.
pub trait NoticeWriter: Send + Sync {
    /// Writes what `notice` of `alert` owes, on `tx` (an open transaction).
    fn write<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
        alert: &'a Alert,
        notice: &'a Notice,
    ) -> WriteFuture<'a>;

    /// Postgres is away and the change cannot be saved yet: sends what the
    /// notice owes now, without waiting (in the background), so on-call is
    /// told; [`NoticeWriter::write`] later records it as delivered.
    fn send_now(&self, _alert: &Alert, _notice: &Notice) {}

    /// The change owing `notice` committed (after [`NoticeWriter::write`]).
    fn saved(&self, _alert: &Alert, _notice: &Notice) {}
}
