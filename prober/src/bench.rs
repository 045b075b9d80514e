//! `prober bench`: the real daemon (scheduler, HTTP probe, store writer)
//! against a loopback HTTP target in the same process, with every run
//! persisted to a scratch Postgres database; prints one table of figures.
//!
//! Method, in short (BENCHMARKS.md has the long form):
//! - the target runs on its own thread with its own current-thread runtime;
//!   its CPU time is read from `/proc/self/task/<tid>/schedstat` and subtracted;
//! - counters, CPU and the wall clock are snapshotted after a warm-up (2 s by
//!   default) and at the end of the window; only the difference is reported;
//! - lateness comes from Postgres (`runs.lateness_us`) for the runs scheduled
//!   inside the window, so it is what the store holds, not a side channel.
//!
//! CPU comes from `/proc` rather than `getrusage`/`clock_gettime`: the
//! workspace forbids `unsafe` code, and those are `unsafe` FFI calls.
//! `/proc/self/stat` is the same accounting as `getrusage(RUSAGE_SELF)`
//! (all threads, exited ones included), in clock ticks of 10 ms.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

mod blackbox;
mod history;
mod side;

use crate::config::load::{load_text, LoadReport};
use crate::config::settings::Settings;
use crate::daemon::{http_executor, Daemon};

/// The scratch database the bench drops and recreates.
pub const DEFAULT_BENCH_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/prober_bench";
/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;
/// The target's answer: small, and the connection closes after it.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";

/// `prober bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Probes to define (named bench-00001, bench-00002, …).
    #[arg(long, default_value_t = 1000)]
    pub probes: usize,
    /// Interval of every probe (at least 1s, whole milliseconds).
    #[arg(long, default_value = "1s", value_parser = parse_every)]
    pub every: Duration,
    /// Length of the measured window in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Seconds run before the window, excluded from the figures.
    #[arg(long, default_value_t = 2)]
    pub warm_up: u64,
    /// Scratch database, DROPPED and recreated; must be local and have "bench" in its name.
    #[arg(long, default_value = DEFAULT_BENCH_DATABASE_URL)]
    pub database_url: String,
    /// The target waits this long before answering.
    #[arg(long, default_value_t = 0)]
    pub target_delay_ms: u64,
    /// Concurrent runs allowed per target host (the daemon's `max_per_host`; default: its default).
    #[arg(long)]
    pub max_per_host: Option<usize>,
    /// Print the figures as one JSON object instead of the table (used by `--side-by-side`).
    #[arg(long)]
    pub json: bool,
    /// Run the whole side-by-side comparison with blackbox_exporter (each prober
    /// phase is a child `prober bench --json`) and print one table.
    #[arg(long)]
    pub side_by_side: bool,
    #[command(flatten)]
    pub side: side::SideArgs,
}

fn parse_every(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s (the shortest interval a probe may have)".into());
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("must be whole milliseconds".into());
    }
    Ok(d)
}

/// Runs the benchmark and prints its table; errors are printed and exit 2.
pub fn main(args: BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(crate::cli::EXIT_CONFIG);
        }
    };
    if args.side_by_side {
        return match runtime.block_on(side::run(&args)) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench: {e}");
                ExitCode::from(crate::cli::EXIT_CONFIG)
            }
        };
    }
    match runtime.block_on(run(&args)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(crate::cli::EXIT_CONFIG)
        }
    }
}

/// Runs the benchmark; returns the text to print.
pub async fn run(args: &BenchArgs) -> Result<String, String> {
    if args.probes == 0 || args.seconds == 0 {
        return Err("--probes and --seconds must be at least 1".into());
    }
    let db = check_database_url(&args.database_url)?;
    let delay = Duration::from_millis(args.target_delay_ms);
    let timeout = (args.every / 2).min(Duration::from_secs(5));
    if delay >= timeout {
        eprintln!(
            "bench: warning: the target delay ({} ms) is not below the probe timeout ({} ms): runs will time out",
            delay.as_millis(),
            timeout.as_millis()
        );
    }

    let target = Target::start(delay)?;
    let result = run_with_target(args, &db, &target, timeout).await;
    target.stop();
    result
}

