//! Notifications against the real daemon: fake receivers on loopback record
//! what they are sent and answer as the test says (failures, 429 with
//! Retry-After); the outbox delivers each notification exactly once, also
//! across a restart; and, when Debian's `prometheus-alertmanager` is
//! installed, the real Alertmanager shows the alert and its resolution.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use prober::config::receivers::{Receiver, ReceiverKind};
use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

use crate::db::TestDb;
use crate::helpers::{probes, switchable_target as switchable, wait_for, RealServer};

const KEY: &str = "checkout/failing/lab";
const SECRET: &str = "hook-secret";

/// A request a fake receiver got, and the status it answered.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    answered: u16,
    at: Instant,
}

impl Recorded {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// A header's value (names in lower case), empty when absent.
    pub(crate) fn header(&self, name: &str) -> String {
        self.headers.get(name).cloned().unwrap_or_default()
    }
}

/// A scripted answer: status and extra headers.
type Answer = (u16, Vec<(String, String)>);

/// A receiver on loopback: records requests; answers from a script, then `status`.
#[derive(Clone)]
pub(crate) struct FakeReceiver {
    pub(crate) url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    status: Arc<AtomicU16>,
}

impl FakeReceiver {
    pub(crate) async fn start(status: u16) -> FakeReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = FakeReceiver {
            url: format!("http://{}", listener.local_addr().unwrap()),
            requests: Arc::default(),
            script: Arc::default(),
            status: Arc::new(AtomicU16::new(status)),
        };
        let me = r.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move { me.serve(sock).await });
            }
        });
        r
    }

    async fn serve(&self, mut sock: tokio::net::TcpStream) {
        let Some((head, body)) = crate::helpers::read_request(&mut sock).await else {
            return;
        };
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or_default()
            .to_string();
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let (code, extra) = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| (self.status.load(Ordering::SeqCst), Vec::new()));
        self.requests.lock().unwrap().push(Recorded {
            path,
            headers,
            body,
            answered: code,
            at: Instant::now(),
        });
        let mut msg = format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n");
        for (k, v) in extra {
            msg.push_str(&format!("{k}: {v}\r\n"));
        }
        msg.push_str("\r\nok");
        let _ = sock.write_all(msg.as_bytes()).await;
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests answered with 2xx.
    pub(crate) fn accepted(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    fn answer_next(&self, code: u16, headers: &[(&str, &str)]) {
        self.script.lock().unwrap().push_back((
            code,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
    }
}

pub(crate) fn receiver(name: &str, kind: ReceiverKind, url: &str) -> Receiver {
    Receiver {
        name: name.into(),
        kind,
        url: url.into(),
        secret: (kind == ReceiverKind::Webhook).then(|| SECRET.to_string()),
        routing_key: (kind == ReceiverKind::PagerDuty).then(|| "R0UT1NG".to_string()),
        labels: BTreeMap::new(),
    }
}

async fn start(db: &TestDb, target: &str, receivers: Vec<Receiver>) -> Daemon {
    let yaml = format!(
        "name: checkout\nevery: 1s\ntimeout: 500ms\ndescription: The checkout page\nrunbook: https://runbooks.example/checkout\nlabels: {{team: payments}}\nalert: {{failures_to_fire: 2, successes_to_resolve: 2, severity: page}}\nhttp: {{url: \"{target}\"}}\n"
    );
    let settings = Settings {
        database_url: db.url.clone(),
        location: "lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        receivers,
        dashboard_url: Some("https://grafana.example/d/probes?var-probe={probe}".into()),
        ..Settings::default()
    };
    Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap()
}

/// The outbox rows of the test alert: (receiver, event, attempts, delivered).
async fn outbox(d: &Daemon) -> Vec<(String, String, i32, bool)> {
    prober::notify::outbox::notifications(&d.core.store, KEY)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.receiver, r.event, r.attempts, r.delivered_at.is_some()))
        .collect()
}

