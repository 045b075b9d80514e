//! `--storage`: what the store keeps on disk per run, and how fast its
//! heaviest reads are over it. Writes `probes` × `hours` of synthetic runs
//! (see [`synth`]) scheduled in the past and ending now, in batches of
//! [`BATCH`] (or a minute's runs, if fewer) in time order, through the real writer path
//! (`Store::write_runs`), rolling up as the daemon's writer does
//! (`start_rollups` at the start of the period, `rollup` with the synthetic
//! clock each time a batch passes a new minute, `ensure_partitions_around`
//! each new day). Then a final rollup, `VACUUM ANALYZE`, the size of every
//! table of schema `public` (partitions under their root, found in the
//! catalog so the figures follow whatever schema is current), and the
//! timings of the dashboards' and the store's reads over the seeded range.

mod report;
mod synth;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use serde::Serialize;

use prober::run::{ProbeMeta, RunRecord};
use prober::store::{Resolution, Store};

use crate::args::BenchArgs;
use crate::dashboards::{self, time_op, time_sql};
use crate::db::fresh_store;
use crate::probes::build_probes_of;
pub use report::Relation;

/// The page of runs the runs API returns by default (`DEFAULT_RUNS_PAGE`).
const RUNS_PAGE: i64 = 100;

/// The location the seeded runs are written as (their run ids derive from it).
const LOCATION: &str = "local";

/// Runs per `write_runs` call.
pub const BATCH: usize = 1000;
/// `--probes` when `--storage` is given without it.
pub const DEFAULT_PROBES: usize = 100;
/// `--every` when `--storage` is given without it.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);
/// The longest `--every` of the storage mode.
const MAX_EVERY: Duration = Duration::from_secs(3600);
/// Timed runs of each read (after one untimed).
const REPEAT: usize = 5;
/// The URL of the synthetic probes (never fetched).
const PROBE_URL: &str = "https://bench.example/health";

/// Figures of one storage run.
#[derive(Debug, Clone, Serialize)]
pub struct StorageFigures {
    pub probes: usize,
    pub every_ms: u64,
    pub hours: u32,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The newest migration applied: which schema was measured.
    pub schema_version: i64,
    pub seeded: Seeded,
    /// Tables of schema `public`, partitions summed under their root, largest first.
    pub relations: Vec<Relation>,
    pub database_bytes: i64,
    /// What was timed, p50 and max ms.
    pub reads: Vec<(String, [f64; 2])>,
    /// The hour rows once packed into day blocks.
    pub hour_blocks: HourBlocks,
}

/// The hour rows before and after `prober_pack_hours` (migration 0020) packed
/// them into day blocks, as the rollup does 35 days on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HourBlocks {
    pub hour_rows: i64,
    /// `hist_hour` before packing, indexes and TOAST included.
    pub row_bytes: i64,
    pub blocks: i64,
    /// `hist_hour_block` after packing, indexes and TOAST included.
    pub block_bytes: i64,
}

/// What seeding did and how long it took.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seeded {
    /// Runs `write_runs` stored.
    pub runs: u64,
    pub batches: u64,
    pub rollups: u64,
    /// Wall time of the whole seeding, generation and maintenance included.
    pub wall_s: f64,
    /// Time inside `write_runs`.
    pub write_s: f64,
    /// Time inside `rollup` and the vacuum after it.
    pub rollup_s: f64,
    /// Time inside `ensure_partitions_around` and `start_rollups`.
    pub maintenance_s: f64,
}

