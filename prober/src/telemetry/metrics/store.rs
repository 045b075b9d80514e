//! The store's families: the result queue, the audit log's drops, and the
//! writer's batches, errors, rollups and availability.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use super::encode::{counter, gauge, micros_to_seconds};
use crate::store::audit::AuditLog;
use crate::store::queue::ResultQueue;
use crate::store::writer::{StoreHealth, StoreState};

/// Reads the result queue, the audit log and the writer's health on each scrape.
#[derive(Debug)]
pub struct StoreCollector {
    pub queue: Arc<ResultQueue>,
    pub audit: AuditLog,
    pub health: Arc<StoreHealth>,
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_queue(&mut enc)?;
        self.encode_writer(&mut enc)
    }
}

impl StoreCollector {
    fn encode_queue(&self, enc: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        gauge(
            enc,
            "prober_store_queue_depth",
            "Results waiting to be written to Postgres (queued and in the batch being written).",
            None,
            self.queue.depth() as u64,
        )?;
        gauge(
            enc,
            "prober_store_queue_capacity",
            "Results the queue holds before it drops the oldest.",
            None,
            self.queue.capacity() as u64,
        )?;
        gauge(
            enc,
            "prober_store_queue_bytes",
            "What the queued results take (their binary form and the queue's own per result), in memory and waiting on disk in the spool, not counting the batch being written.",
            None,
            self.queue.bytes() as u64,
        )?;
        gauge(
            enc,
            "prober_store_queue_memory_bytes",
            "Of prober_store_queue_bytes, what is held in memory (with a spool, about spool.memory_bytes at most; the rest waits on disk).",
            None,
            self.queue.memory_bytes() as u64,
        )?;
        gauge(
            enc,
            "prober_store_queue_max_bytes",
            "Bytes the queue holds before it drops the oldest (queue_max_bytes).",
            None,
            self.queue.max_bytes() as u64,
        )?;
        counter(
            enc,
            "prober_store_queue_dropped",
            "Results dropped because the queue was full (Postgres unavailable too long).",
            None,
            self.queue.dropped(),
        )?;
        counter(
            enc,
            "prober_audit_dropped",
            "Audit log entries dropped: the audit queue was full, or Postgres refused them after retries.",
            None,
            self.audit.dropped(),
        )
    }

    fn encode_writer(&self, enc: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let health = &self.health;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        counter(
            enc,
            "prober_store_batches",
            "Batches written to Postgres.",
            None,
            load(&health.batches),
        )?;
        counter(
            enc,
            "prober_store_errors",
            "Failed attempts to write to or prepare Postgres.",
            None,
            load(&health.errors),
        )?;
        counter(
            enc,
            "prober_store_rows_reduced",
            "Runs stored in reduced form (no error message, no detail) because Postgres refused their content; each is logged with its probe and run id.",
            None,
            load(&health.rows_reduced),
        )?;
        counter(
            enc,
            "prober_store_rows_refused",
            "Runs Postgres refused even in reduced form: logged with probe and run id, not stored.",
            None,
            load(&health.rows_refused),
        )?;
        counter(
            enc,
            "prober_store_runs_written",
            "Runs written to Postgres.",
            None,
            load(&health.runs_written),
        )?;
        counter(
            enc,
            "prober_store_write",
            "Time spent writing batches to Postgres.",
            Some(&Unit::Seconds),
            micros_to_seconds(load(&health.write_us)),
        )?;
        counter(
            enc,
            "prober_store_rollups",
            "Rollups of closed minutes into the hour and day tables (one a minute).",
            None,
            load(&health.rollups),
        )?;
        counter(
            enc,
            "prober_store_rollup_errors",
            "Failed rollups; the minutes stay readable and the next rollup retries.",
            None,
            load(&health.rollup_errors),
        )?;
        gauge(
            enc,
            "prober_store_up",
            "Whether the Postgres store is available (1) or not: starting or degraded (0).",
            None,
            u64::from(health.state() == StoreState::Ok),
        )
    }
}
