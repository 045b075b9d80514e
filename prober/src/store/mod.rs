//! Postgres: connection (creating the database if missing), migrations,
//! the batched run writer, partitions and retention, and quantile queries.
//!
//! The store knows nothing of HTTP probing: it takes [`RunRecord`]s.

pub mod alerts;
pub mod audit;
pub mod notify;
pub mod queue;
pub mod read;
pub mod rollup;
pub mod writer;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Row};

use crate::results::hist::Quantiser;
use crate::results::{phase_samples, ProbeMeta, RunRecord};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Tables partitioned by day.
const PARTITIONED: [&str; 3] = ["runs", "minute_bins", "minute_counters"];

/// A store error with what to do about it.
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

fn err(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{context}: {e}"))
}

/// The Postgres store. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    ids: std::sync::Arc<Mutex<Ids>>,
    /// The overview's closed hours (`read.rs`).
    closed_hours: read::ClosedHoursCache,
    location: String,
    build: String,
    /// API runs are added to the minute bins and counters too (`api.manual_runs_count`).
    count_api_runs: bool,
}

/// Ids of dimension rows already known to exist.
#[derive(Debug, Default)]
struct Ids {
    versions: HashMap<(String, String), (i32, i32)>,
    location: Option<i16>,
    build: Option<i16>,
    partitions: std::collections::HashSet<NaiveDate>,
}

