//! API access against the real daemon: every write endpoint refuses a missing,
//! wrong or under-scoped token and accepts the right one; reads can be guarded;
//! with no token configured, writes are refused with how to set one.

use std::time::Duration;

use prober::config::access::{ApiAccess, NamedToken, Scope};
use prober::config::settings::{ApiToken, Settings};
use prober::daemon::{http_executor, Daemon};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::TestDb;
use crate::helpers::FakeTarget;

const ADMIN: &str = "alice-admin-token-0123456789";
const RUNNER: &str = "ci-run-token-0123456789";
const READER: &str = "viewer-read-token-0123456789";
const LEGACY: &str = "legacy-api-token-0123456789";

/// A daemon with four tokens (admin, run, read, and the legacy `api_token`) and one probe.
struct Fixture {
    d: Daemon,
    _dir: tempfile::TempDir,
    _target: FakeTarget,
}

async fn start(db: &TestDb, public_read: bool, with_tokens: bool) -> Fixture {
    let target = FakeTarget::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Once a year: the only runs are the ones the test asks for.
    let yaml = format!(
        "name: guarded\ncron: \"0 0 0 1 1 *\"\nhttp: {{url: \"{}\"}}\n",
        target.url("/ok")
    );
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let tokens = if with_tokens {
        vec![
            NamedToken::from_value("alice", ADMIN, Scope::Admin),
            NamedToken::from_value("ci", RUNNER, Scope::Run),
            NamedToken::from_value("viewer", READER, Scope::Read),
        ]
    } else {
        Vec::new()
    };
    let settings = Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        probes: vec![dir.path().to_path_buf()],
        flush_interval: Duration::from_millis(50),
        api_token: with_tokens.then(|| ApiToken(LEGACY.into())),
        api: ApiAccess {
            public_read,
            tokens,
            run_min_interval: Duration::ZERO,
            ..ApiAccess::default()
        },
        ..Settings::default()
    };
    let report = prober::config::load_paths(&settings.probes);
    let d = Daemon::start(&settings, report.probes, http_executor().unwrap())
        .await
        .unwrap();
    let ready = crate::helpers::wait_for(Duration::from_secs(15), || {
        d.store_health.state() == prober::store::writer::StoreState::Ok
    })
    .await;
    assert!(ready, "the store is ready (migrated)");
    Fixture {
        d,
        _dir: dir,
        _target: target,
    }
}

