//! The Grafana dashboards (`dashboards/*.json`) against a seeded database.
//!
//! Every SQL query of every dashboard (panel targets, query variables,
//! annotations) is expanded the way Grafana expands it — template variables
//! first, as the Postgres data source's `interpolateVariable` formats them,
//! then `$__interval`/`$__interval_ms` and the macros of the Go macro engine
//! (`pkg/tsdb/grafana-postgresql-datasource/macros.go`) — and run against a
//! fresh database filled through the real store (`Store::write_runs`), so the
//! bins and counters are the ones the daemon writes. Each query has an
//! expectation below, and a query without one fails the suite: a dashboard
//! cannot rot silently after a schema change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use prober::run::{ErrorClass, ProbeError};
use prober::run::{ProbeMeta, RunRecord};
use prober::store::Store;
use serde_json::{json, Value};
use sqlx::{Column, Executor};

use crate::db::TestDb;
use crate::store::{lcg, record};

const POSTGRES_UID: &str = "prober-postgres";
const PROMETHEUS_UID: &str = "prober-prometheus";

/// Every SQL query of the dashboards, by dashboard uid and panel title (or
/// `variable: NAME`, `annotation: NAME`). The test asserts this is exactly the
/// set found in the JSON, and `check` has an expectation for each.
const COVERED: &[(&str, &str)] = &[
    ("prober-fleet", "Probes"),
    ("prober-fleet", "Firing alerts"),
    ("prober-fleet", "Availability, all selected probes"),
    ("prober-fleet", "Failed runs by probe"),
    ("prober-fleet", "Recent changes"),
    ("prober-fleet", "variable: team"),
    ("prober-fleet", "variable: service"),
    ("prober-fleet", "variable: location"),
    ("prober-probe", "Summary over the range"),
    ("prober-probe", "Latency percentiles (total)"),
    ("prober-probe", "Latency heatmap (total)"),
    ("prober-probe", "Phase breakdown (mean)"),
    ("prober-probe", "Availability"),
    ("prober-probe", "Error classes"),
    ("prober-probe", "Last failed runs"),
    ("prober-probe", "variable: probe"),
    ("prober-probe", "variable: location"),
    ("prober-probe", "annotation: Alerts"),
    ("prober-probe", "annotation: Probe versions"),
    ("prober-probe", "annotation: Trend findings"),
    ("prober-probe", "annotation: Change events"),
    ("prober-health", "Start lateness (stored runs)"),
    ("prober-health", "Runs stored per minute, by location"),
    ("prober-health", "Builds recording runs"),
    ("prober-health", "variable: location"),
];

// === the dashboards as files ===

struct Dashboard {
    uid: String,
    json: Value,
}

/// One SQL query of a dashboard.
#[derive(Debug, Clone)]
struct Query {
    uid: String,
    key: String,
    /// `time_series` or `table`.
    format: String,
    sql: String,
    /// The panel's minimum interval in seconds, if it sets one.
    min_interval_s: Option<i64>,
}

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn dashboards() -> Vec<Dashboard> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "dashboards/*.json exist");
    files
        .iter()
        .map(|f| {
            let json: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap())
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", f.display()));
            let uid = json["uid"].as_str().expect("every dashboard has a uid");
            Dashboard {
                uid: uid.to_string(),
                json,
            }
        })
        .collect()
}

/// Panels, including those nested in rows.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

fn is_postgres(ds: &Value) -> bool {
    ds["uid"] == POSTGRES_UID
}

/// Every SQL query of a dashboard, checked for the rules panels must follow.
fn queries(d: &Dashboard) -> Vec<Query> {
    let mut out = Vec::new();
    let mut titles = BTreeSet::new();
    for p in panels(&d.json) {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert!(
            titles.insert(title.clone()),
            "{}: two panels titled {title:?}",
            d.uid
        );
        let min_interval_s = p["interval"].as_str().map(parse_interval_s);
        for t in p["targets"].as_array().into_iter().flatten() {
            let Some(sql) = t["rawSql"].as_str() else {
                continue;
            };
            assert!(
                is_postgres(&t["datasource"]) && is_postgres(&p["datasource"]),
                "{}/{title}: SQL goes to the provisioned Postgres data source",
                d.uid
            );
            if sql.contains("$__interval") || sql.contains("$__timeGroup") {
                assert!(
                    min_interval_s.is_some_and(|s| s >= 60),
                    "{}/{title}: a panel grouping by $__interval sets its minimum interval to the storage step (1m)",
                    d.uid
                );
            }
            out.push(Query {
                uid: d.uid.clone(),
                key: title.clone(),
                format: t["format"].as_str().unwrap_or("time_series").to_string(),
                sql: sql.to_string(),
                min_interval_s,
            });
        }
    }
    for v in d.json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            assert!(
                is_postgres(&v["datasource"]),
                "{}: variable {}",
                d.uid,
                v["name"]
            );
            out.push(Query {
                uid: d.uid.clone(),
                key: format!("variable: {}", v["name"].as_str().unwrap()),
                format: "table".into(),
                sql: v["query"].as_str().unwrap().to_string(),
                min_interval_s: None,
            });
        }
    }
    for a in d.json["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(sql) = a["target"]["rawSql"].as_str() {
            assert!(
                is_postgres(&a["datasource"]),
                "{}: annotation {}",
                d.uid,
                a["name"]
            );
            out.push(Query {
                uid: d.uid.clone(),
                key: format!("annotation: {}", a["name"].as_str().unwrap()),
                format: "table".into(),
                sql: sql.to_string(),
                min_interval_s: None,
            });
        }
    }
    out
}

// === Grafana's expansion ===

/// What a query runs with: the time range, the interval Grafana computed, and
/// each variable's selected values with whether the data source quotes them
/// (multi-value or include-all variables).
#[derive(Debug, Clone)]
struct Env {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval_s: i64,
    vars: HashMap<String, (Vec<String>, bool)>,
}

/// `gtime.ParseInterval`: Go durations plus d, w, M, y.
fn parse_interval_s(s: &str) -> i64 {
    let s = s.trim().trim_matches('\'');
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("interval {s:?}"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "M" => 30 * 86_400,
        "y" => 365 * 86_400,
        other => panic!("interval unit {other:?} of {s:?} is not modelled"),
    }
}

/// `gtime.FormatInterval` (whole seconds).
fn format_interval(s: i64) -> String {
    const UNITS: [(i64, &str); 5] = [
        (365 * 86_400, "y"),
        (86_400, "d"),
        (3_600, "h"),
        (60, "m"),
        (1, "s"),
    ];
    let (size, unit) = UNITS.iter().find(|(size, _)| s >= *size).unwrap();
    format!("{}{unit}", s / size)
}

/// Go's `%v` of a float64 holding a whole number of seconds: `%g` with the
/// shortest precision, exponent form from 1e6 on (`2.592e+06`).
fn go_float(x: i64) -> String {
    if x < 1_000_000 {
        return x.to_string();
    }
    let digits = x.to_string();
    let exp = digits.len() - 1;
    let mantissa = digits.trim_end_matches('0');
    let (first, rest) = mantissa.split_at(1);
    let dot = if rest.is_empty() {
        String::new()
    } else {
        format!(".{rest}")
    };
    format!("{first}{dot}e+{exp:02}")
}

