//! The built-in pages against the real daemon and a seeded database: the
//! overview, a probe's page, the public status page and the badges show the
//! numbers the JSON API gives for the same data, a failing probe's failed
//! expectation, only the selected probes in public, and escape what probe
//! files say.

use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use prober::analysis::series::human_us;
use prober::config::settings::{Settings, StatusPage, UiSettings};
use prober::daemon::{http_executor, Daemon};
use prober::store::Store;
use serde_json::Value;

use crate::db::TestDb;
use crate::helpers::{
    admin_token, http_request_as, http_send, probes, wait_for, FakeTarget, ADMIN_TOKEN,
};
use crate::metrics::get_accepting;
use crate::store::{meta, record};

/// The probe files: none fires during a test (once a year); runs come from
/// the seed and from `POST …/run` (counted, `api.manual_runs_count`).
fn yaml(target: &FakeTarget) -> String {
    format!(
        r#"- name: checkout
  description: Checkout API
  labels: {{team: payments}}
  cron: "0 0 0 1 1 *"
  http: {{url: "{ok}"}}
- name: search
  labels: {{team: discovery}}
  cron: "0 0 0 1 1 *"
  http:
    url: "{bad}"
  expect: {{status: [200]}}
- name: admin-tool
  description: "<script>alert(1)</script>"
  labels: {{team: ops}}
  cron: "0 0 0 1 1 *"
  http: {{url: "{ok}"}}
"#,
        ok = target.url("/ok"),
        bad = target.url("/status/503"),
    )
}

fn settings(db: &TestDb, public_read: bool) -> Settings {
    Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        api_token: admin_token(),
        api: prober::config::access::ApiAccess {
            public_read,
            run_min_interval: Duration::ZERO,
            manual_runs_count: true,
            ..Default::default()
        },
        ui: UiSettings {
            group_by: Some("team".into()),
            status_page: StatusPage {
                title: "Example status".into(),
                probes: vec!["checkout".into(), "search".into()],
                group_by: Some("team".into()),
                ..StatusPage::default()
            },
            ..UiSettings::default()
        },
        ..Settings::default()
    }
}

/// Three days ago: 100 runs of checkout, 3 failed. In the last half hour: 40
/// runs of checkout (5 failed) and 10 of search (all failed).
pub(crate) async fn seed(db: &TestDb) -> chrono::NaiveDate {
    let store = Store::new(&db.url, "local").unwrap();
    store.migrate().await.unwrap();
    let today = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap();
    // Three days back: the recent runs, even just after midnight, never
    // make the day after it a bar of the same colour.
    let day = today - TimeDelta::days(3);
    let (checkout, search) = (meta("checkout"), meta("search"));
    let mut runs: Vec<_> = (0..100)
        .map(|i| {
            record(
                &checkout,
                day + TimeDelta::minutes(i),
                40_000 + 300 * i as u64,
                i % 33 != 1,
            )
        })
        .collect();
    let now = Utc::now();
    runs.extend((0..40).map(|i| {
        record(
            &checkout,
            now - TimeDelta::seconds(10 + 40 * i),
            50_000 + 1_000 * i as u64,
            i % 8 != 0,
        )
    }));
    runs.extend((0..10).map(|i| {
        record(
            &search,
            now - TimeDelta::seconds(15 + 60 * i),
            20_000,
            false,
        )
    }));
    store.write_runs(&runs).await.unwrap();
    day.date_naive()
}

