//! Two replicas of one location evaluating the same probe's runs, as they
//! may for a few seconds while their views of the members differ (issue
//! 18, item 2): each transition, and the page it owes, is recorded once.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use prober::config::receivers::ReceiverKind;
use prober::daemon::{http_executor, Daemon};

use crate::db::TestDb;
use crate::helpers::{daemon_settings, probes, wait_for};
use crate::notify::{receiver, FakeReceiver};
use crate::store::{meta, record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_seeing_the_same_failures_record_each_transition_and_page_once() {
    let hook = FakeReceiver::start(200).await;
    let db = TestDb::create().await;
    let mut s = daemon_settings(db.url.clone());
    s.receivers = vec![receiver(
        "hook",
        ReceiverKind::Webhook,
        &format!("{}/hook", hook.url),
    )];
    // Never due during the test: the runs come from the test.
    let yaml = "name: shop\ncron: \"0 0 0 1 1 *\"\nalert: {failures_to_fire: 2, successes_to_resolve: 1}\nhttp: {url: \"http://127.0.0.1:9/\"}\n";
    let a = Daemon::start(&s, probes(yaml), http_executor().unwrap())
        .await
        .unwrap();
    let b = Daemon::start(&s, probes(yaml), http_executor().unwrap())
        .await
        .unwrap();
    let engines = [a.core.alerts.clone(), b.core.alerts.clone()];
    for e in &engines {
        let e = e.clone();
        assert!(
            wait_for(Duration::from_secs(15), move || e
                .loaded
                .load(std::sync::atomic::Ordering::SeqCst))
            .await
        );
    }
    let pool = db.pool().await;
    let transitions = || async {
        sqlx::query_as::<_, (String, String)>(
            "select from_state, to_state from alert_transitions order by id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let m = meta("shop");
    let start = Utc::now();
    // Each replica runs the tick itself: its own start time, the same outcome.
    for (i, success) in [false, false, false, true].into_iter().enumerate() {
        let tick = start + TimeDelta::seconds(i as i64);
        for (j, e) in engines.iter().enumerate() {
            e.submit(&record(
                &m,
                tick + TimeDelta::milliseconds(j as i64),
                50_000,
                success,
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let want = [
        ("ok", "pending"),
        ("pending", "firing"),
        ("firing", "resolved"),
    ]
    .map(|(f, t)| (f.to_string(), t.to_string()));
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = transitions().await;
        if seen.len() >= want.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both replicas' save loops run at least once a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(transitions().await, want, "each transition once: {seen:?}");
    let notes: Vec<String> = sqlx::query_scalar("select event from notifications order by id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(notes, ["trigger", "resolve"], "one page and one resolve");
    assert!(
        wait_for(Duration::from_secs(10), || hook.accepted().len() == 2).await,
        "{:?}",
        hook.requests()
    );
    for d in [a, b] {
        d.shutdown().await;
    }
}
