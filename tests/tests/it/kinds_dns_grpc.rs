//! The dns and grpc probe kinds against servers the tests start on loopback:
//! a fake DNS server (hickory-proto parses the queries and builds the
//! answers) over UDP and TCP, and tonic-health's health service.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use prober::demo::dns::DnsServer;
use prober::probe::Runner;
use prober::run::{ErrorClass, Outcome};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::helpers::{closed_port, probe, TestCert};

async fn run(p: &prober::config::Probe) -> Outcome {
    Runner::new().unwrap().run(p).await
}

fn class(o: &Outcome) -> Option<ErrorClass> {
    o.error.as_ref().map(|e| e.class)
}

fn message(o: &Outcome) -> String {
    o.error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- DNS

/// A fake authoritative server for `test.`:
/// - `api.test.` A → 192.0.2.10 and 192.0.2.11 (other types: no data)
/// - `mail.test.` MX → `10 mx1.mail.test.`
/// - `silent.test.` → never answered
/// - anything else → NXDOMAIN
struct FakeDns {
    udp: SocketAddr,
    tcp: SocketAddr,
    queries: Arc<AtomicUsize>,
    _server: DnsServer,
}

impl FakeDns {
    /// `answer` below, over the demo's DNS transports (UDP, and TCP with length prefixes).
    async fn start() -> FakeDns {
        let queries = Arc::new(AtomicUsize::new(0));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp = socket.local_addr().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = listener.local_addr().unwrap();
        let q = queries.clone();
        let server = prober::demo::dns::spawn(
            socket,
            listener,
            Arc::new(move |query: &[u8]| {
                q.fetch_add(1, Ordering::SeqCst);
                answer(query)
            }),
        );
        FakeDns {
            udp,
            tcp,
            queries,
            _server: server,
        }
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The encoded response to a query, or `None` to stay silent.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let q = request.queries.first()?.clone();
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.add_query(q.clone());
    let name = q.name().to_ascii().to_ascii_lowercase();
    let record = |data: RData| Record::from_rdata(q.name().clone(), 60, data);
    match (name.as_str(), q.query_type()) {
        ("silent.test.", _) => return None,
        ("api.test.", RecordType::A) => {
            response.add_answer(record(RData::A(A::new(192, 0, 2, 10))));
            response.add_answer(record(RData::A(A::new(192, 0, 2, 11))));
        }
        ("api.test.", _) => {}
        ("mail.test.", RecordType::MX) => {
            let exchange = Name::from_ascii("mx1.mail.test.").unwrap();
            response.add_answer(record(RData::MX(MX::new(10, exchange))));
        }
        ("mail.test.", _) => {}
        _ => response.metadata.response_code = ResponseCode::NXDomain,
    }
    assert_eq!(response.metadata.message_type, MessageType::Response);
    response.to_vec().ok()
}

fn dns_probe(server: SocketAddr, lines: &str) -> prober::config::Probe {
    let lines: String = lines.lines().map(|l| format!("  {l}\n")).collect();
    probe(&format!(
        "name: dns-test\nevery: 10s\ntimeout: 3s\ndns:\n  server: {server}\n{lines}"
    ))
}

#[tokio::test]
async fn dns_answers_that_match_pass_and_every_run_asks_the_server() {
    let dns = FakeDns::start().await;
    let p = dns_probe(
        dns.udp,
        "name: api.test\ntype: A\nanswers: [192.0.2.10, 192.0.2.11]\nmin_answers: 2",
    );
    let o = run(&p).await;

    assert!(o.success, "{o:#?}");
    assert_eq!(o.info["dns.rcode"], "NOERROR");
    assert_eq!(o.info["dns.answers"], "192.0.2.10, 192.0.2.11");
    assert_eq!(o.info["dns.server"], dns.udp.to_string());
    assert_eq!(o.assertions.len(), 4, "{:#?}", o.assertions);
    assert!(o.assertions.iter().all(|a| a.passed));
    assert!(o.phases.dns_us.is_some());
    assert!(o.phases.total_us >= o.phases.dns_us.unwrap());

    // No cache: a second run asks again.
    let again = run(&p).await;
    assert!(again.success, "{again:#?}");
    assert_eq!(dns.queries(), 2);
}

#[tokio::test]
async fn an_mx_answer_matches_with_or_without_the_trailing_dot() {
    let dns = FakeDns::start().await;
    for expected in ["10 mx1.mail.test.", "10 MX1.mail.test"] {
        let p = dns_probe(
            dns.udp,
            &format!("name: mail.test.\ntype: MX\nanswers: [\"{expected}\"]"),
        );
        let o = run(&p).await;
        assert!(o.success, "{expected}: {o:#?}");
        assert_eq!(o.info["dns.answers"], "10 mx1.mail.test.");
    }
}

#[tokio::test]
async fn a_missing_expected_answer_is_an_assertion_failure() {
    let dns = FakeDns::start().await;
    let p = dns_probe(dns.udp, "name: api.test.\nanswers: [192.0.2.99]");
    let o = run(&p).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    let msg = message(&o);
    assert!(msg.contains("192.0.2.99"), "{msg}");
    assert!(msg.contains("192.0.2.10, 192.0.2.11"), "{msg}");
    let failed: Vec<_> = o.assertions.iter().filter(|a| !a.passed).collect();
    assert_eq!(failed.len(), 1, "{:#?}", o.assertions);
    assert_eq!(failed[0].expected, "192.0.2.99");
}

#[tokio::test]
async fn no_data_fails_the_default_minimum_of_one_answer() {
    let dns = FakeDns::start().await;
    let o = run(&dns_probe(dns.udp, "name: api.test.\ntype: AAAA")).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    assert_eq!(o.info["dns.rcode"], "NOERROR");
    assert!(
        message(&o).contains("expected at least 1, got 0"),
        "{}",
        message(&o)
    );
}

#[tokio::test]
async fn nxdomain_expected_and_got_passes() {
    let dns = FakeDns::start().await;
    let o = run(&dns_probe(dns.udp, "name: nope.test.\nrcode: NXDOMAIN")).await;

    assert!(o.success, "{o:#?}");
    assert_eq!(o.info["dns.rcode"], "NXDOMAIN");
    assert_eq!(o.info["dns.answers"], "");
}

#[tokio::test]
async fn nxdomain_unexpected_is_an_assertion_failure_naming_the_rcode() {
    let dns = FakeDns::start().await;
    let o = run(&dns_probe(dns.udp, "name: nope.test.")).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    assert!(
        message(&o).starts_with("rcode: expected NOERROR, got NXDOMAIN"),
        "{}",
        message(&o)
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    let dns = FakeDns::start().await;
    let p = probe(&format!(
        "name: dns-test\nevery: 10s\ntimeout: 300ms\ndns:\n  server: {}\n  name: silent.test.\n",
        dns.udp
    ));
    let o = run(&p).await;

    assert_eq!(class(&o), Some(ErrorClass::Timeout), "{o:#?}");
    assert!(message(&o).contains("300ms"), "{}", message(&o));
    assert!(
        o.phases.dns_us.is_some(),
        "the unfinished query is still timed"
    );
}

#[tokio::test]
async fn a_query_over_tcp_is_answered() {
    let dns = FakeDns::start().await;
    let p = dns_probe(
        dns.tcp,
        "name: api.test.\nprotocol: tcp\nanswers: [192.0.2.11]",
    );
    let o = run(&p).await;

    assert!(o.success, "{o:#?}");
    assert!(o.phases.connect_us.is_some());
    assert!(o.request.contains("tcp"), "{}", o.request);
}

#[tokio::test]
async fn a_refused_tcp_query_is_a_dns_error() {
    let addr = closed_port().await;
    let o = run(&dns_probe(addr, "name: api.test.\nprotocol: tcp")).await;

    assert_eq!(class(&o), Some(ErrorClass::Dns), "{o:#?}");
    assert!(message(&o).contains(&addr.to_string()), "{}", message(&o));
}

// ---------------------------------------------------------------- gRPC

/// tonic-health's service: "" and orders.v1.Orders SERVING, payments.v1.Payments
/// NOT_SERVING. The reporter must live as long as the service.
async fn health_service() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("orders.v1.Orders", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("payments.v1.Payments", ServingStatus::NotServing)
        .await;
    (reporter, service)
}

/// The health service on 127.0.0.1, plain HTTP/2.
async fn grpc_server() -> SocketAddr {
    grpc_server_tracing().await.0
}

/// The health service on 127.0.0.1, recording every call's `traceparent` metadata.
async fn grpc_server_tracing() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (reporter, service) = health_service().await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        move |req: tonic::Request<()>| {
            let t = req.metadata().get("traceparent");
            let t = t.and_then(|v| v.to_str().ok()).unwrap_or_default();
            record.lock().unwrap().push(t.to_string());
            Ok(req)
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _reporter = reporter;
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
    });
    (addr, seen)
}

#[tokio::test]
async fn a_grpc_call_carries_the_run_s_traceparent_unless_trace_is_false() {
    let (addr, seen) = grpc_server_tracing().await;
    let o = run(&grpc_probe(addr, "service: orders.v1.Orders")).await;
    assert!(o.success, "{o:#?}");
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let parts: Vec<&str> = sent[0].split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", o.trace_id.as_str(), "01"),
        "{sent:?}"
    );

    let mut quiet = grpc_probe(addr, "service: orders.v1.Orders");
    quiet.trace = prober::config::probe::Trace::Off;
    assert!(run(&quiet).await.success);
    assert_eq!(
        seen.lock().unwrap()[1],
        "",
        "no traceparent with trace: false"
    );
}

