//! The write path against hostile input and a failing database (issue 14,
//! item 7): a target answering NUL bytes, a run Postgres refuses for its
//! content, replies withheld by a proxy, the database dropped and created
//! again empty. In each, every run that can be written is written exactly once,
//! `/readyz` says what is wrong while it is, and writes resume by themselves.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use prober::store::writer::StoreState;
use prober::store::{Store, REDUCED_MESSAGE};
use sqlx::Connection;

use crate::db::{server_url, TestDb};
use crate::helpers::{http_get, probes, wait_for, FakeTarget, Proxy};

use crate::helpers::daemon_settings as settings;

fn ok_probes(target: &FakeTarget, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "- name: good-{i}\n  every: 1s\n  timeout: 900ms\n  http: {{url: \"{}\"}}\n",
                target.url("/ok")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_and_refused_runs_never_stop_the_writer_and_every_run_is_stored_once() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    // A run Postgres refuses for its content even once cleaned: a check
    // constraint stands in for whatever else Postgres may refuse.
    Store::new(&db.url, "test-lab")
        .unwrap()
        .migrate()
        .await
        .unwrap();
    sqlx::query(
        "alter table runs add constraint test_refuses check (error_message not like '%refuse-me%')",
    )
    .execute(&db.pool().await)
    .await
    .unwrap();
    let yaml = format!(
        "{}\
- name: nul-text
  every: 1s
  timeout: 900ms
  http: {{url: \"{nul}\"}}
  expect: {{body_contains: [\"absent\"]}}
- name: nul-steps
  every: 1s
  timeout: 900ms
  steps:
    - name: read
      http: {{url: \"{nul}\"}}
      expect: {{body_contains: [\"absent\"]}}
- name: nul-json
  every: 1s
  timeout: 900ms
  steps:
    - name: read
      http: {{url: \"{json}\"}}
      expect: {{json: [{{path: $.status, equals: \"ok\"}}]}}
- name: refused
  every: 1s
  timeout: 900ms
  http: {{url: \"{refused}\"}}
  expect: {{body_contains: [\"absent\"]}}
",
        ok_probes(&target, 2),
        nul = target.url("/nul"),
        json = target.url("/nuljson"),
        refused = target.url("/echo/refuse-me"),
    );
    let daemon = Daemon::start(
        &settings(db.url.clone()),
        probes(&yaml),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let health = daemon.store_health.clone();
    assert!(
        wait_for(Duration::from_secs(30), || {
            health.runs_written.load(Ordering::SeqCst) >= 24
                && health.rows_reduced.load(Ordering::SeqCst) >= 3
        })
        .await,
        "runs of every probe are written (written {}, reduced {}, state {:?})",
        health.runs_written.load(Ordering::SeqCst),
        health.rows_reduced.load(Ordering::SeqCst),
        health.state()
    );
    assert_eq!(health.state(), StoreState::Ok);
    let (code, page) = http_get(daemon.addr, "/metrics").await;
    assert_eq!(code, 200);
    let reduced_metric = page
        .lines()
        .find_map(|l| l.strip_prefix("prober_store_rows_reduced_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("prober_store_rows_reduced_total in:\n{page}"));
    assert!(reduced_metric >= 3.0, "{reduced_metric}");
    let stats = daemon.scheduler_stats.clone();
    let queue = daemon.queue.clone();
    daemon.shutdown().await;

    let finished = stats.runs_finished.load(Ordering::SeqCst) as i64;
    let (rows, distinct) = db.count_runs().await;
    assert_eq!(queue.dropped(), 0);
    assert_eq!(rows, finished, "every run is in the database");
    assert_eq!(distinct, rows, "none twice");
    assert_eq!(health.rows_refused.load(Ordering::SeqCst), 0);

    let pool = db.pool().await;
    let per_probe: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "select probe, count(*),
                count(*) filter (where error_message like '%' || chr(65533) || '%'),
                count(*) filter (where error_message = $1 and error_class = 'assertion')
         from runs_view group by probe order by probe",
    )
    .bind(REDUCED_MESSAGE)
    .fetch_all(&pool)
    .await
    .unwrap();
    let names: Vec<&str> = per_probe.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "good-0",
            "good-1",
            "nul-json",
            "nul-steps",
            "nul-text",
            "refused"
        ]
    );
    for (probe, n, replaced, reduced) in &per_probe {
        assert!(*n >= 1, "{probe}");
        match probe.as_str() {
            // The NUL became U+FFFD; the run keeps its message.
            "nul-text" | "nul-steps" => assert_eq!(replaced, n, "{probe}"),
            // Refused whole, then stored without message or detail, and counted.
            "refused" => {
                assert_eq!(reduced, n, "{probe}");
                assert_eq!(*n as u64, health.rows_reduced.load(Ordering::SeqCst));
            }
            _ => assert_eq!(*reduced, 0, "{probe}"),
        }
    }
    // The scenario's step detail (jsonb) was stored, cleaned.
    let steps: i64 = sqlx::query_scalar(
        "select count(*) from runs r join probes p on p.id = r.probe_id
         where p.name = 'nul-steps' and r.detail::text like '%' || chr(65533) || '%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(steps, per_probe[3].1, "every nul-steps run has its detail");
    // The alert of the failing probe was saved too, its message cleaned.
    let alert: Option<String> = sqlx::query_scalar(
        "select last_error_message from alerts where probe = 'nul-text' and rule = 'failing'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap();
    let alert = alert.expect("the nul-text alert is saved");
    assert!(alert.contains('\u{FFFD}'), "{alert}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_replies_make_readyz_unready_and_every_run_is_written_once_after() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let daemon = Daemon::start(
        &settings(db.url_via(proxy.addr)),
        probes(&ok_probes(&target, 3)),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let written = || daemon.store_health.runs_written.load(Ordering::SeqCst);
    assert!(wait_for(Duration::from_secs(15), || written() >= 3).await);
    let (code, _) = http_get(daemon.addr, "/readyz").await;
    assert_eq!(code, 200);

    proxy.hold();
    let degraded = wait_for(Duration::from_secs(30), || {
        matches!(daemon.store_health.state(), StoreState::Degraded { .. })
    })
    .await;
    assert!(
        degraded,
        "a write that gets no answer marks the store degraded"
    );
    let (code, body) = http_get(daemon.addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["store"]["state"], "degraded", "{body}");
    let reason = ready["store"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("has not finished for")
            || reason.contains("no connection to Postgres within"),
        "the reason says Postgres does not answer: {body}"
    );
    assert!(ready["store"]["since"].is_string(), "{body}");
    assert!(ready["store_degraded_for_s"].is_number(), "{body}");
    let (_, page) = http_get(daemon.addr, "/metrics").await;
    assert!(page.lines().any(|l| l == "prober_store_up 0"), "{page}");

    proxy.release();
    let drained = wait_for(Duration::from_secs(60), || {
        daemon.queue.is_empty() && daemon.store_health.state() == StoreState::Ok
    })
    .await;
    assert!(drained, "writes resume once the replies come");
    let (code, body) = http_get(daemon.addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let stats = daemon.scheduler_stats.clone();
    let queue = daemon.queue.clone();
    daemon.shutdown().await;

    let finished = stats.runs_finished.load(Ordering::SeqCst) as i64;
    let (rows, distinct) = db.count_runs().await;
    assert_eq!(queue.dropped(), 0);
    assert_eq!(rows, finished, "every run is in the database");
    assert_eq!(distinct, rows, "none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_dropped_and_created_again_empty_is_prepared_again_and_written_to() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let daemon = Daemon::start(
        &settings(db.url.clone()),
        probes(&ok_probes(&target, 3)),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let health = daemon.store_health.clone();
    let stats = daemon.scheduler_stats.clone();
    assert!(
        wait_for(Duration::from_secs(15), || health
            .runs_written
            .load(Ordering::SeqCst)
            >= 3)
        .await
    );

    // A restore or a failover to a fresh primary: the same name, nothing in it.
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .unwrap();
    sqlx::query(&format!("drop database {} with (force)", db.name))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(e) = sqlx::query(&format!("create database {}", db.name))
        .execute(&mut admin)
        .await
    {
        // The daemon may have created it first: that is fine too.
        assert!(e.to_string().contains("already exists"), "{e}");
    }
    let back = stats.runs_finished.load(Ordering::SeqCst);
    let written_then = health.runs_written.load(Ordering::SeqCst);

    let resumed = wait_for(Duration::from_secs(30), || {
        health.runs_written.load(Ordering::SeqCst) >= written_then + 6
            && health.state() == StoreState::Ok
    })
    .await;
    assert!(
        resumed,
        "writes resume by themselves (state {:?})",
        health.state()
    );
    let queue = daemon.queue.clone();
    daemon.shutdown().await;

    let finished = stats.runs_finished.load(Ordering::SeqCst) as i64;
    let (rows, distinct) = db.count_runs().await;
    assert_eq!(queue.dropped(), 0);
    assert_eq!(distinct, rows, "none twice");
    assert!(
        rows >= finished - back as i64,
        "every run made after the database came back is written ({rows} rows, {} runs since)",
        finished - back as i64
    );
    // The ids cached before the drop were forgotten: every row joins its
    // probe, version, location and build in the new database.
    let pool = db.pool().await;
    let (view, probes): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct probe) from runs_view")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(view, rows);
    assert_eq!(probes, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_on_postgres_is_reported_with_its_reason_and_lands_once_it_can() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let daemon = Daemon::start(
        &settings(db.url.clone()),
        probes(&ok_probes(&target, 2)),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let health = daemon.store_health.clone();
    assert!(
        wait_for(Duration::from_secs(15), || health
            .runs_written
            .load(Ordering::SeqCst)
            >= 2)
        .await
    );

    // A lock held elsewhere: the writer's statement is sent and gets no answer.
    let pool = db.pool().await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("lock table runs in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();
    let stalled = wait_for(Duration::from_secs(30), || {
        matches!(&health.state(), StoreState::Degraded { reason, .. } if reason.contains("has not finished for 10 s"))
    })
    .await;
    assert!(stalled, "state {:?}", health.state());
    let (code, body) = http_get(daemon.addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    let (_, page) = http_get(daemon.addr, "/metrics").await;
    assert!(page.lines().any(|l| l == "prober_store_up 0"), "{page}");

    tx.rollback().await.unwrap();
    let drained = wait_for(Duration::from_secs(30), || {
        daemon.queue.is_empty() && health.state() == StoreState::Ok
    })
    .await;
    assert!(drained, "the write finishes once the lock is gone");
    let stats = daemon.scheduler_stats.clone();
    daemon.shutdown().await;
    let (rows, distinct) = db.count_runs().await;
    assert_eq!(rows, stats.runs_finished.load(Ordering::SeqCst) as i64);
    assert_eq!(distinct, rows);
}

/// Alerting while Postgres hangs (issue 18, item 5): a save that gets no
/// answer no longer holds the alert engine, so the per-run rules go on
/// evaluating in memory; once Postgres answers, the changes are saved in
/// order and the trigger is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_postgres_does_not_stop_the_per_run_rules() {
    use prober::alert::State;

    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let (hook, db, proxy, s) = paging_through_a_proxy().await;
    let yaml = format!(
        "name: shop\nevery: 1s\ntimeout: 900ms\nalert: {{failures_to_fire: 8}}\nhttp: {{url: \"{}\"}}\n",
        target.url("/status/503")
    );
    let daemon = Daemon::start(&s, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let alerts = daemon.core.alerts.clone();
    let state = || {
        alerts
            .active()
            .into_iter()
            .find(|a| a.key == "shop/failing/test-lab")
            .map(|a| a.state)
    };
    // Loaded and evaluating: the first failure makes it pending.
    assert!(wait_for(Duration::from_secs(15), || state().is_some()).await);
    proxy.hold();
    // Each save gets no answer for 5 s. When the engine waited on every
    // one, one run was evaluated per 5 s: the eighth failure took ~35 s.
    assert!(
        wait_for(Duration::from_secs(25), || state() == Some(State::Firing)).await,
        "the eighth failure fires the alert in memory while Postgres hangs: {:?}",
        state()
    );
    proxy.release();
    let saved = wait_for(Duration::from_secs(30), || !hook.accepted().is_empty()).await;
    assert!(saved, "the trigger is sent once Postgres answers");
    let pool = db.pool().await;
    let stored: String =
        sqlx::query_scalar("select state from alerts where alert_key = 'shop/failing/test-lab'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, "firing");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let triggers = (hook.accepted().into_iter())
        .filter(|r| r.json()["event"] == "trigger")
        .count();
    assert_eq!(triggers, 1, "{:?}", hook.requests());
    daemon.shutdown().await;
}

/// A webhook receiver, a database behind a proxy the test controls, and
/// settings that page the receiver and reach Postgres through the proxy.
pub(crate) async fn paging_through_a_proxy(
) -> (crate::notify::FakeReceiver, TestDb, Proxy, Settings) {
    use crate::notify::{receiver, FakeReceiver};
    use prober::config::receivers::ReceiverKind;
    let hook = FakeReceiver::start(200).await;
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut s = settings(db.url_via(proxy.addr));
    s.receivers = vec![receiver(
        "hook",
        ReceiverKind::Webhook,
        &format!("{}/hook", hook.url),
    )];
    (hook, db, proxy, s)
}

/// Postgres refused (down), not hung: a probe that starts failing still
/// pages, and its recovery still resolves, while Postgres is away (item
/// 5); when it returns, both are recorded as delivered and neither is
/// sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_is_paged_and_told_of_the_recovery_while_postgres_is_down() {
    use crate::helpers::switchable_target;

    let _shared = crate::helpers::TIMING.read().await;
    let (url, status) = switchable_target().await;
    let (hook, db, proxy, s) = paging_through_a_proxy().await;
    let yaml = format!(
        "name: shop\nevery: 1s\ntimeout: 900ms\nalert: {{failures_to_fire: 2, successes_to_resolve: 2}}\nhttp: {{url: \"{url}\"}}\n"
    );
    let daemon = Daemon::start(&s, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let alerts = daemon.core.alerts.clone();
    // Loaded (the engine evaluates only after reading the saved state).
    assert!(
        wait_for(Duration::from_secs(15), || alerts
            .loaded
            .load(Ordering::SeqCst))
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.cut();
    status.store(503, Ordering::SeqCst);
    let events = || {
        (hook.accepted().into_iter())
            .map(|r| r.json()["event"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(Duration::from_secs(20), || events() == ["trigger"]).await,
        "paged while Postgres is down: {:?}",
        hook.requests()
    );
    status.store(200, Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(20), || events()
            == ["trigger", "resolve"])
        .await,
        "told of the recovery while Postgres is down: {:?}",
        events()
    );
    proxy.restore();
    let pool = db.pool().await;
    let recorded = || async {
        sqlx::query_as::<_, (String, bool)>(
            "select event, delivered_at is not null from notifications order by id",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default()
    };
    let mut rows = Vec::new();
    for _ in 0..300 {
        rows = recorded().await;
        if rows.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows,
        [("trigger".to_string(), true), ("resolve".to_string(), true)],
        "recorded as delivered once Postgres is back"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(events(), ["trigger", "resolve"], "nothing sent twice");
    let keys: std::collections::HashSet<String> = (hook.accepted().into_iter())
        .map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(
        keys.len(),
        2,
        "a trigger and its resolve never share a key: {keys:?}"
    );
    daemon.shutdown().await;
}
