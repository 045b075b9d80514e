//! `/metrics` in the Prometheus text exposition format, version 0.0.4
//! (`text/plain; version=0.0.4; charset=utf-8`).
//!
//! Encoding is prometheus-client's own 0.0.4 encoder,
//! `prometheus_client::encoding::prometheus_text` (new in 0.26): HELP and
//! label values escaped, `_total` added to counters, `_info` to info metrics,
//! `le` bounds printed as Go clients print them, no `# EOF`. So nothing is
//! hand-written or post-processed. Its default encoder, `encoding::text`,
//! writes OpenMetrics, which is not a 0.0.4 page: `# TYPE x counter` names the
//! family while the samples are `x_total`, so a 0.0.4 parser sees an empty
//! counter `x` plus an untyped `x_total`, and `promtool check metrics` (2.42)
//! refuses it ("x_total no help text"); `# EOF` and `# UNIT` it merely reads as
//! comments. The page served here passes promtool (the integration tests run it).
//!
//! Nothing is counted twice: no metric objects are updated alongside the
//! subsystems' own counters. One [`Collector`](prometheus_client::collector::Collector)
//! per subsystem (one file each here: [`probes`], [`scheduler`], [`store`],
//! [`reload`], [`alerts`], [`notify`], [`process`]) reads that subsystem's state
//! at scrape time, so the numbers agree with `/readyz` and the JSON API, and a
//! probe removed by a reload disappears from the next scrape: per-probe series
//! come from the probes being scheduled, in name order. The daemon registers
//! the collectors, in the order of the page, into a [`Metrics`].

pub mod alerts;
mod encode;
pub mod notify;
pub mod probes;
pub mod process;
pub mod reload;
pub mod scheduler;
pub mod store;
mod stream;

use std::fmt;
use std::sync::Arc;

use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

/// The collectors of one daemon, in the order their families appear on the page.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Adds a collector; its families follow those of the collectors added before.
    pub fn register(&mut self, collector: impl Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// Encodes the whole exposition into `out`.
    pub fn encode(&self, out: &mut impl fmt::Write) -> fmt::Result {
        prometheus_text::encode(out, &self.registry)
    }
}

/// Serves the metrics, streamed (see [`stream::respond`]).
pub fn respond(metrics: Arc<Metrics>) -> Response {
    stream::respond(metrics)
}