/// `method path` with an optional token and JSON body: status, headers (lowercase) and body.
async fn call(
    d: &Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, Value) {
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
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        code,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

const SILENCE: &str = r#"{"matchers": {"probe": "guarded"}, "duration": "1h", "comment": "test", "created_by": "auth test"}"#;
const EVENT: &str = r#"{"title": "deploy guarded", "labels": {"service": "guarded"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_endpoint_refuses_a_missing_wrong_or_under_scoped_token() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let f = start(&db, true, true).await;
    let d = &f.d;

    // A silence to delete, made with the legacy api_token (an admin token).
    let (code, _, made) = call(d, "POST", "/api/v1/silences", Some(LEGACY), SILENCE).await;
    assert_eq!(code, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    let delete_path = format!("/api/v1/silences/{id}");

    // (method, path, body, a token one scope short, the right token, the success status)
    let endpoints = [
        (
            "POST",
            "/api/v1/probes/guarded/run",
            "",
            READER,
            RUNNER,
            200,
        ),
        ("POST", "/api/v1/reload", "", RUNNER, ADMIN, 200),
        ("POST", "/api/v1/silences", SILENCE, RUNNER, ADMIN, 201),
        ("DELETE", delete_path.as_str(), "", RUNNER, ADMIN, 200),
        ("POST", "/api/v1/events", EVENT, RUNNER, ADMIN, 201),
    ];
    for (method, path, body, short, right, ok) in endpoints {
        let (code, head, v) = call(d, method, path, None, body).await;
        assert_eq!(code, 401, "{method} {path} without a token: {v}");
        assert_eq!(v["error"]["code"], "unauthorized", "{v}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("Authorization: Bearer"), "{msg}");

        let (code, _, v) = call(d, method, path, Some("not-a-configured-token"), body).await;
        assert_eq!(code, 401, "{method} {path} with a wrong token: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("matches no configured token"),
            "{v}"
        );

        let (code, _, v) = call(d, method, path, Some(short), body).await;
        assert_eq!(code, 403, "{method} {path} under-scoped: {v}");
        assert_eq!(v["error"]["code"], "forbidden", "{v}");

        let (code, _, v) = call(d, method, path, Some(right), body).await;
        assert_eq!(code, ok, "{method} {path} with the right token: {v}");
    }
    // admin ⊇ run: the admin token runs a probe too.
    let (code, _, v) = call(d, "POST", "/api/v1/probes/guarded/run", Some(ADMIN), "").await;
    assert_eq!(code, 200, "{v}");
    // Reads stay public by default; the audit log needs admin.
    let (code, _, _) = call(d, "GET", "/api/v1/probes", None, "").await;
    assert_eq!(code, 200);
    let (code, _, _) = call(d, "GET", "/api/v1/audit", Some(READER), "").await;
    assert_eq!(code, 403);

    // The audit log holds every write, accepted and refused, in order, and the reload.
    let mut expected: Vec<(&str, String, u16, Option<&str>)> =
        vec![("POST", "/api/v1/silences".into(), 201, Some("api_token"))];
    for (method, path, _, _, _, ok) in endpoints {
        let right_name = if ok == 200 && path.ends_with("/run") {
            "ci"
        } else {
            "alice"
        };
        let short_name = if path.ends_with("/run") {
            "viewer"
        } else {
            "ci"
        };
        expected.push((method, path.to_string(), 401, None));
        expected.push((method, path.to_string(), 401, None));
        expected.push((method, path.to_string(), 403, Some(short_name)));
        if path == "/api/v1/reload" {
            expected.push(("RELOAD", "api".into(), 200, None));
        }
        expected.push((method, path.to_string(), ok, Some(right_name)));
    }
    expected.push((
        "POST",
        "/api/v1/probes/guarded/run".into(),
        200,
        Some("alice"),
    ));
    let rows = audit_rows(d, expected.len()).await;
    let got: Vec<(String, String, u16, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap() as u16,
                r["token_name"].as_str().map(str::to_string),
            )
        })
        .collect();
    let want: Vec<(String, String, u16, Option<String>)> = expected
        .iter()
        .map(|(m, p, s, t)| (m.to_string(), p.clone(), *s, t.map(str::to_string)))
        .collect();
    assert_eq!(got, want);
    for r in &rows {
        let status = r["status"].as_u64().unwrap();
        if r["method"] != "RELOAD" {
            assert!(
                r["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{r}"
            );
        }
        if status >= 400 {
            assert!(
                r["detail"].as_str().unwrap().contains("needs a token"),
                "{r}"
            );
        } else if r["method"] != "RELOAD" {
            assert!(r["scope"].as_str().is_some(), "{r}");
        }
    }
    assert!(rows
        .iter()
        .any(|r| r["method"] == "RELOAD" && r["detail"].as_str().unwrap().contains("applied")));
    let (_, metrics) = crate::helpers::http_get(d.addr, "/metrics").await;
    assert!(
        metrics.contains("prober_audit_dropped_total 0"),
        "nothing dropped: {metrics}"
    );
    f.d.shutdown().await;
}

/// The audit log, oldest first, once it holds `n` rows (read with the admin token).
async fn audit_rows(d: &Daemon, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (code, _, page) = call(d, "GET", "/api/v1/audit?limit=1000", Some(ADMIN), "").await;
        assert_eq!(code, 200, "{page}");
        let mut rows = page["entries"].as_array().unwrap().clone();
        if rows.len() >= n || tokio::time::Instant::now() > deadline {
            rows.reverse();
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_public_read_reads_need_a_read_token_and_health_stays_open() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let f = start(&db, false, true).await;
    let d = &f.d;
    for path in [
        "/api/v1/probes",
        "/api/v1/probes/guarded",
        "/api/v1/alerts",
        "/api/v1/silences",
    ] {
        let (code, _, v) = call(d, "GET", path, None, "").await;
        assert_eq!(code, 401, "{path}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scope read"));
        let (code, _, v) = call(d, "GET", path, Some("wrong-token-0123456789"), "").await;
        assert_eq!(code, 401, "{path}: {v}");
        for t in [READER, RUNNER, ADMIN] {
            let (code, _, v) = call(d, "GET", path, Some(t), "").await;
            assert_eq!(code, 200, "{path}: {v}");
        }
    }
    for open in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        let (code, _, _) = call(d, "GET", open, None, "").await;
        assert_eq!(code, 200, "{open} stays open");
    }
    // The OpenAPI document declares the scheme and which writes need it.
    let (_, _, doc) = call(d, "GET", "/api/v1/openapi.json", None, "").await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "{}",
        doc["components"]
    );
    assert_eq!(
        doc["paths"]["/api/v1/probes/{name}/run"]["post"]["security"][0]["bearer"][0],
        "run"
    );
    f.d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_token_configured_writes_are_refused_with_how_to_set_one() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let f = start(&db, true, false).await;
    let d = &f.d;
    for (method, path, body) in [
        ("POST", "/api/v1/probes/guarded/run", ""),
        ("POST", "/api/v1/reload", ""),
        ("POST", "/api/v1/silences", SILENCE),
        ("POST", "/api/v1/events", EVENT),
        (
            "DELETE",
            "/api/v1/silences/00000000-0000-0000-0000-000000000000",
            "",
        ),
    ] {
        for token in [None, Some(ADMIN)] {
            let (code, _, v) = call(d, method, path, token, body).await;
            assert_eq!(code, 403, "{method} {path}: {v}");
            assert_eq!(v["error"]["code"], "forbidden", "{v}");
            let msg = v["error"]["message"].as_str().unwrap();
            for needle in [
                "no API token is configured",
                "api.tokens",
                "PROBER_API_TOKEN",
            ] {
                assert!(msg.contains(needle), "{msg} lacks {needle}");
            }
        }
    }
    assert_eq!(
        f._target.counts.requests(),
        0,
        "no refused run reached the target"
    );
    // Refused writes are audited too (the log is read from Postgres: no token can read it here).
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut n = 0i64;
    for _ in 0..300 {
        n = sqlx::query_scalar(
            "select count(*) from audit_log where status = 403 and token_name is null",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n, 10, "every refused write is in the audit log");
    f.d.shutdown().await;
}

