//! The table one measurement prints (without `--json`).

use crate::probes::yaml_duration;
use crate::procfs::{machine_line, peak_rss_kib};
use crate::single::Inputs;

/// The table's rows: figure, value.
#[derive(Default)]
struct Rows(Vec<(String, String)>);

impl Rows {
    fn row(&mut self, figure: &str, value: String) {
        self.0.push((figure.to_string(), value));
    }
}

fn opt_us(v: Option<i32>) -> String {
    v.map_or_else(|| "n/a".into(), |us| format!("{us} µs"))
}

/// A µs figure divided by the runs finished in the window, or why not.
fn per_run(i: &Inputs<'_>, us: u64) -> String {
    let finished = i.delta(|s| s.finished);
    if finished == 0 {
        "n/a (no runs)".to_string()
    } else {
        format!("{:.1}", us as f64 / finished as f64)
    }
}

/// The machine, the build and the table of one measurement.
pub fn render(i: &Inputs<'_>) -> String {
    let mut rows = Rows::default();
    rate_rows(i, &mut rows);
    cpu_rows(i, &mut rows);
    latency_rows(i, &mut rows);
    store_rows(i, &mut rows);
    table(i, rows)
}

fn rate_rows(i: &Inputs<'_>, rows: &mut Rows) {
    let secs = i.secs();
    rows.row("probes defined", i.args.probes.to_string());
    rows.row(
        "probe rate configured",
        format!(
            "{:.0} /s ({} probes every {}, timeout {})",
            i.rate,
            i.args.probes,
            yaml_duration(i.args.every),
            yaml_duration(i.timeout)
        ),
    );
    rows.row("protocol (probes → target)", i.args.wire().describe());
    rows.row(
        "measured window",
        format!("{secs:.2} s (after {} s warm-up)", i.args.warm_up),
    );
    let per_sec = |n: u64| format!("{:.0}", n as f64 / secs);
    rows.row("runs finished /s", per_sec(i.delta(|s| s.finished)));
    rows.row("runs written /s", per_sec(i.delta(|s| s.written)));
}

fn cpu_rows(i: &Inputs<'_>, rows: &mut Rows) {
    let secs = i.secs();
    match i.cpu_us() {
        (Some(p), Some(t)) => {
            rows.row(
                "CPU µs per probe (prober, target excluded)",
                per_run(i, p.saturating_sub(t)),
            );
            rows.row(
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
            rows.row(
                "CPU µs per probe (prober + target: target NOT separated)",
                per_run(i, p),
            );
        }
        _ => rows.row(
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
            rows.row(
                "Postgres backend CPU µs per probe (separate processes)",
                format!("{} ({n} backends{gone})", per_run(i, us)),
            );
        }
        None => rows.row(
            "Postgres backend CPU µs per probe",
            "n/a (backends not visible in /proc)".into(),
        ),
    }
    if let Some(us) = i.pg_cluster_us {
        rows.row(
            "Postgres CPU µs per probe, every process (gone backends, WAL, checkpoints)",
            per_run(i, us),
        );
    }
    if let Some(busy) = i.machine_busy_pct() {
        rows.row("machine CPU busy (all processes)", format!("{busy:.0}%"));
    }
    if let Some(steal) = i.machine_steal_pct() {
        rows.row(
            "machine CPU stolen by the hypervisor (steal; counted in busy)",
            format!("{steal:.1}%"),
        );
    }
}

fn latency_rows(i: &Inputs<'_>, rows: &mut Rows) {
    let [p50, p99, max] = i.stored.lateness;
    rows.row(
        "start lateness p50 / p99 / max",
        format!("{} / {} / {}", opt_us(p50), opt_us(p99), opt_us(max)),
    );
    rows.row("skipped ticks", i.delta(|s| s.skipped).to_string());
    let classes = if i.stored.classes.is_empty() {
        String::new()
    } else {
        let c: Vec<String> = (i.stored.classes.iter())
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        format!(": {}", c.join(", "))
    };
    rows.row(
        "runs stored for the window / expected",
        format!(
            "{} / {:.0} ({} failed{classes})",
            i.stored.runs,
            i.rate * i.secs(),
            i.stored.failed,
        ),
    );
    let [t50, t99] = i.stored.total;
    rows.row(
        "probe total latency p50 / p99 (as recorded)",
        format!("{} / {}", opt_us(t50), opt_us(t99)),
    );
    rows.row(
        "target requests served /s",
        format!("{:.0}", i.delta(|s| s.served) as f64 / i.secs()),
    );
    if !i.args.wire().hand_written() {
        rows.row(
            "target connections accepted /s; answers over HTTP/2",
            format!(
                "{:.0}; {} of {}",
                i.delta(|s| s.connections) as f64 / i.secs(),
                i.delta(|s| s.served_h2),
                i.delta(|s| s.served)
            ),
        );
    }
    rows.row(
        "peak RSS",
        peak_rss_kib().map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
    );
}

fn store_rows(i: &Inputs<'_>, rows: &mut Rows) {
    let written = i.delta(|s| s.written);
    let batches = i.delta(|s| s.batches);
    let write_us = i.delta(|s| s.write_us);
    rows.row(
        "store batches / errors (window)",
        format!("{batches} / {}", i.delta(|s| s.store_errors)),
    );
    if written > 0 && batches > 0 {
        rows.row(
            "store write time per batch / per run (wall)",
            format!(
                "{:.1} ms / {:.1} µs",
                write_us as f64 / batches as f64 / 1000.0,
                write_us as f64 / written as f64
            ),
        );
    }
    let t = i.totals;
    rows.row(
        "all runs persisted (whole bench)",
        format!(
            "finished {}, written {}, rows {}, dropped {}, left in queue {} -> {}",
            t.finished,
            t.written,
            i.stored.all_rows,
            t.dropped.max(i.delta(|s| s.dropped)),
            t.left,
            if t.all_persisted(i.stored.all_rows) {
                "yes"
            } else {
                "NO"
            }
        ),
    );
    rows.row(
        "runs started - finished at window end",
        i.s1.started.saturating_sub(i.s1.finished).to_string(),
    );
}

/// The machine and build lines, then the rows as a Markdown table.
fn table(i: &Inputs<'_>, rows: Rows) -> String {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let width = (rows.0.iter())
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!("machine: {}\n", machine_line()));
    out.push_str(&format!(
        "build: {profile} (prober {}), database {}, limits: {} in flight, {} per host, queue {}\n\n",
        prober::VERSION,
        prober::store::redact_url(&i.settings.database_url),
        i.settings.max_concurrency,
        i.settings.max_per_host,
        i.settings.queue_capacity
    ));
    out.push_str(&format!("| {:width$} | value |\n", "metric"));
    out.push_str(&format!("|{}|-------|\n", "-".repeat(width + 2)));
    for (k, v) in rows.0 {
        out.push_str(&format!("| {k:width$} | {v} |\n"));
    }
    out
}