/// Go's `time.RFC3339Nano` of a UTC time (trailing zeros of the fraction trimmed).
fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The front end's `templateSrv.replace` with the SQL data source's
/// `interpolateVariable`: `$name`, `${name}`, `${name:format}`, `[[name]]`.
/// Unknown names (the macros) are left as they are.
fn replace_variables(sql: &str, env: &Env) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let (name, format, len) = if let Some(braced) = rest.strip_prefix("${") {
            let end = braced.find('}').expect("an unclosed ${");
            let inner = &braced[..end];
            let (n, f) = match inner.split_once(':') {
                Some((n, f)) => (n, Some(f)),
                None => (inner, None),
            };
            (n.to_string(), f.map(str::to_string), end + 3)
        } else if let Some(bracket) = rest.strip_prefix("[[") {
            let end = bracket.find("]]").expect("an unclosed [[");
            (bracket[..end].trim().to_string(), None, end + 4)
        } else if let Some(word) = rest.strip_prefix('$') {
            let end = word.find(|c: char| !is_word(c)).unwrap_or(word.len());
            (word[..end].to_string(), None, end + 1)
        } else {
            (String::new(), None, 1)
        };
        let value = match name.as_str() {
            "" => None,
            "__interval" => Some(format_interval(env.interval_s)),
            "__interval_ms" => Some((env.interval_s * 1000).to_string()),
            "__from" => Some(env.from.timestamp_millis().to_string()),
            "__to" => Some(env.to.timestamp_millis().to_string()),
            n => env
                .vars
                .get(n)
                .map(|(values, quoted)| match format.as_deref() {
                    None if *quoted => values
                        .iter()
                        .map(|v| quote_literal(v))
                        .collect::<Vec<_>>()
                        .join(","),
                    None => values[0].replace('\'', "''"),
                    Some("sqlstring") => values
                        .iter()
                        .map(|v| quote_literal(v))
                        .collect::<Vec<_>>()
                        .join(","),
                    Some("csv") => values.join(","),
                    Some("raw") => values.join(","),
                    Some(f) => panic!("variable format {f:?} is not modelled by this test"),
                }),
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[..len]),
        }
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// The back end: `sqleng.Interpolate`, then the Postgres macro engine.
fn expand_macros(sql: &str, env: &Env) -> String {
    let sql = sql
        .replace("$__interval_ms", &(env.interval_s * 1000).to_string())
        .replace("$__interval", &format_interval(env.interval_s))
        .replace("$__unixEpochFrom()", &env.from.timestamp().to_string())
        .replace("$__unixEpochTo()", &env.to.timestamp().to_string());
    // `\$([_a-zA-Z0-9]+)\(([^\)]*)\)`, leftmost first, not overlapping.
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut i = 0;
    while i < sql.len() {
        let rest = &sql[i..];
        let matched = rest.strip_prefix('$').and_then(|r| {
            let name_len = r.find(|c: char| !is_name(c)).unwrap_or(r.len());
            let after = r[name_len..].strip_prefix('(')?;
            let close = after.find(')')?;
            (name_len > 0).then(|| {
                (
                    &r[..name_len],
                    &after[..close],
                    1 + name_len + 1 + close + 1,
                )
            })
        });
        match matched {
            Some((name, args, len)) => {
                let whole = &rest[..len];
                let mut name = name.to_string();
                // Grafana's pre-5.3 compatibility: `$__timeGroup(…)` directly followed by ',' aliases.
                if name == "__timeGroup" {
                    let at = sql.find(whole).unwrap() + len;
                    if sql[at..].starts_with(',') {
                        name = "__timeGroupAlias".into();
                    }
                }
                let args: Vec<&str> = args.split(',').map(|a| a.trim_matches(' ')).collect();
                out.push_str(&macro_value(&name, &args, env));
                i += len;
            }
            None => {
                let c = rest.chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

fn macro_value(name: &str, args: &[&str], env: &Env) -> String {
    let (from, to) = (rfc3339_nano(env.from), rfc3339_nano(env.to));
    match name {
        "__time" => format!("{} AS \"time\"", args[0]),
        "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", args[0]),
        "__timeFilter" => format!("{} BETWEEN '{from}' AND '{to}'", args[0]),
        "__timeFrom" => format!("'{from}'"),
        "__timeTo" => format!("'{to}'"),
        "__timeGroup" => {
            assert!(
                args.len() == 2,
                "$__timeGroup fill modes are not modelled: {args:?}"
            );
            let s = go_float(parse_interval_s(args[1]));
            format!("floor(extract(epoch from {})/{s})*{s}", args[0])
        }
        "__timeGroupAlias" => format!("{} AS \"time\"", macro_value("__timeGroup", args, env)),
        "__unixEpochFilter" => format!(
            "{c} >= {} AND {c} <= {}",
            env.from.timestamp(),
            env.to.timestamp(),
            c = args[0]
        ),
        "__unixEpochGroup" => {
            let s = go_float(parse_interval_s(args[1]));
            format!("floor(({})/{s})*{s}", args[0])
        }
        "__unixEpochGroupAlias" => {
            format!("{} AS \"time\"", macro_value("__unixEpochGroup", args, env))
        }
        other => panic!("Grafana would refuse the query: unknown macro {other:?}"),
    }
}

fn expand(sql: &str, env: &Env) -> String {
    expand_macros(&replace_variables(sql, env), env)
}

#[test]
fn the_expansion_matches_grafanas_on_its_own_examples() {
    let env = Env {
        from: "2026-11-26T09:00:00Z".parse().unwrap(),
        to: "2026-11-26T10:30:00.250Z".parse().unwrap(),
        interval_s: 300,
        vars: HashMap::from([
            ("probe".into(), (vec!["o'brien".into()], false)),
            ("location".into(), (vec!["eu".into(), "us".into()], true)),
        ]),
    };
    assert_eq!(
        expand("where $__timeFilter(t) and p = '$probe' and l in ($location)", &env),
        "where t BETWEEN '2026-11-26T09:00:00Z' AND '2026-11-26T10:30:00.25Z' and p = 'o''brien' and l in ('eu','us')"
    );
    assert_eq!(
        expand("select $__timeGroup(t, $__interval), x from a group by $__timeGroup(t, '1h')", &env),
        "select floor(extract(epoch from t)/300)*300 AS \"time\", x from a group by floor(extract(epoch from t)/3600)*3600"
    );
    assert_eq!(
        expand("$__timeGroupAlias(t,$__interval) $__interval_ms ${location:csv} $__unixEpochFilter(e)", &env),
        "floor(extract(epoch from t)/300)*300 AS \"time\" 300000 eu,us e >= 1795683600 AND e <= 1795689000"
    );
    assert_eq!(go_float(2_592_000), "2.592e+06");
    assert_eq!(format_interval(86_400), "1d");
}

// === running a query ===

/// A query's result: column names in order and each row's values as JSON.
#[derive(Debug)]
struct Frame {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Frame {
    fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.columns))
    }

    fn f64(&self, row: usize, name: &str) -> Option<f64> {
        let v = &self.rows[row][self.col(name)];
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    }

    fn i64(&self, row: usize, name: &str) -> Option<i64> {
        self.f64(row, name).map(|f| f.round() as i64)
    }

    fn str(&self, row: usize, name: &str) -> Option<String> {
        self.rows[row][self.col(name)].as_str().map(str::to_string)
    }

    /// The first column of every row, as strings (a variable's options).
    fn first_column(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| r[0].as_str().unwrap().to_string())
            .collect()
    }
}

struct Ctx {
    db: TestDb,
    pool: sqlx::PgPool,
    dashboards: Vec<Dashboard>,
    queries: Vec<Query>,
    seed: Seed,
}

/// A variable's selection in a case: every option ("All"), or these values.
enum Sel<'a> {
    All,
    Only(&'a [&'a str]),
}

impl Ctx {
    fn query(&self, uid: &str, key: &str) -> &Query {
        self.queries
            .iter()
            .find(|q| q.uid == uid && q.key == key)
            .unwrap_or_else(|| panic!("no query {uid}/{key}"))
    }

