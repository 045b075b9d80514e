//! `/metrics` against the real daemon: promtool accepts the page, and the
//! numbers on it are the daemon's own counts.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::TestDb;
use crate::helpers::{probes, wait_for, FakeTarget};

fn settings(database_url: String) -> Settings {
    Settings {
        database_url,
        location: "metrics-lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        ..Settings::default()
    }
}

/// `passing` answers 200; `failing` answers 503 (a failed run, class `http_status`).
pub async fn start(db: &TestDb, target: &FakeTarget) -> Daemon {
    let yaml = format!(
        "- name: passing\n  every: 1s\n  timeout: 900ms\n  http: {{url: \"{}\"}}\n\
         - name: failing\n  every: 1s\n  timeout: 900ms\n  http: {{url: \"{}\"}}\n",
        target.url("/ok"),
        target.url("/status/503"),
    );
    Daemon::start(
        &settings(db.url.clone()),
        probes(&yaml),
        http_executor().unwrap(),
    )
    .await
    .unwrap()
}

/// Waits until each probe has finished at least `runs` runs.
pub async fn wait_for_runs(daemon: &Daemon, runs: u64) {
    let live = daemon.live.clone();
    let ran = |name: &str| live.get(name).is_some_and(|s| s.lock().runs >= runs);
    assert!(
        wait_for(Duration::from_secs(15), || ran("passing") && ran("failing")).await,
        "both probes ran {runs} times"
    );
}

/// GET `path`; returns the response head and body (de-chunked: `/metrics` is streamed).
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    get_accepting(addr, path, "*/*").await
}

/// [`get`] with `accept` as the `Accept` header.
pub async fn get_accepting(addr: SocketAddr, path: &str, accept: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: {accept}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, mut rest) = text.split_once("\r\n\r\n").unwrap();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (head.to_string(), rest.to_string());
    }
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return (head.to_string(), body);
        }
        body.push_str(&after[..size]);
        rest = after[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after a chunk");
    }
}

/// The samples of `name` whose labels include every pair of `labels`, as (labels, value).
fn samples(page: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let has =
                |(k, v): &(&str, &str)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\""));
            labels
                .iter()
                .all(has)
                .then(|| (rest.to_string(), value.parse().unwrap()))
        })
        .collect()
}

/// The value of the one sample of `name` with `labels`.
fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(page, name, labels);
    assert_eq!(
        found.len(),
        1,
        "one sample of {name}{labels:?} expected, found {found:?} in:\n{page}"
    );
    found[0].1
}

fn total(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(page, name, labels).iter().map(|s| s.1).sum()
}

