//! The `browser` kind in a real browser (Debian's chromium-headless-shell,
//! and its full chromium once): the demo shop's sign-in and late-rendering
//! pages, a page that never answers, a page that logs errors; the pool's
//! limit watched from `/proc`; and, through the daemon, the steps and Web
//! Vitals kept as histograms and the failure screenshot served by the API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prober::config::settings::Settings;
use prober::daemon::{executor, Daemon};
use prober::probe::browser::BrowserOptions;
use prober::probe::Runner;
use prober::run::{vital_samples, ErrorClass, Outcome, StepStatus};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::db::TestDb;
use crate::demo::demo_targets;
use crate::helpers::{admin_token, http_get, http_request_as, probe, wait_for, ADMIN_TOKEN};

/// A page that renders its content 300 ms after it loads.
const LATE: &str = "<!doctype html><html><head><title>late</title></head><body><h1>Late</h1><div id=\"slot\"></div>\
<script>setTimeout(() => { document.getElementById('slot').innerHTML = '<p id=\"ready\">ready now</p>'; }, 300);</script></body></html>";
/// A page that logs a console error and throws.
const NOISY: &str = "<!doctype html><html><head><title>noisy</title></head><body><h1>Noisy</h1>\
<script>console.error('cart service said', 503); setTimeout(() => { undefinedFunction(); }, 0);</script></body></html>";

/// A site on loopback: each path's page, or no answer at all (`None`: the page hangs).
async fn site(pages: HashMap<&'static str, Option<&'static str>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pages = Arc::new(pages);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let pages = Arc::clone(&pages);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let page = pages.get(path.as_str()).copied();
                match page {
                    Some(None) => {
                        // Hangs: holds the connection, never answers.
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                    Some(Some(html)) => {
                        let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}", html.len());
                        let _ = sock.write_all(resp.as_bytes()).await;
                    }
                    None => {
                        let _ = sock.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    }
                }
            });
        }
    });
    addr
}

fn options(dir: &Path, max_concurrent: usize) -> BrowserOptions {
    BrowserOptions {
        screenshots: dir.join("screenshots"),
        max_concurrent,
        ..BrowserOptions::default()
    }
}

