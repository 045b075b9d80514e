//! The dashboards' heaviest panels as the bench times them: their SQL read at
//! run time from `dashboards/*.json` with Grafana's macros expanded, and the
//! timing of a query or a store read (one untimed run, then timed ones).

use std::future::Future;
use std::str::FromStr;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Where the dashboards' JSON is read from, relative to the working directory.
const DASHBOARDS_DIR: &str = "dashboards";

/// The median and the maximum of timings (ms); zeros when there are none.
pub fn median_and_max(mut times: Vec<f64>) -> [f64; 2] {
    times.sort_by(f64::total_cmp);
    match times.last() {
        Some(max) => [times[times.len() / 2], *max],
        None => [0.0; 2],
    }
}

/// Runs `op` once untimed, then `repeat` times timed: the median and the
/// maximum of the timed runs, in milliseconds.
pub async fn time_op<F, Fut>(repeat: usize, mut op: F) -> Result<[f64; 2], String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut times = Vec::with_capacity(repeat);
    for n in 0..repeat + 1 {
        let started = Instant::now();
        op().await?;
        if n >= 1 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(median_and_max(times))
}

/// Times `sql` as [`time_op`] does; an empty answer is an error (a panel
/// that shows nothing measured nothing).
pub async fn time_sql(pool: &PgPool, sql: &str, repeat: usize) -> Result<[f64; 2], String> {
    time_op(repeat, || async move {
        let rows = sqlx::query(sql)
            .fetch_all(pool)
            .await
            .map_err(|e| format!("dashboard query failed: {e}\n{sql}"))?;
        if rows.is_empty() {
            return Err(format!("dashboard query returned no rows:\n{sql}"));
        }
        Ok(())
    })
    .await
}

/// One connection with JIT off, as the store's connections (and Grafana's
/// JIT-less plans) run the dashboards' queries.
pub async fn query_pool(url: &str) -> Result<PgPool, String> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| format!("--database-url: {e}"))?
        .options([("jit", "off"), ("timezone", "UTC")]);
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

/// The SQL of the panel titled `title` in `dashboards/<file>`.
///
/// Read at run time from the repository (the bench runs from its root, as
/// bench/side-by-side.sh does), so a dashboard edit is timed without a rebuild.
pub fn panel_sql(file: &str, title: &str) -> Result<String, String> {
    let path = std::path::Path::new(DASHBOARDS_DIR).join(file);
    let json = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}; run the bench from the repository's root, where dashboards/ is",
            path.display()
        )
    })?;
    let d: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| format!("{}: not valid dashboard JSON: {e}", path.display()))?;
    fn find(v: &serde_json::Value, title: &str) -> Option<String> {
        let panels = v.get("panels")?.as_array()?;
        panels.iter().find_map(|p| {
            if p.get("title").and_then(|t| t.as_str()) == Some(title) {
                p.pointer("/targets/0/rawSql")?.as_str().map(str::to_string)
            } else {
                find(p, title)
            }
        })
    }
    find(&d, title).ok_or_else(|| format!("no panel {title:?} in the dashboard"))
}

/// The fleet dashboard's "Probes" table for every probe: team, service and
/// location filters true, the objective at 99.9 %.
pub fn fleet_table_sql() -> Result<String, String> {
    Ok(panel_sql("fleet-overview.json", "Probes")?
        .replace("team in ($team)", "true")
        .replace("service in ($service)", "true")
        .replace("name in ($location)", "true")
        .replace("location in ($location)", "true")
        .replace("$objective", "99.9"))
}

