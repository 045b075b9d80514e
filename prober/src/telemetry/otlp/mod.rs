//! Every run as an OTLP trace (issue 19): the run's spans ([`spans`]) sent
//! over gRPC or HTTP/protobuf by `opentelemetry-otlp`'s exporter.
//!
//! Probing never waits on the receiver: a finished run is cloned into a
//! bounded queue ([`OtelSettings::queue_runs`] runs; past it the run's spans
//! are dropped and counted), and one task builds the spans and exports them
//! in batches of up to [`BATCH_RUNS`] runs, every [`FLUSH_EVERY`] or as soon
//! as a batch is full (or [`BATCH_SPANS`] spans), each export given up after
//! [`EXPORT_TIMEOUT`] (its spans dropped, counted). A receiver that is down or
//! slow costs the queue's memory at most (~2 KB a typical run) and a warning
//! every [`WARN_EVERY`]. At shutdown the queue is sent within
//! [`SHUTDOWN_FLUSH`]; what is left is dropped, counted.

pub mod metrics;
pub mod spans;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _, SpanProcessor};
use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::settings::{OtelSettings, OtlpProtocol};
use crate::run::RunRecord;

/// Runs per export: a batch's spans (a few per run) in one request.
pub const BATCH_RUNS: usize = 512;
/// Spans per export at most (scenarios have many): a batch stays well under a
/// Collector's default 4 MiB gRPC message (a span is ~200 bytes).
pub const BATCH_SPANS: usize = 4_096;
/// At shutdown, how long the queued runs may take to go out.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// The longest a run waits in the queue when the batch does not fill.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// An export not answered within this is abandoned, its spans dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning about failed exports per this.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the export did, for `/metrics`.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Spans the receiver accepted.
    pub exported_spans: AtomicU64,
    /// Runs whose spans were dropped because the queue was full (or the prober was stopping).
    pub dropped_runs: AtomicU64,
    /// Spans dropped because their export failed or timed out.
    pub dropped_spans: AtomicU64,
    /// Exports that failed or timed out.
    pub failed_exports: AtomicU64,
}

/// What waits for the receiver: a run (its spans built when sent) or one of
/// the prober's own spans.
enum Item {
    Run(Box<RunRecord>),
    Own(Box<SpanData>),
}

struct Inner {
    queue: Mutex<VecDeque<Item>>,
    /// Set at shutdown: no run is queued any more.
    closed: std::sync::atomic::AtomicBool,
    capacity: usize,
    full_batch: tokio::sync::Notify,
    stats: Arc<OtlpStats>,
}

/// The handle the scheduler gives every finished run to. Cheap to clone.
#[derive(Clone)]
pub struct RunTraces(Arc<Inner>);

impl std::fmt::Debug for RunTraces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunTraces")
            .field("capacity", &self.0.capacity)
            .finish_non_exhaustive()
    }
}

