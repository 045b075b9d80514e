//! The alert engine: one task that takes every finished run, moves the
//! alerts of its probe through the state machine, and persists each change
//! with its transition and the notice it owes on-call. State is loaded from
//! Postgres at start, so a restart continues where it was; changes that
//! cannot be saved (Postgres away) wait in order and are saved when it
//! returns.
//!
//! Every `evaluate_every` the same task also
//! - releases triggers held back by a silence or a firing upstream once that ends,
//! - sends reminders of alerts that keep firing (`remind_every`),
//! - and, on the one replica holding the evaluator lease (a row in Postgres
//!   renewed every few seconds), evaluates the rules that read merged data
//!   of every location: `latency`, the SLO burn-rate pairs, `trend`.
//!
//! Files: `observe.rs` (per-run rules), `periodic.rs` (rules over every
//! location), `notices.rs` (suppression, releases, reminders), `leader.rs`
//! (the evaluator lease), `task.rs` (the loop and the save queue). The rules
//! themselves are pure functions in [`super::rules`].

pub mod leader;
mod notices;
mod observe;
mod periodic;
mod task;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Alert, NoticeWriter, Policy, ProbeInfo};
use crate::config::policy::Silence;
use crate::config::settings::{LabelOverride, Settings};
use crate::config::Probe;
use crate::run::RunRecord;
use crate::store::Store;

/// Runs waiting for evaluation before new ones are dropped (and counted).
pub const QUEUE: usize = 65_536;
/// Consecutive failed runs (per location).
pub const RULE_FAILING: &str = "failing";
/// A certificate close to expiry (per location).
pub const RULE_CERT_EXPIRY: &str = "cert_expiry";
/// A latency quantile above its threshold (all locations).
pub const RULE_LATENCY: &str = "latency";
/// The error budget burning fast enough to page (all locations).
pub const RULE_SLO_PAGE: &str = "slo_page";
/// The error budget burning fast enough for a ticket (all locations).
pub const RULE_SLO_TICKET: &str = "slo_ticket";
/// An open trend finding of the probe (all locations; a ticket).
pub const RULE_TREND: &str = "trend";
/// The location of alerts computed from every location's data.
pub const ALL_LOCATIONS: &str = "all";
pub use leader::{Lease, EVALUATOR_LEASE, LEASE_TTL, RENEW_EVERY};

/// What the engine knows of a probe: its policy, and labels, runbook,
/// description and dependencies for silences, suppression and notices.
#[derive(Debug, Clone, Default)]
struct ProbeEntry {
    policy: Policy,
    info: Arc<ProbeInfo>,
}

/// The engine's settings, from [`Settings`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub location: String,
    pub default: Policy,
    pub by_label: Vec<LabelOverride>,
    pub evaluate_every: Duration,
    pub remind_every: Option<Duration>,
    /// Silences from the settings file (those from the API are read from Postgres).
    pub silences: Vec<Silence>,
}

impl EngineSettings {
    pub fn from_settings(s: &Settings) -> EngineSettings {
        EngineSettings {
            location: s.location.clone(),
            default: s.alerting,
            by_label: s.alerting_by_label.clone(),
            evaluate_every: s.evaluate_every,
            remind_every: s.remind_every,
            silences: s.silences.clone(),
        }
    }
}

/// The alerts by key. Boxed: an [`Alert`] is ~0.5 KiB and a map holds up to
/// twice its length in slots, so inline values would cost ~1.4 KiB per probe.
type AlertMap = HashMap<String, Box<Alert>>;

/// What the engine's task takes, in order.
#[derive(Debug)]
pub(super) enum Input {
    Run(Observed),
    /// This replica now runs these probes, another did before: their saved
    /// per-run alerts are read again before their next runs are evaluated.
    Adopt(Vec<String>),
}

/// What the per-run rules read of a run, waiting in the engine's channel:
/// ~40 bytes for a run that passed without a certificate, not a second
/// copy of the run (the channel holds [`QUEUE`] of them while the saved
/// state is loading).
#[derive(Debug)]
pub(super) struct Observed {
    probe: Arc<crate::run::ProbeMeta>,
    at: chrono::DateTime<chrono::Utc>,
    /// A failed run's error and what on-call is shown of it.
    failure: Option<Box<(crate::run::ProbeError, crate::alert::LastFailure)>>,
    cert: Option<Box<crate::run::CertInfo>>,
}

