//! The alert engine: one task that takes every finished run, moves the
//! alerts of its probe through the state machine, and persists each change
//! with its transition and the notifications it causes. State is loaded from
//! Postgres at start, so a restart continues where it was; changes that
//! cannot be saved (Postgres away) wait in order and are saved when it
//! returns.
//!
//! Every `evaluate_every` the same task also
//! - releases triggers held back by a silence or a firing upstream once that ends,
//! - sends reminders of alerts that keep firing (`remind_every`),
//! - and, on the one replica holding the evaluator lock (a Postgres advisory
//!   lock), evaluates the rules that read merged data of every location:
//!   `latency` and the SLO burn-rate pairs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::burn;
use super::silence::Silence;
use super::{Alert, Policy, Severity, State, Transition};
use crate::config::settings::{LabelOverride, Settings};
use crate::config::Probe;
use crate::notify::{self, Event, LastFailure, NewNotification, ProbeInfo, Receiver};
use crate::run::RunRecord;
use crate::store::{Resolution, Store};

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
/// The location of alerts computed from every location's data.
pub const ALL_LOCATIONS: &str = "all";
/// The advisory lock held by the replica that evaluates the periodic rules.
pub const EVALUATOR_LOCK: i64 = 0x7072_6f62_6572_0001;

/// What the engine knows of a probe: its policy, and labels, runbook,
/// description and dependencies for routing, silences and content.
#[derive(Debug, Clone, Default)]
struct ProbeEntry {
    policy: Policy,
    info: ProbeInfo,
}

/// The engine's settings, from [`Settings`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub location: String,
    pub default: Policy,
    pub by_label: Vec<LabelOverride>,
    pub receivers: Vec<Receiver>,
    /// `{probe}` is replaced by the probe's name.
    pub dashboard_url: Option<String>,
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
            receivers: s.receivers.clone(),
            dashboard_url: s.dashboard_url.clone(),
            evaluate_every: s.evaluate_every,
            remind_every: s.remind_every,
            silences: s.silences.clone(),
        }
    }
}

/// A change to save: the alert, its transition, the notifications it causes.
type Change = (Alert, Option<Transition>, Vec<NewNotification>);

/// The alerts by key. Boxed: an [`Alert`] is ~0.5 KiB and a map holds up to
/// twice its length in slots, so inline values would cost ~1.4 KiB per probe.
type AlertMap = HashMap<String, Box<Alert>>;

