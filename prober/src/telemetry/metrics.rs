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
//! daemon's own counters. A [`Collector`] reads the daemon's state at scrape
//! time (live per-probe state, scheduler, queue, store writer, reload state),
//! so the numbers agree with `/readyz` and the JSON API, and a probe removed
//! by a reload disappears from the next scrape: per-probe series come from the
//! probes being scheduled, in name order.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::{fmt, io};

use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::Frame;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::mpsc;

use crate::config::settings::MAX_METRICS_LABEL_VALUE;
use crate::daemon::Core;
use crate::results::{MetricHist, METRIC_BUCKETS_US};
use crate::run::ErrorClass;
use crate::run::PHASES;
use crate::store::writer::StoreState;

/// Bytes encoded before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;
/// Chunks encoded ahead of the client: the most a scrape holds besides its snapshot.
const CHUNKS_AHEAD: usize = 4;

/// Serves the metrics, streamed: at 10,000 probes the page is ~85 MB (the
/// per-probe, per-phase histograms), more than the daemon's whole memory
/// budget, so it is encoded on a blocking thread in 64 KiB chunks that go out
/// as the client reads them. An encoding failure aborts the response (no
/// final chunk), so a scraper never takes a truncated page for a whole one.
pub async fn handler(State(core): State<Arc<Core>>) -> Response {
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx,
            buf: String::with_capacity(CHUNK),
        };
        let done = encode(&core, &mut out).and_then(|()| out.flush());
        if done.is_err() && !out.tx.is_closed() {
            tracing::error!("encoding /metrics failed");
            let _ = out
                .tx
                .blocking_send(Err(io::Error::other("encoding the metrics failed")));
        }
    });
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        Body::new(ChunkBody(rx)),
    )
        .into_response()
}

/// Encodes the whole exposition into `out`.
pub fn encode(core: &Arc<Core>, out: &mut impl fmt::Write) -> fmt::Result {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(DaemonCollector(core.clone())));
    prometheus_text::encode(out, &registry)
}

/// Sends what is written in chunks of about [`CHUNK`] bytes; fails once the client is gone.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: String,
}

impl ChunkWriter {
    fn flush(&mut self) -> fmt::Result {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, String::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| fmt::Error)
    }
}

impl fmt::Write for ChunkWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }
}

/// The response body: the chunks as they come.
struct ChunkBody(mpsc::Receiver<io::Result<Bytes>>);

impl HttpBody for ChunkBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

/// Reads the daemon's state on each scrape.
struct DaemonCollector(Arc<Core>);

impl fmt::Debug for DaemonCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DaemonCollector")
    }
}

/// One probe's numbers, copied out under its lock so each probe is consistent
/// across families (runs = histogram count of phase `total`).
struct ProbeSnapshot {
    name: String,
    /// The probe's values of `metrics_labels` ("" where it has none), in that order.
    extra: Vec<(String, String)>,
    runs: u64,
    failures: u64,
    /// Success of the last run; `None` before the first.
    up: Option<bool>,
    phases: [MetricHist; 6],
    failures_by_class: Vec<(ErrorClass, u64)>,
}

impl ProbeSnapshot {
    /// The series' labels: `probe`, then `own`, then the `metrics_labels`.
    fn labels<'a>(&'a self, own: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut l = Vec::with_capacity(1 + own.len() + self.extra.len());
        l.push(("probe", self.name.as_str()));
        l.extend_from_slice(own);
        l.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        l
    }
}

