//! `/metrics` in OpenMetrics with exemplars: the page a scraper asking for
//! OpenMetrics gets, and a real Prometheus (Debian's 2.42, exemplar storage
//! on) scraping it: it parses the page, stores the exemplars, and each names
//! a run that is in `runs`.
//!
//! Debian's promtool (2.42) parses only the 0.0.4 text format (`check
//! metrics` reads an exemplar as a bad timestamp, and an OpenMetrics counter
//! as a family without help), so the OpenMetrics page is checked by
//! Prometheus' own scrape parser, which is the one that matters; promtool
//! checks the 0.0.4 page (`metrics.rs`), also here after the change.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::db::TestDb;
use crate::helpers::{http_get, FakeTarget, RealServer};
use crate::metrics::{get_accepting, promtool_accepts, start, wait_for_runs};

/// Prometheus 2.42's `Accept` on a scrape.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `(probe, trace_id, span_id, value)` of every exemplar on the page.
fn exemplars(page: &str) -> Vec<(String, String, String, f64)> {
    page.lines()
        .filter_map(|l| {
            let (sample, exemplar) = l.split_once(" # {")?;
            assert!(
                sample.starts_with("prober_probe_duration_seconds_bucket{"),
                "an exemplar only on the duration buckets: {l}"
            );
            assert!(sample.contains("phase=\"total\""), "on phase total: {l}");
            let probe = sample.split("probe=\"").nth(1)?.split('"').next()?;
            let (labels, rest) = exemplar.split_once("} ")?;
            let label = |k: &str| {
                let v = labels.split(&format!("{k}=\"")).nth(1)?;
                Some(v.split('"').next()?.to_string())
            };
            let value = rest.split(' ').next()?.parse().ok()?;
            Some((
                probe.to_string(),
                label("trace_id")?,
                label("span_id")?,
                value,
            ))
        })
        .collect()
}

