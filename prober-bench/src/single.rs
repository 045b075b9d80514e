//! One measurement: the real daemon against the loopback target for a window,
//! every run persisted to the scratch database; the figures as a table or JSON.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use prober::config::settings::{Settings, SpoolSettings};
use prober::daemon::{http_executor, Daemon};

use sqlx::Connection;

use crate::args::BenchArgs;
use crate::db::Stored;
use crate::db::{check_database_url, pg_backend_cpu, pg_delta, query_window, recreate_database};
use crate::figures::Figures;
use crate::probes::build_probes_with;
use crate::procfs::{
    machine_jiffies, postgres_cluster_cpu_us, process_cpu_us, status_kib, steal_jiffies,
};
use crate::target::Target;

/// Runs the benchmark; returns the text to print.
pub async fn run(args: &BenchArgs) -> Result<String, String> {
    if args.probes == 0 || args.seconds == 0 {
        return Err("--probes and --seconds must be at least 1".into());
    }
    args.wire().check(args.otlp || args.otlp_metrics)?;
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

    let target = Target::start_for(delay, &args.wire())?;
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
    let store =
        prober::store::Store::new(&args.database_url, "local").map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    // Measure the steady state of a daemon that has run for more than a
    // minute: its runs wait for the rollup instead of upserting hour and day
    // rows (a fresh daemon does that only until its first whole minute).
    store
        .start_rollups(chrono::Utc::now() - chrono::TimeDelta::hours(1))
        .await
        .map_err(|e| e.to_string())?;
    drop(store);

    let (daemon, settings, rate) = start_daemon(args, target, timeout).await?;
    let pg0 = pg_backend_cpu(&mut admin, db).await;
    let cluster0 = postgres_cluster_cpu_us();
    let s0 = Snapshot::take(&daemon, target);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let s1 = Snapshot::take(&daemon, target);
    let pg1 = pg_backend_cpu(&mut admin, db).await;
    let cluster1 = postgres_cluster_cpu_us();

    let otlp = daemon.core.traces.as_ref().map(|t| t.stats());
    let otlp_metrics = daemon.core.run_metrics.as_ref().map(|m| m.stats());
    let totals = Totals::after_shutdown(daemon).await;
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
        pg_cluster_us: cluster0.zip(cluster1).map(|(a, b)| b.saturating_sub(a)),
        stored: &stored,
        totals: &totals,
    };
    if args.json {
        let figures = Figures::from_inputs(&inputs);
        return serde_json::to_string(&figures)
            .map(|j| j + "\n")
            .map_err(|e| format!("cannot encode the figures: {e}"));
    }
    let mut out = crate::report::render(&inputs);
    if let Some(s) = otlp {
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        out.push_str(&format!(
            "OTLP export (whole run, warm-up included): {} spans exported, {} dropped, {} runs dropped; the sink took {:.1} MB\n",
            n(&s.exported_spans),
            n(&s.dropped_spans),
            n(&s.dropped_runs),
            target.otlp_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6
        ));
    }
    if let Some(s) = otlp_metrics {
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        out.push_str(&format!(
            "OTLP metrics (whole run, every 5 s): {} exports sent, {} failed; the sink took {:.1} MB in all\n",
            n(&s.exports),
            n(&s.failed_exports),
            target.otlp_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6
        ));
    }
    Ok(out)
}

/// Starts the daemon with `--probes` probes against `target` and waits
/// `--warm-up`; returns it with its settings and its runs per second.
pub async fn start_daemon(
    args: &BenchArgs,
    target: &Target,
    timeout: Duration,
) -> Result<(Daemon, Settings, f64), String> {
    let wire = args.wire();
    let probes = build_probes_with(
        args.probes,
        args.every,
        timeout,
        &wire.url(target.addr),
        &wire.http_lines(target.ca_file.as_deref()),
    )?;
    let rate = args.probes as f64 / args.every.as_secs_f64();
    let mut settings = settings(args, rate);
    if args.otlp || args.otlp_metrics {
        settings.otel = prober::config::settings::OtelSettings {
            endpoint: Some(format!("http://{}", target.addr)),
            protocol: prober::config::settings::OtlpProtocol::Http,
            traces: args.otlp,
            metrics: args.otlp_metrics,
            metrics_interval: Duration::from_secs(5),
            ..Default::default()
        };
    }
    let exec = http_executor().map_err(|e| format!("cannot build the probe runner: {e}"))?;
    let daemon = Daemon::start(&settings, probes, exec)
        .await
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    tokio::time::sleep(Duration::from_secs(args.warm_up)).await;
    Ok((daemon, settings, rate))
}

/// A Postgres URL nothing answers (port 1 on loopback): `--outage`.
pub const OUTAGE_URL: &str = "postgres://postgres@127.0.0.1:1/prober_bench_outage";

/// The bench daemon's spool: this process's own, under the temporary directory.
pub fn spool_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("prober-bench-spool-{}", std::process::id()))
}

