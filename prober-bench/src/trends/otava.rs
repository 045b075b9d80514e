//! Apache Otava on the same planted series: the 5-minute medians of each
//! probe's total (computed from the very samples written to the store),
//! through `otava.analysis.compute_change_points` with Otava's defaults
//! (window 50, p ≤ 0.001, no magnitude floor). Once over the whole history
//! (precision, recall, false points per 1,000 probe-days), and for the
//! detection delay on the last 96 points (the window our analysis reads) as
//! of each 5-minute pass during the two hours after the change.
//!
//! Otava runs from a throwaway virtual environment (`/tmp/otava-venv`, made
//! and filled with `pip install apache-otava` if absent); when it cannot be
//! installed or run, the harness says "Otava skipped: <reason>" and goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tokio::process::Command;

use super::score::{read, score, Found, Row, TOLERANCE};
use super::synth::{Plan, Scenario};

const VENV: &str = "/tmp/otava-venv";
/// The PyPI names tried, in order.
const PACKAGES: [&str; 2] = ["apache-otava", "hunter"];
/// Points of the delay window (our analysis' 96).
const WINDOW: usize = 96;
/// How long after the change the delay is looked for.
const DELAY_HORIZON: i64 = 120;

const SCRIPT: &str = r#"
import json, math, sys
try:
    from otava.analysis import compute_change_points
except ImportError:
    from hunter.analysis import compute_change_points

def cps(series):
    if len(series) < 10:
        return []
    found, _ = compute_change_points(series, window_len=50, max_pvalue=0.001, min_magnitude=0.0)
    return [int(c.index) for c in found]

data = json.load(open(sys.argv[1]))
out = {}
for p in data["probes"]:
    s = [x if x is not None and not math.isnan(x) else 0.0 for x in p["series"]]
    res = {"full": cps(s), "prefix": []}
    for end in p["prefix_ends"]:
        lo = max(0, end - data["window"])
        res["prefix"].append([end, [lo + i for i in cps(s[lo:end])]])
    out[p["name"]] = res
json.dump(out, open(sys.argv[2], "w"))
"#;

