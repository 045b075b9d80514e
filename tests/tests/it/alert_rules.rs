//! Alert rules beyond consecutive failures, against the real daemon and a
//! fake webhook receiver: silences (from the token-protected API), depends_on,
//! SLO burn rate and latency from the stored bins, certificate expiry,
//! reminders, and one evaluator among replicas.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prober::alert::State;
use prober::config::receivers::ReceiverKind;
use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::TestDb;
use crate::helpers::{probes, switchable_target, wait_for, FakeTarget, TestCert};
use crate::notify::{receiver, FakeReceiver};

const TOKEN: &str = "s1lence-t0ken-0123456789";

fn settings(db: &TestDb, hook: &FakeReceiver) -> Settings {
    Settings {
        database_url: db.url.clone(),
        location: "lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        receivers: vec![receiver("hook", ReceiverKind::Webhook, &hook.url)],
        evaluate_every: Duration::from_millis(500),
        api_token: Some(prober::config::settings::ApiToken(TOKEN.into())),
        ..Settings::default()
    }
}

/// A target that answers 503 until the test sets another status.
async fn failing_target() -> (String, std::sync::Arc<std::sync::atomic::AtomicU16>) {
    let (url, status) = switchable_target().await;
    status.store(503, Ordering::SeqCst);
    (url, status)
}

/// Two replicas at two locations (`lab`, `lab2`) over one database.
async fn two_replicas(db: &TestDb, hook: &FakeReceiver, yaml: &str) -> (Daemon, Daemon) {
    let s1 = settings(db, hook);
    let mut s2 = settings(db, hook);
    s2.location = "lab2".into();
    (start(&s1, yaml).await, start(&s2, yaml).await)
}

async fn start(settings: &Settings, yaml: &str) -> Daemon {
    Daemon::start(settings, probes(yaml), http_executor().unwrap())
        .await
        .unwrap()
}