    /// The environment of dashboard `uid`: every variable resolved in order as
    /// Grafana does (query variables run their own SQL; All means every option).
    async fn env(
        &self,
        uid: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        interval_s: i64,
        selected: &[(&str, Sel<'_>)],
    ) -> Env {
        let d = self.dashboards.iter().find(|d| d.uid == uid).unwrap();
        let mut env = Env {
            from,
            to,
            interval_s,
            vars: HashMap::new(),
        };
        for v in d.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = v["name"].as_str().unwrap();
            let quoted = v["multi"] == true || v["includeAll"] == true;
            let options: Vec<String> = match v["type"].as_str() {
                Some("query") => {
                    let sql = expand(v["query"].as_str().unwrap(), &env);
                    self.run(&sql).await.first_column()
                }
                Some("custom") => v["query"]
                    .as_str()
                    .unwrap()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect(),
                // Free text a viewer types (the failed runs' trace link); no SQL reads it.
                Some("textbox") => continue,
                other => panic!("variable type {other:?} is not modelled"),
            };
            let values = match selected.iter().find(|(n, _)| *n == name) {
                Some((_, Sel::Only(vals))) => vals.iter().map(|s| s.to_string()).collect(),
                Some((_, Sel::All)) => {
                    assert!(v["includeAll"] == true, "{name} has no All option");
                    options
                }
                None if v["includeAll"] == true => options,
                None => match v["current"]["value"].as_str() {
                    Some(current) => vec![current.to_string()],
                    None => vec![options.first().cloned().unwrap_or_default()],
                },
            };
            env.vars.insert(name.to_string(), (values, quoted));
        }
        env
    }

    /// Runs SQL; the columns come from Postgres' description, the values as JSON.
    async fn run(&self, sql: &str) -> Frame {
        let described = (&self.pool)
            .describe(sql)
            .await
            .unwrap_or_else(|e| panic!("Postgres refuses the query: {e}\n{sql}"));
        let columns = described
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let wrapped = format!(
            "select (select json_agg(e.value order by e.n)
                     from json_each(row_to_json(q)) with ordinality as e(key, value, n))::text
             from (\n{sql}\n) q"
        );
        let rows: Vec<String> = sqlx::query_scalar(&wrapped)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("the query fails: {e}\n{sql}"));
        Frame {
            columns,
            rows: rows
                .iter()
                .map(|r| serde_json::from_str::<Vec<Value>>(r).unwrap())
                .collect(),
        }
    }

    /// Expands and runs the query of `uid`/`key`, checking what Grafana needs of its shape.
    async fn panel(&self, uid: &str, key: &str, env: &Env) -> Frame {
        let q = self.query(uid, key);
        if let Some(min) = q.min_interval_s {
            assert!(
                env.interval_s >= min,
                "{uid}/{key}: Grafana never goes below the panel's minimum interval"
            );
        }
        let sql = expand(&q.sql, env);
        let frame = self.run(&sql).await;
        if q.format == "time_series" {
            check_time_series(&frame, &format!("{uid}/{key}"));
        }
        frame
    }

    /// The histogram tables a query's plan reads (migration 0011). Every
    /// resolution also reads the pending rows and the v1 tables a previous
    /// release may write; the hour and day views read the minute rows not
    /// rolled up yet.
    async fn bin_tables_read(&self, uid: &str, key: &str, env: &Env) -> Vec<&'static str> {
        let sql = expand(&self.query(uid, key).sql, env);
        let plan: Vec<String> = sqlx::query_scalar(&format!("explain {sql}"))
            .fetch_all(&self.pool)
            .await
            .unwrap();
        let plan = plan.join("\n");
        ["hist_minute", "hist_hour", "hist_day", "hist_pending"]
            .into_iter()
            .filter(|t| plan.contains(&format!(" on {t}")) || plan.contains(&format!(" {t}_p")))
            .collect()
    }
}

/// A time series result as Grafana reads it: a `time` column first, ascending;
/// then numbers, or exactly one string column named `metric` and one value.
fn check_time_series(f: &Frame, what: &str) {
    assert_eq!(
        f.columns.first().map(String::as_str),
        Some("time"),
        "{what}: {:?}",
        f.columns
    );
    let times: Vec<f64> = (0..f.rows.len())
        .map(|r| f.f64(r, "time").unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "{what}: ordered by time"
    );
    if f.columns.iter().any(|c| c == "metric") {
        assert_eq!(
            f.columns.len(),
            3,
            "{what}: long format is time, metric, value"
        );
        assert!(
            f.rows.iter().all(|r| r[f.col("metric")].is_string()),
            "{what}: metric is a string"
        );
    }
    for (i, c) in f
        .columns
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, c)| *c != "metric")
    {
        assert!(
            f.rows.iter().all(|r| r[i].is_number() || r[i].is_null()),
            "{what}: column {c} is numeric"
        );
    }
}

// === the seeded data ===

/// One seeded run, as the expectations see it.
#[derive(Debug, Clone)]
struct Sample {
    probe: &'static str,
    location: &'static str,
    at: DateTime<Utc>,
    total_us: u64,
    phases: [Option<u64>; 6],
    success: bool,
    class: Option<&'static str>,
    message: Option<String>,
    lateness_us: i64,
}

struct Seed {
    now: DateTime<Utc>,
    /// The start of the main window: three whole hours before now's hour.
    h0: DateTime<Utc>,
    samples: Vec<Sample>,
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap()
}

fn meta(name: &str, version: &str, labels: Value) -> Arc<ProbeMeta> {
    Arc::new(ProbeMeta {
        name: name.into(),
        version: version.into(),
        definition: serde_json::value::to_raw_value(
            &json!({"name": name, "labels": labels, "runbook": format!("https://runbooks.example/{name}")}),
        )
        .unwrap()
        .into(),
        source: format!("probes/{name}.yaml:1"),
    })
}

const CLASSES: [ErrorClass; 3] = [
    ErrorClass::Timeout,
    ErrorClass::HttpStatus,
    ErrorClass::Connect,
];

/// Runs of one probe at one location: every `every` seconds over `span`, with
/// long-tailed latencies and a failure every `fail_every` runs.
#[allow(clippy::too_many_arguments)]
fn runs(
    m: &Arc<ProbeMeta>,
    location: &'static str,
    start: DateTime<Utc>,
    span: TimeDelta,
    every: i64,
    fail_every: usize,
    seed: &mut u64,
    out: &mut Vec<(Sample, RunRecord)>,
) {
    let n = span.num_seconds() / every;
    for i in 0..n as usize {
        let at = start + TimeDelta::seconds(i as i64 * every);
        let us = match i % 20 {
            0 => 200_000 + lcg(seed) % 3_000_000,
            1..=3 => 1_000 + lcg(seed) % 5_000,
            _ => 45_000 + lcg(seed) % 10_000,
        };
        let fails = fail_every > 0 && i % fail_every == fail_every - 1;
        let mut r = record(m, at, us, !fails);
        r.lateness_us = 300 + (lcg(seed) % 4_000) as i64;
        r.started_at = at + TimeDelta::microseconds(r.lateness_us);
        let class = CLASSES[i % 3];
        if fails {
            r.outcome.error = Some(ProbeError {
                class,
                message: format!("{} failed at run {i}", class.as_str()),
            });
        }
        let p = &r.outcome.phases;
        let sample = Sample {
            probe: if m.name == "checkout" {
                "checkout"
            } else if m.name == "search" {
                "search"
            } else {
                "legacy"
            },
            location,
            at,
            total_us: us,
            phases: [
                Some(p.total_us),
                p.dns_us,
                p.connect_us,
                p.tls_us,
                p.first_byte_us,
                p.transfer_us,
            ],
            success: !fails,
            class: fails.then(|| class.as_str()),
            message: r.outcome.error.as_ref().map(|e| e.message.clone()),
            lateness_us: r.lateness_us,
        };
        out.push((sample, r));
    }
}