pub struct AlertEngine {
    alerts: Mutex<AlertMap>,
    probes: RwLock<HashMap<String, Arc<ProbeEntry>>>,
    /// Replaced when prober.yaml is reloaded (see [`AlertEngine::set_settings`]).
    settings: RwLock<Arc<EngineSettings>>,
    api_silences: RwLock<Vec<Silence>>,
    store: Store,
    tx: mpsc::Sender<RunRecord>,
    /// Wakes the engine for an evaluation now (a silence was added or ended).
    wake: tokio::sync::Notify,
    /// Runs not evaluated because the engine's queue was full.
    pub dropped: AtomicU64,
    /// Whether the saved state has been loaded (before that, runs wait).
    pub loaded: AtomicBool,
    /// Whether this replica holds the evaluator lock.
    pub leader: AtomicBool,
    /// Periodic evaluations done (for tests and metrics).
    pub evaluations: AtomicU64,
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
    /// Starts the engine's task; it stops when `stop` is cancelled.
    pub fn start(
        store: Store,
        settings: EngineSettings,
        probes: &[Probe],
        store_ready: Arc<crate::store::writer::StoreHealth>,
        stop: CancellationToken,
    ) -> Arc<AlertEngine> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let engine = Arc::new(AlertEngine {
            alerts: Mutex::new(HashMap::new()),
            probes: RwLock::new(HashMap::new()),
            settings: RwLock::new(Arc::new(settings)),
            api_silences: RwLock::new(Vec::new()),
            store,
            tx,
            wake: tokio::sync::Notify::new(),
            dropped: Default::default(),
            loaded: Default::default(),
            leader: Default::default(),
            evaluations: Default::default(),
        });
        engine.set_probes(probes);
        let task = engine.clone();
        tokio::spawn(async move {
            // Nothing to read before the writer has created and migrated the database.
            tokio::select! {
                () = store_ready.wait_prepared() => run(task, rx, stop).await,
                () = stop.cancelled() => {}
            }
        });
        engine
    }

    /// The settings now in force.
    fn cfg(&self) -> Arc<EngineSettings> {
        match self.settings.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// New alerting settings (a reloaded prober.yaml): defaults, label
    /// overrides, receivers, silences, reminders. The location and
    /// `evaluate_every` stay as they were (they need a restart). Call
    /// [`AlertEngine::set_probes`] after it so the policies follow.
    pub fn set_settings(&self, mut new: EngineSettings) {
        let old = self.cfg();
        new.location.clone_from(&old.location);
        if new.evaluate_every != old.evaluate_every {
            tracing::warn!("alerting.evaluate_every changed; it applies after a restart");
        }
        new.evaluate_every = old.evaluate_every;
        if let Ok(mut w) = self.settings.write() {
            *w = Arc::new(new);
        }
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
                (
                    p.name.clone(),
                    Arc::new(ProbeEntry {
                        policy: policy_for(p, cfg.default, &cfg.by_label),
                        info: ProbeInfo {
                            labels: p.labels.clone(),
                            runbook: p.runbook.clone(),
                            description: p.description.clone(),
                            depends_on: p.depends_on.clone(),
                            dependents: deps,
                        },
                    }),
                )
            })
            .collect();
        if let Ok(mut w) = self.probes.write() {
            *w = map;
        }
    }

    /// Hands a finished run to the engine; never waits.
    pub fn submit(&self, r: &RunRecord) {
        if self.tx.try_send(r.clone()).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(
                    dropped_total = n,
                    "alert evaluation is behind: runs were not evaluated"
                );
            }
        }
    }

    /// Asks for an evaluation now (after a silence changed).
    pub fn evaluate_soon(&self) {
        self.wake.notify_one();
    }

    /// Alerts pending or firing, by key.
    pub fn active(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = lock(&self.alerts)
            .values()
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
        self.probes.read().ok().and_then(|p| p.get(probe).cloned())
    }

    /// The alerts a run moves: `failing`, and `cert_expiry` when the run saw a certificate.
    fn observe(&self, r: &RunRecord) -> Vec<Change> {
        let Some(entry) = self.entry(&r.meta.name) else {
            return Vec::new();
        };
        let policy = entry.policy;
        if !policy.enabled {
            return Vec::new();
        }
        let at = r.started_at;
        let cfg = self.cfg();
        let loc = cfg.location.as_str();
        let mut alerts = lock(&self.alerts);
        let mut changes = Vec::new();

        let key = format!("{}/{RULE_FAILING}/{loc}", r.meta.name);
        let mut alert = alerts.remove(&key).unwrap_or_else(|| {
            Box::new(Alert::new(
                &r.meta.name,
                RULE_FAILING,
                loc,
                policy.severity,
                at,
            ))
        });
        let was_active = alert.is_active();
        let error = r.outcome.error.as_ref();
        let t = alert.observe(error, at, &policy);
        if t.as_ref().is_some_and(starts_incident) {
            alert.failed_runs = 0;
            alert.last_failure = None;
        }
        if let Some(e) = error {
            alert.failed_runs = alert.failed_runs.saturating_add(1);
            alert.last_failure = Some(Box::new(LastFailure::of(r, e)));
        }
        self.settle(
            &mut alerts,
            key,
            alert,
            t,
            was_active,
            &entry,
            at,
            &mut changes,
        );

        if let (Some(days), Some(cert)) = (
            (policy.cert_expiry_days > 0).then_some(policy.cert_expiry_days),
            r.outcome.cert.as_ref(),
        ) {
            let key = format!("{}/{RULE_CERT_EXPIRY}/{loc}", r.meta.name);
            let mut alert = alerts.remove(&key).unwrap_or_else(|| {
                Box::new(Alert::new(
                    &r.meta.name,
                    RULE_CERT_EXPIRY,
                    loc,
                    Severity::Ticket,
                    at,
                ))
            });
            let was_active = alert.is_active();
            let bad = (cert.days_left < i64::from(days)).then(|| {
                format!(
                    "the certificate of {} (issuer {}) expires {} ({} days left; the alert is at fewer than {days})",
                    cert.subject,
                    cert.issuer,
                    cert.not_after.to_rfc3339(),
                    cert.days_left
                )
            });
            let good = format!(
                "the certificate now expires {} ({} days left)",
                cert.not_after.to_rfc3339(),
                cert.days_left
            );
            let t = alert.evaluate(bad.as_deref(), &good, at, Severity::Ticket, (1, 1));
            self.settle(
                &mut alerts,
                key,
                alert,
                t,
                was_active,
                &entry,
                at,
                &mut changes,
            );
        }
        changes
    }

    /// After an observation: the notifications of its transition, a change to
    /// save unless the alert is and was a quiet ok, and the alert back in the map.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        alerts: &mut AlertMap,
        key: String,
        mut alert: Box<Alert>,
        t: Option<Transition>,
        was_active: bool,
        entry: &ProbeEntry,
        now: DateTime<Utc>,
        changes: &mut Vec<Change>,
    ) {
        let notes = match &t {
            Some(t) => self.on_transition(alerts, &mut alert, t, entry, now),
            None => Vec::new(),
        };
        if t.is_some() || was_active || alert.is_active() {
            changes.push((Alert::clone(&alert), t, notes));
        }
        alerts.insert(key, alert);
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
        let api = self.api_silences.read().ok();
        let cfg = self.cfg();
        let silenced = cfg
            .silences
            .iter()
            .chain(api.iter().flat_map(|s| s.iter()))
            .find(|s| s.active_at(now) && s.matches(a, &info.labels));
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

    /// The notifications a transition causes. A trigger is held back while
    /// the alert is silenced or an upstream fires; a resolve follows only a
    /// trigger that was recorded.
    fn on_transition(
        &self,
        alerts: &AlertMap,
        a: &mut Alert,
        t: &Transition,
        entry: &ProbeEntry,
        now: DateTime<Utc>,
    ) -> Vec<NewNotification> {
        let info = &entry.info;
        tracing::warn!(alert = %t.key, from = t.from.as_str(), to = t.to.as_str(), reason = %t.reason, "alert changed state");
        match t.to {
            State::Firing => {
                if let Some(why) = self.suppression(alerts, a, entry, now) {
                    tracing::info!(alert = %a.key, reason = %why, "alert fires; its notification is held back");
                    a.notified = false;
                    a.suppressed = Some(why);
                    return Vec::new();
                }
                a.notified = true;
                a.suppressed = None;
                a.last_notified_at = Some(now);
                self.notifications(a, Event::Trigger, &t.reason, info)
            }
            State::Resolved => {
                let notes = if a.notified {
                    self.notifications(a, Event::Resolve, &t.reason, info)
                } else {
                    Vec::new()
                };
                a.notified = false;
                a.suppressed = None;
                notes
            }
            State::Ok | State::Pending => Vec::new(),
        }
    }

    /// One notification per routed receiver.
    fn notifications(
        &self,
        a: &Alert,
        event: Event,
        reason: &str,
        info: &ProbeInfo,
    ) -> Vec<NewNotification> {
        let cfg = self.cfg();
        let content = notify::content(a, event, reason, info, cfg.dashboard_url.as_deref());
        let payload = match serde_json::to_value(&content) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(alert = %a.key, error = %e, "cannot encode a notification; it is not sent (a prober bug)");
                return Vec::new();
            }
        };
        cfg.receivers
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

    /// Held-back triggers whose reason ended, and reminders, for the alerts
    /// this replica owns (its location; `all` too while it is the evaluator).
    fn release_and_remind(&self, now: DateTime<Utc>) -> Vec<Change> {
        let cfg = self.cfg();
        let leader = self.leader.load(Ordering::SeqCst);
        let mut alerts = lock(&self.alerts);
        let keys: Vec<String> = alerts
            .values()
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
            let info = &entry.info;
            let mut notes = Vec::new();
            if !a.notified {
                let why = self.suppression(&alerts, &a, &entry, now);
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
                    notes = self.notifications(&a, Event::Trigger, &reason, info);
                    tracing::warn!(alert = %a.key, "held-back alert released: notifying");
                    changes.push((Alert::clone(&a), None, notes));
                } else if why != a.suppressed {
                    a.suppressed = why;
                    changes.push((Alert::clone(&a), None, notes));
                }
            } else if let Some(every) = cfg.remind_every {
                let due = a.last_notified_at.is_none_or(|last| {
                    now - last >= chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX)
                });
                if due {
                    a.last_notified_at = Some(now);
                    let since = a.fired_at.unwrap_or(a.since);
                    let reason = format!("still firing since {}", since.to_rfc3339());
                    notes = self.notifications(&a, Event::Remind, &reason, info);
                    changes.push((Alert::clone(&a), None, notes));
                }
            }
            alerts.insert(key, a);
        }
        changes
    }

    /// The periodic rules of every probe that has one, from merged data of every location.
    async fn evaluate_periodic(&self, now: DateTime<Utc>) -> Vec<Change> {
        let entries: Vec<(String, Arc<ProbeEntry>)> = match self.probes.read() {
            Ok(p) => p
                .iter()
                .filter(|(_, e)| {
                    e.policy.enabled
                        && (e.policy.latency.is_some()
                            || e.policy.slo.is_some()
                            || e.policy.min_locations > 1)
                })
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect(),
            Err(_) => return Vec::new(),
        };
        if entries.is_empty() {
            return Vec::new();
        }
        // Burn-rate windows of every SLO probe, in two queries.
        let slo_names: Vec<String> = entries
            .iter()
            .filter(|(_, e)| e.policy.slo.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let windows = burn::windows();
        let counts = if slo_names.is_empty() {
            HashMap::new()
        } else {
            match self.store.window_counts(&slo_names, &windows, now).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read run counts for SLO burn rates; will retry at the next evaluation");
                    return Vec::new();
                }
            }
        };
        // Locations where each k-of-n probe's `failing` alert fires.
        let kn_names: Vec<String> = entries
            .iter()
            .filter(|(_, e)| e.policy.min_locations > 1)
            .map(|(n, _)| n.clone())
            .collect();
        let failing_at = if kn_names.is_empty() {
            HashMap::new()
        } else {
            match self.store.firing_locations(&kn_names, RULE_FAILING).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read which locations fail; will retry at the next evaluation");
                    return Vec::new();
                }
            }
        };
        // Latency quantiles, one query per probe with a latency rule.
        let mut quantiles: HashMap<String, Option<i64>> = HashMap::new();
        for (name, e) in &entries {
            let Some(l) = e.policy.latency else { continue };
            let from = now - chrono::Duration::from_std(l.over).unwrap_or(chrono::Duration::zero());
            let to = now + chrono::Duration::minutes(1);
            match self
                .store
                .quantile(name, 0, Resolution::Minute, from, to, l.quantile)
                .await
            {
                Ok(q) => {
                    quantiles.insert(name.clone(), q);
                }
                Err(e) => {
                    tracing::warn!(probe = %name, error = %e, "cannot read latency for the latency rule; will retry at the next evaluation");
                }
            }
        }

        let mut alerts = lock(&self.alerts);
        let mut changes = Vec::new();
        for (name, entry) in &entries {
            let mut step = |alerts: &mut AlertMap,
                            rule: &str,
                            severity: Severity,
                            bad: Option<String>,
                            good: &str,
                            failed: Option<u32>| {
                let key = format!("{name}/{rule}/{ALL_LOCATIONS}");
                let mut a = alerts.remove(&key).unwrap_or_else(|| {
                    Box::new(Alert::new(name, rule, ALL_LOCATIONS, severity, now))
                });
                let was_active = a.is_active();
                let t = a.evaluate(bad.as_deref(), good, now, severity, (1, 1));
                if let Some(f) = failed {
                    a.failed_runs = f;
                    a.last_failure = latest_failure(alerts, name);
                }
                self.settle(alerts, key, a, t, was_active, entry, now, &mut changes);
            };
            if let Some(slo) = entry.policy.slo {
                let of = |w: Duration| {
                    counts
                        .get(name)
                        .and_then(|c| windows.iter().position(|x| *x == w).and_then(|i| c.get(i)))
                        .copied()
                        .unwrap_or_default()
                };
                for (rule, severity) in [
                    (RULE_SLO_PAGE, Severity::Page),
                    (RULE_SLO_TICKET, Severity::Ticket),
                ] {
                    let hit = burn::evaluate(&slo, severity, of);
                    let failed = hit.map(|h| u32::try_from(h.long.failures).unwrap_or(u32::MAX));
                    step(
                        &mut alerts,
                        rule,
                        severity,
                        hit.map(|h| h.reason(slo.objective)),
                        "the error budget no longer burns above the thresholds",
                        failed,
                    );
                }
            }
            let k = entry.policy.min_locations;
            if k > 1 {
                let locations = failing_at.get(name).cloned().unwrap_or_default();
                let n = u32::try_from(locations.len()).unwrap_or(u32::MAX);
                let text = format!(
                    "failing at {n} location(s){}{}; pages at {k}",
                    if locations.is_empty() { "" } else { ": " },
                    locations.join(", ")
                );
                let failed = (n >= k).then_some(n);
                step(
                    &mut alerts,
                    RULE_FAILING,
                    entry.policy.severity,
                    (n >= k).then(|| text.clone()),
                    &text,
                    failed,
                );
            }
            if let (Some(l), Some(Some(q_us))) = (entry.policy.latency, quantiles.get(name)) {
                let above_us = i64::try_from(l.above.as_micros()).unwrap_or(i64::MAX);
                let text = format!(
                    "p{} of the total latency over the last {} is {:.1}ms",
                    l.quantile * 100.0,
                    humantime::format_duration(l.over),
                    *q_us as f64 / 1000.0
                );
                let bad = (*q_us > above_us)
                    .then(|| format!("{text}, above {}", humantime::format_duration(l.above)));
                let good = format!("{text}, back under {}", humantime::format_duration(l.above));
                step(&mut alerts, RULE_LATENCY, l.severity, bad, &good, None);
            }
        }
        changes
    }
}