/// Runs the storage benchmark; returns the text to print.
pub async fn run(args: &BenchArgs) -> Result<String, String> {
    if args.probes == 0 || args.storage_hours == 0 {
        return Err("--probes and --storage-hours must be at least 1".into());
    }
    if args.every > MAX_EVERY {
        return Err("--storage: --every must be at most 3600s".into());
    }
    let store = fresh_store(&args.database_url, LOCATION).await?;
    let metas = metas(args.probes, args.every)?;
    let now = Utc::now();
    let to = now.duration_trunc(TimeDelta::seconds(1)).unwrap_or(now);
    let from = to - TimeDelta::hours(i64::from(args.storage_hours));
    eprintln!(
        "bench: storage: {} probes every {} ms over {} h ({from} – {to})",
        args.probes,
        args.every.as_millis(),
        args.storage_hours
    );
    let seeded = seed(&store, &metas, args.every, from, to).await?;
    store.rollup(Utc::now()).await.map_err(|e| e.to_string())?;
    let pool = dashboards::query_pool(&args.database_url).await?;
    sqlx::query("vacuum analyze")
        .execute(&pool)
        .await
        .map_err(|e| format!("vacuum analyze: {e}"))?;
    let (relations, database_bytes, schema_version) = report::relations(&pool).await?;
    let probe = format!("bench-{:05}", args.probes.div_ceil(2));
    let mut reads = time_reads(&store, &pool, &probe, from, to).await?;
    let hour_blocks = pack_hours(&pool, &relations, to).await?;
    let ms = time_op(REPEAT, || async {
        store
            .quantile(&probe, 0, Resolution::Hour, from, to, 0.95)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await?;
    reads.push((
        "Store::quantile p95, whole range, hour bins packed into day blocks".into(),
        ms,
    ));
    pool.close().await;
    let figures = StorageFigures {
        probes: args.probes,
        every_ms: args.every.as_millis() as u64,
        hours: args.storage_hours,
        from,
        to,
        schema_version,
        seeded,
        relations,
        database_bytes,
        reads,
        hour_blocks,
    };
    if args.json {
        serde_json::to_string(&figures)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string())
    } else {
        Ok(report::render(&figures))
    }
}

/// The probes' identities as the scheduler makes them, from definitions the
/// real loader built.
fn metas(n: usize, every: Duration) -> Result<Vec<Arc<ProbeMeta>>, String> {
    let timeout = (every / 2).min(Duration::from_micros(synth::TIMEOUT_US));
    Ok(build_probes_of(n, every, timeout, PROBE_URL)?
        .into_iter()
        .map(|p| {
            Arc::new(ProbeMeta {
                name: p.name.clone(),
                version: p.version.clone(),
                definition: p.definition.clone(),
                source: p.source.to_string(),
            })
        })
        .collect())
}

/// Every probe's runs at every tick of `[from, to)`, probe `i` offset by
/// `i/n` of the interval (so the runs are in time order tick by tick),
/// written in batches of [`BATCH`] runs or one minute, whichever is less: a
/// daemon's batch never spans minutes it has rolled up since.
async fn seed(
    store: &Store,
    metas: &[Arc<ProbeMeta>],
    every: Duration,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Seeded, String> {
    let started = Instant::now();
    let mut w = Writer {
        store,
        seeded: Seeded::default(),
        rolled: floor_minute(from),
        day: from.date_naive(),
    };
    let t = Instant::now();
    store
        .ensure_partitions_around(from)
        .await
        .map_err(|e| e.to_string())?;
    store.start_rollups(from).await.map_err(|e| e.to_string())?;
    w.seeded.maintenance_s += t.elapsed().as_secs_f64();
    let every_us = i64::try_from(every.as_micros()).unwrap_or(i64::MAX);
    let ticks = (to - from).num_microseconds().unwrap_or(0) / every_us;
    let n = metas.len() as i64;
    let mut batch = Vec::with_capacity(BATCH);
    for tick in 0..ticks {
        for (i, meta) in metas.iter().enumerate() {
            let offset = tick * every_us + i as i64 * every_us / n;
            let at = from + TimeDelta::microseconds(offset);
            let new_minute = batch
                .first()
                .is_some_and(|r: &RunRecord| floor_minute(r.scheduled_at) != floor_minute(at));
            if batch.len() == BATCH || new_minute {
                w.flush(&mut batch).await?;
            }
            batch.push(synth::record(meta, LOCATION, i as u64 + 1, tick as u64, at));
        }
    }
    w.flush(&mut batch).await?;
    w.seeded.wall_s = started.elapsed().as_secs_f64();
    Ok(w.seeded)
}

/// Writes batches and does the writer's maintenance on the synthetic clock.
struct Writer<'a> {
    store: &'a Store,
    seeded: Seeded,
    /// The minute of the last rollup.
    rolled: DateTime<Utc>,
    /// The day partitions were last ensured around.
    day: NaiveDate,
}

impl Writer<'_> {
    /// Writes `batch` (and empties it); the synthetic clock is then its last
    /// run's time: partitions around it on a new day, a rollup on a new minute.
    async fn flush(&mut self, batch: &mut Vec<RunRecord>) -> Result<(), String> {
        let Some(clock) = batch.last().map(|r| r.scheduled_at) else {
            return Ok(());
        };
        let s = &mut self.seeded;
        if clock.date_naive() != self.day {
            let t = Instant::now();
            self.store
                .ensure_partitions_around(clock)
                .await
                .map_err(|e| e.to_string())?;
            s.maintenance_s += t.elapsed().as_secs_f64();
            self.day = clock.date_naive();
        }
        let t = Instant::now();
        s.runs += self
            .store
            .write_runs(batch)
            .await
            .map_err(|e| e.to_string())?;
        s.write_s += t.elapsed().as_secs_f64();
        s.batches += 1;
        batch.clear();
        if floor_minute(clock) > self.rolled {
            let t = Instant::now();
            // As the daemon's writer task does: the rollup, then a vacuum
            // of what it churned (`writer::roll_up`).
            let rolled = self.store.rollup(clock).await.map_err(|e| e.to_string())?;
            if let Some(r) = rolled {
                self.store
                    .vacuum_rolled(r.hours)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            s.rollup_s += t.elapsed().as_secs_f64();
            s.rollups += 1;
            self.rolled = floor_minute(clock);
        }
        Ok(())
    }
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// The API's default step for a span (`api/probes/latency.rs`): ≈ 300
/// points, a whole number of minutes, hours or days, at least a minute.
fn api_step(span: TimeDelta) -> Duration {
    let secs = (span.num_seconds() / 300).max(60);
    let unit = [86_400, 3_600, 60]
        .into_iter()
        .find(|u| secs >= *u)
        .unwrap_or(60);
    Duration::from_secs(((secs + unit - 1) / unit * unit) as u64)
}

/// Packs every hour row before `to` into day blocks, as the rollup does once
/// their day is 35 days old, and measures both forms.
async fn pack_hours(
    pool: &sqlx::PgPool,
    relations: &[report::Relation],
    to: DateTime<Utc>,
) -> Result<HourBlocks, String> {
    let rows = relations.iter().find(|r| r.name == "hist_hour");
    let fail = |e: sqlx::Error| format!("packing the hour rows into day blocks failed: {e}");
    sqlx::query("select prober_pack_hours($1)")
        .bind(to)
        .execute(pool)
        .await
        .map_err(fail)?;
    sqlx::query("vacuum analyze hist_hour_block")
        .execute(pool)
        .await
        .map_err(fail)?;
    let (blocks, block_bytes): (i64, i64) = sqlx::query_as(
        "select (select count(*) from hist_hour_block),
                pg_total_relation_size('hist_hour_block')",
    )
    .fetch_one(pool)
    .await
    .map_err(fail)?;
    Ok(HourBlocks {
        hour_rows: rows.map_or(0, |r| r.rows),
        row_bytes: rows.map_or(0, |r| r.bytes),
        blocks,
        block_bytes,
    })
}

/// Times the dashboards' two heaviest panels and the store's reads of one
/// probe over the seeded range.
async fn time_reads(
    store: &Store,
    pool: &sqlx::PgPool,
    probe: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, [f64; 2])>, String> {
    let fleet = dashboards::fleet_table_sql()?;
    let percentiles = dashboards::probe_percentiles_sql(probe, from, to)?;
    let interval = dashboards::grafana_interval_secs((to - from).num_seconds());
    let step = api_step(to - from);
    let mut out = vec![
        (
            "dashboard: fleet \"Probes\" table".to_string(),
            time_sql(pool, &fleet, REPEAT).await?,
        ),
        (
            format!("dashboard: probe \"Latency percentiles\", whole range, {interval}s interval"),
            time_sql(pool, &percentiles, REPEAT).await?,
        ),
    ];
    for (name, resolution) in [("minute", Resolution::Minute), ("hour", Resolution::Hour)] {
        let ms = time_op(REPEAT, move || async move {
            store
                .quantile(probe, 0, resolution, from, to, 0.95)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await?;
        out.push((format!("Store::quantile p95, whole range, {name} bins"), ms));
    }
    let ms = time_op(REPEAT, move || async move {
        let points = store
            .latency_series(probe, 0, from, to, step)
            .await
            .map_err(|e| e.to_string())?;
        if points.is_empty() {
            return Err(format!("Store::latency_series of {probe}: no points"));
        }
        Ok(())
    })
    .await?;
    out.push((
        format!(
            "Store::latency_series, whole range, {}s step",
            step.as_secs()
        ),
        ms,
    ));
    // The runs API's first page: over the whole range (`Store::runs` reads
    // the newest hours first), and in the range's first hour (one packed
    // block, decoded and its ids derived).
    for (name, end) in [
        ("whole range", to),
        ("the first hour", from + TimeDelta::hours(1)),
    ] {
        let ms = time_op(REPEAT, move || async move {
            let runs = store
                .runs(probe, from, end, None, RUNS_PAGE)
                .await
                .map_err(|e| e.to_string())?;
            if runs.is_empty() {
                return Err(format!("Store::runs of {probe} in {from} – {end}: no runs"));
            }
            Ok(())
        })
        .await?;
        out.push((
            format!("Store::runs, {name}, first page of {RUNS_PAGE}"),
            ms,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_steps_are_whole_units_near_300_points() {
        assert_eq!(api_step(TimeDelta::hours(2)), Duration::from_secs(60));
        assert_eq!(api_step(TimeDelta::days(1)), Duration::from_secs(300));
        assert_eq!(api_step(TimeDelta::days(30)), Duration::from_secs(3 * 3600));
    }
}
