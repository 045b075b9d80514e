//! The engine's task: load the saved state, then take runs, evaluate
//! periodically, and save every change in order (the save queue: a change
//! that cannot be saved waits, with the ones after it, and is retried).
//!
//! Postgres away or hung never stops the per-run rules: a save attempt and a
//! periodic pass are bounded ([`SAVE_TIMEOUT`], [`PERIODIC_TIMEOUT`]), and
//! after a failed save the next waits a backoff while runs go on being
//! evaluated in memory; the changes are saved, in order, when it answers.
//!
//! Nor does a start without Postgres: when the saved state cannot be read
//! within [`LOAD_GRACE`], runs are evaluated *provisionally* from a blank
//! state (each trigger sent directly, as while Postgres is away) and kept
//! ([`EARLY_MAX`] at most); once the state is read, they are evaluated again
//! from it, in order, and those changes are saved: a notice the provisional
//! pass already delivered is recorded as delivered, not sent again.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::leader::RENEW_EVERY;
use super::{AlertEngine, Input, Observed, ALL_LOCATIONS};
use super::{RULE_CERT_EXPIRY, RULE_FAILING};
use crate::alert::persist::Saved;
use crate::alert::{persist, Alert, Change, NoticeWriter, State};
use crate::store::writer::StoreHealth;

/// The longest a round of saves may take before it is abandoned (the
/// change being saved stays first in the queue).
const SAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a periodic pass may take; past it the pass is skipped.
const PERIODIC_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait after a failed save, doubling up to [`SAVE_RETRY_MAX`].
const SAVE_RETRY_MIN: Duration = Duration::from_millis(500);
const SAVE_RETRY_MAX: Duration = Duration::from_secs(10);
/// How long a start waits for the saved state before it evaluates runs
/// provisionally (a normal start reads it well within this).
pub const LOAD_GRACE: Duration = Duration::from_secs(10);
/// Runs kept for evaluating again once the saved state is read; past it
/// the oldest go (the newest runs decide an alert's state).
pub const EARLY_MAX: usize = super::QUEUE;

/// Runs evaluated provisionally while the saved state cannot be read.
#[derive(Default)]
struct Early {
    runs: VecDeque<Observed>,
    dropped: u64,
}

/// When the save queue is next tried.
struct Retry {
    at: Option<tokio::time::Instant>,
    backoff: Duration,
}