/// Whether a transition begins a new incident (its failed-run count starts over).
fn starts_incident(t: &Transition) -> bool {
    t.to == State::Pending || (t.to == State::Firing && t.from != State::Pending)
}

/// The newest last failure among a probe's `failing` alerts (any location).
fn latest_failure(alerts: &AlertMap, probe: &str) -> Option<Box<LastFailure>> {
    alerts
        .values()
        .filter(|a| a.probe == probe && a.rule == RULE_FAILING)
        .filter_map(|a| a.last_failure.clone())
        .max_by_key(|f| f.at)
}

/// Holds the evaluator lock on a connection of its own; `None` while another replica holds it.
struct Leadership {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl Leadership {
    /// Keeps or takes the lock; returns whether this replica holds it now.
    async fn check(&mut self, store: &Store) -> bool {
        if let Some(c) = self.conn.as_mut() {
            if sqlx::query("select 1").execute(&mut **c).await.is_ok() {
                return true;
            }
            tracing::warn!("lost the connection holding the alert evaluator lock; another replica may take over");
            self.conn = None;
        }
        let Ok(mut c) = store.pool().acquire().await else {
            return false;
        };
        let got: Result<bool, _> = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(EVALUATOR_LOCK)
            .fetch_one(&mut *c)
            .await;
        if got.unwrap_or(false) {
            tracing::info!("this replica now evaluates the periodic alert rules");
            self.conn = Some(c);
            true
        } else {
            false
        }
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
                    alerts.insert(a.key.clone(), Box::new(a));
                }
                engine.loaded.store(true, Ordering::SeqCst);
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
    let mut save_tick = tokio::time::interval(Duration::from_secs(1));
    let mut evaluate = tokio::time::interval(engine.cfg().evaluate_every);
    evaluate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leadership = Leadership { conn: None };
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => unsaved.extend(engine.observe(&r)),
                None => return,
            },
            _ = save_tick.tick() => {}
            _ = evaluate.tick() => periodic(&engine, &mut leadership, &mut unsaved).await,
            _ = engine.wake.notified() => periodic(&engine, &mut leadership, &mut unsaved).await,
            _ = stop.cancelled() => {
                save(&engine.store, &mut unsaved).await;
                return;
            }
        }
        save(&engine.store, &mut unsaved).await;
    }
}

