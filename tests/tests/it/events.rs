//! Change events: written through the API with the admin token only, refused
//! with what to send when the body is wrong, listed newest first by time and
//! label; and a finding lists the events near its change whose labels are all
//! its probe's, and says when the probe's definition or the prober's build
//! changed near it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use prober::analysis::{analyse, AnalysisConfig};
use prober::config::access::{ApiAccess, NamedToken, Scope};
use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use prober::store::events::NewEvent;
use serde_json::{json, Value};

use crate::db::TestDb;
use crate::helpers::{admin_token, http_get, http_send, wait_for, ADMIN_TOKEN};
use crate::trends::{all, with_step};

const READER: &str = "viewer-read-token-0123456789";

async fn daemon(db: &TestDb) -> Daemon {
    let settings = Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_token: admin_token(),
        api: ApiAccess {
            tokens: vec![NamedToken::from_value("viewer", READER, Scope::Read)],
            ..ApiAccess::default()
        },
        ..Settings::default()
    };
    let d = Daemon::start(&settings, Vec::new(), http_executor().unwrap())
        .await
        .unwrap();
    let ready = wait_for(Duration::from_secs(15), || {
        d.store_health.state() == prober::store::writer::StoreState::Ok
    })
    .await;
    assert!(ready, "the store is ready (migrated)");
    d
}