pub(super) async fn run(
    engine: Arc<AlertEngine>,
    mut rx: mpsc::Receiver<Input>,
    store_ready: Arc<StoreHealth>,
    stop: CancellationToken,
) {
    let loading = load(engine.clone(), store_ready);
    tokio::pin!(loading);
    let notices = engine.notices.clone();
    // Taken (and renewed) only once the saved state is read: a replica that
    // cannot evaluate the periodic rules must not hold the lease.
    let mut renewing = None;
    // A normal start reads the saved state before it evaluates any run.
    let mut early = tokio::select! {
        saved = &mut loading => {
            install(&engine, saved);
            renewing = Some(tokio::spawn(renew(engine.clone(), stop.clone())));
            None
        }
        () = tokio::time::sleep(LOAD_GRACE) => {
            tracing::warn!(
                "cannot read the saved alert state within {} s (Postgres away?): runs are evaluated from a blank state meanwhile and on-call is paged directly; they are evaluated again from the saved state once it is read",
                LOAD_GRACE.as_secs()
            );
            Some(Early::default())
        }
        () = stop.cancelled() => return,
    };
    let mut unsaved: VecDeque<Change> = VecDeque::new();
    let mut save_tick = tokio::time::interval(Duration::from_secs(1));
    let mut evaluate = tokio::time::interval(engine.cfg().evaluate_every);
    evaluate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term: Option<i64> = None;
    let mut retry = Retry {
        at: None,
        backoff: SAVE_RETRY_MIN,
    };
    loop {
        tokio::select! {
            r = rx.recv() => match (r, &mut early) {
                (Some(Input::Run(r)), None) => unsaved.extend(engine.observe(&r)),
                (Some(Input::Run(r)), Some(early)) => provisional(&engine, &*notices, early, r),
                (Some(Input::Adopt(probes)), None) => adopt(&engine, &probes).await,
                // The load reads every probe's alerts.
                (Some(Input::Adopt(_)), Some(_)) => {}
                (None, _) => return,
            },
            saved = &mut loading, if early.is_some() => {
                let early = early.take().unwrap_or_default();
                finish_loading(&engine, &*notices, saved, early, &mut unsaved).await;
                renewing = Some(tokio::spawn(renew(engine.clone(), stop.clone())));
            }
            _ = save_tick.tick() => {}
            _ = evaluate.tick(), if early.is_none() => periodic_bounded(&engine, &mut term, &mut unsaved).await,
            _ = engine.wake.notified(), if early.is_none() => periodic_bounded(&engine, &mut term, &mut unsaved).await,
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(SAVE_TIMEOUT, save(&engine, &*notices, &mut unsaved)).await;
                // Handed over only after the last changes are saved.
                if let Some(r) = renewing {
                    let _ = r.await;
                }
                return;
            }
        }
        if unsaved.is_empty() || retry.at.is_some_and(|t| tokio::time::Instant::now() < t) {
            continue;
        }
        let saved =
            tokio::time::timeout(SAVE_TIMEOUT, save(&engine, &*notices, &mut unsaved)).await;
        if saved.as_ref().is_ok_and(|all| *all) {
            retry.at = None;
            retry.backoff = SAVE_RETRY_MIN;
        } else {
            if saved.is_err() {
                tracing::warn!(waiting = unsaved.len(), "saving alert state got no answer from Postgres within {} s; runs are still evaluated, the changes wait", SAVE_TIMEOUT.as_secs());
            }
            // On-call is told now, not when Postgres returns.
            send_directly(&*notices, unsaved.iter());
            retry.at = Some(tokio::time::Instant::now() + retry.backoff);
            retry.backoff = (retry.backoff * 2).min(SAVE_RETRY_MAX);
        }
    }
}

/// [`periodic`], skipped when it takes longer than [`PERIODIC_TIMEOUT`]
/// (Postgres hung): the per-run rules go on meanwhile.
async fn periodic_bounded(
    engine: &AlertEngine,
    term: &mut Option<i64>,
    unsaved: &mut VecDeque<Change>,
) {
    let span = tracing::info_span!("alert.evaluate");
    if tokio::time::timeout(
        PERIODIC_TIMEOUT,
        periodic(engine, term, unsaved).instrument(span),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            "a periodic alert evaluation got no answer from Postgres within {} s; skipped, the next one runs as usual",
            PERIODIC_TIMEOUT.as_secs()
        );
    }
}

/// Renews (or takes) the evaluator lease every [`RENEW_EVERY`], apart from
/// the evaluations so a slow one never lets it lapse; wakes an evaluation
/// when this replica becomes leader. Releases it when stopped.
async fn renew(engine: Arc<AlertEngine>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_held = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let held = engine.lease.renew(&engine.store).await.is_some();
        if held && !was_held {
            tracing::info!(holder = %engine.lease.holder, "this replica now evaluates the periodic alert rules");
            engine.wake.notify_one();
        } else if !held && was_held {
            tracing::warn!(holder = %engine.lease.holder, "this replica no longer holds the evaluator lease; another replica evaluates the periodic rules");
        }
        was_held = held;
    }
    engine.lease.release(&engine.store).await;
}

/// Replaces the per-run alerts of `probes` at this location with what
/// Postgres holds (the replica that ran them before saved them); bounded:
/// on no answer the alerts stay as this replica had them.
async fn adopt(engine: &AlertEngine, probes: &[String]) {
    let loc = engine.cfg().location.clone();
    let read = tokio::time::timeout(
        SAVE_TIMEOUT,
        persist::load_probes(&engine.store, probes, &loc),
    )
    .await;
    let Ok(Ok(saved)) = read else {
        tracing::warn!(
            probes = probes.len(),
            "cannot read the alerts of probes taken over from another replica; their alerts go on from this replica's copy"
        );
        return;
    };
    let mut alerts = engine.alerts.lock();
    for p in probes {
        for rule in [RULE_FAILING, RULE_CERT_EXPIRY] {
            alerts.remove(&format!("{p}/{rule}/{loc}"));
        }
    }
    for a in saved {
        if a.rule == RULE_FAILING || a.rule == RULE_CERT_EXPIRY {
            alerts.insert(a.key.clone(), Box::new(a));
        }
    }
}