async fn run_with_target(
    args: &BenchArgs,
    db: &str,
    target: &Target,
    timeout: Duration,
) -> Result<String, String> {
    let mut admin = recreate_database(&args.database_url, db).await?;
    let store = crate::store::Store::new(&args.database_url, "local").map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    // Measure the steady state of a daemon that has run for more than a
    // minute: its runs wait for the rollup instead of upserting hour and day
    // rows (a fresh daemon does that only until its first whole minute).
    store
        .start_rollups(chrono::Utc::now() - chrono::TimeDelta::hours(1))
        .await
        .map_err(|e| e.to_string())?;
    drop(store);

    let probes = build_probes(args.probes, args.every, timeout, target.addr)?;
    let rate = args.probes as f64 / args.every.as_secs_f64();
    let expected_runs = rate * (args.warm_up as f64 + args.seconds as f64 + 5.0);
    let settings = Settings {
        database_url: args.database_url.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        queue_capacity: Settings::default()
            .queue_capacity
            .max(expected_runs.ceil() as usize),
        max_per_host: args
            .max_per_host
            .unwrap_or(Settings::default().max_per_host),
        ..Settings::default()
    };
    let daemon = Daemon::start(&settings, probes, http_executor()?).await?;

    tokio::time::sleep(Duration::from_secs(args.warm_up)).await;
    let pg0 = pg_backend_cpu(&mut admin, db).await;
    let s0 = Snapshot::take(&daemon, target);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let s1 = Snapshot::take(&daemon, target);
    let pg1 = pg_backend_cpu(&mut admin, db).await;

    let queue = daemon.queue.clone();
    let health = daemon.store_health.clone();
    let stats = daemon.scheduler_stats.clone();
    daemon.shutdown().await;
    let totals = Totals {
        finished: stats.runs_finished.load(Ordering::Relaxed),
        written: health.runs_written.load(Ordering::Relaxed),
        dropped: queue.dropped(),
        left: queue.len() as u64,
    };
    let _ = admin.close().await;

    let stored = query_window(&args.database_url, s0.wall, s1.wall).await?;
    let inputs = Inputs {
        args,
        timeout,
        rate,
        settings: &settings,
        s0: &s0,
        s1: &s1,
        pg: pg_delta(&pg0, &pg1),
        stored: &stored,
        totals: &totals,
    };
    if args.json {
        let figures = Figures::from_inputs(&inputs);
        return serde_json::to_string(&figures)
            .map(|j| j + "\n")
            .map_err(|e| format!("cannot encode the figures: {e}"));
    }
    Ok(render(&inputs))
}

/// Refuses anything but a local database with "bench" in its name; returns the name.
fn check_database_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("--database-url {url:?}: {e}"))?;
    let host = parsed.host_str().unwrap_or("");
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return Err(format!(
            "--database-url: host {host:?} is not loopback; the bench drops and recreates its database, so it only runs against a local Postgres"
        ));
    }
    let opts = PgConnectOptions::from_str(url).map_err(|e| format!("--database-url: {e}"))?;
    let db = opts.get_database().unwrap_or("").to_string();
    if !db.contains("bench") {
        return Err(format!(
            "--database-url: database {db:?} would be dropped and recreated; use a scratch name containing \"bench\", like prober_bench"
        ));
    }
    Ok(db)
}

/// Drops and recreates the bench database; returns a connection to `postgres`.
async fn recreate_database(url: &str, db: &str) -> Result<PgConnection, String> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| format!("--database-url: {e}"))?;
    let mut admin =
        opts.database("postgres").connect().await.map_err(|e| {
            format!("cannot connect to database \"postgres\" to recreate {db:?}: {e}")
        })?;
    let quoted = format!("\"{}\"", db.replace('"', "\"\""));
    for sql in [
        format!("drop database if exists {quoted} with (force)"),
        format!("create database {quoted}"),
    ] {
        sqlx::query(&sql)
            .execute(&mut admin)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
    }
    Ok(admin)
}

/// A duration as the probe format writes it (`1s`, `1500ms`).
fn yaml_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Probes per generated YAML text: loading a list costs O(items²) today
/// (`yaml::Document::sub` re-roots the whole position index for every item),
/// so 10,000 probes in one text take minutes; chunks keep it linear.
const PROBES_PER_TEXT: usize = 250;

