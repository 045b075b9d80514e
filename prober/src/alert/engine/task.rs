//! The engine's task: load the saved state, then take runs, evaluate
//! periodically, and save every change in order (the save queue: a change
//! that cannot be saved waits, with the ones after it, and is retried).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::leader::Leadership;
use super::{AlertEngine, ALL_LOCATIONS};
use crate::alert::{persist, Change, NoticeWriter};
use crate::run::RunRecord;
use crate::store::Store;

pub(super) async fn run(
    engine: Arc<AlertEngine>,
    mut rx: mpsc::Receiver<RunRecord>,
    stop: CancellationToken,
) {
    if !load(&engine, &stop).await {
        return;
    }
    let mut unsaved: VecDeque<Change> = VecDeque::new();
    let mut save_tick = tokio::time::interval(Duration::from_secs(1));
    let mut evaluate = tokio::time::interval(engine.cfg().evaluate_every);
    evaluate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leadership = Leadership::default();
    let notices = engine.notices.clone();
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
                save(&engine.store, &*notices, &mut unsaved).await;
                return;
            }
        }
        save(&engine.store, &*notices, &mut unsaved).await;
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

/// One periodic evaluation: silences, leadership, periodic rules, releases and reminders.
async fn periodic(
    engine: &AlertEngine,
    leadership: &mut Leadership,
    unsaved: &mut VecDeque<Change>,
) {
    let now = Utc::now();
    match persist::active_silences(&engine.store, now).await {
        Ok(s) => *engine.api_silences.write() = s,
        Err(e) => tracing::warn!(error = %e, "cannot read silences; keeping the last ones read"),
    }
    let was_leader = engine.leader.load(Ordering::SeqCst);
    let leader = leadership.check(&engine.store).await;
    engine.leader.store(leader, Ordering::SeqCst);
    if leader && !was_leader {
        // Another replica may have changed the all-locations alerts meanwhile.
        if let Ok(saved) = persist::load(&engine.store).await {
            let mut alerts = engine.alerts.lock();
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
async fn save(store: &Store, notices: &dyn NoticeWriter, unsaved: &mut VecDeque<Change>) {
    while let Some(change) = unsaved.front() {
        match persist::save(store, change, notices).await {
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
