//! The JSON API against the real daemon and a seeded database: values match
//! what was recorded, percentiles match HdrHistogram on the same samples, bad
//! parameters get a 4xx with a message.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use hdrhistogram::Histogram;
use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use prober::store::Store;
use serde_json::Value;

use crate::db::TestDb;
use crate::helpers::{
    admin_token, http_get, http_request_as, probes, wait_for, FakeTarget, ADMIN_TOKEN,
};
use crate::store::{lcg, meta, record};

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap()
}

fn sample(seed: &mut u64, i: i64) -> u64 {
    match i % 20 {
        0 => 150_000 + lcg(seed) % 900_000,
        1 | 2 => 2_000 + lcg(seed) % 4_000,
        _ => 40_000 + lcg(seed) % 15_000,
    }
}

struct Seeded {
    yesterday: DateTime<Utc>,
    day: Histogram<u64>,
    hours: Vec<Histogram<u64>>,
    recent: Histogram<u64>,
    recent_failures: i64,
}

/// A whole UTC day of runs two days ago (one a minute) and 40 runs in the last half hour.
async fn seed(db: &TestDb) -> Seeded {
    let store = Store::new(&db.url, "seed-lab").unwrap();
    store.migrate().await.unwrap();
    let m = meta("api-seeded");
    let today = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap();
    // Two days back, so the recent runs never fall into the seeded day, even just after midnight.
    let yesterday = today - TimeDelta::days(2);
    let (mut day, mut hours) = (hist(), vec![hist(); 24]);
    let mut seed = 11;
    let mut batch = Vec::new();
    for i in 0..1_440 {
        let us = sample(&mut seed, i);
        day.record(us).unwrap();
        hours[(i / 60) as usize].record(us).unwrap();
        batch.push(record(&m, yesterday + TimeDelta::minutes(i), us, true));
    }
    store.write_runs(&batch).await.unwrap();
    let now = Utc::now();
    let (mut recent, mut failures) = (hist(), 0);
    let recent_runs: Vec<_> = (0..40)
        .map(|i| {
            let us = sample(&mut seed, i);
            recent.record(us).unwrap();
            let ok = i % 8 != 0;
            failures += i64::from(!ok);
            record(&m, now - TimeDelta::seconds(10 + 40 * i), us, ok)
        })
        .collect();
    store.write_runs(&recent_runs).await.unwrap();
    Seeded {
        yesterday,
        day,
        hours,
        recent,
        recent_failures: failures,
    }
}

async fn start(db: &TestDb, target: &FakeTarget) -> Daemon {
    // The seeded probe never fires during the test (once a year), so its data stays as seeded.
    let yaml = format!(
        r#"- name: api-seeded
  description: seeded history
  labels: {{team: payments}}
  cron: "0 0 0 1 1 *"
  http:
    url: {}
    headers:
      Authorization: {{value: "Bearer sekrit-api-token", secret: true}}
- name: api-live
  labels: {{team: search}}
  every: 1h
  http: {{url: "{}"}}
"#,
        target.url("/ok"),
        target.url("/ok")
    );
    let settings = Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        api_token: admin_token(),
        // These tests run one probe several times in a row, and read its runs
        // back as counted figures (status, latency), as `api.manual_runs_count` allows.
        api: prober::config::access::ApiAccess {
            run_min_interval: Duration::ZERO,
            manual_runs_count: true,
            ..Default::default()
        },
        ..Settings::default()
    };
    let d = Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let ready = wait_for(Duration::from_secs(15), || {
        d.store_health.state() == prober::store::writer::StoreState::Ok
    })
    .await;
    assert!(ready, "the store is migrated and ready");
    d
}