impl Observed {
    fn of(r: &RunRecord) -> Observed {
        Observed {
            probe: r.meta.clone(),
            at: r.started_at,
            failure: r
                .outcome
                .error
                .as_ref()
                .map(|e| Box::new((e.clone(), crate::alert::LastFailure::of(r, e)))),
            cert: r.outcome.cert.clone().map(Box::new),
        }
    }
}

pub struct AlertEngine {
    alerts: Mutex<AlertMap>,
    probes: RwLock<HashMap<String, Arc<ProbeEntry>>>,
    /// Replaced when prober.yaml is reloaded (see [`AlertEngine::set_settings`]).
    settings: RwLock<Arc<EngineSettings>>,
    api_silences: RwLock<Vec<Silence>>,
    store: Store,
    /// Records each change's notice in the transaction that saves it.
    notices: Arc<dyn NoticeWriter>,
    tx: mpsc::Sender<Input>,
    /// Wakes the engine for an evaluation now (a silence was added or ended).
    wake: tokio::sync::Notify,
    /// Runs not evaluated because the engine's queue was full.
    pub dropped: AtomicU64,
    /// Whether the saved state has been loaded (before that, runs wait
    /// [`task::LOAD_GRACE`], then are evaluated provisionally).
    pub loaded: AtomicBool,
    /// The evaluator lease (`leader.rs`).
    pub lease: Lease,
    /// Periodic evaluations done (for tests and metrics).
    pub evaluations: AtomicU64,
}

impl std::fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertEngine")
    }
}

/// The policy of a probe: defaults, then every matching `by_label` entry in order, then its own.
pub fn policy_for(p: &Probe, default: Policy, by_label: &[LabelOverride]) -> Policy {
    let mut policy = default;
    for o in by_label {
        if o.labels.iter().all(|(k, v)| p.labels.get(k) == Some(v)) {
            policy = o.alert.apply(policy);
        }
    }
    match &p.alert {
        Some(own) => own.apply(policy),
        None => policy,
    }
}