/// The probes, built by the real loader from generated YAML.
fn build_probes(
    n: usize,
    every: Duration,
    timeout: Duration,
    target: SocketAddr,
) -> Result<Vec<crate::config::Probe>, String> {
    let mut report = LoadReport::default();
    let mut first = 1;
    while first <= n {
        let last = (first + PROBES_PER_TEXT - 1).min(n);
        let mut yaml = String::with_capacity(PROBES_PER_TEXT * 100);
        for i in first..=last {
            yaml.push_str(&format!(
                "- name: bench-{i:05}\n  every: {}\n  timeout: {}\n  http:\n    url: http://{target}/\n",
                yaml_duration(every),
                yaml_duration(timeout)
            ));
        }
        load_text(std::path::Path::new("<bench>"), &yaml, &mut report);
        first = last + 1;
    }
    if !report.is_ok() {
        let errors: Vec<String> = report.errors().take(5).map(ToString::to_string).collect();
        return Err(format!(
            "the generated probes do not load:\n{}",
            errors.join("\n")
        ));
    }
    if report.probes.len() != n {
        return Err(format!(
            "built {} probes instead of {n}",
            report.probes.len()
        ));
    }
    Ok(report.probes)
}

/// The loopback target: its own thread and current-thread runtime.
struct Target {
    addr: SocketAddr,
    tid: Option<u32>,
    served: Arc<AtomicU64>,
    /// How long each answer actually took after the request head was read, µs
    /// (the "truth" for accuracy: the timer rounds the nominal delay up).
    delays: Arc<std::sync::Mutex<Histogram<u64>>>,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Target {
    fn start(delay: Duration) -> Result<Target, String> {
        let (tx, rx) = std::sync::mpsc::channel::<Result<(SocketAddr, Option<u32>), String>>();
        let stop = CancellationToken::new();
        let served = Arc::new(AtomicU64::new(0));
        let delays = Arc::new(std::sync::Mutex::new(new_histogram()?));
        let thread = std::thread::Builder::new()
            .name("bench-target".into())
            .spawn({
                let stop = stop.clone();
                let served = served.clone();
                let delays = delays.clone();
                move || target_thread(delay, stop, Served { served, delays }, tx)
            })
            .map_err(|e| format!("cannot start the target thread: {e}"))?;
        let (addr, tid) = rx
            .recv()
            .map_err(|_| "the target thread ended before it was listening".to_string())??;
        Ok(Target {
            addr,
            tid,
            served,
            delays,
            stop,
            thread,
        })
    }

    /// A copy of the answer-delay histogram so far.
    fn delays(&self) -> Histogram<u64> {
        match self.delays.lock() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// CPU time of the target thread in µs, if the kernel tells.
    fn cpu_us(&self) -> Option<u64> {
        let text =
            std::fs::read_to_string(format!("/proc/self/task/{}/schedstat", self.tid?)).ok()?;
        let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
        Some(ns / 1000)
    }

    fn stop(self) {
        self.stop.cancel();
        let _ = self.thread.join();
    }
}

/// What the target counts: answers, and how long each took.
#[derive(Clone)]
struct Served {
    served: Arc<AtomicU64>,
    delays: Arc<std::sync::Mutex<Histogram<u64>>>,
}

/// A histogram of µs from 1 µs to an hour, 3 significant digits.
fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

fn target_thread(
    delay: Duration,
    stop: CancellationToken,
    served: Served,
    ready: std::sync::mpsc::Sender<Result<(SocketAddr, Option<u32>), String>>,
) {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the target's runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on 127.0.0.1: {e}")));
                return;
            }
        };
        match listener.local_addr() {
            Ok(addr) => {
                let _ = ready.send(Ok((addr, tid)));
            }
            Err(e) => {
                let _ = ready.send(Err(format!("cannot read the target's address: {e}")));
                return;
            }
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((sock, _)) => {
                        tokio::spawn(serve(sock, delay, served.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "bench target: accept failed");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
            }
        }
    });
}