async fn seeded() -> Ctx {
    let db = TestDb::create().await;
    let eu = Store::new(&db.url, "eu").unwrap();
    eu.migrate().await.unwrap();
    let us = Store::new(&db.url, "us").unwrap();

    let now = Utc::now();
    let minute = floor_to(now.timestamp(), 60);
    let hour = floor_to(now.timestamp(), 3_600);
    let base = DateTime::from_timestamp(minute, 0).unwrap();
    let h0 = DateTime::from_timestamp(hour, 0).unwrap() - TimeDelta::hours(3);

    let pay = json!({"team": "payments", "service": "checkout"});
    let checkout_v1 = meta("checkout", "v1aaaaaaaaaaaaaa", pay.clone());
    let checkout_v2 = meta("checkout", "v2bbbbbbbbbbbbbb", pay);
    let search = meta(
        "search",
        "s1cccccccccccccc",
        json!({"team": "discovery", "service": "search"}),
    );
    let legacy = meta("legacy", "l1dddddddddddddd", json!({}));

    let mut seed = 11;
    let (mut at_eu, mut at_us) = (Vec::new(), Vec::new());
    // The main window: two hours, then recent runs in the last hour.
    runs(
        &checkout_v1,
        "eu",
        h0,
        TimeDelta::hours(1),
        2,
        17,
        &mut seed,
        &mut at_eu,
    );
    runs(
        &checkout_v2,
        "eu",
        h0 + TimeDelta::hours(1),
        TimeDelta::hours(1),
        2,
        13,
        &mut seed,
        &mut at_eu,
    );
    runs(
        &checkout_v1,
        "us",
        h0,
        TimeDelta::hours(2),
        10,
        7,
        &mut seed,
        &mut at_us,
    );
    runs(
        &search,
        "eu",
        h0,
        TimeDelta::hours(2),
        10,
        0,
        &mut seed,
        &mut at_eu,
    );
    runs(
        &checkout_v2,
        "eu",
        base - TimeDelta::minutes(50),
        TimeDelta::minutes(40),
        10,
        9,
        &mut seed,
        &mut at_eu,
    );
    runs(
        &search,
        "us",
        base - TimeDelta::minutes(50),
        TimeDelta::minutes(40),
        30,
        0,
        &mut seed,
        &mut at_us,
    );
    // Three days ago: in the 30-day window only; legacy has nothing newer.
    let old = DateTime::from_timestamp(hour, 0).unwrap() - TimeDelta::days(3);
    runs(
        &checkout_v1,
        "eu",
        old,
        TimeDelta::hours(1),
        10,
        3,
        &mut seed,
        &mut at_eu,
    );
    runs(
        &legacy,
        "eu",
        old,
        TimeDelta::hours(1),
        60,
        4,
        &mut seed,
        &mut at_eu,
    );
    // The very last checkout run failed: its status is down.
    let last = base - TimeDelta::minutes(5);
    let mut r = record(&checkout_v2, last, 2_000_000, false);
    r.outcome.error = Some(ProbeError {
        class: ErrorClass::Timeout,
        message: "timeout: the last run".into(),
    });
    let s = Sample {
        probe: "checkout",
        location: "eu",
        at: last,
        total_us: 2_000_000,
        phases: {
            let p = &r.outcome.phases;
            [
                Some(p.total_us),
                p.dns_us,
                p.connect_us,
                p.tls_us,
                p.first_byte_us,
                p.transfer_us,
            ]
        },
        success: false,
        class: Some("timeout"),
        message: Some("timeout: the last run".into()),
        lateness_us: r.lateness_us,
    };
    at_eu.push((s, r));

    // Every state of the fold and rollup at once (migration 0011): runs before
    // h0+1h are folded into all three resolutions as late runs and packed
    // into hour blocks (migration 0015), those of [h0+1h, h0+2h) are folded
    // into minute rows and rolled up into hours and days, and later ones stay
    // pending, read through the live views.
    eu.start_rollups(h0 + TimeDelta::hours(1)).await.unwrap();
    let mut samples = Vec::new();
    for (store, batch) in [(&eu, at_eu), (&us, at_us)] {
        for chunk in batch.chunks(1_000) {
            let records: Vec<RunRecord> = chunk.iter().map(|(_, r)| r.clone()).collect();
            assert_eq!(
                store.write_runs(&records).await.unwrap(),
                records.len() as u64
            );
        }
        samples.extend(batch.into_iter().map(|(s, _)| s));
    }
    let rolled = eu
        .rollup(h0 + TimeDelta::hours(2) + TimeDelta::minutes(2))
        .await
        .unwrap();
    assert_eq!(rolled.map(|r| r.through), Some(h0 + TimeDelta::hours(2)));

    let pool = db.pool().await;
    let packed: (i64, i64) = sqlx::query_as(
        "select (select count(*) from run_blocks), (select count(*) from hist_minute_block)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        packed.0 > 0 && packed.1 > 0,
        "the panels read packed hours too: {packed:?}"
    );

    // Alert state as the alert engine keeps it: checkout firing at eu, search resolved at us.
    let at = |m: i64| h0 + TimeDelta::minutes(m);
    sqlx::query(
        "insert into alerts (alert_key, probe, rule, location, severity, state, since, fired_at, resolved_at,
                             consecutive_failures, last_error_class, last_error_message)
         values ('checkout/failing/eu', 'checkout', 'failing', 'eu', 'page', 'firing', $1, $1, null, 4,
                 'timeout', 'timeout: the last run'),
                ('search/failing/us', 'search', 'failing', 'us', 'ticket', 'resolved', $3, $2, $3, 0, null, null)",
    )
    .bind(at(31))
    .bind(at(41))
    .bind(at(50))
    .execute(&pool)
    .await
    .unwrap();
    for (key, from, to, minute) in [
        ("checkout/failing/eu", "ok", "pending", 30),
        ("checkout/failing/eu", "pending", "firing", 31),
        ("search/failing/us", "ok", "pending", 40),
        ("search/failing/us", "pending", "firing", 41),
        ("search/failing/us", "firing", "resolved", 50),
    ] {
        sqlx::query("insert into alert_transitions (alert_key, from_state, to_state, at, reason) values ($1, $2, $3, $4, 'seeded')")
            .bind(key)
            .bind(from)
            .bind(to)
            .bind(at(minute))
            .execute(&pool)
            .await
            .unwrap();
    }

    seed_changes(&pool, h0, now).await;

    let dashboards = dashboards();
    let queries = dashboards.iter().flat_map(queries).collect();
    Ctx {
        db,
        pool,
        dashboards,
        queries,
        seed: Seed { now, h0, samples },
    }
}

// === expectations ===

impl Seed {
    fn of<'a>(
        &'a self,
        probe: Option<&'a str>,
        locations: &'a [&'a str],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| probe.is_none_or(|p| s.probe == p) && locations.contains(&s.location))
    }
}

/// The stored table's step for an interval (the SQL's `prober_resolution`).
fn resolution_step(interval_s: i64) -> i64 {
    if interval_s >= 86_400 && interval_s % 86_400 == 0 {
        86_400
    } else if interval_s >= 3_600 && interval_s % 3_600 == 0 {
        3_600
    } else {
        60
    }
}

/// The `$__timeGroup` bucket a sample's stored row falls in, if `$__timeFilter` keeps the row.
fn stored_group(env: &Env, s: &Sample) -> Option<i64> {
    let t = floor_to(s.at.timestamp(), resolution_step(env.interval_s));
    (env.from.timestamp() <= t && t <= env.to.timestamp()).then(|| floor_to(t, env.interval_s))
}

/// The same for a query on raw runs (`scheduled_at`).
fn raw_group(env: &Env, s: &Sample) -> Option<i64> {
    (env.from <= s.at && s.at <= env.to).then(|| floor_to(s.at.timestamp(), env.interval_s))
}

fn close(got: Option<f64>, want: f64, tolerance: f64, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: null, expected {want}"));
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, expected {want}"
    );
}

fn availability(runs: &[&Sample]) -> f64 {
    let failures = runs.iter().filter(|s| !s.success).count() as f64;
    100.0 * (1.0 - failures / runs.len() as f64)
}

