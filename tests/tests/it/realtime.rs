//! The timer thread's real-time priority, as the daemon runs it: run as the
//! image's unprivileged user given `CAP_SYS_NICE`, or the `RLIMIT_RTPRIO` that
//! docker-compose.yml gives (`ulimits: rtprio: 1`), the thread is at
//! `SCHED_FIFO`; given neither, it stays a normal one and the log says what to
//! give. `/metrics`' `prober_scheduler_timer_realtime` tells which.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::db::TestDb;
use crate::helpers::{closed_port, http_get, signal};

/// The scheduling policy (0 normal, 1 `SCHED_FIFO`) of the process's thread
/// named `prober-timer`, once it exists (it starts with the first tick).
fn timer_policy(pid: u32, within: Duration) -> Option<u32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != "prober-timer" {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after "pid (comm) ": the state is field 3, the policy field 41.
            let after = stat.rsplit_once(") ")?.1;
            return after.split_whitespace().nth(41 - 3)?.parse().ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The value of `/metrics`' `prober_scheduler_timer_realtime` (None: absent
/// or the daemon not answering within 10 s).
async fn realtime_gauge(listen: SocketAddr) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (status, page) = http_get(listen, "/metrics").await;
        let line = (page.lines()).find_map(|l| l.strip_prefix("prober_scheduler_timer_realtime "));
        if let (200, Some(v)) = (status, line) {
            return Some(v.trim().to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// What the unprivileged daemon is given to ask for real-time priority with.
#[derive(Debug, Clone, Copy)]
enum Given {
    /// `RLIMIT_RTPRIO` 1, as docker-compose.yml gives it.
    Rtprio,
    /// `CAP_SYS_NICE` as an ambient capability.
    SysNice,
    Nothing,
}

/// `prober run` as uid and gid 10001 (the image's user), given `given`.
fn run_unprivileged(db: &TestDb, dir: &std::path::Path, given: Given, listen: SocketAddr) -> Child {
    let rtprio = if matches!(given, Given::Rtprio) { 1 } else { 0 };
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--rtprio={rtprio}:{rtprio}")).args([
        "setpriv",
        "--reuid=10001",
        "--regid=10001",
        "--clear-groups",
    ]);
    if matches!(given, Given::SysNice) {
        cmd.args(["--inh-caps=+sys_nice", "--ambient-caps=+sys_nice"]);
    }
    cmd.arg("--")
        .arg(env!("CARGO_BIN_EXE_prober-cli"))
        .args(["run", "--probes", "p.yaml", "--no-spool"])
        .args(["--listen", &listen.to_string()])
        .args(["--database-url", &db.url])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit and setpriv (util-linux) run the daemon")
}

/// Whether this process may raise a child's `RLIMIT_RTPRIO` (it needs
/// `CAP_SYS_RESOURCE`, which some sandboxes withhold even from root).
fn may_raise_rtprio() -> bool {
    Command::new("prlimit")
        .args(["--rtprio=1:1", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn stop(mut child: Child) -> String {
    signal("INT", child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

#[tokio::test]
async fn an_unprivileged_daemon_given_the_right_runs_its_timer_at_real_time_priority() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docker-compose.yml"
    ))
    .unwrap();
    let compose = &prober::config::yaml::parse(&text).unwrap()[0].value;
    let rtprio = &compose["services"]["prober"]["ulimits"]["rtprio"];
    assert_eq!(
        rtprio.as_u64(),
        Some(1),
        "docker-compose.yml gives the prober rtprio 1"
    );
    if !is_root() {
        eprintln!("skipped: running the daemon as another user needs root (CI runs as root)");
        return;
    }
    if !runs_as_the_image_user() {
        eprintln!(
            "skipped: uid 10001 cannot run {} (a directory on its path is private)",
            env!("CARGO_BIN_EXE_prober-cli")
        );
        return;
    }
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port().await.port();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!("name: p\nevery: 1s\ntimeout: 500ms\ntcp: {{host: 127.0.0.1, port: {port}}}\n"),
    )
    .unwrap();
    // The image's user must reach the probe file.
    let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).unwrap();

    let mut ways = vec![Given::SysNice];
    if may_raise_rtprio() {
        ways.push(Given::Rtprio);
    } else {
        eprintln!("RLIMIT_RTPRIO not tried: this machine withholds CAP_SYS_RESOURCE, so no limit can be raised");
    }
    for given in ways {
        let listen = closed_port().await;
        let daemon = run_unprivileged(&db, dir.path(), given, listen);
        let policy = timer_policy(daemon.id(), Duration::from_secs(20));
        let gauge = realtime_gauge(listen).await;
        let log = stop(daemon);
        assert_eq!(policy, Some(1), "SCHED_FIFO given {given:?}:\n{log}");
        assert_eq!(gauge.as_deref(), Some("1"), "/metrics says so:\n{log}");
        assert!(!log.contains("RLIMIT_RTPRIO"), "{log}");
    }

    let listen = closed_port().await;
    let refused = run_unprivileged(&db, dir.path(), Given::Nothing, listen);
    let policy = timer_policy(refused.id(), Duration::from_secs(20));
    let gauge = realtime_gauge(listen).await;
    let log = stop(refused);
    assert_eq!(policy, Some(0), "a normal thread given nothing:\n{log}");
    assert_eq!(gauge.as_deref(), Some("0"), "/metrics says so:\n{log}");
    assert!(
        log.contains("the timer thread runs at normal priority")
            && log.contains("CAP_SYS_NICE or a RLIMIT_RTPRIO of 1"),
        "the log says what to give:\n{log}"
    );
}

/// Whether uid 10001 can run the binary under test (a target directory
/// under a private home cannot be).
fn runs_as_the_image_user() -> bool {
    Command::new("setpriv")
        .args(["--reuid=10001", "--regid=10001", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_prober-cli"))
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the tests run as root (uid 0), read from `/proc/self/status`.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}