/// Options for connections: UTC sessions, quiet statement logs.
fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| {
        StoreError(format!(
            "DATABASE_URL {:?} is not a Postgres URL ({e}); use postgres://user@host:5432/dbname",
            redact_url(url)
        ))
    })?;
    // JIT compilation costs 90–150 ms on the API's window queries (their row
    // estimates cross `jit_above_cost`) and saves less than it costs: measured
    // in BENCHMARKS.md (history phase).
    Ok(opts
        .options([("timezone", "UTC"), ("jit", "off")])
        .log_statements(tracing::log::LevelFilter::Debug)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2)))
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// A store whose connections open on demand: never fails because Postgres is down.
    pub fn new(url: &str, location: &str) -> Result<Store, StoreError> {
        let opts = connect_options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(opts);
        Ok(Store {
            pool,
            ids: Default::default(),
            closed_hours: Default::default(),
            location: location.to_string(),
            build: crate::VERSION.to_string(),
            count_api_runs: false,
        })
    }

    /// Whether runs asked for through the API go to the minute bins and counters
    /// (availability, percentiles, SLO burn rates); by default they are stored, marked, and not counted.
    pub fn with_api_runs_counted(mut self, yes: bool) -> Store {
        self.count_api_runs = yes;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the database of `url` if it does not exist (connecting to `postgres` to do it).
    pub async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
        let opts = connect_options(url)?;
        let db = opts.get_database().unwrap_or("postgres").to_string();
        match opts.connect().await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
            Err(e) => return Err(err(&format!("cannot connect to {}", redact_url(url)), e)),
        }
        let admin = opts.clone().database("postgres");
        let mut conn = admin.connect().await.map_err(|e| {
            err(
                &format!("database {db:?} is missing and cannot connect to database \"postgres\" to create it"),
                e,
            )
        })?;
        let quoted = format!("\"{}\"", db.replace('"', "\"\""));
        match sqlx::query(&format!("create database {quoted}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => Ok(()),
            // Another instance created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
            Err(e) => Err(err(&format!("cannot create database {db:?}"), e)),
        }
    }

    /// Runs the embedded migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| err("database migration failed", e))
    }

    /// Creates day partitions from yesterday to a few days ahead.
    pub async fn ensure_partitions_around(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let today = now.date_naive();
        for offset in -1..=3 {
            self.ensure_partition(today + chrono::Days::new(0) + chrono::TimeDelta::days(offset))
                .await?;
        }
        Ok(())
    }

    async fn ensure_partition(&self, day: NaiveDate) -> Result<(), StoreError> {
        if self.lock_ids().partitions.contains(&day) {
            return Ok(());
        }
        for table in PARTITIONED {
            sqlx::query("select prober_ensure_partition($1, $2)")
                .bind(table)
                .bind(day)
                .execute(&self.pool)
                .await
                .map_err(|e| err(&format!("cannot create the {table} partition for {day}"), e))?;
        }
        self.lock_ids().partitions.insert(day);
        Ok(())
    }

    fn lock_ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        match self.ids.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Drops raw runs and minute data past their retention, and old hour rows.
    pub async fn apply_retention(
        &self,
        now: DateTime<Utc>,
        r: &crate::config::settings::Retention,
    ) -> Result<u64, StoreError> {
        let day =
            |d: Duration| (now - chrono::TimeDelta::from_std(d).unwrap_or_default()).date_naive();
        let mut dropped = 0u64;
        for (table, keep) in [
            ("runs", r.runs),
            ("minute_bins", r.minutes),
            ("minute_counters", r.minutes),
        ] {
            let n: i32 = sqlx::query_scalar("select prober_drop_partitions($1, $2)")
                .bind(table)
                .bind(day(keep))
                .fetch_one(&self.pool)
                .await
                .map_err(|e| err(&format!("retention of {table} failed"), e))?;
            dropped += u64::try_from(n).unwrap_or(0);
        }
        let cutoff = now - chrono::TimeDelta::from_std(r.hours).unwrap_or_default();
        for table in ["hour_bins", "hour_counters"] {
            sqlx::query(&format!("delete from {table} where hour < $1"))
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(|e| err(&format!("retention of {table} failed"), e))?;
        }
        // The audit log is kept as long as raw runs.
        sqlx::query("delete from audit_log where at < $1")
            .bind(now - chrono::TimeDelta::from_std(r.runs).unwrap_or_default())
            .execute(&self.pool)
            .await
            .map_err(|e| err("retention of audit_log failed", e))?;
        let mut ids = self.lock_ids();
        ids.partitions.retain(|d| *d >= day(r.runs));
        Ok(dropped)
    }

    async fn dimension_ids(&self) -> Result<(i16, i16), StoreError> {
        if let (Some(l), Some(b)) = {
            let ids = self.lock_ids();
            (ids.location, ids.build)
        } {
            return Ok((l, b));
        }
        let location: i16 = sqlx::query_scalar(
            "insert into locations (name) values ($1) on conflict (name) do update set name = excluded.name returning id",
        )
        .bind(&self.location)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err("cannot register the location", e))?;
        let build: i16 = sqlx::query_scalar(
            "insert into builds (version) values ($1) on conflict (version) do update set version = excluded.version returning id",
        )
        .bind(&self.build)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err("cannot register the build", e))?;
        let mut ids = self.lock_ids();
        ids.location = Some(location);
        ids.build = Some(build);
        Ok((location, build))
    }

    /// Registers every probe version not yet known, in three statements whatever
    /// their number (10,000 new probes must not cost 20,000 round trips).
    pub async fn register_versions<'a>(
        &self,
        metas: impl Iterator<Item = &'a ProbeMeta>,
    ) -> Result<(), StoreError> {
        let mut new: Vec<&ProbeMeta> = {
            let ids = self.lock_ids();
            metas
                .filter(|m| {
                    !ids.versions
                        .contains_key(&(m.name.clone(), m.version.clone()))
                })
                .collect()
        };
        new.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        new.dedup_by(|a, b| a.name == b.name && a.version == b.version);
        if new.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = new.iter().map(|m| m.name.as_str()).collect();
        let versions: Vec<&str> = new.iter().map(|m| m.version.as_str()).collect();
        let definitions: Vec<sqlx::types::Json<&serde_json::value::RawValue>> = new
            .iter()
            .map(|m| sqlx::types::Json(&*m.definition))
            .collect();
        let sources: Vec<&str> = new.iter().map(|m| m.source.as_str()).collect();
        let fail = |e: sqlx::Error| {
            err(
                &format!("cannot register {} probe version(s)", new.len()),
                e,
            )
        };
        sqlx::query(
            "insert into probes (name) select unnest($1::text[]) on conflict (name) do nothing",
        )
        .bind(&names)
        .execute(&self.pool)
        .await
        .map_err(fail)?;
        sqlx::query(
            "insert into probe_versions (probe_id, version, definition, source)
             select p.id, v.version, v.definition, v.source
             from unnest($1::text[], $2::text[], $3::jsonb[], $4::text[]) as v(name, version, definition, source)
             join probes p on p.name = v.name
             on conflict (probe_id, version) do nothing",
        )
        .bind(&names)
        .bind(&versions)
        .bind(&definitions)
        .bind(&sources)
        .execute(&self.pool)
        .await
        .map_err(fail)?;
        let rows: Vec<(String, String, i32, i32)> = sqlx::query_as(
            "select p.name, v.version, p.id, v.id
             from unnest($1::text[], $2::text[]) as k(name, version)
             join probes p on p.name = k.name
             join probe_versions v on v.probe_id = p.id and v.version = k.version",
        )
        .bind(&names)
        .bind(&versions)
        .fetch_all(&self.pool)
        .await
        .map_err(fail)?;
        let mut ids = self.lock_ids();
        for (name, version, probe_id, version_id) in rows {
            ids.versions.insert((name, version), (probe_id, version_id));
        }
        Ok(())
    }

    /// Ids of a probe and its version, registering them the first time.
    pub async fn version_ids(&self, meta: &ProbeMeta) -> Result<(i32, i32), StoreError> {
        let key = (meta.name.clone(), meta.version.clone());
        if let Some(ids) = self.lock_ids().versions.get(&key) {
            return Ok(*ids);
        }
        let probe_id: i32 = sqlx::query_scalar(
            "insert into probes (name) values ($1) on conflict (name) do update set name = excluded.name returning id",
        )
        .bind(&meta.name)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err(&format!("cannot register probe {:?}", meta.name), e))?;
        let version_id: i32 = sqlx::query_scalar(
            "insert into probe_versions (probe_id, version, definition, source) values ($1, $2, $3, $4)
             on conflict (probe_id, version) do update set version = excluded.version returning id",
        )
        .bind(probe_id)
        .bind(&meta.version)
        .bind(sqlx::types::Json(&*meta.definition))
        .bind(&meta.source)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err(&format!("cannot register probe {:?}", meta.name), e))?;
        self.lock_ids().versions.insert(key, (probe_id, version_id));
        Ok((probe_id, version_id))
    }

    /// Writes a batch of runs and their histogram bins in one statement.
    /// Idempotent: runs already stored are skipped and not counted again.
    /// Returns how many runs were new.
    pub async fn write_runs(&self, batch: &[RunRecord]) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let (location_id, build_id) = self.dimension_ids().await?;
        let mut days: Vec<NaiveDate> = batch.iter().map(|r| r.scheduled_at.date_naive()).collect();
        days.sort_unstable();
        days.dedup();
        for d in days {
            self.ensure_partition(d).await?;
        }
        let mut cols = RunColumns::default();
        self.register_versions(batch.iter().map(|r| &*r.meta))
            .await?;
        for r in batch {
            let (probe_id, version_id) = self.version_ids(&r.meta).await?;
            cols.push(r, probe_id, version_id);
        }
        let inserted: i64 = sqlx::query_scalar(INSERT_RUNS)
            .bind(&cols.run_id)
            .bind(&cols.scheduled_at)
            .bind(&cols.probe_id)
            .bind(&cols.version_id)
            .bind(location_id)
            .bind(build_id)
            .bind(&cols.lateness_us)
            .bind(&cols.phases[0])
            .bind(&cols.phases[1])
            .bind(&cols.phases[2])
            .bind(&cols.phases[3])
            .bind(&cols.phases[4])
            .bind(&cols.phases[5])
            .bind(&cols.response_bytes)
            .bind(&cols.status_code)
            .bind(&cols.error_class)
            .bind(&cols.success)
            .bind(&cols.error_message)
            .bind(&cols.s_run_id)
            .bind(&cols.s_phase)
            .bind(&cols.s_us)
            .bind(&cols.s_lo)
            .bind(&cols.s_hi)
            .bind(&cols.detail)
            .bind(&cols.trigger)
            .bind(self.count_api_runs)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| err(&format!("writing {} runs failed", batch.len()), e))?;
        Ok(u64::try_from(inserted).unwrap_or(0))
    }

    /// Whether Postgres answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| err("Postgres does not answer", e))
    }

    /// The quantile `q` of `phase` of one probe between `from` and `to`, from the
    /// table of the given resolution (`minute`, `hour` or `day`).
    pub async fn quantile(
        &self,
        probe: &str,
        phase: i16,
        resolution: Resolution,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        q: f64,
    ) -> Result<Option<i64>, StoreError> {
        let (table, col) = resolution.table();
        // The probe's id as a value, not a join: the live views' minute branch
        // takes only restrictions, not join conditions (see `Resolution::table`).
        let sql = format!(
            "select prober_quantile($5, array_agg(hi order by hi), array_agg(n order by hi))
             from (select b.bin_hi_us hi, sum(b.count)::bigint n
                   from {table} b
                   where b.probe_id = (select id from probes where name = $1)
                     and b.phase = $2 and b.{col} >= $3 and b.{col} < $4
                   group by 1) s"
        );
        let row = sqlx::query(&sql)
            .bind(probe)
            .bind(phase)
            .bind(from)
            .bind(to)
            .bind(q)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| err("quantile query failed", e))?;
        row.try_get::<Option<i64>, _>(0)
            .map_err(|e| err("quantile query failed", e))
    }
}