pub(crate) async fn start(db: &TestDb, target: &FakeTarget, public_read: bool) -> Daemon {
    let d = Daemon::start(
        &settings(db, public_read),
        probes(&yaml(target)),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let ready = wait_for(Duration::from_secs(15), || {
        d.store_health.state() == prober::store::writer::StoreState::Ok
    })
    .await;
    assert!(ready, "the store is migrated and ready");
    d
}

/// Runs `probe` once through the API (counted) and waits for it to be stored.
/// A daemon with public reads over the seeded database, each probe run once
/// more: checkout up (41 runs in the last hour), search down (11).
pub(crate) async fn seeded() -> (TestDb, chrono::NaiveDate, FakeTarget, Daemon) {
    let db = TestDb::create().await;
    let day = seed(&db).await;
    let target = FakeTarget::start().await;
    let d = start(&db, &target, true).await;
    run_now(&d, "checkout", 41).await;
    run_now(&d, "search", 11).await;
    (db, day, target, d)
}

pub(crate) async fn run_now(d: &Daemon, probe: &str, stored_after: i64) {
    let (code, body) = http_request_as(
        d.addr,
        "POST",
        &format!("/api/v1/probes/{probe}/run"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    for _ in 0..100 {
        if last_hour(d, probe).await["runs"] == stored_after {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{probe}: {stored_after} runs never stored: {}",
        last_hour(d, probe).await
    );
}

async fn list(d: &Daemon) -> Value {
    let (code, body) = http_request_as(d.addr, "GET", "/api/v1/probes", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn last_hour(d: &Daemon, probe: &str) -> Value {
    let l = list(d).await;
    let p = l["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == probe)
        .cloned();
    p.map(|p| p["last_hour"].clone()).unwrap_or(Value::Null)
}

/// GET `path`: status line and headers, and body.
async fn get(d: &Daemon, path: &str) -> (String, String) {
    get_accepting(d.addr, path, "text/html").await
}

/// The table row of `probe` on a page.
fn row<'a>(page: &'a str, probe: &str) -> &'a str {
    let start = page
        .find(&format!("<tr data-probe=\"{probe}\">"))
        .unwrap_or_else(|| panic!("no row for {probe}:\n{page}"));
    let end = page[start..].find("</tr>").unwrap() + start;
    &page[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_what_the_api_gives_and_a_failure_s_whole_story() {
    let (_db, seeded_day, target, d) = seeded().await;
    // Two deploys: one of search's team, one of another.
    for (title, team) in [
        ("deploy search v2", "discovery"),
        ("deploy checkout v9", "payments"),
    ] {
        let body = format!(r#"{{"title": "{title}", "labels": {{"team": "{team}"}}}}"#);
        let (code, answer) = http_send(
            d.addr,
            "POST",
            "/api/v1/events",
            Some(ADMIN_TOKEN),
            Some(&body),
        )
        .await;
        assert_eq!(code, 201, "{answer}");
    }

    // The overview: every probe, grouped by team, with the API's numbers.
    let (head, page) = get(&d, "/").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        lower.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    for group in ["team: payments", "team: discovery", "team: ops"] {
        assert!(page.contains(group), "{group}:\n{page}");
    }
    let api = list(&d).await;
    for probe in ["checkout", "search"] {
        let p = api["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == probe)
            .unwrap();
        let r = row(&page, probe);
        let a = p["last_hour"]["availability"].as_f64().unwrap();
        assert!(
            r.contains(&format!("{:.2} %", a * 100.0)),
            "{probe} availability {a}: {r}"
        );
        let p95 = human_us(p["last_hour"]["p95_ms"].as_f64().unwrap() * 1000.0);
        assert!(r.contains(&p95), "{probe} p95 {p95}: {r}");
        let up = p["status"]["up"].as_bool().unwrap();
        assert!(
            r.contains(if up {
                "badge up\">up"
            } else {
                "badge down\">down"
            }),
            "{r}"
        );
    }
    assert!(
        row(&page, "search").contains("badge down"),
        "search fails its expectation"
    );
    assert!(row(&page, "admin-tool").contains("no runs yet"));
    // The seeded day, 97 of 100: its bar says so.
    let bar = format!("{}: 97.000 %", seeded_day.format("%Y-%m-%d"));
    assert!(
        row(&page, "checkout").contains(&bar),
        "{bar}: {}",
        row(&page, "checkout")
    );
    // What a probe file says is text, never markup.
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !page.contains("<script>"));

    // The label filter.
    let (_, filtered) = get(&d, "/?label=team=payments").await;
    assert!(
        filtered.contains("data-probe=\"checkout\"") && !filtered.contains("data-probe=\"search\"")
    );
    let (head, _) = get(&d, "/?label=nonsense").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // The form as a browser sends it with the filter box empty.
    let (head, page) = get(&d, "/?label=&group=team").await;
    assert!(
        head.starts_with("HTTP/1.1 200") && page.contains("data-probe=\"search\""),
        "{head}"
    );
    assert!(page.contains("http-equiv=\"refresh\"") && page.contains("Stop reloading"));
    let (_, page) = get(&d, "/?refresh=0").await;
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "?refresh=0 stops the reload"
    );

    // The failing probe's page: the chart, the phases, and its failed expectation.
    let (head, page) = get(&d, "/probes/search").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        page.contains("<svg class=\"chart\"") && page.contains("data-series=\"p50\""),
        "{page}"
    );
    assert!(
        page.contains("data-phase=\"first_byte\"")
            && page.contains("<title>event: deploy search v2</title>")
            && !page.contains("deploy checkout v9"),
        "the phase breakdown, and the probe's own events (not another team's) marked on its chart"
    );
    let story = &page[page
        .find("The last failed run")
        .expect("the failure's story")..];
    assert!(story.contains("http_status"), "{story}");
    assert!(
        story.contains("expected") && story.contains("503"),
        "{story}"
    );
    assert!(
        story.contains(&format!("GET {}", target.url("/status/503"))),
        "{story}"
    );
    assert!(
        story.contains("{&quot;status&quot;:[200]}"),
        "the expectation: {story}"
    );
    let (head, page) = get(&d, "/probes/checkout?range=7d").await;
    assert!(
        head.starts_with("HTTP/1.1 200") && page.contains("data-series=\"p95\""),
        "{head}"
    );
    let (head, _) = get(&d, "/probes/checkout?range=2y").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, page) = get(&d, "/probes/nope").await;
    assert!(
        head.starts_with("HTTP/1.1 404")
            && page.contains("No probe named &quot;nope&quot; is scheduled")
            && page.contains("<a href=\"/\">Back to the overview</a>"),
        "{head}"
    );

    // The public page: the selected probes by their description, nothing internal.
    let (head, page) = get(&d, "/status").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        page.contains("Example status") && page.contains("Checkout API"),
        "{page}"
    );
    assert!(page.contains("1 of 2 down."), "{page}");
    assert!(
        !page.contains("admin-tool") && !page.contains("script"),
        "{page}"
    );
    assert!(
        !page.contains("data-probe") && !page.contains(">checkout<"),
        "names by description only: {page}"
    );
    assert!(
        !page.contains("127.0.0.1") && !page.contains("/probes/"),
        "{page}"
    );

    // Badges.
    let (head, svg) = get(&d, "/badge/checkout/status.svg").await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: image/svg+xml"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: public, max-age=60"),
        "{head}"
    );
    assert!(
        svg.starts_with("<svg") && svg.contains("status: up"),
        "{svg}"
    );
    let (_, svg) = get(&d, "/badge/search/status.svg").await;
    assert!(svg.contains("status: down"), "{svg}");
    let (_, svg) = get(&d, "/badge/checkout/uptime.svg?window=24h").await;
    assert!(svg.contains("uptime 24h") && svg.contains('%'), "{svg}");
    let (_, svg) = get(&d, "/badge/groups/payments/status.svg").await;
    assert!(svg.contains("status: up"), "{svg}");
    let (head, _) = get(&d, "/badge/checkout/nonsense.svg").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reads_protected_only_the_status_page_and_its_badges_are_open() {
    let db = TestDb::create().await;
    let target = FakeTarget::start().await;
    let d = start(&db, &target, false).await;
    let (head, page) = get(&d, "/").await;
    assert!(
        head.starts_with("HTTP/1.1 401") || head.starts_with("HTTP/1.1 403"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html")
            && page.contains("Authorization: Bearer"),
        "a person is told, as a page, what to send: {head}\n{page}"
    );
    let (head, _) = get(&d, "/probes/checkout").await;
    assert!(
        head.starts_with("HTTP/1.1 401") || head.starts_with("HTTP/1.1 403"),
        "{head}"
    );
    let (code, page) = http_request_as(d.addr, "GET", "/", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200, "a token with read sees the overview");
    assert!(page.contains("data-probe=\"admin-tool\""));
    let (head, page) = get(&d, "/status").await;
    assert!(
        head.starts_with("HTTP/1.1 200") && page.contains("Checkout API"),
        "{head}"
    );
    let (head, _) = get(&d, "/badge/checkout/status.svg").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, body) = get(&d, "/badge/admin-tool/status.svg").await;
    assert!(
        head.starts_with("HTTP/1.1 404"),
        "not on the status page: {head} {body}"
    );
    d.shutdown().await;
}
