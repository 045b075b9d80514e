//! Hostile probe and settings files: alias bombs, deep nesting and huge files are
//! refused with a placed error, in bounded time and memory, by `check`, `once`,
//! `run`, `check --config`, and by hot reload in a running daemon, which keeps its
//! last good set and keeps probing.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use prober::config::settings::Settings;
use prober::daemon::{http_executor, load_probes, Daemon};

use crate::db::TestDb;
use crate::helpers::{wait_for, FakeTarget};

/// The address space the CLI may use in these tests: a bomb expanded, or a
/// 100 MB file read whole, would not fit (the 9-level bomb took 2 GB and more).
const ADDRESS_SPACE: &str = "--as=1073741824";

fn broken(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/broken")
        .join(name)
}

/// Runs the CLI under `prlimit` (address space capped) in `dir`.
fn cli_bounded(dir: &Path, args: &[&str]) -> Output {
    let exe = env!("CARGO_BIN_EXE_prober-cli");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.current_dir(dir)
        .arg(ADDRESS_SPACE)
        .arg(exe)
        .args(args)
        .env_remove("PROBER_PROBES")
        .env_remove("PROBER_CONFIG")
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none");
    cmd.output().unwrap()
}

/// A 100 MB probe file that costs no disk (sparse), named `name` in `dir`.
fn huge_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(100 << 20).unwrap();
    path
}

/// A probe whose JSON path nests 300,000 parentheses (600 KB, under the
/// file limit): the path parser, which recurses a level at a time, once
/// overflowed the stack on it and aborted the process.
fn deep_json_path(dir: &Path) -> PathBuf {
    let path = dir.join("deep_json_path.yaml");
    let n = 300_000;
    let yaml = format!(
        "- name: deep\n  every: 1m\n  http: {{url: \"http://127.0.0.1:9/\"}}\n  expect:\n    json:\n      - path: \"$[?{}@.a{}]\"\n        equals: 1\n",
        "(".repeat(n),
        ")".repeat(n)
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Every hostile input, with the words its refusal must hold.
fn hostile_files(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let copy = |name: &str| {
        let to = dir.join(name);
        std::fs::copy(broken(name), &to).unwrap();
        to
    };
    vec![
        (
            copy("alias_bomb_7_levels.yaml"),
            ":6:45: invalid YAML: anchors and aliases repeat more than 100000 values",
        ),
        (
            copy("alias_bomb_9_levels.yaml"),
            ":6:45: invalid YAML: anchors and aliases repeat more than 100000 values",
        ),
        (
            copy("nested_too_deep.yaml"),
            ":67:65: invalid YAML: lists and mappings are nested more than 64 deep",
        ),
        (
            huge_file(dir, "huge.yaml"),
            ":1:1: the file is larger than 1024 KiB, the limit for a probe or settings file",
        ),
    ]
}

/// [`hostile_files`], and those only a probe file can be.
fn hostile_probe_files(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut files = hostile_files(dir);
    files.push((
        deep_json_path(dir),
        ":6:15: probe \"deep\": expect.json[0].path: \"$[?((((",
    ));
    files
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_once_and_run_refuse_hostile_probe_files_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    for (file, expected) in hostile_probe_files(dir.path()) {
        let path = file.to_str().unwrap();
        let placed = format!("{path}{expected}");
        for args in [
            vec!["check", path],
            vec!["once", path],
            vec!["run", "--probes", path],
        ] {
            let out = cli_bounded(dir.path(), &args);
            let all = text(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&placed),
                "{args:?}: wanted {placed:?}\n{all}"
            );
        }
    }
}

#[test]
fn check_refuses_hostile_settings_files_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let probes = dir.path().join("probes");
    std::fs::create_dir(&probes).unwrap();
    std::fs::write(
        probes.join("ok.yaml"),
        "name: ok\nevery: 30s\nhttp:\n  url: http://127.0.0.1:9/\n",
    )
    .unwrap();
    let probes = probes.to_str().unwrap();
    for (file, expected) in hostile_files(dir.path()) {
        let path = file.to_str().unwrap();
        let placed = format!("{path}{expected}");
        let out = cli_bounded(dir.path(), &["check", "--config", path, probes]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&placed), "wanted {placed:?}\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_refuses_hostile_files_and_keeps_probing() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let probes_dir = dir.path().join("probes");
    std::fs::create_dir(&probes_dir).unwrap();
    std::fs::write(
        probes_dir.join("a.yaml"),
        format!(
            "name: a\nevery: 1s\ntimeout: 900ms\nhttp:\n  url: \"{}\"\n",
            target.url("/ok")
        ),
    )
    .unwrap();
    let settings = Settings {
        database_url: db.url.clone(),
        location: "hostile-lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        probes: vec![probes_dir.clone()],
        flush_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        ..Settings::default()
    };
    let d = Daemon::start(
        &settings,
        load_probes(&settings).unwrap(),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let runs = |d: &Daemon| d.live.probe("a").lock().recent.len();
    assert!(wait_for(Duration::from_secs(15), || runs(&d) >= 1).await);

    let staging = tempfile::tempdir().unwrap();
    for (file, expected) in hostile_probe_files(staging.path()) {
        let name = file.file_name().unwrap().to_owned();
        let dropped = probes_dir.join(&name);
        // Renamed in, as a deployment tool would: the watcher sees the whole file at once.
        std::fs::rename(&file, &dropped).unwrap();
        let placed = format!("{}{expected}", dropped.display());
        let refused = wait_for(Duration::from_secs(10), || {
            d.core
                .reload_state()
                .errors
                .iter()
                .any(|e| e.contains(&placed))
        })
        .await;
        assert!(
            refused,
            "the watcher's reload refuses {name:?} with {placed:?}: {:?}",
            d.core.reload_state()
        );
        let names: Vec<String> = (d.core.scheduler.probes().iter())
            .map(|p| p.name.clone())
            .collect();
        assert_eq!(names, ["a"], "an invalid set changes nothing");
        let before = runs(&d);
        assert!(
            wait_for(Duration::from_secs(10), || runs(&d) > before).await,
            "a keeps running after {name:?} was refused"
        );
        std::fs::remove_file(&dropped).unwrap();
        assert!(
            wait_for(Duration::from_secs(10), || d
                .core
                .reload_state()
                .errors
                .is_empty())
            .await,
            "removing {name:?} clears the error: {:?}",
            d.core.reload_state()
        );
    }
    d.shutdown().await;
}

#[test]
fn the_memory_bound_alone_refuses_nothing_valid() {
    // A valid file, anchors and all, passes under the same bound.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ok.yaml");
    std::fs::write(
        &file,
        "- &base\n  name: one\n  every: 30s\n  http: {url: \"http://127.0.0.1:9/\"}\n\
         - name: two\n  every: 30s\n  http: *h\n"
            .replace("http: {url", "http: &h {url"),
    )
    .unwrap();
    let out = cli_bounded(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: 2 probe(s)"),
        "{}",
        text(&out)
    );
}