/// One periodic evaluation: silences, leadership, periodic rules, releases and reminders.
async fn periodic(
    engine: &AlertEngine,
    leadership: &mut Leadership,
    unsaved: &mut VecDeque<Change>,
) {
    let now = Utc::now();
    match engine.store.active_silences(now).await {
        Ok(s) => {
            if let Ok(mut w) = engine.api_silences.write() {
                *w = s;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read silences; keeping the last ones read"),
    }
    let was_leader = engine.leader.load(Ordering::SeqCst);
    let leader = leadership.check(&engine.store).await;
    engine.leader.store(leader, Ordering::SeqCst);
    if leader && !was_leader {
        // Another replica may have changed the all-locations alerts meanwhile.
        if let Ok(saved) = engine.store.load_alerts().await {
            let mut alerts = lock(&engine.alerts);
            alerts.retain(|_, a| a.location != ALL_LOCATIONS);
            for a in saved.into_iter().filter(|a| a.location == ALL_LOCATIONS) {
                alerts.insert(a.key.clone(), Box::new(a));
            }
        }
    }
    if leader {
        unsaved.extend(engine.evaluate_periodic(now).await);
    }
    unsaved.extend(engine.release_and_remind(now));
    engine.evaluations.fetch_add(1, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::kinds::AlertOverrides;

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