/// Asserts `promtool check metrics` accepts `page`.
pub fn promtool_accepts(page: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run promtool ({e}): it must be on PATH; .ci/run installs Debian's `prometheus` package, which has it"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the page ({}):\n{}{}\n--- page ---\n{page}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_live_metrics_page() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let daemon = start(&db, &target).await;
    wait_for_runs(&daemon, 2).await;
    let (head, page) = get(daemon.addr, "/metrics").await;
    daemon.shutdown().await;

    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(!page.contains("# EOF"), "no OpenMetrics trailer:\n{page}");
    // promtool accepts an empty page: make sure this one is the real thing.
    for name in [
        "prober_probe_runs_total",
        "prober_probe_duration_seconds_bucket",
        "prober_scheduler_lateness_seconds_count",
        "prober_store_queue_depth",
        "prober_reloads_total",
        "prober_build_info",
    ] {
        assert!(!samples(&page, name, &[]).is_empty(), "{name} in:\n{page}");
    }
    promtool_accepts(&page);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_daemon_ran() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let daemon = start(&db, &target).await;
    wait_for_runs(&daemon, 2).await;
    // No more runs: the counts below are final, whatever the timing.
    assert_eq!(
        daemon.core.scheduler.shutdown(Duration::from_secs(5)).await,
        0
    );
    let (_, page) = get(daemon.addr, "/metrics").await;
    let finished = daemon.scheduler_stats.runs_finished.load(Ordering::SeqCst) as f64;
    let live = |name: &str| {
        let s = daemon.live.get(name).unwrap();
        let s = s.lock();
        (s.runs as f64, s.failures as f64)
    };
    let (passing_runs, passing_failures) = live("passing");
    let (failing_runs, failing_failures) = live("failing");
    daemon.shutdown().await;

    assert!(finished >= 4.0);
    assert_eq!(total(&page, "prober_probe_runs_total", &[]), finished);
    assert_eq!(
        total(
            &page,
            "prober_probe_duration_seconds_count",
            &[("phase", "total")]
        ),
        finished
    );
    assert_eq!(value(&page, "prober_scheduler_runs_total", &[]), finished);
    assert_eq!(
        value(&page, "prober_scheduler_lateness_seconds_count", &[]),
        finished
    );
    assert_eq!(
        value(
            &page,
            "prober_scheduler_lateness_seconds_bucket",
            &[("le", "+Inf")]
        ),
        finished
    );

    // The passing probe.
    assert_eq!(passing_failures, 0.0);
    let passing = [("probe", "passing")];
    assert_eq!(
        value(
            &page,
            "prober_probe_runs_total",
            &[("probe", "passing"), ("result", "success")]
        ),
        passing_runs
    );
    assert_eq!(
        value(
            &page,
            "prober_probe_runs_total",
            &[("probe", "passing"), ("result", "failure")]
        ),
        0.0
    );
    assert_eq!(value(&page, "prober_probe_success", &passing), 1.0);
    assert!(samples(&page, "prober_probe_failures_total", &passing).is_empty());
    for phase in ["total", "connect", "first_byte", "transfer"] {
        let labels = [("probe", "passing"), ("phase", phase)];
        assert_eq!(
            value(&page, "prober_probe_duration_seconds_count", &labels),
            passing_runs,
            "{phase}"
        );
        let inf = [("probe", "passing"), ("phase", phase), ("le", "+Inf")];
        assert_eq!(
            value(&page, "prober_probe_duration_seconds_bucket", &inf),
            passing_runs
        );
    }

    // The failing probe.
    assert!(failing_runs >= 2.0);
    assert_eq!(failing_failures, failing_runs);
    let failing = [("probe", "failing")];
    assert_eq!(
        value(
            &page,
            "prober_probe_runs_total",
            &[("probe", "failing"), ("result", "failure")]
        ),
        failing_runs
    );
    assert_eq!(
        value(
            &page,
            "prober_probe_runs_total",
            &[("probe", "failing"), ("result", "success")]
        ),
        0.0
    );
    assert_eq!(value(&page, "prober_probe_success", &failing), 0.0);
    assert_eq!(
        value(
            &page,
            "prober_probe_failures_total",
            &[("probe", "failing"), ("error_class", "http_status")]
        ),
        failing_runs
    );
    assert_eq!(
        value(
            &page,
            "prober_probe_duration_seconds_count",
            &[("probe", "failing"), ("phase", "total")]
        ),
        failing_runs
    );

    // The process.
    assert_eq!(
        value(&page, "prober_build_info", &[("version", prober::VERSION)]),
        1.0
    );
    assert_eq!(value(&page, "prober_probes", &[]), 2.0);
    assert_eq!(value(&page, "prober_reload_errors", &[]), 0.0);
    assert!(value(&page, "prober_start_time_seconds", &[]) > 1.7e9);
    assert_eq!(value(&page, "prober_store_queue_dropped_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_labels_add_probe_labels_to_every_per_probe_series() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prober.yaml");
    std::fs::write(&file, "metrics_labels: [team, service]\n").unwrap();
    let s = Settings::resolve(&prober::config::settings::SettingsArgs {
        config: Some(file),
        database_url: Some(db.url.clone()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        spool_dir: Some(dir.path().join("spool")),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.metrics_labels, ["team", "service"]);
    // `passing` has the team label (with a value that needs escaping), `failing` has none.
    let yaml = format!(
        "- name: passing\n  labels: {{team: payments, tier: \"1\"}}\n  every: 1s\n  timeout: 900ms\n  http: {{url: \"{}\"}}\n\
         - name: failing\n  every: 1s\n  timeout: 900ms\n  http: {{url: \"{}\"}}\n",
        target.url("/ok"),
        target.url("/status/503"),
    );
    let daemon = Daemon::start(&s, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    wait_for_runs(&daemon, 2).await;
    let (_, page) = get(daemon.addr, "/metrics").await;
    daemon.shutdown().await;

    for name in [
        "prober_probe_runs_total",
        "prober_probe_success",
        "prober_probe_duration_seconds_bucket",
        "prober_probe_duration_seconds_count",
    ] {
        let paying = [("probe", "passing"), ("team", "payments"), ("service", "")];
        let unlabelled = [("probe", "failing"), ("team", ""), ("service", "")];
        assert!(
            !samples(&page, name, &paying).is_empty(),
            "{name} with team=\"payments\" in:\n{page}"
        );
        assert!(
            !samples(&page, name, &unlabelled).is_empty(),
            "{name} with team=\"\" in:\n{page}"
        );
        assert_eq!(
            samples(&page, name, &[]).len(),
            samples(&page, name, &[("team", "payments")]).len()
                + samples(&page, name, &[("team", "")]).len(),
            "every {name} series has the label"
        );
    }
    assert!(
        !page.contains("tier="),
        "labels not asked for stay off the page"
    );
    let failures = samples(
        &page,
        "prober_probe_failures_total",
        &[("probe", "failing")],
    );
    assert!(
        failures.iter().all(|(l, _)| l.contains("team=\"\"")),
        "{failures:?}"
    );
    assert!(
        samples(&page, "prober_store_queue_depth", &[])[0]
            .0
            .is_empty(),
        "process-wide series get no probe labels"
    );
    promtool_accepts(&page);
}