async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(limit, &mut cond).await
}

fn firing(d: &Daemon) -> bool {
    d.core
        .alerts
        .active()
        .iter()
        .any(|a| a.state == prober::alert::State::Firing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_reaches_every_receiver_once_and_so_does_its_resolution() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let (target, status) = switchable().await;
    let hook = FakeReceiver::start(200).await;
    let slack = FakeReceiver::start(200).await;
    let pd = FakeReceiver::start(202).await;
    let other_team = FakeReceiver::start(200).await;
    let mut elsewhere = receiver("other-team", ReceiverKind::Webhook, &other_team.url);
    elsewhere.labels = [("team".to_string(), "search".to_string())].into();
    status.store(503, Ordering::SeqCst);
    let d = start(
        &db,
        &target,
        vec![
            receiver("hook", ReceiverKind::Webhook, &format!("{}/hook", hook.url)),
            receiver(
                "slack",
                ReceiverKind::Slack,
                &format!("{}/slack", slack.url),
            ),
            receiver("pd", ReceiverKind::PagerDuty, &pd.url),
            elsewhere,
        ],
    )
    .await;

    let all = [&hook, &slack, &pd];
    assert!(
        wait_until(Duration::from_secs(15), || all
            .iter()
            .all(|r| !r.requests().is_empty()))
        .await,
        "each receiver gets the trigger"
    );
    // Still failing for a while: no second trigger.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for r in all {
        assert_eq!(r.requests().len(), 1, "{:?}", r.requests());
    }
    assert!(other_team.requests().is_empty(), "routing by labels");

    // The webhook: signed JSON with what on-call needs.
    let h = &hook.requests()[0];
    assert_eq!(h.path, "/hook");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&h.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        h.headers.get("x-prober-signature"),
        Some(&format!("sha256={hex}"))
    );
    let w = h.json();
    assert_eq!(w["event"], "trigger");
    assert_eq!(w["probe"], "checkout");
    assert_eq!(w["location"], "lab");
    assert_eq!(w["severity"], "page");
    assert_eq!(w["state"], "firing");
    assert!(w["failed_runs"].as_u64().unwrap() >= 2, "{w}");
    assert_eq!(w["last_failure"]["error_class"], "http_status");
    assert!(
        w["last_failure"]["error"].as_str().unwrap().contains("503"),
        "{w}"
    );
    assert!(w["last_failure"]["phases"]["total_ms"].is_f64(), "{w}");
    assert!(w["last_failure"]["trace_id"].is_string(), "{w}");
    assert_eq!(w["runbook_url"], "https://runbooks.example/checkout");
    assert_eq!(
        w["dashboard_url"],
        "https://grafana.example/d/probes?var-probe=checkout"
    );
    let dedup = w["dedup_key"].as_str().unwrap().to_string();
    assert!(dedup.starts_with("checkout/failing/lab@"), "{dedup}");

    // PagerDuty Events v2.
    let p = &pd.requests()[0];
    assert_eq!(p.path, "/v2/enqueue");
    let b = p.json();
    assert_eq!(b["routing_key"], "R0UT1NG");
    assert_eq!(b["event_action"], "trigger");
    assert_eq!(b["dedup_key"], dedup.as_str());
    assert_eq!(b["payload"]["severity"], "critical");
    assert!(b["payload"]["source"].is_string());
    let summary = b["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("checkout") && summary.len() <= 1024,
        "{summary}"
    );
    assert_eq!(b["links"][0]["href"], "https://runbooks.example/checkout");

    // Slack.
    let s = slack.requests()[0].json();
    assert!(s["text"].as_str().unwrap().contains("checkout"), "{s}");
    assert!(!s["blocks"].as_array().unwrap().is_empty());

    // Recovery: one resolve each, same dedup key.
    status.store(200, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(15), || all
            .iter()
            .all(|r| r.requests().len() >= 2))
        .await,
        "each receiver gets the resolve"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for r in all {
        assert_eq!(r.requests().len(), 2);
    }
    let w = hook.requests()[1].json();
    assert_eq!(w["event"], "resolve");
    assert_eq!(w["state"], "resolved");
    assert_eq!(w["dedup_key"], dedup.as_str());
    let b = pd.requests()[1].json();
    assert_eq!(b["event_action"], "resolve");
    assert_eq!(b["dedup_key"], dedup.as_str());
    assert!(other_team.requests().is_empty());
    let rows = outbox(&d).await;
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(rows.iter().all(|r| r.3 && r.2 == 1), "{rows:?}");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_it_after_retries_and_retry_after_is_honoured() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let (target, status) = switchable().await;
    let flaky = FakeReceiver::start(200).await;
    flaky.answer_next(500, &[]);
    flaky.answer_next(500, &[]);
    let limited = FakeReceiver::start(200).await;
    limited.answer_next(429, &[("Retry-After", "1")]);
    let am = FakeReceiver::start(200).await;
    am.answer_next(400, &[]);
    status.store(503, Ordering::SeqCst);
    let d = start(
        &db,
        &target,
        vec![
            receiver("flaky", ReceiverKind::Webhook, &flaky.url),
            receiver("limited", ReceiverKind::Slack, &limited.url),
            receiver("am", ReceiverKind::Alertmanager, &am.url),
        ],
    )
    .await;
    assert!(wait_until(Duration::from_secs(15), || flaky.accepted().len() == 1).await);
    assert!(wait_until(Duration::from_secs(10), || limited.accepted().len() == 1).await);
    let f = flaky.requests();
    assert_eq!(f.len(), 3, "500, 500, then 200");
    let key = f[0].headers.get("idempotency-key").cloned();
    assert!(
        key.as_ref().is_some_and(|k| !k.is_empty()),
        "{:?}",
        f[0].headers
    );
    assert!(
        f.iter()
            .all(|r| r.headers.get("idempotency-key") == key.as_ref()),
        "every attempt of one notification carries the same Idempotency-Key"
    );
    // Backoff: about 1 s, then about 2 s (±25 %).
    assert!(f[1].at - f[0].at >= Duration::from_millis(700));
    assert!(f[2].at - f[1].at >= Duration::from_millis(1_400));
    let l = limited.requests();
    assert_eq!(l.len(), 2, "429 then 200");
    assert!(
        l[1].at - l[0].at >= Duration::from_millis(950),
        "Retry-After: 1"
    );
    // Alertmanager's 400 is not retried: failed, with the reason.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(am.requests().len(), 1);
    assert_eq!(am.requests()[0].path, "/api/v2/alerts");

    let rows = prober::notify::outbox::notifications(&d.core.store, KEY)
        .await
        .unwrap();
    let by = |n: &str| rows.iter().find(|r| r.receiver == n).unwrap().clone();
    let flaky_row = by("flaky");
    assert_eq!(flaky_row.attempts, 3);
    assert!(flaky_row.delivered_at.is_some());
    let limited_row = by("limited");
    assert_eq!(limited_row.attempts, 2);
    assert!(limited_row.delivered_at.is_some());
    let am_row = by("am");
    assert!(am_row.failed_at.is_some() && am_row.delivered_at.is_none());
    let why = am_row.last_error.unwrap();
    assert!(
        why.contains("receiver am") && why.contains("400") && why.contains("not retried"),
        "{why}"
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_firing_and_delivery_delivers_exactly_once() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let (target, status) = switchable().await;
    let hook = FakeReceiver::start(503).await;
    status.store(503, Ordering::SeqCst);
    let receivers = vec![receiver("hook", ReceiverKind::Webhook, &hook.url)];
    let d = start(&db, &target, receivers.clone()).await;
    assert!(wait_until(Duration::from_secs(15), || firing(&d)).await);
    assert!(
        wait_until(Duration::from_secs(10), || !hook.requests().is_empty()).await,
        "the worker tried"
    );
    d.shutdown().await;
    let rows = outbox_rows(&db).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(!rows[0].3, "not delivered while the receiver is down");

    // Restart while the target still fails; then the receiver comes up.
    let d = start(&db, &target, receivers).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    hook.status.store(200, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(20), || hook.accepted().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(hook.accepted().len(), 1, "delivered exactly once");
    let rows = outbox(&d).await;
    assert_eq!(
        rows.len(),
        1,
        "no second trigger after the restart: {rows:?}"
    );
    assert!(rows[0].3);
    assert!(rows[0].2 >= 2, "attempts are recorded: {rows:?}");
    d.shutdown().await;
}

async fn outbox_rows(db: &TestDb) -> Vec<(String, String, i32, bool)> {
    let pool = db.pool().await;
    let rows: Vec<(String, String, i32, bool)> = sqlx::query_as(
        "select receiver, event, attempts, delivered_at is not null from notifications order by id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// The real Alertmanager (Debian's prometheus-alertmanager), when installed.
async fn real_alertmanager() -> Option<RealServer> {
    RealServer::start(
        &["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"],
        "alertmanager.yml",
        "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
        "/-/ready",
        |addr, config, dir| {
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.path={}", dir.display()),
                format!("--web.listen-address={addr}"),
                "--cluster.listen-address=".into(),
            ]
        },
    )
    .await
}

async fn am_alerts(am: &RealServer) -> Vec<Value> {
    let (code, body) = crate::helpers::http_get(am.addr, "/api/v2/alerts").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["probe"] == "checkout")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_alertmanager_shows_the_alert_and_its_resolution() {
    let Some(am) = real_alertmanager().await else {
        // CI installs it (.ci/run), so there a missing binary is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus-alertmanager is not installed; .ci/run installs it (apt-get install prometheus-alertmanager)"
        );
        eprintln!("prometheus-alertmanager is not installed: skipped (apt-get install prometheus-alertmanager)");
        return;
    };
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let (target, status) = switchable().await;
    status.store(503, Ordering::SeqCst);
    let d = start(
        &db,
        &target,
        vec![receiver("am", ReceiverKind::Alertmanager, &am.url)],
    )
    .await;
    let mut shown = Vec::new();
    for _ in 0..300 {
        shown = am_alerts(&am).await;
        if !shown.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown.len(), 1, "the firing alert is in Alertmanager");
    let a = &shown[0];
    assert_eq!(a["labels"]["alertname"], "ProbeFailing");
    assert_eq!(a["labels"]["location"], "lab");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["status"]["state"], "active");
    let ends = chrono::DateTime::parse_from_rfc3339(a["endsAt"].as_str().unwrap()).unwrap();
    assert!(
        ends > chrono::Utc::now() + chrono::Duration::minutes(3),
        "a firing alert ends minutes ahead unless re-sent: {a}"
    );
    assert_eq!(a["annotations"]["error_class"], "http_status");
    assert_eq!(
        a["annotations"]["runbook_url"],
        "https://runbooks.example/checkout"
    );

    status.store(200, Ordering::SeqCst);
    let mut resolved = false;
    for _ in 0..300 {
        let now = chrono::Utc::now();
        let list = am_alerts(&am).await;
        // Alertmanager drops resolved alerts from the list (or shows them ended).
        if list.is_empty()
            || list.iter().all(|a| {
                a["endsAt"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t <= now)
            })
        {
            resolved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resolved, "the resolve reaches Alertmanager");
    // The outbox marks the resolve delivered right after Alertmanager's answer.
    let mut rows = outbox(&d).await;
    for _ in 0..50 {
        if rows.len() == 2 && rows.iter().all(|r| r.3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rows = outbox(&d).await;
    }
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.3), "{rows:?}");
    d.shutdown().await;
}