/// Which histogram table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Minute,
    Hour,
    Day,
}

impl Resolution {
    /// The relation to read and its time column. Hour and day read the live
    /// views (migration 0008); Postgres pushes a reader's conditions into
    /// their minute branch only as restrictions (`probe_id = <value>`, or a
    /// lateral reference), never from a join, so readers filter that way.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Resolution::Minute => ("minute_bins", "minute"),
            Resolution::Hour => ("hour_bins_live", "hour"),
            Resolution::Day => ("day_bins_live", "day"),
        }
    }
}

/// A batch as columns, for `unnest`.
#[derive(Default)]
struct RunColumns {
    run_id: Vec<uuid::Uuid>,
    scheduled_at: Vec<DateTime<Utc>>,
    probe_id: Vec<i32>,
    version_id: Vec<i32>,
    lateness_us: Vec<i32>,
    phases: [Vec<Option<i32>>; 6],
    response_bytes: Vec<i32>,
    status_code: Vec<Option<i16>>,
    error_class: Vec<Option<i16>>,
    success: Vec<bool>,
    error_message: Vec<Option<String>>,
    detail: Vec<Option<serde_json::Value>>,
    trigger: Vec<i16>,
    // one entry per (run, phase) sample, with its bin
    s_run_id: Vec<uuid::Uuid>,
    s_phase: Vec<i16>,
    s_us: Vec<i64>,
    s_lo: Vec<i64>,
    s_hi: Vec<i64>,
}