async fn check(ctx: &Ctx, uid: &str, key: &str) {
    let seed = &ctx.seed;
    let h0 = seed.h0;
    let h2 = h0 + TimeDelta::hours(2);
    let soon = seed.now + TimeDelta::minutes(1);
    let eu: &[&str] = &["eu"];
    let both: &[&str] = &["eu", "us"];
    match (uid, key) {
        ("prober-probe", "Latency percentiles (total)") => {
            let day0 = DateTime::from_timestamp(floor_to(h0.timestamp(), 86_400), 0).unwrap() - TimeDelta::days(4);
            for (interval, from, to, table) in [
                (60, h0, h2, "hist_minute"),
                (3_600, h0, h2, "hist_hour"),
                (86_400, day0, soon, "hist_day"),
            ] {
                let env = ctx
                    .env(uid, from, to, interval, &[("probe", Sel::Only(&["checkout"])), ("location", Sel::Only(eu))])
                    .await;
                let read = ctx.bin_tables_read(uid, key, &env).await;
                match table {
                    "hist_minute" => assert_eq!(read, [table, "hist_pending"], "interval {interval}s reads {table} and pending rows only"),
                    _ => assert_eq!(
                        read,
                        ["hist_minute", table, "hist_pending"],
                        "interval {interval}s reads {table}, the minutes not rolled up yet and pending rows"
                    ),
                }
                let mut want: BTreeMap<i64, Histogram<u64>> = BTreeMap::new();
                for s in seed.of(Some("checkout"), eu) {
                    if let Some(g) = stored_group(&env, s) {
                        want.entry(g).or_insert_with(hist).record(s.total_us).unwrap();
                    }
                }
                let f = ctx.panel(uid, key, &env).await;
                assert_eq!(f.columns, ["time", "p50", "p90", "p95", "p99"]);
                assert_eq!(f.rows.len(), want.len(), "one point per interval with runs ({interval}s)");
                for (row, (t, h)) in want.iter().enumerate() {
                    assert_eq!(f.i64(row, "time"), Some(*t));
                    for (col, q) in [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)] {
                        assert_eq!(
                            f.i64(row, col),
                            Some(h.value_at_quantile(q) as i64),
                            "{col} at {t} (interval {interval}s) equals HdrHistogram's on the same samples"
                        );
                    }
                }
            }
        }
        ("prober-probe", "Latency heatmap (total)") => {
            let env = ctx
                .env(uid, h0, h2, 3_600, &[("probe", Sel::Only(&["checkout"])), ("location", Sel::Only(eu))])
                .await;
            let quantiser = hist();
            let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
            for s in seed.of(Some("checkout"), eu) {
                if let Some(g) = stored_group(&env, s) {
                    let hi = quantiser.highest_equivalent(s.total_us);
                    let bound = 1u64 << (64 - hi.leading_zeros());
                    *want.entry((g, bound.to_string())).or_default() += 1;
                }
            }
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "metric", "value"]);
            let got: BTreeMap<(i64, String), i64> = (0..f.rows.len())
                .map(|r| ((f.i64(r, "time").unwrap(), f.str(r, "metric").unwrap()), f.i64(r, "value").unwrap()))
                .collect();
            assert_eq!(got, want, "runs per latency octave per hour");
        }
        ("prober-probe", "Phase breakdown (mean)") => {
            let env = ctx
                .env(uid, h0, h0 + TimeDelta::hours(1), 60, &[("probe", Sel::Only(&["checkout"])), ("location", Sel::Only(eu))])
                .await;
            let names = ["total", "dns", "connect", "tls", "first_byte", "transfer"];
            let mut sums: BTreeMap<(i64, String), (f64, f64)> = BTreeMap::new();
            for s in seed.of(Some("checkout"), eu) {
                if let Some(g) = stored_group(&env, s) {
                    for (i, v) in s.phases.iter().enumerate().skip(1) {
                        if let Some(v) = v {
                            let e = sums.entry((g, names[i].to_string())).or_default();
                            e.0 += *v as f64;
                            e.1 += 1.0;
                        }
                    }
                }
            }
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "metric", "value"]);
            assert_eq!(f.rows.len(), sums.len());
            for r in 0..f.rows.len() {
                let k = (f.i64(r, "time").unwrap(), f.str(r, "metric").unwrap());
                let (sum, n) = sums[&k];
                close(f.f64(r, "value"), sum / n, 0.051, &format!("mean of {k:?}"));
            }
        }
        ("prober-probe", "Availability") => {
            let env = ctx
                .env(uid, h0, h2, 3_600, &[("probe", Sel::Only(&["checkout"])), ("location", Sel::All)])
                .await;
            let mut groups: BTreeMap<i64, Vec<&Sample>> = BTreeMap::new();
            for s in seed.of(Some("checkout"), both) {
                if let Some(g) = stored_group(&env, s) {
                    groups.entry(g).or_default().push(s);
                }
            }
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "availability"]);
            assert_eq!(f.rows.len(), groups.len());
            for (r, (t, runs)) in groups.iter().enumerate() {
                assert_eq!(f.i64(r, "time"), Some(*t));
                close(f.f64(r, "availability"), availability(runs), 1e-9, "availability per hour");
            }
        }
        ("prober-probe", "Error classes") => {
            let env = ctx
                .env(uid, h0, h2, 600, &[("probe", Sel::Only(&["checkout"])), ("location", Sel::Only(eu))])
                .await;
            let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
            for s in seed.of(Some("checkout"), eu).filter(|s| !s.success) {
                if let Some(g) = raw_group(&env, s) {
                    *want.entry((g, s.class.unwrap().to_string())).or_default() += 1;
                }
            }
            assert!(want.keys().map(|(_, c)| c).collect::<BTreeSet<_>>().len() >= 3, "several classes seeded");
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "metric", "value"]);
            let got: BTreeMap<(i64, String), i64> = (0..f.rows.len())
                .map(|r| ((f.i64(r, "time").unwrap(), f.str(r, "metric").unwrap()), f.i64(r, "value").unwrap()))
                .collect();
            assert_eq!(got, want);
        }
        ("prober-probe", "Last failed runs") => {
            let from = h0 - TimeDelta::days(4);
            let env = ctx
                .env(uid, from, soon, 60, &[("probe", Sel::Only(&["checkout"])), ("location", Sel::All)])
                .await;
            let mut failed: Vec<&Sample> = seed.of(Some("checkout"), both).filter(|s| !s.success).collect();
            failed.sort_by_key(|s| std::cmp::Reverse(s.at));
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(
                f.columns,
                ["time", "location", "error_class", "status_code", "total_us", "error_message", "version", "run_id", "trace_id"]
            );
            assert_eq!(f.rows.len(), 50.min(failed.len()));
            assert_eq!(f.str(0, "error_message").as_deref(), Some("timeout: the last run"), "newest first");
            for (r, s) in failed.iter().take(f.rows.len()).enumerate() {
                let time: DateTime<Utc> = f.str(r, "time").unwrap().parse().unwrap();
                assert_eq!(time, s.at);
                assert_eq!(f.str(r, "error_class").as_deref(), s.class);
                assert_eq!(f.str(r, "location").as_deref(), Some(s.location));
                assert_eq!(f.str(r, "error_message"), s.message);
                assert_eq!(f.i64(r, "total_us"), Some(s.total_us as i64));
                let run_id = f.str(r, "run_id").unwrap();
                assert_eq!(f.str(r, "trace_id"), Some(run_id.replace('-', "")), "a run's trace id is its run id");
            }
        }
        ("prober-probe", "Summary over the range") => {
            for interval in [300, 3_600] {
                let env = ctx
                    .env(uid, h0, h2, interval, &[("probe", Sel::Only(&["checkout"])), ("location", Sel::Only(eu))])
                    .await;
                let runs: Vec<&Sample> = seed.of(Some("checkout"), eu).filter(|s| stored_group(&env, s).is_some()).collect();
                let mut h = hist();
                for s in &runs {
                    h.record(s.total_us).unwrap();
                }
                let f = ctx.panel(uid, key, &env).await;
                assert_eq!(f.columns, ["runs", "availability", "p50_us", "p95_us", "p99_us"]);
                assert_eq!(f.rows.len(), 1);
                assert_eq!(f.i64(0, "runs"), Some(runs.len() as i64));
                close(f.f64(0, "availability"), availability(&runs), 1e-9, "availability");
                for (col, q) in [("p50_us", 0.5), ("p95_us", 0.95), ("p99_us", 0.99)] {
                    assert_eq!(f.i64(0, col), Some(h.value_at_quantile(q) as i64), "{col} at interval {interval}s");
                }
            }
        }
        ("prober-probe", "variable: probe") => {
            let env = ctx.env(uid, h0, h2, 60, &[]).await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.first_column(), ["checkout", "legacy", "search"]);
        }
        ("prober-probe" | "prober-fleet" | "prober-health", "variable: location") => {
            let env = ctx.env(uid, h0, h2, 60, &[]).await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.first_column(), ["eu", "us"]);
        }
        ("prober-probe", "annotation: Alerts") => {
            let env = ctx
                .env(uid, h0, soon, 60, &[("probe", Sel::Only(&["checkout"])), ("location", Sel::All)])
                .await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "text", "tags"]);
            assert_eq!(f.rows.len(), 2, "checkout's two transitions, not search's");
            assert_eq!(f.str(1, "text").as_deref(), Some("failing pending -> firing at eu: seeded"));
            assert_eq!(f.str(1, "tags").as_deref(), Some("alert,firing"));
        }
        ("prober-probe", "annotation: Probe versions") => {
            let env = ctx
                .env(uid, seed.now - TimeDelta::hours(1), soon, 60, &[("probe", Sel::Only(&["checkout"]))])
                .await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "text", "tags"]);
            let texts: BTreeSet<String> = (0..f.rows.len()).map(|r| f.str(r, "text").unwrap()).collect();
            assert_eq!(
                texts,
                BTreeSet::from([
                    "probe version v1aaaaaaaaaaaaaa (probes/checkout.yaml:1)".to_string(),
                    "probe version v2bbbbbbbbbbbbbb (probes/checkout.yaml:1)".to_string(),
                ])
            );
        }
        ("prober-fleet", "variable: team") => {
            let env = ctx.env(uid, h0, h2, 60, &[]).await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.first_column(), ["discovery", "none", "payments"], "no team label: none");
        }
        ("prober-fleet", "variable: service") => {
            let env = ctx.env(uid, h0, h2, 60, &[("team", Sel::Only(&["payments"]))]).await;
            assert_eq!(ctx.panel(uid, key, &env).await.first_column(), ["checkout"]);
            let env = ctx.env(uid, h0, h2, 60, &[]).await;
            assert_eq!(ctx.panel(uid, key, &env).await.first_column(), ["checkout", "none", "search"]);
        }
        ("prober-fleet", "Probes") => check_fleet_probes(ctx).await,
        ("prober-fleet", "Recent changes")
        | ("prober-probe", "annotation: Trend findings" | "annotation: Change events") => {
            check_changes(ctx, uid, key).await
        }
        ("prober-fleet", "Firing alerts") => {
            let env = ctx.env(uid, h0, soon, 60, &[]).await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.rows.len(), 1);
            assert_eq!(f.str(0, "probe").as_deref(), Some("checkout"));
            assert_eq!(f.str(0, "team").as_deref(), Some("payments"));
            assert_eq!(f.str(0, "last_error_class").as_deref(), Some("timeout"));
            let env = ctx.env(uid, h0, soon, 60, &[("location", Sel::Only(&["us"]))]).await;
            assert!(ctx.panel(uid, key, &env).await.rows.is_empty(), "the location filter applies");
        }
        ("prober-fleet", "Availability, all selected probes") => {
            let env = ctx.env(uid, h0, h2, 3_600, &[]).await;
            let mut groups: BTreeMap<i64, Vec<&Sample>> = BTreeMap::new();
            for s in seed.of(None, both) {
                if let Some(g) = stored_group(&env, s) {
                    groups.entry(g).or_default().push(s);
                }
            }
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "availability"]);
            assert_eq!(f.rows.len(), groups.len());
            for (r, runs) in groups.values().enumerate() {
                close(f.f64(r, "availability"), availability(runs), 1e-9, "fleet availability");
            }
        }
        ("prober-fleet", "Failed runs by probe") => {
            let env = ctx.env(uid, h0, h2, 3_600, &[]).await;
            let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
            for s in seed.of(None, both).filter(|s| !s.success) {
                if let Some(g) = stored_group(&env, s) {
                    *want.entry((g, s.probe.to_string())).or_default() += 1;
                }
            }
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "metric", "value"]);
            let got: BTreeMap<(i64, String), i64> = (0..f.rows.len())
                .map(|r| ((f.i64(r, "time").unwrap(), f.str(r, "metric").unwrap()), f.i64(r, "value").unwrap()))
                .collect();
            assert_eq!(got, want);
        }
        ("prober-health", "Start lateness (stored runs)") => {
            let env = ctx.env(uid, h0, h0 + TimeDelta::minutes(30), 60, &[]).await;
            let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for s in seed.of(None, both) {
                if let Some(g) = raw_group(&env, s) {
                    groups.entry(g).or_default().push(s.lateness_us);
                }
            }
            let disc = |v: &[i64], q: f64| v[((q * v.len() as f64).ceil() as usize).max(1) - 1];
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "p50", "p99", "max"]);
            assert_eq!(f.rows.len(), groups.len());
            for (r, (t, v)) in groups.iter_mut().enumerate() {
                v.sort_unstable();
                assert_eq!(f.i64(r, "time"), Some(*t));
                assert_eq!(f.i64(r, "p50"), Some(disc(v, 0.5)));
                assert_eq!(f.i64(r, "p99"), Some(disc(v, 0.99)));
                assert_eq!(f.i64(r, "max"), v.last().copied());
            }
        }
        ("prober-health", "Runs stored per minute, by location") => {
            let env = ctx.env(uid, h0, h2, 3_600, &[]).await;
            let mut want: BTreeMap<(i64, String), f64> = BTreeMap::new();
            for s in seed.of(None, both) {
                if let Some(g) = stored_group(&env, s) {
                    *want.entry((g, s.location.to_string())).or_default() += 1.0 / 60.0;
                }
            }
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "metric", "value"]);
            assert_eq!(f.rows.len(), want.len());
            for r in 0..f.rows.len() {
                let k = (f.i64(r, "time").unwrap(), f.str(r, "metric").unwrap());
                close(f.f64(r, "value"), want[&k], 0.0006, &format!("runs per minute {k:?}"));
            }
        }
        ("prober-health", "Builds recording runs") => {
            let env = ctx.env(uid, h0 - TimeDelta::days(4), soon, 60, &[]).await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["build", "location", "first_run", "last_run", "runs"]);
            assert_eq!(f.rows.len(), 2);
            for r in 0..2 {
                assert_eq!(f.str(r, "build").as_deref(), Some(prober::VERSION));
                let loc = f.str(r, "location").unwrap();
                let n = seed.samples.iter().filter(|s| s.location == loc).count();
                assert_eq!(f.i64(r, "runs"), Some(n as i64), "runs at {loc}");
            }
        }
        _ => panic!(
            "{uid}/{key} has no expectation in tests/tests/it/dashboards.rs: add one (what it must return on the seeded runs)"
        ),
    }
}

