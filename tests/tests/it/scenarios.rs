//! Scenarios against a fake app on loopback (login → token → create → read →
//! delete), variables in headers, bodies and expectations, cleanup steps, and
//! retries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prober::probe::Runner;

use prober::run::{ErrorClass, Outcome, StepStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::probe;

/// What the fake app saw and how it behaves.
#[derive(Default)]
struct AppState {
    /// Every request: "METHOD /path | authorization | body".
    log: Mutex<Vec<String>>,
    /// When set, /login answers 200 without a token.
    broken_login: std::sync::atomic::AtomicBool,
    deletes: AtomicUsize,
    flaky_calls: AtomicUsize,
}

struct App {
    base: String,
    state: Arc<AppState>,
}

async fn read_request(
    sock: &mut tokio::net::TcpStream,
) -> Option<(String, String, String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut first = head.lines().next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    let mut body = vec![0; len];
    sock.read_exact(&mut body).await.ok()?;
    Some((
        method,
        path,
        header("authorization"),
        String::from_utf8_lossy(&body).to_string(),
    ))
}

async fn reply(sock: &mut tokio::net::TcpStream, status: &str, body: &str) {
    let msg = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(msg.as_bytes()).await;
}

impl App {
    async fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(AppState::default());
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let Some((method, path, auth, body)) = read_request(&mut sock).await else {
                        return;
                    };
                    st.log
                        .lock()
                        .unwrap()
                        .push(format!("{method} {path} | {auth} | {body}"));
                    let authed = auth == "Bearer tok-123";
                    match (method.as_str(), path.as_str()) {
                        ("POST", "/login") if st.broken_login.load(Ordering::SeqCst) => {
                            reply(&mut sock, "200 OK", r#"{"error":"token service down"}"#).await
                        }
                        ("POST", "/login") if body.contains(r#""password":"pw""#) => {
                            reply(&mut sock, "200 OK", r#"{"token":"tok-123"}"#).await
                        }
                        ("POST", "/login") => reply(&mut sock, "401 Unauthorized", "{}").await,
                        (_, _) if !authed && path.starts_with("/items") => {
                            reply(&mut sock, "401 Unauthorized", r#"{"error":"no token"}"#).await
                        }
                        ("POST", "/items") => {
                            let name: serde_json::Value =
                                serde_json::from_str(&body).unwrap_or_default();
                            let out = serde_json::json!({"id": "item-7", "name": name["name"]});
                            reply(&mut sock, "201 Created", &out.to_string()).await
                        }
                        ("GET", "/items/item-7") => {
                            let created = st
                                .log
                                .lock()
                                .unwrap()
                                .iter()
                                .rev()
                                .find(|l| l.starts_with("POST /items"))
                                .cloned()
                                .unwrap_or_default();
                            let name: serde_json::Value = created
                                .rsplit(" | ")
                                .next()
                                .and_then(|b| serde_json::from_str(b).ok())
                                .unwrap_or_default();
                            let out = serde_json::json!({"id": "item-7", "name": name["name"]});
                            reply(&mut sock, "200 OK", &out.to_string()).await
                        }
                        ("DELETE", p) if p.starts_with("/items") => {
                            st.deletes.fetch_add(1, Ordering::SeqCst);
                            reply(&mut sock, "204 No Content", "").await
                        }
                        ("GET", "/flaky") => {
                            let n = st.flaky_calls.fetch_add(1, Ordering::SeqCst);
                            if n == 0 {
                                reply(&mut sock, "503 Service Unavailable", "{}").await
                            } else {
                                reply(&mut sock, "200 OK", "{}").await
                            }
                        }
                        ("GET", "/down") => reply(&mut sock, "503 Service Unavailable", "{}").await,
                        _ => reply(&mut sock, "404 Not Found", "{}").await,
                    }
                });
            }
        });
        App { base, state }
    }

    fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }
}

