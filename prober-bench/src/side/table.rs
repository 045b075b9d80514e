//! The side-by-side table: one row per figure, prober and blackbox_exporter
//! in columns, with the ratio, the budget and the verdict.

use std::fmt::Write as _;

use super::{sustained, Results, ACCURACY_DELAY_MS};
use crate::args::BenchArgs;
use crate::procfs::machine_line;

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.0} µs"))
}

fn ms_i(v: Option<i32>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{:.2}", f64::from(v) / 1000.0))
}

fn ms_u(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{:.2}", v as f64 / 1000.0))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.0} %"))
}

fn ratio(num: Option<f64>, den: Option<f64>) -> String {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => format!("{:.1}×", n / d),
        _ => "n/a".into(),
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "n/a",
    }
}

/// Reported minus nominal, ms, signed.
fn error_ms(v: Option<f64>) -> Option<f64> {
    v.map(|us| us / 1000.0 - ACCURACY_DELAY_MS as f64)
}

fn signed(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:+.2} ms"))
}

struct Table(String);

impl Table {
    fn row(&mut self, cells: [&str; 6]) {
        let _ = writeln!(self.0, "| {} |", cells.join(" | "));
    }
}

/// The machine, the build, and one row per figure of the phases that ran.
pub fn render(args: &BenchArgs, r: &Results) -> String {
    let mut t = Table(String::new());
    let _ = writeln!(t.0, "machine: {}", machine_line());
    let _ = writeln!(
        t.0,
        "build: {} (prober {}); windows {} s after {} s warm-up; blackbox_exporter: {}\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        prober::VERSION,
        args.seconds,
        args.warm_up,
        args.side.blackbox_bin.display()
    );
    t.row([
        "figure",
        "prober",
        "blackbox_exporter",
        "ratio",
        "budget",
        "verdict",
    ]);
    t.row(["---", "---", "---", "---", "---", "---"]);
    cpu(&mut t, r);
    ramp(&mut t, r);
    accuracy(&mut t, r);
    memory(&mut t, r);
    history(&mut t, r);
    t.0
}

/// A. CPU per probe, rate, lateness, memory and machine load at `--rate`.
fn cpu(t: &mut Table, r: &Results) {
    if let Some((p, b)) = &r.cpu {
        let rate = format!("{:.0}/s", p.rate);
        let with_pg = p
            .cpu_us_per_probe
            .zip(p.pg_cpu_us_per_probe)
            .map(|(a, b)| a + b);
        let ratio_v = b
            .cpu_us_per_probe
            .zip(p.cpu_us_per_probe)
            .map(|(b, p)| b / p);
        t.row([
            &format!("**A. CPU per probe at {rate}** (prober process, target excluded / blackbox_exporter process)"),
            &us(p.cpu_us_per_probe),
            &us(b.cpu_us_per_probe),
            &ratio(b.cpu_us_per_probe, p.cpu_us_per_probe),
            "≥ 10×",
            verdict(ratio_v.map(|x| x >= 10.0)),
        ]);
        t.row([
            "A. CPU per probe, prober + its Postgres backends",
            &us(with_pg),
            &us(b.cpu_us_per_probe),
            &ratio(b.cpu_us_per_probe, with_pg),
            "",
            "",
        ]);
        t.row([
            "A. probes done /s (prober: runs finished / written)",
            &format!("{:.0} / {:.0}", p.finished_per_s, p.written_per_s),
            &format!("{:.0} ({} failed)", b.probes_per_s, b.failed),
            "",
            "",
            "",
        ]);
        t.row([
            "A. lateness p50 / p99 / max (ms), skipped ticks",
            &format!(
                "{} / {} / {}, {} skipped",
                ms_i(p.lateness_us[0]),
                ms_i(p.lateness_us[1]),
                ms_i(p.lateness_us[2]),
                p.skipped
            ),
            &format!("(driven from outside; {} not sent)", b.driver_skipped),
            "",
            "",
            "",
        ]);
        t.row([
            "A. peak RSS",
            &mib(p.peak_rss_kib),
            &mib(b.peak_rss_kib),
            "",
            "",
            "",
        ]);
        t.row([
            "A. machine busy (all processes)",
            &pct(p.machine_busy_pct),
            &pct(b.machine_busy_pct),
            "",
            "",
            "",
        ]);
    }
}

