//! Chaos cases of issue 18 on the real daemon with a TCP proxy in front of
//! Postgres: an outage longer than the queue holds (item 6), and one longer
//! than the memory window, whose runs wait on disk (item 1). They assert
//! counts: every run stored once, none lost beyond what the queue's bound
//! drops (and those counted), and the dropped are the oldest.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use prober::store::writer::StoreState;

use crate::db::TestDb;
use crate::helpers::{daemon_settings, probes, wait_for, FakeTarget, Proxy};

fn settings(database_url: String, queue_capacity: usize) -> Settings {
    Settings {
        queue_capacity,
        ..daemon_settings(database_url)
    }
}

fn n_probes(target: &FakeTarget, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "- name: p{i}\n  every: 1s\n  timeout: 900ms\n  http: {{url: \"{}\"}}\n",
                target.url("/ok")
            )
        })
        .collect()
}

/// A daemon of five probes a second writing through a proxy the test
/// controls, once it has written its first runs.
async fn started(queue_capacity: usize) -> (FakeTarget, TestDb, Proxy, Daemon) {
    started_with(|url| settings(url, queue_capacity), 5).await
}

async fn started_with(
    settings: impl FnOnce(String) -> Settings,
    n: usize,
) -> (FakeTarget, TestDb, Proxy, Daemon) {
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let daemon = Daemon::start(
        &settings(db.url_via(proxy.addr)),
        probes(&n_probes(&target, n)),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let written = || daemon.store_health.runs_written.load(Ordering::SeqCst);
    assert!(wait_for(Duration::from_secs(15), || written() >= 5).await);
    (target, db, proxy, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_queue_drops_the_oldest_counted_and_stores_the_rest_once() {
    let _shared = crate::helpers::TIMING.read().await;
    // 20 runs of room: 4 s of 5 probes a second.
    let (_target, db, proxy, daemon) = started(20).await;
    proxy.cut();
    let cut = chrono::Utc::now();
    assert!(
        wait_for(Duration::from_secs(30), || daemon.queue.dropped() >= 15).await,
        "the outage outlasts the queue: the oldest are dropped"
    );
    assert!(daemon.queue.len() <= 20, "the queue stays within its bound");
    proxy.restore();
    assert!(
        wait_for(Duration::from_secs(30), || daemon.queue.is_empty()
            && daemon.store_health.state() == StoreState::Ok)
        .await,
        "the rest is written once Postgres is back"
    );
    let (stats, queue) = (daemon.scheduler_stats.clone(), daemon.queue.clone());
    daemon.shutdown().await;

    let finished = stats.runs_finished.load(Ordering::SeqCst) as i64;
    let dropped = queue.dropped() as i64;
    let pool = db.pool().await;
    let (stored, distinct) = db.count_runs().await;
    assert_eq!(stored, distinct, "none twice");
    assert_eq!(
        stored + dropped,
        finished,
        "every run stored or dropped and counted ({dropped} dropped)"
    );
    // The dropped are the oldest of the outage: its newest runs are kept.
    let (oldest_kept, newest): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as(
            "select min(scheduled_at) filter (where scheduled_at > $1), max(scheduled_at) from runs",
        )
        .bind(cut + chrono::TimeDelta::seconds(1))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        oldest_kept - cut >= chrono::TimeDelta::seconds(2),
        "the outage's first runs were dropped, not its last ({oldest_kept} after a cut at {cut}, newest {newest})"
    );
}

/// The queue holds a window in memory (`spool.memory_bytes`); the rest of
/// an outage waits in the spool, is read back as Postgres catches up, and
/// every run is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_memory_window_waits_on_disk_and_is_stored_once() {
    use prober::config::settings::SpoolSettings;
    let _shared = crate::helpers::TIMING.read().await;
    let spool = tempfile::tempdir().unwrap();
    // ~75 runs: under 4 s of 20 probes a second (the setting's floor is
    // 1 MiB; the queue takes any window).
    let window = 16 << 10;
    let (_target, db, proxy, daemon) = started_with(
        |url| Settings {
            spool: SpoolSettings {
                dir: Some(spool.path().to_path_buf()),
                memory_bytes: window,
                ..SpoolSettings::default()
            },
            ..daemon_settings(url)
        },
        20,
    )
    .await;
    proxy.cut();
    let queue = daemon.queue.clone();
    let mut most = 0;
    let past = wait_for(Duration::from_secs(30), || {
        most = most.max(queue.memory_bytes());
        queue.bytes() > 3 * window
    })
    .await;
    assert!(
        past,
        "the outage outgrows the window: {} bytes",
        queue.bytes()
    );
    // The window, a run over it, and the runs the spool has not written yet
    // (written every 100 ms: a few of 20 a second).
    assert!(
        most <= window + 8 * 1024,
        "memory held {most} bytes with a window of {window}, {} queued",
        queue.bytes()
    );
    proxy.restore();
    assert!(
        wait_for(Duration::from_secs(30), || queue.is_empty()
            && daemon.store_health.state() == StoreState::Ok)
        .await,
        "read back from disk and written once Postgres is back"
    );
    let stats = daemon.scheduler_stats.clone();
    daemon.shutdown().await;
    let finished = stats.runs_finished.load(Ordering::SeqCst) as i64;
    let (stored, distinct) = db.count_runs().await;
    assert_eq!(stored, distinct, "none twice");
    assert_eq!((stored, queue.dropped()), (finished, 0), "none lost");
}
