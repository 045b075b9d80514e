//! `prober once` runs exactly what the daemon runs: every shipped example,
//! against the demo targets, through `prober once --json probes` (the real
//! CLI) and through the daemon (a run now, recorded in Postgres like any
//! scheduled run), and the outcomes compared: verdict, error class, status,
//! and each scenario step's verdict. Then the same with the demo's fail
//! switch on, so a failure is compared too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use serde_json::Value;
use sqlx::Row;

use crate::db::TestDb;
use crate::helpers::cli;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What both must agree on, per probe.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Verdict {
    success: bool,
    error_class: Option<String>,
    status_code: Option<i64>,
    steps: Vec<(String, String)>,
}

fn steps_of(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_array)
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or_default().to_string(),
                        s["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `prober once --json TARGET`: one verdict per probe.
async fn once(target: &str) -> BTreeMap<String, Verdict> {
    let target = target.to_string();
    let out = tokio::task::spawn_blocking(move || cli(&repo(), &["once", "--json", &target], &[]))
        .await
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let o: Value = serde_json::from_str(l).unwrap();
            let v = Verdict {
                success: o["success"].as_bool().unwrap(),
                error_class: o["error"]["class"].as_str().map(str::to_string),
                status_code: o["status_code"].as_i64(),
                steps: steps_of(o.get("steps")),
            };
            (o["probe"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The daemon runs `name` now; the run as Postgres holds it.
async fn daemon_run(d: &Daemon, pool: &sqlx::PgPool, name: &str) -> Verdict {
    let (status, body) = crate::helpers::http_request_as(
        d.addr,
        "POST",
        &format!("/api/v1/probes/{name}/run"),
        Some(crate::helpers::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{name}: {body}");
    let run_id = serde_json::from_str::<Value>(&body).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let stored = loop {
        let row = sqlx::query(
            "select success, error_class, status_code, detail from runs_view where run_id::text = $1",
        )
        .bind(&run_id)
        .fetch_optional(pool)
        .await
        .unwrap();
        if row.is_some() || tokio::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(stored.is_some(), "{name}: run {run_id} was never written");
    let row = stored.unwrap();
    let detail: Option<Value> = row.get("detail");
    Verdict {
        success: row.get("success"),
        error_class: row.get("error_class"),
        status_code: row.get::<Option<i16>, _>("status_code").map(i64::from),
        steps: steps_of(detail.as_ref().and_then(|d| d.get("steps"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_and_the_daemon_record_the_same_outcome_for_every_shipped_example() {
    let _shared = crate::helpers::TIMING.read().await;
    let (_ports, targets) = crate::demo::demo_targets().await;
    let db = TestDb::create().await;
    let report = prober::config::load_paths(&[repo().join("probes")]);
    assert!(report.is_ok());
    let names: Vec<String> = report.probes.iter().map(|p| p.name.clone()).collect();
    let settings = Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        api_token: crate::helpers::admin_token(),
        // web-homepage is run twice in a row (healthy, then failing).
        api: prober::config::access::ApiAccess {
            run_min_interval: Duration::ZERO,
            ..Default::default()
        },
        ..Settings::default()
    };
    let d = Daemon::start(&settings, report.probes, http_executor().unwrap())
        .await
        .unwrap();
    // `runs_view` exists once the writer has migrated the fresh database.
    tokio::time::timeout(Duration::from_secs(30), d.store_health.wait_prepared())
        .await
        .expect("the writer prepares the database");
    let pool = db.pool().await;

    let by_once = once("probes").await;
    assert_eq!(
        by_once.keys().collect::<Vec<_>>(),
        {
            let mut n: Vec<&String> = names.iter().collect();
            n.sort();
            n
        },
        "`once probes` runs every probe of the directory"
    );
    let mut scenario_steps = 0;
    for name in &names {
        let by_daemon = daemon_run(&d, &pool, name).await;
        assert_eq!(
            by_once[name], by_daemon,
            "{name}: once and the daemon disagree"
        );
        assert!(by_daemon.success, "{name}: {by_daemon:?}");
        scenario_steps += by_daemon.steps.len();
    }
    assert!(
        scenario_steps >= 3,
        "a scenario passing variables between steps was compared"
    );

    // A failure is the same failure in both.
    targets.switch_fail(true);
    let failing = once("web-homepage").await;
    let by_daemon = daemon_run(&d, &pool, "web-homepage").await;
    assert_eq!(failing["web-homepage"], by_daemon);
    assert_eq!(by_daemon.error_class.as_deref(), Some("http_status"));
    assert_eq!(by_daemon.status_code, Some(503));
    targets.switch_fail(false);

    d.shutdown().await;
    targets.shutdown().await;
}
