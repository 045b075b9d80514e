//! The built-in pages in a real browser: Debian's `chromium-headless-shell`
//! (installed by `.ci/run`) loads each page from the daemon on loopback. Its
//! network log must show every request answered 2xx, its console no message
//! (a script error, a refused resource, a content-security-policy
//! violation), and the DOM it built the probes, numbers and charts. The
//! accessibility basics are checked on that DOM: every control labelled,
//! every chart with a text alternative, nothing taken out of or forced into
//! the keyboard's order. A screenshot of every page, light and dark and
//! phone-sized, is saved under `target/ui-screenshots` (or
//! `$PROBER_SCREENSHOTS`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ui::seeded;

pub(crate) const BROWSER: &str = "chromium-headless-shell";

/// No sandbox (the tests may run as root), no GPU, and nothing fetched from
/// anywhere but the page: the browser reaches only loopback.
pub(crate) const QUIET: [&str; 6] = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// What the browser saw of one page.
struct Visit {
    dom: String,
    /// `(method URL, status line)` of every request it made.
    requests: Vec<(String, String)>,
    /// Console messages (the browser's log lines naming `CONSOLE`).
    console: Vec<String>,
}

fn screenshots() -> PathBuf {
    std::env::var_os("PROBER_SCREENSHOTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots"),
        PathBuf::from,
    )
}

/// Runs the browser on `url` with `extra` flags; its stderr.
fn browse(profile: &Path, url: &str, extra: &[String]) -> (String, String) {
    let mut cmd = std::process::Command::new(BROWSER);
    cmd.args(QUIET)
        .args(["--enable-logging=stderr", "--v=0", "--timeout=20000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {BROWSER} ({e}): it must be on PATH; .ci/run installs Debian's chromium-headless-shell package")
    });
    assert!(out.status.success(), "{BROWSER} {url}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every request in a network log with the status line it got.
fn requests(netlog: &Path) -> Vec<(String, String)> {
    let log: Value = serde_json::from_slice(&std::fs::read(netlog).unwrap()).unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    for e in log["events"].as_array().unwrap() {
        let p = &e["params"];
        if let (Some(m), Some(u)) = (p["method"].as_str(), p["url"].as_str()) {
            out.push((format!("{m} {u}"), String::new()));
        }
        let status = p["headers"]
            .as_array()
            .and_then(|h| h.first())
            .and_then(Value::as_str);
        if let Some(s) = status.filter(|s| s.starts_with("HTTP/")) {
            if let Some(last) = out.iter_mut().rev().find(|r| r.1.is_empty()) {
                last.1 = s.to_string();
            }
        }
    }
    out
}

/// Loads `path` twice: a screenshot with the network log, then the DOM.
fn visit(addr: SocketAddr, path: &str, shot: &str, flags: &[&str]) -> Visit {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}{path}");
    let netlog = dir.path().join("net.json");
    std::fs::create_dir_all(screenshots()).unwrap();
    let png = screenshots().join(format!("{shot}.png"));
    let mut extra: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    extra.push(format!("--screenshot={}", png.display()));
    extra.push(format!("--log-net-log={}", netlog.display()));
    let (_, log) = browse(&dir.path().join("a"), &url, &extra);
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "{shot}: a screenshot with something on it ({size} bytes)"
    );
    let (dom, log2) = browse(&dir.path().join("b"), &url, &["--dump-dom".to_string()]);
    let console = (log.lines().chain(log2.lines()))
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    Visit {
        dom,
        requests: requests(&netlog),
        console,
    }
}

/// No console message, and every request of the page answered 2xx.
fn clean(v: &Visit, page: &str) {
    assert!(v.console.is_empty(), "{page}: console: {:#?}", v.console);
    assert!(
        v.requests.len() >= 2,
        "{page}: the page and its stylesheet: {:?}",
        v.requests
    );
    for (req, status) in &v.requests {
        assert!(status.contains(" 200 "), "{page}: {req} got {status:?}");
    }
}

