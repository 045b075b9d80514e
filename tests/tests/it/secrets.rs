//! Secrets in URLs, bodies and extracted variables: `${secret:NAME}` and
//! `extract: {…, secret: true}` values never reach `once`'s output, the API, the
//! daemon's log or the database, even when the target echoes them back.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::db::TestDb;
use crate::helpers::{cli, cli_command, http_get, FakeTarget};

/// The secret given as `${secret:PROBER_TEST_API_KEY}` (URL-safe, so the target's echo holds it as is).
const API_KEY: &str = "k3y-Zq9-s3cr3t-4p1";
/// What `flow` extracts as a secret from the target's `/json` (its `version`).
const EXTRACTED: &str = "v1.4.2";

/// `keyed`: the key in the query and in the body, the target echoes the request and a
/// body check fails (so the error quotes the body). `flow`: a scenario that extracts a
/// secret and sends it in the next step's query, with the same failing echo.
fn probe_files(target: &FakeTarget, dir: &std::path::Path) {
    let (keyed, flow) = probe_texts(target);
    std::fs::write(dir.join("keyed.yaml"), keyed).unwrap();
    std::fs::write(dir.join("flow.yaml"), flow).unwrap();
}

fn probe_texts(target: &FakeTarget) -> (String, String) {
    let text = format!(
        r#"- name: keyed
  every: 1s
  timeout: 900ms
  http:
    method: POST
    url: "{echo}?api_key=${{secret:PROBER_TEST_API_KEY}}"
    json: {{key: "${{secret:PROBER_TEST_API_KEY}}"}}
  expect:
    body_contains: [this-is-not-in-the-body]
- name: flow
  every: 1s
  timeout: 900ms
  steps:
    - name: login
      http: {{url: "{json}"}}
      extract:
        session: {{json: $.version, secret: true}}
    - name: use
      http: {{url: "{echo}?session=${{session}}"}}
      expect:
        body_contains: [this-is-not-in-the-body]
"#,
        echo = target.url("/echo/x"),
        json = target.url("/json"),
    );
    let (keyed, flow) = text.split_at(text.find("- name: flow").unwrap());
    (keyed.to_string(), flow.to_string())
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [API_KEY, EXTRACTED] {
        assert!(
            !text.contains(secret),
            "{secret:?} appears in {what}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn once_never_prints_a_secret_from_the_environment_or_a_response() {
    let target = FakeTarget::start().await;
    let dir = tempfile::tempdir().unwrap();
    probe_files(&target, dir.path());
    let env = [("PROBER_TEST_API_KEY", API_KEY), ("RUST_LOG", "trace")];
    for name in ["keyed", "flow"] {
        for json in [false, true] {
            let file = format!("{name}.yaml");
            let mut args = vec!["once", file.as_str()];
            if json {
                args.push("--json");
            }
            let out = cli(dir.path(), &args, &env);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
            // The run did send them: the echo came back, scrubbed.
            assert!(stdout.contains("<redacted>"), "{args:?}: {stdout}");
            assert_no_secret(&format!("stdout of {args:?}"), &stdout);
            assert_no_secret(&format!("stderr of {args:?}"), &stderr);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_never_shows_logs_or_stores_a_secret() {
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let probes = dir.path().join("probes");
    std::fs::create_dir(&probes).unwrap();
    probe_files(&target, &probes);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut child = cli_command(dir.path(), &["run"])
        .env("DATABASE_URL", &db.url)
        .env("PROBER_PROBES", &probes)
        .env("PROBER_LISTEN", addr.to_string())
        .env("PROBER_LOCATION", "secrets-test")
        .env("PROBER_TEST_API_KEY", API_KEY)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // Both probes have runs in Postgres (and so in the API).
    let pool = db.pool().await;
    let mut stored = false;
    for _ in 0..300 {
        let n: Option<i64> = sqlx::query_scalar(
            "select count(distinct p.name) from runs r join probes p on p.id = r.probe_id",
        )
        .fetch_one(&pool)
        .await
        .ok();
        if n == Some(2) {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut answers = Vec::new();
    for path in [
        "/api/v1/probes",
        "/api/v1/probes/keyed",
        "/api/v1/probes/keyed/runs",
        "/api/v1/probes/flow",
        "/api/v1/probes/flow/runs",
        "/api/v1/alerts",
        "/metrics",
        "/readyz",
    ] {
        let (code, body) = http_get(addr, path).await;
        answers.push((path, code, body));
    }
    let tables: Vec<(String, String)> = {
        let mut out = Vec::new();
        for table in [
            "runs",
            "probe_versions",
            "alerts",
            "alert_transitions",
            "notifications",
        ] {
            let rows: Vec<String> = sqlx::query_scalar(&format!("select t::text from {table} t"))
                .fetch_all(&pool)
                .await
                .unwrap();
            out.push((table.to_string(), rows.join("\n")));
        }
        out
    };

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let stderr = log.join().unwrap();
    assert!(stored, "both probes have stored runs\n{stderr}");
    assert_eq!(exit.code(), Some(0), "{stderr}");

    for (path, code, body) in &answers {
        assert_eq!(*code, 200, "{path}: {body}");
        assert_no_secret(&format!("GET {path}"), body);
    }
    // The runs were answered with their scrubbed errors.
    let runs: Value = serde_json::from_str(&answers[2].2).unwrap();
    assert!(runs.to_string().contains("<redacted>"), "{runs:#}");
    for (table, text) in &tables {
        assert_no_secret(&format!("table {table}"), text);
    }
    let runs_table = &tables[0].1;
    assert!(
        runs_table.contains("api_key=<redacted>") && runs_table.contains("session=<redacted>"),
        "the stored requests are scrubbed, not missing:\n{runs_table}"
    );
    assert_no_secret("the daemon's log", &stderr);
}