/// An API request with an optional bearer token and JSON body.
async fn api(
    d: &Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn alert(d: &Daemon, key: &str) -> Option<prober::alert::Alert> {
    d.core.alerts.active().into_iter().find(|a| a.key == key)
}

fn firing(d: &Daemon, key: &str) -> bool {
    alert(d, key).is_some_and(|a| a.state == State::Firing)
}

/// Webhook bodies the receiver accepted for an alert key: (event, body).
fn received(hook: &FakeReceiver, key: &str) -> Vec<(String, Value)> {
    hook.accepted()
        .into_iter()
        .map(|r| r.json())
        .filter(|j| j["alert_key"] == key)
        .map(|j| (j["event"].as_str().unwrap().to_string(), j))
        .collect()
}

async fn history(d: &Daemon, probe: &str) -> Vec<(String, String, String)> {
    let rows = prober::alert::persist::history(&d.core.store, Some(probe), 100)
        .await
        .unwrap();
    let mut v: Vec<_> = rows
        .into_iter()
        .map(|(t, _)| {
            (
                t.key,
                t.from.as_str().to_string(),
                t.to.as_str().to_string(),
            )
        })
        .collect();
    v.reverse();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_holds_back_the_page_records_the_state_and_releases_it_when_deleted() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    let (url, status) = switchable_target().await;
    let d = start(
        &settings(&db, &hook),
        &format!("name: checkout\nevery: 1s\ntimeout: 500ms\nlabels: {{team: pay}}\nalert: {{failures_to_fire: 2}}\nhttp: {{url: \"{url}\"}}\n"),
    )
    .await;
    let key = "checkout/failing/lab";
    // The store migrates in the background; the engine loads its state after that.
    let engine = d.core.alerts.clone();
    assert!(
        wait_for(Duration::from_secs(10), || engine
            .loaded
            .load(Ordering::SeqCst))
        .await
    );

    // The silence API refuses a request without the token, or with a wrong one, or a bad silence.
    let body = r#"{"matchers": {"team": "pay"}, "duration": "1h", "comment": "db upgrade", "created_by": "alice"}"#;
    let (code, e) = api(&d, "POST", "/api/v1/silences", None, body).await;
    assert_eq!(code, 401, "{e}");
    let (code, _) = api(&d, "POST", "/api/v1/silences", Some("wrong"), body).await;
    assert_eq!(code, 401);
    // Listing them is a read: public unless api.public_read is false (tests/it/auth.rs).
    let (code, _) = api(&d, "GET", "/api/v1/silences", None, "").await;
    assert_eq!(code, 200);
    let (code, e) = api(
        &d,
        "POST",
        "/api/v1/silences",
        Some(TOKEN),
        r#"{"matchers": {}, "duration": "1h", "comment": "x", "created_by": "a"}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least one"),
        "{e}"
    );

    let (code, s) = api(&d, "POST", "/api/v1/silences", Some(TOKEN), body).await;
    assert_eq!(code, 201, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    let (code, list) = api(&d, "GET", "/api/v1/silences", Some(TOKEN), "").await;
    assert_eq!(code, 200);
    assert_eq!(list["silences"][0]["id"], id.as_str());
    assert_eq!(list["silences"][0]["active"], true);

    // The target fails: the alert fires and is recorded, but nothing is sent.
    status.store(503, Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(15), || firing(&d, key)).await,
        "the alert fires"
    );
    let a = alert(&d, key).unwrap();
    assert!(!a.notified);
    let why = a.suppressed.unwrap();
    assert!(why.contains(&id) && why.contains("db upgrade"), "{why}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        history(&d, "checkout").await,
        [
            (key.to_string(), "ok".into(), "pending".into()),
            (key.to_string(), "pending".into(), "firing".into())
        ]
    );
    assert!(
        prober::notify::outbox::notifications(&d.core.store, key)
            .await
            .unwrap()
            .is_empty(),
        "no notification is recorded while silenced"
    );
    assert!(received(&hook, key).is_empty());
    let (_, page) = crate::helpers::http_get(d.addr, "/metrics").await;
    assert!(
        page.contains(r#"prober_alerts{state="firing",severity="page",suppressed="true"} 1"#),
        "the held-back alert shows in /metrics"
    );

    // Ending the silence releases the trigger of the alert that still fires.
    let (code, ended) = api(
        &d,
        "DELETE",
        &format!("/api/v1/silences/{id}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(code, 200, "{ended}");
    let (code, _) = api(
        &d,
        "DELETE",
        &format!("/api/v1/silences/{id}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(code, 404, "an ended silence cannot end twice");
    assert!(
        wait_for(Duration::from_secs(10), || received(&hook, key).len() == 1).await,
        "the held-back trigger is sent once the silence ends"
    );
    let (event, body) = &received(&hook, key)[0];
    assert_eq!(event, "trigger");
    let (code, outbox) = api(
        &d,
        "GET",
        &format!("/api/v1/notifications?alert_key={key}"),
        None,
        "",
    )
    .await;
    assert_eq!(code, 200, "{outbox}");
    assert_eq!(outbox["notifications"][0]["receiver"], "hook");
    assert_eq!(outbox["notifications"][0]["event"], "trigger");
    assert!(body["failed_runs"].as_u64().unwrap() >= 2, "{body}");

    // Recovery sends the resolve.
    status.store(200, Ordering::SeqCst);
    assert!(wait_for(Duration::from_secs(10), || received(&hook, key).len() == 2).await);
    assert_eq!(received(&hook, key)[1].0, "resolve");
    let (_, page) = crate::helpers::http_get(d.addr, "/metrics").await;
    assert!(
        page.contains(r#"prober_notifications_total{outcome="delivered"} 2"#),
        "{}",
        page.lines()
            .filter(|l| l.starts_with("prober_notifications"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependents_alert_is_held_back_while_its_upstream_fires() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    let (db_url, db_status) = switchable_target().await;
    let (app_url, app_status) = switchable_target().await;
    let yaml = format!(
        "name: database\nevery: 1s\ntimeout: 500ms\nalert: {{failures_to_fire: 2}}\nhttp: {{url: \"{db_url}\"}}\n---\n\
         name: app\nevery: 1s\ntimeout: 500ms\ndepends_on: [database]\nalert: {{failures_to_fire: 4}}\nhttp: {{url: \"{app_url}\"}}\n"
    );
    db_status.store(503, Ordering::SeqCst);
    app_status.store(503, Ordering::SeqCst);
    let d = start(&settings(&db, &hook), &yaml).await;

    assert!(wait_for(Duration::from_secs(15), || firing(&d, "app/failing/lab")).await);
    assert!(firing(&d, "database/failing/lab"));
    let app = alert(&d, "app/failing/lab").unwrap();
    assert!(
        app.suppressed
            .as_deref()
            .unwrap()
            .contains("upstream probe database is firing"),
        "{app:?}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || received(
            &hook,
            "database/failing/lab"
        )
        .len()
            == 1)
        .await
    );
    let (_, upstream) = &received(&hook, "database/failing/lab")[0];
    assert_eq!(
        upstream["suppressed_dependents"],
        serde_json::json!(["app"]),
        "the upstream's page names what it holds back"
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        received(&hook, "app/failing/lab").is_empty(),
        "the dependent does not page"
    );

    // The upstream recovers, the dependent still fails: now it pages.
    db_status.store(200, Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(10), || received(
            &hook,
            "app/failing/lab"
        )
        .len()
            == 1)
        .await,
        "the dependent notifies once its upstream stops firing"
    );
    assert_eq!(received(&hook, "app/failing/lab")[0].0, "trigger");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_burn_rate_pages_from_the_stored_counts_and_only_one_replica_evaluates() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    let (url, _status) = failing_target().await;
    let yaml = format!(
        "name: orders\nevery: 1s\ntimeout: 500ms\nalert: {{enabled: true, failures_to_fire: 100, slo: {{objective: 99.9, min_failures: 3}}}}\nhttp: {{url: \"{url}\"}}\n"
    );
    let (d1, d2) = two_replicas(&db, &hook, &yaml).await;
    let key = "orders/slo_page/all";

    assert!(
        wait_for(Duration::from_secs(20), || firing(&d1, key)
            || firing(&d2, key))
        .await,
        "three failed runs burn a 99.9% budget far above 14.4x in 1h and 5m"
    );
    let leaders = [&d1, &d2]
        .iter()
        .filter(|d| d.core.alerts.is_leader())
        .count();
    assert_eq!(leaders, 1, "exactly one replica holds the evaluator lock");
    let leader = if d1.core.alerts.is_leader() { &d1 } else { &d2 };
    let a = alert(leader, key).unwrap();
    assert_eq!(a.severity, prober::alert::Severity::Page);
    assert!(a.failed_runs >= 3, "{a:?}");
    // The ticket pair (1d and 2h at 3x) burns too.
    assert!(
        wait_for(Duration::from_secs(5), || firing(
            leader,
            "orders/slo_ticket/all"
        ))
        .await
    );

    assert!(wait_for(Duration::from_secs(5), || received(&hook, key).len() == 1).await);
    let (_, body) = &received(&hook, key)[0];
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("error budget burning") && reason.contains("objective 99.9%"),
        "{reason}"
    );
    assert!(
        body["summary"]
            .as_str()
            .unwrap()
            .contains("burning its error budget"),
        "{body}"
    );
    assert_eq!(body["last_failure"]["error_class"], "http_status", "{body}");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let fired: Vec<_> = history(&d1, "orders")
        .await
        .into_iter()
        .filter(|(k, _, to)| k == key && to == "firing")
        .collect();
    assert_eq!(
        fired.len(),
        1,
        "one replica records the transition: {fired:?}"
    );
    assert_eq!(received(&hook, key).len(), 1, "and one page is sent");
    d1.shutdown().await;
    d2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_quantile_above_its_threshold_fires_a_page() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    let target = FakeTarget::start().await;
    let yaml = format!(
        "name: search\nevery: 1s\ntimeout: 900ms\nalert: {{latency: {{quantile: 0.95, above: 150ms, over: 1m, severity: page}}}}\nhttp: {{url: \"{}\"}}\n",
        target.url("/delay/250")
    );
    let d = start(&settings(&db, &hook), &yaml).await;
    let key = "search/latency/all";
    assert!(
        wait_for(Duration::from_secs(15), || firing(&d, key)).await,
        "p95 of ~250 ms is above 150 ms"
    );
    let a = alert(&d, key).unwrap();
    assert_eq!(a.severity, prober::alert::Severity::Page);
    assert!(wait_for(Duration::from_secs(5), || received(&hook, key).len() == 1).await);
    let reason = received(&hook, key)[0].1["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("p95 of the total latency over the last 1m")
            && reason.contains("above 150ms"),
        "{reason}"
    );
    assert!(received(&hook, key)[0].1["summary"]
        .as_str()
        .unwrap()
        .contains("slow"));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_close_to_expiry_opens_a_ticket() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    let target = FakeTarget::start_tls(&TestCert::self_signed(5)).await;
    let yaml = format!(
        "name: edge-cert\nevery: 1s\ntimeout: 900ms\nalert: {{cert_expiry_days: 14}}\ntls: {{host: 127.0.0.1, port: {}, server_name: localhost, verify: false}}\n",
        target.addr.port()
    );
    let d = start(&settings(&db, &hook), &yaml).await;
    let key = "edge-cert/cert_expiry/lab";
    assert!(wait_for(Duration::from_secs(15), || firing(&d, key)).await);
    let a = alert(&d, key).unwrap();
    assert_eq!(a.severity, prober::alert::Severity::Ticket);
    assert!(
        d.core.alerts.active().iter().all(|a| a.rule != "failing"),
        "the run itself passes: only the expiry rule fires"
    );
    assert!(wait_for(Duration::from_secs(5), || received(&hook, key).len() == 1).await);
    let body = &received(&hook, key)[0].1;
    assert_eq!(body["severity"], "ticket");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("days left") && reason.contains("fewer than 14"),
        "{reason}"
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_repeat_while_an_alert_fires_and_stop_when_it_resolves() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    let (url, status) = failing_target().await;
    let mut s = settings(&db, &hook);
    s.remind_every = Some(Duration::from_secs(1));
    let d = start(
        &s,
        &format!("name: api\nevery: 1s\ntimeout: 500ms\nalert: {{failures_to_fire: 2}}\nhttp: {{url: \"{url}\"}}\n"),
    )
    .await;
    let key = "api/failing/lab";
    let reminders = |hook: &FakeReceiver| {
        received(hook, key)
            .into_iter()
            .filter(|(e, _)| e == "remind")
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(20), || reminders(&hook) >= 2).await,
        "reminders repeat"
    );
    let events: Vec<String> = received(&hook, key).into_iter().map(|(e, _)| e).collect();
    assert_eq!(events[0], "trigger", "{events:?}");
    let r = received(&hook, key)
        .into_iter()
        .find(|(e, _)| e == "remind")
        .unwrap()
        .1;
    assert_eq!(
        r["dedup_key"],
        received(&hook, key)[0].1["dedup_key"],
        "a reminder keeps the incident's dedup key"
    );
    assert!(r["summary"].as_str().unwrap().contains("REMINDER"), "{r}");

    status.store(200, Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(10), || received(&hook, key)
            .iter()
            .any(|(e, _)| e == "resolve"))
        .await
    );
    let after = reminders(&hook);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(reminders(&hook), after, "no reminder after the resolve");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_after_a_restart_still_counts_the_incidents_failed_runs() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    let (url, status) = failing_target().await;
    let s = settings(&db, &hook);
    let yaml = format!("name: pay\nevery: 1s\ntimeout: 500ms\nalert: {{failures_to_fire: 3}}\nhttp: {{url: \"{url}\"}}\n");
    let key = "pay/failing/lab";
    let d = start(&s, &yaml).await;
    assert!(wait_for(Duration::from_secs(15), || received(&hook, key).len() == 1).await);
    d.shutdown().await;
    let before = received(&hook, key)[0].1["failed_runs"].as_u64().unwrap();
    assert!(before >= 3);

    status.store(200, Ordering::SeqCst);
    let d = start(&s, &yaml).await;
    assert!(wait_for(Duration::from_secs(15), || received(&hook, key).len() == 2).await);
    let resolve = &received(&hook, key)[1].1;
    assert_eq!(resolve["event"], "resolve");
    assert!(
        resolve["failed_runs"].as_u64().unwrap() >= before,
        "{resolve}"
    );
    assert_eq!(resolve["last_failure"]["error_class"], "http_status");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_of_n_pages_only_when_enough_locations_fail() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    let (url, _status) = failing_target().await;
    let yaml = format!(
        "name: login\nevery: 1s\ntimeout: 500ms\nalert: {{failures_to_fire: 2, min_locations: 2}}\nhttp: {{url: \"{url}\"}}\n"
    );
    let s1 = settings(&db, &hook);
    let mut s2 = settings(&db, &hook);
    s2.location = "lab2".into();

    // One location fails: its own alert fires and is recorded, nobody is paged.
    let d1 = start(&s1, &yaml).await;
    assert!(wait_for(Duration::from_secs(15), || firing(&d1, "login/failing/lab")).await);
    let a = alert(&d1, "login/failing/lab").unwrap();
    assert!(
        a.suppressed.as_deref().unwrap().contains("min_locations"),
        "{a:?}"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        !firing(&d1, "login/failing/all"),
        "1 of 2 locations is not enough"
    );
    assert!(hook.accepted().is_empty(), "no page for one location");

    // A second location fails too: the all-locations alert pages, once.
    let d2 = start(&s2, &yaml).await;
    assert!(
        wait_for(Duration::from_secs(15), || received(
            &hook,
            "login/failing/all"
        )
        .len()
            == 1)
        .await,
        "2 of 2 locations page"
    );
    let body = &received(&hook, "login/failing/all")[0].1;
    assert_eq!(body["location"], "all");
    assert!(
        body["reason"].as_str().unwrap().contains("lab, lab2"),
        "{body}"
    );
    assert!(received(&hook, "login/failing/lab").is_empty());
    assert!(received(&hook, "login/failing/lab2").is_empty());
    d1.shutdown().await;
    d2.shutdown().await;
}

/// A target that answers each request with the next status of a script, then 200.
async fn scripted_target(
    script: &[u16],
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u16>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let left = std::sync::Arc::new(std::sync::Mutex::new(
        script
            .iter()
            .copied()
            .collect::<std::collections::VecDeque<u16>>(),
    ));
    let l = left.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let l = l.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf).await;
                let code = l.lock().unwrap().pop_front().unwrap_or(200);
                let msg =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = sock.write_all(msg.as_bytes()).await;
            });
        }
    });
    (url, left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_of_blip_outage_flapping_and_recovery_sends_exactly_one_trigger_and_one_resolve() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    const F: u16 = 503;
    const OK: u16 = 200;
    let script = [
        OK, OK, F, OK, OK, // a blip: pending, back to ok, no page
        F, F, F, F, // a sustained outage: fires on the third failure
        OK, F, OK, F, // flapping while firing: stays firing, nothing sent
        OK, OK, // recovery: resolves
        F, OK, F, OK, F, OK, // flapping while ok: never three in a row, no page
    ];
    let (url, left) = scripted_target(&script).await;
    let d = start(
        &settings(&db, &hook),
        &format!("name: shop\nevery: 1s\ntimeout: 500ms\nalert: {{failures_to_fire: 3, successes_to_resolve: 2}}\nhttp: {{url: \"{url}\"}}\n"),
    )
    .await;
    let key = "shop/failing/lab";
    let done = wait_for(Duration::from_secs(40), || left.lock().unwrap().is_empty()).await;
    assert!(done, "the script ran");
    // Two more runs (200) and a moment for saving and delivery.
    tokio::time::sleep(Duration::from_millis(3_000)).await;

    let t: Vec<(String, String)> = history(&d, "shop")
        .await
        .into_iter()
        .map(|(_, from, to)| (from, to))
        .collect();
    let p = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        t,
        [
            p("ok", "pending"), // blip
            p("pending", "ok"),
            p("ok", "pending"), // outage
            p("pending", "firing"),
            p("firing", "resolved"),  // recovery
            p("resolved", "pending"), // flapping while ok
            p("pending", "ok"),
            p("ok", "pending"),
            p("pending", "ok"),
            p("ok", "pending"),
            p("pending", "ok"),
        ]
    );
    let got = received(&hook, key);
    let events: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        events,
        ["trigger", "resolve"],
        "exactly one page and its resolve, none for the blip or the flapping"
    );
    assert_eq!(got[0].1["dedup_key"], got[1].1["dedup_key"]);
    assert_eq!(got[0].1["failed_runs"], 3);
    let last = &got[0].1["last_failure"];
    assert_eq!(last["assertion"]["check"], "status", "{last}");
    assert!(
        last["assertion"]["actual"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{last}"
    );
    assert!(
        last["request"]
            .as_str()
            .unwrap()
            .starts_with("GET http://127.0.0.1:"),
        "{last}"
    );
    assert_eq!(last["trace_id"].as_str().unwrap().len(), 32, "{last}");
    assert!(
        got[1].1["failed_runs"].as_u64().unwrap() >= 5,
        "the resolve counts the incident's failed runs: {}",
        got[1].1
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_receivers_and_silences_from_the_settings_file_and_refuses_a_broken_one(
) {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let first = FakeReceiver::start(200).await;
    let second = FakeReceiver::start(200).await;
    let (url, status) = switchable_target().await;
    let dir = tempfile::tempdir().unwrap();
    let probes_dir = dir.path().join("probes");
    std::fs::create_dir(&probes_dir).unwrap();
    std::fs::write(
        probes_dir.join("p.yaml"),
        format!("name: cart\nevery: 1s\ntimeout: 500ms\nalert: {{failures_to_fire: 2}}\nhttp: {{url: \"{url}\"}}\n"),
    )
    .unwrap();
    let file = dir.path().join("prober.yaml");
    let write = |receiver: &str, extra: &str| {
        std::fs::write(
            &file,
            format!("alerting: {{evaluate_every: 1s}}\nreceivers:\n  - {{name: hook, type: webhook, url: \"{receiver}\"}}\n{extra}"),
        )
        .unwrap();
    };
    write(&first.url, "");
    let args = prober::config::settings::SettingsArgs {
        config: Some(file.clone()),
        database_url: Some(db.url.clone()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        probes: Some(vec![probes_dir.clone()]),
        location: Some("lab".into()),
        api_token: Some(TOKEN.into()),
        spool_dir: Some(dir.path().join("spool")),
        ..Default::default()
    };
    let s = Settings::resolve(&args).unwrap();
    let report = prober::config::load_paths(&s.probes);
    let d = Daemon::start(&s, report.probes, http_executor().unwrap())
        .await
        .unwrap();
    let key = "cart/failing/lab";

    // A broken settings file: the reload is refused and names the file.
    std::fs::write(&file, "receivers:\n  - {name: hook, type: email}\n").unwrap();
    let (code, body) =
        crate::helpers::http_request_as(d.addr, "POST", "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("prober.yaml") && body.contains("not a receiver type"),
        "{body}"
    );

    // Another receiver and a silence of this probe: applied by the reload.
    write(
        &second.url,
        "silences:\n  - {matchers: {probe: cart}, ends_at: \"2999-01-01T00:00:00Z\", comment: moving the cart service}\n",
    );
    let (code, body) =
        crate::helpers::http_request_as(d.addr, "POST", "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    status.store(503, Ordering::SeqCst);
    assert!(wait_for(Duration::from_secs(15), || firing(&d, key)).await);
    let a = alert(&d, key).unwrap();
    assert!(
        a.suppressed
            .as_deref()
            .unwrap()
            .contains("moving the cart service"),
        "{a:?}"
    );

    // Without the silence: the held-back trigger goes to the new receiver only.
    write(&second.url, "");
    let (code, _) =
        crate::helpers::http_request_as(d.addr, "POST", "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert!(
        wait_for(Duration::from_secs(10), || received(&second, key).len()
            == 1)
        .await
    );
    assert!(first.accepted().is_empty(), "the old receiver is gone");
    d.shutdown().await;
}

/// Two replicas of one location share its probes (issue 18, item 2). The
/// one running a firing probe stops; the other takes the probe over with
/// its alert as saved, so the incident goes on without a second page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_taking_over_a_firing_probe_does_not_page_again() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let hook = FakeReceiver::start(200).await;
    let (url, status) = switchable_target().await;
    let yaml = format!(
        "- name: cart\n  every: 1s\n  timeout: 500ms\n  alert: {{failures_to_fire: 2}}\n  http: {{url: \"{url}\"}}\n"
    );
    let s = settings(&db, &hook);
    let (a, b) = (start(&s, &yaml).await, start(&s, &yaml).await);
    let both = |d: &Daemon| d.core.members.view().len() == 2;
    assert!(
        wait_for(Duration::from_secs(20), || both(&a) && both(&b)).await,
        "each replica sees the other"
    );
    let (owner, other) = if a.core.members.owns("cart") {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        !other.core.members.owns("cart"),
        "one replica runs the probe"
    );
    status.store(503, Ordering::SeqCst);
    let key = "cart/failing/lab";
    let triggers = || {
        received(&hook, key)
            .iter()
            .filter(|(e, _)| e == "trigger")
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(30), || triggers() == 1).await,
        "the owner pages once"
    );

    // A clean stop leaves the members: the other takes the probe at its next renewal.
    owner.shutdown().await;
    assert!(
        wait_for(Duration::from_secs(10), || other.core.members.owns("cart")).await,
        "the other replica takes the probe over"
    );
    let runs = other.live.get("cart").map_or(0, |p| p.lock().runs);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        other.live.get("cart").map_or(0, |p| p.lock().runs) >= runs + 3,
        "the other replica runs the probe now"
    );
    assert!(firing(&other, key), "the incident goes on");
    assert_eq!(triggers(), 1, "no second page for the same incident");
    other.shutdown().await;
}
