//! History queries: seeds `days` of minute data for `probes` probes (phase
//! `total` only, one run a minute) with `generate_series` into the real
//! histogram rows (migration 0011), rolls it up into hour and day rows as the
//! fold would, then times the API's heaviest reads through a running daemon's
//! HTTP API.

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};

use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use prober::results::hist::{bin_key, Quantiser};

use crate::dashboards::{self, median_and_max};
use crate::db::{check_database_url, recreate_database};
use crate::probes::build_probes;
use crate::target::Target;

/// Distinct latencies the seeded bins are drawn from.
const SAMPLES: usize = 1000;
/// Timed requests per endpoint (after two untimed ones).
const REPEAT: usize = 20;
/// Timed runs of each dashboard query (after one untimed).
const DASHBOARD_REPEAT: usize = 5;

/// Figures of the history phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryFigures {
    pub probes: usize,
    pub days: u32,
    /// Seconds spent seeding; None when an existing seed was reused.
    pub seed_s: Option<f64>,
    pub minute_rows: i64,
    pub hour_rows: i64,
    pub database_mib: f64,
    /// `GET /api/v1/probes` (every probe, last hour and last day windows): p50, max ms.
    pub overview_ms: [f64; 2],
    /// One probe's percentiles over 30 days in one step (`step=30d`, day bins): p50, max ms.
    pub p95_30d_ms: [f64; 2],
    /// One probe over 30 days at the default step (3 h, hour bins): p50, max ms.
    pub series_30d_ms: [f64; 2],
    /// The same at `step=1h` (720 points from hour bins): p50, max ms.
    pub series_30d_1h_ms: [f64; 2],
    /// The fleet dashboard's "Probes" table over every probe (its SQL from
    /// `dashboards/fleet-overview.json`): p50, max ms.
    #[serde(default)]
    pub fleet_table_ms: [f64; 2],
    /// The probe dashboard's "Latency percentiles (total)" over 30 days at a
    /// 1h interval (hour bins): p50, max ms.
    #[serde(default)]
    pub probe_percentiles_30d_ms: [f64; 2],
    /// The built-in overview page (`GET /`, every probe with 1 h, 24 h and
    /// 30 d windows and 90-day bars): p50, max ms, and its bytes.
    #[serde(default)]
    pub ui_overview_ms: [f64; 2],
    #[serde(default)]
    pub ui_overview_bytes: usize,
    /// One probe's page over 30 days (`GET /probes/{name}?range=30d`): p50, max ms.
    #[serde(default)]
    pub ui_probe_30d_ms: [f64; 2],
}

/// The seeded latency of sample `i` of `SAMPLES`: ≈ 45–55 ms with a tail to ≈ 250 ms.
fn sample_us(i: usize) -> u64 {
    let x = (i as f64 + 0.5) / SAMPLES as f64;
    (45_000.0 + 10_000.0 * x + 200_000.0 * x.powi(40)) as u64
}

/// Seeds (or reuses) the database and times the reads.
pub async fn measure(
    url: &str,
    probes: usize,
    days: u32,
    keep: bool,
    target: &Target,
) -> Result<HistoryFigures, String> {
    let db = check_database_url(url)?;
    let mut figures = HistoryFigures {
        probes,
        days,
        ..HistoryFigures::default()
    };
    let reuse = keep && seeded_probes(url).await.is_some_and(|n| n >= probes as i64);
    if !reuse {
        let started = Instant::now();
        let admin = recreate_database(url, &db).await?;
        let _ = admin.close().await;
        let store = prober::store::Store::new(url, "local").map_err(|e| e.to_string())?;
        store.migrate().await.map_err(|e| e.to_string())?;
        drop(store);
        seed(url, probes, days).await?;
        figures.seed_s = Some(started.elapsed().as_secs_f64());
    }
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect to {db}: {e}"))?;
    figures.minute_rows = sqlx::query_scalar("select count(*) from hist_minute")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("count: {e}"))?;
    figures.hour_rows = sqlx::query_scalar("select count(*) from hist_hour")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("count: {e}"))?;
    let bytes: i64 = sqlx::query_scalar("select pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("size: {e}"))?;
    figures.database_mib = bytes as f64 / 1024.0 / 1024.0;
    let _ = conn.close().await;

    time_api(url, probes, target, &mut figures).await?;
    time_dashboards(url, probes, &mut figures).await?;
    Ok(figures)
}

