//! A prober started while Postgres is away (issue 18, item 5): its per-run
//! rules page on-call before the saved alert state can be read, and once it
//! is read the runs since the start are evaluated again from it, so what
//! was already told is recorded, not sent again, and an alert that was
//! firing before the restart resolves.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prober::daemon::{http_executor, Daemon};
use sqlx::PgPool;

use crate::helpers::{probes, switchable_target, wait_for};
use crate::notify::FakeReceiver;
use crate::write_faults::paging_through_a_proxy;

fn failing_probe(url: &str) -> String {
    format!(
        "name: shop\nevery: 1s\ntimeout: 900ms\nalert: {{failures_to_fire: 2, successes_to_resolve: 2}}\nhttp: {{url: \"{url}\"}}\n"
    )
}

fn events(hook: &FakeReceiver) -> Vec<String> {
    (hook.accepted().into_iter())
        .map(|r| r.json()["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The notifications recorded, in order: (event, delivered), once there are `n`.
async fn recorded(pool: &PgPool, n: usize) -> Vec<(String, bool)> {
    let mut rows = Vec::new();
    for _ in 0..300 {
        rows = sqlx::query_as::<_, (String, bool)>(
            "select event, delivered_at is not null from notifications order by id",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        if rows.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rows
}

async fn alert_state(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar("select state from alerts where alert_key = 'shop/failing/test-lab'")
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// A first process whose probe failed and paged (saved), then stopped.
struct Paged {
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    hook: FakeReceiver,
    db: crate::db::TestDb,
    proxy: crate::helpers::Proxy,
    settings: prober::config::settings::Settings,
    yaml: String,
    pool: PgPool,
}

async fn paged_before_a_restart() -> Paged {
    let (url, status) = switchable_target().await;
    status.store(503, Ordering::SeqCst);
    let (hook, db, proxy, settings) = paging_through_a_proxy().await;
    let yaml = failing_probe(&url);
    let first = Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let pool = db.pool().await;
    assert_eq!(recorded(&pool, 1).await.len(), 1, "the first process pages");
    assert!(wait_for(Duration::from_secs(10), || events(&hook) == ["trigger"]).await);
    first.shutdown().await;
    Paged {
        status,
        hook,
        db,
        proxy,
        settings,
        yaml,
        pool,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_without_postgres_it_pages_and_records_the_incident_once_postgres_is_back() {
    let _shared = crate::helpers::TIMING.read().await;
    let (url, status) = switchable_target().await;
    status.store(503, Ordering::SeqCst);
    let (hook, db, proxy, s) = paging_through_a_proxy().await;
    proxy.cut();
    let daemon = Daemon::start(&s, probes(&failing_probe(&url)), http_executor().unwrap())
        .await
        .unwrap();
    let alerts = daemon.core.alerts.clone();
    assert!(
        wait_for(Duration::from_secs(30), || events(&hook) == ["trigger"]).await,
        "paged before Postgres was ever reached: {:?}",
        hook.requests()
    );
    status.store(200, Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(20), || events(&hook)
            == ["trigger", "resolve"])
        .await,
        "told of the recovery: {:?}",
        events(&hook)
    );
    assert!(!alerts.loaded.load(Ordering::SeqCst), "no state was read");

    proxy.restore();
    assert!(
        wait_for(Duration::from_secs(30), || alerts
            .loaded
            .load(Ordering::SeqCst))
        .await,
        "the saved state is read once Postgres answers"
    );
    let pool = db.pool().await;
    assert_eq!(
        recorded(&pool, 2).await,
        [("trigger".to_string(), true), ("resolve".to_string(), true)],
        "the incident is recorded, its notices as delivered"
    );
    assert_eq!(alert_state(&pool).await.as_deref(), Some("resolved"));
    let history: Vec<String> =
        sqlx::query_scalar("select to_state from alert_transitions order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(history, ["pending", "firing", "resolved"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(events(&hook), ["trigger", "resolve"], "nothing sent twice");
    daemon.shutdown().await;
}

/// The alert fired (and was saved) before a restart; the target recovers
/// while the new process cannot read Postgres. Evaluated from a blank state
/// nothing moves, so only the evaluation again from the saved state, once
/// it is read, resolves the incident on-call was paged for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_firing_before_a_start_without_postgres_resolves_once_it_is_read() {
    let _shared = crate::helpers::TIMING.read().await;
    let Paged {
        status,
        hook,
        db: _db,
        proxy,
        settings: s,
        yaml,
        pool,
    } = paged_before_a_restart().await;

    proxy.cut();
    status.store(200, Ordering::SeqCst);
    let second = Daemon::start(&s, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let alerts = second.core.alerts.clone();
    // Past the grace: runs are evaluated provisionally, and nothing moves.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(!alerts.loaded.load(Ordering::SeqCst));
    assert_eq!(events(&hook), ["trigger"]);

    proxy.restore();
    assert!(
        wait_for(Duration::from_secs(30), || events(&hook)
            == ["trigger", "resolve"])
        .await,
        "resolved from the saved state once it is read: {:?}",
        events(&hook)
    );
    assert_eq!(alert_state(&pool).await.as_deref(), Some("resolved"));
    assert_eq!(
        recorded(&pool, 2).await,
        [("trigger".to_string(), true), ("resolve".to_string(), true)]
    );
    second.shutdown().await;
}

/// The alert fired before a restart and its failures go on while the new
/// process cannot read Postgres: evaluated from a blank state it pages a
/// second incident. Once the saved state is read, that incident is
/// resolved (so no receiver keeps it open) and the saved one goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_incident_paged_before_the_state_is_read_is_resolved_once_it_is() {
    let _shared = crate::helpers::TIMING.read().await;
    let Paged {
        status: _,
        hook,
        db: _db,
        proxy,
        settings: s,
        yaml,
        pool,
    } = paged_before_a_restart().await;

    proxy.cut();
    let second = Daemon::start(&s, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || events(&hook)
            == ["trigger", "trigger"])
        .await,
        "paged again before the saved state is read: {:?}",
        events(&hook)
    );
    proxy.restore();
    assert!(
        wait_for(Duration::from_secs(30), || events(&hook)
            == ["trigger", "trigger", "resolve"])
        .await,
        "the second incident is resolved: {:?}",
        events(&hook)
    );
    let keys: Vec<String> = (hook.accepted().into_iter())
        .map(|r| r.json()["dedup_key"].as_str().unwrap_or("").to_string())
        .collect();
    assert_ne!(keys[0], keys[1], "two incidents");
    assert_eq!(keys[2], keys[1], "the resolve closes the second");
    assert_eq!(alert_state(&pool).await.as_deref(), Some("firing"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        recorded(&pool, 1).await,
        [("trigger".to_string(), true)],
        "the saved incident goes on, paged once"
    );
    second.shutdown().await;
}