/// B. The maximum sustained rate and every step of the ramp.
fn ramp(t: &mut Table, r: &Results) {
    if !r.ramp.is_empty() {
        let steps: Vec<String> = (r.ramp.iter())
            .map(|(rate, f)| {
                format!(
                    "{rate}: {:.0}/{:.0} ({}, {} queued, p99 {} ms, busy {})",
                    f.finished_per_s,
                    f.written_per_s,
                    if sustained(f) { "ok" } else { "NOT sustained" },
                    f.queued_at_end,
                    ms_i(f.lateness_us[1]),
                    pct(f.machine_busy_pct)
                )
            })
            .collect();
        t.row([
            "**B. maximum sustained rate, every run persisted** (windows too short to hold an hour/day rollup: see \"The rollup's cost\" in BENCHMARKS.md)",
            &r.max
                .map_or("below the first step".into(), |m| format!("{m}/s")),
            "not measured (stores nothing)",
            "",
            "≥ 5,000/s",
            verdict(Some(r.max.is_some_and(|m| m >= 5000))),
        ]);
        t.row([
            "B. steps: rate: finished/written per s",
            &steps.join("; "),
            "",
            "",
            "",
            "",
        ]);
    }
}

/// C. Accuracy against the 50 ms target, and lateness at half the maximum.
fn accuracy(t: &mut Table, r: &Results) {
    if let Some((half, p, b)) = &r.accuracy {
        let p99p = p.total_us[1].map(f64::from);
        let p99b = b.duration_us[1].map(|v| v as f64);
        t.row([
            &format!("**C. accuracy at {half}/s, target answers after {ACCURACY_DELAY_MS} ms**: reported p50 / p99 (ms)"),
            &format!("{} / {}", ms_i(p.total_us[0]), ms_i(p.total_us[1])),
            &format!("{} / {}", ms_u(b.duration_us[0]), ms_u(b.duration_us[1])),
            "",
            "",
            "",
        ]);
        t.row([
            "C. error at p50 / p99 against 50 ms",
            &format!(
                "{} / {}",
                signed(error_ms(p.total_us[0].map(f64::from))),
                signed(error_ms(p99p))
            ),
            &format!(
                "{} / {}",
                signed(error_ms(b.duration_us[0].map(|v| v as f64))),
                signed(error_ms(p99b))
            ),
            "",
            "within 1 ms at p99",
            verdict(error_ms(p99p).map(|e| e.abs() <= 1.0)),
        ]);
        t.row([
            "C. the target's own answer delay p50 / p99 (ms), same window",
            &format!(
                "{} / {}",
                ms_u(p.target_delay_us[0]),
                ms_u(p.target_delay_us[1])
            ),
            &format!(
                "{} / {}",
                ms_u(b.target_delay_us[0]),
                ms_u(b.target_delay_us[1])
            ),
            "",
            "",
            "",
        ]);
        t.row([
            "C. error at p99 against the target's own p99",
            &signed(
                p99p.zip(p.target_delay_us[1])
                    .map(|(a, t)| (a - t as f64) / 1000.0),
            ),
            &signed(
                p99b.zip(b.target_delay_us[1])
                    .map(|(a, t)| (a - t as f64) / 1000.0),
            ),
            "",
            "",
            "",
        ]);
        t.row([
            "**C. lateness p50 / p99 / max (ms) at half the max rate**, skipped ticks",
            &format!(
                "{} / {} / {}, {} skipped",
                ms_i(p.lateness_us[0]),
                ms_i(p.lateness_us[1]),
                ms_i(p.lateness_us[2]),
                p.skipped
            ),
            "",
            "",
            "p99 ≤ 2 ms, none skipped",
            verdict(p.lateness_us[1].map(|l| l <= 2000 && p.skipped == 0 && r.max.is_some())),
        ]);
        t.row([
            "C. CPU per probe (50 ms target)",
            &us(p.cpu_us_per_probe),
            &us(b.cpu_us_per_probe),
            &ratio(b.cpu_us_per_probe, p.cpu_us_per_probe),
            "",
            "",
        ]);
        t.row([
            "C. machine busy",
            &pct(p.machine_busy_pct),
            &pct(b.machine_busy_pct),
            "",
            "",
            "",
        ]);
    }
}