async fn check_fleet_probes(ctx: &Ctx) {
    let (uid, key) = ("prober-fleet", "Probes");
    let seed = &ctx.seed;
    let now = seed.now;
    let env = ctx.env(uid, now - TimeDelta::hours(24), now, 60, &[]).await;
    let f = ctx.panel(uid, key, &env).await;
    let cols = [
        "probe",
        "team",
        "service",
        "status",
        "availability_1h",
        "availability_24h",
        "availability_30d",
        "p95_24h_us",
        "error_budget_left_30d",
        "firing_alerts",
        "runbook",
    ];
    assert_eq!(f.columns, cols);
    let probes: Vec<String> = (0..f.rows.len())
        .map(|r| f.str(r, "probe").unwrap())
        .collect();
    assert_eq!(
        probes,
        ["checkout", "legacy", "search"],
        "down probes first, then by name"
    );
    let statuses: Vec<String> = (0..3).map(|r| f.str(r, "status").unwrap()).collect();
    assert_eq!(statuses, ["down", "no data", "up"]);

    // The windows, as the SQL states them (now() is the database's, a moment later).
    let minute = |s: &Sample| floor_to(s.at.timestamp(), 60);
    let hour = |s: &Sample| floor_to(s.at.timestamp(), 3_600);
    let day = |s: &Sample| floor_to(s.at.timestamp(), 86_400);
    let checkout: Vec<&Sample> = seed.of(Some("checkout"), &["eu", "us"]).collect();
    let in_1h: Vec<&Sample> = checkout
        .iter()
        .copied()
        .filter(|s| minute(s) >= now.timestamp() - 3_600)
        .collect();
    let in_24h: Vec<&Sample> = checkout
        .iter()
        .copied()
        .filter(|s| hour(s) >= floor_to(now.timestamp(), 3_600) - 23 * 3_600)
        .collect();
    let in_30d: Vec<&Sample> = checkout
        .iter()
        .copied()
        .filter(|s| day(s) >= floor_to(now.timestamp(), 86_400) - 29 * 86_400)
        .collect();
    assert!(
        in_1h.len() < in_24h.len() && in_24h.len() < in_30d.len(),
        "the seeded windows differ"
    );
    close(
        f.f64(0, "availability_1h"),
        availability(&in_1h),
        1e-9,
        "1h",
    );
    close(
        f.f64(0, "availability_24h"),
        availability(&in_24h),
        1e-9,
        "24h",
    );
    close(
        f.f64(0, "availability_30d"),
        availability(&in_30d),
        1e-9,
        "30d",
    );
    let mut h = hist();
    for s in &in_24h {
        h.record(s.total_us).unwrap();
    }
    assert_eq!(
        f.i64(0, "p95_24h_us"),
        Some(h.value_at_quantile(0.95) as i64),
        "p95 over 24 h from hour bins"
    );
    let ratio = (100.0 - availability(&in_30d)) / 100.0;
    close(
        f.f64(0, "error_budget_left_30d"),
        100.0 * (1.0 - ratio / 0.001),
        1e-6,
        "budget at 99.9%",
    );
    assert_eq!(f.i64(0, "firing_alerts"), Some(1));
    assert_eq!(f.str(0, "team").as_deref(), Some("payments"));
    assert_eq!(
        f.str(0, "runbook").as_deref(),
        Some("https://runbooks.example/checkout")
    );
    assert_eq!(
        f.f64(1, "availability_1h"),
        None,
        "legacy has no recent runs"
    );
    assert_eq!(f.str(1, "team").as_deref(), Some("none"));
    assert_eq!(
        f.i64(2, "firing_alerts"),
        Some(0),
        "search's alert is resolved"
    );

    // A multi-value selection narrows the table.
    let env = ctx
        .env(
            uid,
            now - TimeDelta::hours(24),
            now,
            60,
            &[("team", Sel::Only(&["payments", "discovery"]))],
        )
        .await;
    let f = ctx.panel(uid, key, &env).await;
    let probes: Vec<String> = (0..f.rows.len())
        .map(|r| f.str(r, "probe").unwrap())
        .collect();
    assert_eq!(probes, ["checkout", "search"]);
}