/// The trace ids of the runs of `probe` stored in `runs`.
async fn stored_trace_ids(addr: SocketAddr, probe: &str) -> BTreeSet<String> {
    let (code, body) = http_get(addr, &format!("/api/v1/probes/{probe}/runs?limit=1000")).await;
    assert_eq!(code, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    (page["runs"].as_array().unwrap().iter())
        .map(|r| r["trace_id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until every one of `ids` of `probe` is stored.
async fn wait_stored(addr: SocketAddr, probe: &str, ids: &BTreeSet<String>) -> BTreeSet<String> {
    let mut stored = stored_trace_ids(addr, probe).await;
    for _ in 0..100 {
        if ids.is_subset(&stored) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = stored_trace_ids(addr, probe).await;
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_asking_for_openmetrics_gets_exemplars_naming_stored_runs() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let daemon = start(&db, &target).await;
    wait_for_runs(&daemon, 2).await;
    let (head, page) = get_accepting(daemon.addr, "/metrics", PROMETHEUS_ACCEPT).await;

    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(
        page.ends_with("# EOF\n"),
        "the OpenMetrics trailer:\n{page}"
    );
    assert_eq!(page.matches("# EOF").count(), 1);
    for family in [
        "# TYPE prober_probe_duration_seconds histogram",
        "# UNIT prober_probe_duration_seconds seconds",
        "# TYPE prober_probe_runs counter",
        "# TYPE prober_reloads counter",
    ] {
        assert_eq!(
            page.matches(&format!("{family}\n")).count(),
            1,
            "{family} once:\n{page}"
        );
    }
    let found = exemplars(&page);
    let probes: BTreeSet<&str> = found.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        probes,
        BTreeSet::from(["failing", "passing"]),
        "one exemplar a probe: {found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
    for (probe, trace_id, span_id, value) in &found {
        assert_eq!(
            (trace_id.len(), span_id.len()),
            (32, 16),
            "{trace_id} {span_id}"
        );
        assert!(
            *value > 0.0 && *value < 0.9,
            "a run's duration in seconds: {value}"
        );
        let want = BTreeSet::from([trace_id.clone()]);
        let stored = wait_stored(daemon.addr, probe, &want).await;
        assert!(
            stored.contains(trace_id),
            "{probe}'s exemplar {trace_id} is a stored run: {stored:?}"
        );
    }

    // The 0.0.4 page, for a scraper that does not ask: no exemplar, promtool accepts it.
    let (head, text) = get_accepting(daemon.addr, "/metrics", "text/plain;version=0.0.4").await;
    daemon.shutdown().await;
    assert!(head.contains("version=0.0.4"), "{head}");
    assert!(!text.contains(" # {") && !text.contains("# EOF"), "{text}");
    promtool_accepts(&text);
}

/// The real Prometheus scraping `target` every second, exemplar storage on, when installed.
async fn real_prometheus(target: SocketAddr) -> Option<RealServer> {
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 900ms}}\n\
         scrape_configs:\n  - job_name: prober\n    static_configs: [{{targets: ['{target}']}}]\n"
    );
    RealServer::start(
        &["/usr/bin/prometheus"],
        "prometheus.yml",
        &config,
        "/-/ready",
        |addr, config, dir| {
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address={addr}"),
                "--enable-feature=exemplar-storage".into(),
            ]
        },
    )
    .await
}

async fn prometheus_json(p: &RealServer, path: &str) -> Value {
    let (code, body) = http_get(p.addr, path).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_openmetrics_and_keeps_exemplars_of_stored_runs() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let daemon = start(&db, &target).await;
    let Some(prom) = real_prometheus(daemon.addr).await else {
        // CI installs it (.ci/run), so there a missing binary is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is not installed; .ci/run installs it (apt-get install prometheus)"
        );
        eprintln!("prometheus is not installed: skipped (apt-get install prometheus)");
        daemon.shutdown().await;
        return;
    };
    // Scraped, and parsed: a target whose page Prometheus refuses is `down`
    // with the parser's error.
    let mut target_state = Value::Null;
    let mut found = Vec::new();
    for _ in 0..150 {
        let targets = prometheus_json(&prom, "/api/v1/targets").await;
        target_state = targets["data"]["activeTargets"][0].clone();
        let query = "/api/v1/query_exemplars?query=prober_probe_duration_seconds_bucket&start=0&end=4102444800";
        let ex = prometheus_json(&prom, query).await;
        found = (ex["data"].as_array().unwrap().iter())
            .flat_map(|series| {
                let probe = series["seriesLabels"]["probe"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let phase = series["seriesLabels"]["phase"]
                    .as_str()
                    .unwrap()
                    .to_string();
                (series["exemplars"].as_array().unwrap().iter())
                    .map(move |e| {
                        (
                            probe.clone(),
                            phase.clone(),
                            e["labels"]["trace_id"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let probes: BTreeSet<&str> = found.iter().map(|e| e.0.as_str()).collect();
        if target_state["health"] == "up" && probes.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        target_state["health"], "up",
        "Prometheus parsed the page: {target_state}"
    );
    assert_eq!(target_state["lastError"], "", "{target_state}");
    let probes: BTreeSet<&str> = found.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        probes,
        BTreeSet::from(["failing", "passing"]),
        "exemplars stored: {found:?}"
    );
    assert!(found.iter().all(|e| e.1 == "total"), "{found:?}");
    // The counters and gauges of the OpenMetrics page were taken too.
    let runs = prometheus_json(&prom, "/api/v1/query?query=prober_probe_runs_total").await;
    assert!(
        !runs["data"]["result"].as_array().unwrap().is_empty(),
        "prober_probe_runs_total scraped: {runs}"
    );
    for probe in ["passing", "failing"] {
        let ids: BTreeSet<String> = (found.iter())
            .filter(|e| e.0 == probe)
            .map(|e| e.2.clone())
            .collect();
        let stored = wait_stored(daemon.addr, probe, &ids).await;
        assert!(
            ids.is_subset(&stored),
            "{probe}: exemplars {ids:?} are stored runs {stored:?}"
        );
    }
    daemon.shutdown().await;
}
