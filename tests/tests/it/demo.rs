//! `prober demo` against the shipped examples: every probe of `probes/` passes
//! against the demo targets (with the real runner), a
//! second demo cannot take the ports and says which, and the fail switch fires
//! exactly one alert in the real daemon — the home page's — which resolves
//! after `/control/ok`.
//!
//! The demo targets listen on fixed ports (9681–9685): a test that starts them
//! holds [`DEMO_PORTS`] first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prober::alert::State;
use prober::config::settings::Settings;
use prober::config::Check;
use prober::daemon::{http_executor, Daemon};
use prober::demo::{self, DemoHandle};
use prober::probe::Runner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::db::TestDb;
use crate::helpers::wait_for;

/// Held by every test that starts the demo targets on their fixed ports.
pub static DEMO_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The demo targets on 127.0.0.1, with the lock that makes them this test's.
pub async fn demo_targets() -> (tokio::sync::MutexGuard<'static, ()>, DemoHandle) {
    let guard = DEMO_PORTS.lock().await;
    // A test that panicked dropped its targets; their tasks may take a moment to free the ports.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match demo::start(demo::DEFAULT_BIND).await {
            Ok(handle) => return (guard, handle),
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn shipped_probes() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../probes")
}

/// A request with an empty body to the demo shop; the status and the body.
async fn shop(method: &str, path: &str) -> (u16, String) {
    let mut sock = TcpStream::connect(("127.0.0.1", demo::HTTP_PORT))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_example_passes_against_the_demo_targets() {
    let _shared = crate::helpers::TIMING.read().await;
    let (_ports, targets) = demo_targets().await;

    let report = prober::config::load_paths(&[shipped_probes()]);
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let warnings: Vec<String> = report.warnings().map(ToString::to_string).collect();
    assert!(warnings.is_empty(), "no environment needed: {warnings:#?}");
    let kinds: std::collections::BTreeSet<&str> = report
        .probes
        .iter()
        .map(|p| match p.check {
            Check::Http(_) => "http",
            Check::Steps(_) => "steps",
            Check::Tcp(_) => "tcp",
            Check::Dns(_) => "dns",
            Check::Tls(_) => "tls",
            Check::Grpc(_) => "grpc",
            Check::Icmp(_) => "icmp",
            Check::WebSocket(_) => "websocket",
            Check::Browser(_) => "browser",
        })
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "browser",
            "dns",
            "grpc",
            "http",
            "icmp",
            "steps",
            "tcp",
            "tls",
            "websocket"
        ],
        "the examples exercise every kind"
    );

    let runner = Runner::new().unwrap();
    let mut failed = Vec::new();
    for p in &report.probes {
        let o = runner.run(p).await;
        if !o.success {
            failed.push(format!("{} ({}): {o:#?}", p.name, p.source.file.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} shipped probes fail against the demo:\n{}",
        failed.len(),
        report.probes.len(),
        failed.join("\n")
    );

    // A second demo cannot have the ports, and says which and what to do.
    let second = demo::start(demo::DEFAULT_BIND).await;
    let err = second.err().expect("the ports are taken").to_string();
    assert!(err.contains("127.0.0.1:9681"), "{err}");
    assert!(err.contains("PROBER_DEMO_BIND"), "{err}");
    targets.shutdown().await;
}

/// The shipped probes in a temp dir, the home page probe running every second.
fn fast_copy_of_the_shipped_probes(dir: &Path) {
    for entry in std::fs::read_dir(shipped_probes()).unwrap() {
        let sub = entry.unwrap().path();
        if !sub.is_dir() {
            continue;
        }
        let to = dir.join(sub.file_name().unwrap());
        std::fs::create_dir(&to).unwrap();
        for f in std::fs::read_dir(&sub).unwrap() {
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let text = if text.contains("name: web-homepage") {
                let fast = text
                    .replace("\nevery: 10s\n", "\nevery: 1s\n")
                    .replace("\ntimeout: 5s\n", "\ntimeout: 900ms\n");
                assert!(fast.contains("every: 1s") && fast.contains("timeout: 900ms"));
                fast
            } else {
                text
            };
            std::fs::write(to.join(f.file_name().unwrap()), text).unwrap();
        }
    }
}

fn firing(d: &Daemon) -> Vec<String> {
    let mut keys: Vec<String> = d
        .core
        .alerts
        .active()
        .into_iter()
        .filter(|a| a.state == State::Firing)
        .map(|a| a.key)
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fail_switch_fires_exactly_the_home_page_alert_and_ok_resolves_it() {
    let _shared = crate::helpers::TIMING.read().await;
    let (_ports, targets) = demo_targets().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    fast_copy_of_the_shipped_probes(dir.path());
    let report = prober::config::load_paths(&[dir.path().to_path_buf()]);
    assert!(report.is_ok());
    let settings = Settings {
        database_url: db.url.clone(),
        location: "lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        ..Settings::default()
    };
    let d = Daemon::start(&settings, report.probes, http_executor().unwrap())
        .await
        .unwrap();
    let engine = d.core.alerts.clone();
    assert!(
        wait_for(Duration::from_secs(10), || engine
            .loaded
            .load(std::sync::atomic::Ordering::SeqCst))
        .await
    );

    let (status, body) = shop("POST", "/control/fail").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"mode\":\"fail\""), "{body}");
    assert_eq!(shop("GET", "/").await.0, 503);
    assert_eq!(shop("GET", "/api/health").await.0, 200, "the API stays up");

    let fired = wait_for(Duration::from_secs(15), || !firing(&d).is_empty()).await;
    assert!(fired, "three failed runs of the home page fire its alert");
    // Another second of runs: still only the home page fires.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(firing(&d), ["web-homepage/failing/lab"]);
    let active = engine.active();
    assert!(
        active.iter().all(|a| a.probe == "web-homepage"),
        "no other probe is even pending: {active:#?}"
    );

    let (status, body) = shop("POST", "/control/ok").await;
    assert_eq!(status, 200, "{body}");
    let resolved = wait_for(Duration::from_secs(10), || engine.active().is_empty()).await;
    assert!(resolved, "two good runs resolve it: {:#?}", engine.active());

    d.shutdown().await;
    targets.shutdown().await;
}