/// Reads the saved state once the database is prepared, each attempt
/// bounded by [`SAVE_TIMEOUT`], retrying with backoff until it is read.
async fn load(engine: Arc<AlertEngine>, store_ready: Arc<StoreHealth>) -> Vec<Alert> {
    // Nothing to read before the writer has created and migrated the database.
    store_ready.wait_prepared().await;
    let mut backoff = Duration::from_millis(200);
    loop {
        match tokio::time::timeout(SAVE_TIMEOUT, persist::load(&engine.store)).await {
            Ok(Ok(saved)) => return saved,
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot load alert state yet; retrying"),
            Err(_) => tracing::warn!(
                "loading alert state got no answer from Postgres within {} s; retrying",
                SAVE_TIMEOUT.as_secs()
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The saved state replaces whatever was evaluated provisionally.
fn install(engine: &AlertEngine, saved: Vec<Alert>) {
    let mut alerts = engine.alerts.lock();
    alerts.clear();
    for a in saved {
        alerts.insert(a.key.clone(), Box::new(a));
    }
    engine.loaded.store(true, Ordering::SeqCst);
}

/// The saved state is read at last: it replaces the provisional one, the
/// silences are read, and the runs since the start are evaluated again
/// from it (their changes saved). A provisional incident the saved state
/// does not hold (the alert was already firing under an earlier trigger,
/// or fires at another run) is resolved directly, so no receiver keeps it
/// open.
async fn finish_loading(
    engine: &AlertEngine,
    notices: &dyn NoticeWriter,
    saved: Vec<Alert>,
    early: Early,
    unsaved: &mut VecDeque<Change>,
) {
    let paged: Vec<Alert> = (engine.alerts.lock().values())
        .filter(|a| a.state == State::Firing && a.notified && a.location != ALL_LOCATIONS)
        .map(|a| Alert::clone(a))
        .collect();
    install(engine, saved);
    let silences = persist::active_silences(&engine.store, Utc::now());
    if let Ok(Ok(s)) = tokio::time::timeout(SAVE_TIMEOUT, silences).await {
        *engine.api_silences.write() = s;
    }
    tracing::info!(
        runs = early.runs.len(),
        dropped = early.dropped,
        "read the saved alert state; evaluating the runs since the start again from it"
    );
    for r in early.runs {
        unsaved.extend(engine.observe(&r));
    }
    for p in paged {
        let same = (engine.alerts.lock().get(&p.key))
            .is_some_and(|a| a.fired_at == p.fired_at && a.notified);
        if !same {
            let (a, n) = engine.withdrawal(&p);
            tracing::warn!(alert = %p.key, "an incident paged while the saved alert state could not be read is not the saved one: resolving it");
            notices.send_now(&a, &n);
            // Neither is saved: what was sent of them is forgotten (the
            // resolve's send, still running, then records nothing).
            notices.saved(&p, &engine.trigger_of(&p));
            notices.saved(&a, &n);
        }
    }
}

/// The per-run alerts' notices of `changes`, sent directly (each once:
/// `NoticeWriter::send_now`); the all-locations alerts' wait for Postgres.
fn send_directly<'a>(notices: &dyn NoticeWriter, changes: impl Iterator<Item = &'a Change>) {
    for c in changes.filter(|c| c.alert.location != ALL_LOCATIONS) {
        if let Some(n) = &c.notice {
            notices.send_now(&c.alert, n);
        }
    }
}

/// A run while the saved state cannot be read: evaluated from what the
/// runs since the start say, its triggers (and their resolves) sent
/// directly, nothing saved; kept to be evaluated again from the saved state.
fn provisional(engine: &AlertEngine, notices: &dyn NoticeWriter, early: &mut Early, r: Observed) {
    send_directly(notices, engine.observe(&r).iter());
    if early.runs.len() >= EARLY_MAX {
        early.runs.pop_front();
        early.dropped += 1;
        if early.dropped == 1 {
            tracing::warn!(kept = EARLY_MAX, "still no saved alert state: the oldest runs since the start will not be evaluated again from it");
        }
    }
    early.runs.push_back(r);
}

/// One periodic evaluation: silences, leadership, periodic rules, releases
/// and reminders. `term`: the lease term of the last evaluation as leader.
async fn periodic(engine: &AlertEngine, term: &mut Option<i64>, unsaved: &mut VecDeque<Change>) {
    let now = Utc::now();
    match persist::active_silences(&engine.store, now).await {
        Ok(s) => *engine.api_silences.write() = s,
        Err(e) => tracing::warn!(error = %e, "cannot read silences; keeping the last ones read"),
    }
    let now_term = engine.lease.term();
    let leader = now_term.is_some();
    if leader && now_term != *term {
        // A new term: another replica may have changed the all-locations
        // alerts meanwhile; what this one left unsaved under an older term
        // is dropped (its save would be refused).
        unsaved.retain(|c| c.alert.location != ALL_LOCATIONS);
        if let Ok(saved) = persist::load(&engine.store).await {
            let mut alerts = engine.alerts.lock();
            alerts.retain(|_, a| a.location != ALL_LOCATIONS);
            for a in saved.into_iter().filter(|a| a.location == ALL_LOCATIONS) {
                alerts.insert(a.key.clone(), Box::new(a));
            }
        }
    }
    *term = now_term;
    if leader {
        unsaved.extend(engine.evaluate_periodic(now).await);
    }
    unsaved.extend(engine.release_and_remind(now));
    engine.evaluations.fetch_add(1, Ordering::SeqCst);
}

/// Saves changes in order; stops at the first failure and keeps the rest
/// for later. Returns whether every change was saved. A change to an all-locations alert is saved under the lease
/// (fenced): dropped when this replica no longer holds it, or when Postgres
/// says another replica took it meanwhile; the new leader evaluates again.
/// A per-run alert's change is saved only over the row it was made from
/// ([`crate::alert::Before`]); when refused, the alert is read again.
async fn save(
    engine: &AlertEngine,
    notices: &dyn NoticeWriter,
    unsaved: &mut VecDeque<Change>,
) -> bool {
    while let Some(change) = unsaved.front() {
        let fence = if change.alert.location == ALL_LOCATIONS {
            let Some(t) = engine.lease.term() else {
                tracing::warn!(alert = %change.alert.key, "dropping a change of an all-locations alert: this replica no longer holds the evaluator lease");
                unsaved.pop_front();
                continue;
            };
            Some(engine.lease.fence(t))
        } else {
            None
        };
        match persist::save(&engine.store, change, notices, fence).await {
            Ok(Saved::Written) => {
                if let Some(n) = &change.notice {
                    notices.saved(&change.alert, n);
                }
                unsaved.pop_front();
            }
            Ok(Saved::Fenced) => {
                tracing::warn!(alert = %change.alert.key, "dropping a change of an all-locations alert: another replica took the evaluator lease");
                unsaved.pop_front();
            }
            Ok(Saved::Stale) => {
                // Another replica ran the probe's ticks too and saved first:
                // this copy's changes of the probe's alerts here go, and
                // they are read again (together: `adopt` reads them all).
                let (key, probe) = (change.alert.key.clone(), change.alert.probe.clone());
                let location = change.alert.location.clone();
                tracing::info!(alert = %key, "another replica of this location saved this alert first (it ran the probe too, in a handover); reading it again");
                unsaved.retain(|c| {
                    let keep = c.alert.probe != probe || c.alert.location != location;
                    if let (false, Some(n)) = (keep, &c.notice) {
                        // Never saved: what was sent of it directly is forgotten.
                        notices.saved(&c.alert, n);
                    }
                    keep
                });
                adopt(engine, &[probe]).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, waiting = unsaved.len(), "cannot save alert state; will retry");
                return false;
            }
        }
    }
    true
}
