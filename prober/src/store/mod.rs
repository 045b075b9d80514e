//! Postgres: connection (creating the database if missing), migrations,
//! the batched run writer, partitions and retention, and quantile queries.
//!
//! The store knows nothing of HTTP probing: it takes [`RunRecord`]s.

pub mod audit;
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
use crate::run::{phase_samples, ProbeMeta, RunRecord};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Postgres ends any statement of the store's connections that runs longer
/// (`statement_timeout`, set on every connection).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const STATEMENT_TIMEOUT_SETTING: &str = "30s";

/// How long a caller waits for a pooled connection (opening one included).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest `runs.error_message` stored, in bytes (longer ones are cut, marked `…`).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;
/// Longest string stored inside `runs.detail` (a step's message, an
/// assertion's actual value, a request line), in bytes.
pub const MAX_DETAIL_STRING_BYTES: usize = 2 * 1024;
/// Largest `runs.detail` stored, in bytes of JSON; a larger one is replaced
/// by a note saying how large it was.
pub const MAX_DETAIL_BYTES: usize = 64 * 1024;

/// Tables partitioned by day.
const PARTITIONED: [&str; 3] = ["runs", "minute_bins", "minute_counters"];

/// A store error with what to do about it.
#[derive(Debug, Clone)]
pub struct StoreError {
    message: String,
    cause: Cause,
}

/// Why a store call failed, as far as the writer acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Postgres refused the data itself (SQLSTATE class 22 data exception,
    /// 23 integrity, 54 too large): retrying the same rows fails the same way.
    Content,
    /// The database, a table or a function is missing (3D000, 42P01, 42883,
    /// 3F000): Postgres came back empty (a restore, a fresh primary).
    Missing,
    /// A statement or a write took too long (57014 `statement_timeout`, or
    /// the writer's own timeout).
    Timeout,
    /// Anything else: connection refused or lost, authentication, …
    Other,
}