/// A label value cut to [`MAX_METRICS_LABEL_VALUE`] bytes (on a character boundary).
fn bounded(v: &str) -> &str {
    let mut end = v.len().min(MAX_METRICS_LABEL_VALUE);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

impl DaemonCollector {
    fn probes(&self) -> Vec<ProbeSnapshot> {
        let core = &self.0;
        core.scheduler
            .probes()
            .iter()
            .map(|p| {
                let mut snap = ProbeSnapshot {
                    name: p.name.clone(),
                    extra: (core.settings.metrics_labels.iter())
                        .map(|l| {
                            let v = p.labels.get(l).map_or("", |v| bounded(v));
                            (l.clone(), v.to_string())
                        })
                        .collect(),
                    runs: 0,
                    failures: 0,
                    up: None,
                    phases: Default::default(),
                    failures_by_class: Vec::new(),
                };
                if let Some(state) = core.live.get(&p.name) {
                    let s = match state.lock() {
                        Ok(s) => s,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    snap.runs = s.runs;
                    snap.failures = s.failures;
                    snap.up = s.status.map(|st| st.up);
                    snap.phases = s.phase_totals.as_deref().copied().unwrap_or_default();
                    snap.failures_by_class.clone_from(&s.failures_by_class);
                }
                snap.failures_by_class.sort_by_key(|(c, _)| c.as_str());
                snap
            })
            .collect()
    }
}

impl Collector for DaemonCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let core = &self.0;
        let probes = self.probes();

        // Per probe.
        let mut m = enc.encode_descriptor(
            "prober_probe_runs",
            "Finished runs of the probe, by result.",
            None,
            MetricType::Counter,
        )?;
        for p in &probes {
            let ok = p.runs.saturating_sub(p.failures);
            counter_with(&mut m, &p.labels(&[("result", "success")]), ok)?;
            counter_with(&mut m, &p.labels(&[("result", "failure")]), p.failures)?;
        }
        if probes.iter().any(|p| !p.failures_by_class.is_empty()) {
            let mut m = enc.encode_descriptor(
                "prober_probe_failures",
                "Failed runs of the probe, by error class (only classes that occurred).",
                None,
                MetricType::Counter,
            )?;
            for p in &probes {
                for (class, n) in &p.failures_by_class {
                    counter_with(&mut m, &p.labels(&[("error_class", class.as_str())]), *n)?;
                }
            }
        }
        if probes.iter().any(|p| p.up.is_some()) {
            let mut m = enc.encode_descriptor(
                "prober_probe_success",
                "Whether the last run of the probe succeeded (1) or failed (0).",
                None,
                MetricType::Gauge,
            )?;
            for p in &probes {
                if let Some(up) = p.up {
                    gauge_with(&mut m, &p.labels(&[]), u64::from(up))?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "prober_probe_duration",
            "Time spent per phase of the probe's runs (phase total: the whole run). \
             A phase a run did not reach is not observed.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for p in &probes {
            for (i, (phase, h)) in PHASES.iter().zip(&p.phases).enumerate() {
                // Phase total always, so every probe has its run count; others once observed.
                if i == 0 || h.count() > 0 {
                    histogram_with(&mut m, &p.labels(&[("phase", *phase)]), h)?;
                }
            }
        }

        // Scheduler.
        let stats = &core.scheduler_stats;
        let m = enc.encode_descriptor(
            "prober_scheduler_lateness",
            "How late runs started after their scheduled tick (waits for the concurrency limits included).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        histogram(m, &stats.lateness())?;
        counter(
            &mut enc,
            "prober_scheduler_skipped_ticks",
            "Ticks skipped because the probe's previous run was still going (or the process stalled).",
            None,
            stats.skipped_ticks.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "prober_scheduler_runs_in_flight",
            "Runs started or waiting for a concurrency slot, not yet finished.",
            None,
            stats.in_flight.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_scheduler_runs",
            "Runs finished, all probes together.",
            None,
            stats.runs_finished.load(Ordering::Relaxed),
        )?;

        // Result queue and store.
        gauge(
            &mut enc,
            "prober_store_queue_depth",
            "Results waiting to be written to Postgres.",
            None,
            core.queue.len() as u64,
        )?;
        gauge(
            &mut enc,
            "prober_store_queue_capacity",
            "Results the queue holds before it drops the oldest.",
            None,
            core.queue.capacity() as u64,
        )?;
        counter(
            &mut enc,
            "prober_store_queue_dropped",
            "Results dropped because the queue was full (Postgres unavailable too long).",
            None,
            core.queue.dropped(),
        )?;
        counter(
            &mut enc,
            "prober_audit_dropped",
            "Audit log entries dropped: the audit queue was full, or Postgres refused them after retries.",
            None,
            core.audit.dropped(),
        )?;
        let health = &core.store_health;
        counter(
            &mut enc,
            "prober_store_batches",
            "Batches written to Postgres.",
            None,
            health.batches.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_store_errors",
            "Failed attempts to write to or prepare Postgres.",
            None,
            health.errors.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_store_rows_reduced",
            "Runs stored in reduced form (no error message, no detail) because Postgres refused their content; each is logged with its probe and run id.",
            None,
            health.rows_reduced.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_store_rows_refused",
            "Runs Postgres refused even in reduced form: logged with probe and run id, not stored.",
            None,
            health.rows_refused.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_store_runs_written",
            "Runs written to Postgres.",
            None,
            health.runs_written.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_store_write",
            "Time spent writing batches to Postgres.",
            Some(&Unit::Seconds),
            micros_to_seconds(health.write_us.load(Ordering::Relaxed)),
        )?;
        counter(
            &mut enc,
            "prober_store_rollups",
            "Rollups of closed minutes into the hour and day tables (one a minute).",
            None,
            health.rollups.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_store_rollup_errors",
            "Failed rollups; the minutes stay readable and the next rollup retries.",
            None,
            health.rollup_errors.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "prober_store_up",
            "Whether the Postgres store is available (1) or not: starting or degraded (0).",
            None,
            u64::from(health.state() == StoreState::Ok),
        )?;

        // Reloads.
        let reload = core.reload_state();
        let mut m = enc.encode_descriptor(
            "prober_reloads",
            "Reloads of the probe files, by result (a refused reload changes nothing).",
            None,
            MetricType::Counter,
        )?;
        counter_with(&mut m, &[("result", "success")], reload.succeeded_total)?;
        counter_with(&mut m, &[("result", "failure")], reload.failed_total)?;
        gauge(
            &mut enc,
            "prober_reload_errors",
            "Problems found by the last reload attempt (0 when it applied).",
            None,
            reload.errors.len() as u64,
        )?;
        if let Some(at) = reload.last_success_at {
            gauge(
                &mut enc,
                "prober_config_last_reload_success_timestamp",
                "When the probe files were last loaded successfully (start or reload), as a Unix time.",
                Some(&Unit::Seconds),
                unix_seconds(at),
            )?;
        }

        // Alerts and notifications.
        let active = core.alerts.active();
        let mut m = enc.encode_descriptor(
            "prober_alerts",
            "Alerts pending or firing now, by state and severity (suppressed: held back by a silence, an upstream or k-of-n).",
            None,
            MetricType::Gauge,
        )?;
        for state in [crate::alert::State::Pending, crate::alert::State::Firing] {
            for severity in [crate::alert::Severity::Page, crate::alert::Severity::Ticket] {
                for suppressed in [false, true] {
                    let n = active
                        .iter()
                        .filter(|a| a.state == state && a.severity == severity)
                        .filter(|a| a.suppressed.is_some() == suppressed)
                        .count();
                    gauge_with(
                        &mut m,
                        &[
                            ("state", state.as_str()),
                            ("severity", severity.as_str()),
                            ("suppressed", if suppressed { "true" } else { "false" }),
                        ],
                        n as u64,
                    )?;
                }
            }
        }
        counter(
            &mut enc,
            "prober_alert_runs_dropped",
            "Runs not evaluated for alerts because the alert engine's queue was full.",
            None,
            core.alerts.dropped.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_alert_evaluations",
            "Periodic alert evaluations (silences, reminders; latency and SLO rules on the evaluator).",
            None,
            core.alerts.evaluations.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "prober_alert_evaluator",
            "Whether this replica holds the evaluator lock and evaluates the all-locations rules (1) or not (0).",
            None,
            u64::from(core.alerts.leader.load(Ordering::Relaxed)),
        )?;
        let ns = &core.notify_stats;
        let mut m = enc.encode_descriptor(
            "prober_notifications",
            "Notification attempts by outcome: delivered, retried (will try again), given_up (on-call was not told).",
            None,
            MetricType::Counter,
        )?;
        counter_with(
            &mut m,
            &[("outcome", "delivered")],
            ns.delivered.load(Ordering::Relaxed),
        )?;
        counter_with(
            &mut m,
            &[("outcome", "retried")],
            ns.retried.load(Ordering::Relaxed),
        )?;
        counter_with(
            &mut m,
            &[("outcome", "given_up")],
            ns.given_up.load(Ordering::Relaxed),
        )?;

        // Process.
        gauge(
            &mut enc,
            "prober_probes",
            "Probes being scheduled.",
            None,
            probes.len() as u64,
        )?;
        let mut m = enc.encode_descriptor(
            "prober_build",
            "The prober build: always 1, the version in a label.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&[("version", crate::VERSION)])?;
        gauge(
            &mut enc,
            "prober_start_time",
            "When the daemon started, as a Unix time.",
            Some(&Unit::Seconds),
            unix_seconds(core.started_at),
        )?;
        Ok(())
    }
}

fn micros_to_seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

fn unix_seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: impl EncodeCounterValue,
) -> Result<(), fmt::Error> {
    enc.encode_descriptor(name, help, unit, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: impl EncodeGaugeValue,
) -> Result<(), fmt::Error> {
    enc.encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn counter_with(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: u64,
) -> Result<(), fmt::Error> {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge_with(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: u64,
) -> Result<(), fmt::Error> {
    m.encode_family(labels)?.encode_gauge(&v)
}

fn histogram_with(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    h: &MetricHist,
) -> Result<(), fmt::Error> {
    histogram(m.encode_family(labels)?, h)
}

/// Buckets as prometheus-client takes them: upper bound in seconds and the
/// count of that bucket alone (it accumulates them, and adds `+Inf` = count).
fn histogram(mut m: MetricEncoder, h: &MetricHist) -> Result<(), fmt::Error> {
    let buckets: [(f64, u64); METRIC_BUCKETS_US.len()] =
        std::array::from_fn(|i| (micros_to_seconds(METRIC_BUCKETS_US[i]), h.buckets[i]));
    m.encode_histogram::<NoLabelSet>(micros_to_seconds(h.sum_us), h.count(), &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_page_goes_out_in_chunks_unchanged() {
        use std::fmt::Write as _;
        let (tx, mut rx) = mpsc::channel(CHUNKS_AHEAD);
        let line = "prober_probe_runs_total{probe=\"p\",result=\"success\"} 1\n";
        let writer = std::thread::spawn(move || {
            let mut out = ChunkWriter {
                tx,
                buf: String::new(),
            };
            for _ in 0..10_000 {
                out.write_str(line)?;
            }
            out.flush()
        });
        let mut chunks = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            chunks.push(chunk.unwrap_or_else(|e| panic!("{e}")));
        }
        assert_eq!(writer.join().ok(), Some(Ok(())));
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= CHUNK + line.len()));
        assert_eq!(chunks.concat(), line.repeat(10_000).as_bytes());
    }

    #[test]
    fn label_values_are_cut_to_the_bound_on_a_character_boundary() {
        assert_eq!(bounded("payments"), "payments");
        let long = "é".repeat(MAX_METRICS_LABEL_VALUE);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_METRICS_LABEL_VALUE && cut.len() >= MAX_METRICS_LABEL_VALUE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn bucket_bounds_print_as_written() {
        let bounds: Vec<String> = METRIC_BUCKETS_US
            .iter()
            .map(|&us| micros_to_seconds(us).to_string())
            .collect();
        assert_eq!(
            bounds,
            [
                "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
                "2.5", "5", "10"
            ]
        );
    }
}
