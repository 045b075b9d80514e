//! Leadership among real processes (issue 18, items 3 and 6): three
//! `prober run` processes share one database; the evaluator lease's holder
//! is frozen (SIGSTOP), then the next one killed (SIGKILL). Each time another
//! process holds the lease within 15 s, and the thawed one does not take it
//! back. Last the holder is cut off from Postgres (a partition: each process
//! reaches it through a proxy of its own): the last one takes the lease
//! within 15 s and keeps it when the partition heals.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::db::TestDb;
use crate::helpers::{cli_command, closed_port, signal, Children, Proxy};

/// The pid of the process holding the evaluator lease now (its holder name
/// is `location/host/pid/random`).
async fn holder_pid(pool: &PgPool) -> Option<u32> {
    let holder: Option<String> = sqlx::query_scalar(
        "select holder from leases where name = 'evaluator' and expires_at > now()",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    holder?.rsplit('/').nth(1)?.parse().ok()
}

/// Waits up to `limit` for a holder other than `not`; its pid and the wait.
async fn next_holder(pool: &PgPool, not: &[u32], limit: Duration) -> (Option<u32>, Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(p) = holder_pid(pool).await.filter(|p| !not.contains(p)) {
            return (Some(p), started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (None, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_moves_within_15_s_when_its_holder_freezes_or_dies() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", closed_port().await);
    std::fs::write(
        dir.path().join("p.yaml"),
        format!("name: home\nevery: 1h\nhttp: {{url: \"{url}\"}}\n"),
    )
    .unwrap();
    let mut replicas = Children(Vec::new());
    let mut proxies = Vec::new();
    for i in 0..3 {
        let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
        let child = cli_command(dir.path(), &["run"])
            .env("PROBER_PROBES", dir.path())
            .env("DATABASE_URL", db.url_via(proxy.addr))
            .env("PROBER_LISTEN", "127.0.0.1:0")
            .env("PROBER_LOCATION", format!("lab-{i}"))
            .env("PROBER_SPOOL_DIR", dir.path().join(format!("spool-{i}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        replicas.0.push(child);
        proxies.push(proxy);
    }
    let pids: Vec<u32> = replicas.0.iter().map(Child::id).collect();

    let (first, _) = next_holder(&pool, &[], Duration::from_secs(60)).await;
    let first = first.expect("one of the three replicas takes the lease");
    assert!(pids.contains(&first), "{first} is one of {pids:?}");

    // Frozen: it renews no more, and cannot step aside either.
    signal("STOP", first);
    let (second, waited) = next_holder(&pool, &[first], Duration::from_secs(30)).await;
    let second = second.expect("another replica takes the lease from the frozen one");
    assert!(
        waited <= Duration::from_secs(15),
        "takeover after a freeze took {waited:?}"
    );
    eprintln!("takeover after SIGSTOP: {waited:?}");

    // Thawed, it finds the lease taken and stays a follower.
    signal("CONT", first);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        holder_pid(&pool).await,
        Some(second),
        "the thawed replica did not take the lease back"
    );

    // Killed: no clean hand-over, the lease expires and moves on.
    signal("KILL", second);
    let (third, waited) = next_holder(&pool, &[second], Duration::from_secs(30)).await;
    let third = third.expect("another replica takes the lease from the killed one");
    assert!(
        waited <= Duration::from_secs(15),
        "takeover after a kill took {waited:?}"
    );
    eprintln!("takeover after SIGKILL: {waited:?}");

    // Cut off from Postgres: it cannot renew, the last replica takes over.
    let cut_off = &proxies[pids.iter().position(|p| *p == third).unwrap()];
    cut_off.cut();
    let (fourth, waited) = next_holder(&pool, &[second, third], Duration::from_secs(30)).await;
    let fourth = fourth.expect("the last replica takes the lease from the cut-off one");
    assert!(
        waited <= Duration::from_secs(15),
        "takeover after a partition took {waited:?}"
    );
    eprintln!("takeover after a partition: {waited:?}");
    cut_off.restore();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        holder_pid(&pool).await,
        Some(fourth),
        "the healed replica did not take the lease back"
    );
}