/// Times the dashboards' heaviest queries ([`crate::dashboards`]) for every
/// probe and, for the probe panel, 30 days (a 1h interval, hour bins). Run
/// after the daemon registered the probes (`probe_info`).
async fn time_dashboards(
    url: &str,
    probes: usize,
    figures: &mut HistoryFigures,
) -> Result<(), String> {
    let to = Utc::now();
    let from = to - TimeDelta::days(30);
    // The daemon registers a probe's version at its first run, and these run
    // hourly: most seeded probes have no row in `probe_info` yet, so every
    // probe stands in for it (no labels: team and service `none`).
    let fleet = dashboards::fleet_table_sql()?.replace(
        "from probe_info",
        "from (select id as probe_id, name as probe, 'none'::text as team, 'none'::text as service, null::text as runbook from probes) probe_info",
    );
    let probe = format!("bench-{:05}", probes.div_ceil(2));
    let percentiles = dashboards::probe_percentiles_sql(&probe, from, to)?;
    let pool = dashboards::query_pool(url).await?;
    figures.fleet_table_ms = dashboards::time_sql(&pool, &fleet, DASHBOARD_REPEAT).await?;
    figures.probe_percentiles_30d_ms =
        dashboards::time_sql(&pool, &percentiles, DASHBOARD_REPEAT).await?;
    pool.close().await;
    Ok(())
}

async fn seeded_probes(url: &str) -> Option<i64> {
    let mut conn = PgConnection::connect(url).await.ok()?;
    let n = sqlx::query_scalar("select count(*) from (select 1 from hist_minute limit 1) x")
        .fetch_one(&mut conn)
        .await
        .ok()
        .filter(|n: &i64| *n > 0)
        .and(
            sqlx::query_scalar("select count(*) from probes")
                .fetch_one(&mut conn)
                .await
                .ok(),
        );
    let _ = conn.close().await;
    n
}

