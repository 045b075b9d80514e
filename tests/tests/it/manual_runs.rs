//! Runs asked for through the API (`POST …/run`): marked `trigger: api`,
//! limited per probe, and kept out of alert state, counters and availability
//! unless `api.manual_runs_count` says otherwise.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prober::config::access::ApiAccess;
use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::TestDb;
use crate::helpers::{admin_token, probes, switchable_target, wait_for, FakeTarget, ADMIN_TOKEN};

async fn start(db: &TestDb, yaml: &str, api: ApiAccess) -> Daemon {
    let settings = Settings {
        database_url: db.url.clone(),
        location: "lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        evaluate_every: Duration::from_secs(1),
        api_token: admin_token(),
        api,
        ..Settings::default()
    };
    let d = Daemon::start(&settings, probes(yaml), http_executor().unwrap())
        .await
        .unwrap();
    let ready = wait_for(Duration::from_secs(15), || {
        d.store_health.state() == prober::store::writer::StoreState::Ok
    })
    .await;
    assert!(ready, "the store is ready");
    d
}

/// `POST path` with the admin token: status, lowercase head, JSON body.
async fn post(addr: std::net::SocketAddr, path: &str) -> (u16, String, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        code,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Once a year: the only runs are the ones the test asks for.
fn yearly(name: &str, url: &str) -> String {
    format!(
        "name: {name}\ncron: \"0 0 0 1 1 *\"\nalert: {{failures_to_fire: 2}}\nhttp: {{url: \"{url}\"}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_run_requests_makes_one_run_and_the_rest_are_told_to_retry() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let target = FakeTarget::start().await;
    let d = start(
        &db,
        &yearly("burst", &target.url("/delay/200")),
        ApiAccess::default(),
    )
    .await;

    let addr = d.addr;
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { post(addr, "/api/v1/probes/burst/run").await }))
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }

    let ok: Vec<&(u16, String, Value)> = answers.iter().filter(|a| a.0 == 200).collect();
    assert_eq!(ok.len(), 1, "{answers:#?}");
    assert_eq!(ok[0].2["trigger"], "api", "{:?}", ok[0].2);
    for (code, head, body) in answers.iter().filter(|a| a.0 != 200) {
        assert_eq!(*code, 429, "{body}");
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        let retry: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("retry-after: "))
            .unwrap_or_else(|| panic!("no Retry-After in {head}"))
            .trim()
            .parse()
            .unwrap();
        assert!((1..=10).contains(&retry), "{head}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Retry-After"),
            "{body}"
        );
    }
    assert_eq!(
        target.counts.requests(),
        1,
        "one request reached the target"
    );

    // Stored, marked as an API run, and shown so by the runs API.
    assert!(
        wait_for(Duration::from_secs(10), || d
            .store_health
            .runs_written
            .load(Ordering::SeqCst)
            >= 1)
        .await
    );
    let (_, page) = crate::helpers::http_get(d.addr, "/api/v1/probes/burst/runs").await;
    let page: Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["runs"][0]["trigger"], "api", "{page}");
    let pool = db.pool().await;
    let stored: String = sqlx::query_scalar("select trigger from runs_view where probe = 'burst'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, "api");
    d.shutdown().await;
}

/// Three API runs of a failing probe, written; returns the daemon.
async fn three_failed_api_runs(db: &TestDb, url: &str, count: bool) -> Daemon {
    let d = start(
        db,
        &yearly("broken", url),
        ApiAccess {
            run_min_interval: Duration::ZERO,
            manual_runs_count: count,
            ..ApiAccess::default()
        },
    )
    .await;
    for _ in 0..3 {
        let (code, _, body) = post(d.addr, "/api/v1/probes/broken/run").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["outcome"]["success"], false, "{body}");
    }
    assert!(
        wait_for(Duration::from_secs(10), || d
            .store_health
            .runs_written
            .load(Ordering::SeqCst)
            >= 3)
        .await
    );
    d
}

/// (runs, failures) in the minute counters of the probe's total phase.
async fn minute_counts(db: &TestDb) -> (i64, i64) {
    let pool = db.pool().await;
    sqlx::query_as(
        "select coalesce(sum(c.runs), 0)::int8, coalesce(sum(c.failures), 0)::int8
         from minute_counters_live c join probes p on p.id = c.probe_id
         where p.name = 'broken' and c.phase = 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
}

fn alert_state(d: &Daemon) -> Option<prober::alert::State> {
    d.core
        .alerts
        .active()
        .into_iter()
        .find(|a| a.key == "broken/failing/lab")
        .map(|a| a.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_runs_of_a_failing_probe_move_no_alert_and_no_figures_unless_configured() {
    let _shared = crate::helpers::TIMING.read().await;
    let (url, status) = switchable_target().await;
    status.store(503, Ordering::SeqCst);

    // Configured to count: the same three runs fire the alert and are counted
    // (so the default case below would see it if they were counted).
    let counted_db = TestDb::create().await;
    let d = three_failed_api_runs(&counted_db, &url, true).await;
    assert!(
        wait_for(Duration::from_secs(10), || alert_state(&d)
            == Some(prober::alert::State::Firing))
        .await,
        "with api.manual_runs_count the alert fires: {:?}",
        d.core.alerts.active()
    );
    assert_eq!(minute_counts(&counted_db).await, (3, 3));
    d.shutdown().await;

    // By default: stored and shown, but no alert, no counters, no availability, no status.
    let db = TestDb::create().await;
    let d = three_failed_api_runs(&db, &url, false).await;
    let moved = wait_for(Duration::from_secs(3), || alert_state(&d).is_some()).await;
    assert!(
        !moved,
        "no pending or firing alert: {:?}",
        d.core.alerts.active()
    );
    assert_eq!(minute_counts(&db).await, (0, 0));
    let pool = db.pool().await;
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from runs_view where probe = 'broken' and trigger = 'api' and not success",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, 3, "the runs themselves are stored, marked");
    let (_, list) = crate::helpers::http_get(d.addr, "/api/v1/probes").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    let p = &list["probes"][0];
    assert_eq!(p["last_hour"]["runs"], 0, "{p}");
    assert!(p["last_hour"]["availability"].is_null(), "{p}");
    assert!(
        p["status"].is_null(),
        "status moves only with counted runs: {p}"
    );
    let (_, detail) = crate::helpers::http_get(d.addr, "/api/v1/probes/broken").await;
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(
        detail["recent_runs"].as_array().unwrap().len(),
        3,
        "{detail}"
    );
    assert_eq!(detail["recent_runs"][0]["trigger"], "api", "{detail}");
    d.shutdown().await;
}