fn clamp_i32(v: i64) -> i32 {
    i32::try_from(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX))).unwrap_or(i32::MAX)
}

impl RunColumns {
    fn push(&mut self, r: &RunRecord, probe_id: i32, version_id: i32) {
        let o = &r.outcome;
        self.run_id.push(r.run_id);
        self.scheduled_at.push(r.scheduled_at);
        self.probe_id.push(probe_id);
        self.version_id.push(version_id);
        self.lateness_us.push(clamp_i32(r.lateness_us));
        self.trigger.push(r.trigger.id());
        let q = Quantiser::get();
        let mut sample = |phase: i16, us: u64| {
            let (lo, hi) = q.bin(us);
            self.s_run_id.push(r.run_id);
            self.s_phase.push(phase);
            self.s_us.push(us as i64);
            self.s_lo.push(lo as i64);
            self.s_hi.push(hi as i64);
        };
        let phases = phase_samples(&o.phases);
        for (i, us) in phases.iter().enumerate() {
            if let Some(us) = us {
                sample(i as i16, *us);
            }
        }
        // A scenario's steps: phase 100 + the step's index, for the steps that ran.
        for (i, st) in o.steps.iter().enumerate().take(100) {
            if st.status != crate::probe::StepStatus::Skipped {
                sample(100 + i as i16, st.phases.total_us);
            }
        }
        for (i, us) in phases.iter().enumerate() {
            self.phases[i].push(us.map(|us| clamp_i32(us as i64)));
        }
        let has_detail = !(o.steps.is_empty() && o.attempts.is_empty() && o.info.is_empty());
        self.detail.push(has_detail.then(
            || serde_json::json!({"steps": o.steps, "attempts": o.attempts, "info": o.info}),
        ));
        self.response_bytes.push(clamp_i32(o.response_bytes as i64));
        self.status_code.push(o.status_code.map(|c| c as i16));
        self.error_class
            .push(o.error.as_ref().map(|e| error_class_id(e.class)));
        self.success.push(o.success);
        self.error_message
            .push(o.error.as_ref().map(|e| e.message.clone()));
    }
}

/// The stable id of an error class in the `error_classes` table.
pub fn error_class_id(c: crate::probe::ErrorClass) -> i16 {
    use crate::probe::ErrorClass::*;
    match c {
        Dns => 1,
        Connect => 2,
        Tls => 3,
        Timeout => 4,
        HttpStatus => 5,
        Assertion => 6,
        BodyTooLarge => 7,
        RedirectLimit => 8,
        InvalidResponse => 9,
        Config => 10,
    }
}