/// Runs Otava; `Err` is the reason it was skipped.
pub async fn run(
    plans: &[Plan],
    medians: &[Vec<f64>],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    days: f64,
    every: Duration,
) -> Result<Vec<Row>, String> {
    let python = venv().await.map_err(|e| format!("Otava skipped: {e}"))?;
    let dir = std::env::temp_dir().join(format!("prober-bench-otava-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("Otava skipped: {e}"))?;
    let result = run_in(&dir, &python, plans, medians, start, end, days, every).await;
    let _ = std::fs::remove_dir_all(&dir);
    result.map_err(|e| format!("Otava skipped: {e}"))
}

/// The venv's python, the venv made and Otava installed if needed.
async fn venv() -> Result<PathBuf, String> {
    let python = Path::new(VENV).join("bin/python");
    let probe = "import importlib.util as u, sys; sys.exit(0 if (u.find_spec('otava') or u.find_spec('hunter')) else 1)";
    if python.exists() && status(&python, &["-c", probe]).await.is_ok() {
        return Ok(python);
    }
    status(Path::new("python3"), &["-m", "venv", VENV]).await?;
    let pip = Path::new(VENV).join("bin/pip");
    let mut last = String::new();
    for name in PACKAGES {
        eprintln!("bench: trends: pip install {name} into {VENV}");
        match status(&pip, &["install", "-q", name]).await {
            Ok(()) if status(&python, &["-c", probe]).await.is_ok() => return Ok(python),
            Ok(()) => last = format!("{name} installed but has no otava/hunter module"),
            Err(e) => last = e,
        }
    }
    Err(format!("neither apache-otava nor hunter installs: {last}"))
}

async fn status(program: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: String = err.lines().last().unwrap_or("").chars().take(300).collect();
    Err(format!(
        "{} {}: {} {tail}",
        program.display(),
        args.join(" "),
        out.status
    ))
}

/// The daemon's passes (every 5 minutes, on the 5-minute boundaries) in
/// the two hours after `change`.
fn passes_after(change: Option<DateTime<Utc>>) -> Vec<DateTime<Utc>> {
    let Some(c) = change else {
        return Vec::new();
    };
    let first = c.duration_trunc(TimeDelta::minutes(5)).unwrap_or(c) + TimeDelta::minutes(5);
    (0..DELAY_HORIZON / 5)
        .map(|k| first + TimeDelta::minutes(5 * k))
        .take_while(|t| *t <= c + TimeDelta::minutes(DELAY_HORIZON))
        .collect()
}

/// Whether a pass at `pass` that found change points at `found` (5-minute
/// point indexes from `start`) detects a change at `change`: one of them
/// within [`TOLERANCE`] of it, and the point holding the change read
/// ([`read`]). A point found near the change before any of its runs was
/// read is one of Otava's false points that fell there by chance (it finds
/// several a day on a stationary series), not a detection.
fn detects(
    start: DateTime<Utc>,
    change: DateTime<Utc>,
    pass: DateTime<Utc>,
    found: &[usize],
) -> bool {
    pass >= read(change)
        && (found.iter()).any(|&i| (time_of(start, i as i64) - change).abs() <= TOLERANCE)
}

/// The start of 5-minute point `i` (from `start`).
fn time_of(start: DateTime<Utc>, i: i64) -> DateTime<Utc> {
    start + TimeDelta::minutes(5 * i)
}

/// The point index of `t` (5-minute points from `start`).
fn point_of(start: DateTime<Utc>, t: DateTime<Utc>) -> usize {
    ((t - start).num_seconds().max(0) / 300) as usize
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    dir: &Path,
    python: &Path,
    plans: &[Plan],
    medians: &[Vec<f64>],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    days: f64,
    every: Duration,
) -> Result<Vec<Row>, String> {
    let scored: Vec<Plan> = plans
        .iter()
        .filter(|p| p.scenario != Scenario::Drift)
        .cloned()
        .collect();
    let passes: Vec<Vec<DateTime<Utc>>> =
        scored.iter().map(|p| passes_after(p.change_at)).collect();
    let probes: Vec<serde_json::Value> = plans
        .iter()
        .zip(medians)
        .filter(|(p, _)| p.scenario != Scenario::Drift)
        .zip(&passes)
        .map(|((p, series), passes)| {
            // A pass at `now` reads the points closed 2 minutes before it.
            let ends: Vec<usize> = passes
                .iter()
                .map(|t| point_of(start, *t - TimeDelta::minutes(2)))
                .collect();
            let series: Vec<Option<f64>> =
                series.iter().map(|v| v.is_finite().then_some(*v)).collect();
            serde_json::json!({"name": p.meta.name, "series": series, "prefix_ends": ends})
        })
        .collect();
    let input = dir.join("series.json");
    let output = dir.join("otava.json");
    let script = dir.join("otava_bench.py");
    let json = serde_json::json!({ "window": WINDOW, "probes": probes });
    std::fs::write(&input, json.to_string()).map_err(|e| e.to_string())?;
    std::fs::write(&script, SCRIPT).map_err(|e| e.to_string())?;
    eprintln!("bench: trends: running Otava on {} series", probes.len());
    let paths = [&script, &input, &output].map(|p| p.to_string_lossy().into_owned());
    status(python, &[&paths[0], &paths[1], &paths[2]]).await?;
    let text = std::fs::read_to_string(&output).map_err(|e| e.to_string())?;
    let result: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let at = |i: &serde_json::Value| time_of(start, i.as_i64().unwrap_or(0));
    let mut found = Vec::new();
    for (p, passes) in scored.iter().zip(&passes) {
        let r = &result[p.meta.name.as_str()];
        // The first pass that read the change's point and found a point
        // near the change.
        let first = r["prefix"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(passes)
            .find_map(|(e, pass)| {
                let found: Vec<usize> = (e[1].as_array().into_iter().flatten())
                    .filter_map(|i| i.as_u64().and_then(|n| usize::try_from(n).ok()))
                    .collect();
                detects(start, p.change_at?, *pass, &found).then_some(*pass)
            });
        for i in r["full"].as_array().into_iter().flatten() {
            let change_at = at(i);
            let near = p
                .change_at
                .is_some_and(|c| (change_at - c).abs() <= TOLERANCE);
            let detected_at = if near { first.unwrap_or(end) } else { end };
            found.push(Found {
                probe: p.meta.name.clone(),
                kind: "step".into(),
                phase: "total".into(),
                change_at,
                detected_at,
                summary: String::new(),
            });
        }
    }
    let mut rows = score(&scored, &found, days, every);
    for row in &mut rows {
        row.phase_named = None;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_near_the_change_detects_it_only_once_the_change_was_read() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let (start, change) = (t("2026-11-25T00:00:00Z"), t("2026-11-25T00:23:00Z"));
        // The change is in point 4 (00:20-00:25), which closes at 00:27:
        // the passes on the marks read it from 00:30 on (`point_of`).
        assert_eq!(point_of(start, change), 4);
        assert_eq!(read(change), t("2026-11-25T00:27:00Z"));
        // A point found at 00:20 by the pass of 00:25: chance.
        assert!(!detects(start, change, t("2026-11-25T00:25:00Z"), &[4]));
        // The same point at the pass of 00:30: a detection.
        assert!(detects(start, change, t("2026-11-25T00:30:00Z"), &[4]));
        // 27 minutes after the change is near; 37 is not.
        assert!(detects(start, change, t("2026-11-25T01:00:00Z"), &[10]));
        assert!(!detects(start, change, t("2026-11-25T01:00:00Z"), &[12]));
        assert!(!detects(start, change, t("2026-11-25T01:00:00Z"), &[]));
    }
}