// === trend findings and change events ===

/// Findings (`trends`) as the analysis stores them, and change events: a step
/// of checkout at eu when v2 starts, a week-long drift of checkout at us that
/// reaches into the range, a step of search at us, and one of checkout ten
/// days ago (outside every range and the fleet's last 7 days); events for
/// checkout, for search, for everyone (no labels) and for a label checkout lacks.
async fn seed_changes(pool: &sqlx::PgPool, h0: DateTime<Utc>, now: DateTime<Utc>) {
    let finding = |probe: &str, location: &str, phase: i16, statistic: &str, kind: &str| {
        sqlx::query(
            "insert into trends (probe_id, location_id, phase, statistic, kind, detected_at, updated_at,
                                 change_at, window_end, before_value, after_value, absolute_change,
                                 relative_change, p_value, effect_size, summary, state)
             select p.id, l.id, $3, $4, $5, $6, $6, $7, $8, $9, $10, $10 - $9, ($10 - $9) / $9, 1e-6,
                    0.8, $11, $12
             from probes p, locations l where p.name = $1 and l.name = $2",
        )
        .bind(probe.to_string())
        .bind(location.to_string())
        .bind(phase)
        .bind(statistic.to_string())
        .bind(kind.to_string())
    };
    let h = |m: i64| h0 + TimeDelta::minutes(m);
    for (q, detected, change, end, before, after, summary, state) in [
        (
            finding("checkout", "eu", 0, "p50", "step"),
            h(150),
            h(60),
            h(120),
            50_000.0,
            65_000.0,
            "checkout (eu): total p50 +15 ms",
            "open",
        ),
        (
            finding("checkout", "us", 4, "p95", "drift"),
            h(170),
            h0 - TimeDelta::days(3),
            h(175),
            40_000.0,
            42_000.0,
            "checkout (us): first_byte p95 rising 2 ms/day",
            "acknowledged",
        ),
        (
            finding("search", "us", 0, "failure_ratio", "step"),
            h(160),
            h(90),
            h(120),
            0.01,
            0.2,
            "search (us): failure ratio 1 % -> 20 %",
            "open",
        ),
        (
            finding("checkout", "eu", 0, "p99", "step"),
            now - TimeDelta::days(10),
            now - TimeDelta::days(10),
            now - TimeDelta::days(10),
            90_000.0,
            120_000.0,
            "checkout (eu): an old step",
            "ended",
        ),
    ] {
        q.bind(detected)
            .bind(change)
            .bind(end)
            .bind(before)
            .bind(after)
            .bind(summary)
            .bind(state)
            .execute(pool)
            .await
            .unwrap();
    }
    for (at, title, labels) in [
        (
            h(65),
            "deploy checkout v2.3",
            json!({"service": "checkout"}),
        ),
        (h(30), "deploy search 7.1", json!({"service": "search"})),
        (h(90), "network maintenance", json!({})),
        (
            h(95),
            "prod config push",
            json!({"team": "payments", "env": "prod"}),
        ),
    ] {
        sqlx::query("insert into change_events (at, title, labels) values ($1, $2, $3)")
            .bind(at)
            .bind(title)
            .bind(labels)
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn check_changes(ctx: &Ctx, uid: &str, key: &str) {
    let (h0, now) = (ctx.seed.h0, ctx.seed.now);
    let soon = now + TimeDelta::minutes(1);
    let time =
        |f: &Frame, r: usize, c: &str| f.str(r, c).unwrap().parse::<DateTime<Utc>>().unwrap();
    let column = |f: &Frame, c: &str| {
        (0..f.rows.len())
            .map(|r| f.str(r, c).unwrap())
            .collect::<Vec<_>>()
    };
    match key {
        "annotation: Trend findings" => {
            let env = ctx
                .env(
                    uid,
                    h0,
                    soon,
                    60,
                    &[("probe", Sel::Only(&["checkout"])), ("location", Sel::All)],
                )
                .await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "timeEnd", "text", "tags"]);
            // The drift began before the range and reaches into it: a region; the step is a point.
            assert_eq!(
                column(&f, "tags"),
                ["trend,drift,p95,first_byte", "trend,step,p50,total"]
            );
            assert_eq!(time(&f, 0, "timeEnd"), h0 + TimeDelta::minutes(175));
            assert_eq!(
                (time(&f, 1, "time"), time(&f, 1, "timeEnd")),
                (h0 + TimeDelta::hours(1), h0 + TimeDelta::hours(1))
            );
            assert_eq!(
                f.str(1, "text").as_deref(),
                Some("checkout (eu): total p50 +15 ms [open]")
            );
            assert!(
                f.str(0, "text").unwrap().ends_with("[acknowledged]"),
                "{f:?}"
            );
            let env = ctx
                .env(
                    uid,
                    h0,
                    soon,
                    60,
                    &[
                        ("probe", Sel::Only(&["checkout"])),
                        ("location", Sel::Only(&["us"])),
                    ],
                )
                .await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(
                column(&f, "tags"),
                ["trend,drift,p95,first_byte"],
                "the location filter applies"
            );
            let env = ctx
                .env(
                    uid,
                    h0,
                    h0 + TimeDelta::minutes(30),
                    60,
                    &[("probe", Sel::Only(&["search"])), ("location", Sel::All)],
                )
                .await;
            assert!(
                ctx.panel(uid, key, &env).await.rows.is_empty(),
                "search's step is after the range"
            );
        }
        "annotation: Change events" => {
            let env = ctx
                .env(uid, h0, soon, 60, &[("probe", Sel::Only(&["checkout"]))])
                .await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(f.columns, ["time", "text", "tags"]);
            // Events whose labels are all checkout's: not search's, not one that names env=prod.
            assert_eq!(
                column(&f, "text"),
                ["deploy checkout v2.3", "network maintenance"]
            );
            assert_eq!(column(&f, "tags"), ["event,service=checkout", "event"]);
            assert_eq!(time(&f, 0, "time"), h0 + TimeDelta::minutes(65));
            let env = ctx
                .env(uid, h0, soon, 60, &[("probe", Sel::Only(&["search"]))])
                .await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(
                column(&f, "text"),
                ["deploy search 7.1", "network maintenance"]
            );
            let env = ctx
                .env(
                    uid,
                    h0 + TimeDelta::minutes(70),
                    soon,
                    60,
                    &[("probe", Sel::Only(&["legacy"]))],
                )
                .await;
            assert_eq!(
                column(&ctx.panel(uid, key, &env).await, "text"),
                ["network maintenance"],
                "a probe without labels"
            );
        }
        "Recent changes" => {
            let env = ctx.env(uid, h0, soon, 60, &[]).await;
            let f = ctx.panel(uid, key, &env).await;
            assert_eq!(
                f.columns,
                [
                    "probe",
                    "location",
                    "phase",
                    "statistic",
                    "kind",
                    "change_at",
                    "before_ms",
                    "after_ms",
                    "relative_change",
                    "state",
                    "summary"
                ]
            );
            // The last 7 days, newest change first; the old step is not listed.
            assert_eq!(
                column(&f, "summary"),
                [
                    "search (us): failure ratio 1 % -> 20 %",
                    "checkout (eu): total p50 +15 ms",
                    "checkout (us): first_byte p95 rising 2 ms/day"
                ]
            );
            assert_eq!(
                (f.str(1, "phase").as_deref(), f.str(2, "phase").as_deref()),
                (Some("total"), Some("first_byte"))
            );
            assert_eq!(time(&f, 1, "change_at"), h0 + TimeDelta::hours(1));
            close(f.f64(1, "before_ms"), 50.0, 1e-9, "before_ms");
            close(f.f64(1, "after_ms"), 65.0, 1e-9, "after_ms");
            close(f.f64(1, "relative_change"), 0.3, 1e-9, "relative_change");
            assert_eq!(
                (f.f64(0, "before_ms"), f.f64(0, "after_ms")),
                (None, None),
                "a failure ratio has no ms"
            );
            close(
                f.f64(0, "relative_change"),
                19.0,
                1e-9,
                "failure ratio change",
            );
            assert_eq!(column(&f, "state"), ["open", "open", "acknowledged"]);
            let env = ctx
                .env(
                    uid,
                    h0,
                    soon,
                    60,
                    &[("team", Sel::Only(&["payments"])), ("service", Sel::All)],
                )
                .await;
            assert_eq!(
                column(&ctx.panel(uid, key, &env).await, "probe"),
                ["checkout", "checkout"],
                "team filter"
            );
            let env = ctx
                .env(uid, h0, soon, 60, &[("location", Sel::Only(&["us"]))])
                .await;
            assert_eq!(
                column(&ctx.panel(uid, key, &env).await, "location"),
                ["us", "us"],
                "location filter"
            );
        }
        other => panic!("no expectation for {uid}/{other}"),
    }
}

