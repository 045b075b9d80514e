//! Runs as OTLP metrics (`otel.metrics`), received by a real OTLP receiver in
//! the test: a gRPC server (tonic, the `MetricsService` of
//! `opentelemetry-proto`) and an HTTP server taking `POST /v1/metrics`
//! protobuf bodies. What arrives is checked against the runs the daemon
//! finished: counts by outcome, exponential histograms per phase whose count
//! and sum are the runs' own, the probe's labels as attributes, and the
//! temporality asked for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Metric};
use prober::config::settings::{MetricsTemporality, OtelSettings, OtlpProtocol, Settings};
use prober::daemon::{http_executor, Daemon};
use prober::results::LiveState;
use prost::Message;

use crate::db::TestDb;
use crate::helpers::{
    admin_token, closed_port, http_get, http_request_as, probes, wait_for, FakeTarget, ADMIN_TOKEN,
};
use crate::otlp::{serve_grpc, serve_http};

/// Every export's metrics, in arrival order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Vec<Metric>>>>);

impl Received {
    fn take(&self, req: ExportMetricsServiceRequest) {
        let resource = req
            .resource_metrics
            .first()
            .and_then(|r| r.resource.clone());
        let service = resource.map(|r| attr(&r.attributes, "service.name"));
        assert_eq!(service.flatten().as_deref(), Some("prober"));
        let metrics = (req.resource_metrics.into_iter())
            .flat_map(|r| r.scope_metrics)
            .flat_map(|s| s.metrics)
            .collect();
        self.0.lock().unwrap().push(metrics);
    }

    fn exports(&self) -> Vec<Vec<Metric>> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn grpc_receiver(r: Received) -> String {
    serve_grpc(tonic::transport::Server::builder().add_service(MetricsServiceServer::new(r))).await
}

async fn http_receiver(r: Received) -> String {
    serve_http("/v1/metrics", move |body| {
        let r = r.clone();
        async move { r.take(ExportMetricsServiceRequest::decode(body.as_slice()).unwrap()) }
    })
    .await
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let kv = attrs.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

fn settings(
    db: &TestDb,
    endpoint: String,
    protocol: OtlpProtocol,
    t: MetricsTemporality,
) -> Settings {
    Settings {
        database_url: db.url.clone(),
        location: "lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        otel: OtelSettings {
            endpoint: Some(endpoint),
            protocol,
            metrics: true,
            metrics_temporality: t,
            metrics_interval: Duration::from_secs(1),
            ..OtelSettings::default()
        },
        // Every run of the test stays among the recent runs `ran` reads.
        recent_runs: 200,
        api_token: admin_token(),
        ..Settings::default()
    }
}

/// `passing` (labels team, tier) answers 200, `failing` 503.
fn yaml(target: &FakeTarget) -> String {
    format!(
        "- name: passing\n  every: 1s\n  timeout: 900ms\n  labels: {{team: payments, tier: \"1\", phase: mine}}\n  http: {{url: \"{}\"}}\n\
         - name: failing\n  every: 1s\n  timeout: 900ms\n  http: {{url: \"{}\"}}\n",
        target.url("/ok"),
        target.url("/status/503"),
    )
}

/// What the daemon ran: per probe, the runs and the sum of their totals (µs),
/// from the recent runs it keeps (the test stays under that many).
fn ran(live: &LiveState, probe: &str) -> (u64, u64) {
    let s = live.get(probe).unwrap();
    let s = s.lock();
    let counted: Vec<_> = s.recent.iter().filter(|r| r.counted).collect();
    assert_eq!(
        counted.len() as u64,
        s.runs,
        "every counted run is still among the recent ones"
    );
    (s.runs, counted.iter().map(|r| r.total_us).sum())
}

/// Per probe and outcome, the runs counted (summed over the exports for delta,
/// the last export's for cumulative), and per (probe, phase) the histogram's
/// (count, sum in seconds); checks each point's temporality and attributes.
struct Seen {
    runs: Vec<(String, String, Option<String>, u64)>,
    hists: Vec<(String, String, u64, f64, Option<String>)>,
}

fn seen(exports: &[Vec<Metric>], want: AggregationTemporality) -> Seen {
    let delta = want == AggregationTemporality::Delta;
    let mut seen = Seen {
        runs: Vec::new(),
        hists: Vec::new(),
    };
    let used: Vec<&Vec<Metric>> = if delta {
        exports.iter().collect()
    } else {
        exports.iter().rev().take(1).collect()
    };
    for m in used.into_iter().flatten() {
        match (m.name.as_str(), m.data.as_ref().unwrap()) {
            ("prober.probe.runs", Data::Sum(sum)) => {
                assert_eq!(sum.aggregation_temporality, want as i32, "{m:?}");
                assert!(sum.is_monotonic);
                assert_eq!(m.unit, "{run}");
                for p in &sum.data_points {
                    let n = match p.value {
                        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(n)) => n as u64,
                        ref other => panic!("an integer count: {other:?}"),
                    };
                    let key = (
                        attr(&p.attributes, "probe").unwrap(),
                        attr(&p.attributes, "outcome").unwrap(),
                        attr(&p.attributes, "error.type"),
                    );
                    match seen
                        .runs
                        .iter_mut()
                        .find(|r| (&r.0, &r.1, &r.2) == (&key.0, &key.1, &key.2))
                    {
                        Some(r) => r.3 += n,
                        None => seen.runs.push((key.0, key.1, key.2, n)),
                    }
                }
            }
            ("prober.probe.duration", Data::ExponentialHistogram(h)) => {
                assert_eq!(h.aggregation_temporality, want as i32, "{m:?}");
                assert_eq!(m.unit, "s");
                for p in &h.data_points {
                    let buckets: u64 = p.zero_count
                        + p.positive
                            .as_ref()
                            .map_or(0, |b| b.bucket_counts.iter().sum());
                    assert_eq!(buckets, p.count, "the buckets hold every sample: {p:?}");
                    assert!(p.min.unwrap() <= p.max.unwrap());
                    let (probe, phase) = (
                        attr(&p.attributes, "probe").unwrap(),
                        attr(&p.attributes, "phase").unwrap(),
                    );
                    let team = attr(&p.attributes, "team");
                    match seen
                        .hists
                        .iter_mut()
                        .find(|h| (&h.0, &h.1) == (&probe, &phase))
                    {
                        Some(h) => {
                            h.2 += p.count;
                            h.3 += p.sum.unwrap();
                        }
                        None => seen
                            .hists
                            .push((probe, phase, p.count, p.sum.unwrap(), team)),
                    }
                }
            }
            (name, data) => panic!("an unexpected metric {name}: {data:?}"),
        }
    }
    seen
}