/// A TLS connection for tonic's server (tonic's own TLS features stay off).
struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// tonic-health's service on 127.0.0.1 over TLS (ALPN h2) with a self-signed certificate.
async fn grpc_tls_server(cert: &TestCert) -> SocketAddr {
    let (reporter, service) = health_service().await;
    let mut config = cert.server_config();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(8);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(sock).await {
                    let _ = tx.send(Ok(TlsConn(tls))).await;
                }
            });
        }
    });
    let incoming = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
    tokio::spawn(async move {
        let _reporter = reporter;
        Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
    });
    addr
}

fn grpc_probe(addr: SocketAddr, lines: &str) -> prober::config::Probe {
    let lines: String = lines.lines().map(|l| format!("  {l}\n")).collect();
    probe(&format!(
        "name: grpc-test\nevery: 10s\ntimeout: 3s\ngrpc:\n  target: {addr}\n{lines}"
    ))
}

#[tokio::test]
async fn grpc_serving_passes() {
    let addr = grpc_server().await;
    for service in ["\"\"", "orders.v1.Orders"] {
        let o = run(&grpc_probe(addr, &format!("service: {service}"))).await;

        assert!(o.success, "{service}: {o:#?}");
        assert_eq!(o.info["grpc.status"], "SERVING");
        assert!(!o.info.contains_key("grpc.code"));
        let p = o.phases;
        assert_eq!(
            p.dns_us, None,
            "an IP address is not looked up: no DNS phase"
        );
        assert_eq!(p.tls_us, None, "plaintext gRPC has no TLS phase");
        assert!(p.connect_us.is_some() && p.first_byte_us.is_some(), "{p:?}");
        assert_eq!(o.remote_addr.as_deref(), Some(addr.to_string().as_str()));
    }
}

