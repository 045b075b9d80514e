//! The real daemon against fake targets and a fresh database: runs land, a
//! Postgres outage loses nothing, SIGTERM flushes the runs in flight.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prober::daemon::{http_executor, Daemon};
use prober::store::writer::StoreState;

use crate::db::TestDb;
use crate::helpers::{cli_command, http_get, probes, wait_for, FakeTarget, Proxy};

use crate::helpers::daemon_settings as settings;

fn probe_yaml(target: &FakeTarget, n: usize, path: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "- name: probe-{i}\n  every: 1s\n  timeout: 900ms\n  http: {{url: \"{}\"}}\n",
                target.url(path)
            )
        })
        .collect()
}

/// probe, location, lateness, first byte, success, version, build
type LandedRun = (String, String, i32, Option<i32>, bool, String, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_made_during_a_postgres_outage_is_stored_exactly_once() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let daemon = Daemon::start(
        &settings(db.url_via(proxy.addr)),
        probes(&probe_yaml(&target, 3, "/ok")),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let written = || daemon.store_health.runs_written.load(Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(15), || written() >= 3).await,
        "runs are written while Postgres is up"
    );

    proxy.cut();
    let before_outage = daemon.scheduler_stats.runs_finished.load(Ordering::SeqCst);
    let degraded = wait_for(Duration::from_secs(10), || {
        matches!(daemon.store_health.state(), StoreState::Degraded { .. })
    })
    .await;
    assert!(
        degraded,
        "the store reports degraded while Postgres is cut off"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = daemon.scheduler_stats.runs_finished.load(Ordering::SeqCst) - before_outage;
    assert!(
        during >= 6,
        "probing goes on during the outage ({during} runs)"
    );
    assert!(!daemon.queue.is_empty(), "results wait in the queue");
    let (code, body) = http_get(daemon.addr, "/readyz").await;
    assert_eq!(
        code, 503,
        "not ready while results are not reaching Postgres"
    );
    assert!(body.contains("\"degraded\""), "{body}");
    let (code, _) = http_get(daemon.addr, "/healthz").await;
    assert_eq!(code, 200, "healthz stays green: the process is fine");

    proxy.restore();
    let drained = wait_for(Duration::from_secs(20), || {
        daemon.queue.is_empty() && daemon.store_health.state() == StoreState::Ok
    })
    .await;
    assert!(drained, "the queue drains once Postgres is back");
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
async fn the_daemon_probes_while_postgres_is_unreachable_at_start_and_stores_it_all_later() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    proxy.cut();
    let daemon = Daemon::start(
        &settings(db.url_via(proxy.addr)),
        probes(&probe_yaml(&target, 2, "/ok")),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let stats = daemon.scheduler_stats.clone();
    assert!(
        wait_for(Duration::from_secs(10), || stats
            .runs_finished
            .load(Ordering::SeqCst)
            >= 4)
        .await
    );
    assert!(matches!(
        daemon.store_health.state(),
        StoreState::Degraded { .. }
    ));

    proxy.restore();
    let drained = wait_for(Duration::from_secs(20), || {
        daemon.queue.is_empty() && daemon.store_health.state() == StoreState::Ok
    })
    .await;
    assert!(
        drained,
        "migrations run and the queue drains once Postgres answers"
    );
    daemon.shutdown().await;

    let (rows, distinct) = db.count_runs().await;
    assert_eq!(rows, stats.runs_finished.load(Ordering::SeqCst) as i64);
    assert_eq!(distinct, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_land_with_lateness_and_the_daemon_reports_ready() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let defined = probes(&probe_yaml(&target, 2, "/delay/20"));
    let version = defined[0].version.clone();
    let daemon = Daemon::start(&settings(db.url.clone()), defined, http_executor().unwrap())
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || daemon
            .store_health
            .runs_written
            .load(Ordering::SeqCst)
            >= 4)
        .await
    );
    let (code, body) = http_get(daemon.addr, "/readyz").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"ready\""), "{body}");
    daemon.shutdown().await;

    let pool = db.pool().await;
    let rows: Vec<LandedRun> = sqlx::query_as(
        "select probe, location, lateness_us, first_byte_us, success, version, build from runs_view",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(rows.len() >= 4);
    for (probe, location, lateness, first_byte, success, v, build) in rows {
        assert!(probe.starts_with("probe-"));
        if probe == "probe-0" {
            assert_eq!(v, version);
        }
        assert_eq!(build, prober::VERSION);
        assert_eq!(location, "test-lab");
        assert!((0..1_000_000).contains(&lateness), "lateness {lateness}µs");
        assert!(first_byte.unwrap() >= 20_000);
        assert!(success);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_runs_in_flight_finish_and_stores_every_finished_run() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        probe_yaml(&target, 3, "/delay/600"),
    )
    .unwrap();
    let child = cli_command(dir.path(), &["run"])
        .env("PROBER_PROBES", dir.path())
        .env("DATABASE_URL", &db.url)
        .env("PROBER_LISTEN", "127.0.0.1:0")
        .env("PROBER_LOCATION", "sigterm-test")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Wait until some runs have finished and at least one is in flight (request read, no answer yet).
    let counts = target.counts.clone();
    let in_flight = wait_for(Duration::from_secs(20), || {
        counts.responses() >= 3 && counts.requests() > counts.responses()
    })
    .await;
    assert!(in_flight, "a run is in flight");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (rows, _) = db.count_runs().await;
    // Every request the target answered is a finished run, and every finished run is stored.
    assert_eq!(rows as usize, counts.responses(), "{stderr}");
    assert_eq!(counts.requests(), counts.responses(), "no run was cut off");
}
