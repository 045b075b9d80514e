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
use crate::results::RunRecord;
use crate::store::Store;

/// Runs waiting for evaluation before new ones are dropped (and counted).
pub const QUEUE: usize = 65_536;
/// The one rule evaluated so far.
pub const RULE_FAILING: &str = "failing";

pub struct AlertEngine {
    alerts: Mutex<HashMap<String, Alert>>,
    policies: RwLock<HashMap<String, Policy>>,
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
        stop: CancellationToken,
    ) -> Arc<AlertEngine> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let engine = Arc::new(AlertEngine {
            alerts: Mutex::new(HashMap::new()),
            policies: RwLock::new(HashMap::new()),
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

    /// The policies of the probes now defined (after a reload too).
    pub fn set_probes(&self, probes: &[Probe]) {
        let map = probes
            .iter()
            .map(|p| (p.name.clone(), p.alert.apply(self.default)))
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

    fn observe(&self, r: &RunRecord) -> Option<(Alert, Option<Transition>)> {
        let policy = self
            .policies
            .read()
            .ok()
            .and_then(|p| p.get(&r.meta.name).copied())?;
        if !policy.enabled {
            return None;
        }
        let key = format!("{}/{RULE_FAILING}/{}", r.meta.name, self.location);
        let mut alerts = lock(&self.alerts);
        let alert = alerts.entry(key).or_insert_with(|| {
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
        // Quiet ok alerts cost nothing; active ones and changes are saved.
        (t.is_some() || was_active || alert.is_active()).then(|| (alert.clone(), t))
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
    let mut unsaved: VecDeque<(Alert, Option<Transition>)> = VecDeque::new();
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
async fn save(store: &Store, unsaved: &mut VecDeque<(Alert, Option<Transition>)>) {
    while let Some((alert, t)) = unsaved.front() {
        match store.save_alert(alert, t.as_ref()).await {
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