/// Runs the two probes for ~3 s against `endpoint`, stops the daemon (the
/// last points go out), and checks what arrived against what ran.
async fn runs_arrive_as_metrics(protocol: OtlpProtocol, t: MetricsTemporality) {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let received = Received::default();
    let endpoint = match protocol {
        OtlpProtocol::Grpc => grpc_receiver(received.clone()).await,
        OtlpProtocol::Http => http_receiver(received.clone()).await,
    };
    let d = Daemon::start(
        &settings(&db, endpoint, protocol, t),
        probes(&yaml(&target)),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let live = d.live.clone();
    assert!(
        wait_for(Duration::from_secs(15), || received.exports().len() >= 2
            && live.get("passing").is_some_and(|s| s.lock().runs >= 3))
        .await,
        "two exports, a second apart"
    );
    let (code, page) = http_get(d.addr, "/metrics").await;
    assert_eq!(code, 200);
    let sent = (page.lines())
        .find_map(|l| l.strip_prefix("prober_otlp_metric_exports_total{result=\"success\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        sent.is_some_and(|n| n >= 2),
        "exports counted: {sent:?}\n{page}"
    );
    // An API run is not counted (api.manual_runs_count is off): not in the metrics.
    let (code, body) = http_request_as(
        d.addr,
        "POST",
        "/api/v1/probes/passing/run",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    d.shutdown().await;
    let (passing, passing_us) = ran(&live, "passing");
    let (failing, failing_us) = ran(&live, "failing");

    let want = match t {
        MetricsTemporality::Cumulative => AggregationTemporality::Cumulative,
        MetricsTemporality::Delta => AggregationTemporality::Delta,
    };
    let s = seen(&received.exports(), want);
    let mut runs = s.runs.clone();
    runs.sort();
    assert_eq!(
        runs,
        vec![
            (
                "failing".into(),
                "failure".into(),
                Some("http_status".into()),
                failing
            ),
            ("passing".into(), "success".into(), None, passing),
        ],
        "every run counted once, by outcome"
    );
    let total = |probe: &str| {
        s.hists
            .iter()
            .find(|h| h.0 == probe && h.1 == "total")
            .cloned()
            .unwrap()
    };
    for (probe, n, us) in [
        ("passing", passing, passing_us),
        ("failing", failing, failing_us),
    ] {
        let h = total(probe);
        assert_eq!(h.2, n, "{probe}: one sample a run");
        assert!(
            (h.3 - us as f64 / 1e6).abs() < 1e-6 * n as f64,
            "{probe}: the runs' durations, {} s against {} µs",
            h.3,
            us
        );
    }
    assert_eq!(
        total("passing").4.as_deref(),
        Some("payments"),
        "the probe's labels are attributes"
    );
    let phases: Vec<&str> = (s.hists.iter())
        .filter(|h| h.0 == "passing")
        .map(|h| h.1.as_str())
        .collect();
    for phase in ["connect", "first_byte", "transfer"] {
        assert!(phases.contains(&phase), "{phase} in {phases:?}");
    }
    assert!(
        !phases.contains(&"tls"),
        "a phase not reached is not recorded: {phases:?}"
    );
    assert!(
        !phases.contains(&"mine"),
        "a label named like our attribute does not replace it: {phases:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_arrive_over_grpc_as_cumulative_counts_and_exponential_histograms() {
    runs_arrive_as_metrics(OtlpProtocol::Grpc, MetricsTemporality::Cumulative).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_arrive_over_http_as_delta_counts_and_exponential_histograms() {
    runs_arrive_as_metrics(OtlpProtocol::Http, MetricsTemporality::Delta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_receiver_is_counted_and_probing_goes_on() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let endpoint = format!("http://{}", closed_port().await);
    let s = settings(
        &db,
        endpoint,
        OtlpProtocol::Http,
        MetricsTemporality::Cumulative,
    );
    let d = Daemon::start(&s, probes(&yaml(&target)), http_executor().unwrap())
        .await
        .unwrap();
    let live = d.live.clone();
    let addr = d.addr;
    let mut page = String::new();
    for _ in 0..100 {
        page = http_get(addr, "/metrics").await.1;
        if !page.contains("prober_otlp_metric_exports_total{result=\"failure\"} 0")
            && page.contains("prober_otlp_metric_exports_total{result=\"failure\"}")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page.contains("prober_otlp_metric_exports_total{result=\"success\"} 0"),
        "{page}"
    );
    assert!(
        !page.contains("prober_otlp_metric_exports_total{result=\"failure\"} 0"),
        "failures counted:\n{page}"
    );
    let before = live.get("passing").unwrap().lock().runs;
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    let after = live.get("passing").unwrap().lock().runs;
    assert!(
        after >= before + 2,
        "probing goes on at its rate: {before} → {after}"
    );
    d.shutdown().await;
}