/// The probe dashboard's "Latency percentiles (total)" for `probe` over
/// `[from, to]` at Grafana's interval for that range ([`grafana_interval_secs`]).
pub fn probe_percentiles_sql(
    probe: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<String, String> {
    let interval = grafana_interval_secs((to - from).num_seconds());
    let sql = panel_sql("probe-detail.json", "Latency percentiles (total)")?;
    let sql = expand_macro(&sql, "$__timeGroupAlias(", |args| {
        let col = args.split(',').next().unwrap_or(args).trim();
        format!("floor(extract(epoch from {col}) / {interval}) * {interval} as \"time\"")
    });
    let sql = expand_macro(&sql, "$__timeFilter(", |col| {
        format!(
            "{} between '{}' and '{}'",
            col.trim(),
            from.to_rfc3339(),
            to.to_rfc3339()
        )
    });
    Ok(sql
        .replace("$__timeFrom()", &format!("'{}'", from.to_rfc3339()))
        .replace("$__timeTo()", &format!("'{}'", to.to_rfc3339()))
        .replace("$__interval_ms", &(interval * 1000).to_string())
        .replace("$probe", probe)
        .replace("name in ($location)", "true"))
}

/// `sql` with every `name(args)` of a Grafana macro replaced by `expand(args)`
/// (the arguments hold no parentheses in our panels).
fn expand_macro(sql: &str, name: &str, expand: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find(name) {
        out.push_str(&rest[..at]);
        let after = &rest[at + name.len()..];
        let Some(close) = after.find(')') else {
            out.push_str(&rest[at..]);
            return out;
        };
        out.push_str(&expand(&after[..close]));
        rest = &after[close + 1..];
    }
    out + rest
}

/// The probe panel's `maxDataPoints` and minimum `interval` (probe-detail.json).
const MAX_DATA_POINTS: i64 = 500;
const MIN_INTERVAL_SECS: i64 = 60;

/// Grafana's `$__interval` in seconds for a range of `range_secs` on the probe
/// panel: the range over `maxDataPoints`, rounded as Grafana rounds it
/// (`roundInterval`), and at least the panel's minimum of 1m. 2 h → 1m, 6 h
/// → 1m, 7 d → 20m, 30 d → 1h.
pub fn grafana_interval_secs(range_secs: i64) -> i64 {
    // Grafana's `roundInterval` steps from one minute up (ms below, ms to round to).
    const STEPS: [(i64, i64); 14] = [
        (90_000, 60_000),
        (210_000, 120_000),
        (450_000, 300_000),
        (750_000, 600_000),
        (1_050_000, 900_000),
        (1_500_000, 1_200_000),
        (2_700_000, 1_800_000),
        (5_400_000, 3_600_000),
        (9_000_000, 7_200_000),
        (16_200_000, 10_800_000),
        (32_400_000, 21_600_000),
        (86_400_000, 43_200_000),
        (604_800_000, 86_400_000),
        (1_814_400_000, 604_800_000),
    ];
    let raw_ms = range_secs.saturating_mul(1000) / MAX_DATA_POINTS;
    let rounded = STEPS
        .iter()
        .find(|(below, _)| raw_ms < *below)
        .map_or(2_592_000_000, |(_, to)| *to);
    (rounded / 1000).max(MIN_INTERVAL_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_as_grafana_does_with_the_panel_minimum() {
        assert_eq!(grafana_interval_secs(2 * 3600), 60);
        assert_eq!(grafana_interval_secs(6 * 3600), 60);
        assert_eq!(grafana_interval_secs(7 * 86_400), 1200);
        assert_eq!(grafana_interval_secs(30 * 86_400), 3600);
    }

    #[test]
    fn grafana_macros_expand_whatever_the_column() {
        let sql = "select $__timeGroupAlias(h.t, $__interval) where $__timeFilter(h.t) and x";
        let got = expand_macro(sql, "$__timeFilter(", |c| format!("{c} > 0"));
        assert_eq!(
            got,
            "select $__timeGroupAlias(h.t, $__interval) where h.t > 0 and x"
        );
        let got = expand_macro(&got, "$__timeGroupAlias(", |a| format!("[{a}]"));
        assert_eq!(got, "select [h.t, $__interval] where h.t > 0 and x");
    }

    #[test]
    fn median_and_max_of_timings() {
        assert_eq!(median_and_max(vec![3.0, 1.0, 2.0]), [2.0, 3.0]);
        assert_eq!(median_and_max(Vec::new()), [0.0, 0.0]);
    }
}