#[test]
fn trend_annotations_are_on_the_latency_panels() {
    let d = dashboards()
        .into_iter()
        .find(|d| d.uid == "prober-probe")
        .unwrap();
    for name in ["Trend findings", "Change events"] {
        let a = d.json["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap();
        assert_eq!(a["filter"]["exclude"], false, "{name}");
        let titles: BTreeSet<&str> = a["filter"]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| {
                panels(&d.json)
                    .into_iter()
                    .find(|p| &p["id"] == id)
                    .unwrap()["title"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            titles,
            BTreeSet::from([
                "Latency percentiles (total)",
                "Latency heatmap (total)",
                "Phase breakdown (mean)"
            ]),
            "{name}"
        );
    }
}

// === the tests ===

#[test]
fn every_dashboard_query_has_an_expectation_and_every_expectation_a_query() {
    let found: BTreeSet<(String, String)> = dashboards()
        .iter()
        .flat_map(queries)
        .map(|q| (q.uid, q.key))
        .collect();
    let covered: BTreeSet<(String, String)> = COVERED
        .iter()
        .map(|(u, k)| (u.to_string(), k.to_string()))
        .collect();
    let untested: Vec<_> = found.difference(&covered).collect();
    let stale: Vec<_> = covered.difference(&found).collect();
    assert!(
        untested.is_empty(),
        "dashboard queries without an expectation in COVERED and check(): {untested:?}"
    );
    assert!(
        stale.is_empty(),
        "expectations for queries no dashboard has: {stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_the_expected_columns_and_values_on_seeded_runs() {
    let _shared = crate::helpers::TIMING.read().await;
    let ctx = seeded().await;
    for q in &ctx.queries {
        check(&ctx, &q.uid, &q.key).await;
    }
    drop(ctx.pool);
    drop(ctx.db);
}

#[test]
fn provisioning_points_at_the_dashboards_and_the_data_sources_they_use() {
    let dir = dashboards_dir().join("provisioning");
    let sources = std::fs::read_to_string(dir.join("datasources.yaml")).unwrap();
    let sources = &prober::config::yaml::parse(&sources).unwrap()[0].value;
    let list = sources["datasources"].as_array().unwrap();
    let uid_of = |t: &str| {
        list.iter()
            .find(|d| d["type"] == t)
            .map(|d| d["uid"].clone())
    };
    assert_eq!(
        uid_of("grafana-postgresql-datasource"),
        Some(json!(POSTGRES_UID))
    );
    assert_eq!(uid_of("prometheus"), Some(json!(PROMETHEUS_UID)));
    let pg = list.iter().find(|d| d["uid"] == POSTGRES_UID).unwrap();
    assert_eq!(
        pg["jsonData"]["timeInterval"], "1m",
        "the data source's minimum interval is the storage step"
    );
    let boards = std::fs::read_to_string(dir.join("dashboards.yaml")).unwrap();
    let boards = &prober::config::yaml::parse(&boards).unwrap()[0].value;
    assert_eq!(boards["providers"][0]["type"], "file");
    // Every data source a dashboard names is provisioned.
    for d in dashboards() {
        for p in panels(&d.json) {
            let uid = &p["datasource"]["uid"];
            assert!(
                list.iter().any(|s| &s["uid"] == uid),
                "{}/{}: data source {uid}",
                d.uid,
                p["title"]
            );
        }
    }
}

/// The body of a chunked response (`/metrics` is streamed).
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    body
}

/// The metric names the Prometheus panels use, e.g. `prober_store_errors_total`.
fn prometheus_metric_names() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in dashboards() {
        for p in panels(&d.json) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let Some(expr) = t["expr"].as_str() else {
                    continue;
                };
                assert_eq!(t["datasource"]["uid"], PROMETHEUS_UID);
                let mut rest = expr;
                while let Some(i) = rest.find("prober_") {
                    let name: String = rest[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    rest = &rest[i + name.len()..];
                    out.insert(name, format!("{}/{}", d.uid, p["title"]));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_panels_use_only_metrics_the_daemon_exports() {
    let _shared = crate::helpers::TIMING.read().await;
    let names = prometheus_metric_names();
    assert!(
        names.len() >= 8,
        "the health dashboard's Prometheus panels: {names:?}"
    );
    let db = TestDb::create().await;
    let target = crate::helpers::FakeTarget::start().await;
    let settings = prober::config::settings::Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    };
    let yaml = format!(
        "name: p\nevery: 1s\ntimeout: 900ms\nhttp: {{url: \"{}\"}}\n",
        target.url("/ok")
    );
    let daemon = prober::daemon::Daemon::start(
        &settings,
        crate::helpers::probes(&yaml),
        prober::daemon::http_executor().unwrap(),
    )
    .await
    .unwrap();
    let (code, body) = crate::helpers::http_get(daemon.addr, "/metrics").await;
    daemon.shutdown().await;
    assert_eq!(code, 200);
    let page = dechunk(&body);
    let exported: BTreeSet<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for (name, panel) in &names {
        assert!(
            exported.contains(name.as_str()),
            "{panel} uses {name}, which /metrics does not export"
        );
    }
}