/// D. Peak RSS with `--memory-probes` defined.
fn memory(t: &mut Table, r: &Results) {
    if let Some(m) = &r.memory {
        t.row([
            &format!(
                "**D. peak RSS, {} probes defined** ({:.0}/s, every run persisted)",
                m.probes, m.rate
            ),
            &format!(
                "{} peak, {} at the end (finished/written {:.0}/{:.0} per s, {} queued at end, busy {})",
                mib(m.peak_rss_kib),
                mib(m.rss_at_end_kib),
                m.finished_per_s,
                m.written_per_s,
                m.queued_at_end,
                pct(m.machine_busy_pct)
            ),
            "",
            "",
            "≤ 64 MiB",
            verdict(m.peak_rss_kib.map(|k| k <= 64 * 1024)),
        ]);
    }
}

/// E. The history queries: API and dashboards on seeded days of minute bins.
fn history(t: &mut Table, r: &Results) {
    if let Some(h) = &r.history {
        let seeded = h
            .seed_s
            .map_or("reused".into(), |s| format!("seeded in {s:.0} s"));
        let ms2 = |v: [f64; 2]| format!("{:.1} / {:.1}", v[0], v[1]);
        t.row([
            &format!(
                "E. history: {} probes × {} days of minute bins (phase total; {} minute, {} hour bin rows; {:.0} MiB; {seeded})",
                h.probes, h.days, h.minute_rows, h.hour_rows, h.database_mib
            ),
            "",
            "",
            "",
            "",
            "",
        ]);
        t.row([
            "**E. one probe's p95 over 30 days** (`/latency?step=30d`), p50 / max of 20 (ms)",
            &ms2(h.p95_30d_ms),
            "",
            "",
            "≤ 50 ms",
            verdict(Some(h.p95_30d_ms[0] <= 50.0)),
        ]);
        t.row([
            "E. one probe over 30 days, default step (3 h) / step 1h, p50 (ms)",
            &format!("{:.1} / {:.1}", h.series_30d_ms[0], h.series_30d_1h_ms[0]),
            "",
            "",
            "",
            "",
        ]);
        t.row([
            &format!(
                "**E. fleet overview** (`GET /api/v1/probes`, {} probes), p50 / max of 20 (ms)",
                h.probes
            ),
            &ms2(h.overview_ms),
            "",
            "",
            "≤ 200 ms",
            verdict(Some(h.overview_ms[0] <= 200.0)),
        ]);
        t.row([
            &format!(
                "**E. fleet dashboard, \"Probes\" table** (SQL from `dashboards/fleet-overview.json`, {} probes), p50 / max of 5 (ms)",
                h.probes
            ),
            &ms2(h.fleet_table_ms),
            "",
            "",
            "≤ 200 ms",
            verdict(Some(h.fleet_table_ms[0] <= 200.0)),
        ]);
        t.row([
            &format!(
                "**E. the built-in overview page** (`GET /`, {} probes, {:.0} KiB), p50 / max of 20 (ms)",
                h.probes,
                h.ui_overview_bytes as f64 / 1024.0
            ),
            &ms2(h.ui_overview_ms),
            "",
            "",
            "≤ 300 ms, ≤ 1 MB",
            verdict(Some(h.ui_overview_ms[0] <= 300.0 && h.ui_overview_bytes <= 1_000_000)),
        ]);
        t.row([
            "**E. a probe's page over 30 days** (`GET /probes/{name}?range=30d`), p50 / max of 20 (ms)",
            &ms2(h.ui_probe_30d_ms),
            "",
            "",
            "≤ 100 ms (its chart data)",
            verdict(Some(h.ui_probe_30d_ms[0] <= 100.0)),
        ]);
        t.row([
            "E. probe dashboard, \"Latency percentiles\", 30 days at a 1h interval, p50 / max of 5 (ms)",
            &ms2(h.probe_percentiles_30d_ms),
            "",
            "",
            "",
            "",
        ]);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::figures::Figures;

    #[test]
    fn every_row_has_six_cells_and_memory_is_judged_against_64_mib() {
        let args = crate::Cli::try_parse_from(["prober-bench", "--side-by-side"])
            .unwrap()
            .bench;
        let memory = |kib| Results {
            memory: Some(Figures {
                probes: 10_000,
                rate: 1000.0,
                peak_rss_kib: Some(kib),
                ..Figures::default()
            }),
            ..Results::default()
        };
        let over = render(&args, &memory(70 * 1024));
        let rows: Vec<&str> = over.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 3, "header, rule, the D row:\n{over}");
        assert!(rows.iter().all(|r| r.matches(" | ").count() == 5), "{over}");
        assert!(rows[2].contains("70.0 MiB peak") && rows[2].ends_with("| **not met** |"));
        let under = render(&args, &memory(62 * 1024));
        assert!(under.lines().last().unwrap().ends_with("| **met** |"));
    }
}