/// The daemon's settings: the defaults, on the scratch database, on a free
/// port, with a queue large enough for every run of the bench (nothing dropped).
fn settings(args: &BenchArgs, rate: f64) -> Settings {
    let expected_runs = rate * (args.warm_up as f64 + args.seconds as f64 + 5.0);
    Settings {
        database_url: if args.outage {
            OUTAGE_URL.to_string()
        } else {
            args.database_url.clone()
        },
        // Spooled, as `prober run` does by default.
        spool: SpoolSettings {
            dir: Some(spool_dir()),
            ..SpoolSettings::default()
        },
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        queue_capacity: Settings::default()
            .queue_capacity
            .max(expected_runs.ceil() as usize),
        max_per_host: args
            .max_per_host
            .unwrap_or(Settings::default().max_per_host),
        ..Settings::default()
    }
}

/// Counters and CPU at one instant.
pub struct Snapshot {
    pub at: Instant,
    pub wall: DateTime<Utc>,
    pub finished: u64,
    pub started: u64,
    pub skipped: u64,
    pub written: u64,
    pub batches: u64,
    pub store_errors: u64,
    pub write_us: u64,
    pub dropped: u64,
    pub served: u64,
    /// Connections the target accepted, answers over HTTP/2 (hyper's target only).
    pub connections: u64,
    pub served_h2: u64,
    pub queued: u64,
    pub rss_kib: Option<u64>,
    pub delays: Histogram<u64>,
    pub process_cpu_us: Option<u64>,
    pub target_cpu_us: Option<u64>,
    pub machine: Option<(u64, u64)>,
    pub steal: Option<u64>,
}

impl Snapshot {
    pub fn take(d: &Daemon, t: &Target) -> Snapshot {
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
            connections: t.connections.load(Ordering::Relaxed),
            served_h2: t.served_h2.load(Ordering::Relaxed),
            queued: d.queue.len() as u64,
            rss_kib: status_kib("VmRSS:"),
            delays: t.delays(),
            process_cpu_us,
            target_cpu_us,
            machine: machine_jiffies(),
            steal: steal_jiffies(),
        }
    }
}

/// Counters after shutdown, to check that every run was persisted.
pub struct Totals {
    pub finished: u64,
    pub written: u64,
    pub dropped: u64,
    pub left: u64,
}

impl Totals {
    /// Shuts the daemon down (runs in flight finish, the queue is flushed) and counts.
    pub async fn after_shutdown(daemon: Daemon) -> Totals {
        let queue = daemon.queue.clone();
        let health = daemon.store_health.clone();
        let stats = daemon.scheduler_stats.clone();
        daemon.shutdown().await;
        Totals {
            finished: stats.runs_finished.load(Ordering::Relaxed),
            written: health.runs_written.load(Ordering::Relaxed),
            dropped: queue.dropped(),
            left: queue.len() as u64,
        }
    }

    /// Finished = written = rows in `runs`, nothing dropped.
    pub fn all_persisted(&self, rows: i64) -> bool {
        self.finished == self.written
            && i64::try_from(self.written).is_ok_and(|w| w == rows)
            && self.dropped == 0
    }
}

/// Everything one measurement produced, for the table or the JSON.
pub struct Inputs<'a> {
    pub args: &'a BenchArgs,
    pub timeout: Duration,
    pub rate: f64,
    pub settings: &'a Settings,
    pub s0: &'a Snapshot,
    pub s1: &'a Snapshot,
    /// Postgres backend CPU over the window: (µs, backends counted, backends gone).
    pub pg: Option<(u64, usize, usize)>,
    /// CPU of every Postgres process over the window, exited ones included, µs.
    pub pg_cluster_us: Option<u64>,
    pub stored: &'a Stored,
    pub totals: &'a Totals,
}

impl Inputs<'_> {
    /// The window's length in seconds (never zero).
    pub fn secs(&self) -> f64 {
        self.s1
            .at
            .duration_since(self.s0.at)
            .as_secs_f64()
            .max(1e-9)
    }

    /// A counter's growth over the window.
    pub fn delta(&self, counter: impl Fn(&Snapshot) -> u64) -> u64 {
        counter(self.s1).saturating_sub(counter(self.s0))
    }

    /// Process CPU over the window, µs, and the target thread's share of it.
    pub fn cpu_us(&self) -> (Option<u64>, Option<u64>) {
        let d = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
        (
            d(self.s0.process_cpu_us, self.s1.process_cpu_us),
            d(self.s0.target_cpu_us, self.s1.target_cpu_us),
        )
    }

    /// Percent of the machine's CPU time stolen by the hypervisor over the window.
    pub fn machine_steal_pct(&self) -> Option<f64> {
        let (s0, s1) = self.s0.steal.zip(self.s1.steal)?;
        let ((_, t0), (_, t1)) = self.s0.machine.zip(self.s1.machine)?;
        Some(s1.saturating_sub(s0) as f64 / t1.saturating_sub(t0).max(1) as f64 * 100.0)
    }

    /// Percent of the whole machine busy over the window.
    pub fn machine_busy_pct(&self) -> Option<f64> {
        self.s0
            .machine
            .zip(self.s1.machine)
            .map(|((b0, t0), (b1, t1))| {
                b1.saturating_sub(b0) as f64 / t1.saturating_sub(t0).max(1) as f64 * 100.0
            })
    }
}
