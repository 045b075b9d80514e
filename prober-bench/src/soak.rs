//! `--soak`: the real daemon against the loopback target for `--seconds`
//! (an hour or more), one row every `--soak-every` seconds: RSS, open file
//! descriptors, queue depth, runs finished and written per second, start
//! lateness p99 (read back from the runs stored in that interval) and the
//! mean write time per batch. It ends with the RSS growth after warm-up
//! (flat means within 10 %) and whether every run was persisted.

use std::fmt::Write as _;
use std::time::Duration;

use prober::daemon::Daemon;

use crate::args::BenchArgs;
use crate::db::{check_database_url, query_window, recreate_database};
use crate::procfs::machine_line;
use crate::single::{spool_dir, start_daemon, Snapshot, Totals};
use crate::target::Target;

/// RSS growth after warm-up still called flat.
const FLAT: f64 = 0.10;

/// One row of the soak table.
struct Row {
    elapsed_s: u64,
    rss_mib: f64,
    fds: usize,
    queue: u64,
    finished_per_s: f64,
    written_per_s: f64,
    lateness_p99_ms: Option<f64>,
    write_ms_per_batch: Option<f64>,
}

pub async fn run(args: &BenchArgs) -> Result<String, String> {
    if args.probes == 0 || args.seconds == 0 || args.soak_every == 0 {
        return Err("--probes, --seconds and --soak-every must be at least 1".into());
    }
    let db = check_database_url(&args.database_url)?;
    args.wire().check(args.otlp || args.otlp_metrics)?;
    let timeout = (args.every / 2).min(Duration::from_secs(5));
    let target = Target::start_for(Duration::from_millis(args.target_delay_ms), &args.wire())?;
    let result = soak(args, &db, &target, timeout).await;
    target.stop();
    result
}

async fn soak(
    args: &BenchArgs,
    db: &str,
    target: &Target,
    timeout: Duration,
) -> Result<String, String> {
    drop(recreate_database(&args.database_url, db).await?);
    let (daemon, _, _) = start_daemon(args, target, timeout).await?;

    let start = Snapshot::take(&daemon, target);
    let mut prev = Snapshot::take(&daemon, target);
    let mut rows = Vec::new();
    let every = Duration::from_secs(args.soak_every);
    while rows.len() as u64 * args.soak_every < args.seconds {
        tokio::time::sleep(every).await;
        let now = Snapshot::take(&daemon, target);
        let row = row_of(args, &daemon, &start, &prev, &now).await;
        eprintln!(
            "bench: soak: {} s, RSS {:.1} MiB, {} fds, queue {}",
            row.elapsed_s, row.rss_mib, row.fds, row.queue
        );
        rows.push(row);
        prev = now;
    }
    let spool_bytes = dir_bytes(&spool_dir());
    let totals = Totals::after_shutdown(daemon).await;
    let _ = std::fs::remove_dir_all(spool_dir());
    if args.outage {
        return Ok(render(args, &rows, &totals, None, spool_bytes));
    }
    let stored = query_window(
        &args.database_url,
        start.wall - chrono::TimeDelta::hours(1),
        chrono::Utc::now(),
    )
    .await?;
    Ok(render(
        args,
        &rows,
        &totals,
        Some(stored.all_rows),
        spool_bytes,
    ))
}

/// Bytes of the files in `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

async fn row_of(
    args: &BenchArgs,
    daemon: &Daemon,
    start: &Snapshot,
    prev: &Snapshot,
    now: &Snapshot,
) -> Row {
    let secs = now.at.duration_since(prev.at).as_secs_f64().max(1e-9);
    let batches = now.batches.saturating_sub(prev.batches);
    let lateness = query_window(&args.database_url, prev.wall, now.wall)
        .await
        .ok()
        .and_then(|s| s.lateness[1])
        .map(|us| f64::from(us) / 1_000.0);
    Row {
        elapsed_s: now.at.duration_since(start.at).as_secs(),
        rss_mib: now.rss_kib.unwrap_or(0) as f64 / 1_024.0,
        fds: std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count),
        queue: daemon.queue.depth() as u64,
        finished_per_s: now.finished.saturating_sub(prev.finished) as f64 / secs,
        written_per_s: now.written.saturating_sub(prev.written) as f64 / secs,
        lateness_p99_ms: lateness,
        write_ms_per_batch: (batches > 0)
            .then(|| now.write_us.saturating_sub(prev.write_us) as f64 / batches as f64 / 1_000.0),
    }
}

fn render(
    args: &BenchArgs,
    rows: &[Row],
    totals: &Totals,
    stored_rows: Option<i64>,
    spool_bytes: u64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", machine_line());
    let _ = writeln!(
        out,
        "prober {} soak{}: {} probes every {} ms, {} s after a {} s warm-up, a row every {} s\n",
        prober::VERSION,
        if args.outage {
            " with Postgres unreachable throughout (--outage)"
        } else {
            ""
        },
        args.probes,
        args.every.as_millis(),
        args.seconds,
        args.warm_up,
        args.soak_every
    );
    let _ = writeln!(out, "| elapsed s | RSS MiB | open fds | queue | finished/s | written/s | lateness p99 ms | write ms/batch |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {:.0} | {:.0} | {} | {} |",
            r.elapsed_s,
            r.rss_mib,
            r.fds,
            r.queue,
            r.finished_per_s,
            r.written_per_s,
            opt(r.lateness_p99_ms),
            opt(r.write_ms_per_batch)
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let growth = (last.rss_mib - first.rss_mib) / first.rss_mib.max(1e-9);
        let _ = writeln!(
            out,
            "\nRSS {:.1} MiB at the first row, {:.1} MiB at the last ({:+.1} %): {}; peak {:.1} MiB",
            first.rss_mib,
            last.rss_mib,
            100.0 * growth,
            if args.outage {
                "grows with the queue (--outage)"
            } else if growth.abs() <= FLAT {
                "flat"
            } else {
                "NOT flat"
            },
            rows.iter().map(|r| r.rss_mib).fold(0.0, f64::max)
        );
    }
    let Some(stored_rows) = stored_rows else {
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            let queued = last.queue.saturating_sub(first.queue).max(1) as f64;
            let _ = writeln!(
                out,
                "outage: {} runs queued at the end, {} dropped; memory per queued run {:.0} bytes (RSS growth from the first row to the last over the runs queued in between); spool {:.1} MiB on disk, {:.0} bytes per queued run",
                last.queue,
                totals.dropped,
                (last.rss_mib - first.rss_mib) * 1_048_576.0 / queued,
                spool_bytes as f64 / 1_048_576.0,
                spool_bytes as f64 / last.queue.max(1) as f64
            );
        }
        return out;
    };
    let _ = writeln!(
        out,
        "runs finished {}, written {}, rows stored {}, dropped {}, left in the queue {}: {}",
        totals.finished,
        totals.written,
        stored_rows,
        totals.dropped,
        totals.left,
        if totals.all_persisted(stored_rows) {
            "every run persisted once"
        } else {
            "NOT every run persisted once"
        }
    );
    out
}
