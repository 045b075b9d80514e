//! Trend analysis against a real store: runs written through the writer's
//! statement, series read from merged bins, a step in one phase found once,
//! named by the phase that moved, never reported twice (another pass, a
//! restart), and shown by the API; a stationary series with outliers gives
//! nothing.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use prober::analysis::{analyse, AnalysisConfig};
use prober::run::{Phases, ProbeMeta, RunRecord};
use prober::store::trends::FindingFilter;
use prober::store::Store;

use crate::db::TestDb;
use crate::store::{lcg, meta, record};

/// A run whose first byte takes `first_byte_us`, the other phases fixed, all with ±10 % noise.
pub(crate) fn run(
    m: &Arc<ProbeMeta>,
    at: DateTime<Utc>,
    first_byte_us: u64,
    seed: &mut u64,
) -> RunRecord {
    let mut noisy = |us: u64| us * (90 + lcg(seed) % 21) / 100;
    let phases = Phases {
        dns_us: Some(noisy(2_000)),
        connect_us: Some(noisy(5_000)),
        tls_us: Some(noisy(10_000)),
        first_byte_us: Some(noisy(first_byte_us)),
        transfer_us: Some(noisy(3_000)),
        total_us: 0,
    };
    let total = [
        phases.dns_us,
        phases.connect_us,
        phases.tls_us,
        phases.first_byte_us,
        phases.transfer_us,
    ]
    .iter()
    .flatten()
    .sum();
    let mut r = record(m, at, total, true);
    r.outcome.phases = Phases {
        total_us: total,
        ..phases
    };
    r
}

/// Eight hours of one run a minute ending at `end`; `first_byte(minute)` gives
/// each run's first byte. The same eight hours on each of the two days
/// before hold the first minute's level throughout: the earlier days a step
/// is judged against (the daily cycle), without which the analysis reports
/// no step.
pub(crate) async fn write_hours(
    store: &Store,
    m: &Arc<ProbeMeta>,
    end: DateTime<Utc>,
    first_byte: impl Fn(i64) -> u64,
) {
    let start = end - TimeDelta::hours(8);
    let mut seed = 7;
    let mut runs = Vec::new();
    for back in [2, 1] {
        let earlier = start - TimeDelta::days(back);
        runs.extend(
            (0..8 * 60).map(|i| run(m, earlier + TimeDelta::minutes(i), first_byte(0), &mut seed)),
        );
    }
    runs.extend(
        (0..8 * 60).map(|i| run(m, start + TimeDelta::minutes(i), first_byte(i), &mut seed)),
    );
    for batch in runs.chunks(200) {
        store.write_runs(batch).await.unwrap();
    }
}

pub(crate) async fn store(db: &TestDb, location: &str) -> Store {
    let store = Store::new(&db.url, location).unwrap();
    store.migrate().await.unwrap();
    store
}

/// A store holding a step: first byte 80 ms, then 110 ms for the last two
/// hours to `end` (total ~100 → ~130 ms).
pub(crate) async fn with_step(db: &TestDb, end: DateTime<Utc>) -> Store {
    let store = store(db, "trend-lab").await;
    let step_at = 6 * 60;
    write_hours(&store, &meta("checkout"), end, |i| {
        if i < step_at {
            80_000
        } else {
            110_000
        }
    })
    .await;
    store
}

/// A daemon at the store's location, evaluating every second, notifying `hook`.
pub(crate) fn lab_settings(
    db: &TestDb,
    hook: &crate::notify::FakeReceiver,
) -> prober::config::settings::Settings {
    prober::config::settings::Settings {
        database_url: db.url.clone(),
        location: "trend-lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        receivers: vec![crate::notify::receiver(
            "hook",
            prober::config::receivers::ReceiverKind::Webhook,
            &format!("{}/hook", hook.url),
        )],
        evaluate_every: std::time::Duration::from_secs(1),
        ..Default::default()
    }
}

pub(crate) fn all() -> FindingFilter {
    FindingFilter {
        limit: 100,
        ..FindingFilter::default()
    }
}

