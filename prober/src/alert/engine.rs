//! The alert engine: one task that takes every finished run, moves the
//! alert of its probe through the state machine, and persists each change
//! with its transition. State is loaded from Postgres at start, so a restart
//! continues where it was; changes that cannot be saved (Postgres away) wait
//! in order and are saved when it returns.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Alert, Policy, State, Transition};
use crate::config::Probe;
use crate::notify::{self, Event, LastFailure, NewNotification, ProbeInfo, Receiver};
use crate::results::RunRecord;
use crate::store::Store;

/// Runs waiting for evaluation before new ones are dropped (and counted).
pub const QUEUE: usize = 65_536;
/// The one rule evaluated so far.
pub const RULE_FAILING: &str = "failing";

/// What the engine knows of a probe: its policy, and labels, runbook and
/// description for routing and the content of notifications.
#[derive(Debug, Clone, Default)]
struct ProbeEntry {
    policy: Policy,
    info: ProbeInfo,
}

/// Where notifications go.
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    pub receivers: Vec<Receiver>,
    /// `{probe}` is replaced by the probe's name.
    pub dashboard_url: Option<String>,
}

/// The last failure of an alert and the failed runs of its incident (in memory only).
#[derive(Debug, Clone, Default)]
struct Incident {
    last: Option<LastFailure>,
    failures: u32,
}

/// A change to save: the alert, its transition, the notifications it causes.
type Change = (Alert, Option<Transition>, Vec<NewNotification>);