/// Reads the request head, waits `delay`, answers 200 and closes.
async fn serve(mut sock: TcpStream, delay: Duration, served: Served) {
    let mut buf = [0u8; 4096];
    let mut len = 0;
    loop {
        match sock.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let from = len.saturating_sub(3);
                len += n;
                if buf[from..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
                if len == buf.len() {
                    return;
                }
            }
        }
    }
    let head_read = Instant::now();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if sock.write_all(RESPONSE).await.is_ok() {
        let took = head_read.elapsed().as_micros();
        if let Ok(mut h) = served.delays.lock() {
            let _ = h.record(u64::try_from(took).unwrap_or(u64::MAX).max(1));
        }
        let _ = sock.shutdown().await;
        served.served.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters and CPU at one instant.
struct Snapshot {
    at: Instant,
    wall: DateTime<Utc>,
    finished: u64,
    started: u64,
    skipped: u64,
    written: u64,
    batches: u64,
    store_errors: u64,
    write_us: u64,
    dropped: u64,
    served: u64,
    queued: u64,
    rss_kib: Option<u64>,
    delays: Histogram<u64>,
    process_cpu_us: Option<u64>,
    target_cpu_us: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl Snapshot {
    fn take(d: &Daemon, t: &Target) -> Snapshot {
        let process_cpu_us = process_cpu_us();
        let target_cpu_us = t.cpu_us();
        let s = &d.scheduler_stats;
        let h = &d.store_health;
        Snapshot {
            at: Instant::now(),
            wall: Utc::now(),
            finished: s.runs_finished.load(Ordering::Relaxed),
            started: s.runs_started.load(Ordering::Relaxed),
            skipped: s.skipped_ticks.load(Ordering::Relaxed),
            written: h.runs_written.load(Ordering::Relaxed),
            batches: h.batches.load(Ordering::Relaxed),
            store_errors: h.errors.load(Ordering::Relaxed),
            write_us: h.write_us.load(Ordering::Relaxed),
            dropped: d.queue.dropped(),
            served: t.served.load(Ordering::Relaxed),
            queued: d.queue.len() as u64,
            rss_kib: status_kib("VmRSS:"),
            delays: t.delays(),
            process_cpu_us,
            target_cpu_us,
            machine: machine_jiffies(),
        }
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// User + system CPU of the whole process (all threads, exited ones included), µs.
fn process_cpu_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    Some(stat_ticks(&stat)? * (1_000_000 / USER_HZ))
}

/// (busy, total) jiffies of the whole machine, from `/proc/stat`.
fn machine_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

/// Peak resident set size in KiB (`VmHWM`, what `ru_maxrss` reports).
fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// A KiB field of `/proc/self/status`.
fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU ticks of the Postgres backends connected to the bench database, by pid.
/// Empty when Postgres is not a process of this host's /proc.
async fn pg_backend_cpu(admin: &mut PgConnection, db: &str) -> HashMap<i32, u64> {
    let rows = sqlx::query("select pid from pg_stat_activity where datname = $1")
        .bind(db)
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    let mut out = HashMap::new();
    for row in rows {
        let Ok(pid) = row.try_get::<i32, _>(0) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.starts_with("postgres") {
            continue;
        }
        if let Some(t) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        {
            out.insert(pid, t);
        }
    }
    out
}

/// Postgres backend CPU over the window: (µs, backends counted, backends gone).
fn pg_delta(before: &HashMap<i32, u64>, after: &HashMap<i32, u64>) -> Option<(u64, usize, usize)> {
    if after.is_empty() {
        return None;
    }
    let ticks: u64 = after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    let gone = before.keys().filter(|p| !after.contains_key(p)).count();
    Some((ticks * (1_000_000 / USER_HZ), after.len(), gone))
}

/// What Postgres holds for the runs scheduled inside the window.
struct Stored {
    runs: i64,
    failed: i64,
    lateness: [Option<i32>; 3],
    total: [Option<i32>; 2],
    classes: Vec<(String, i64)>,
    all_rows: i64,
}

async fn query_window(url: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Stored, String> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect to the bench database to read the results: {e}"))?;
    let row = sqlx::query(
        "select count(*), count(*) filter (where not success),
                percentile_disc(0.5) within group (order by lateness_us),
                percentile_disc(0.99) within group (order by lateness_us),
                max(lateness_us),
                percentile_disc(0.5) within group (order by total_us),
                percentile_disc(0.99) within group (order by total_us)
         from runs where scheduled_at >= $1 and scheduled_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&mut conn)
    .await
    .map_err(|e| format!("reading lateness from runs failed: {e}"))?;
    let get = |i: usize| row.try_get::<Option<i32>, _>(i).ok().flatten();
    let mut stored = Stored {
        runs: row.try_get(0).unwrap_or(0),
        failed: row.try_get(1).unwrap_or(0),
        lateness: [get(2), get(3), get(4)],
        total: [get(5), get(6)],
        classes: Vec::new(),
        all_rows: 0,
    };
    let rows = sqlx::query(
        "select coalesce(e.name, 'unknown'), count(*) from runs r
         left join error_classes e on e.id = r.error_class
         where not r.success and r.scheduled_at >= $1 and r.scheduled_at < $2
         group by 1 order by 2 desc",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut conn)
    .await
    .map_err(|e| format!("reading error classes failed: {e}"))?;
    for r in rows {
        stored
            .classes
            .push((r.try_get(0).unwrap_or_default(), r.try_get(1).unwrap_or(0)));
    }
    stored.all_rows = sqlx::query_scalar("select count(*) from runs")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("counting runs failed: {e}"))?;
    let _ = conn.close().await;
    Ok(stored)
}

/// Counters after shutdown, to check that every run was persisted.
struct Totals {
    finished: u64,
    written: u64,
    dropped: u64,
    left: u64,
}

struct Inputs<'a> {
    args: &'a BenchArgs,
    timeout: Duration,
    rate: f64,
    settings: &'a Settings,
    s0: &'a Snapshot,
    s1: &'a Snapshot,
    pg: Option<(u64, usize, usize)>,
    stored: &'a Stored,
    totals: &'a Totals,
}

/// The figures of one `prober bench` run, as `--json` prints them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    pub probes: usize,
    pub rate: f64,
    pub window_s: f64,
    pub finished_per_s: f64,
    pub written_per_s: f64,
    /// Process CPU minus the target thread's, per run finished, µs.
    pub cpu_us_per_probe: Option<f64>,
    pub pg_cpu_us_per_probe: Option<f64>,
    pub machine_busy_pct: Option<f64>,
    /// Start lateness p50, p99, max, µs (from `runs`).
    pub lateness_us: [Option<i32>; 3],
    pub skipped: u64,
    /// Recorded total latency p50, p99, µs (from `runs`).
    pub total_us: [Option<i32>; 2],
    /// The target's actual answer delay p50, p99, µs, over the window.
    pub target_delay_us: [Option<u64>; 2],
    pub runs_stored: i64,
    pub runs_expected: f64,
    pub failed: i64,
    pub peak_rss_kib: Option<u64>,
    /// `VmRSS` at the end of the window (the peak may be the loading of the probes).
    #[serde(default)]
    pub rss_at_end_kib: Option<u64>,
    /// Results waiting in the queue at the end of the window.
    pub queued_at_end: u64,
    pub in_flight_at_end: u64,
    /// After shutdown: finished = written = rows, nothing dropped.
    pub all_persisted: bool,
}

impl Figures {
    fn from_inputs(i: &Inputs<'_>) -> Figures {
        let (s0, s1) = (i.s0, i.s1);
        let secs = s1.at.duration_since(s0.at).as_secs_f64().max(1e-9);
        let d = |a: u64, b: u64| b.saturating_sub(a);
        let finished = d(s0.finished, s1.finished);
        let per_run = |us: u64| (finished > 0).then(|| us as f64 / finished as f64);
        let process = s0
            .process_cpu_us
            .zip(s1.process_cpu_us)
            .map(|(a, b)| d(a, b));
        let target = s0.target_cpu_us.zip(s1.target_cpu_us).map(|(a, b)| d(a, b));
        let mut delays = s1.delays.clone();
        let delays_ok = delays.subtract(&s0.delays).is_ok() && !delays.is_empty();
        let t = i.totals;
        Figures {
            probes: i.args.probes,
            rate: i.rate,
            window_s: secs,
            finished_per_s: finished as f64 / secs,
            written_per_s: d(s0.written, s1.written) as f64 / secs,
            cpu_us_per_probe: process
                .zip(target)
                .and_then(|(p, t)| per_run(p.saturating_sub(t))),
            pg_cpu_us_per_probe: i.pg.and_then(|(us, _, _)| per_run(us)),
            machine_busy_pct: s0
                .machine
                .zip(s1.machine)
                .map(|((b0, t0), (b1, t1))| d(b0, b1) as f64 / d(t0, t1).max(1) as f64 * 100.0),
            lateness_us: i.stored.lateness,
            skipped: d(s0.skipped, s1.skipped),
            total_us: i.stored.total,
            target_delay_us: if delays_ok {
                [
                    Some(delays.value_at_quantile(0.5)),
                    Some(delays.value_at_quantile(0.99)),
                ]
            } else {
                [None, None]
            },
            runs_stored: i.stored.runs,
            runs_expected: i.rate * secs,
            failed: i.stored.failed,
            peak_rss_kib: peak_rss_kib(),
            rss_at_end_kib: s1.rss_kib,
            queued_at_end: s1.queued,
            in_flight_at_end: d(s1.finished, s1.started),
            all_persisted: t.finished == t.written
                && i64::try_from(t.written).is_ok_and(|w| w == i.stored.all_rows)
                && t.dropped == 0,
        }
    }
}

fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown", str::trim)
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    )
}

