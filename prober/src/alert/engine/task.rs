//! The engine's task: load the saved state, then take runs, evaluate
//! periodically, and save every change in order (the save queue: a change
//! that cannot be saved waits, with the ones after it, and is retried).
//!
//! Postgres away or hung never stops the per-run rules: a save attempt and a
//! periodic pass are bounded ([`SAVE_TIMEOUT`], [`PERIODIC_TIMEOUT`]), and
//! after a failed save the next waits a backoff while runs go on being
//! evaluated in memory; the changes are saved, in order, when it answers.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::leader::RENEW_EVERY;
use super::{AlertEngine, Input, ALL_LOCATIONS};
use super::{RULE_CERT_EXPIRY, RULE_FAILING};
use crate::alert::persist::Saved;
use crate::alert::{persist, Change, NoticeWriter};

/// The longest a round of saves may take before it is abandoned (the
/// change being saved stays first in the queue).
const SAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a periodic pass may take; past it the pass is skipped.
const PERIODIC_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait after a failed save, doubling up to [`SAVE_RETRY_MAX`].
const SAVE_RETRY_MIN: Duration = Duration::from_millis(500);
const SAVE_RETRY_MAX: Duration = Duration::from_secs(10);

/// When the save queue is next tried.
struct Retry {
    at: Option<tokio::time::Instant>,
    backoff: Duration,
}

pub(super) async fn run(
    engine: Arc<AlertEngine>,
    mut rx: mpsc::Receiver<Input>,
    stop: CancellationToken,
) {
    if !load(&engine, &stop).await {
        return;
    }
    let mut unsaved: VecDeque<Change> = VecDeque::new();
    let mut save_tick = tokio::time::interval(Duration::from_secs(1));
    let mut evaluate = tokio::time::interval(engine.cfg().evaluate_every);
    evaluate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term: Option<i64> = None;
    let notices = engine.notices.clone();
    let renewing = tokio::spawn(renew(engine.clone(), stop.clone()));
    let mut retry = Retry {
        at: None,
        backoff: SAVE_RETRY_MIN,
    };
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(Input::Run(r)) => unsaved.extend(engine.observe(&r)),
                Some(Input::Adopt(probes)) => adopt(&engine, &probes).await,
                None => return,
            },
            _ = save_tick.tick() => {}
            _ = evaluate.tick() => periodic_bounded(&engine, &mut term, &mut unsaved).await,
            _ = engine.wake.notified() => periodic_bounded(&engine, &mut term, &mut unsaved).await,
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(SAVE_TIMEOUT, save(&engine, &*notices, &mut unsaved)).await;
                // Handed over only after the last changes are saved.
                let _ = renewing.await;
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
            // On-call is told now, not when Postgres returns: the per-run
            // alerts' notices go out directly (each once).
            for c in unsaved.iter().filter(|c| c.alert.location != ALL_LOCATIONS) {
                if let Some(n) = &c.notice {
                    notices.send_now(&c.alert, n);
                }
            }
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
    if tokio::time::timeout(PERIODIC_TIMEOUT, periodic(engine, term, unsaved))
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

/// Loads the saved state before anything is evaluated (runs wait in the
/// channel meanwhile), retrying with backoff; false if stopped first.
async fn load(engine: &AlertEngine, stop: &CancellationToken) -> bool {
    let mut backoff = Duration::from_millis(200);
    loop {
        match persist::load(&engine.store).await {
            Ok(saved) => {
                let mut alerts = engine.alerts.lock();
                for a in saved {
                    alerts.insert(a.key.clone(), Box::new(a));
                }
                engine.loaded.store(true, Ordering::SeqCst);
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load alert state yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
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
            Err(e) => {
                tracing::warn!(error = %e, waiting = unsaved.len(), "cannot save alert state; will retry");
                return false;
            }
        }
    }
    true
}