impl RunTraces {
    /// Queues the run's spans for export; never waits. A full queue drops them, counted.
    pub fn record(&self, r: &RunRecord) {
        let mut q = self.0.queue.lock();
        if q.len() >= self.0.capacity || self.0.closed.load(Ordering::Relaxed) {
            drop(q);
            self.0.stats.dropped_runs.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(Item::Run(Box::new(r.clone())));
        let full = q.len() == BATCH_RUNS;
        drop(q);
        if full {
            self.0.full_batch.notify_one();
        }
    }

    /// The span processor that queues the prober's own spans (`otel.self_traces`).
    pub fn own_spans(&self) -> OwnSpans {
        OwnSpans(self.clone())
    }

    pub fn stats(&self) -> Arc<OtlpStats> {
        self.0.stats.clone()
    }

    /// Runs and own spans waiting for the receiver.
    pub fn queued(&self) -> usize {
        self.0.queue.lock().len()
    }
}

/// Queues the prober's own spans (the `tracing` spans of its work, through
/// `tracing-opentelemetry` and the SDK's tracer) beside the runs; a full
/// queue drops them, counted in `prober_otlp_spans_dropped_total`.
#[derive(Debug)]
pub struct OwnSpans(RunTraces);

impl SpanProcessor for OwnSpans {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        let inner = &self.0 .0;
        let mut q = inner.queue.lock();
        if q.len() >= inner.capacity || inner.closed.load(Ordering::Relaxed) {
            drop(q);
            inner.stats.dropped_spans.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(Item::Own(Box::new(span)));
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: stopped by [`ExportTask::finish`] once no run is left to record.
#[derive(Debug)]
pub struct ExportTask {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl ExportTask {
    /// Sends what is queued (within [`SHUTDOWN_FLUSH`]; what is left then
    /// is dropped, counted) and waits for the task.
    pub async fn finish(self, traces: &RunTraces) {
        // A run recorded from now on (one past the grace period, an API run
        // before the server stops) is not waited for: counted as dropped.
        traces.0.closed.store(true, Ordering::Relaxed);
        self.stop.cancel();
        // An export in flight, then the flush, and a margin.
        let limit = EXPORT_TIMEOUT + SHUTDOWN_FLUSH + Duration::from_secs(1);
        if tokio::time::timeout(limit, self.handle).await.is_err() {
            tracing::warn!("the OTLP export did not stop in time; its last spans are lost");
        }
    }
}

/// Starts the export when `otel` says so (`None` otherwise): the exporter is
/// built now (a bad header or endpoint is an error), the task runs until
/// [`ExportTask::finish`].
pub fn start(
    otel: &OtelSettings,
    location: &str,
) -> Result<Option<(RunTraces, ExportTask)>, String> {
    if !otel.traces && !otel.self_traces {
        return Ok(None);
    }
    let mut exporter = exporter(otel)?;
    exporter.set_resource(&resource(location));
    let inner = Arc::new(Inner {
        queue: Mutex::new(VecDeque::new()),
        closed: std::sync::atomic::AtomicBool::new(false),
        capacity: otel.queue_runs,
        full_batch: tokio::sync::Notify::new(),
        stats: Arc::default(),
    });
    let traces = RunTraces(inner.clone());
    let location = location.to_string();
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut export = Export {
                exporter,
                inner: &inner,
                location: &location,
                scope: InstrumentationScope::builder("prober")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
                warned: None,
            };
            export.run(stop).await;
        }
    });
    Ok(Some((traces, ExportTask { stop, handle })))
}

/// The OTLP span exporter `otel` describes; the standard variables fill what it leaves unset.
fn exporter(otel: &OtelSettings) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    match otel.protocol {
        OtlpProtocol::Grpc => grpc(builder.with_tonic(), otel)?.build(),
        OtlpProtocol::Http => http(builder.with_http(), otel, "/v1/traces").build(),
    }
    .map_err(|e| build_error(otel, &e))
}

/// A gRPC exporter's builder (traces or metrics) set from `otel`: endpoint,
/// metadata, [`EXPORT_TIMEOUT`].
fn grpc<B: WithExportConfig + WithTonicConfig>(b: B, otel: &OtelSettings) -> Result<B, String> {
    let mut b = b.with_timeout(EXPORT_TIMEOUT);
    if let Some(e) = &otel.endpoint {
        b = b.with_endpoint(e.clone());
    }
    if !otel.headers.is_empty() {
        b = b.with_metadata(metadata(&otel.headers)?);
    }
    Ok(b)
}

/// An HTTP/protobuf exporter's builder set from `otel`: the endpoint with
/// `path` (`/v1/traces`, `/v1/metrics`) added, headers, [`EXPORT_TIMEOUT`].
fn http<B: WithExportConfig + WithHttpConfig>(b: B, otel: &OtelSettings, path: &str) -> B {
    let mut b = b
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT);
    if let Some(e) = &otel.endpoint {
        b = b.with_endpoint(format!("{}{path}", e.trim_end_matches('/')));
    }
    if !otel.headers.is_empty() {
        let h: HashMap<String, String> = otel.headers.clone().into_iter().collect();
        b = b.with_headers(h);
    }
    b
}