fn scenario(base: &str) -> String {
    format!(
        r#"name: item-lifecycle
every: 1m
timeout: 10s
steps:
  - name: login
    http:
      method: POST
      url: {base}/login
      json: {{user: probe, password: pw}}
    expect: {{status: 200}}
    extract:
      token: {{json: $.token}}
  - name: create
    http:
      method: POST
      url: {base}/items
      headers: {{Authorization: "Bearer ${{token}}"}}
      json: {{name: "probe-${{random_int}}"}}
    expect: {{status: 201}}
    extract:
      item_id: {{json: $.id}}
      item_name: {{json: $.name}}
  - name: read
    http:
      url: {base}/items/${{item_id}}
      headers: {{Authorization: "Bearer ${{token}}"}}
    expect:
      json:
        - {{path: $.id, equals: "${{item_id}}"}}
        - {{path: $.name, equals: "${{item_name}}"}}
      body_contains: ["${{item_name}}"]
  - name: cleanup
    always: true
    timeout: 2s
    http:
      method: DELETE
      url: {base}/items?owner=probe
      headers: {{Authorization: "Bearer tok-123"}}
    expect: {{status: 204}}
"#
    )
}

async fn run(yaml: &str) -> Outcome {
    Runner::new().unwrap().run(&probe(yaml)).await
}

#[tokio::test]
async fn a_scenario_passes_with_variables_in_headers_bodies_and_expectations() {
    let app = App::start().await;

    let o = run(&scenario(&app.base)).await;

    assert!(o.success, "{o:#?}");
    let statuses: Vec<StepStatus> = o.steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [StepStatus::Passed; 4]);
    assert_eq!(o.steps[0].extracted, ["token"]);
    assert_eq!(o.steps[1].extracted, ["item_id", "item_name"]);
    let log = app.log();
    assert!(
        log[1].starts_with("POST /items | Bearer tok-123 | {\"name\":\"probe-"),
        "{log:?}"
    );
    assert!(
        log[2].starts_with("GET /items/item-7 | Bearer tok-123"),
        "{log:?}"
    );
    // The expectations compared against the extracted values, not the placeholders.
    let read = &o.steps[2];
    assert!(read
        .assertions
        .iter()
        .any(|a| a.check.starts_with("json $.name") && a.expected.starts_with("\"probe-")));
    assert_eq!(app.state.deletes.load(Ordering::SeqCst), 1);
    // Phases of every step, and the total of the whole scenario.
    assert!(o.steps.iter().all(|s| s.phases.first_byte_us.is_some()));
    assert!(o.phases.total_us >= o.steps.iter().map(|s| s.phases.total_us).sum::<u64>());
}

#[tokio::test]
async fn a_broken_token_endpoint_fails_at_that_step_skips_the_middle_and_still_cleans_up() {
    let app = App::start().await;
    app.state.broken_login.store(true, Ordering::SeqCst);

    let o = run(&scenario(&app.base)).await;

    assert!(!o.success);
    let e = o.error.as_ref().unwrap();
    assert_eq!(e.class, ErrorClass::Assertion);
    assert!(
        e.message.contains("step 1 `login`") && e.message.contains("`token`"),
        "{}",
        e.message
    );
    let statuses: Vec<StepStatus> = o.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Failed,
            StepStatus::Skipped,
            StepStatus::Skipped,
            StepStatus::Passed
        ]
    );
    assert_eq!(
        app.state.deletes.load(Ordering::SeqCst),
        1,
        "the cleanup step ran"
    );
    assert!(
        !app.log().iter().any(|l| l.starts_with("POST /items")),
        "the middle was skipped"
    );
}

#[tokio::test]
async fn a_cleanup_step_that_needs_a_missing_variable_is_skipped_with_the_reason() {
    let app = App::start().await;
    let yaml = format!(
        r#"name: needs-var
every: 1m
steps:
  - name: login
    http: {{method: POST, url: "{0}/login", json: {{password: wrong}}}}
    extract: {{token: {{json: $.token}}}}
  - name: logout
    always: true
    http: {{method: DELETE, url: "{0}/items/x", headers: {{Authorization: "Bearer ${{token}}"}}}}
"#,
        app.base
    );

    let o = run(&yaml).await;

    assert_eq!(o.error.as_ref().unwrap().class, ErrorClass::HttpStatus);
    assert_eq!(o.steps[1].status, StepStatus::Skipped);
    assert!(o.steps[1]
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("${token}"));
}