#[tokio::test]
async fn a_step_in_first_byte_is_found_once_and_named_by_its_phase() {
    let db = TestDb::create().await;
    let end: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    let store = with_step(&db, end).await;
    let cfg = AnalysisConfig::default();
    let now = end + TimeDelta::minutes(3);

    let pass = analyse(&store, &cfg, now).await.unwrap();
    assert_eq!((pass.subjects, pass.new), (1, 1), "{pass:?}");
    let found = store.findings(&all()).await.unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(
        (f.probe.as_str(), f.location.as_str(), f.phase.as_str()),
        ("checkout", "trend-lab", "total")
    );
    assert_eq!(
        (f.statistic.as_str(), f.kind.as_str(), f.state.as_str()),
        ("p50", "step", "open")
    );
    let change = end - TimeDelta::hours(2);
    assert!(
        (f.change_at - change).num_minutes().abs() <= 10,
        "the change is placed at {} (planted at {change})",
        f.change_at
    );
    assert!((90_000.0..110_000.0).contains(&f.before), "{f:?}");
    assert!((120_000.0..142_000.0).contains(&f.after), "{f:?}");
    assert!(f.p_value <= 0.001, "{f:?}");
    assert!(f.summary.contains("first_byte +"), "{}", f.summary);
    assert!(f.summary.contains("dns"), "{}", f.summary);
    assert!(f.summary.contains("unchanged"), "{}", f.summary);
    assert!(!f.summary.contains("connect +"), "{}", f.summary);

    // The next pass sees the same change: the row is updated, not repeated.
    let again = analyse(&store, &cfg, now + TimeDelta::minutes(5))
        .await
        .unwrap();
    assert_eq!((again.new, again.updated), (0, 1), "{again:?}");
    // A restarted daemon (a new store, nothing in memory) neither.
    let restarted = self::store(&db, "trend-lab").await;
    let after_restart = analyse(&restarted, &cfg, now + TimeDelta::minutes(10))
        .await
        .unwrap();
    assert_eq!(after_restart.new, 0, "{after_restart:?}");
    assert_eq!(store.findings(&all()).await.unwrap().len(), 1);

    // `prober trends` prints it, from Postgres.
    let dir = tempfile::tempdir().unwrap();
    let out = crate::helpers::cli(
        dir.path(),
        &["trends", "checkout", "--since", "3650d"],
        &[("DATABASE_URL", &db.url)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(&f.summary), "{text}");
    let json = crate::helpers::cli(
        dir.path(),
        &["trends", "--since", "3650d", "--json"],
        &[("DATABASE_URL", &db.url)],
    );
    let line: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(line["id"], f.id);
    assert_eq!(line["phase"], "total");
    let none = crate::helpers::cli(
        dir.path(),
        &["trends", "checkout", "--since", "1h"],
        &[("DATABASE_URL", &db.url)],
    );
    assert!(String::from_utf8_lossy(&none.stdout).starts_with("no trend findings since"));

    // Acknowledged: it stays, with who and when.
    let acked = store
        .ack_finding(f.id, "alice", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (acked.state.as_str(), acked.acknowledged_by.as_deref()),
        ("acknowledged", Some("alice"))
    );
    assert!(store
        .ack_finding(f.id + 1000, "bob", now)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_step_thirty_minutes_old_is_found_before_the_change_point_test_can_see_it() {
    // The probe's 117 runs in the last two hours put it at 10-minute points:
    // three after the step, where the change-point test holds five on each
    // side; the end-of-window test reads the runs (`analysis::tail`).
    let db = TestDb::create().await;
    let store = store(&db, "trend-lab").await;
    let end: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    let step_at = |minutes_old: i64| {
        move |i: i64| {
            if i < 8 * 60 - minutes_old {
                80_000
            } else {
                110_000
            }
        }
    };
    write_hours(&store, &meta("checkout"), end, step_at(30)).await;
    let now = end + TimeDelta::minutes(3);
    let pass = analyse(&store, &AnalysisConfig::default(), now)
        .await
        .unwrap();
    assert_eq!(pass.new, 1, "{pass:?}");
    let found = store.findings(&all()).await.unwrap();
    let f = &found[0];
    assert_eq!((f.phase.as_str(), f.kind.as_str()), ("total", "step"));
    assert_eq!(f.change_at, end - TimeDelta::minutes(30), "{f:?}");
    assert!(f.summary.contains("first_byte +"), "{}", f.summary);
    // Ten minutes old (one point of three): too few runs to tell; nothing yet.
    let young = TestDb::create().await;
    let store = self::store(&young, "trend-lab").await;
    write_hours(&store, &meta("checkout"), end, step_at(10)).await;
    let pass = analyse(&store, &AnalysisConfig::default(), now)
        .await
        .unwrap();
    assert_eq!(pass.new, 0, "{pass:?}");
}

#[tokio::test]
async fn a_stationary_series_with_outliers_gives_no_finding() {
    let db = TestDb::create().await;
    let store = store(&db, "trend-lab").await;
    let m = meta("steady");
    let end: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    // Single bad minutes: ten times slower, once every 50 minutes.
    write_hours(
        &store,
        &m,
        end,
        |i| {
            if i % 50 == 17 {
                800_000
            } else {
                80_000
            }
        },
    )
    .await;
    let pass = analyse(
        &store,
        &AnalysisConfig::default(),
        end + TimeDelta::minutes(3),
    )
    .await
    .unwrap();
    assert_eq!((pass.subjects, pass.new), (1, 0), "{pass:?}");
    let found = store.findings(&all()).await.unwrap();
    assert!(found.is_empty(), "{found:#?}");
}

#[tokio::test]
async fn a_step_in_the_failure_ratio_is_found_and_a_burst_is_not() {
    let db = TestDb::create().await;
    let store = store(&db, "trend-lab").await;
    let end: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    let start = end - TimeDelta::hours(8);
    let mut seed = 3;
    // One run a minute: no failures, a 4-minute outage at 02:00 (a burst,
    // the `failing` rule's business), then one run in five fails from 06:00.
    let runs: Vec<_> = (0..8 * 60)
        .map(|i| {
            let us = 100_000 * (90 + lcg(&mut seed) % 21) / 100;
            let ok = !((120..124).contains(&i) || (i >= 360 && i % 5 == 0));
            record(&meta("flaky"), start + TimeDelta::minutes(i), us, ok)
        })
        .collect();
    store.write_runs(&runs).await.unwrap();
    let pass = analyse(
        &store,
        &AnalysisConfig::default(),
        end + TimeDelta::minutes(3),
    )
    .await
    .unwrap();
    assert_eq!(pass.new, 1, "{pass:?}");
    let f = &store.findings(&all()).await.unwrap()[0];
    assert_eq!(
        (f.statistic.as_str(), f.kind.as_str()),
        ("failure_ratio", "step")
    );
    assert!(
        (f.change_at - (end - TimeDelta::hours(2)))
            .num_minutes()
            .abs()
            <= 10,
        "{f:?}"
    );
    assert!(f.before < 0.02 && (0.15..0.25).contains(&f.after), "{f:?}");
    assert!(
        f.summary.contains("failures") && f.summary.contains("% of runs"),
        "{}",
        f.summary
    );
}

#[tokio::test]
async fn the_api_lists_and_acknowledges_findings() {
    use crate::helpers::{admin_token, http_get, http_request_as, wait_for, ADMIN_TOKEN};
    use prober::config::settings::Settings;
    use prober::daemon::{http_executor, Daemon};
    use std::time::Duration;

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
    assert_eq!(pass.new, 1);
    let settings = Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_token: admin_token(),
        ..Settings::default()
    };
    let d = Daemon::start(&settings, Vec::new(), http_executor().unwrap())
        .await
        .unwrap();
    let ready = wait_for(Duration::from_secs(15), || {
        d.store_health.state() == prober::store::writer::StoreState::Ok
    })
    .await;
    assert!(ready);
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();

    let (code, body) = http_get(d.addr, "/api/v1/trends?state=open").await;
    assert_eq!(code, 200, "{body}");
    let list = json(&body);
    let f = &list["trends"][0];
    assert_eq!(
        (f["probe"].as_str(), f["kind"].as_str()),
        (Some("checkout"), Some("step"))
    );
    assert!(f["summary"].as_str().unwrap().contains("first_byte +"));
    let id = f["id"].as_i64().unwrap();
    let (code, body) = http_get(d.addr, "/api/v1/probes/checkout/trends").await;
    assert_eq!(
        (code, json(&body)["trends"][0]["id"].as_i64()),
        (200, Some(id))
    );
    let (code, _) = http_get(d.addr, "/api/v1/probes/nobody/trends").await;
    assert_eq!(code, 404);

    // By label: those of the probe's newest definition, every one must hold.
    let count = |body: &str| json(body)["trends"].as_array().map(Vec::len);
    let (code, body) = http_get(d.addr, "/api/v1/trends?label=team=payments").await;
    assert_eq!((code, count(&body)), (200, Some(0)), "no labels yet");
    sqlx::query(
        "insert into probe_versions (probe_id, version, definition, source, first_seen_at)
         select probe_id, 'v2hash', $1, 'probes/x.yaml:1', now() from probe_versions limit 1",
    )
    .bind(serde_json::json!({"name": "checkout", "labels": {"service": "checkout", "team": "payments"}}))
    .execute(&db.pool().await)
    .await
    .unwrap();
    for (query, found) in [
        ("label=team=payments", 1),
        ("label=team=payments&label=service=checkout", 1),
        ("label=team=payments,service=checkout", 1),
        ("label=team=search", 0),
        ("label=team=payments&label=team=search", 0),
    ] {
        let (code, body) = http_get(d.addr, &format!("/api/v1/trends?{query}")).await;
        assert_eq!((code, count(&body)), (200, Some(found)), "{query}: {body}");
    }
    let (code, body) = http_get(
        d.addr,
        "/api/v1/probes/checkout/trends?label=service=checkout",
    )
    .await;
    assert_eq!((code, count(&body)), (200, Some(1)), "{body}");
    let (code, body) = http_get(d.addr, "/api/v1/trends?label=team").await;
    assert_eq!(code, 400);
    assert!(body.contains("key=value"), "{body}");
    let (code, body) = http_get(d.addr, "/api/v1/trends?state=closed").await;
    assert_eq!(code, 400);
    assert!(
        body.contains("closed") && body.contains("acknowledged"),
        "{body}"
    );

    // Acknowledging is a write: it needs the admin token.
    let path = format!("/api/v1/trends/{id}/ack");
    let (code, _) = http_request_as(d.addr, "POST", &path, None).await;
    assert_eq!(code, 401);
    let (code, body) = http_request_as(d.addr, "POST", &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let acked = json(&body);
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledged_by"], "api_token");
    let (code, body) = http_get(d.addr, "/api/v1/trends?state=open").await;
    assert_eq!(
        (code, json(&body)["trends"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (code, _) = http_request_as(
        d.addr,
        "POST",
        "/api/v1/trends/999999/ack",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, 404);
    d.shutdown().await;
}

/// The `trend` rule: an open finding fires a ticket through the outbox with
/// the finding's summary; acknowledging it resolves the alert.
#[tokio::test]
async fn an_open_finding_is_a_ticket_until_it_is_acknowledged() {
    use crate::helpers::{
        admin_token, closed_port, http_request_as, probes, wait_for, ADMIN_TOKEN,
    };
    use crate::notify::FakeReceiver;
    use prober::config::settings::Settings;
    use prober::daemon::{http_executor, Daemon};
    use std::time::Duration;

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
    assert_eq!(pass.new, 1);
    let id = store.findings(&all()).await.unwrap()[0].id;
    let hook = FakeReceiver::start(200).await;
    let settings = Settings {
        api_token: admin_token(),
        ..lab_settings(&db, &hook)
    };
    // The probe runs once an hour against a closed port: one failure, no `failing` alert.
    let yaml = format!(
        "name: checkout\nevery: 1h\nlabels: {{team: payments}}\nhttp: {{url: \"http://{}/\"}}\n",
        closed_port().await
    );
    let d = Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let events = |event: &str| {
        hook.accepted()
            .into_iter()
            .map(|r| r.json())
            .filter(|w| w["rule"] == "trend" && w["event"] == event)
            .collect::<Vec<_>>()
    };
    let fired = wait_for(Duration::from_secs(30), || !events("trigger").is_empty()).await;
    assert!(fired, "no trend notification: {:?}", hook.requests());
    let w = &events("trigger")[0];
    assert_eq!(
        (w["probe"].as_str(), w["severity"].as_str()),
        (Some("checkout"), Some("ticket"))
    );
    let reason = w["reason"].as_str().unwrap();
    assert!(reason.contains("total p50 +"), "{reason}");
    assert!(reason.contains("first_byte +"), "{reason}");
    assert!(
        reason.contains(&format!("/api/v1/trends/{id}/ack")),
        "{reason}"
    );

    let (code, body) = http_request_as(
        d.addr,
        "POST",
        &format!("/api/v1/trends/{id}/ack"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let resolved = wait_for(Duration::from_secs(30), || !events("resolve").is_empty()).await;
    assert!(
        resolved,
        "no resolve after the acknowledgement: {:?}",
        hook.requests()
    );
    assert_eq!(events("trigger").len(), 1, "one ticket per incident");
    d.shutdown().await;
}

/// A store with one probe's run (so it has an id), and a step finding of
/// it: `phase`, placed `minute` minutes after 18:00, `before` → `after`.
async fn finding_lab(
    db: &TestDb,
) -> (
    Store,
    impl Fn(i16, i64, f64, f64) -> prober::store::trends::NewFinding,
) {
    let store = store(db, "trend-lab").await;
    store
        .write_runs(&[record(
            &meta("flap"),
            "2026-11-30T17:00:00Z".parse().unwrap(),
            1_000,
            true,
        )])
        .await
        .unwrap();
    let probe_id: i32 = sqlx::query_scalar("select id from probes where name = 'flap'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let location_id: i16 = sqlx::query_scalar("select id from locations where name = 'trend-lab'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let at =
        |m: i64| "2026-11-30T18:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::minutes(m);
    let step =
        move |phase: i16, minute: i64, before: f64, after: f64| prober::store::trends::NewFinding {
            probe_id,
            location_id,
            phase,
            statistic: "p50".into(),
            kind: "step",
            change_at: at(minute),
            window_end: at(120),
            before,
            after,
            p_value: 1e-6,
            effect_size: Some(0.7),
            summary: format!("phase {phase} at {minute}"),
            crosses: None,
        };
    (store, step)
}

#[tokio::test]
async fn a_change_moves_its_finding_and_a_change_back_is_another() {
    use prober::store::trends::Saved;
    let db = TestDb::create().await;
    let (store, step) = finding_lab(&db).await;
    let at =
        |m: i64| "2026-11-30T18:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::minutes(m);
    let within = TimeDelta::hours(1);
    let now = at(130);
    let Saved::New(up) = store
        .save_finding(&step(0, 0, 100.0, 130.0), now, within)
        .await
        .unwrap()
    else {
        panic!("a first finding is new");
    };
    // Placed 40 minutes later by a later pass: the same change, moved.
    assert_eq!(
        store
            .save_finding(&step(0, 40, 100.0, 131.0), now, within)
            .await
            .unwrap(),
        Saved::Updated(up)
    );
    // Back down 20 minutes after that: another change, not a move of the rise.
    let down = store
        .save_finding(&step(0, 60, 131.0, 100.0), now, within)
        .await
        .unwrap();
    assert!(matches!(down, Saved::New(id) if id != up), "{down:?}");
    let found = store.findings(&all()).await.unwrap();
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[tokio::test]
async fn a_phase_s_step_and_the_total_s_of_one_change_are_one_finding() {
    use prober::store::trends::Saved;
    let db = TestDb::create().await;
    let (store, step) = finding_lab(&db).await;
    let t0 = "2026-11-30T18:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let within = TimeDelta::hours(1);
    // First byte (phase 4) confirmed first, at 18:35.
    let first = t0 + TimeDelta::minutes(35);
    let Saved::New(id) = store
        .save_finding(&step(4, 0, 60.0, 80.0), first, within)
        .await
        .unwrap()
    else {
        panic!("a first finding is new");
    };
    // The total's step of the same change, a pass later: it takes the row.
    let later = first + TimeDelta::minutes(5);
    assert_eq!(
        store
            .save_finding(&step(0, 5, 100.0, 120.0), later, within)
            .await
            .unwrap(),
        Saved::Updated(id)
    );
    // First byte's step found again afterwards: the total's row stays.
    assert_eq!(
        store
            .save_finding(&step(4, 0, 60.0, 80.0), later, within)
            .await
            .unwrap(),
        Saved::Updated(id)
    );
    let found = store.findings(&all()).await.unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(
        (f.phase.as_str(), f.summary.as_str()),
        ("total", "phase 0 at 5")
    );
    assert_eq!(
        f.detected_at, first,
        "the change was told when first byte's was"
    );
    // Another phase's step the same way then is still the total's change;
    // a phase's step the other way is another change.
    assert_eq!(
        store
            .save_finding(&step(2, 10, 8.0, 12.0), later, within)
            .await
            .unwrap(),
        Saved::Updated(id)
    );
    assert!(matches!(
        store
            .save_finding(&step(4, 10, 80.0, 60.0), later, within)
            .await
            .unwrap(),
        Saved::New(new) if new != id
    ));
    assert_eq!(store.findings(&all()).await.unwrap().len(), 2);
}