impl AlertEngine {
    /// Starts the engine's task; it stops when `stop` is cancelled. `notices`
    /// records what each saved change owes on-call (notify's outbox).
    pub fn start(
        store: Store,
        settings: EngineSettings,
        probes: &[Probe],
        notices: Arc<dyn NoticeWriter>,
        store_ready: Arc<crate::store::writer::StoreHealth>,
        stop: CancellationToken,
    ) -> Arc<AlertEngine> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let settings_location = settings.location.clone();
        let engine = Arc::new(AlertEngine {
            alerts: Mutex::new(HashMap::new()),
            probes: RwLock::new(HashMap::new()),
            settings: RwLock::new(Arc::new(settings)),
            api_silences: RwLock::new(Vec::new()),
            store,
            notices,
            tx,
            wake: tokio::sync::Notify::new(),
            dropped: Default::default(),
            loaded: Default::default(),
            lease: Lease::new(
                EVALUATOR_LEASE,
                Lease::holder_for(&settings_location),
                LEASE_TTL,
            ),
            evaluations: Default::default(),
        });
        engine.set_probes(probes);
        let task = engine.clone();
        tokio::spawn(task::run(task, rx, store_ready, stop));
        engine
    }

    /// Whether this replica holds the evaluator lease now.
    pub fn is_leader(&self) -> bool {
        self.lease.term().is_some()
    }

    /// The settings now in force.
    fn cfg(&self) -> Arc<EngineSettings> {
        self.settings.read().clone()
    }

    /// New alerting settings (a reloaded prober.yaml): defaults, label
    /// overrides, silences, reminders. The location and `evaluate_every`
    /// stay as they were (they need a restart). Call
    /// [`AlertEngine::set_probes`] after it so the policies follow.
    pub fn set_settings(&self, mut new: EngineSettings) {
        let old = self.cfg();
        new.location.clone_from(&old.location);
        if new.evaluate_every != old.evaluate_every {
            tracing::warn!("alerting.evaluate_every changed; it applies after a restart");
        }
        new.evaluate_every = old.evaluate_every;
        *self.settings.write() = Arc::new(new);
        self.wake.notify_one();
    }

    /// The policies, labels, runbooks, descriptions and dependencies of the
    /// probes now defined (after a reload too).
    pub fn set_probes(&self, probes: &[Probe]) {
        let cfg = self.cfg();
        let mut dependents: HashMap<&str, Vec<String>> = HashMap::new();
        for p in probes {
            for d in &p.depends_on {
                dependents.entry(d).or_default().push(p.name.clone());
            }
        }
        let map = probes
            .iter()
            .map(|p| {
                let mut deps = dependents.get(p.name.as_str()).cloned().unwrap_or_default();
                deps.sort();
                let entry = ProbeEntry {
                    policy: policy_for(p, cfg.default, &cfg.by_label),
                    info: Arc::new(ProbeInfo {
                        labels: p.labels.clone(),
                        runbook: p.runbook.clone(),
                        description: p.description.clone(),
                        depends_on: p.depends_on.clone(),
                        dependents: deps,
                    }),
                };
                (p.name.clone(), Arc::new(entry))
            })
            .collect();
        *self.probes.write() = map;
    }

    /// The `latency` rule of every probe that has one, by name (the trend
    /// forecast's thresholds).
    pub fn latency_rules(&self) -> HashMap<String, crate::config::policy::LatencyRule> {
        (self.probes.read().iter())
            .filter_map(|(name, e)| Some((name.clone(), e.policy.latency?)))
            .collect()
    }

    /// Hands a finished run to the engine; never waits.
    pub fn submit(&self, r: &RunRecord) {
        if self.tx.try_send(Input::Run(Observed::of(r))).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(
                    dropped_total = n,
                    "alert evaluation is behind: runs were not evaluated"
                );
            }
        }
    }

    /// This replica took `probes` over from another of its location: their
    /// per-run alerts (`failing`, `cert_expiry`) are read from Postgres again,
    /// as the other replica left them, before their next runs are evaluated.
    pub fn adopt(&self, probes: Vec<String>) {
        if self.tx.try_send(Input::Adopt(probes)).is_err() {
            tracing::warn!("alert evaluation is behind: the alerts of probes taken over from another replica are not read again");
        }
    }

    /// Asks for an evaluation now (after a silence changed).
    pub fn evaluate_soon(&self) {
        self.wake.notify_one();
    }

    /// Alerts pending or firing, by key.
    pub fn active(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = (self.alerts.lock().values())
            .filter(|a| a.is_active())
            .map(|a| Alert::clone(a))
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The silences from the settings file.
    pub fn file_silences(&self) -> Vec<Silence> {
        self.cfg().silences.clone()
    }

    fn entry(&self, probe: &str) -> Option<Arc<ProbeEntry>> {
        self.probes.read().get(probe).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::kinds::AlertOverrides;
    use crate::config::policy::Severity;

    fn probe(yaml: &str) -> Probe {
        let mut report = crate::config::load::LoadReport::default();
        crate::config::load::load_text(std::path::Path::new("t.yaml"), yaml, &mut report);
        assert!(report.is_ok(), "{:?}", report.diagnostics);
        report.probes.remove(0)
    }

    #[test]
    fn label_overrides_apply_in_order_between_the_defaults_and_the_probe() {
        let by_label = vec![
            LabelOverride {
                labels: [("team".to_string(), "pay".to_string())].into(),
                alert: AlertOverrides {
                    failures_to_fire: Some(5),
                    severity: Some(Severity::Ticket),
                    ..AlertOverrides::default()
                },
            },
            LabelOverride {
                labels: [("tier".to_string(), "1".to_string())].into(),
                alert: AlertOverrides {
                    severity: Some(Severity::Page),
                    ..AlertOverrides::default()
                },
            },
        ];
        let d = Policy::default();
        let pay =
            probe("name: a\nevery: 1m\nlabels: {team: pay}\nhttp: {url: \"http://127.0.0.1/\"}\n");
        let p = policy_for(&pay, d, &by_label);
        assert_eq!((p.failures_to_fire, p.severity), (5, Severity::Ticket));
        let pay_tier1 = probe("name: b\nevery: 1m\nlabels: {team: pay, tier: \"1\"}\nhttp: {url: \"http://127.0.0.1/\"}\n");
        let p = policy_for(&pay_tier1, d, &by_label);
        assert_eq!(
            (p.failures_to_fire, p.severity),
            (5, Severity::Page),
            "later entries win"
        );
        let own = probe("name: c\nevery: 1m\nlabels: {team: pay}\nalert: {failures_to_fire: 7}\nhttp: {url: \"http://127.0.0.1/\"}\n");
        assert_eq!(
            policy_for(&own, d, &by_label).failures_to_fire,
            7,
            "the probe's own alert: wins"
        );
        let other =
            probe("name: e\nevery: 1m\nlabels: {team: web}\nhttp: {url: \"http://127.0.0.1/\"}\n");
        assert_eq!(policy_for(&other, d, &by_label), d);
    }
}
