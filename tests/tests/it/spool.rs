//! The spool (issue 18, item 1): `prober run` processes killed with SIGKILL,
//! at steady state and in the middle of a Postgres outage, lose at most a
//! second of runs; the next process stores what the killed one spooled, each
//! run once.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use crate::db::TestDb;
use crate::helpers::{cli_command, probe_files, FakeTarget, Proxy, TIMING};

/// Probes, each every second: the rate is this many runs per second.
/// 100 by default; `PROBER_KILL_PROBES=1000` is the rate (run on
/// demand: BENCHMARKS.md, "Kill").
fn probes() -> usize {
    setting("PROBER_KILL_PROBES", 100)
}

/// How long Postgres is away before the second kill, in seconds: 6 by
/// default, `PROBER_KILL_OUTAGE_SECS=60` for the outage.
fn outage_secs() -> u64 {
    setting("PROBER_KILL_OUTAGE_SECS", 6)
}

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
/// A run that started this long before a kill may still be in flight: it
/// is not counted as lost (no spool can keep a run that has not finished).
const IN_FLIGHT: TimeDelta = TimeDelta::milliseconds(100);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, database_url: &str, log: &str) -> Killed {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    Killed(
        cli_command(dir, &["run"])
            .env("PROBER_PROBES", dir.join("probes"))
            .env("DATABASE_URL", database_url)
            .env("PROBER_LISTEN", "127.0.0.1:0")
            .env("PROBER_SPOOL_DIR", dir.join("spool"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// SIGKILL, and the time it was sent.
fn kill(mut p: Killed) -> DateTime<Utc> {
    let at = Utc::now();
    p.0.kill().unwrap();
    p.0.wait().unwrap();
    at
}

async fn stored_since(pool: &PgPool, since: DateTime<Utc>) -> i64 {
    sqlx::query_scalar("select count(*) from runs where scheduled_at >= $1")
        .bind(since)
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

async fn wait_stored(pool: &PgPool, since: DateTime<Utc>, n: i64, what: &str) {
    for _ in 0..1800 {
        if stored_since(pool, since).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: fewer than {n} runs stored in 180 s");
}

/// Per kill, the ticks that were due before it (and not in flight at it)
/// but are not stored.
fn lost_per_kill(ticks: &[(String, DateTime<Utc>)], kills: &[DateTime<Utc>]) -> Vec<usize> {
    let mut lost = vec![0; kills.len()];
    for pair in ticks.windows(2) {
        let ((p, prev), (q, next)) = (&pair[0], &pair[1]);
        if p != q {
            continue;
        }
        let missing = ((*next - *prev).num_milliseconds() as f64 / 1000.0).round() as i64 - 1;
        for j in 1..=missing {
            let t = *prev + TimeDelta::seconds(j);
            // Which kill this gap spans; ticks after it (less in flight) were never run.
            match kills.iter().position(|k| prev < k && k < next) {
                Some(k) if t >= kills[k] - IN_FLIGHT => {}
                Some(k) => lost[k] += 1,
                None => panic!("{p}: tick {t} missing with no kill in its gap"),
            }
        }
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_prober_loses_at_most_a_second_of_runs_even_during_an_outage() {
    let _shared = TIMING.read().await;
    let (probes, outage) = (probes(), outage_secs());
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let target = FakeTarget::start().await;
    let dir = tempfile::tempdir().unwrap();
    probe_files(dir.path(), probes, &target.url("/"));
    let url = db.url_via(proxy.addr);
    let begun = Utc::now();

    // Steady state, then SIGKILL.
    let first = start(dir.path(), &url, "first.log");
    wait_stored(&pool, begun, 3 * probes as i64, "the first process").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kill_1 = kill(first);

    // Postgres away for `outage` s, then SIGKILL in the middle of the outage.
    let second = start(dir.path(), &url, "second.log");
    wait_stored(&pool, kill_1, 2 * probes as i64, "the second process").await;
    // The killed process's membership expires: then the second runs every probe.
    for _ in 0..100 {
        let live: i64 = sqlx::query_scalar("select count(*) from members where expires_at > now()")
            .fetch_one(&pool)
            .await
            .unwrap();
        if live == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.cut();
    let cut = Utc::now();
    tokio::time::sleep(Duration::from_secs(outage)).await;
    let kill_2 = kill(second);
    let during = stored_since(&pool, cut + TimeDelta::seconds(1)).await;
    assert_eq!(during, 0, "Postgres was away: nothing could be stored");
    proxy.restore();

    // The next process replays the spool (first in its queue), then probes on.
    let third = start(dir.path(), &url, "third.log");
    wait_stored(&pool, kill_2, 2 * probes as i64, "the third process").await;
    drop(third);

    let ticks: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("select probe, scheduled_at from runs_view order by probe, scheduled_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut distinct = ticks.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), ticks.len(), "a tick stored twice");
    let lost = lost_per_kill(&ticks, &[kill_1, kill_2]);
    let replayed = ticks
        .iter()
        .filter(|(_, t)| *t >= cut && *t < kill_2)
        .count();
    eprintln!(
        "lost at the steady-state kill: {}, at the kill in the outage: {} (of {} runs a second); {replayed} runs of the outage stored after the restart",
        lost[0], lost[1], probes
    );
    assert!(
        replayed >= (outage as usize - 1) * probes,
        "the outage's runs come back from the spool: {replayed}"
    );
    for (what, n) in ["steady state", "outage"].iter().zip(&lost) {
        assert!(
            *n <= probes,
            "{what}: {n} runs lost, more than a second's ({probes})"
        );
    }
    let log = std::fs::read_to_string(dir.path().join("third.log")).unwrap();
    assert!(
        log.contains("replaying results an earlier process spooled"),
        "{log}"
    );
}