#[tokio::test]
async fn retries_record_every_attempt_and_the_last_decides() {
    let app = App::start().await;
    let flaky = format!(
        "name: flaky\nevery: 1m\nretry: {{attempts: 3, delay: 10ms, on: [http_status]}}\nhttp: {{url: \"{}/flaky\"}}\n",
        app.base
    );
    let down = format!(
        "name: down\nevery: 1m\nretry: {{attempts: 3, delay: 10ms, on: [http_status]}}\nhttp: {{url: \"{}/down\"}}\n",
        app.base
    );
    let not_retried = format!(
        "name: nr\nevery: 1m\nretry: {{attempts: 3, delay: 10ms}}\nhttp: {{url: \"{}/down\"}}\n",
        app.base
    );

    let ok = run(&flaky).await;
    let bad = run(&down).await;
    let once = run(&not_retried).await;

    assert!(ok.success);
    assert_eq!(ok.attempts.len(), 2);
    assert_eq!(
        ok.attempts[0].error.as_ref().unwrap().class,
        ErrorClass::HttpStatus
    );
    assert!(ok.attempts[1].success);
    assert!(!bad.success);
    assert_eq!(bad.attempts.len(), 3, "every attempt is recorded");
    assert!(bad.attempts.iter().all(|a| !a.success));
    assert_eq!(
        once.attempts.len(),
        1,
        "http_status is not retried by default"
    );
}

#[tokio::test]
async fn a_scenario_cut_by_its_timeout_records_the_steps_before_the_cut_and_the_one_it_cut() {
    let target = crate::helpers::FakeTarget::start().await;
    let yaml = format!(
        "name: cut\nevery: 1m\ntimeout: 300ms\nsteps:\n  - name: first\n    http: {{url: \"{ok}\"}}\n  - name: hangs\n    http: {{url: \"{hang}\"}}\n  - name: more\n    http: {{url: \"{ok}\"}}\n  - name: cleanup\n    always: true\n    http: {{url: \"{ok}\"}}\n",
        ok = target.url("/ok"),
        hang = target.url("/hang"),
    );

    let o = run(&yaml).await;

    let e = o.error.as_ref().unwrap();
    assert_eq!(e.class, ErrorClass::Timeout, "{o:#?}");
    assert!(e.message.starts_with("step 2 `hangs`: "), "{}", e.message);
    assert!(e.message.contains("first byte"), "{}", e.message);
    let statuses: Vec<StepStatus> = o.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Passed,
            StepStatus::Failed,
            StepStatus::Skipped,
            StepStatus::Failed
        ]
    );
    let cut = &o.steps[1];
    assert!(
        cut.phases.connect_us.is_some() && cut.phases.first_byte_us.is_some(),
        "the cut step keeps the phases it reached: {:?}",
        cut.phases
    );
    assert!(o.steps[3]
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("ran out"));
    assert!(o.phases.total_us < 2_000_000, "cut at the probe's timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_outcomes_are_stored_and_each_step_has_its_own_histogram() {
    let _shared = crate::helpers::TIMING.read().await;
    let app = App::start().await;
    let db = crate::db::TestDb::create().await;
    let store = prober::store::Store::new(&db.url, "steps-lab").unwrap();
    store.migrate().await.unwrap();
    let p = probe(&scenario(&app.base));
    let outcome = Runner::new().unwrap().run(&p).await;
    assert!(outcome.success);
    let now = chrono::Utc::now();
    let record = prober::run::RunRecord {
        run_id: uuid::Uuid::now_v7(),
        meta: std::sync::Arc::new(prober::run::ProbeMeta {
            name: p.name.clone(),
            version: p.version.clone(),
            definition: p.definition.clone(),
            source: p.source.to_string(),
        }),
        scheduled_at: now,
        started_at: now,
        lateness_us: 0,
        outcome: outcome.clone(),
        trigger: prober::run::Trigger::Schedule,
    };

    store.write_runs(&[record]).await.unwrap();

    let pool = db.pool().await;
    let detail: serde_json::Value = sqlx::query_scalar("select detail from runs_view")
        .fetch_one(&pool)
        .await
        .unwrap();
    let names: Vec<&str> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["login", "create", "read", "cleanup"]);
    assert_eq!(detail["steps"][1]["status"], "passed");
    let (from, to) = (
        now - chrono::TimeDelta::hours(1),
        now + chrono::TimeDelta::hours(1),
    );
    for (i, st) in outcome.steps.iter().enumerate() {
        let q = store
            .quantile(
                &p.name,
                100 + i as i16,
                prober::store::Resolution::Minute,
                from,
                to,
                1.0,
            )
            .await
            .unwrap()
            .unwrap();
        let (lo, hi) = prober::results::hist::Quantiser::get().bin(st.phases.total_us);
        assert!(
            lo as i64 <= q && q == hi as i64,
            "step {i}: {q} not the bin of {}",
            st.phases.total_us
        );
    }
}
