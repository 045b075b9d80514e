//! The trend analysis as the daemon runs it. The store holds two days of
//! history and a step in first byte two hours ago, written through the
//! writer (the step analysis needs the same hours of earlier days, which a
//! test cannot wait for); the daemon runs with `trends` on and its probe
//! against a fake target at the new level. The daemon's own analysis task
//! finds the step, stores one finding, and the API, the CLI and a webhook
//! show it; a restarted daemon does not report it again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use prober::config::settings::{Settings, TrendSettings};
use prober::daemon::{http_executor, Daemon};

use crate::db::TestDb;
use crate::helpers::{cli, http_request, probes, wait_for, FakeTarget};
use crate::notify::FakeReceiver;
use crate::trends::{all, lab_settings, with_step};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_finds_a_step_once_and_pages_across_a_restart() {
    let db = TestDb::create().await;
    let end = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let store = with_step(&db, end).await;
    let target = FakeTarget::start().await;
    let hook = FakeReceiver::start(200).await;
    let settings = Settings {
        trends: TrendSettings {
            enabled: true,
            ..TrendSettings::default()
        },
        ..lab_settings(&db, &hook)
    };
    // The new level: first byte ~110 ms. Once an hour: one live run.
    let yaml = format!(
        "name: checkout\nevery: 1h\nalert: {{trend_severity: page}}\nhttp: {{url: \"{}\"}}\n",
        target.url("/delay/110")
    );
    let d = Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let triggers = || {
        hook.accepted()
            .into_iter()
            .map(|r| r.json())
            .filter(|w| w["rule"] == "trend" && w["event"] == "trigger")
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(Duration::from_secs(30), || !triggers().is_empty()).await,
        "the daemon's analysis found no step to tell: {:?}",
        hook.requests()
    );
    let found = store.findings(&all()).await.unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(
        (f.probe.as_str(), f.phase.as_str(), f.kind.as_str()),
        ("checkout", "total", "step")
    );
    assert!(f.summary.contains("first_byte +"), "{}", f.summary);
    // A pass at the next five-minute close may update the finding's figures
    // while the test reads it; what names the finding does not change.
    let named = "checkout (trend-lab): total p50 +";
    assert!(f.summary.starts_with(named), "{}", f.summary);
    let w = &triggers()[0];
    assert_eq!(w["severity"], "page", "alert.trend_severity: page");
    let reason = w["reason"].as_str().unwrap();
    assert!(
        reason.contains(named) && reason.contains("first_byte +"),
        "{w}"
    );

    // The API and the CLI show it.
    let (code, body) = http_request(d.addr, "GET", "/api/v1/probes/checkout/trends").await;
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["trends"][0]["id"], f.id, "{listed}");
    let dir = tempfile::tempdir().unwrap();
    let out = cli(
        dir.path(),
        &["trends", "checkout"],
        &[("DATABASE_URL", &db.url)],
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with(&format!("#{} [open] step ", f.id)) && printed.contains(named),
        "{out:?}"
    );

    // A restarted daemon analyses again and finds the same step: updated, not new.
    d.shutdown().await;
    let d = Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let analysis = d.core.analysis.clone();
    assert!(
        wait_for(Duration::from_secs(30), || analysis
            .passes
            .load(Ordering::SeqCst)
            >= 1)
        .await,
        "the restarted daemon ran no analysis pass"
    );
    assert_eq!(analysis.new_findings.load(Ordering::SeqCst), 0);
    assert_eq!(store.findings(&all()).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(triggers().len(), 1, "one page, not one per daemon");
    d.shutdown().await;
}
