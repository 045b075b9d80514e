//! Postgres: connection (creating the database if missing), migrations,
//! the batched run writer, partitions and retention, and quantile queries.
//!
//! The store knows nothing of HTTP probing: it takes [`RunRecord`]s.
//!
//! - `error.rs`: [`StoreError`] and the SQLSTATE classes the writer acts on;
//! - `schema.rs`: creating the database, migrations, partitions, retention;
//! - `dimensions.rs`: location, build and probe-version rows and their ids;
//! - `write.rs`: the one idempotent statement that writes a batch of runs;
//! - `clean.rs`: what Postgres would refuse, cleaned before it is sent;
//! - `read.rs`, `rollup.rs`, `audit.rs`: reads, hour/day rollups, the audit log;
//! - `trends.rs`: the series the trend analysis reads and the findings it stores;
//! - `events.rs`: change events (deploys and other marks) and a finding's context;
//! - `queue.rs`, `writer.rs`: the queue between probing and Postgres, and its writer task;
//! - `spool/`: the queue's copy on local disk, replayed after a crash, and its binary form.
//! - `hosts.rs`: several hosts in `DATABASE_URL`, and the failover between them.
//!
//! [`RunRecord`]: crate::run::RunRecord

pub mod audit;
mod block_points;
mod clean;
mod dimensions;
mod error;
pub mod events;
pub mod history;
pub mod hosts;
mod int8s;
mod pending;
pub mod queue;
pub mod read;
pub mod rollup;
mod schema;
pub mod spool;
pub mod trends;
mod write;
pub mod writer;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use parking_lot::Mutex;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use clean::{clean_json, clean_text};
pub use error::{err, Cause, StoreError};
pub use read::Resolution;
pub use write::{error_class_id, Form, REDUCED_MESSAGE};

/// The migrations in `migrations/`, embedded in the binary.
/// Migrations applied by a newer release are accepted (`ignore_missing`): a
/// release keeps working on the schema of the next one, so a rolling upgrade
/// or a rollback never stops on "migration N was previously applied but is
/// missing". Every migration is written to allow that (ARCHITECTURE.md).
pub static MIGRATOR: sqlx::migrate::Migrator = {
    let mut m = sqlx::migrate!("../migrations");
    m.ignore_missing = true;
    m
};

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

/// The Postgres store. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// The hosts of `DATABASE_URL` and the one the pool uses.
    hosts: Arc<hosts::Failover>,
    ids: Arc<Mutex<Ids>>,
    location: String,
    build: String,
    /// API runs are added to the minute bins and counters too (`api.manual_runs_count`).
    count_api_runs: bool,
    /// Pending rows folded per transaction (`rollup.rs`).
    fold_chunk_rows: i64,
    /// When the v1 tables were last found empty or not (`trends.rs`).
    v1_checked: Arc<Mutex<Option<(std::time::Instant, bool)>>>,
}

/// Ids of dimension rows already known to exist.
#[derive(Debug, Default)]
struct Ids {
    versions: HashMap<(String, String), (i32, i32)>,
    location: Option<i16>,
    build: Option<i16>,
    partitions: std::collections::HashSet<NaiveDate>,
}

/// Options for connections to each host of `url` (see [`hosts`]), and the
/// session they must offer.
fn host_options(url: &str) -> Result<(Vec<PgConnectOptions>, hosts::SessionAttrs), StoreError> {
    let split = hosts::split(url).map_err(|e| {
        StoreError::new(
            format!("DATABASE_URL {:?}: {e}", redact_url(url)),
            Cause::Other,
        )
    })?;
    let opts = (split.urls.iter())
        .map(|u| one_host_options(u))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((opts, split.attrs))
}

/// Options for connections to the first host of `url`.
fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let (mut opts, _) = host_options(url)?;
    Ok(opts.swap_remove(0))
}

/// Options for connections to the one host of `url`: UTC sessions, quiet statement logs.
fn one_host_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::with_source(
            format!(
                "DATABASE_URL {:?} is not a Postgres URL ({e}); use postgres://user@host:5432/dbname",
                redact_url(url)
            ),
            Cause::Other,
            e,
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

/// Waits at most `limit` for `query`: its error, or the silence, as text.
/// For the tasks that must not wait on a hung Postgres (leases, membership).
pub async fn bounded<T>(
    limit: Duration,
    query: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, query).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Not one URL (several hosts): the password is cut by hand.
        Err(_) => match hosts::parts(url) {
            Some(p) => match p.userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{}://{user}:<redacted>@{}{}", p.scheme, p.hostlist, p.tail)
                }
                None => url.to_string(),
            },
            None => url.to_string(),
        },
    }
}

impl Store {
    /// A store whose connections open on demand: never fails because Postgres is down.
    pub fn new(url: &str, location: &str) -> Result<Store, StoreError> {
        let (opts, attrs) = host_options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| Box::pin(hosts::writable(conn, attrs)))
            .connect_lazy_with(opts[0].clone());
        Ok(Store {
            pool,
            hosts: Arc::new(hosts::Failover::new(opts, attrs)),
            ids: Default::default(),
            location: location.to_string(),
            build: crate::VERSION.to_string(),
            count_api_runs: false,
            fold_chunk_rows: rollup::FOLD_CHUNK_ROWS,
            v1_checked: Arc::default(),
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

    /// A write failed: with several hosts in `DATABASE_URL`, checks in the
    /// background which one to use (see [`hosts`]).
    pub fn fail_over(&self) {
        self.hosts.check(&self.pool);
    }

    /// Points the pool at the first host of `DATABASE_URL` that suits
    /// (see [`hosts`]), waiting for the check: for one-shot commands.
    pub async fn pick_host(&self) {
        self.hosts.choose(&self.pool).await;
    }

    /// Where this store's Postgres is, for messages: `Postgres at host:port/database`.
    pub fn target(&self) -> String {
        let o = self.pool.connect_options();
        format!(
            "Postgres at {}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("postgres")
        )
    }

    /// Forgets the cached dimension ids (probes, versions, locations, error
    /// classes): after Postgres came back, maybe restored or replaced, they are
    /// read again before its rows can be trusted.
    pub fn forget_cached(&self) {
        *self.lock_ids() = Ids::default();
    }

    fn lock_ids(&self) -> parking_lot::MutexGuard<'_, Ids> {
        self.ids.lock()
    }
}