/// The accessibility basics on a DOM: a language; every control labelled;
/// every chart with a text alternative; nothing out of the keyboard's order.
fn accessible(dom: &str, page: &str) {
    assert!(
        dom.contains("<html lang=\"en\""),
        "{page}: the page's language"
    );
    for tag in ["<input", "<select", "<textarea"] {
        for (i, _) in dom.match_indices(tag) {
            let el = &dom[i..i + dom[i..].find('>').unwrap()];
            let id = el.split("id=\"").nth(1).and_then(|s| s.split('"').next());
            let labelled = el.contains("aria-label=")
                || id.is_some_and(|id| dom.contains(&format!("<label for=\"{id}\"")));
            assert!(labelled, "{page}: a control without a label: {el}");
        }
    }
    for (i, _) in dom.match_indices("<svg") {
        let el = &dom[i..i + dom[i..].find('>').unwrap()];
        assert!(
            el.contains("aria-label=\""),
            "{page}: a chart without a text alternative: {el}"
        );
    }
    assert!(
        !dom.contains("tabindex=\""),
        "{page}: the keyboard order is the document's"
    );
    assert!(dom.contains("<main"), "{page}: a main landmark");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_loads_cleanly_in_a_real_browser_and_reads_right() {
    let (_db, _, _target, d) = seeded().await;
    let addr = d.addr;

    // The console check sees what a page logs: a page that logs, first.
    let control = tokio::task::spawn_blocking(|| {
        let dir = tempfile::tempdir().unwrap();
        let page = "data:text/html,<script>console.error('console-control')</script>";
        browse(dir.path(), page, &[]).1
    })
    .await
    .unwrap();
    assert!(
        control
            .lines()
            .any(|l| l.contains(":CONSOLE") && l.contains("console-control")),
        "the browser's log shows a page's console message: {control}"
    );

    let pages = tokio::task::spawn_blocking(move || {
        let overview = visit(addr, "/", "overview", &["--window-size=1280,1000"]);
        let dark = visit(
            addr,
            "/",
            "overview-dark",
            &[
                "--window-size=1280,1000",
                "--force-dark-mode",
                "--blink-settings=preferredColorScheme=0",
            ],
        );
        let phone = visit(addr, "/", "overview-phone", &["--window-size=390,844"]);
        // What the filter form sends, with a label and with the box empty.
        let filtered = visit(
            addr,
            "/?label=team%3Dpayments&group=team",
            "overview-filtered",
            &[],
        );
        let unfiltered = visit(addr, "/?label=&group=", "overview-form-empty", &[]);
        assert!(
            unfiltered.dom.contains("data-probe=\"search\""),
            "an empty filter keeps every probe"
        );
        clean(&unfiltered, "overview-form-empty");
        let failing = visit(
            addr,
            "/probes/search",
            "probe-failing",
            &["--window-size=1280,2400"],
        );
        let probe = visit(
            addr,
            "/probes/checkout?range=7d",
            "probe",
            &["--window-size=1280,2400"],
        );
        let status = visit(addr, "/status", "status", &["--window-size=1000,800"]);
        [overview, dark, phone, filtered, failing, probe, status]
    })
    .await
    .unwrap();
    let names = [
        "overview",
        "overview-dark",
        "overview-phone",
        "overview-filtered",
        "probe-failing",
        "probe",
        "status",
    ];
    for (v, name) in pages.iter().zip(names) {
        clean(v, name);
        accessible(&v.dom, name);
    }
    let [overview, _, _, filtered, failing, probe, status] = &pages;

    for p in ["checkout", "search", "admin-tool"] {
        assert!(
            overview.dom.contains(&format!("data-probe=\"{p}\"")),
            "{p} on the overview"
        );
    }
    assert!(overview.dom.contains("badge down\">down"), "search is down");
    assert!(
        overview.dom.contains("<svg class=\"bar\""),
        "the 90-day bars"
    );
    assert!(
        filtered.dom.contains("data-probe=\"checkout\"")
            && !filtered.dom.contains("data-probe=\"search\"")
    );
    // The failed expectation, as the browser shows it.
    let story = &failing.dom[failing
        .dom
        .find("The last failed run")
        .expect("the failure's story")..];
    assert!(
        story.contains("http_status") && story.contains("503"),
        "{story}"
    );
    // The charts are drawn: lines with points.
    for (page, v) in [("probe-failing", failing), ("probe", probe)] {
        let at = v
            .dom
            .find("data-series=\"p50\"")
            .unwrap_or_else(|| panic!("{page}: no p50 line"));
        let line = &v.dom[at..at + v.dom[at..].find('>').unwrap()];
        let points = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(
            points.contains(',')
                && (points.split(' ').count() >= 2 || v.dom.contains("<circle class=\"dot-0\"")),
            "{page}: {line}"
        );
    }
    assert!(status.dom.contains("Checkout API") && !status.dom.contains("admin-tool"));
    d.shutdown().await;
}
