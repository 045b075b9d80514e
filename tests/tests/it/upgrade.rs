//! Issue 16, deliverable 5: a rolling upgrade to store v2, and a rollback.
//!
//! The previous release (N-1: the parent of the commit that added migration
//! 0011) is built from git, into a target directory of its own under the
//! tests' (kept, so only the first run compiles the dependencies: about 4
//! minutes on 2 cores). Then, on one fresh database:
//! 1. N-1 probes for a few seconds (v1 tables: one row per bin);
//! 2. the current migrations convert it: every run and every count stays,
//!    at every resolution (`all_bins`, `all_counters` compared row by row);
//! 3. N-1 (`--no-migrate`), the current binary and N-1 again (a rollback)
//!    take turns on it; after each, every stored run is counted exactly once
//!    at every resolution, and the API of the daemon that ran agrees with the
//!    runs table (N-1's minute resolution only as a lower count: it reads its
//!    v1 minute tables, ARCHITECTURE.md);
//! 4. the current store's fold moves every pending row, and changes no count.
//!
//! Data problems are collected and reported together at the end (with the
//! step of the scenario each was seen in); a daemon that does not start,
//! become ready or exit 0 on SIGINT stops the test at once.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use crate::db::TestDb;
use crate::helpers::{http_request_as, FakeTarget, ADMIN_TOKEN};

