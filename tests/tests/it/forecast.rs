//! The trend forecast against a real store: a probe whose p95 rises slowly
//! gets a drift finding saying when it crosses its `latency` alert's
//! threshold; without a rule, or with a threshold out of reach, none.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use prober::analysis::{analyse, AnalysisConfig};
use prober::config::policy::{LatencyRule, Severity};
use prober::store::trends::Finding;

use crate::db::TestDb;
use crate::store::meta;
use crate::trends::{all, run, store};

/// Four days of a run every 2 minutes to `end`, first byte 80 ms rising
/// 2 ms a day (total ~100 ms, p95 ~110 ms, rising ~2.2 ms a day).
async fn rising(db: &TestDb, names: &[&str], end: DateTime<Utc>) -> prober::store::Store {
    let store = store(db, "trend-lab").await;
    let start = end - TimeDelta::days(4);
    for name in names {
        let m = meta(name);
        let mut seed = 11;
        let runs: Vec<_> = (0..4 * 24 * 30)
            .map(|i| {
                let at = start + TimeDelta::minutes(2 * i);
                let days = (at - start).num_seconds() as f64 / 86_400.0;
                run(&m, at, (80_000.0 + 2_000.0 * days) as u64, &mut seed)
            })
            .collect();
        for batch in runs.chunks(500) {
            store.write_runs(batch).await.unwrap();
        }
    }
    store
}

fn rule(above_ms: u64) -> LatencyRule {
    LatencyRule {
        quantile: 0.95,
        above: Duration::from_millis(above_ms),
        over: Duration::from_secs(300),
        severity: Severity::Ticket,
    }
}

#[tokio::test]
async fn a_rising_p95_is_forecast_to_cross_the_latency_threshold() {
    let db = TestDb::create().await;
    let end: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    let store = rising(&db, &["near", "far", "norule"], end).await;
    let cfg = AnalysisConfig {
        latency: HashMap::from([("near".into(), rule(150)), ("far".into(), rule(5_000))]),
        ..AnalysisConfig::default()
    };
    let now = end + TimeDelta::minutes(3);
    analyse(&store, &cfg, now).await.unwrap();
    let found = store.findings(&all()).await.unwrap();
    let forecasts: Vec<&Finding> = found.iter().filter(|f| f.crosses_at.is_some()).collect();
    assert_eq!(forecasts.len(), 1, "only `near` can cross: {found:#?}");
    // The drift of the median is found for every probe, rule or not: a
    // steady ramp is a drift, not a run of steps.
    for probe in ["near", "far", "norule"] {
        assert!(
            found.iter().any(|f| f.probe == probe
                && f.kind == "drift"
                && f.statistic == "p50"
                && f.crosses_at.is_none()),
            "{probe}: {found:#?}"
        );
    }
    eprintln!("{}", forecasts[0].summary);
    let f = forecasts[0];
    assert_eq!(
        (
            f.probe.as_str(),
            f.phase.as_str(),
            f.statistic.as_str(),
            f.kind.as_str()
        ),
        ("near", "total", "p95", "drift")
    );
    assert_eq!(f.crosses_ms, Some(150.0));
    // p95 ≈ 1.1 × (20 + 80 + 2·days) ms: ≈ 119 ms at day 4, rising ≈ 2.2 ms
    // a day, reaching 150 ms about 14 days after the last hour.
    let ahead = (f.crosses_at.unwrap() - end).num_hours() as f64 / 24.0;
    assert!(
        (8.0..22.0).contains(&ahead),
        "crosses in {ahead:.1} days: {f:#?}"
    );
    assert!((105_000.0..135_000.0).contains(&f.after), "{f:#?}");
    assert!(f.after > f.before, "{f:#?}");
    assert!(
        f.summary
            .contains("crosses the latency alert's 150.0 ms in about"),
        "{}",
        f.summary
    );

    // Another pass updates the forecast, it does not repeat it.
    let again = analyse(&store, &cfg, now + TimeDelta::minutes(5))
        .await
        .unwrap();
    assert_eq!(again.new, 0, "{again:?}");
    let found = store.findings(&all()).await.unwrap();
    assert_eq!(found.iter().filter(|f| f.crosses_at.is_some()).count(), 1);

    // `prober trends` prints it.
    let dir = tempfile::tempdir().unwrap();
    let out = crate::helpers::cli(
        dir.path(),
        &["trends", "near", "--since", "3650d"],
        &[("DATABASE_URL", &db.url)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("crosses 150.0 ms at "), "{text}");
}
