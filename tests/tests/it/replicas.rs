//! Replicas sharing a location's probes (issue 18, item 2): three `prober
//! run` processes of one location on one database run each tick once at
//! steady state; when one is killed (SIGKILL) and another frozen (SIGSTOP)
//! the survivors take their probes within 15 s; a replica added under load
//! takes a share without ticks run twice, and hands it back at once when
//! stopped; no tick is stored twice.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use crate::db::TestDb;
use crate::helpers::{cli_command, http_get, probe_files, signal, Children, FakeTarget, TIMING};

const PROBES: usize = 30;

fn start(dir: &Path, db: &TestDb, i: usize) -> Child {
    start_on(dir, db, i, "127.0.0.1:0".parse().unwrap())
}

fn start_on(dir: &Path, db: &TestDb, i: usize, listen: std::net::SocketAddr) -> Child {
    cli_command(dir, &["run"])
        .env("PROBER_PROBES", dir.join("probes"))
        .env("DATABASE_URL", &db.url)
        .env("PROBER_LISTEN", listen.to_string())
        .env("PROBER_LOCATION", "lab")
        .env("PROBER_SPOOL_DIR", dir.join(format!("spool-{i}")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn members(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from members where location = 'lab' and expires_at > now()")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// The target's requests a second over 5 s, after 3 s to settle.
async fn requests_per_s(target: &FakeTarget) -> f64 {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = target.counts.requests();
    tokio::time::sleep(Duration::from_secs(5)).await;
    (target.counts.requests() - before) as f64 / 5.0
}

/// Probes with a run stored for a tick at or after `since`.
async fn probes_running_since(pool: &PgPool, since: DateTime<Utc>) -> i64 {
    sqlx::query_scalar("select count(distinct probe_id) from runs where scheduled_at >= $1")
        .bind(since)
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Waits up to 30 s until every probe has run at or after `since`; how long it took.
async fn all_running_again(pool: &PgPool, since: DateTime<Utc>) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if probes_running_since(pool, since).await == PROBES as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_probes_and_take_over_within_15_s() {
    let _shared = TIMING.read().await;
    let db = TestDb::create().await;
    let target = FakeTarget::start().await;
    let dir = tempfile::tempdir().unwrap();
    probe_files(dir.path(), PROBES, &target.url("/"));
    let replicas = Children((0..3).map(|i| start(dir.path(), &db, i)).collect());
    let pool = db.pool().await;
    let t = Instant::now();
    while members(&pool).await < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "three members within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Steady state: the target sees one request per tick, not three.
    let per_s = requests_per_s(&target).await;
    eprintln!("three replicas, {PROBES} probes every second: {per_s:.1} requests/s at the target");
    assert!(
        per_s <= PROBES as f64 * 1.2 && per_s >= PROBES as f64 * 0.8,
        "each tick runs once among the replicas: {per_s} requests/s for {PROBES} probes a second"
    );

    // Killed: its probes move when its row expires.
    signal("KILL", replicas.0[0].id());
    let killed_at = Utc::now();
    let took = all_running_again(&pool, killed_at + TimeDelta::seconds(1)).await;
    eprintln!("every probe running again {took:?} after a SIGKILL");
    assert!(
        took <= Duration::from_secs(15),
        "takeover after a kill took {took:?}"
    );

    // Frozen: the same, and thawed it rejoins without running ticks twice.
    signal("STOP", replicas.0[1].id());
    let frozen_at = Utc::now();
    let took = all_running_again(&pool, frozen_at + TimeDelta::seconds(1)).await;
    eprintln!("every probe running again {took:?} after a SIGSTOP");
    assert!(
        took <= Duration::from_secs(15),
        "takeover after a freeze took {took:?}"
    );
    signal("CONT", replicas.0[1].id());
    tokio::time::sleep(Duration::from_secs(6)).await;

    // A replica added under load takes a share, and no tick runs twice;
    // removed cleanly (SIGTERM), it hands its probes over at once.
    let mut replicas = replicas;
    // On a port of its own, to read what it ran from its /metrics.
    let added = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    replicas.0.push(start_on(dir.path(), &db, 3, added));
    let t = Instant::now();
    while members(&pool).await < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the added replica joins"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let per_s = requests_per_s(&target).await;
    eprintln!("with a replica added: {per_s:.1} requests/s at the target");
    assert!(
        per_s <= PROBES as f64 * 1.2 && per_s >= PROBES as f64 * 0.8,
        "each tick runs once with the added replica: {per_s} requests/s"
    );
    let (_, page) = http_get(added, "/metrics").await;
    let ran: f64 = (page.lines())
        .find_map(|l| l.strip_prefix("prober_scheduler_runs_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        ran > 0.0,
        "the added replica runs a share of the probes:\n{page}"
    );
    signal("TERM", replicas.0[3].id());
    let stopped_at = Utc::now();
    let took = all_running_again(&pool, stopped_at + TimeDelta::seconds(1)).await;
    eprintln!("every probe running again {took:?} after a clean stop of the added replica");
    assert!(
        took <= Duration::from_secs(8),
        "a clean stop hands over within a renewal (2 s): {took:?}"
    );

    let (rows, ticks): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct (probe_id, scheduled_at)) from runs where trigger = 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, ticks, "a tick stored twice");
    drop(replicas);
}
