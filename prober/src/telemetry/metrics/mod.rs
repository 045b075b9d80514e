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
//! A scraper that asks for OpenMetrics (Prometheus does) gets that encoding
//! instead, with exemplars on the duration histograms ([`openmetrics`]).
//!
//! Nothing is counted twice: no metric objects are updated alongside the
//! subsystems' own counters. One [`Collector`](prometheus_client::collector::Collector)
//! per subsystem (one file each here: [`probes`], [`scheduler`], [`store`],
//! [`reload`], [`alerts`], [`notify`], [`trends`], [`process`]) reads that subsystem's state
//! at scrape time, so the numbers agree with `/readyz` and the JSON API, and a
//! probe removed by a reload disappears from the next scrape: per-probe series
//! come from the probes being scheduled, in name order. The daemon registers
//! the collectors, in the order of the page, into a [`Metrics`].

pub mod alerts;
mod encode;
pub mod notify;
pub mod openmetrics;
pub mod otlp;
pub mod probes;
pub mod process;
pub mod reload;
pub mod scheduler;
pub mod store;
mod stream;
pub mod trends;

use std::fmt;
use std::sync::Arc;

use axum::response::Response;
pub use openmetrics::Format;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

/// The collectors of one daemon, in the order their families appear on the page.
#[derive(Debug)]
pub struct Metrics {
    /// The 0.0.4 page: every collector.
    registry: Registry,
    /// The OpenMetrics page: the same collectors, the probes' without their
    /// duration histograms, which [`Metrics::probes`] writes with exemplars.
    open: Registry,
    probes: Option<Arc<probes::ProbeCollector>>,
    /// Pages being encoded ([`stream::MAX_SCRAPES`] at most).
    scrapes: Arc<tokio::sync::Semaphore>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            registry: Registry::default(),
            open: Registry::default(),
            probes: None,
            scrapes: Arc::new(tokio::sync::Semaphore::new(stream::MAX_SCRAPES)),
        }
    }
}

/// One collector in both registries.
#[derive(Debug)]
struct Shared<C>(Arc<C>);

impl<C: Collector> Collector for Shared<C> {
    fn encode(&self, enc: prometheus_client::encoding::DescriptorEncoder) -> fmt::Result {
        self.0.encode(enc)
    }
}

impl Metrics {
    /// Adds a collector; its families follow those of the collectors added before.
    pub fn register(&mut self, collector: impl Collector) {
        let c = Arc::new(collector);
        self.registry
            .register_collector(Box::new(Shared(c.clone())));
        self.open.register_collector(Box::new(Shared(c)));
    }

    /// Adds the per-probe collector, whose duration histograms carry exemplars in OpenMetrics.
    pub fn register_probes(&mut self, collector: probes::ProbeCollector) {
        let c = Arc::new(collector);
        self.registry
            .register_collector(Box::new(Shared(c.clone())));
        (self.open).register_collector(Box::new(probes::WithoutDurations(c.clone())));
        self.probes = Some(c);
    }

    /// Encodes the whole exposition into `out`, in `format`.
    pub fn encode(&self, out: &mut impl fmt::Write, format: Format) -> fmt::Result {
        match format {
            Format::Text => prometheus_text::encode(out, &self.registry),
            Format::OpenMetrics => {
                // The probes' counters and durations from one snapshot.
                let _page = self.probes.as_ref().map(|p| p.page_snapshot());
                prometheus_client::encoding::text::encode_registry(out, &self.open)?;
                if let Some(probes) = &self.probes {
                    probes.write_durations(out)?;
                }
                prometheus_client::encoding::text::encode_eof(out)
            }
        }
    }
}

/// Serves the metrics in the format the scraper asks for, streamed (see [`stream::respond`]).
pub fn respond(metrics: Arc<Metrics>, headers: &axum::http::HeaderMap) -> Response {
    stream::respond(metrics, Format::negotiate(headers))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::notify::worker::NotifyStats;
    use crate::telemetry::reload::ReloadStatus;

    #[test]
    fn collectors_read_their_subsystem_at_scrape_time_in_registration_order() {
        let reload = Arc::new(ReloadStatus::default());
        let notify = Arc::new(NotifyStats::default());
        let mut metrics = Metrics::default();
        metrics.register(reload::ReloadCollector(reload.clone()));
        metrics.register(notify::NotifyCollector(notify.clone()));
        // Changed after registration: the scrape sees the subsystem as it is now.
        reload.update(|s| {
            s.failed_total = 2;
            s.errors = vec!["probes/a.yaml:1:1: bad".into()];
        });
        notify.given_up.store(3, Ordering::Relaxed);
        let mut page = String::new();
        metrics
            .encode(&mut page, Format::Text)
            .unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = page.lines().collect();
        let at = |line: &str| {
            (lines.iter().position(|l| *l == line)).unwrap_or_else(|| panic!("{line}\n{page}"))
        };
        let reloads = at("# TYPE prober_reloads_total counter");
        assert!(at("prober_reloads_total{result=\"failure\"} 2") > reloads);
        assert!(at("prober_reload_errors 1") > reloads);
        // No success yet: no timestamp series.
        assert!(!page.contains("prober_config_last_reload_success_timestamp"));
        let notifications = at("# TYPE prober_notifications_total counter");
        assert!(notifications > reloads, "registration order is page order");
        assert!(at("prober_notifications_total{outcome=\"given_up\"} 3") > notifications);
    }
}
