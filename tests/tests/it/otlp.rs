//! Runs as OTLP traces, received by a real OTLP receiver in the test: a gRPC
//! server (tonic, the `TraceService` of `opentelemetry-proto`) and an HTTP
//! server taking `POST /v1/traces` protobuf bodies. The receiver can be down
//! or slow: probing goes on at its rate, the queue stays bounded, drops are
//! counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prober::config::settings::{OtelSettings, OtlpProtocol, Settings};
use prober::daemon::{http_executor, Daemon};
use prost::Message;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::db::TestDb;
use crate::helpers::{closed_port, http_get, probes, read_request, wait_for};
use crate::notify::FakeReceiver;

/// What a receiver got: every span, and how long it makes each export wait.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    delay_ms: Arc<AtomicU64>,
    exports: Arc<AtomicU64>,
}

impl Received {
    fn take(&self, req: ExportTraceServiceRequest) {
        self.exports.fetch_add(1, Ordering::SeqCst);
        let mut spans = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    async fn wait(&self) {
        let ms = self.delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.wait().await;
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A gRPC OTLP receiver on loopback; its base address.
async fn grpc_receiver(r: Received) -> String {
    serve_grpc(tonic::transport::Server::builder().add_service(TraceServiceServer::new(r))).await
}

/// Serves `router` (an OTLP service) on a loopback port; its base address.
pub async fn serve_grpc(router: tonic::transport::server::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        router
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    format!("http://{addr}")
}

/// An HTTP OTLP receiver on loopback (`POST /v1/traces`, protobuf); its base address.
async fn http_receiver(r: Received) -> String {
    serve_http("/v1/traces", move |body| {
        let r = r.clone();
        async move {
            r.wait().await;
            r.take(ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
        }
    })
    .await
}

/// An HTTP/protobuf OTLP receiver on loopback taking `POST {path}`, each
/// body handed to `take` before the 200; its base address.
pub async fn serve_http<F, Fut>(path: &'static str, take: F) -> String
where
    F: Fn(Vec<u8>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let take = take.clone();
            tokio::spawn(async move {
                let Some((head, body)) = read_request(&mut sock).await else {
                    return;
                };
                let head = head.to_ascii_lowercase();
                assert!(head.starts_with(&format!("post {path} ")), "{head}");
                assert!(
                    head.contains("content-type: application/x-protobuf"),
                    "{head}"
                );
                take(body).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn daemon(db: &TestDb, yaml: &str, otel: OtelSettings) -> Daemon {
    let settings = Settings {
        database_url: db.url.clone(),
        location: "lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        otel,
        ..Settings::default()
    };
    Daemon::start(&settings, probes(yaml), http_executor().unwrap())
        .await
        .unwrap()
}

fn otel(endpoint: String, protocol: OtlpProtocol) -> OtelSettings {
    OtelSettings {
        endpoint: Some(endpoint),
        protocol,
        traces: true,
        ..OtelSettings::default()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn duration_us(s: &Span) -> u64 {
    (s.end_time_unix_nano - s.start_time_unix_nano) / 1_000
}

/// A stored phase in µs from the runs API's milliseconds (three decimals: exact).
fn phase_us(run: &Value, name: &str) -> Option<u64> {
    run["phases"][name]
        .as_f64()
        .map(|ms| (ms * 1000.0).round() as u64)
}

async fn a_run_is_one_trace_joined_to_the_target_s(protocol: OtlpProtocol) {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let target = FakeReceiver::start(200).await;
    let received = Received::default();
    let endpoint = match protocol {
        OtlpProtocol::Grpc => grpc_receiver(received.clone()).await,
        OtlpProtocol::Http => http_receiver(received.clone()).await,
    };
    let yaml = format!(
        "name: checkout\nevery: 1s\ntimeout: 500ms\nhttp: {{url: \"{}/pay\"}}\n",
        target.url
    );
    let d = daemon(&db, &yaml, otel(endpoint, protocol)).await;
    assert!(
        wait_for(Duration::from_secs(15), || received.spans().len() >= 10).await,
        "two runs' spans arrive ({} so far)",
        received.spans().len()
    );
    let spans = received.spans();
    let (status, body) = http_get(d.addr, "/api/v1/probes/checkout/runs?limit=100").await;
    assert_eq!(status, 200, "{body}");
    let runs: Value = serde_json::from_str(&body).unwrap();
    let runs: HashMap<String, Value> = (runs["runs"].as_array().unwrap().iter())
        .map(|r| (r["trace_id"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    let sent: Vec<String> = target
        .requests()
        .iter()
        .map(|r| r.header("traceparent"))
        .collect();

    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    let mut checked = 0;
    for root in &roots {
        assert_eq!(root.name, "checkout");
        let trace = hex(&root.trace_id);
        // The traceparent the target received: this trace, and the request span as its parent.
        let tp = sent
            .iter()
            .find(|t| t.contains(&trace))
            .expect("the target got this trace id");
        let parent = tp.split('-').nth(2).unwrap();
        let request = spans
            .iter()
            .find(|s| hex(&s.trace_id) == trace && hex(&s.span_id) == parent)
            .expect("the span the target's traceparent names is exported");
        assert_eq!(request.name, "GET");
        assert_eq!(request.kind, 3, "SPAN_KIND_CLIENT");
        assert_eq!(request.parent_span_id, root.span_id);
        let Some(run) = runs.get(&trace) else {
            continue;
        }; // not stored yet
        assert_eq!(duration_us(request), phase_us(run, "total_ms").unwrap());
        for (name, phase) in [
            ("connect", "connect_ms"),
            ("first byte", "first_byte_ms"),
            ("transfer", "transfer_ms"),
        ] {
            let span = spans
                .iter()
                .find(|s| s.parent_span_id == request.span_id && s.name == name)
                .unwrap_or_else(|| panic!("{name} span"));
            assert_eq!(
                Some(duration_us(span)),
                phase_us(run, phase),
                "{name} of {trace}"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 1,
        "a stored run's trace was checked ({} roots)",
        roots.len()
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_a_run_is_one_trace_joined_to_the_target_s() {
    a_run_is_one_trace_joined_to_the_target_s(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_run_is_one_trace_joined_to_the_target_s() {
    a_run_is_one_trace_joined_to_the_target_s(OtlpProtocol::Http).await;
}

fn metric(page: &str, name: &str) -> u64 {
    (page.lines())
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_or_slow_never_slows_probing_and_drops_are_counted() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let target = FakeReceiver::start(200).await;
    let yaml: String = (0..20)
        .map(|i| {
            format!(
                "name: p{i}\nevery: 1s\ntimeout: 500ms\nhttp: {{url: \"{}/{i}\"}}\n---\n",
                target.url
            )
        })
        .collect();

    // Down: nothing listens; every export fails at once, its spans counted as dropped.
    let down = format!("http://{}", closed_port().await);
    let d = daemon(&db, &yaml, otel(down, OtlpProtocol::Grpc)).await;
    assert!(
        wait_for(Duration::from_secs(10), || {
            d.scheduler_stats.runs_finished.load(Ordering::Relaxed) >= 60
        })
        .await
    );
    let (_, page) = http_get(d.addr, "/metrics").await;
    assert!(
        metric(&page, "prober_otlp_spans_dropped_total") > 0,
        "{page}"
    );
    assert!(metric(&page, "prober_otlp_export_failures_total") > 0);
    assert_eq!(metric(&page, "prober_otlp_spans_exported_total"), 0);
    d.shutdown().await;

    // Slow: the receiver holds every export for a minute. The queue fills to
    // its bound, later runs are dropped and counted, and probing keeps its pace.
    let slow = Received::default();
    slow.delay_ms.store(60_000, Ordering::SeqCst);
    let endpoint = grpc_receiver(slow.clone()).await;
    let d = daemon(
        &db,
        &yaml,
        OtelSettings {
            queue_runs: 100,
            ..otel(endpoint, OtlpProtocol::Grpc)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let finished = d.scheduler_stats.runs_finished.load(Ordering::Relaxed);
    assert!(
        finished >= 20 * 7,
        "20 probes a second go on: {finished} runs in 8 s"
    );
    let (_, page) = http_get(d.addr, "/metrics").await;
    assert!(
        metric(&page, "prober_otlp_runs_queued") <= 100,
        "bounded: {page}"
    );
    assert!(
        metric(&page, "prober_otlp_runs_dropped_total") > 0,
        "{page}"
    );
    assert_eq!(metric(&page, "prober_otlp_spans_exported_total"), 0);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_every_run_s_trace_is_sent() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let target = FakeReceiver::start(200).await;
    let received = Received::default();
    let endpoint = http_receiver(received.clone()).await;
    let yaml: String = (0..10)
        .map(|i| {
            format!(
                "name: p{i}\nevery: 1s\ntimeout: 500ms\nhttp: {{url: \"{}/{i}\"}}\n---\n",
                target.url
            )
        })
        .collect();
    let d = daemon(&db, &yaml, otel(endpoint, OtlpProtocol::Http)).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    d.shutdown().await;

    // Every stored run, the last second's too (sent at shutdown, not at the next flush), has its trace.
    let pool = db.pool().await;
    let stored: Vec<(String,)> = sqlx::query_as("select replace(run_id::text, '-', '') from runs")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(stored.len() >= 10, "{} runs stored", stored.len());
    let roots: std::collections::HashSet<String> = (received.spans().iter())
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| hex(&s.trace_id))
        .collect();
    let missing: Vec<&String> = stored
        .iter()
        .map(|(t,)| t)
        .filter(|t| !roots.contains(*t))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} runs have no trace: {missing:?}",
        missing.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_traces_send_the_prober_s_own_work_and_traces_false_no_runs() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let target = FakeReceiver::start(200).await;
    let received = Received::default();
    let endpoint = http_receiver(received.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            "name: own\nevery: 1s\ntimeout: 500ms\nhttp: {{url: \"{}/own\"}}\n",
            target.url
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prober.yaml"),
        format!("otel: {{endpoint: \"{endpoint}\", traces: false, self_traces: true}}\n"),
    )
    .unwrap();
    let mut child = crate::helpers::cli_command(dir.path(), &["run"])
        .env("PROBER_PROBES", dir.path().join("p.yaml"))
        .env("DATABASE_URL", &db.url)
        .env("PROBER_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let writes = || {
        (received.spans().iter())
            .filter(|s| s.name == "store.write")
            .count()
    };
    let seen = wait_for(Duration::from_secs(20), || writes() >= 2).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen,
        "the writer's batches arrive as spans: {:?}",
        received.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let write = received
        .spans()
        .into_iter()
        .find(|s| s.name == "store.write")
        .unwrap();
    assert!(
        write.attributes.iter().any(|kv| kv.key == "runs"),
        "{:?}",
        write.attributes
    );
    assert!(
        received
            .spans()
            .iter()
            .all(|s| s.name != "own" && s.name != "GET"),
        "traces: false exports no run"
    );
}
