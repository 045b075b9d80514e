//! Alerts against the real daemon: fire after consecutive failures, resolve
//! after consecutive successes, and continue across a restart without a
//! duplicate transition; and a change's transition and notifications are
//! saved in one transaction (alert's persist with notify's outbox).

use std::sync::atomic::Ordering;
use std::time::Duration;

use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use serde_json::Value;

use crate::db::TestDb;
use crate::helpers::{http_get, probes, switchable_target as switchable, wait_for};

async fn start(db: &TestDb, url: &str) -> Daemon {
    let yaml = format!(
        "name: checkout\nevery: 1s\ntimeout: 500ms\nalert: {{failures_to_fire: 3, successes_to_resolve: 2, severity: page}}\nhttp: {{url: \"{url}\"}}\n"
    );
    let settings = Settings {
        database_url: db.url.clone(),
        location: "lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        ..Settings::default()
    };
    Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap()
}

async fn get(d: &Daemon, path: &str) -> Value {
    let (code, body) = http_get(d.addr, path).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn transitions(d: &Daemon) -> Vec<(String, String)> {
    let h = get(d, "/api/v1/alerts/history?probe=checkout").await;
    let mut v: Vec<(String, String)> = h["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_string(),
                t["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.reverse();
    v
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_resolves_and_continues_across_a_restart_without_duplicates() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let (url, status) = switchable().await;
    status.store(503, Ordering::SeqCst);
    let d = start(&db, &url).await;

    let engine = d.core.alerts.clone();
    let fired = wait_for(Duration::from_secs(15), || {
        engine
            .active()
            .iter()
            .any(|a| a.state == prober::alert::State::Firing)
    })
    .await;
    assert!(fired, "three failed runs fire the alert");
    let list = get(&d, "/api/v1/alerts").await;
    let a = &list["alerts"][0];
    assert_eq!(a["key"], "checkout/failing/lab");
    assert_eq!(a["state"], "firing");
    assert_eq!(a["severity"], "page");
    assert_eq!(a["last_error"]["class"], "http_status");
    // Saving happens right after the change (or within a second): give it that second.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        transitions(&d).await,
        pairs(&[("ok", "pending"), ("pending", "firing")])
    );
    d.shutdown().await;

    // A restart while the target still fails: the alert is still firing, and fires no second time.
    let d = start(&db, &url).await;
    let engine = d.core.alerts.clone();
    assert!(
        wait_for(Duration::from_secs(10), || engine
            .loaded
            .load(Ordering::SeqCst))
        .await
    );
    assert_eq!(engine.active()[0].state, prober::alert::State::Firing);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        transitions(&d).await,
        pairs(&[("ok", "pending"), ("pending", "firing")])
    );

    // Two successful runs resolve it, once.
    status.store(200, Ordering::SeqCst);
    let resolved = wait_for(Duration::from_secs(10), || engine.active().is_empty()).await;
    assert!(resolved, "two successful runs resolve the alert");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        transitions(&d).await,
        pairs(&[
            ("ok", "pending"),
            ("pending", "firing"),
            ("firing", "resolved")
        ])
    );
    d.shutdown().await;
}

/// Records no notification: the outbox failing inside the save's transaction.
struct RefusingOutbox;

