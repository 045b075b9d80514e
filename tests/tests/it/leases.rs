//! The evaluator lease against a real Postgres: one holder at a time, taken
//! over once its holder stops renewing (killed, frozen, cut off), handed over
//! at once on a clean shutdown, and fencing: a change the old holder saves
//! after losing it is refused.

use std::time::Duration;

use prober::alert::engine::{Lease, EVALUATOR_LEASE};
use prober::alert::persist::{self, Saved};
use prober::alert::{Alert, Change, Severity, State};
use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use prober::notify::{outbox, Receivers, Routing};
use prober::store::Store;

use crate::db::TestDb;
use crate::helpers::{probes, wait_for};

/// A change to an all-locations alert, as the leader makes them.
fn fleet_change() -> Change {
    let mut a = Alert::new(
        "orders",
        "latency",
        "all",
        Severity::Ticket,
        chrono::Utc::now(),
    );
    a.state = State::Pending;
    Change {
        before: prober::alert::Before::of(&a),
        alert: a,
        transition: None,
        notice: None,
    }
}

#[tokio::test]
async fn a_lease_moves_when_its_holder_stops_renewing_and_fences_the_old_holder() {
    let db = TestDb::create().await;
    let store = Store::new(&db.url, "lab").unwrap();
    store.migrate().await.unwrap();
    let ttl = Duration::from_millis(1_000);
    let a = Lease::new(EVALUATOR_LEASE, "a".into(), ttl);
    let b = Lease::new(EVALUATOR_LEASE, "b".into(), ttl);
    let notices = outbox::Outbox::new(Receivers::new(Routing::default()));

    assert_eq!(a.renew(&store).await, Some(1), "a free lease is taken");
    assert_eq!(b.renew(&store).await, None, "one holder at a time");
    assert_eq!(a.renew(&store).await, Some(1), "renewing keeps the term");
    assert_eq!((a.term(), b.term()), (Some(1), None));

    // `a` freezes: it renews no more. Past the TTL it no longer counts
    // itself leader, and `b` takes the lease with a higher term.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(a.term(), None, "a holder past its deadline is not leader");
    assert_eq!(b.renew(&store).await, Some(2));

    // `a` thaws and saves what it decided under term 1: refused.
    let stale = persist::save(&store, &fleet_change(), &notices, Some(a.fence(1)))
        .await
        .unwrap();
    assert_eq!(stale, Saved::Fenced);
    assert!(
        persist::load(&store).await.unwrap().is_empty(),
        "nothing written"
    );
    assert_eq!(
        a.renew(&store).await,
        None,
        "and it cannot take the lease back"
    );
    let fresh = persist::save(&store, &fleet_change(), &notices, Some(b.fence(2)))
        .await
        .unwrap();
    assert_eq!(fresh, Saved::Written);
    assert_eq!(persist::load(&store).await.unwrap().len(), 1);

    // A clean shutdown hands it over at once, with a higher term still.
    b.release(&store).await;
    assert_eq!(b.term(), None);
    assert_eq!(a.renew(&store).await, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_replica_leads_within_seconds_when_the_leader_stops() {
    let db = TestDb::create().await;
    let settings = |location: &str| Settings {
        database_url: db.url.clone(),
        location: location.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        evaluate_every: Duration::from_secs(30),
        ..Settings::default()
    };
    let yaml = "name: home\nevery: 1h\nhttp: {url: \"http://127.0.0.1:9/\"}\n";
    let start = |s: Settings| async move {
        Daemon::start(&s, probes(yaml), http_executor().unwrap())
            .await
            .unwrap()
    };
    let d1 = start(settings("lab1")).await;
    let d2 = start(settings("lab2")).await;
    let leaders = || {
        [&d1, &d2]
            .iter()
            .filter(|d| d.core.alerts.is_leader())
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(10), || leaders() == 1).await,
        "one replica leads"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(leaders(), 1, "and only one, renewal after renewal");
    let (leader, other) = if d1.core.alerts.is_leader() {
        (d1, d2)
    } else {
        (d2, d1)
    };
    let started = std::time::Instant::now();
    leader.shutdown().await;
    assert!(
        wait_for(Duration::from_secs(6), || other.core.alerts.is_leader()).await,
        "the other replica takes over within a renewal (2 s) of the handover"
    );
    eprintln!("takeover after a clean shutdown: {:?}", started.elapsed());
    other.shutdown().await;
}