async fn get_json(d: &Daemon, path: &str) -> (u16, Value) {
    let (code, body) = http_get(d.addr, path).await;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, v)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latency_endpoint_matches_hdrhistogram_over_a_day_and_per_hour() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let s = seed(&db).await;
    let d = start(&db, &target).await;
    let (from, to) = (rfc(s.yesterday), rfc(s.yesterday + TimeDelta::days(1)));

    let (code, day) = get_json(
        &d,
        &format!("/api/v1/probes/api-seeded/latency?from={from}&to={to}&step=1d"),
    )
    .await;
    assert_eq!(code, 200, "{day}");
    let points = day["points"].as_array().unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0]["count"], 1_440);
    for (field, q) in [
        ("p50_ms", 0.5),
        ("p90_ms", 0.9),
        ("p95_ms", 0.95),
        ("p99_ms", 0.99),
        ("max_ms", 1.0),
    ] {
        assert_eq!(
            points[0][field].as_f64(),
            Some(ms(s.day.value_at_quantile(q))),
            "{field}"
        );
    }

    let (_, hourly) = get_json(
        &d,
        &format!("/api/v1/probes/api-seeded/latency?from={from}&to={to}&step=1h"),
    )
    .await;
    let points = hourly["points"].as_array().unwrap();
    assert_eq!(points.len(), 24);
    for (h, p) in points.iter().enumerate() {
        assert_eq!(p["count"], 60);
        assert_eq!(
            p["p95_ms"].as_f64(),
            Some(ms(s.hours[h].value_at_quantile(0.95))),
            "hour {h}"
        );
    }

    // Minute steps over the same day, merged in 15-minute steps from minute bins.
    let (_, quarter) = get_json(
        &d,
        &format!("/api/v1/probes/api-seeded/latency?from={from}&to={to}&step=15m&phase=total"),
    )
    .await;
    assert_eq!(quarter["points"].as_array().unwrap().len(), 96);
    assert_eq!(quarter["step_ms"], 900_000);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_list_shows_status_windows_and_filters_by_label() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let s = seed(&db).await;
    let d = start(&db, &target).await;

    let (code, all) = get_json(&d, "/api/v1/probes").await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["store"], "ok");
    let names: Vec<&str> = all["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api-live", "api-seeded"]);

    let (_, payments) = get_json(&d, "/api/v1/probes?label=team=payments").await;
    let list = payments["probes"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let p = &list[0];
    assert_eq!(p["labels"]["team"], "payments");
    let hour = &p["last_hour"];
    assert_eq!(hour["runs"], 40);
    assert_eq!(hour["failures"], s.recent_failures);
    let expected = (40 - s.recent_failures) as f64 / 40.0;
    assert!((hour["availability"].as_f64().unwrap() - expected).abs() < 1e-9);
    assert_eq!(
        hour["p95_ms"].as_f64(),
        Some(ms(s.recent.value_at_quantile(0.95)))
    );
    assert_eq!(
        hour["p99_ms"].as_f64(),
        Some(ms(s.recent.value_at_quantile(0.99)))
    );
    assert!(p["last_day"]["runs"].as_i64().unwrap() >= 40);

    let (code, bad) = get_json(&d, "/api/v1/probes?label=team").await;
    assert_eq!(code, 400);
    assert_eq!(bad["error"]["code"], "bad_request");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_page_by_cursor_and_detail_redacts_secrets() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let s = seed(&db).await;
    let d = start(&db, &target).await;
    let (from, to) = (rfc(s.yesterday), rfc(s.yesterday + TimeDelta::hours(1)));

    let (code, first) = get_json(
        &d,
        &format!("/api/v1/probes/api-seeded/runs?from={from}&to={to}&limit=25"),
    )
    .await;
    assert_eq!(code, 200, "{first}");
    let runs = first["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 25);
    assert_eq!(
        runs[0]["scheduled_at"],
        "2026-11-25T00:59:00Z".replace("2026-11-25", &s.yesterday.format("%Y-%m-%d").to_string())
    );
    assert_eq!(runs[0]["lateness_ms"], 0.7);
    assert_eq!(runs[0]["location"], "seed-lab");
    assert!(runs[0]["phases"]["first_byte_ms"].as_f64().unwrap() > 0.0);
    let mut seen: Vec<String> = runs
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    let mut cursor = first["next_cursor"].as_str().unwrap().to_string();
    loop {
        let (_, page) = get_json(
            &d,
            &format!("/api/v1/probes/api-seeded/runs?from={from}&to={to}&limit=25&cursor={cursor}"),
        )
        .await;
        seen.extend(
            page["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["run_id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(
        (total, seen.len()),
        (60, 60),
        "an hour of runs, each once across pages"
    );

    let (code, detail) = get_json(&d, "/api/v1/probes/api-seeded").await;
    assert_eq!(code, 200);
    assert_eq!(
        detail["definition"]["http"]["headers"]["Authorization"]["value"],
        "<redacted>"
    );
    assert!(!detail.to_string().contains("sekrit-api-token"));
    assert_eq!(detail["description"], "seeded history");
    assert!(detail["version"].as_str().unwrap().len() == 16);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_answers_with_the_outcome_and_records_it() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let d = start(&db, &target).await;

    let (code, body) = http_request_as(
        d.addr,
        "POST",
        "/api/v1/probes/api-live/run",
        Some(ADMIN_TOKEN),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();

    assert_eq!(code, 200, "{body}");
    assert_eq!(v["outcome"]["success"], true);
    assert_eq!(v["outcome"]["status_code"], 200);
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let stored = wait_for(Duration::from_secs(10), || {
        d.store_health
            .runs_written
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    })
    .await;
    assert!(stored);
    let (_, page) = get_json(&d, "/api/v1/probes/api-live/runs").await;
    assert!(
        page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["run_id"] == run_id.as_str()),
        "{page}"
    );
    let (_, detail) = get_json(&d, "/api/v1/probes/api-live").await;
    assert_eq!(detail["recent_runs"].as_array().unwrap().len(), 1);
    assert_eq!(detail["status"]["up"], true);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_a_4xx_with_a_message_never_a_500() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let d = start(&db, &target).await;
    let cases = [
        ("GET", "/api/v1/probes/nope", 404, "not_found"),
        ("GET", "/api/v1/probes/nope/runs", 404, "not_found"),
        ("POST", "/api/v1/probes/nope/run", 404, "not_found"),
        (
            "GET",
            "/api/v1/probes/api-live/runs?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            400,
            "must be before",
        ),
        (
            "GET",
            "/api/v1/probes/api-live/runs?from=yesterday",
            400,
            "RFC 3339",
        ),
        ("GET", "/api/v1/probes/api-live/runs?limit=0", 400, "limit"),
        ("GET", "/api/v1/notifications?limit=0", 400, "limit"),
        ("GET", "/api/v1/alerts/history?limit=5000", 400, "limit"),
        // No content-type: the contract's one JSON-body rule answers 415.
        ("POST", "/api/v1/silences", 415, "send JSON like"),
        ("DELETE", "/api/v1/silences/x", 400, "not a silence id"),
        (
            "GET",
            "/api/v1/probes/api-live/runs?cursor=xyz",
            400,
            "cursor",
        ),
        (
            "GET",
            "/api/v1/probes/api-live/latency?from=2000-01-01T00:00:00Z&step=1m",
            400,
            "at most",
        ),
        (
            "GET",
            "/api/v1/probes/api-live/latency?step=90s",
            400,
            "whole number of minutes",
        ),
        (
            "GET",
            "/api/v1/probes/api-live/latency?step=soon",
            400,
            "not a duration",
        ),
        (
            "GET",
            "/api/v1/probes/api-live/latency?phase=render",
            400,
            "phase",
        ),
        ("GET", "/api/v1/nothing-here", 404, "not_found"),
    ];
    for (method, path, status, needle) in cases {
        let (code, body) = http_request_as(d.addr, method, path, Some(ADMIN_TOKEN)).await;
        assert_eq!(code, status, "{method} {path}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert!(v["error"]["message"].as_str().is_some(), "{path}: {body}");
        assert!(body.contains(needle), "{path}: {body} lacks {needle:?}");
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_endpoint() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let d = start(&db, &target).await;

    let (code, doc) = get_json(&d, "/api/v1/openapi.json").await;

    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/probes",
        "/api/v1/probes/{name}",
        "/api/v1/probes/{name}/runs",
        "/api/v1/probes/{name}/latency",
        "/api/v1/probes/{name}/run",
        "/api/v1/reload",
        "/api/v1/alerts",
        "/api/v1/alerts/history",
        "/api/v1/notifications",
        "/api/v1/silences",
        "/api/v1/silences/{id}",
        "/api/v1/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    // The bearer scheme, on the endpoints that take a token.
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
    for (method, path) in [
        ("get", "/api/v1/audit"),
        ("post", "/api/v1/silences"),
        ("delete", "/api/v1/silences/{id}"),
        ("post", "/api/v1/events"),
        ("post", "/api/v1/probes/{name}/run"),
        ("post", "/api/v1/reload"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(
            op["security"][0]["bearer"].is_array(),
            "{method} {path}: {op}"
        );
        assert!(op["responses"]["401"].is_object(), "{method} {path}");
    }
    assert!(doc["paths"]["/api/v1/probes"]["get"]["security"].is_null());
    // Every operation: the envelope for its errors, the request id on every answer.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let error = &responses["500"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(error, "#/components/schemas/ErrorBody", "{method} {path}");
            for (status, r) in responses {
                assert!(
                    r["headers"]["x-request-id"].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
    let post = &doc["paths"]["/api/v1/silences"]["post"]["responses"];
    for status in ["400", "413", "415", "422"] {
        assert!(
            post[status].is_object(),
            "POST /api/v1/silences lacks {status}"
        );
    }
    // Limits and formats.
    let param = |path: &str, name: &str| -> Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no {name}"))["schema"]
            .clone()
    };
    let limit = param("/api/v1/probes/{name}/runs", "limit");
    assert_eq!(
        (limit["minimum"].as_i64(), limit["maximum"].as_i64()),
        (Some(1), Some(1000))
    );
    assert_eq!(param("/api/v1/alerts/history", "limit")["maximum"], 1000);
    assert_eq!(
        param("/api/v1/probes/{name}/runs", "from")["format"],
        "date-time"
    );
    for path in ["/api/v1/probes", "/api/v1/events"] {
        let label = param(path, "label");
        assert_eq!(label["type"], "array", "{label}");
        assert!(label["items"]["pattern"].as_str().is_some(), "{label}");
    }
    for schema in [
        "ProbeList",
        "RunPage",
        "LatencySeries",
        "Outcome",
        "ErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    d.shutdown().await;
}

/// Every key of `v` (at any depth) that names a duration in another unit than ms, with its path.
fn non_ms_duration_keys(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k.ends_with("_us") || k.ends_with("_seconds") || k.ends_with("_secs") {
                    out.push(format!("{path}.{k}"));
                }
                non_ms_duration_keys(x, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                non_ms_duration_keys(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_duration_is_in_milliseconds_and_every_run_list_is_newest_first() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let d = start(&db, &target).await;
    let mut posted = Vec::new();
    for _ in 0..3 {
        let (code, body) = http_request_as(
            d.addr,
            "POST",
            "/api/v1/probes/api-live/run",
            Some(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        posted.push(serde_json::from_str::<Value>(&body).unwrap());
    }
    let stored = wait_for(Duration::from_secs(10), || {
        d.store_health
            .runs_written
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 3
    })
    .await;
    assert!(stored);
    let newest_first: Vec<&Value> = posted.iter().rev().map(|p| &p["run_id"]).collect();

    let (_, detail) = get_json(&d, "/api/v1/probes/api-live").await;
    let (_, page) = get_json(&d, "/api/v1/probes/api-live/runs").await;
    let (_, list) = get_json(&d, "/api/v1/probes").await;

    let recent = detail["recent_runs"].as_array().unwrap();
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(
        recent.iter().map(|r| &r["run_id"]).collect::<Vec<_>>(),
        newest_first,
        "the detail's recent runs are newest first, like /runs"
    );
    assert_eq!(
        runs.iter().map(|r| &r["run_id"]).collect::<Vec<_>>(),
        newest_first
    );
    // The same run, in the same unit, wherever it appears.
    let last = &posted[2]["outcome"]["phases"];
    assert_eq!(
        recent[0]["total_ms"], last["total_ms"],
        "{recent:?} vs {last}"
    );
    assert_eq!(runs[0]["phases"]["total_ms"], last["total_ms"]);
    assert_eq!(runs[0]["phases"]["first_byte_ms"], last["first_byte_ms"]);
    assert!(recent[0]["lateness_ms"].is_number(), "{}", recent[0]);
    assert!(last["total_ms"].as_f64().unwrap() > 0.0, "{last}");
    // One phase object: the runs API and the outcome (`POST …/run`, `prober once --json`).
    assert_eq!(keys(&runs[0]["phases"]), keys(last));
    // http:// to an IP address: neither TLS nor DNS happened.
    for phases in [&runs[0]["phases"], last] {
        assert!(phases["tls_ms"].is_null(), "{phases}");
        assert!(phases["dns_ms"].is_null(), "{phases}");
        assert!(phases["connect_ms"].is_f64(), "{phases}");
    }
    let live = list["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "api-live")
        .unwrap();
    assert_eq!(live["last_run"]["run_id"], *newest_first[0]);

    let (_, latency) = get_json(&d, "/api/v1/probes/api-live/latency?phase=tls").await;
    assert!(
        latency["points"].as_array().unwrap().is_empty(),
        "no TLS phase happened, so no TLS sample was counted: {latency}"
    );
    let (_, total) = get_json(&d, "/api/v1/probes/api-live/latency").await;
    let counted: i64 = total["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 3);
    let (_, alerts) = get_json(&d, "/api/v1/alerts").await;
    let (_, doc) = get_json(&d, "/api/v1/openapi.json").await;
    let mut found = Vec::new();
    for (name, v) in [
        ("detail", &detail),
        ("runs", &page),
        ("list", &list),
        ("latency", &total),
        ("alerts", &alerts),
        ("openapi", &doc),
    ] {
        non_ms_duration_keys(v, name, &mut found);
    }
    for p in &posted {
        non_ms_duration_keys(p, "run", &mut found);
    }
    assert!(found.is_empty(), "durations not in ms: {found:?}");
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Phases"]["properties"]["total_ms"]["type"],
        "number"
    );
    assert_eq!(
        schemas["RunSummary"]["properties"]["total_ms"]["type"],
        "number"
    );
    assert!(doc["info"]["description"]
        .as_str()
        .unwrap()
        .contains("newest first"));
    d.shutdown().await;
}

// === the contract: every answer, whatever the input ===

const TOKEN: &str = "contract-test-token";

/// A daemon with one probe and an API token, for the contract tests.
async fn start_with_token(db: &TestDb, target: &FakeTarget) -> Daemon {
    let yaml = format!(
        "- name: api-live\n  labels: {{team: search}}\n  every: 1h\n  http: {{url: \"{}\"}}\n",
        target.url("/ok")
    );
    let settings = Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        api_token: Some(prober::config::settings::ApiToken(TOKEN.into())),
        ..Settings::default()
    };
    let d = Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let ready = wait_for(Duration::from_secs(15), || {
        d.store_health.state() == prober::store::writer::StoreState::Ok
    })
    .await;
    assert!(ready, "the store is migrated and ready");
    d
}

/// One answer as it came over the wire.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.head, self.body))
    }
}

/// Sends one request with these extra header lines and body; reads the whole answer.
async fn send(d: &Daemon, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413) before it has read the whole body.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

const AUTH: &str = "authorization: Bearer contract-test-token";
const JSON: &str = "content-type: application/json";

/// (method, path, header lines, body, status, code, words in the message)
type Case<'a> = (
    &'a str,
    &'a str,
    Vec<&'a str>,
    String,
    u16,
    &'a str,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_the_json_envelope_with_its_status_and_a_request_id() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let d = start_with_token(&db, &target).await;
    let big = format!(
        r#"{{"matchers": {{"probe": "api-live"}}, "duration": "1h", "comment": "{}", "created_by": "a"}}"#,
        "x".repeat(prober::api::MAX_BODY_BYTES)
    );
    let silence = |body: &str| body.to_string();
    let cases: Vec<Case> = vec![
        // (method, path, headers, body, status, code, words in the message)
        (
            "GET",
            "/api/v1/probes/api-live/runs?limit=abc",
            vec![],
            String::new(),
            400,
            "bad_request",
            "limit",
        ),
        (
            "GET",
            "/api/v1/probes/api-live/runs?limit=1001",
            vec![],
            String::new(),
            400,
            "bad_request",
            "limit",
        ),
        (
            "GET",
            "/api/v1/alerts/history?limit=-1",
            vec![],
            String::new(),
            400,
            "bad_request",
            "limit",
        ),
        (
            "GET",
            "/api/v1/notifications?undelivered=maybe",
            vec![],
            String::new(),
            400,
            "bad_request",
            "undelivered",
        ),
        (
            "GET",
            "/api/v1/silences?all=yes",
            vec![AUTH],
            String::new(),
            400,
            "bad_request",
            "all",
        ),
        (
            "GET",
            "/api/v1/alerts/history?probe=a%00b",
            vec![],
            String::new(),
            400,
            "bad_request",
            "NUL",
        ),
        (
            "GET",
            "/api/v1/probes/a%00b/runs",
            vec![],
            String::new(),
            400,
            "bad_request",
            "NUL",
        ),
        (
            "GET",
            "/api/v1/no/such/path",
            vec![],
            String::new(),
            404,
            "not_found",
            "openapi.json",
        ),
        (
            "DELETE",
            "/api/v1/probes",
            // With a token: without one the guard answers 401 before routing.
            vec![AUTH],
            String::new(),
            405,
            "method_not_allowed",
            "GET",
        ),
        (
            "PUT",
            "/api/v1/probes/api-live/run",
            vec![AUTH],
            String::new(),
            405,
            "method_not_allowed",
            "POST",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            big,
            413,
            "payload_too_large",
            "65536",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, "content-type: text/plain"],
            silence("{}"),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            silence(r#"{"matchers": 5}"#),
            422,
            "unprocessable_entity",
            "matchers",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            silence("{not json"),
            400,
            "bad_request",
            "not JSON",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            silence(
                r#"{"matchers": {"probe": "api-live"}, "duration": "99999999d", "comment": "c", "created_by": "a"}"#,
            ),
            400,
            "bad_request",
            "366 days",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            silence(
                r#"{"matchers": {"probe": "api-live"}, "starts_at": "9999-12-01T00:00:00Z", "duration": "300d", "comment": "c", "created_by": "a"}"#,
            ),
            400,
            "bad_request",
            "",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            silence(
                r#"{"matchers": {"probe": "api-live"}, "ends_at": "9999-12-31T23:59:59Z", "comment": "c", "created_by": "a"}"#,
            ),
            400,
            "bad_request",
            "366 days",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            silence(
                r#"{"matchers": {"probe": "api\u0000live"}, "duration": "1h", "comment": "c", "created_by": "a"}"#,
            ),
            400,
            "bad_request",
            "control character",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            silence(
                r#"{"matchers": {"probe": "api-live"}, "duration": "1h", "comment": "c\u0000", "created_by": "a"}"#,
            ),
            400,
            "bad_request",
            "comment",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            silence(
                r#"{"matchers": {"no spaces, please": "x"}, "duration": "1h", "comment": "c", "created_by": "a"}"#,
            ),
            400,
            "bad_request",
            "matcher name",
        ),
        (
            "POST",
            "/api/v1/silences",
            vec![AUTH, JSON],
            silence(
                r#"{"matchers": {"probe": "x"}, "cron": "0 0 2 * * Sun", "window": "400d", "comment": "c", "created_by": "a"}"#,
            ),
            400,
            "bad_request",
            "window",
        ),
    ];
    for (method, path, headers, body, status, code, words) in cases {
        let a = send(&d, method, path, &headers, body.as_bytes()).await;
        let what = format!("{method} {path} {}", &body[..body.len().min(120)]);
        assert_eq!(a.status, status, "{what}: {}\n{}", a.head, a.body);
        assert_eq!(
            a.header("content-type").as_deref(),
            Some("application/json"),
            "{what}: {}",
            a.head
        );
        let v = a.json();
        assert_eq!(v["error"]["code"], code, "{what}: {}", a.body);
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(words),
            "{what}: {message:?} lacks {words:?}"
        );
        assert!(a.header("x-request-id").is_some(), "{what}: {}", a.head);
        if status == 405 {
            assert!(
                a.header("allow").is_some(),
                "{what}: 405 keeps Allow: {}",
                a.head
            );
        }
    }
    // Nothing of the above reached the store as an outage, and the daemon still answers.
    let a = send(&d, "GET", "/api/v1/silences?all=true", &[AUTH], b"").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["silences"].as_array().map(Vec::len), Some(0));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_label_filter_may_repeat_and_requires_every_label() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let d = start_with_token(&db, &target).await;
    let names = |v: Value| -> Vec<String> {
        v["probes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let a = send(
        &d,
        "GET",
        "/api/v1/probes?label=team=search&label=team=search",
        &[],
        b"",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(names(a.json()), ["api-live"]);
    let a = send(
        &d,
        "GET",
        "/api/v1/probes?label=team=search&label=team=other",
        &[],
        b"",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(names(a.json()).is_empty());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_a_request_id_echoed_when_sane() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let d = start_with_token(&db, &target).await;
    let mut seen = std::collections::HashSet::new();
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/probes",
        "/api/v1/openapi.json",
        "/api/v1/nope",
    ] {
        let a = send(&d, "GET", path, &[], b"").await;
        let id = a
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{path}: {}", a.head));
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "{path}: a generated id is a UUID: {id}"
        );
        assert!(seen.insert(id), "{path}: ids are not reused");
        let a = send(&d, "GET", path, &["x-request-id: trace-42.a:b_c"], b"").await;
        assert_eq!(
            a.header("x-request-id").as_deref(),
            Some("trace-42.a:b_c"),
            "{path}"
        );
    }
    for bad in [
        "x-request-id: has spaces in it",
        &format!("x-request-id: {}", "a".repeat(200)),
    ] {
        let a = send(&d, "GET", "/healthz", &[bad], b"").await;
        let id = a.header("x-request-id").unwrap();
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "{bad:?} is replaced, not echoed: {id}"
        );
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_answers_503_with_the_request_id_and_never_the_database_text() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let d = start_with_token(&db, &target).await;
    let pool = db.pool().await;
    sqlx::query("alter table runs rename to runs_hidden_by_test")
        .execute(&pool)
        .await
        .unwrap();

    let a = send(
        &d,
        "GET",
        "/api/v1/probes/api-live/runs",
        &["x-request-id: fault-7"],
        b"",
    )
    .await;

    sqlx::query("alter table runs_hidden_by_test rename to runs")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(a.status, 503, "{}\n{}", a.head, a.body);
    let body = a.json();
    assert_eq!(body["error"]["code"], "store_unavailable", "{}", a.body);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("request fault-7"), "{message}");
    assert!(
        message.contains("/api/v1/probes"),
        "where live data is: {message}"
    );
    for database_text in [
        "relation",
        "does not exist",
        "runs\"",
        "error returned from database",
        "5432",
    ] {
        assert!(
            !a.body.contains(database_text),
            "the database's words ({database_text:?}) stay in the log: {}",
            a.body
        );
    }
    d.shutdown().await;
}

/// Every string in `v` that looks like a time must be RFC 3339 (four-digit years).
fn assert_times_rfc3339(v: &Value, path: &str) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| assert_times_rfc3339(v, &format!("{path}.{k}"))),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| assert_times_rfc3339(v, &format!("{path}[{i}]"))),
        Value::String(s) if path.ends_with("_at") => assert!(
            DateTime::parse_from_rfc3339(s).is_ok(),
            "{path}: {s:?} is not RFC 3339"
        ),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_ended_recurring_silence_has_ends_at_null() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let d = start_with_token(&db, &target).await;
    let body = r#"{"matchers": {"probe": "api-live"}, "cron": "0 0 2 * * Sun", "window": "1h", "comment": "weekly maintenance", "created_by": "ops"}"#;

    let a = send(
        &d,
        "POST",
        "/api/v1/silences",
        &[AUTH, JSON],
        body.as_bytes(),
    )
    .await;

    assert_eq!(a.status, 201, "{}", a.body);
    let created = a.json();
    assert!(created["ends_at"].is_null(), "{created}");
    assert_times_rfc3339(&created, "created");
    let a = send(&d, "GET", "/api/v1/silences?all=true", &[AUTH], b"").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let list = a.json();
    assert_eq!(list["silences"][0]["id"], created["id"], "{list}");
    assert!(list["silences"][0]["ends_at"].is_null(), "{list}");
    assert!(!a.body.contains("+262142"), "{}", a.body);
    assert_times_rfc3339(&list, "list");
    d.shutdown().await;
}