impl prober::alert::NoticeWriter for RefusingOutbox {
    fn write<'a>(
        &'a self,
        _tx: &'a mut sqlx::PgConnection,
        _alert: &'a prober::alert::Alert,
        _notice: &'a prober::alert::Notice,
    ) -> prober::alert::change::WriteFuture<'a> {
        Box::pin(async {
            Err(prober::store::StoreError::new(
                "the outbox refused",
                prober::store::Cause::Other,
            ))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_and_its_notifications_are_saved_together_or_not_at_all() {
    use prober::alert::{persist, Alert, Change, Event, Notice, Severity, State, Transition};
    use prober::config::receivers::{Receiver, ReceiverKind};
    use prober::notify::{outbox, Receivers, Routing};

    let db = TestDb::create().await;
    let store = prober::store::Store::new(&db.url, "lab").unwrap();
    store.migrate().await.unwrap();
    let routing = || {
        Receivers::new(Routing {
            receivers: vec![Receiver {
                name: "hook".into(),
                kind: ReceiverKind::Webhook,
                url: "http://127.0.0.1:9/hook".into(),
                secret: None,
                routing_key: None,
                labels: Default::default(),
            }],
            ..Routing::default()
        })
    };
    let now = chrono::Utc::now();
    let change = |alert: &Alert, from: State, event: Event| Change {
        alert: alert.clone(),
        transition: Some(Transition {
            key: alert.key.clone(),
            from,
            to: alert.state,
            at: now,
            reason: format!("{from:?} to {:?}", alert.state),
        }),
        notice: Some(Notice {
            event,
            reason: "why".into(),
            probe: Default::default(),
        }),
        before: prober::alert::Before {
            state: from,
            since: alert.since,
            last_notified_at: alert.last_notified_at,
        },
    };
    let mut a = Alert::new("checkout", "failing", "lab", Severity::Page, now);
    a.state = State::Firing;
    a.fired_at = Some(now);
    a.notified = true;
    let fired = change(&a, State::Pending, Event::Trigger);
    a.state = State::Resolved;
    a.resolved_at = Some(now);
    let resolved = change(&a, State::Firing, Event::Resolve);

    persist::save(&store, &fired, &outbox::Outbox::new(routing()), None)
        .await
        .unwrap();
    let refused = persist::save(&store, &resolved, &RefusingOutbox, None).await;

    assert!(refused.is_err(), "the save reports the outbox's failure");
    let saved = persist::load(&store).await.unwrap();
    assert_eq!(
        saved.iter().map(|a| a.state).collect::<Vec<_>>(),
        [State::Firing],
        "the refused resolve left the alert as it was"
    );
    let history = persist::history(&store, Some("checkout"), 10)
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|(t, _)| t.to).collect::<Vec<_>>(),
        [State::Firing],
        "and recorded no transition"
    );
    let rows = outbox::notifications(&store, &a.key).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.receiver.as_str(), r.event.as_str()))
            .collect::<Vec<_>>(),
        [("hook", "trigger")],
        "the trigger was recorded with its transition"
    );

    // A worker claims one notification at a time: one that dies holding a
    // claim (mid-send) delays only that one, not a batch; another worker
    // sends the next at once, and the claimed one after the lease.
    let mut b = Alert::new("payments", "failing", "lab", Severity::Page, now);
    b.state = State::Firing;
    b.notified = true;
    let fired_b = change(&b, State::Pending, Event::Trigger);
    persist::save(&store, &fired_b, &outbox::Outbox::new(routing()), None)
        .await
        .unwrap();
    use prober::notify::worker::{CLAIM, LEASE};
    let crashed = outbox::claim(&store, CLAIM, LEASE, Some("instance-a"))
        .await
        .unwrap();
    assert_eq!(crashed.len(), 1, "one claimed at a time");
    let next = outbox::claim(&store, CLAIM, LEASE, Some("instance-b"))
        .await
        .unwrap();
    assert_eq!(
        next.len(),
        1,
        "the next is not held by the crashed worker's claim"
    );
    assert_ne!(next[0].id, crashed[0].id);
    assert!(outbox::claim(&store, CLAIM, LEASE, None)
        .await
        .unwrap()
        .is_empty());

    // The crashed worker's instance restarts (same spool directory, so
    // none of its claims is in flight): its claim is due at once, not
    // after the lease; another instance's claim is left alone.
    assert_eq!(outbox::recover(&store, "instance-c").await.unwrap(), 0);
    assert_eq!(outbox::recover(&store, "instance-a").await.unwrap(), 1);
    let again = outbox::claim(&store, CLAIM, LEASE, Some("instance-a"))
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|c| c.id).collect::<Vec<_>>(),
        [crashed[0].id],
        "the restarted instance sends its interrupted notification again at once"
    );
    assert_eq!(again[0].dedup_key, crashed[0].dedup_key);
    // Settled, a claim is no longer the instance's: a later restart
    // does not make a backed-off retry due early.
    let at = chrono::Utc::now() + chrono::TimeDelta::minutes(5);
    outbox::retry(&store, again[0].id, at, "refused")
        .await
        .unwrap();
    assert_eq!(outbox::recover(&store, "instance-a").await.unwrap(), 0);
}

/// A silence an operator made permanent by hand (`ends_at = 'infinity'`,
/// which the table's checks allow) is read as an open end: its decoding
/// once failed and stopped the alert engine on every replica.
#[tokio::test]
async fn a_silence_without_end_set_by_hand_is_read_not_fatal() {
    use chrono::{Datelike, Utc};
    use prober::alert::persist;

    let db = TestDb::create().await;
    let store = prober::store::Store::new(&db.url, "lab").unwrap();
    store.migrate().await.unwrap();
    sqlx::query(
        "insert into silences (id, matchers, starts_at, ends_at, comment, created_by)
         values ('00000000-0000-0000-0000-000000000001', '{\"team\": \"pay\"}',
                 '-infinity', 'infinity', 'freeze', 'ops')",
    )
    .execute(&db.pool().await)
    .await
    .unwrap();
    let active = persist::active_silences(&store, Utc::now()).await.unwrap();
    assert_eq!(active.len(), 1, "{active:?}");
    assert!(
        prober::config::policy::is_open_end(&active[0].ends_at),
        "{active:?}"
    );
    assert_eq!(active[0].starts_at.year(), 1);
    assert_eq!(persist::silences(&store, None).await.unwrap().len(), 1);
}