impl StoreError {
    pub fn new(message: impl Into<String>, cause: Cause) -> StoreError {
        StoreError {
            message: message.into(),
            cause,
        }
    }

    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// The SQLSTATE classes the writer acts on.
    fn classify(code: Option<&str>) -> Cause {
        match code {
            Some(c) if c.starts_with("22") || c.starts_with("23") || c.starts_with("54") => {
                Cause::Content
            }
            Some("3D000" | "42P01" | "42883" | "3F000") => Cause::Missing,
            Some("57014") => Cause::Timeout,
            _ => Cause::Other,
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

/// A store error with its context; a Postgres error keeps its SQLSTATE's
/// meaning ([`Cause`]), whatever layer (`sqlx::Error`, a migration) carried it.
pub(crate) fn err<E: std::fmt::Display + 'static>(context: &str, e: E) -> StoreError {
    let any: &dyn std::any::Any = &e;
    let sql = any.downcast_ref::<sqlx::Error>().or_else(|| {
        match any.downcast_ref::<sqlx::migrate::MigrateError>() {
            Some(sqlx::migrate::MigrateError::Execute(e)) => Some(e),
            _ => None,
        }
    });
    let code = match sql {
        Some(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
        Some(sqlx::Error::PoolTimedOut) => {
            return StoreError::new(
                format!(
                    "{context}: no connection to Postgres within {} s: it does not answer (a hung server or network path) or every connection is busy with a slow statement",
                    ACQUIRE_TIMEOUT.as_secs()
                ),
                Cause::Timeout,
            )
        }
        _ => None,
    };
    StoreError::new(
        format!("{context}: {e}"),
        StoreError::classify(code.as_deref()),
    )
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
        StoreError::new(
            format!(
                "DATABASE_URL {:?} is not a Postgres URL ({e}); use postgres://user@host:5432/dbname",
                redact_url(url)
            ),
            Cause::Other,
        )
    })?;
    // JIT compilation costs 90–150 ms on the API's window queries (their row
    // estimates cross `jit_above_cost`) and saves less than it costs: measured
    // in BENCHMARKS.md (history phase).
    // `statement_timeout`: Postgres itself ends a statement that runs too
    // long, so no lock or stuck plan holds a connection forever.
    Ok(opts
        .options([
            ("timezone", "UTC"),
            ("jit", "off"),
            ("statement_timeout", STATEMENT_TIMEOUT_SETTING),
        ])
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
            .acquire_timeout(ACQUIRE_TIMEOUT)
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
    /// On a connection of its own without `statement_timeout`: a migration
    /// may rightly take longer than a write.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let opts = (*self.pool.connect_options())
            .clone()
            .options([("statement_timeout", "0")]);
        let mut conn = opts
            .connect()
            .await
            .map_err(|e| err("database migration failed: cannot connect", e))?;
        let done = MIGRATOR
            .run_direct(&mut conn)
            .await
            .map_err(|e| err("database migration failed", e));
        let _ = sqlx::Connection::close(conn).await;
        done
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

    /// Forgets every cached id, partition and closed hour: after Postgres
    /// comes back (maybe empty, restored or failed over) nothing cached about
    /// its rows can be trusted.
    pub fn forget_cached(&self) {
        *self.lock_ids() = Ids::default();
        read::forget_closed_hours(&self.closed_hours);
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
        let definitions: Vec<sqlx::types::Json<serde_json::Value>> = new
            .iter()
            .map(|m| sqlx::types::Json(clean_definition(&m.definition)))
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
        .bind(sqlx::types::Json(clean_definition(&meta.definition)))
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
        self.write_runs_as(batch, Form::Full).await
    }

    /// [`Store::write_runs`] in the given form: [`Form::Reduced`] stores the
    /// runs without their error message and detail, for runs whose text
    /// Postgres refused even cleaned.
    pub async fn write_runs_as(&self, batch: &[RunRecord], form: Form) -> Result<u64, StoreError> {
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
            cols.push(r, probe_id, version_id, form);
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
    fn push(&mut self, r: &RunRecord, probe_id: i32, version_id: i32, form: Form) {
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
            if st.status != crate::run::StepStatus::Skipped {
                sample(100 + i as i16, st.phases.total_us);
            }
        }
        for (i, us) in phases.iter().enumerate() {
            self.phases[i].push(us.map(|us| clamp_i32(us as i64)));
        }
        let has_detail = !(o.steps.is_empty() && o.attempts.is_empty() && o.info.is_empty());
        self.detail
            .push((has_detail && form == Form::Full).then(|| {
                clean_detail(
                    serde_json::json!({"steps": o.steps, "attempts": o.attempts, "info": o.info}),
                )
            }));
        self.response_bytes.push(clamp_i32(o.response_bytes as i64));
        self.status_code.push(o.status_code.map(|c| c as i16));
        self.error_class
            .push(o.error.as_ref().map(|e| error_class_id(e.class)));
        self.success.push(o.success);
        self.error_message
            .push(o.error.as_ref().map(|e| match form {
                Form::Full => clean_text(&e.message, MAX_ERROR_MESSAGE_BYTES).into_owned(),
                Form::Reduced => REDUCED_MESSAGE.to_string(),
            }));
    }
}

/// How much of a run is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Everything, text cleaned and capped.
    Full,
    /// Times, status, error class and histogram samples; no error message
    /// (replaced by [`REDUCED_MESSAGE`]) and no detail.
    Reduced,
}

/// The `error_message` of a run stored in reduced form.
pub const REDUCED_MESSAGE: &str = "stored in reduced form: Postgres refused this run's message or detail; the prober's log has the original under this run id";

// === cleaning: what Postgres refuses never reaches it ===

/// `s` without NUL characters (Postgres `text` and `jsonb` refuse them:
/// each becomes U+FFFD) and cut to at most `max` bytes on a character
/// boundary, ending in `…` when cut. Borrowed when nothing changes.
pub fn clean_text(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max && !s.contains('\0') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = s.replace('\0', "\u{FFFD}");
    if out.len() > max {
        const MARK: &str = "…";
        let mut end = max.saturating_sub(MARK.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str(MARK);
    }
    std::borrow::Cow::Owned(out)
}

/// Cleans every string and key of a JSON value in place ([`clean_text`],
/// strings capped at `max` bytes).
pub fn clean_json(v: &mut serde_json::Value, max: usize) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(c) = clean_text(s, max) {
                *s = c;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| clean_json(i, max)),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0') || k.len() > max) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (clean_text(&k, max).into_owned(), v))
                    .collect();
            }
            map.values_mut().for_each(|i| clean_json(i, max));
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A run's detail as stored: cleaned, and replaced by a note when larger
/// than [`MAX_DETAIL_BYTES`].
fn clean_detail(mut detail: serde_json::Value) -> serde_json::Value {
    clean_json(&mut detail, MAX_DETAIL_STRING_BYTES);
    let size = serde_json::to_vec(&detail).map_or(usize::MAX, |b| b.len());
    if size <= MAX_DETAIL_BYTES {
        return detail;
    }
    serde_json::json!({
        "omitted": format!(
            "this run's detail was {size} bytes of JSON, over the {} KiB stored per run",
            MAX_DETAIL_BYTES / 1024
        )
    })
}

/// A probe definition as stored in `probe_versions.definition` (jsonb), cleaned.
fn clean_definition(raw: &serde_json::value::RawValue) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null);
    // Definitions are the user's own text: keep them whole, only NULs go.
    clean_json(&mut v, usize::MAX);
    v
}

