//! The harness's table.

use std::fmt::Write;

use super::{Row, TrendFigures, PASS};

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn table(out: &mut String, rows: &[Row], with_phase: bool) {
    let _ = writeln!(
        out,
        "| scenario | every | probes | detected | recall | delay p50 / max (min) | false findings | per 1,000 probe-days | dup. | precision | phase named |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let phase = match (with_phase, r.phase_named) {
            (true, Some(n)) => format!("{n}/{}", r.detected),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} s | {} | {} | {:.2} | {} / {} | {} | {:.1} | {} | {} | {} |",
            r.scenario,
            r.every_s,
            r.probes,
            r.detected,
            r.recall,
            opt(r.delay_p50_min, 0),
            opt(r.delay_max_min, 0),
            r.false_findings,
            r.false_per_1000_probe_days,
            r.duplicates,
            opt(r.precision, 2),
            phase,
        );
    }
}

/// The figures as Markdown.
pub fn render(f: &TrendFigures) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trends: {} probes every {} s, {} days of history to {}{}; {} runs written in {:.1} s; {} analysis passes (every 5 min from {}); whole run {:.0} s\n",
        f.probes,
        f.every_s,
        f.days,
        f.end,
        if f.diurnal { "" } else { " (no diurnal cycle)" },
        f.runs, f.seed_s, f.passes, f.dense_from, f.wall_s
    );
    let _ = writeln!(
        out,
        "prober (prober::analysis::Analyser, stored findings):\n"
    );
    table(&mut out, &f.rows, true);
    let c = &f.cost;
    let _ = writeln!(
        out,
        "\nanalysis cost (the passes 5 min apart): a pass of {} probes p50 {:.0} ms, mean {:.0} ms, max {:.0} ms; {:.2} ms per probe and pass (wall, Postgres included); the full analysis ran in {:.1} % of them",
        c.subjects, c.pass_ms[0], c.pass_ms[1], c.pass_ms[2], c.per_probe_ms, 100.0 * c.full_share
    );
    let _ = writeln!(
        out,
        "extrapolated at a pass every 5 min: 1,000 probes {:.1} % of one core, 10,000 probes {:.1} %",
        100.0 * c.core_share_1k,
        100.0 * c.core_share_10k
    );
    if let Some([harness, postgres]) = c.cpu_per_probe_ms {
        let per_probe = harness + postgres;
        let share = |probes: f64| 100.0 * per_probe * probes / 1_000.0 / PASS.num_seconds() as f64;
        let _ = writeln!(
            out,
            "CPU (the budget's measure): {per_probe:.2} ms per probe and pass (analysis {harness:.2}, Postgres {postgres:.2}); at a pass every 5 min 1,000 probes {:.1} % of one core, 10,000 probes {:.1} %",
            share(1_000.0),
            share(10_000.0),
        );
    }
    match &f.otava {
        Ok(rows) => {
            let _ = writeln!(
                out,
                "\nApache Otava (compute_change_points, window 50, p ≤ 0.001, on 5-minute medians of total; whole history for findings, last 96 points per pass for the delay; no drift detector, so no drift row):\n"
            );
            table(&mut out, rows, false);
        }
        Err(reason) => {
            let _ = writeln!(out, "\n{reason}");
        }
    }
    out
}