#[tokio::test]
async fn the_audit_log_is_kept_as_long_as_runs_and_pages_newest_first() {
    use prober::store::audit::AuditEntry;
    let db = TestDb::create().await;
    let store = prober::store::Store::new(&db.url, "lab").unwrap();
    store.migrate().await.unwrap();
    let now = chrono::Utc::now();
    let entry = |days: i64, path: &str| AuditEntry {
        at: now - chrono::TimeDelta::days(days),
        token_name: Some("alice".into()),
        scope: Some("admin".into()),
        method: "POST".into(),
        path: path.into(),
        remote_addr: Some("127.0.0.1:1".into()),
        status: 200,
        // NUL and an oversized detail are cleaned and capped, not refused by Postgres.
        detail: Some(format!("x\0{}", "y".repeat(5_000))),
    };
    store
        .insert_audit(&[entry(20, "/old"), entry(1, "/a"), entry(0, "/b")])
        .await
        .unwrap();
    let first = store.audit(1, None).await.unwrap();
    assert_eq!(first[0].path, "/b");
    assert!(first[0].detail.as_ref().unwrap().chars().count() <= 2_001);
    let next = store.audit(10, Some(first[0].id)).await.unwrap();
    let paths: Vec<&str> = next.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/old"]);

    let retention = prober::config::settings::Retention {
        runs: Duration::from_secs(14 * 86_400),
        minutes: Duration::from_secs(31 * 86_400),
        hours: Duration::from_secs(400 * 86_400),
    };
    store.apply_retention(now, &retention).await.unwrap();
    let left: Vec<String> = store
        .audit(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(left, ["/b", "/a"], "the 20-day-old entry is gone");
}
