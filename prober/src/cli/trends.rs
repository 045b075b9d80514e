//! `prober trends`: the findings stored by the daemon's trend analysis, or,
//! with `--file`, the change-point detector run over a CSV of your own.

use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::config::settings::Settings;
use crate::store::trends::{Finding, FindingFilter};
use crate::store::Store;
use crate::trend::changepoint::{self, ChangePoint};

/// Largest CSV read, in bytes: a year of minutes is about 20 MB.
pub const MAX_CSV_BYTES: u64 = 64 * 1024 * 1024;
/// Most rows read from a CSV.
pub const MAX_CSV_ROWS: usize = 1_000_000;

/// Lists the stored findings, newest first.
pub async fn stored(
    settings: &Settings,
    probe: Option<String>,
    since: DateTime<Utc>,
    json: bool,
) -> Result<(), String> {
    let store =
        Store::new(&settings.database_url, &settings.location).map_err(|e| e.to_string())?;
    store.pick_host().await;
    let found = store
        .findings(&FindingFilter {
            probe,
            since: Some(since),
            state: None,
            limit: 1000,
            ..FindingFilter::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    if json {
        for f in &found {
            say!("{}", serde_json::to_string(f).map_err(|e| e.to_string())?);
        }
    } else if found.is_empty() {
        say!(
            "no trend findings since {}",
            since.format("%Y-%m-%d %H:%M UTC")
        );
    } else {
        for f in &found {
            say!("{}", line(f));
        }
    }
    Ok(())
}

fn line(f: &Finding) -> String {
    let mut out = format!(
        "#{} [{}] {} {}: {} (p = {:.1e})",
        f.id,
        f.state,
        f.kind,
        f.detected_at.format("%Y-%m-%d %H:%M"),
        f.summary,
        f.p_value
    );
    if let (Some(at), Some(ms)) = (f.crosses_at, f.crosses_ms) {
        out.push_str(&format!(
            "\n    crosses {} at {} at this slope (the latency alert's threshold)",
            crate::analysis::series::human_us(ms * 1_000.0),
            at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    // The context: what else changed within the hour.
    let hm = "%H:%M UTC";
    if let Some(t) = f.probe_changed_at {
        out.push_str(&format!(
            "\n    the probe's definition changed at {}",
            t.format(hm)
        ));
    }
    if let Some(t) = f.build_changed_at {
        out.push_str(&format!(
            "\n    the prober's build changed at {}",
            t.format(hm)
        ));
    }
    for e in &f.events {
        out.push_str(&format!("\n    event at {}: {}", e.at.format(hm), e.title));
    }
    out
}

/// One row of a CSV: a time (RFC 3339 or Unix seconds) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's line in the file, from 1.
    pub line: usize,
    pub time: String,
    pub value: f64,
}

/// Reads `time,value` rows; a header line and blank lines are skipped. Every
/// bad row is an error naming its line.
pub fn read_csv(path: &Path) -> Result<Vec<Row>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CSV_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {} as UTF-8 text: {e}", path.display()))?;
    if text.len() as u64 > MAX_CSV_BYTES {
        return Err(format!(
            "{} is larger than {} MiB; analyse a shorter range",
            path.display(),
            MAX_CSV_BYTES / (1024 * 1024)
        ));
    }
    parse_csv(&text).map_err(|e| format!("{}:{e}", path.display()))
}

/// [`read_csv`] on text; errors start with the line number.
pub fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((time, value)) = line.split_once(',') else {
            return Err(format!("{}: expected `time,value`, got {line:?}", n + 1));
        };
        let value = match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ if rows.is_empty() && n == 0 => continue, // a header
            _ => {
                return Err(format!(
                    "{}: the value {:?} is not a finite number",
                    n + 1,
                    value.trim()
                ))
            }
        };
        if rows.len() == MAX_CSV_ROWS {
            return Err(format!(
                "{}: more than {MAX_CSV_ROWS} rows; analyse a shorter range",
                n + 1
            ));
        }
        rows.push(Row {
            line: n + 1,
            time: time.trim().to_string(),
            value,
        });
    }
    if rows.is_empty() {
        return Err(" no `time,value` rows".into());
    }
    Ok(rows)
}

/// The change points of a CSV's values, printed as text or JSON lines.
pub fn file(path: &Path, json: bool) -> Result<(), String> {
    let rows = read_csv(path)?;
    let values: Vec<f64> = rows.iter().map(|r| r.value).collect();
    let found = changepoint::detect(&values, &changepoint::Config::default())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if found.is_empty() && !json {
        say!("no change point in {} values", values.len());
    }
    for cp in &found {
        say!("{}", describe(&rows, cp, json));
    }
    Ok(())
}

fn describe(rows: &[Row], cp: &ChangePoint, as_json: bool) -> String {
    let (at, line) = rows
        .get(cp.index)
        .map_or(("?", 0), |r| (r.time.as_str(), r.line));
    if as_json {
        return json!({
            "time": at,
            "line": line,
            "before_mean": cp.before.mean,
            "after_mean": cp.after.mean,
            "relative_change": cp.relative_change(),
            "p_value": cp.p_value,
        })
        .to_string();
    }
    format!(
        "{at} (line {line}): mean {:.4} → {:.4} ({:+.1} %), p = {:.1e}",
        cp.before.mean,
        cp.after.mean,
        100.0 * cp.relative_change(),
        cp.p_value
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_with_a_header_and_bad_rows_name_their_line() {
        let rows = parse_csv("time,value\n2026-12-01T10:00:00Z,1.5\n\n1764583200, 2\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].line, rows[1].value), (4, 2.0));
        let e = parse_csv("t,v\n1,2\n3,x\n").unwrap_err();
        assert!(e.starts_with("3: "), "{e}");
        assert!(parse_csv("1;2\n")
            .unwrap_err()
            .contains("expected `time,value`"));
        assert!(parse_csv("time,value\n").is_err());
        assert!(parse_csv("t,v\n1,NaN\n").unwrap_err().starts_with("2: "));
    }
}