/// The stable id of an error class in the `error_classes` table.
pub fn error_class_id(c: crate::run::ErrorClass) -> i16 {
    use crate::run::ErrorClass::*;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_replaces_nul_and_cuts_on_a_character_boundary() {
        assert!(matches!(
            clean_text("fine", 10),
            std::borrow::Cow::Borrowed("fine")
        ));
        assert_eq!(clean_text("a\0b", 10), "a\u{FFFD}b");
        // "é" is two bytes: a cut inside it moves back to its start.
        let cut = clean_text("aéééé", 5);
        assert_eq!(cut, "a…");
        assert_eq!(clean_text("aéééé", 6), "aé…");
        assert_eq!(
            clean_text(&"x".repeat(5000), MAX_ERROR_MESSAGE_BYTES).len(),
            4096
        );
    }

    #[test]
    fn clean_json_cleans_every_string_and_key_at_any_depth() {
        let mut v = serde_json::json!({
            "k\u{0}ey": ["ok", {"deep": "a\u{0}b"}],
            "n": 1,
            "long": "y".repeat(100),
        });
        clean_json(&mut v, 10);
        let text = serde_json::to_string(&v).unwrap();
        assert!(!text.contains("\\u0000"), "{text}");
        assert_eq!(v["k\u{FFFD}ey"][1]["deep"], "a\u{FFFD}b");
        assert_eq!(v["n"], 1);
        assert_eq!(v["long"].as_str().unwrap().len(), 10);
    }

    #[test]
    fn a_detail_over_the_limit_is_replaced_by_a_note_of_its_size() {
        let many: Vec<String> = (0..100).map(|_| "z".repeat(2000)).collect();
        let d = clean_detail(serde_json::json!({"steps": many}));
        assert!(d["omitted"].as_str().unwrap().contains("64 KiB"), "{d}");
        let small = clean_detail(serde_json::json!({"info": {"a": "b\u{0}"}}));
        assert_eq!(small["info"]["a"], "b\u{FFFD}");
    }

    #[test]
    fn sqlstates_are_classified_by_what_the_writer_does_about_them() {
        assert_eq!(StoreError::classify(Some("22021")), Cause::Content);
        assert_eq!(StoreError::classify(Some("22P05")), Cause::Content);
        assert_eq!(StoreError::classify(Some("23505")), Cause::Content);
        assert_eq!(StoreError::classify(Some("54000")), Cause::Content);
        assert_eq!(StoreError::classify(Some("42P01")), Cause::Missing);
        assert_eq!(StoreError::classify(Some("3D000")), Cause::Missing);
        assert_eq!(StoreError::classify(Some("57014")), Cause::Timeout);
        assert_eq!(StoreError::classify(Some("08006")), Cause::Other);
        assert_eq!(StoreError::classify(None), Cause::Other);
    }
}