fn opt_us(v: Option<i32>) -> String {
    v.map_or_else(|| "n/a".into(), |us| format!("{us} µs"))
}

fn render(i: &Inputs<'_>) -> String {
    let (s0, s1) = (i.s0, i.s1);
    let secs = s1.at.duration_since(s0.at).as_secs_f64().max(1e-9);
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let finished = d(s0.finished, s1.finished);
    let written = d(s0.written, s1.written);
    let per_sec = |n: u64| n as f64 / secs;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };

    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
    row("probes defined", i.args.probes.to_string());
    row(
        "probe rate configured",
        format!(
            "{:.0} /s ({} probes every {}, timeout {})",
            i.rate,
            i.args.probes,
            yaml_duration(i.args.every),
            yaml_duration(i.timeout)
        ),
    );
    row(
        "measured window",
        format!("{secs:.2} s (after {} s warm-up)", i.args.warm_up),
    );
    row("runs finished /s", format!("{:.0}", per_sec(finished)));
    row("runs written /s", format!("{:.0}", per_sec(written)));

    let process = match (s0.process_cpu_us, s1.process_cpu_us) {
        (Some(a), Some(b)) => Some(d(a, b)),
        _ => None,
    };
    let target = match (s0.target_cpu_us, s1.target_cpu_us) {
        (Some(a), Some(b)) => Some(d(a, b)),
        _ => None,
    };
    let per_run = |us: u64| {
        if finished == 0 {
            "n/a (no runs)".to_string()
        } else {
            format!("{:.1}", us as f64 / finished as f64)
        }
    };
    match (process, target) {
        (Some(p), Some(t)) => {
            row(
                "CPU µs per probe (prober, target excluded)",
                per_run(p.saturating_sub(t)),
            );
            row(
                "  process CPU in window / target thread CPU",
                format!(
                    "{:.3} s ({:.0}% of one core) / {:.3} s",
                    p as f64 / 1e6,
                    p as f64 / 1e4 / secs,
                    t as f64 / 1e6
                ),
            );
        }
        (Some(p), None) => {
            row(
                "CPU µs per probe (prober + target: target NOT separated)",
                per_run(p),
            );
        }
        _ => row(
            "CPU µs per probe",
            "n/a (/proc/self/stat unreadable)".into(),
        ),
    }
    match i.pg {
        Some((us, n, gone)) => {
            let gone = if gone > 0 {
                format!(", {gone} backend(s) gone during the window not counted")
            } else {
                String::new()
            };
            row(
                "Postgres backend CPU µs per probe (separate processes)",
                format!("{} ({n} backends{gone})", per_run(us)),
            );
        }
        None => row(
            "Postgres backend CPU µs per probe",
            "n/a (backends not visible in /proc)".into(),
        ),
    }
    if let (Some((b0, t0)), Some((b1, t1))) = (s0.machine, s1.machine) {
        let busy = d(b0, b1) as f64 / d(t0, t1).max(1) as f64 * 100.0;
        row("machine CPU busy (all processes)", format!("{busy:.0}%"));
    }
    let [p50, p99, max] = i.stored.lateness;
    row(
        "start lateness p50 / p99 / max",
        format!("{} / {} / {}", opt_us(p50), opt_us(p99), opt_us(max)),
    );
    row("skipped ticks", d(s0.skipped, s1.skipped).to_string());
    row(
        "runs stored for the window / expected",
        format!(
            "{} / {:.0} ({} failed{})",
            i.stored.runs,
            i.rate * secs,
            i.stored.failed,
            if i.stored.classes.is_empty() {
                String::new()
            } else {
                let c: Vec<String> = (i.stored.classes.iter())
                    .map(|(k, n)| format!("{k}: {n}"))
                    .collect();
                format!(": {}", c.join(", "))
            }
        ),
    );
    let [t50, t99] = i.stored.total;
    row(
        "probe total latency p50 / p99 (as recorded)",
        format!("{} / {}", opt_us(t50), opt_us(t99)),
    );
    row(
        "target requests served /s",
        format!("{:.0}", per_sec(d(s0.served, s1.served))),
    );
    row(
        "peak RSS",
        peak_rss_kib().map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
    );
    let batches = d(s0.batches, s1.batches);
    row(
        "store batches / errors (window)",
        format!("{batches} / {}", d(s0.store_errors, s1.store_errors)),
    );
    if written > 0 && batches > 0 {
        row(
            "store write time per batch / per run (wall)",
            format!(
                "{:.1} ms / {:.1} µs",
                d(s0.write_us, s1.write_us) as f64 / batches as f64 / 1000.0,
                d(s0.write_us, s1.write_us) as f64 / written as f64
            ),
        );
    }
    let t = i.totals;
    row(
        "all runs persisted (whole bench)",
        format!(
            "finished {}, written {}, rows {}, dropped {}, left in queue {} -> {}",
            t.finished,
            t.written,
            i.stored.all_rows,
            t.dropped.max(d(s0.dropped, s1.dropped)),
            t.left,
            if t.finished == t.written
                && i64::try_from(t.written).is_ok_and(|w| w == i.stored.all_rows)
                && t.dropped == 0
            {
                "yes"
            } else {
                "NO"
            }
        ),
    );
    row(
        "runs started - finished at window end",
        d(s1.finished, s1.started).to_string(),
    );

    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!("machine: {}\n", machine_line()));
    out.push_str(&format!(
        "build: {profile} (prober {}), database {}, limits: {} in flight, {} per host, queue {}\n\n",
        crate::VERSION,
        crate::store::redact_url(&i.settings.database_url),
        i.settings.max_concurrency,
        i.settings.max_per_host,
        i.settings.queue_capacity
    ));
    out.push_str(&format!("| {:width$} | value |\n", "metric"));
    out.push_str(&format!("|{}|-------|\n", "-".repeat(width + 2)));
    for (k, v) in rows {
        out.push_str(&format!("| {k:width$} | {v} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_reads_utime_and_stime_past_a_name_with_spaces() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194304 98 0 0 0 36 1 0 0 20 0 1 0 142689";
        assert_eq!(stat_ticks(line), Some(37));
    }

    #[test]
    fn durations_are_written_as_the_probe_format_accepts() {
        assert_eq!(yaml_duration(Duration::from_secs(10)), "10s");
        assert_eq!(yaml_duration(Duration::from_millis(1500)), "1500ms");
        assert!(parse_every("500ms").is_err());
        assert_eq!(parse_every("2s").unwrap(), Duration::from_secs(2));
    }

    #[test]
    fn only_a_local_scratch_database_is_dropped() {
        assert_eq!(
            check_database_url(DEFAULT_BENCH_DATABASE_URL).unwrap(),
            "prober_bench"
        );
        assert!(check_database_url("postgres://postgres@127.0.0.1:5432/prober").is_err());
        assert!(check_database_url("postgres://postgres@db.example.com/prober_bench").is_err());
    }

    #[test]
    fn the_generated_probes_load() {
        let probes = build_probes(
            3,
            Duration::from_secs(1),
            Duration::from_millis(500),
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )
        .unwrap();
        assert_eq!(probes.len(), 3);
        assert_eq!(probes[2].name, "bench-00003");
        let many = build_probes(
            PROBES_PER_TEXT + 2,
            Duration::from_secs(1),
            Duration::from_millis(500),
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )
        .unwrap();
        assert_eq!(many.len(), PROBES_PER_TEXT + 2);
        assert_eq!(
            many[PROBES_PER_TEXT].name,
            format!("bench-{:05}", PROBES_PER_TEXT + 1)
        );
    }
}