fn build_error(otel: &OtelSettings, e: &impl std::fmt::Display) -> String {
    format!(
        "otel: cannot set up the OTLP exporter to {} ({e}); check otel.endpoint and otel.protocol",
        otel.endpoint
            .as_deref()
            .unwrap_or("the OTEL_EXPORTER_OTLP_* endpoint")
    )
}

/// The resource of every span and metric: the service (`OTEL_SERVICE_NAME`,
/// default `prober`) and the prober's location.
fn resource(location: &str) -> Resource {
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "prober".into());
    Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("prober.location", location.to_string()))
        .build()
}

fn metadata(headers: &BTreeMap<String, String>) -> Result<tonic::metadata::MetadataMap, String> {
    let mut m = tonic::metadata::MetadataMap::new();
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
            .map_err(|_| format!("otel.headers: {k:?} is not a gRPC metadata key"))?;
        let value = v
            .parse()
            .map_err(|_| format!("otel.headers.{k}: not a valid metadata value"))?;
        m.insert(key, value);
    }
    Ok(m)
}

/// The export task's state.
struct Export<'a> {
    exporter: opentelemetry_otlp::SpanExporter,
    inner: &'a Inner,
    location: &'a str,
    scope: InstrumentationScope,
    /// When a failed export was last logged.
    warned: Option<Instant>,
}

impl Export<'_> {
    /// Sends a batch every [`FLUSH_EVERY`] or as soon as one is full, until
    /// `stop`; then what is queued, within [`SHUTDOWN_FLUSH`].
    async fn run(&mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = self.inner.full_batch.notified() => {}
                () = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            while !stop.is_cancelled() && self.send(EXPORT_TIMEOUT).await {}
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.send(left.min(EXPORT_TIMEOUT)).await {
                break;
            }
        }
        let lost = {
            let mut q = self.inner.queue.lock();
            let n = q.len();
            q.clear();
            n
        };
        if lost > 0 {
            let stats = &self.inner.stats;
            stats.dropped_runs.fetch_add(lost as u64, Ordering::Relaxed);
            tracing::warn!(
                runs = lost,
                "the OTLP receiver did not take every run's spans before the prober stopped; these are dropped"
            );
        }
        let _ = self.exporter.shutdown();
    }

    /// Exports the oldest queued runs, up to [`BATCH_RUNS`] runs or
    /// [`BATCH_SPANS`] spans; returns whether runs are still queued.
    async fn send(&mut self, timeout: Duration) -> bool {
        let mut batch = Vec::new();
        let mut runs = 0;
        while runs < BATCH_RUNS && batch.len() < BATCH_SPANS {
            let Some(item) = self.inner.queue.lock().pop_front() else {
                break;
            };
            match item {
                Item::Run(r) => batch.extend(spans::spans_of(&r, self.location, &self.scope)),
                Item::Own(s) => batch.push(*s),
            }
            runs += 1;
        }
        if batch.is_empty() {
            return false;
        }
        let n = batch.len() as u64;
        let failure = match tokio::time::timeout(timeout, self.exporter.export(batch)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
        };
        let stats = &self.inner.stats;
        match failure {
            None => {
                stats.exported_spans.fetch_add(n, Ordering::Relaxed);
            }
            Some(e) => {
                stats.dropped_spans.fetch_add(n, Ordering::Relaxed);
                stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    self.warned = Some(Instant::now());
                    tracing::warn!(
                        spans = n,
                        error = %e,
                        "OTLP export failed; these spans are dropped (counted in prober_otlp_spans_dropped_total), probing goes on; check that the OTLP receiver (otel.endpoint or OTEL_EXPORTER_OTLP_ENDPOINT) is up and speaks the configured protocol"
                    );
                }
            }
        }
        !self.inner.queue.lock().is_empty()
    }
}
