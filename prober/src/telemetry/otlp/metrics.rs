//! Runs as OTLP metrics (`otel.metrics`, issue 19): per probe, the runs by
//! outcome (`prober.probe.runs`, a counter) and every phase's duration
//! (`prober.probe.duration`, seconds, an exponential histogram), with the
//! probe's labels as attributes.
//!
//! The SDK aggregates (its exponential histogram is exact to its scale; we
//! write no aggregation), read by a `ManualReader` that our own task collects
//! every [`OtelSettings::metrics_interval`] and hands to `opentelemetry-otlp`'s
//! exporter, on tokio (the SDK's `PeriodicReader` exports from a thread of
//! its own, where the tonic and hyper exporters cannot run; the same reason
//! the traces have their own task). An export is given up after
//! [`super::EXPORT_TIMEOUT`] and counted; recording never waits for one.
//!
//! Memory: the SDK keeps a series per attribute set (a histogram's up to
//! [`MAX_BUCKETS`] counts), up to a limit per instrument ([`series_limit`];
//! past it runs are counted in one overflow series, `otel.metric.overflow`).
//! Cumulative keeps every series it has seen (a probe removed by a reload
//! stays until the prober restarts); delta drops a series after an interval
//! in which no run touched it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter as _;
use opentelemetry_sdk::metrics::reader::MetricReader as _;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, InstrumentKind, ManualReader, SdkMeterProvider, Stream, Temporality,
};
use tokio_util::sync::CancellationToken;

use super::{build_error, grpc, http, resource, EXPORT_TIMEOUT, SHUTDOWN_FLUSH};
use crate::config::probe::Probe;
use crate::config::settings::OtlpProtocol;
use crate::config::settings::{MetricsTemporality, OtelSettings};
use crate::run::{phase_samples, RunRecord, PHASES};
use crate::telemetry::metrics::probes::bounded;

/// The most buckets an exponential histogram keeps: the scale falls until
/// the range of the phase's durations fits, so 64 buckets span a tenfold
/// spread at scale 4 (buckets 4.4 % wide), a hundredfold at scale 3 (9 %).
/// OpenTelemetry's default, 160, would hold 1.3 KB of counts a series
/// rather than 0.5 KB. (A series costs ~3.4 KiB at the peak, while an
/// export is built: BENCHMARKS.md.)
pub const MAX_BUCKETS: u32 = 64;

/// Probe labels carried as attributes at most (the first, by name); values are
/// cut to [`MAX_METRICS_LABEL_VALUE`](crate::config::settings::MAX_METRICS_LABEL_VALUE)
/// bytes, as on `/metrics`.
pub const MAX_LABELS: usize = 16;

/// Attribute names the prober sets, which a probe label of the same name does not replace.
const OWN_ATTRIBUTES: [&str; 4] = ["probe", "phase", "outcome", "error.type"];

/// What the metrics export did, for `/metrics`.
#[derive(Debug, Default)]
pub struct MetricStats {
    /// Exports the receiver accepted.
    pub exports: AtomicU64,
    /// Exports that failed or timed out (their points are lost for delta,
    /// sent again at the next export for cumulative).
    pub failed_exports: AtomicU64,
}

/// The instruments every counted run is recorded into. Cheap to clone.
#[derive(Clone)]
pub struct RunMetrics {
    runs: Counter<u64>,
    duration: Histogram<f64>,
    stats: Arc<MetricStats>,
}

impl std::fmt::Debug for RunMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunMetrics").finish_non_exhaustive()
    }
}

impl RunMetrics {
    /// Counts the run and records each phase it reached; never waits for an
    /// export (a collect holds the SDK's read lock a moment, during which a
    /// run that opens a new series waits for it).
    pub fn record(&self, r: &RunRecord, probe: &Probe) {
        let o = &r.outcome;
        let mut attrs = Vec::with_capacity(4 + probe.labels.len().min(MAX_LABELS));
        attrs.push(KeyValue::new("probe", probe.name.clone()));
        attrs.extend(
            (probe.labels.iter())
                .filter(|(k, _)| !OWN_ATTRIBUTES.contains(&k.as_str()))
                .take(MAX_LABELS)
                .map(|(k, v)| KeyValue::new(k.clone(), bounded(v).to_string())),
        );
        // In key order, so the SDK keeps each series under one key (it keeps
        // an unsorted set under its sorted form too).
        attrs.sort_unstable_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        for (phase, sample) in PHASES.iter().zip(phase_samples(&o.phases)) {
            if let Some(us) = sample {
                let at = sorted_at(&attrs, "phase");
                attrs.insert(at, KeyValue::new("phase", *phase));
                self.duration.record(us as f64 / 1e6, &attrs);
                attrs.remove(at);
            }
        }
        let outcome = if o.success { "success" } else { "failure" };
        attrs.insert(
            sorted_at(&attrs, "outcome"),
            KeyValue::new("outcome", outcome),
        );
        if let Some(e) = o.error.as_ref().filter(|_| !o.success) {
            let at = sorted_at(&attrs, "error.type");
            attrs.insert(at, KeyValue::new("error.type", e.class.as_str()));
        }
        self.runs.add(1, &attrs);
    }

    pub fn stats(&self) -> Arc<MetricStats> {
        self.stats.clone()
    }
}

/// Where `key` goes in `attrs`, which are in key order.
fn sorted_at(attrs: &[KeyValue], key: &str) -> usize {
    attrs.partition_point(|a| a.key.as_str() < key)
}