/// One statement, one round trip: insert the runs (skipping known run ids),
/// then add the samples of the runs actually inserted (scheduled ones only,
/// unless API runs count) to the minute bins and
/// counters, and to the hour and day ones when their minute is already rolled
/// up (or the location has no rollup mark): see `rollup.rs`.
const INSERT_RUNS: &str = r#"
with input as (
    select * from unnest(
        $1::uuid[], $2::timestamptz[], $3::int[], $4::int[], $7::int[],
        $8::int[], $9::int[], $10::int[], $11::int[], $12::int[], $13::int[],
        $14::int[], $15::int2[], $16::int2[], $17::bool[], $18::text[], $24::jsonb[], $25::int2[])
    as t(run_id, scheduled_at, probe_id, version_id, lateness_us,
         total_us, dns_us, connect_us, tls_us, first_byte_us, transfer_us,
         response_bytes, status_code, error_class, success, error_message, detail, trigger)
),
ins as (
    insert into runs (run_id, scheduled_at, probe_id, version_id, location_id, build_id,
                      lateness_us, total_us, dns_us, connect_us, tls_us, first_byte_us,
                      transfer_us, response_bytes, status_code, error_class, success, error_message,
                      detail, trigger)
    select run_id, scheduled_at, probe_id, version_id, $5::int2, $6::int2,
           lateness_us, total_us, dns_us, connect_us, tls_us, first_byte_us,
           transfer_us, response_bytes, status_code, error_class, success, error_message,
           detail, trigger
    from input
    on conflict do nothing
    returning run_id, scheduled_at, probe_id, success, trigger
),
samples as (
    select ins.probe_id, ins.success, s.phase, s.us, s.lo, s.hi,
           date_trunc('minute', ins.scheduled_at) as minute
    from unnest($19::uuid[], $20::int2[], $21::int8[], $22::int8[], $23::int8[])
         as s(run_id, phase, us, lo, hi)
    join ins on ins.run_id = s.run_id
    -- Runs asked for through the API are stored but not counted, unless $26 (api.manual_runs_count).
    where ins.trigger = 0 or $26::bool
),
bins as (
    select minute, probe_id, phase, lo, hi, count(*) as n
    from samples group by minute, probe_id, phase, lo, hi
),
counters as (
    select minute, probe_id, phase, count(*) as runs,
           count(*) filter (where not success) as failures, sum(us) as sum_us
    from samples group by minute, probe_id, phase
),
-- The rollup mark (migration 0008): samples of minutes before it go to the
-- hour and day tables here; later ones wait for the rollup.
mark as materialized (
    select rolled_through, day_rolled_through from rollup_mark for share
),
late_bins as (
    select * from bins b where not exists (select 1 from mark where b.minute >= mark.rolled_through)
),
late_counters as (
    select * from counters c where not exists (select 1 from mark where c.minute >= mark.rolled_through)
),
day_late_bins as (
    select * from bins b where not exists (select 1 from mark where b.minute >= mark.day_rolled_through)
),
day_late_counters as (
    select * from counters c where not exists (select 1 from mark where c.minute >= mark.day_rolled_through)
),
mb as (
    insert into minute_bins as t (minute, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count)
    select minute, probe_id, $5::int2, phase, lo, hi, n from bins
    on conflict (probe_id, phase, minute, location_id, bin_lo_us)
    do update set count = t.count + excluded.count
),
hb as (
    insert into hour_bins as t (hour, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count)
    select date_trunc('hour', minute), probe_id, $5::int2, phase, lo, hi, sum(n) from late_bins
    group by 1, 2, 4, 5, 6
    on conflict (probe_id, phase, hour, location_id, bin_lo_us)
    do update set count = t.count + excluded.count
),
db as (
    insert into day_bins as t (day, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count)
    select date_trunc('day', minute), probe_id, $5::int2, phase, lo, hi, sum(n) from day_late_bins
    group by 1, 2, 4, 5, 6
    on conflict (probe_id, phase, day, location_id, bin_lo_us)
    do update set count = t.count + excluded.count
),
mc as (
    insert into minute_counters as t (minute, probe_id, location_id, phase, runs, failures, sum_us)
    select minute, probe_id, $5::int2, phase, runs, failures, sum_us from counters
    on conflict (probe_id, phase, minute, location_id)
    do update set runs = t.runs + excluded.runs, failures = t.failures + excluded.failures,
                  sum_us = t.sum_us + excluded.sum_us
),
hc as (
    insert into hour_counters as t (hour, probe_id, location_id, phase, runs, failures, sum_us)
    select date_trunc('hour', minute), probe_id, $5::int2, phase, sum(runs), sum(failures), sum(sum_us)
    from late_counters group by 1, 2, 4
    on conflict (probe_id, phase, hour, location_id)
    do update set runs = t.runs + excluded.runs, failures = t.failures + excluded.failures,
                  sum_us = t.sum_us + excluded.sum_us
),
dc as (
    insert into day_counters as t (day, probe_id, location_id, phase, runs, failures, sum_us)
    select date_trunc('day', minute), probe_id, $5::int2, phase, sum(runs), sum(failures), sum(sum_us)
    from day_late_counters group by 1, 2, 4
    on conflict (probe_id, phase, day, location_id)
    do update set runs = t.runs + excluded.runs, failures = t.failures + excluded.failures,
                  sum_us = t.sum_us + excluded.sum_us
)
select count(*) from ins
"#;