/// The migration that brought store v2; N-1 is the parent of the commit that added it.
const HIST_MIGRATION: &str = "migrations/20261201000011_hist.sql";
const LOCATION: &str = "upgrade-lab";
const PROBES: [&str; 2] = ["upgrade-a", "upgrade-b"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn git(root: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .expect("git must be installed to build the previous release");
    assert!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The previous release's commit: the parent of the commit that added [`HIST_MIGRATION`].
fn previous_release(root: &Path) -> String {
    let added = git(
        root,
        &[
            "log",
            "--diff-filter=A",
            "--format=%H",
            "--",
            HIST_MIGRATION,
        ],
    );
    // Newest first: the oldest addition is the one that brought store v2.
    let added = added.lines().last().unwrap_or_else(|| {
        panic!("no commit adds {HIST_MIGRATION}: is this a shallow clone? (git fetch --unshallow)")
    });
    git(root, &["rev-parse", &format!("{added}^")])
}

/// `git archive <rev> | tar -x -C <dir>`.
fn extract(root: &Path, rev: &str, dir: &Path) {
    let mut archive = Command::new("git")
        .args(["archive", "--format=tar", rev])
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let tar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(dir)
        .stdin(archive.stdout.take().unwrap())
        .status()
        .unwrap();
    let archived = archive.wait().unwrap();
    assert!(
        archived.success() && tar.success(),
        "git archive {rev} | tar -x -C {}: git {archived}, tar {tar}",
        dir.display()
    );
}

/// Builds N-1's `prober` in a target directory of its own under the tests'
/// one (kept between runs, so only the first run compiles the dependencies)
/// and copies the binary out. Not in the tests' own target directory: cargo
/// names a workspace crate's artifacts by its path relative to the
/// workspace, so N-1's `libprober` would replace this tree's, and its
/// fingerprint, newer than this tree's sources, would make the next build
/// link against N-1. Holds the timing lock for writing, as a build takes
/// both cores. Returns the binary, the revision and how long the build took.
fn build_previous_release() -> (PathBuf, String, Duration) {
    let _exclusive = crate::helpers::TIMING.blocking_write();
    let root = repo();
    let rev = previous_release(&root);
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target_dir = tmp.parent().unwrap().join("previous-release");
    // A fixed place: git archive gives every file the commit's time, so a
    // second run finds cargo's fingerprints fresh and builds nothing.
    let tree = tmp.join(format!("previous-release-{}", &rev[..12]));
    if tree.exists() {
        std::fs::remove_dir_all(&tree).unwrap();
    }
    std::fs::create_dir_all(&tree).unwrap();
    extract(&root, &rev, &tree);
    let debug = target_dir.join("debug");
    let started = Instant::now();
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // Not the variables cargo set for this test: a build script that watches
    // one (ring's: CARGO_MANIFEST_DIR) would rerun, and its dependents would
    // rebuild, here and again in the next `cargo test`.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"].contains(&&*k)
        {
            cargo.env_remove(&*k);
        }
    }
    let out = cargo
        .args(["build", "--locked", "--offline", "-p", "prober"])
        .current_dir(&tree)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_TERM_COLOR", "never")
        .output()
        .unwrap();
    let took = started.elapsed();
    let bin = tree.join("prober-previous");
    let copied = out.status.success() && std::fs::copy(debug.join("prober"), &bin).is_ok();
    assert!(
        out.status.success() && copied,
        "building the previous release {rev} (`cargo build --locked --offline -p prober` in {}) failed:\n{}",
        tree.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (bin, rev, took)
}

/// A `prober run` process: N-1's binary or the current one.
struct Daemon {
    what: String,
    /// N-1's binary, not this tree's.
    previous: bool,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Daemon {
    /// Starts `bin run` with the probes of `dir/probes` and waits until `/readyz` says ready.
    async fn start(what: &str, bin: &Path, dir: &Path, db: &TestDb, extra: &[&str]) -> Daemon {
        let addr = free_addr();
        let log = dir.join(format!("{}.log", what.replace([' ', '/'], "_")));
        let child = Command::new(bin)
            .arg("run")
            .args(extra)
            .current_dir(dir)
            .env("PROBER_PROBES", dir.join("probes"))
            .env("DATABASE_URL", &db.url)
            .env("PROBER_LISTEN", addr.to_string())
            .env("PROBER_LOCATION", LOCATION)
            .env("PROBER_API_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            what: what.to_string(),
            previous: bin != Path::new(env!("CARGO_BIN_EXE_prober-cli")),
            child,
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!(
                    "{what}: `prober run {}` exited ({status}) before it was ready:\n{}",
                    extra.join(" "),
                    tail(&d.log)
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let (_, body) = d.get("/readyz").await;
                if body.contains("\"status\":\"ready\"") {
                    return d;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not ready within 60 s:\n{}",
                tail(&d.log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http_request_as(self.addr, "GET", path, Some(ADMIN_TOKEN)).await
    }

    /// SIGINT; the process must exit 0 within 30 s.
    async fn stop(mut self) {
        let (what, pid) = (self.what.clone(), self.child.id().to_string());
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success(), "{what}: kill -INT {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still running 30 s after SIGINT:\n{}",
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            status.code(),
            Some(0),
            "{what}: exit status after SIGINT:\n{}",
            tail(&self.log)
        );
    }
}

/// A test that fails leaves no daemon behind.
impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// all_bins: (resolution, t, probe, location, phase, bin low, bin high, count);
/// all_counters: (resolution, t, probe, location, phase, runs, failures, sum of µs).
type Row = (String, DateTime<Utc>, i32, i32, i32, i64, i64, i64);

const KEY: &str = "resolution, t, probe_id::int4, location_id::int4, phase::int4";
const BINS: &str =
    "bin_lo_us::int8, bin_hi_us::int8, sum(count)::int8 from all_bins group by 1, 2, 3, 4, 5, 6, 7";
const COUNTERS: &str =
    "sum(runs)::int8, sum(failures)::int8, sum(sum_us)::int8 from all_counters group by 1, 2, 3, 4, 5";

/// Every count of `all_bins` and of `all_counters`, summed by key, ordered.
async fn histograms(pool: &PgPool) -> [Vec<Row>; 2] {
    let mut out = [BINS, COUNTERS].map(|_| Vec::new());
    for (rows, rest) in out.iter_mut().zip([BINS, COUNTERS]) {
        *rows = sqlx::query_as(&format!("select {KEY}, {rest}"))
            .fetch_all(pool)
            .await
            .unwrap();
        // Ordered here, not by the database's collation: `differences` searches them.
        rows.sort();
    }
    out
}

/// Empty when equal; else how many rows each side has and the first rows only one side has.
fn differences<T: Ord + Debug>(what: &str, before: &[T], after: &[T]) -> Option<String> {
    if before == after {
        return None;
    }
    let only = |a: &[T], b: &[T]| -> Vec<String> {
        a.iter()
            .filter(|r| b.binary_search(r).is_err())
            .take(10)
            .map(|r| format!("    {r:?}"))
            .collect()
    };
    Some(format!(
        "{what}: {} rows before, {} after\n  only before (first 10):\n{}\n  only after (first 10):\n{}",
        before.len(),
        after.len(),
        only(before, after).join("\n"),
        only(after, before).join("\n"),
    ))
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every stored run: the `runs` rows and, from migration 0015 on, the
/// packed hours too (`prober_run_rows`; a rollup hours later packs them).
async fn all_runs(pool: &PgPool) -> &'static str {
    let packs: bool = sqlx::query_scalar(
        "select to_regprocedure('prober_run_rows(timestamptz, timestamptz)') is not null",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    if packs {
        "prober_run_rows('-infinity', 'infinity')"
    } else {
        "runs"
    }
}

async fn scheduled_runs(pool: &PgPool) -> i64 {
    let runs = all_runs(pool).await;
    scalar(
        pool,
        &format!("select count(*) from {runs} r where trigger = 0"),
    )
    .await
}

/// Scheduled runs per probe name.
async fn runs_per_probe(pool: &PgPool) -> BTreeMap<String, i64> {
    let runs = all_runs(pool).await;
    let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
        "select p.name, count(*) from {runs} r join probes p on p.id = r.probe_id
         where r.trigger = 0 group by 1"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// Every scheduled run counted once at every resolution (phase 0, `total`):
/// `sum(runs)` of `all_counters` and `sum(count)` of `all_bins` each equal
/// the runs table's count. Returns the problems, labelled with `step`.
async fn exactly_once(pool: &PgPool, step: &str) -> Vec<String> {
    let runs = scheduled_runs(pool).await;
    let without_total = scalar(
        pool,
        &format!(
            "select count(*) from {} r where trigger = 0 and total_us is null",
            all_runs(pool).await
        ),
    )
    .await;
    let mut problems = Vec::new();
    for res in ["minute", "hour", "day"] {
        for (view, col) in [("all_counters", "runs"), ("all_bins", "count")] {
            let sql = format!(
                "select coalesce(sum({col}), 0)::int8 from {view} where phase = 0 and resolution = '{res}'"
            );
            let counted = scalar(pool, &sql).await;
            if counted != runs {
                problems.push(format!(
                    "{step}: {sql} = {counted}, but select count(*) from runs where trigger = 0 = {runs} \
                     ({without_total} of them without total_us); v1 tables: {}",
                    v1_rows(pool).await
                ));
            }
        }
    }
    problems
}

const V1_TABLES: [&str; 6] = [
    "minute_bins",
    "minute_counters",
    "hour_bins",
    "hour_counters",
    "day_bins",
    "day_counters",
];
const V2_TABLES: [&str; 4] = ["hist_minute", "hist_hour", "hist_day", "hist_pending"];

/// The rows of each of `tables` that exists.
async fn row_counts(pool: &PgPool, tables: &[&str]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for t in tables {
        let absent = format!("select (to_regclass('{t}') is null)::int4::int8");
        if scalar(pool, &absent).await == 1 {
            continue;
        }
        out.insert(
            t.to_string(),
            scalar(pool, &format!("select count(*) from {t}")).await,
        );
    }
    out
}

async fn v1_rows(pool: &PgPool) -> String {
    format!("{:?}", row_counts(pool, &V1_TABLES).await)
}

/// What the daemon's API counts for each probe: `/api/v1/probes` (last hour
/// at minute resolution, last day at hour resolution) and the latency series
/// at 1m and 1h steps. Each must lie between the runs table's counts read
/// just before and just after (the daemon writes while it answers).
async fn api_agrees(d: &Daemon, pool: &PgPool, step: &str) -> Vec<String> {
    let before = runs_per_probe(pool).await;
    let mut seen: Vec<(String, String, i64)> = Vec::new();
    let (code, body) = d.get("/api/v1/probes").await;
    assert_eq!(code, 200, "{step}: GET /api/v1/probes: {body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    for p in list["probes"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        for w in ["last_hour", "last_day"] {
            let runs = p[w]["runs"].as_i64().unwrap_or(-1);
            seen.push((name.clone(), format!("GET /api/v1/probes: {w}.runs"), runs));
        }
    }
    let from =
        (Utc::now() - TimeDelta::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for name in PROBES {
        for s in ["1m", "1h"] {
            let path = format!("/api/v1/probes/{name}/latency?step={s}&from={from}");
            let (code, body) = d.get(&path).await;
            assert_eq!(code, 200, "{step}: GET {path}: {body}");
            let series: serde_json::Value = serde_json::from_str(&body).unwrap();
            let count: i64 = series["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["count"].as_i64().unwrap())
                .sum();
            seen.push((name.to_string(), format!("GET {path}: sum of count"), count));
        }
    }
    let after = runs_per_probe(pool).await;
    // A known limit of the rolling upgrade (ARCHITECTURE.md): N-1 reads
    // minute resolution (last_hour, steps under 1h) from its v1 tables, which
    // the migration empties and the current writer never fills, so after the
    // migration N-1 there counts only what N-1 itself wrote: never more.
    let minute_partial = d.previous && !step.starts_with("1.");
    let mut problems = Vec::new();
    for (name, what, n) in seen {
        let lo = before.get(&name).copied().unwrap_or(0);
        let hi = after.get(&name).copied().unwrap_or(0);
        let minute = what.contains("last_hour") || what.contains("=1m");
        let lo = if minute_partial && minute { 0 } else { lo };
        if n < lo || n > hi {
            problems.push(format!(
                "{step}: probe {name}: {what} = {n}, but the runs table has {lo} (before the request) to {hi} (after) scheduled runs of it"
            ));
        }
    }
    problems
}

/// One database, a probes directory and a target; what went wrong so far.
struct Scenario {
    db: TestDb,
    pool: PgPool,
    dir: tempfile::TempDir,
    _target: FakeTarget,
    problems: Vec<String>,
}

impl Scenario {
    async fn new() -> Scenario {
        let target = FakeTarget::start().await;
        let db = TestDb::create().await;
        let pool = db.pool().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("probes")).unwrap();
        let yaml: String = PROBES
            .iter()
            .map(|name| {
                format!(
                    "- name: {name}\n  every: 1s\n  timeout: 900ms\n  http: {{url: \"{}\"}}\n",
                    target.url("/ok")
                )
            })
            .collect();
        std::fs::write(dir.path().join("probes/upgrade.yaml"), yaml).unwrap();
        Scenario {
            db,
            pool,
            dir,
            _target: target,
            problems: Vec::new(),
        }
    }

    /// Runs `bin run <extra>` for `secs` seconds, checks its API, stops it;
    /// then the daemon must have added runs, and every run is counted exactly once.
    async fn turn(&mut self, step: &str, bin: &Path, extra: &[&str], secs: u64) {
        let pool = &self.pool;
        let fresh = row_counts(pool, &["runs"]).await.is_empty();
        let runs_before = if fresh { 0 } else { scheduled_runs(pool).await };
        let d = Daemon::start(step, bin, self.dir.path(), &self.db, extra).await;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        self.problems.extend(api_agrees(&d, pool, step).await);
        d.stop().await;
        let added = scheduled_runs(pool).await - runs_before;
        if added < secs as i64 {
            self.problems.push(format!(
                "{step}: only {added} runs stored in {secs} s of two probes every second"
            ));
        }
        self.problems.extend(exactly_once(pool, step).await);
        eprintln!(
            "upgrade: {step}: +{added} runs; v1 {}; v2 {:?}",
            v1_rows(pool).await,
            row_counts(pool, &V2_TABLES).await
        );
    }

    /// Each count of `all_bins` and `all_counters` now and in `before`.
    async fn same_histograms(&mut self, step: &str, before: &[Vec<Row>; 2]) {
        let now = histograms(&self.pool).await;
        for ((rest, before), now) in [BINS, COUNTERS].iter().zip(before).zip(&now) {
            let what = format!("{step}: select {KEY}, {rest}");
            self.problems.extend(differences(&what, before, now));
        }
    }

    /// The current migrations on what N-1 wrote: every run and every count
    /// stays; the v1 tables are emptied, their content is in `hist_*`.
    async fn migrate(&mut self, step: &str, store: &prober::store::Store) {
        let runs = scheduled_runs(&self.pool).await;
        let before = histograms(&self.pool).await;
        if let Err(e) = store.migrate().await {
            panic!(
                "{step}: migrating the database N-1 wrote ({runs} runs, {} all_counters rows) fails: {e:?}\n\
                 problems seen before: {:#?}",
                before[1].len(),
                self.problems
            );
        }
        let after = scheduled_runs(&self.pool).await;
        if after != runs {
            self.problems
                .push(format!("{step}: {runs} runs before, {after} after"));
        }
        self.same_histograms(step, &before).await;
        let v1 = row_counts(&self.pool, &V1_TABLES).await;
        if v1.values().any(|&n| n != 0) {
            self.problems
                .push(format!("{step}: the v1 tables are not emptied: {v1:?}"));
        }
        let v2 = row_counts(&self.pool, &V2_TABLES).await;
        let empty = |t: &str| v2.get(t).copied().unwrap_or(0) == 0;
        if ["hist_minute", "hist_hour", "hist_day"]
            .into_iter()
            .any(empty)
        {
            self.problems.push(format!(
                "{step}: a hist_* table is empty after the copy: {v2:?}"
            ));
        }
        self.problems.extend(exactly_once(&self.pool, step).await);
    }

    /// The current store's fold, 3 h on (every minute closed): no pending
    /// row is left, and no count changes.
    async fn fold(&mut self, step: &str, store: &prober::store::Store) {
        let before = histograms(&self.pool).await;
        store.start_rollups(Utc::now()).await.unwrap();
        let rolled = store.rollup(Utc::now() + TimeDelta::hours(3)).await;
        assert!(
            matches!(rolled, Ok(Some(_))),
            "{step}: the fold did not run: {rolled:?}"
        );
        let pending = scalar(&self.pool, "select count(*) from hist_pending").await;
        if pending != 0 {
            self.problems
                .push(format!("{step}: {pending} hist_pending rows left"));
        }
        self.same_histograms(step, &before).await;
        self.problems.extend(exactly_once(&self.pool, step).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_s_data_survives_the_upgrade_and_a_rollback_counts_every_run_once() {
    let (previous, rev, build_took) = tokio::task::spawn_blocking(build_previous_release)
        .await
        .unwrap();
    eprintln!(
        "upgrade: built the previous release {} in {:.1} s",
        &rev[..12],
        build_took.as_secs_f64()
    );
    let started = Instant::now();
    let _shared = crate::helpers::TIMING.read().await;
    let current = Path::new(env!("CARGO_BIN_EXE_prober-cli"));
    let mut s = Scenario::new().await;

    // 1. N-1 seeds the database (its own migrations, 1–10).
    let step = "1. N-1 seeds (its migrations 1-10)";
    s.turn(step, &previous, &[], 6).await;
    let [bins, counters] = histograms(&s.pool).await;
    for res in ["minute", "hour", "day"] {
        assert!(
            counters.iter().any(|r| r.0 == res) && bins.iter().any(|r| r.0 == res),
            "{step}: no {res} rows in all_bins or all_counters"
        );
    }

    // 2. The current migrations.
    let store = prober::store::Store::new(&s.db.url, LOCATION).unwrap();
    s.migrate("2. current migrations (0011 copies the v1 tables)", &store)
        .await;

    // 3. A rolling upgrade: N-1 still runs somewhere, then N, then N-1 again (a rollback).
    let no_migrate = ["--no-migrate"];
    let step = "3a. N-1 --no-migrate on the migrated database";
    s.turn(step, &previous, &no_migrate, 4).await;
    let v1 = row_counts(&s.pool, &["minute_counters"]).await;
    if v1.get("minute_counters").copied().unwrap_or(0) == 0 {
        s.problems
            .push(format!("{step}: N-1 wrote no v1 minute rows: {v1:?}"));
    }
    s.turn("3b. current binary", current, &[], 4).await;
    let step = "3c. N-1 --no-migrate again (a rollback)";
    s.turn(step, &previous, &no_migrate, 4).await;

    // 4. The current store folds everything.
    s.fold("4. Store::rollup(now + 3 h)", &store).await;

    eprintln!(
        "upgrade: scenario took {:.1} s; {} runs; v1 {}; v2 {:?}",
        started.elapsed().as_secs_f64(),
        scheduled_runs(&s.pool).await,
        v1_rows(&s.pool).await,
        row_counts(&s.pool, &V2_TABLES).await
    );
    assert!(
        s.problems.is_empty(),
        "upgrade from {} (N-1) to this tree: {} problems:\n{}",
        &rev[..12],
        s.problems.len(),
        s.problems.join("\n")
    );
}