/// The series an instrument may hold: per probe defined at start, 8 for the
/// durations (6 phases, and room) and 4 for the runs (success and the
/// failure classes that occur); at least 2,000, the SDK's default. The SDK
/// sizes its table to it at once (~33 bytes a series).
pub fn series_limit(kind: InstrumentKind, probes: usize) -> usize {
    let per_probe = if kind == InstrumentKind::Histogram {
        8
    } else {
        4
    };
    probes.saturating_mul(per_probe).max(2_000)
}

/// The export task: stopped by [`MetricsTask::finish`], which sends the last points.
#[derive(Debug)]
pub struct MetricsTask {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl MetricsTask {
    /// Collects and sends the last points (within [`SHUTDOWN_FLUSH`]), then waits for the task.
    pub async fn finish(self) {
        self.stop.cancel();
        let limit = EXPORT_TIMEOUT + SHUTDOWN_FLUSH + Duration::from_secs(1);
        if tokio::time::timeout(limit, self.handle).await.is_err() {
            tracing::warn!(
                "the OTLP metrics export did not stop in time; its last points are lost"
            );
        }
    }
}

/// Starts the metrics export when `otel.metrics` says so (`None` otherwise):
/// the exporter is built now (a bad endpoint or header is an error).
pub fn start(
    otel: &OtelSettings,
    location: &str,
    probes: usize,
) -> Result<Option<(RunMetrics, MetricsTask)>, String> {
    if !otel.metrics {
        return Ok(None);
    }
    let temporality = match otel.metrics_temporality {
        MetricsTemporality::Cumulative => Temporality::Cumulative,
        MetricsTemporality::Delta => Temporality::Delta,
    };
    let builder = opentelemetry_otlp::MetricExporter::builder().with_temporality(temporality);
    let exporter = match otel.protocol {
        OtlpProtocol::Grpc => grpc(builder.with_tonic(), otel)?.build(),
        OtlpProtocol::Http => http(builder.with_http(), otel, "/v1/metrics").build(),
    }
    .map_err(|e| build_error(otel, &e))?;
    let reader = Arc::new(
        ManualReader::builder()
            .with_temporality(temporality)
            .build(),
    );
    let provider = SdkMeterProvider::builder()
        .with_resource(resource(location))
        .with_reader(SharedReader(reader.clone()))
        .with_view(move |i: &Instrument| view(i, series_limit(i.kind(), probes)))
        .build();
    let meter = provider.meter_with_scope(
        InstrumentationScope::builder("prober")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    let metrics = RunMetrics {
        runs: (meter.u64_counter("prober.probe.runs"))
            .with_unit("{run}")
            .with_description(
                "Finished runs of the probe, by outcome (and error.type when failed).",
            )
            .build(),
        duration: (meter.f64_histogram("prober.probe.duration"))
            .with_unit("s")
            .with_description(
                "Time spent per phase of the probe's runs (phase total: the whole run).",
            )
            .build(),
        stats: Arc::default(),
    };
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let (stop, stats, interval) = (stop.clone(), metrics.stats.clone(), otel.metrics_interval);
        async move {
            let mut export = Export {
                exporter,
                reader,
                stats,
                warned: None,
            };
            loop {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(interval) => export.send(EXPORT_TIMEOUT).await,
                }
            }
            export.send(SHUTDOWN_FLUSH).await;
            let _ = export.exporter.shutdown();
            drop(provider);
        }
    });
    Ok(Some((metrics, MetricsTask { stop, handle })))
}

/// The duration histograms exponential, and both instruments sized to `limit` series.
fn view(i: &Instrument, limit: usize) -> Option<Stream> {
    let mut s = Stream::builder().with_cardinality_limit(limit);
    if i.kind() == InstrumentKind::Histogram {
        s = s.with_aggregation(Aggregation::Base2ExponentialHistogram {
            max_size: MAX_BUCKETS,
            max_scale: 20,
            record_min_max: true,
        });
    }
    s.build().ok()
}

/// The reader, shared between the provider (which registers its pipeline)
/// and the export task (which collects from it).
#[derive(Debug)]
struct SharedReader(Arc<ManualReader>);

impl opentelemetry_sdk::metrics::reader::MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<opentelemetry_sdk::metrics::Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

struct Export {
    exporter: opentelemetry_otlp::MetricExporter,
    reader: Arc<ManualReader>,
    stats: Arc<MetricStats>,
    warned: Option<std::time::Instant>,
}

impl Export {
    /// Collects the points and sends them within `timeout`; a failure is counted and logged.
    async fn send(&mut self, timeout: Duration) {
        let mut rm = ResourceMetrics::default();
        let failure = match self.reader.collect(&mut rm) {
            Err(e) => Some(format!("collecting failed: {e}")),
            Ok(()) => match tokio::time::timeout(timeout, self.exporter.export(&rm)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
            },
        };
        let Some(e) = failure else {
            self.stats.exports.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.stats.failed_exports.fetch_add(1, Ordering::Relaxed);
        if self.warned.is_none_or(|t| t.elapsed() >= super::WARN_EVERY) {
            self.warned = Some(std::time::Instant::now());
            tracing::warn!(
                error = %e,
                "OTLP metrics export failed (counted in prober_otlp_metric_exports_total{{result=\"failure\"}}); probing goes on; check that the OTLP receiver (otel.endpoint or OTEL_EXPORTER_OTLP_ENDPOINT) is up and speaks the configured protocol"
            );
        }
    }
}