async fn post(d: &Daemon, token: Option<&str>, body: &str) -> (u16, Value) {
    let (code, text) = http_send(d.addr, "POST", "/api/v1/events", token, Some(body)).await;
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn titles(d: &Daemon, query: &str) -> Vec<String> {
    let (code, body) = http_get(d.addr, &format!("/api/v1/events{query}")).await;
    assert_eq!(code, 200, "{query}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_need_the_admin_token_and_are_listed_by_time_and_label() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let d = daemon(&db).await;
    let ago = |h: i64| {
        (Utc::now() - TimeDelta::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let (three_ago, two_ago) = (ago(3), ago(2));
    let deploy = json!({"title": "deploy checkout v2.3", "at": three_ago,
                        "labels": {"service": "checkout", "team": "payments"}})
    .to_string();
    let deploy = deploy.as_str();

    let (code, v) = post(&d, None, deploy).await;
    assert_eq!((code, &v["error"]["code"]), (401, &json!("unauthorized")));
    let (code, v) = post(&d, Some(READER), deploy).await;
    assert_eq!((code, &v["error"]["code"]), (403, &json!("forbidden")));

    let (code, v) = post(&d, Some(ADMIN_TOKEN), deploy).await;
    assert_eq!(code, 201, "{v}");
    assert!(v["id"].as_i64().is_some(), "{v}");
    assert_eq!(v["title"], "deploy checkout v2.3");
    assert_eq!(v["at"], three_ago.as_str());
    assert_eq!(
        v["labels"],
        json!({"service": "checkout", "team": "payments"})
    );
    let created: DateTime<Utc> = v["created_at"].as_str().unwrap().parse().unwrap();
    assert!((Utc::now() - created).num_seconds().abs() < 60, "{v}");

    // `at` defaults to now; `labels` to none.
    let (code, v) = post(&d, Some(ADMIN_TOKEN), r#"{"title": "CDN switch"}"#).await;
    assert_eq!(code, 201, "{v}");
    let at: DateTime<Utc> = v["at"].as_str().unwrap().parse().unwrap();
    assert!((Utc::now() - at).num_seconds().abs() < 60, "{v}");
    assert_eq!(v["labels"], json!({}));
    let search =
        json!({"title": "deploy search 7.1", "at": two_ago, "labels": {"service": "search"}});
    assert_eq!(
        post(&d, Some(ADMIN_TOKEN), &search.to_string()).await.0,
        201
    );

    // Newest first; filtered by labels (all must hold), time and count.
    let all = ["CDN switch", "deploy search 7.1", "deploy checkout v2.3"];
    assert_eq!(titles(&d, "").await, all);
    assert_eq!(
        titles(&d, "?label=service=checkout").await,
        ["deploy checkout v2.3"]
    );
    assert_eq!(
        titles(&d, "?label=service=checkout&label=team=payments").await,
        ["deploy checkout v2.3"]
    );
    assert!(titles(&d, "?label=service=checkout,team=search")
        .await
        .is_empty());
    let at =
        (Utc::now() - TimeDelta::minutes(150)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(titles(&d, &format!("?since={at}")).await, all[..2]);
    assert_eq!(titles(&d, "?since=150m").await, all[..2]);
    assert_eq!(titles(&d, "?since=1h").await, ["CDN switch"]);
    assert_eq!(titles(&d, "?limit=1").await, ["CDN switch"]);
    for (query, says) in [
        ("?label=service", "write it as key=value"),
        ("?limit=0", "between 1 and 1000"),
        ("?since=yesterday", "neither a duration"),
    ] {
        let (code, body) = http_get(d.addr, &format!("/api/v1/events{query}")).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_is_refused_with_what_to_send() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let d = daemon(&db).await;
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let ahead = (Utc::now() + TimeDelta::hours(25)).to_rfc3339();
    let cases = [
        ("not json".to_string(), 400, "the body is not JSON"),
        (
            r#"{"labels": {}}"#.to_string(),
            422,
            "missing field `title`",
        ),
        (
            r#"{"title": "x", "when": "now"}"#.to_string(),
            422,
            "unknown field `when`",
        ),
        (
            r#"{"title": "x", "labels": {"a": 1}}"#.to_string(),
            422,
            "labels",
        ),
        (
            r#"{"title": "  "}"#.to_string(),
            400,
            "title must be 1–200 bytes",
        ),
        (
            json!({"title": "x".repeat(201)}).to_string(),
            400,
            "got 201 bytes",
        ),
        (
            json!({"title": "x", "labels": many}).to_string(),
            400,
            "at most 16 (got 17)",
        ),
        (
            json!({"title": "x", "labels": {"k".repeat(101): "v"}}).to_string(),
            400,
            "1–100 bytes",
        ),
        (
            json!({"title": "x", "labels": {"a=b": "v"}}).to_string(),
            400,
            "without `=`",
        ),
        (
            json!({"title": "x", "labels": {"k": "v".repeat(101)}}).to_string(),
            400,
            "at most 100 bytes",
        ),
        (
            json!({"title": "x\u{0}y"}).to_string(),
            400,
            "control characters",
        ),
        (
            json!({"title": "x", "at": ahead}).to_string(),
            400,
            "more than a day ahead",
        ),
        (r#"{"title": "x", "at": "tomorrow"}"#.to_string(), 422, "at"),
    ];
    for (body, status, says) in cases {
        let (code, v) = post(&d, Some(ADMIN_TOKEN), &body).await;
        assert_eq!(code, status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{body}: {msg}");
        assert!(msg.contains(r#"send JSON like {"title""#), "{body}: {msg}");
    }
    assert!(titles(&d, "").await.is_empty(), "nothing was stored");
    // At most a day ahead is accepted (a deploy about to start).
    let soon = (Utc::now() + TimeDelta::hours(23)).to_rfc3339();
    let body = json!({"title": "planned failover", "at": soon}).to_string();
    assert_eq!(post(&d, Some(ADMIN_TOKEN), &body).await.0, 201);
    d.shutdown().await;
}

#[tokio::test]
async fn a_finding_lists_the_events_that_match_its_probe_and_what_changed_near_it() {
    let db = TestDb::create().await;
    let end: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    let store = with_step(&db, end).await;
    let pass = analyse(
        &store,
        &AnalysisConfig::default(),
        end + TimeDelta::minutes(3),
    )
    .await
    .unwrap();
    assert_eq!(pass.new, 1, "{pass:?}");
    let f = store.findings(&all()).await.unwrap().remove(0);
    // Nothing near it yet: the probe has one version, the runs one build.
    assert!(f.events.is_empty(), "{f:?}");
    assert_eq!((f.probe_changed_at, f.build_changed_at), (None, None));

    let change = f.change_at;
    let pool = db.pool().await;
    // A new version of the probe, with labels, 10 minutes before the change.
    sqlx::query(
        "insert into probe_versions (probe_id, version, definition, source, first_seen_at)
         select probe_id, 'v2hash', $1, 'probes/x.yaml:1', $2 from probe_versions limit 1",
    )
    .bind(json!({"name": "checkout", "labels": {"service": "checkout", "team": "payments"}}))
    .bind(change - TimeDelta::minutes(10))
    .execute(&pool)
    .await
    .unwrap();
    // The runs before change - 15 min were recorded by an older build.
    sqlx::query("insert into builds (version) values ('0.9.0-old')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "update runs set build_id = (select id from builds where version = '0.9.0-old')
         where scheduled_at < $1",
    )
    .bind(change - TimeDelta::minutes(15))
    .execute(&pool)
    .await
    .unwrap();
    let event = |minutes: i64, title: &str, labels: Value| NewEvent {
        at: change + TimeDelta::minutes(minutes),
        title: title.into(),
        labels: serde_json::from_value(labels).unwrap(),
    };
    for e in [
        event(-20, "deploy checkout v2.3", json!({"service": "checkout"})),
        event(5, "network maintenance", json!({})),
        event(10, "deploy search 7.1", json!({"service": "search"})),
        event(
            15,
            "prod push",
            json!({"service": "checkout", "env": "prod"}),
        ),
        event(-180, "deploy checkout v2.2", json!({"service": "checkout"})),
        event(61, "deploy checkout v2.4", json!({"team": "payments"})),
    ] {
        store.add_event(&e).await.unwrap();
    }

    let f = store.findings(&all()).await.unwrap().remove(0);
    let listed: Vec<&str> = f.events.iter().map(|e| e.title.as_str()).collect();
    // Within the hour either side and every label among the probe's; oldest first.
    assert_eq!(
        listed,
        ["deploy checkout v2.3", "network maintenance"],
        "{f:#?}"
    );
    assert_eq!(f.events[0].at, change - TimeDelta::minutes(20));
    assert_eq!(f.probe_changed_at, Some(change - TimeDelta::minutes(10)));
    let build_at = f
        .build_changed_at
        .expect("the build changed near the finding");
    assert!(
        build_at >= change - TimeDelta::minutes(15) && build_at < change - TimeDelta::minutes(13),
        "the first run of the new build: {build_at} (change at {change})"
    );
    // Acknowledging returns the same context, and the JSON carries it.
    let acked = store
        .ack_finding(f.id, "alice", end)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acked.events, f.events);
    let v = serde_json::to_value(&acked).unwrap();
    assert_eq!(v["events"][0]["labels"], json!({"service": "checkout"}));
    assert!(
        v["probe_changed_at"].is_string() && v["build_changed_at"].is_string(),
        "{v}"
    );
}
