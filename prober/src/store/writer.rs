//! The store writer: takes batches from the queue and writes them, one
//! statement per batch. While Postgres is unreachable it keeps retrying with
//! backoff, reports the store as degraded, and leaves the results queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::queue::ResultQueue;
use super::rollup::ROLLUP_EVERY;
use super::{clean_text, Cause, Form, Store, StoreError, MAX_ERROR_MESSAGE_BYTES};
use crate::config::settings::Retention;

/// Longest wait between two attempts while Postgres is away.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A write (or prepare) still running after this marks the store degraded,
/// with that as its reason, until it finishes.
pub const STALL_REPORT_AFTER: Duration = Duration::from_secs(10);
/// A write (or prepare) still running after this is abandoned (its
/// connection dropped) and retried: Postgres's own `statement_timeout`
/// ([`super::STATEMENT_TIMEOUT`]) plus 5 s for it to answer, so this fires
/// only when no answer comes at all (a dead connection, replies withheld).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(35);
/// Longest wait for the database to be prepared (migrations may be long).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for a rollup or partition maintenance (the rollup's own
/// `statement_timeout` is 10 min).
const MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(660);
/// How often partitions are created ahead and retention applied.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);

/// The store as `/readyz` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StoreState {
    /// Not connected yet.
    Starting,
    Ok,
    /// Postgres is failing; results wait in the queue.
    Degraded {
        since: DateTime<Utc>,
        reason: String,
    },
}

/// Health and counters of the store writer.
#[derive(Debug)]
pub struct StoreHealth {
    state: RwLock<StoreState>,
    pub runs_written: AtomicU64,
    pub batches: AtomicU64,
    pub errors: AtomicU64,
    /// Runs stored in reduced form (no message, no detail) because Postgres
    /// refused their content.
    pub rows_reduced: AtomicU64,
    /// Runs Postgres refused even in reduced form: logged, not stored.
    pub rows_refused: AtomicU64,
    /// Sum of batch write times in µs (for the mean in metrics).
    pub write_us: AtomicU64,
    /// Rollups of closed minutes into hours and days, done and failed.
    pub rollups: AtomicU64,
    pub rollup_errors: AtomicU64,
    /// Set once the database has been prepared (created, migrated) the first
    /// time; the alert engine and the notifier wait for it, so a fresh start
    /// logs no "database does not exist" before the writer has created it.
    prepared: tokio::sync::watch::Sender<bool>,
}