/// Inserts the probes, then each UTC day's minute bins and counters and their
/// hour and day rollups, two days at a time (one connection per core).
async fn seed(url: &str, probes: usize, days: u32) -> Result<(), String> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| format!("seed: {e}"))?;
    sqlx::query(
        "insert into probes (name) select 'bench-' || lpad(i::text, 5, '0') from generate_series(1, $1) i",
    )
    .bind(probes as i32)
    .execute(&mut conn)
    .await
    .map_err(|e| format!("seed probes: {e}"))?;
    // A version each, as the daemon registers them: the dashboards list probes through it.
    sqlx::query(
        "insert into probe_versions (probe_id, version, definition, source)
         select id, 'bench', '{}'::jsonb, 'prober-bench' from probes on conflict do nothing",
    )
    .execute(&mut conn)
    .await
    .map_err(|e| format!("seed probe versions: {e}"))?;
    let location: i16 = sqlx::query_scalar(
        "insert into locations (name) values ('local') on conflict (name) do update set name = excluded.name returning id",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| format!("seed location: {e}"))?;
    let _ = conn.close().await;

    let now = Utc::now();
    let end = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    // As the daemon leaves it: hours before the current one rolled up, this
    // hour's minutes only in the minute rows.
    let rolled = end.duration_trunc(TimeDelta::hours(1)).unwrap_or(end);
    let start = end - TimeDelta::days(i64::from(days));
    let mut day = start.duration_trunc(TimeDelta::days(1)).unwrap_or(start);
    let mut spans = Vec::new();
    while day < end {
        let next = day + TimeDelta::days(1);
        spans.push((day.max(start), next.min(end), day));
        day = next;
    }
    let (los, his): (Vec<i64>, Vec<i64>) = (0..SAMPLES)
        .map(|i| {
            let us = sample_us(i);
            (i64::from(bin_key(us)), Quantiser::get().bin(us).1 as i64)
        })
        .unzip();
    // Partitions first: creating one locks its parent against the other worker's inserts.
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| format!("seed: {e}"))?;
    for (_, _, day) in &spans {
        for table in ["hist_minute"] {
            sqlx::query("select prober_ensure_partition($1, $2::date)")
                .bind(table)
                .bind(day.date_naive())
                .execute(&mut conn)
                .await
                .map_err(|e| format!("seed partition: {e}"))?;
        }
    }
    let _ = conn.close().await;
    let spans = std::sync::Arc::new(parking_lot::Mutex::new(spans));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (url, spans, los, his) = (url.to_string(), spans.clone(), los.clone(), his.clone());
        workers.spawn(async move {
            let mut conn = PgConnection::connect(&url)
                .await
                .map_err(|e| format!("seed: {e}"))?;
            sqlx::query("set time zone 'UTC'")
                .execute(&mut conn)
                .await
                .map_err(|e| format!("seed: {e}"))?;
            loop {
                let next = spans.lock().pop();
                let Some((from, to, day)) = next else { break };
                seed_day(&mut conn, (from, to, rolled), day, location, &los, &his).await?;
            }
            let _ = conn.close().await;
            Ok::<(), String>(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r.map_err(|e| format!("seed worker: {e}"))??;
    }
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| format!("seed: {e}"))?;
    // The hours before `rolled` are in the hour and day rows: the rollup
    // goes on from there, and the recent rows start as its would.
    sqlx::query(
        "insert into hist_mark (rolled_through) values ($1)
         on conflict (only_row) do update set rolled_through = excluded.rolled_through",
    )
    .bind(rolled)
    .execute(&mut conn)
    .await
    .map_err(|e| format!("seed mark: {e}"))?;
    sqlx::query("select prober_recent_refresh($1, null, null)")
        .bind(rolled)
        .execute(&mut conn)
        .await
        .map_err(|e| format!("seed recent rows: {e}"))?;
    sqlx::query("vacuum (analyze) hist_minute, hist_hour, hist_day, hist_recent, probes")
        .execute(&mut conn)
        .await
        .map_err(|e| format!("seed vacuum: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// One day: minute rows from `generate_series`, then the hour and day rows
/// merged from them (what the fold and rollup add up to) for the minutes
/// before `rolled`, the mark.
async fn seed_day(
    conn: &mut PgConnection,
    (from, to, rolled): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>),
    day: DateTime<Utc>,
    location: i16,
    los: &[i64],
    his: &[i64],
) -> Result<(), String> {
    let started = Instant::now();
    // `$3`: the samples' bin keys, `$4`: their high ends (the sum of µs).
    let statements = [
        // Every probe, every minute: one run, in the bin of a pseudo-random sample.
        "with s as (
             select m, p.id pid,
                    1 + ((p.id::bigint * 7919 + (extract(epoch from m)::bigint / 60) * 104729) % $5)::int k
             from probes p, generate_series($1::timestamptz, $2::timestamptz - interval '1 minute', interval '1 minute') m)
         insert into hist_minute (probe_id, location_id, minute, bins, stats, sums)
         select pid, $6, m, array[(($3::bigint[])[k] << 32) | 1], array[(1::bigint << 24) | (k % 200 = 0)::int],
                array[($4::bigint[])[k]]
         from s order by pid, m",
        "insert into hist_hour (probe_id, location_id, hour, bins, stats, sums)
         select probe_id, location_id, date_trunc('hour', minute), prober_merge(bins),
                array[(sum(prober_runs(stats, 0))::bigint << 24) | sum(prober_failures(stats, 0))::bigint],
                array[sum(sums[1])::bigint]
         from hist_minute where minute >= $1 and minute < $2
         group by 1, 2, 3 order by 1, 3",
        "insert into hist_day (probe_id, location_id, day, bins, stats, sums)
         select probe_id, location_id, date_trunc('day', minute), prober_merge(bins),
                array[(sum(prober_runs(stats, 0))::bigint << 24) | sum(prober_failures(stats, 0))::bigint],
                array[sum(sums[1])::bigint]
         from hist_minute where minute >= $1 and minute < $2
         group by 1, 2, 3",
    ];
    for (i, sql) in statements.into_iter().enumerate() {
        // The minute rows end at `to`, the hour and day rows at the mark.
        let until = if i == 0 { to } else { to.min(rolled) };
        sqlx::query(sql)
            .bind(from)
            .bind(until)
            .bind(los)
            .bind(his)
            .bind(los.len() as i64)
            .bind(location)
            .execute(&mut *conn)
            .await
            .map_err(|e| format!("seed {}: {e}", day.date_naive()))?;
    }
    eprintln!(
        "bench: seeded {} in {:.1} s",
        day.date_naive(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Starts the daemon on the seeded database (probes every hour, so it barely
/// runs any) and times the API's reads.
async fn time_api(
    url: &str,
    probes: usize,
    target: &Target,
    figures: &mut HistoryFigures,
) -> Result<(), String> {
    let defs = build_probes(
        probes,
        Duration::from_secs(3600),
        Duration::from_secs(5),
        target.addr,
    )?;
    let settings = Settings {
        database_url: url.to_string(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Settings::default()
    };
    let exec = http_executor().map_err(|e| format!("cannot build the probe runner: {e}"))?;
    let daemon = Daemon::start(&settings, defs, exec)
        .await
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    let base = format!("http://{}", daemon.addr);
    let result = time_requests(&base, probes).await;
    daemon.shutdown().await;
    let ([overview, p95, series, hourly, page, probe_page], bytes) = result?;
    figures.overview_ms = overview;
    figures.p95_30d_ms = p95;
    figures.series_30d_ms = series;
    figures.series_30d_1h_ms = hourly;
    figures.ui_overview_ms = page;
    figures.ui_overview_bytes = bytes;
    figures.ui_probe_30d_ms = probe_page;
    Ok(())
}

/// The API's reads and the pages' (p50 and max ms each), and the overview page's bytes.
async fn time_requests(base: &str, probes: usize) -> Result<([[f64; 2]; 6], usize), String> {
    let client = reqwest::Client::new();
    let to = Utc::now();
    let from = to - TimeDelta::days(30);
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let probe = format!("bench-{:05}", probes.div_ceil(2));
    let latency = |step: &str| {
        format!(
            "{base}/api/v1/probes/{probe}/latency?from={}&to={}{step}",
            rfc(from),
            rfc(to)
        )
    };
    let urls = [
        format!("{base}/api/v1/probes"),
        latency("&step=30d"),
        latency(""),
        latency("&step=1h"),
        format!("{base}/"),
        format!("{base}/probes/{probe}?range=30d"),
    ];
    let mut out = [[0.0; 2]; 6];
    let mut overview_bytes = 0;
    for (i, url) in urls.iter().enumerate() {
        let mut times = Vec::with_capacity(REPEAT);
        for n in 0..REPEAT + 2 {
            let started = Instant::now();
            let r = client
                .get(url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = r.status();
            let body = r.text().await.map_err(|e| format!("GET {url}: {e}"))?;
            let took = started.elapsed().as_secs_f64() * 1000.0;
            if !status.is_success() {
                return Err(format!("GET {url}: {status}: {body}"));
            }
            if n >= 2 {
                times.push(took);
            }
            if i == 4 {
                overview_bytes = body.len();
            }
        }
        out[i] = median_and_max(times);
    }
    Ok((out, overview_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_latencies_centre_on_50_ms_with_a_tail() {
        assert!((45_000..46_000).contains(&sample_us(0)));
        assert!((49_000..51_000).contains(&sample_us(SAMPLES / 2)));
        assert!(sample_us(SAMPLES - 1) > 200_000);
    }
}