fn step_names(o: &Outcome) -> Vec<(&str, StepStatus)> {
    o.steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_passes_with_web_vitals_and_a_broken_selector_leaves_a_screenshot() {
    let _shared = crate::helpers::TIMING.read().await;
    let (_ports, _demo) = demo_targets().await;
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::with_browsers(options(dir.path(), 2)).unwrap();
    let sign_in = "name: sign-in\nevery: 1m\ntimeout: 20s\nbrowser:\n  steps:\n\
        \x20   - goto: http://127.0.0.1:9681/account/login\n\
        \x20   - fill: {selector: \"#user\", value: demo}\n\
        \x20   - fill: {selector: \"#password\", value: demo-password}\n\
        \x20   - {name: sign in, click: \"#sign-in\"}\n\
        \x20   - expect_text: {selector: \"#welcome\", contains: \"Welcome back, demo\"}\n\
        \x20   - expect_url: /account/home\\?user=demo$\n\
        \x20   - goto: /deals\n\
        \x20   - {name: deals shown, wait_for: \"#deals-ready\"}\n";

    let o = runner.run(&probe(sign_in)).await;

    assert!(o.success, "{o:#?}");
    assert_eq!(o.steps.len(), 8);
    assert!(
        o.steps.iter().all(|s| s.status == StepStatus::Passed),
        "{:?}",
        step_names(&o)
    );
    assert_eq!(o.steps[3].name, "sign in");
    assert_eq!(
        o.steps[6].status_code,
        Some(200),
        "the second goto loaded /deals"
    );
    // The deals arrive 600 ms after the page loads: the wait is measured.
    assert!(o.steps[7].phases.total_us >= 400_000, "{:?}", o.steps[7]);
    assert!(
        o.steps[4].assertions.iter().all(|a| a.passed),
        "{:?}",
        o.steps[4]
    );
    // The first page's navigation timing is the run's phases; its vitals are facts and phases.
    assert_eq!(o.status_code, Some(200));
    assert!(
        o.phases.first_byte_us.is_some() && o.phases.transfer_us.is_some(),
        "{:?}",
        o.phases
    );
    for fact in [
        "browser.ttfb_ms",
        "browser.fcp_ms",
        "browser.lcp_ms",
        "browser.cls",
    ] {
        assert!(o.info.contains_key(fact), "{fact} in {:?}", o.info);
    }
    let ids: Vec<i16> = vital_samples(&o).map(|(id, _)| id).collect();
    assert_eq!(ids, [200, 201, 202, 203]);
    let fcp: f64 = o.info["browser.fcp_ms"].parse().unwrap();
    let lcp: f64 = o.info["browser.lcp_ms"].parse().unwrap();
    assert!(fcp > 0.0 && lcp >= fcp, "fcp {fcp} lcp {lcp}");
    assert!(
        !o.info.contains_key("browser.screenshot"),
        "no screenshot when it passes"
    );

    // A selector that matches nothing: the step fails after its wait, with a screenshot.
    let broken = sign_in
        .replace("name: sign-in", "name: sign-in-broken\n# a broken selector")
        .replace("#deals-ready", "#deals-gone")
        .replace("browser:\n", "browser:\n  step_timeout: 1s\n");
    let o = runner.run(&probe(&broken)).await;

    assert!(!o.success);
    let e = o.error.as_ref().unwrap();
    assert_eq!(e.class, ErrorClass::Assertion, "{e:?}");
    assert!(
        e.message.contains("`#deals-gone`") && e.message.contains("1s"),
        "{}",
        e.message
    );
    assert_eq!(o.steps[7].status, StepStatus::Failed);
    let link = &o.info["browser.screenshot"];
    assert!(
        link.starts_with("/api/v1/probes/sign-in-broken/screenshots/"),
        "{link}"
    );
    let png = std::fs::read(&o.info["browser.screenshot_file"]).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert!(png.len() > 1000, "a real picture: {} bytes", png.len());
    assert!(PathBuf::from(&o.info["browser.screenshot_file"]).starts_with(dir.path()));
    assert!(runner.browser_stats().peak <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_page_times_out_and_its_browser_is_replaced() {
    let _shared = crate::helpers::TIMING.read().await;
    let addr = site(HashMap::from([("/hang", None), ("/late", Some(LATE))])).await;
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::with_browsers(options(dir.path(), 1)).unwrap();
    let yaml = |name: &str, path: &str| {
        format!("name: {name}\nevery: 1m\ntimeout: 3s\nbrowser:\n  steps:\n    - goto: http://{addr}{path}\n    - wait_for: \"#ready\"\n")
    };

    let o = runner.run(&probe(&yaml("hung", "/hang"))).await;

    assert!(!o.success);
    let e = o.error.as_ref().unwrap();
    assert_eq!(e.class, ErrorClass::Timeout, "{e:?}");
    assert!(
        e.message.contains("timeout of 3s") && e.message.contains("step 1 `goto http://"),
        "{}",
        e.message
    );
    assert_eq!(
        step_names(&o),
        [
            (
                format!("goto http://{addr}/hang").as_str(),
                StepStatus::Failed
            ),
            ("wait_for #ready", StepStatus::Skipped)
        ]
    );
    // Cut at the timeout; the browser's start is not counted (the site did not cause it).
    let total = o.phases.total_us;
    assert!((1_500_000..=3_000_000).contains(&total), "{:?}", o.phases);

    // The hung browser was killed; the next check gets a new one and passes.
    let o = runner.run(&probe(&yaml("after", "/late"))).await;
    assert!(o.success, "{o:#?}");
    let stats = runner.browser_stats();
    assert_eq!(stats.launched, 2, "{stats:?}");
    assert!(stats.retired >= 1, "{stats:?}");
    assert_eq!(
        stats.live, 1,
        "the good one is kept for the next check: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_errors_are_recorded_and_fail_the_run_only_when_asked() {
    let _shared = crate::helpers::TIMING.read().await;
    let addr = site(HashMap::from([("/noisy", Some(NOISY))])).await;
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::with_browsers(options(dir.path(), 1)).unwrap();
    let yaml = |strict: bool| {
        format!("name: noisy\nevery: 1m\ntimeout: 10s\nbrowser:\n  fail_on_console_errors: {strict}\n  steps:\n    - goto: http://{addr}/noisy\n    - expect_text: {{contains: Noisy}}\n")
    };

    let lenient = runner.run(&probe(&yaml(false))).await;
    let strict = runner.run(&probe(&yaml(true))).await;

    assert!(lenient.success, "{lenient:#?}");
    let console = &lenient.info["browser.console"];
    assert!(
        console.contains("console.error: cart service said 503"),
        "{console}"
    );
    assert!(console.contains("undefinedFunction"), "{console}");
    assert_eq!(
        lenient.info["browser.console_errors"], "2",
        "{:?}",
        lenient.info
    );
    assert!(!strict.success);
    let e = strict.error.as_ref().unwrap();
    assert_eq!(e.class, ErrorClass::Assertion);
    assert!(
        e.message.contains("2 console error(s)") && e.message.contains("fail_on_console_errors"),
        "{}",
        e.message
    );
    assert!(strict.info.contains_key("browser.screenshot"));
}

/// Main browser processes carrying `marker` on their command line: the
/// browsers the shell scripts that start them run (Debian's
/// `/usr/bin/chromium-headless-shell` is one, and runs the browser as its
/// child). Not their renderers (`--type=`), nor a child the browser forked
/// that has not yet exec'd its own program (its crash handler), which
/// carries the browser's command line for an instant.
fn browsers_with(marker: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let procs: std::collections::HashMap<String, (String, String)> = dir
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .nth(1)?
                .to_string();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            Some((e.file_name().to_string_lossy().into_owned(), (ppid, cmd)))
        })
        .collect();
    let shell = |c: &str| c.split(' ').next().unwrap_or_default().ends_with("sh");
    procs
        .values()
        .filter(|(_, c)| c.contains(marker) && !c.contains("--type=") && !shell(c))
        .filter(|(ppid, _)| {
            procs
                .get(ppid)
                .is_some_and(|(_, pc)| pc.contains(marker) && shell(pc))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_never_runs_more_browsers_than_its_limit() {
    let _shared = crate::helpers::TIMING.read().await;
    let addr = site(HashMap::from([("/late", Some(LATE))])).await;
    let dir = tempfile::tempdir().unwrap();
    // A wrapper that marks this test's browsers, so /proc tells them from any other test's.
    let marker = format!("--prober-pool-test={}", std::process::id());
    let wrapper = dir.path().join("browser");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec chromium-headless-shell {marker} \"$@\"\n"),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    let runner = Arc::new(
        Runner::with_browsers(BrowserOptions {
            executable: Some(wrapper),
            ..options(dir.path(), 2)
        })
        .unwrap(),
    );
    let checks: Vec<_> = (0..6)
        .map(|i| probe(&format!("name: late-{i}\nevery: 1m\ntimeout: 20s\nbrowser:\n  steps:\n    - goto: http://{addr}/late\n    - wait_for: \"#ready\"\n")))
        .collect();

    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, marker) = (Arc::clone(&watching), marker.clone());
        tokio::task::spawn_blocking(move || {
            let mut most = 0;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(browsers_with(&marker));
                std::thread::sleep(Duration::from_millis(10));
            }
            most
        })
    };
    let runs = checks.iter().map(|p| {
        let runner = Arc::clone(&runner);
        async move { runner.run(p).await }
    });
    let outcomes = futures_util::future::join_all(runs).await;
    let seen_running = browsers_with(&marker);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = watcher.await.unwrap();

    for o in &outcomes {
        assert!(
            o.success,
            "every check ran, the later ones after waiting: {o:#?}"
        );
    }
    assert!(most >= 1, "the watcher saw the browsers");
    assert!(most <= 2, "at most 2 browsers at once, {most} seen");
    let stats = runner.browser_stats();
    assert!(stats.peak <= 2 && stats.launched <= 2, "{stats:?}");
    assert_eq!(
        seen_running, stats.live,
        "idle browsers are kept, no more: {stats:?}"
    );
    let memory = runner.browser_memory_bytes();
    assert!(
        memory > 20 << 20,
        "the idle browsers' memory is counted: {memory} bytes"
    );
    drop(runner);
    assert!(
        wait_for(Duration::from_secs(5), || browsers_with(&marker) == 0).await,
        "closed with the runner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_full_chromium_runs_a_check_too() {
    let _shared = crate::helpers::TIMING.read().await;
    let addr = site(HashMap::from([("/late", Some(LATE))])).await;
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::with_browsers(BrowserOptions {
        executable: Some(PathBuf::from("chromium")),
        ..options(dir.path(), 1)
    })
    .unwrap();

    let o = runner
        .run(&probe(&format!("name: full\nevery: 1m\ntimeout: 20s\nbrowser:\n  steps:\n    - goto: http://{addr}/late\n    - wait_for: \"#ready\"\n")))
        .await;

    assert!(o.success, "Debian's chromium (.ci/run installs it): {o:#?}");
    assert!(o.info.contains_key("browser.fcp_ms"), "{:?}", o.info);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_steps_and_vitals_as_histograms_and_serves_the_screenshot() {
    let _shared = crate::helpers::TIMING.read().await;
    let addr = site(HashMap::from([("/late", Some(LATE))])).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "- name: page\n  every: 1h\n  timeout: 20s\n  browser:\n    steps:\n      - goto: http://{addr}/late\n      - {{name: ready, wait_for: \"#ready\"}}\n\
         - name: page-broken\n  every: 1h\n  timeout: 20s\n  browser:\n    step_timeout: 500ms\n    steps:\n      - goto: http://{addr}/late\n      - wait_for: \"#never\"\n"
    );
    let settings = Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        api_token: admin_token(),
        api: prober::config::access::ApiAccess {
            run_min_interval: Duration::ZERO,
            manual_runs_count: true,
            ..Default::default()
        },
        browser: options(dir.path(), 1),
        ..Settings::default()
    };
    let d = Daemon::start(
        &settings,
        crate::helpers::probes(&yaml),
        executor(&settings).unwrap(),
    )
    .await
    .unwrap();
    let mut runs = HashMap::new();
    for name in ["page", "page-broken"] {
        let (code, body) = http_request_as(
            d.addr,
            "POST",
            &format!("/api/v1/probes/{name}/run"),
            Some(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        runs.insert(name, serde_json::from_str::<Value>(&body).unwrap());
    }
    let written = || {
        d.store_health
            .runs_written
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    assert!(
        wait_for(Duration::from_secs(20), || written() >= 2).await,
        "both runs stored"
    );

    let count = |v: &Value| -> i64 {
        v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["count"].as_i64().unwrap())
            .sum()
    };
    for phase in [
        "total",
        "first_byte",
        "step:ready",
        "vital:ttfb",
        "vital:fcp",
        "vital:lcp",
        "vital:cls",
    ] {
        let (code, body) = http_get(
            d.addr,
            &format!("/api/v1/probes/page/latency?phase={phase}"),
        )
        .await;
        assert_eq!(code, 200, "{phase}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            count(&v) >= 1,
            "{phase} is a histogram with the run in it: {v}"
        );
    }
    let (code, body) = http_get(d.addr, "/api/v1/probes/page/latency?phase=vital:inp").await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("vital:lcp"),
        "the error names the phases there are: {body}"
    );

    let broken = &runs["page-broken"]["outcome"];
    assert_eq!(broken["success"], false);
    let link = broken["info"]["browser.screenshot"].as_str().unwrap();
    let (code, png) = http_get(d.addr, link).await;
    assert_eq!(code, 200, "{link}: {png}");
    assert!(png.contains("PNG"), "a PNG image");
    let (code, body) = http_get(
        d.addr,
        "/api/v1/probes/page-broken/screenshots/..%2F..%2Fetc%2Fpasswd",
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = http_get(d.addr, &link.replace("page-broken", "page")).await;
    assert_eq!(code, 404, "another probe's screenshot is not there");
    d.shutdown().await;
}

/// probes/README.md's browser check loads as shown.
#[test]
fn the_documented_browser_check_loads() {
    let block = crate::helpers::probes_readme_example("web-sign-in");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sign-in.yaml"), block).unwrap();

    let report = prober::config::load::load_paths(&[dir.path().to_path_buf()]);

    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let p = &report.probes[0];
    assert_eq!(p.step_names().len(), 8);
    assert_eq!(p.step_names()[3], "sign in");
    assert_eq!(p.target_host(), "shop.example.com");
}