impl Default for StoreHealth {
    fn default() -> StoreHealth {
        StoreHealth {
            state: RwLock::new(StoreState::Starting),
            runs_written: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rows_reduced: AtomicU64::new(0),
            rows_refused: AtomicU64::new(0),
            write_us: AtomicU64::new(0),
            rollups: AtomicU64::new(0),
            rollup_errors: AtomicU64::new(0),
            prepared: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl StoreHealth {
    pub fn state(&self) -> StoreState {
        self.state.read().clone()
    }

    /// Waits until the writer has prepared the database once (returns at once after that).
    pub async fn wait_prepared(&self) {
        let mut rx = self.prepared.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|p| *p).await;
    }

    fn set_ok(&self) {
        self.prepared
            .send_if_modified(|p| !std::mem::replace(p, true));
        let mut s = self.state.write();
        if *s != StoreState::Ok {
            tracing::info!("Postgres store is available");
        }
        *s = StoreState::Ok;
    }

    fn set_degraded(&self, e: &StoreError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.degrade(Utc::now(), e.to_string());
    }

    /// Degraded since `since` (or since earlier, when it already was).
    fn degrade(&self, since: DateTime<Utc>, reason: String) {
        let mut s = self.state.write();
        let since = match &*s {
            StoreState::Degraded { since, .. } => *since,
            _ => {
                tracing::error!(error = %reason, "Postgres store unavailable: probing continues and results are queued until it returns");
                since
            }
        };
        *s = StoreState::Degraded { since, reason };
    }
}

/// What the writer needs to know.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub migrate: bool,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub retention: Retention,
}

/// Runs until `drain` is cancelled and the queue is empty, or `stop` is cancelled.
/// `drain` means: no more results will come, write what is left.
pub async fn run(
    store: Store,
    queue: Arc<ResultQueue>,
    health: Arc<StoreHealth>,
    cfg: WriterConfig,
    drain: CancellationToken,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut ready = false;
    let mut last_maintenance: Option<tokio::time::Instant> = None;
    // The fold and rollup run beside the writer, never in its way; they end with it.
    let rollups = stop.child_token();
    let _end_rollups = rollups.clone().drop_guard();
    tokio::spawn(roll_up_every(store.clone(), health.clone(), rollups));
    loop {
        if stop.is_cancelled() || (drain.is_cancelled() && queue.is_empty()) {
            return;
        }
        if !ready {
            let prepared = tokio::select! {
                r = bounded(&health, PREPARE_TIMEOUT, prepare(&store, &cfg)) => r,
                _ = stop.cancelled() => return,
            };
            match prepared {
                Ok(()) => {
                    ready = true;
                    last_maintenance = Some(tokio::time::Instant::now());
                    health.set_ok();
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    health.set_degraded(&e);
                    store.fail_over();
                    sleep_or(&stop, backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        if last_maintenance.is_none_or(|t| t.elapsed() >= MAINTENANCE_EVERY) {
            last_maintenance = Some(tokio::time::Instant::now());
            if tokio::time::timeout(MAINTENANCE_TIMEOUT, maintain(&store, &cfg))
                .await
                .is_err()
            {
                tracing::warn!(
                    "partition maintenance got no answer from Postgres for {} s; abandoned, will retry",
                    MAINTENANCE_TIMEOUT.as_secs()
                );
            }
        }
        match flush(&store, &queue, &health, cfg.batch_size, &stop).await {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                if drain.is_cancelled() {
                    continue;
                }
                tokio::select! {
                    _ = queue.pushed() => {
                        // Let a batch gather rather than writing each run alone.
                        sleep_or(&stop, cfg.flush_interval).await;
                    }
                    _ = tokio::time::sleep(cfg.flush_interval) => {}
                    _ = drain.cancelled() => {}
                    _ = stop.cancelled() => {}
                }
            }
            Err(e) => {
                health.set_degraded(&e);
                store.fail_over();
                // Whatever failed (a lost connection, a failover, a restore,
                // a database dropped and created again), prepare it again
                // before the next write: create, migrate, partitions, and
                // forget every cached id.
                ready = false;
                sleep_or(&stop, backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Runs a store call results wait for, marking the store degraded while it
/// takes longer than [`STALL_REPORT_AFTER`] and abandoning it after `limit`.
async fn bounded<T>(
    health: &StoreHealth,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Utc::now();
    tokio::pin!(call);
    if let Ok(r) = tokio::time::timeout(STALL_REPORT_AFTER, &mut call).await {
        return r;
    }
    health.degrade(
        started,
        format!(
            "a write to Postgres has not finished for {} s; results wait in the queue (abandoned and retried after {} s)",
            STALL_REPORT_AFTER.as_secs(),
            limit.as_secs()
        ),
    );
    match tokio::time::timeout(limit.saturating_sub(STALL_REPORT_AFTER), call).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::new(
            format!(
                "a write to Postgres did not finish within {} s: no answer on its connection, which is dropped; the write is retried on a new one (check the network path to Postgres and its load)",
                limit.as_secs()
            ),
            Cause::Timeout,
        )),
    }
}

async fn sleep_or(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}

/// Creates the database if needed, migrates, and creates partitions.
async fn prepare(store: &Store, cfg: &WriterConfig) -> Result<(), StoreError> {
    store.forget_cached();
    if cfg.migrate {
        store.ensure_database().await?;
        store.migrate().await?;
    } else {
        store.ping().await?;
    }
    store.ensure_partitions_around(Utc::now()).await?;
    store.start_rollups(Utc::now()).await
}

/// Folds and rolls up every [`ROLLUP_EVERY`] once the database is prepared,
/// on a task of its own: the writer never waits for it.
async fn roll_up_every(store: Store, health: Arc<StoreHealth>, stop: CancellationToken) {
    tokio::select! {
        _ = health.wait_prepared() => {}
        _ = stop.cancelled() => return,
    }
    loop {
        sleep_or(&stop, ROLLUP_EVERY).await;
        if stop.is_cancelled() {
            return;
        }
        let rolled = tokio::select! {
            r = tokio::time::timeout(MAINTENANCE_TIMEOUT, roll_up(&store, &health)) => r,
            _ = stop.cancelled() => return,
        };
        if rolled.is_err() {
            health.rollup_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "the fold of closed minutes got no answer from Postgres for {} s; abandoned, the next one retries",
                MAINTENANCE_TIMEOUT.as_secs()
            );
        }
    }
}

/// Folds closed minutes into minute rows and rolls hours up. A failure loses
/// nothing: the minutes stay readable through the live views and the next
/// rollup takes them.
async fn roll_up(store: &Store, health: &StoreHealth) {
    let started = std::time::Instant::now();
    let span = tracing::info_span!("store.rollup");
    match store.rollup(Utc::now()).instrument(span).await {
        Ok(Some(r)) => {
            health.rollups.fetch_add(1, Ordering::Relaxed);
            let folded_ms = started.elapsed().as_millis() as u64;
            if let Err(e) = store.vacuum_rolled(r.hours).await {
                tracing::warn!(error = %e, "dead rows stay until the next vacuum or autovacuum; the rollup itself is done");
            }
            tracing::debug!(
                upserted = r.upserted,
                through = %r.through,
                ms = folded_ms,
                vacuum_ms = started.elapsed().as_millis() as u64 - folded_ms,
                "folded closed minutes and rolled up hours"
            );
        }
        Ok(None) => {}
        Err(e) => {
            health.rollup_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "the fold of closed minutes or the pack of closed hours failed; the rows stay readable and the next rollup retries");
            // The fold may have committed before a pack failed: its queue
            // is vacuumed all the same, so a pack failing every time does
            // not leave the dead pending rows to grow.
            if let Err(e) = store.vacuum_rolled(false).await {
                tracing::warn!(error = %e, "dead pending rows stay until the next vacuum or autovacuum");
            }
        }
    }
}

async fn maintain(store: &Store, cfg: &WriterConfig) {
    if let Err(e) = store.ensure_partitions_around(Utc::now()).await {
        tracing::warn!(error = %e, "could not create partitions ahead; will retry");
    }
    match store.apply_retention(Utc::now(), &cfg.retention).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(partitions = n, "retention dropped old partitions"),
        Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
    }
}

/// Writes what is queued: full batches while there are, then one partial batch;
/// the next partial batch waits for `flush_interval`, so batches fill up instead
/// of following the write latency. A batch that fails for any reason but its
/// content goes back to the front.
async fn flush(
    store: &Store,
    queue: &ResultQueue,
    health: &StoreHealth,
    batch_size: usize,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    loop {
        let batch = queue.take(batch_size);
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // On `stop` (the shutdown limit passed) the write is abandoned and the
        // batch goes back, so the daemon counts it among the unwritten results.
        let span = tracing::info_span!("store.write", runs = batch.records.len());
        let written = tokio::select! {
            r = write_isolating(store, health, &batch.records).instrument(span) => Some(r),
            _ = stop.cancelled() => None,
        };
        let Some(written) = written else {
            queue.put_back(batch);
            return Ok(());
        };
        match written {
            Ok(()) => {
                let n = batch.len() as u64;
                queue.written(batch);
                queue.report_drops();
                health.batches.fetch_add(1, Ordering::Relaxed);
                health.runs_written.fetch_add(n, Ordering::Relaxed);
                health.write_us.fetch_add(
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                health.set_ok();
                if queue.len() < batch_size {
                    return Ok(());
                }
            }
            Err(e) => {
                queue.put_back(batch);
                return Err(e);
            }
        }
    }
}

/// Writes `batch`; when Postgres refuses it for its content (a data
/// exception, an integrity or size error: retrying as is would fail
/// forever), splits it in halves until the refused runs are alone, writes
/// every other run, and each refused one in reduced form (no message, no
/// detail), logged with its probe and run id and counted. Parts written
/// before a later failure are written again with the batch: the run
/// statement skips run ids already stored, so nothing counts twice.
async fn write_isolating(
    store: &Store,
    health: &StoreHealth,
    batch: &[crate::run::RunRecord],
) -> Result<(), StoreError> {
    let mut parts = vec![batch];
    while let Some(part) = parts.pop() {
        let e = match bounded(health, WRITE_TIMEOUT, store.write_runs(part)).await {
            Ok(_) => continue,
            Err(e) if e.cause() == Cause::Content => e,
            Err(e) => return Err(e),
        };
        if part.len() > 1 {
            let (a, b) = part.split_at(part.len() / 2);
            parts.push(b);
            parts.push(a);
            continue;
        }
        write_reduced(store, health, part, &e).await?;
    }
    Ok(())
}

/// Writes one run Postgres refused in reduced form.
async fn write_reduced(
    store: &Store,
    health: &StoreHealth,
    one: &[crate::run::RunRecord],
    refused: &StoreError,
) -> Result<(), StoreError> {
    let Some(r) = one.first() else {
        return Ok(());
    };
    let message = r
        .outcome
        .error
        .as_ref()
        .map(|e| clean_text(&e.message, MAX_ERROR_MESSAGE_BYTES).into_owned());
    match bounded(
        health,
        WRITE_TIMEOUT,
        store.write_runs_as(one, Form::Reduced),
    )
    .await
    {
        Ok(_) => {
            health.rows_reduced.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                probe = %r.meta.name,
                run_id = %r.run_id,
                error = %refused,
                original_message = ?message,
                "Postgres refused this run's content: stored in reduced form (times, status and error class; no message, no detail)"
            );
            Ok(())
        }
        Err(e) if e.cause() == Cause::Content => {
            health.rows_refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                probe = %r.meta.name,
                run_id = %r.run_id,
                error = %e,
                first_error = %refused,
                original_message = ?message,
                "Postgres refused this run even in reduced form: it is not stored (prober_store_rows_refused_total); please report this with the log line"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}