pub struct AlertEngine {
    alerts: Mutex<HashMap<String, Alert>>,
    incidents: Mutex<HashMap<String, Incident>>,
    policies: RwLock<HashMap<String, Arc<ProbeEntry>>>,
    notify: NotifySettings,
    default: Policy,
    location: String,
    store: Store,
    tx: mpsc::Sender<RunRecord>,
    /// Runs not evaluated because the engine's queue was full.
    pub dropped: std::sync::atomic::AtomicU64,
    /// Whether the saved state has been loaded (before that, runs wait).
    pub loaded: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertEngine")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl AlertEngine {
    /// Starts the engine's task; it stops when `stop` is cancelled.
    pub fn start(
        store: Store,
        location: &str,
        default: Policy,
        probes: &[Probe],
        notify: NotifySettings,
        stop: CancellationToken,
    ) -> Arc<AlertEngine> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let engine = Arc::new(AlertEngine {
            alerts: Mutex::new(HashMap::new()),
            incidents: Mutex::new(HashMap::new()),
            policies: RwLock::new(HashMap::new()),
            notify,
            default,
            location: location.to_string(),
            store,
            tx,
            dropped: Default::default(),
            loaded: Default::default(),
        });
        engine.set_probes(probes);
        tokio::spawn(run(engine.clone(), rx, stop));
        engine
    }

    /// The policies, labels, runbooks and descriptions of the probes now
    /// defined (after a reload too).
    pub fn set_probes(&self, probes: &[Probe]) {
        let map = probes
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Arc::new(ProbeEntry {
                        policy: p.alert.apply(self.default),
                        info: ProbeInfo {
                            labels: p.labels.clone(),
                            runbook: p.runbook.clone(),
                            description: p.description.clone(),
                        },
                    }),
                )
            })
            .collect();
        if let Ok(mut w) = self.policies.write() {
            *w = map;
        }
    }

    /// Hands a finished run to the engine; never waits.
    pub fn submit(&self, r: &RunRecord) {
        if self.tx.try_send(r.clone()).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if n.is_power_of_two() {
                tracing::error!(
                    dropped_total = n,
                    "alert evaluation is behind: runs were not evaluated"
                );
            }
        }
    }

    /// Alerts pending or firing, by key.
    pub fn active(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = lock(&self.alerts)
            .values()
            .filter(|a| a.is_active())
            .cloned()
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    fn observe(&self, r: &RunRecord) -> Option<Change> {
        let entry = self
            .policies
            .read()
            .ok()
            .and_then(|p| p.get(&r.meta.name).cloned())?;
        let policy = entry.policy;
        if !policy.enabled {
            return None;
        }
        let key = format!("{}/{RULE_FAILING}/{}", r.meta.name, self.location);
        let mut alerts = lock(&self.alerts);
        let alert = alerts.entry(key.clone()).or_insert_with(|| {
            Alert::new(
                &r.meta.name,
                RULE_FAILING,
                &self.location,
                policy.severity,
                r.started_at,
            )
        });
        let was_active = alert.is_active();
        let t = alert.observe(r.outcome.error.as_ref(), r.started_at, &policy);
        if let Some(t) = &t {
            tracing::warn!(alert = %t.key, from = t.from.as_str(), to = t.to.as_str(), reason = %t.reason, "alert changed state");
        }
        // The incident's failed runs and last failure, kept while it lasts.
        let notes = {
            let mut incidents = lock(&self.incidents);
            let starts = |t: &Transition| {
                t.to == State::Pending || (t.to == State::Firing && t.from != State::Pending)
            };
            if t.as_ref().is_some_and(starts) {
                incidents.remove(&key);
            }
            if let Some(e) = r.outcome.error.as_ref() {
                let i = incidents.entry(key.clone()).or_default();
                i.failures = i.failures.saturating_add(1);
                i.last = Some(LastFailure::of(r, e));
            }
            match &t {
                Some(t) => {
                    let incident = incidents.get(&key).cloned().unwrap_or_default();
                    if matches!(t.to, State::Ok | State::Resolved) {
                        incidents.remove(&key);
                    }
                    self.notifications(alert, t, &incident, &entry.info)
                }
                None => Vec::new(),
            }
        };
        // Quiet ok alerts cost nothing; active ones and changes are saved.
        (t.is_some() || was_active || alert.is_active()).then(|| (alert.clone(), t, notes))
    }

    /// The notifications a transition causes: one per routed receiver when
    /// the alert fires, and when it resolves.
    fn notifications(
        &self,
        a: &Alert,
        t: &Transition,
        incident: &Incident,
        info: &ProbeInfo,
    ) -> Vec<NewNotification> {
        let event = match (t.from, t.to) {
            (_, State::Firing) => Event::Trigger,
            (State::Firing, State::Resolved) => Event::Resolve,
            _ => return Vec::new(),
        };
        let failed_runs = incident.failures.max(match event {
            Event::Trigger => a.consecutive_failures,
            Event::Resolve => 0,
        });
        let content = notify::content(
            a,
            event,
            &t.reason,
            failed_runs,
            incident.last.as_ref(),
            info,
            self.notify.dashboard_url.as_deref(),
        );
        let payload = match serde_json::to_value(&content) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(alert = %a.key, error = %e, "cannot encode a notification; it is not sent (a prober bug)");
                return Vec::new();
            }
        };
        self.notify
            .receivers
            .iter()
            .filter(|r| r.routes(&info.labels))
            .map(|r| NewNotification {
                receiver: r.name.clone(),
                event,
                dedup_key: content.dedup_key.clone(),
                payload: payload.clone(),
            })
            .collect()
    }
}

async fn run(engine: Arc<AlertEngine>, mut rx: mpsc::Receiver<RunRecord>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    // Load the saved state first; runs wait in the channel meanwhile.
    loop {
        match engine.store.load_alerts().await {
            Ok(saved) => {
                let mut alerts = lock(&engine.alerts);
                for a in saved {
                    alerts.insert(a.key.clone(), a);
                }
                engine
                    .loaded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load alert state yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let mut unsaved: VecDeque<Change> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => {
                    if let Some(change) = engine.observe(&r) {
                        unsaved.push_back(change);
                    }
                }
                None => return,
            },
            _ = tick.tick() => {}
            _ = stop.cancelled() => {
                save(&engine.store, &mut unsaved).await;
                return;
            }
        }
        save(&engine.store, &mut unsaved).await;
    }
}

/// Saves changes in order; stops at the first failure and keeps the rest for later.
async fn save(store: &Store, unsaved: &mut VecDeque<Change>) {
    while let Some((alert, t, notes)) = unsaved.front() {
        match store.save_alert(alert, t.as_ref(), notes).await {
            Ok(()) => {
                unsaved.pop_front();
            }
            Err(e) => {
                tracing::warn!(error = %e, waiting = unsaved.len(), "cannot save alert state; will retry");
                return;
            }
        }
    }
}

/// Whether a state is one on-call hears about.
pub fn notifies(s: State) -> bool {
    matches!(s, State::Firing | State::Resolved)
}
