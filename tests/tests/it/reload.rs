//! Hot reload against the real daemon: probe files edited on disk are picked up
//! by the file watcher and applied as a diff (unchanged probes keep their loop and
//! phase), an invalid set changes nothing and is reported until fixed, and SIGHUP
//! reloads the running binary.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use prober::config::settings::Settings;
use prober::daemon::{http_executor, load_probes, Daemon};
use prober::schedule::{spread_offset, Diff};
use prober::store::writer::StoreState;
use serde_json::Value;

use crate::db::TestDb;
use crate::helpers::{cli_command, http_get, wait_for, FakeTarget};

/// How long the watcher may take to notice a change and reload (debounce included).
const APPLIED: Duration = Duration::from_secs(10);

fn settings(database_url: String, probes: &Path) -> Settings {
    Settings {
        database_url,
        location: "reload-lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        probes: vec![probes.to_path_buf()],
        flush_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        api_token: crate::helpers::admin_token(),
        ..Settings::default()
    }
}

fn probe_yaml(name: &str, url: &str) -> String {
    format!("name: {name}\nevery: 1s\ntimeout: 900ms\nhttp:\n  url: \"{url}\"\n")
}

/// Writes `text` the way many editors save: a hidden temporary file renamed over the target.
fn save_atomically(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes `text` in place in two steps (truncate, a first part, a pause, the rest),
/// the way other editors save: only the debounced end result should count.
async fn save_in_steps(path: &Path, text: &str) {
    let (head, tail) = text.split_at(text.len() / 2);
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(head.as_bytes()).unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    f.write_all(tail.as_bytes()).unwrap();
    f.flush().unwrap();
}

/// Name → version of the probes being scheduled.
fn running(d: &Daemon) -> BTreeMap<String, String> {
    d.core
        .scheduler
        .probes()
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect()
}

/// The `scheduled_at` of the runs of `name` in live state.
fn scheduled(d: &Daemon, name: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    let state = d.live.probe(name);
    let s = state.lock();
    s.recent.iter().map(|r| r.scheduled_at).collect()
}

/// Waits until a successful reload's diff satisfies `cond`; returns that diff.
async fn wait_for_diff(d: &Daemon, what: &str, cond: impl Fn(&Diff) -> bool) -> Diff {
    let mut seen = None;
    let ok = wait_for(APPLIED, || {
        let last = d.core.reload_state().last_diff;
        match last {
            Some(diff) if cond(&diff) => {
                seen = Some(diff);
                true
            }
            _ => false,
        }
    })
    .await;
    assert!(
        ok,
        "{what}: the watcher applied no such reload; last state: {:?}",
        d.core.reload_state()
    );
    seen.unwrap()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn readyz(d: &Daemon) -> Value {
    let (code, body) = http_get(d.addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_added_changed_and_removed_probes_as_a_diff() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let probes_dir = dir.path().join("probes");
    std::fs::create_dir(&probes_dir).unwrap();
    std::fs::write(
        probes_dir.join("a.yaml"),
        probe_yaml("a", &target.url("/ok")),
    )
    .unwrap();
    std::fs::write(
        probes_dir.join("b.yaml"),
        probe_yaml("b", &target.url("/ok")),
    )
    .unwrap();
    let settings = settings(db.url.clone(), &probes_dir);
    let d = Daemon::start(
        &settings,
        load_probes(&settings).unwrap(),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || {
            d.store_health.state() == StoreState::Ok && scheduled(&d, "a").len() >= 2
        })
        .await,
        "the daemon runs a and its store is ready"
    );
    let initial = running(&d);
    assert_eq!(
        initial.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "{initial:?}"
    );

    // (a) A new file: c starts, a and b keep their loops.
    std::fs::write(
        probe_yaml_path(&probes_dir, "c"),
        probe_yaml("c", &target.url("/ok")),
    )
    .unwrap();
    let diff = wait_for_diff(&d, "a new probe file", |diff| diff.added == names(&["c"])).await;
    assert_eq!(
        diff,
        Diff {
            added: names(&["c"]),
            removed: vec![],
            changed: vec![],
            unchanged: 2
        }
    );
    assert!(
        wait_for(APPLIED, || !scheduled(&d, "c").is_empty()).await,
        "c runs"
    );
    let after_add = running(&d);
    assert_eq!(after_add.get("a"), initial.get("a"));
    assert_eq!(after_add.get("b"), initial.get("b"));

    // (b) b's URL changes (saved in steps): b restarts, a keeps its phase.
    let before = scheduled(&d, "a");
    save_in_steps(
        &probes_dir.join("b.yaml"),
        &probe_yaml("b", &target.url("/json")),
    )
    .await;
    let diff = wait_for_diff(&d, "a changed probe file", |diff| {
        diff.changed == names(&["b"])
    })
    .await;
    assert_eq!(
        diff,
        Diff {
            added: vec![],
            removed: vec![],
            changed: names(&["b"]),
            unchanged: 2
        }
    );
    let after_change = running(&d);
    assert_ne!(
        after_change.get("b"),
        initial.get("b"),
        "b has a new version"
    );
    assert_eq!(after_change.get("a"), initial.get("a"));
    let b = d.core.scheduler.probe("b").unwrap();
    assert!(
        b.definition.to_string().contains("/json"),
        "{}",
        b.definition
    );
    let last_before = *before.last().unwrap();
    assert!(
        wait_for(APPLIED, || scheduled(&d, "a")
            .iter()
            .filter(|t| **t > last_before)
            .count()
            >= 2)
        .await,
        "a goes on running after the reload"
    );
    // Every run of a, before and after the reload, is on its grid: offset + k·1s.
    let offset = spread_offset("a", Duration::from_secs(1)).as_micros() as u32;
    let all = scheduled(&d, "a");
    for t in before.iter().chain(all.iter()) {
        assert_eq!(
            t.timestamp_subsec_micros(),
            offset,
            "a's run at {t} is off its phase ({offset}µs past the second)"
        );
    }

    // (c) A broken file: 422 with file:line, nothing changes, /readyz shows it.
    let before_break = running(&d);
    let broken = format!(
        "name: c\nevery: 1s\ntimeout: 900ms\ncolour: blue\nhttp:\n  url: \"{}\"\n",
        target.url("/ok")
    );
    save_atomically(&probe_yaml_path(&probes_dir, "c"), &broken);
    let (code, body) = crate::helpers::http_request_as(
        d.addr,
        "POST",
        "/api/v1/reload",
        Some(crate::helpers::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_probes", "{body}");
    let details: Vec<String> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert!(
        details
            .iter()
            .any(|e| e.contains("c.yaml:4:") && e.contains("colour")),
        "{details:#?}"
    );
    assert_eq!(running(&d), before_break, "an invalid set changes nothing");
    let ready = readyz(&d).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    let shown = ready["reload"]["errors"].to_string();
    assert!(shown.contains("c.yaml:4:"), "{ready}");
    // The watcher's attempt on the same broken file fails the same way; still nothing changes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(running(&d), before_break);
    assert!(!d.core.reload_state().errors.is_empty());

    // (d) Fixed: the watcher applies it and the error is gone.
    save_atomically(
        &probe_yaml_path(&probes_dir, "c"),
        &probe_yaml("c", &target.url("/ok")),
    );
    assert!(
        wait_for(APPLIED, || d.core.reload_state().errors.is_empty()).await,
        "the fixed file is applied: {:?}",
        d.core.reload_state()
    );
    let ready = readyz(&d).await;
    assert_eq!(ready["reload"]["errors"], serde_json::json!([]), "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(running(&d), before_break, "c is back as it was");
    let (code, body) = crate::helpers::http_request_as(
        d.addr,
        "POST",
        "/api/v1/reload",
        Some(crate::helpers::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["applied"], true, "{body}");
    assert_eq!(
        v["diff"],
        serde_json::json!({"added": [], "removed": [], "changed": [], "unchanged": 3}),
        "{body}"
    );

    // (e) A removed file: b stops.
    std::fs::remove_file(probes_dir.join("b.yaml")).unwrap();
    let diff = wait_for_diff(&d, "a removed probe file", |diff| {
        diff.removed == names(&["b"])
    })
    .await;
    assert_eq!(
        diff,
        Diff {
            added: vec![],
            removed: names(&["b"]),
            changed: vec![],
            unchanged: 2
        }
    );
    assert!(d.core.scheduler.probe("b").is_none());
    let (code, body) = http_get(d.addr, "/api/v1/probes").await;
    assert_eq!(code, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let listed: Vec<&str> = listed["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["a", "c"]);

    d.shutdown().await;
}

fn probe_yaml_path(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}.yaml"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_follows_new_and_renamed_directories_and_ignores_other_files() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let probes_dir = dir.path().join("probes");
    std::fs::create_dir(&probes_dir).unwrap();
    std::fs::write(
        probes_dir.join("a.yaml"),
        probe_yaml("a", &target.url("/ok")),
    )
    .unwrap();
    let settings = settings(db.url.clone(), &probes_dir);
    let d = Daemon::start(
        &settings,
        load_probes(&settings).unwrap(),
        http_executor().unwrap(),
    )
    .await
    .unwrap();

    // Hidden, temporary and non-YAML files are not probe files: no reload at all.
    std::fs::write(
        probes_dir.join(".draft.yaml"),
        probe_yaml("draft", &target.url("/ok")),
    )
    .unwrap();
    std::fs::write(probes_dir.join("a.yaml~"), "backup").unwrap();
    std::fs::write(probes_dir.join("notes.txt"), "notes").unwrap();
    std::fs::create_dir(probes_dir.join(".git")).unwrap();
    std::fs::write(probes_dir.join(".git").join("x.yaml"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let state = d.core.reload_state();
    assert_eq!(state.last_attempt_at, None, "{state:?}");

    // A new directory tree with a probe file in it.
    let deeper = probes_dir.join("team").join("deeper");
    std::fs::create_dir_all(&deeper).unwrap();
    std::fs::write(deeper.join("d.yml"), probe_yaml("d", &target.url("/ok"))).unwrap();
    assert!(
        wait_for(APPLIED, || d.core.scheduler.probe("d").is_some()).await,
        "a probe file in a new directory is applied: {:?}",
        d.core.reload_state()
    );

    // The directory renamed away (to a hidden name): its probes go.
    std::fs::rename(probes_dir.join("team"), probes_dir.join(".team-old")).unwrap();
    assert!(
        wait_for(APPLIED, || d.core.scheduler.probe("d").is_none()).await,
        "the probes of a directory moved away stop: {:?}",
        d.core.reload_state()
    );

    // A probe file renamed to a non-YAML name: its probe goes.
    std::fs::rename(probes_dir.join("a.yaml"), probes_dir.join("a.yaml.off")).unwrap();
    assert!(
        wait_for(APPLIED, || d.core.scheduler.probes().is_empty()).await,
        "a probe file renamed away stops: {:?}",
        d.core.reload_state()
    );
    assert!(d.core.reload_state().errors.is_empty());

    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let probes_dir = dir.path().join("probes");
    std::fs::create_dir(&probes_dir).unwrap();
    std::fs::write(
        probes_dir.join("first.yaml"),
        probe_yaml("first", &target.url("/ok")),
    )
    .unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut child = cli_command(dir.path(), &["run"])
        .env("DATABASE_URL", &db.url)
        .env("PROBER_PROBES", &probes_dir)
        .env("PROBER_LISTEN", addr.to_string())
        .env("PROBER_LOCATION", "sighup-test")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Drained as it comes, so logging never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut up = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the daemon listens on {addr}");
    let (code, body) = http_get(addr, "/api/v1/probes").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""name":"first""#), "{body}");
    assert!(!body.contains(r#""name":"second""#), "{body}");

    std::fs::write(
        probes_dir.join("second.yaml"),
        probe_yaml("second", &target.url("/ok")),
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut listed = false;
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = log.join().unwrap();
            panic!("the daemon exited on SIGHUP ({status})\n{stderr}");
        }
        let (code, body) = http_get(addr, "/api/v1/probes").await;
        if code == 200 && body.contains(r#""name":"second""#) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let stderr = log.join().unwrap();
    assert!(listed, "the new probe is listed after SIGHUP\n{stderr}");
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("SIGHUP received"),
        "the daemon saw the SIGHUP\n{stderr}"
    );
    // The watcher may apply the new file first; the SIGHUP reload still runs (and logs its trigger).
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("probes reloaded") && l.contains("sighup")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_file_rewritten_in_place_loses_no_probe_and_no_tick() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let probes_dir = dir.path().join("probes");
    std::fs::create_dir(&probes_dir).unwrap();
    let file = probes_dir.join("many.yaml");
    let list = |last_path: &str| -> String {
        ["x", "y", "z"]
            .iter()
            .map(|n| {
                let path = if *n == "z" { last_path } else { "/ok" };
                format!(
                    "- name: {n}\n  every: 1s\n  timeout: 900ms\n  http:\n    url: \"{}\"\n",
                    target.url(path)
                )
            })
            .collect()
    };
    std::fs::write(&file, list("/ok")).unwrap();
    let settings = Settings {
        recent_runs: 100, // every run of the test stays in view
        ..settings(db.url.clone(), &probes_dir)
    };
    let d = Daemon::start(
        &settings,
        load_probes(&settings).unwrap(),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || ["x", "y", "z"]
            .iter()
            .all(|n| scheduled(&d, n).len() >= 2))
        .await,
        "x, y and z run"
    );
    let first_x = scheduled(&d, "x")[0];

    // Every reload applied from now on, as seen by a watcher of the daemon's state.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Diff>::new()));
    let watching = keep_going();
    let poller = {
        let seen = seen.clone();
        let watching = watching.clone();
        let core = d.core.clone();
        tokio::spawn(async move {
            let mut last = core.reload_state().succeeded_total;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let state = core.reload_state();
                if state.succeeded_total != last {
                    last = state.succeeded_total;
                    seen.lock().unwrap().extend(state.last_diff);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // Rewritten in place, the way `cat >` or scp does: truncate, a pause, the new text.
    let mut f = std::fs::File::create(&file).unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.write_all(list("/json").as_bytes()).unwrap();
    f.flush().unwrap();
    drop(f);
    wait_for_diff(&d, "the rewritten file", |diff| {
        diff.changed == names(&["z"])
    })
    .await;
    // A few more ticks after it.
    let settled_at = *scheduled(&d, "x").last().unwrap();
    assert!(
        wait_for(APPLIED, || scheduled(&d, "x")
            .iter()
            .filter(|t| **t > settled_at)
            .count()
            >= 2)
        .await
    );
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    poller.await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|diff| diff.removed.is_empty()),
        "no reload removed a probe while the file was being written: {seen:#?}"
    );
    assert!(
        seen.iter().any(|diff| diff.changed == names(&["z"])),
        "{seen:#?}"
    );
    // x ran on every tick: its history was never reset and has no gap.
    let x = scheduled(&d, "x");
    assert_eq!(x[0], first_x, "x's history was kept: {x:?}");
    for pair in x.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::TimeDelta::seconds(1),
            "x lost a tick between {} and {}: {x:?}",
            pair[0],
            pair[1]
        );
    }
    d.shutdown().await;
}

fn keep_going() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true))
}
