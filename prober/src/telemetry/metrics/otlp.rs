//! The OTLP export's families: spans exported and dropped, runs queued;
//! the metrics' exports.

use std::fmt;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::encode::{counter, counter_with, gauge};
use crate::telemetry::otlp::metrics::MetricStats;
use crate::telemetry::otlp::RunTraces;

/// Reads the OTLP export's counters on each scrape (registered only when it is on).
#[derive(Debug)]
pub struct OtlpCollector(pub RunTraces);

impl Collector for OtlpCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.0.stats();
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut enc,
            "prober_otlp_spans_exported",
            "Spans of runs the OTLP receiver accepted.",
            None,
            n(&s.exported_spans),
        )?;
        counter(
            &mut enc,
            "prober_otlp_spans_dropped",
            "Spans of runs dropped because their export failed or timed out (the receiver is down or slow).",
            None,
            n(&s.dropped_spans),
        )?;
        counter(
            &mut enc,
            "prober_otlp_runs_dropped",
            "Runs whose spans were never built because the export queue was full (otel.queue_runs).",
            None,
            n(&s.dropped_runs),
        )?;
        counter(
            &mut enc,
            "prober_otlp_export_failures",
            "OTLP exports that failed or timed out.",
            None,
            n(&s.failed_exports),
        )?;
        gauge(
            &mut enc,
            "prober_otlp_runs_queued",
            "Runs (and, with otel.self_traces, the prober's own spans) waiting for the OTLP receiver.",
            None,
            self.0.queued() as u64,
        )
    }
}

/// Reads the OTLP metrics export's counters (registered only when `otel.metrics` is on).
#[derive(Debug)]
pub struct OtlpMetricsCollector(pub std::sync::Arc<MetricStats>);

impl Collector for OtlpMetricsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut m = enc.encode_descriptor(
            "prober_otlp_metric_exports",
            "Exports of the runs' OTLP metrics (otel.metrics), by result.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        counter_with(&mut m, &[("result", "success")], n(&self.0.exports))?;
        counter_with(&mut m, &[("result", "failure")], n(&self.0.failed_exports))
    }
}