#[tokio::test]
async fn grpc_not_serving_is_an_assertion_failure() {
    let addr = grpc_server().await;
    let o = run(&grpc_probe(addr, "service: payments.v1.Payments")).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    assert_eq!(o.info["grpc.status"], "NOT_SERVING");
    assert_eq!(o.assertions.len(), 1);
    assert_eq!(o.assertions[0].expected, "SERVING");
    assert_eq!(o.assertions[0].actual, "NOT_SERVING");
    assert!(
        message(&o).contains("payments.v1.Payments"),
        "{}",
        message(&o)
    );
}

#[tokio::test]
async fn grpc_unknown_service_is_an_assertion_failure_naming_it() {
    let addr = grpc_server().await;
    let o = run(&grpc_probe(addr, "service: inventory.v1.Inventory")).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    assert_eq!(o.info["grpc.code"], "NOT_FOUND");
    assert!(
        message(&o).contains("inventory.v1.Inventory"),
        "{}",
        message(&o)
    );
    assert_eq!(o.assertions[0].expected, "SERVING");
    assert!(!o.assertions[0].passed);
}

#[tokio::test]
async fn grpc_closed_port_is_a_connect_error() {
    let addr = closed_port().await;
    let o = run(&grpc_probe(addr, "service: orders.v1.Orders")).await;

    assert_eq!(class(&o), Some(ErrorClass::Connect), "{o:#?}");
    assert!(message(&o).contains(&addr.to_string()), "{}", message(&o));
}

#[tokio::test]
async fn grpc_over_tls_is_checked_and_the_certificate_reported() {
    let cert = TestCert::self_signed(30);
    let addr = grpc_tls_server(&cert).await;
    let o = run(&grpc_probe(
        addr,
        "service: orders.v1.Orders\ntls: true\ntls_verify: false",
    ))
    .await;

    assert!(o.success, "{o:#?}");
    assert_eq!(o.info["grpc.status"], "SERVING");
    assert!(o.phases.tls_us.is_some());
    assert!(
        o.cert.as_ref().is_some_and(|c| c.days_left >= 29),
        "{:?}",
        o.cert
    );

    // Verification on: the self-signed certificate is refused.
    let o = run(&grpc_probe(addr, "tls: true")).await;
    assert_eq!(class(&o), Some(ErrorClass::Tls), "{o:#?}");
    assert!(message(&o).contains("grpc.tls_verify"), "{}", message(&o));
}

#[tokio::test]
async fn grpc_against_a_plain_http1_server_is_an_invalid_response() {
    let addr = crate::helpers::start_garbage().await;
    let o = run(&grpc_probe(addr, "")).await;

    assert_eq!(class(&o), Some(ErrorClass::InvalidResponse), "{o:#?}");
}

#[tokio::test]
async fn grpc_a_port_that_accepts_and_says_nothing_is_cut_at_the_timeout_with_its_connect_phase() {
    // Accepts, reads, never answers: HTTP/2 never starts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let p = probe(&format!(
        "name: grpc-test\nevery: 10s\ntimeout: 300ms\ngrpc:\n  target: {addr}\n"
    ));

    let o = run(&p).await;

    assert_eq!(class(&o), Some(ErrorClass::Timeout), "{o:#?}");
    assert!(message(&o).contains("300ms"), "{}", message(&o));
    assert!(message(&o).contains(&addr.to_string()), "{}", message(&o));
    assert!(o.phases.connect_us.is_some(), "the phase reached is kept");
    assert!(o.phases.total_us < 2_000_000, "the timeout was enforced");
}
