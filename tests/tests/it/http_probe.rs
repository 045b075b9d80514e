//! The HTTP probe against real misbehaving targets on loopback: phase timings
//! and every error class, produced by the target, never by building the enum.

use prober::probe::Runner;

use prober::run::{ErrorClass, Outcome};

use crate::helpers::{closed_port, http_probe, probe, start_garbage, FakeTarget, TestCert, TIMING};

const MS: u64 = 1000;

async fn run(p: &prober::config::Probe) -> Outcome {
    Runner::new().unwrap().run(p).await
}

fn class(o: &Outcome) -> Option<ErrorClass> {
    o.error.as_ref().map(|e| e.class)
}

#[tokio::test]
async fn first_byte_covers_a_delay_before_the_headers() {
    let _exclusive = TIMING.write().await;
    let target = FakeTarget::start().await;
    let p = http_probe(&target.url("/delay/50"), "", "");
    // Every run must show the 50 ms as first byte. How close total comes to first byte +
    // transfer also depends on how busy the test machine is (other test binaries run
    // meanwhile), so that bound is asserted on the best of three runs.
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let o = run(&p).await;
        assert!(o.success, "{o:#?}");
        let ph = o.phases;
        let (first_byte, transfer) = (ph.first_byte_us.unwrap(), ph.transfer_us.unwrap());
        assert!(first_byte >= 50 * MS, "first byte {first_byte}µs < 50ms");
        assert!(ph.total_us >= first_byte + transfer, "{ph:?}");
        assert_eq!(
            ph.dns_us, None,
            "an IP address is not looked up: no DNS phase"
        );
        assert_eq!(ph.tls_us, None, "http:// has no TLS phase");
        assert_eq!(o.status_code, Some(200));
        gaps.push((
            ph.total_us - (first_byte + transfer),
            ph.connect_us.unwrap(),
        ));
    }
    let (gap, connect) = gaps.iter().min().copied().unwrap();
    assert!(
        gap <= 5 * MS,
        "total is not within 5ms of first byte + transfer: {gaps:?}"
    );
    assert!(connect < 5 * MS, "loopback connect took {connect}µs");
}

#[tokio::test]
async fn transfer_covers_a_body_dripped_over_time() {
    let _exclusive = TIMING.write().await;
    let target = FakeTarget::start().await;
    let o = run(&http_probe(&target.url("/drip/100"), "", "")).await;

    assert!(o.success, "{o:#?}");
    let transfer = o.phases.transfer_us.unwrap();
    assert!(transfer >= 100 * MS, "transfer {transfer}µs < 100ms");
    assert!(o.phases.first_byte_us.unwrap() < 50 * MS);
    assert_eq!(o.response_bytes, 100);
}

#[tokio::test]
async fn a_host_name_is_resolved_and_timed() {
    let _exclusive = TIMING.write().await;
    let target = FakeTarget::start().await;
    let url = target.url("/ok").replace("127.0.0.1", "localhost");
    let o = run(&http_probe(&url, "", "")).await;

    assert!(o.success, "{o:#?}");
    assert!(o.phases.dns_us.unwrap() < 1000 * MS);
    assert!(o.phases.connect_us.unwrap() < 5 * MS);
}

#[tokio::test]
async fn a_refused_port_is_a_connect_error() {
    let addr = closed_port().await;
    let o = run(&http_probe(&format!("http://{addr}/"), "", "")).await;

    assert_eq!(class(&o), Some(ErrorClass::Connect), "{o:#?}");
    assert!(o.error.unwrap().message.contains(&addr.to_string()));
    assert!(!o.success);
}

#[tokio::test]
async fn an_unknown_name_is_a_dns_error() {
    // One lookup of a name under .invalid (RFC 6761: never resolves).
    let o = run(&http_probe("http://no-such-host.invalid/", "", "")).await;

    assert_eq!(class(&o), Some(ErrorClass::Dns), "{o:#?}");
    assert!(o.error.unwrap().message.contains("no-such-host.invalid"));
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_a_timeout_in_the_first_byte_phase() {
    let target = FakeTarget::start().await;
    let p = probe(&format!(
        "name: hang\nevery: 10s\ntimeout: 300ms\nhttp:\n  url: {}\n",
        target.url("/hang")
    ));
    let o = run(&p).await;

    assert_eq!(class(&o), Some(ErrorClass::Timeout), "{o:#?}");
    assert!(o.error.as_ref().unwrap().message.contains("first byte"));
    assert!(o.phases.total_us >= 300 * MS);
    assert!(
        o.phases.total_us < 2000 * MS,
        "the timeout was not enforced"
    );
    assert!(o.phases.first_byte_us.unwrap() >= 250 * MS);
}

#[tokio::test]
async fn an_unexpected_status_is_an_http_status_error() {
    let target = FakeTarget::start().await;
    let o = run(&http_probe(&target.url("/status/503"), "", "")).await;

    assert_eq!(class(&o), Some(ErrorClass::HttpStatus), "{o:#?}");
    assert_eq!(o.status_code, Some(503));
    let msg = o.error.unwrap().message;
    assert!(msg.contains("2xx") && msg.contains("503"), "{msg}");
}

#[tokio::test]
async fn an_expected_status_list_accepts_codes_and_classes() {
    let target = FakeTarget::start().await;
    let p = probe(&format!(
        "name: s\nevery: 10s\nhttp:\n  url: {}\nexpect:\n  status: [200, \"5xx\"]\n",
        target.url("/status/503")
    ));
    let o = run(&p).await;
    assert!(o.success, "{o:#?}");
}

#[tokio::test]
async fn a_body_that_fails_an_assertion_is_an_assertion_error_with_expected_and_actual() {
    let target = FakeTarget::start().await;
    let p = probe(&format!(
        "name: b\nevery: 10s\nhttp:\n  url: {}\nexpect:\n  body_contains: [healthy]\n  body_not_contains: [error]\n",
        target.url("/ok")
    ));
    let o = run(&p).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    let failed: Vec<_> = o.assertions.iter().filter(|a| !a.passed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].check, "body contains");
    assert_eq!(failed[0].expected, "\"healthy\"");
    assert_eq!(failed[0].actual, "ok");
    assert!(o.assertions.iter().any(|a| a.check == "status" && a.passed));
}

#[tokio::test]
async fn json_path_and_header_expectations_are_checked() {
    let target = FakeTarget::start().await;
    let p = probe(&format!(
        r#"name: j
every: 10s
http:
  url: {}
expect:
  json:
    - {{path: $.status, equals: ok}}
    - {{path: "$.items[1].id", equals: 2}}
    - {{path: $.version, matches: "^v1\\."}}
    - {{path: $.missing, exists: false}}
    - {{path: $.items, exists: true}}
  headers:
    - {{name: content-type, equals: application/json}}
    - {{name: X-Served-By, matches: "^fake"}}
"#,
        target.url("/json")
    ));
    let o = run(&p).await;
    assert!(o.success, "{:#?}", o.assertions);
    assert_eq!(o.assertions.len(), 8);

    let failing = probe(&format!(
        "name: j\nevery: 10s\nhttp:\n  url: {}\nexpect:\n  json:\n    - {{path: $.status, equals: degraded}}\n",
        target.url("/json")
    ));
    let o = run(&failing).await;
    assert_eq!(class(&o), Some(ErrorClass::Assertion));
    let a = &o.assertions[1];
    assert_eq!(
        (a.expected.as_str(), a.actual.as_str()),
        ("\"degraded\"", "\"ok\"")
    );
}

#[tokio::test]
async fn an_endless_body_stops_at_the_limit() {
    let target = FakeTarget::start().await;
    let o = run(&http_probe(
        &target.url("/endless"),
        "max_body_bytes: 65536",
        "",
    ))
    .await;

    assert_eq!(class(&o), Some(ErrorClass::BodyTooLarge), "{o:#?}");
    // Reading stopped within one chunk of the limit: memory stays bounded.
    assert!(
        o.response_bytes > 65_536 && o.response_bytes <= 65_536 + 16_384,
        "{}",
        o.response_bytes
    );
}

#[tokio::test]
async fn a_redirect_loop_hits_the_redirect_limit() {
    let target = FakeTarget::start().await;
    let o = run(&http_probe(&target.url("/loop"), "redirects: 3", "")).await;

    assert_eq!(class(&o), Some(ErrorClass::RedirectLimit), "{o:#?}");
    assert_eq!(o.redirects, 3);
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit_and_reported_by_default() {
    let target = FakeTarget::start().await;
    let followed = run(&http_probe(&target.url("/redirect/2"), "redirects: 2", "")).await;
    assert!(followed.success, "{followed:#?}");
    assert_eq!(followed.redirects, 2);
    assert!(followed.request.ends_with("/redirect/0"));

    // Default: the 3xx is what the probe sees, checked against the expected status.
    let reported = run(&http_probe(&target.url("/redirect/2"), "", "")).await;
    assert_eq!(reported.status_code, Some(302));
    assert_eq!(class(&reported), Some(ErrorClass::HttpStatus));
}

#[tokio::test]
async fn bytes_that_are_not_http_are_an_invalid_response() {
    let addr = start_garbage().await;
    let o = run(&http_probe(&format!("http://{addr}/"), "", "")).await;

    assert_eq!(class(&o), Some(ErrorClass::InvalidResponse), "{o:#?}");
}

#[tokio::test]
async fn a_self_signed_certificate_fails_by_default_and_passes_without_verification() {
    let target = FakeTarget::start_tls(&TestCert::self_signed(30)).await;

    let verified = run(&http_probe(&target.url("/ok"), "", "")).await;
    assert_eq!(class(&verified), Some(ErrorClass::Tls), "{verified:#?}");
    // The certificate is reported even though it was refused.
    let cert = verified.cert.as_ref().expect("certificate captured");
    assert!((29..=30).contains(&cert.days_left), "{cert:?}");

    let unverified = run(&http_probe(&target.url("/ok"), "tls_verify: false", "")).await;
    assert!(unverified.success, "{unverified:#?}");
    assert!(unverified.phases.tls_us.unwrap() > 0);
    assert!(unverified.cert.is_some());
}

#[tokio::test]
async fn a_certificate_expiring_too_soon_fails_its_expectation() {
    let target = FakeTarget::start_tls(&TestCert::self_signed(5)).await;
    let p = probe(&format!(
        "name: c\nevery: 1m\nhttp:\n  url: {}\n  tls_verify: false\nexpect:\n  cert_valid_days: 14\n",
        target.url("/ok")
    ));
    let o = run(&p).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    assert!(o.error.unwrap().message.contains("certificate valid for"));
}

#[tokio::test]
async fn every_request_carries_traceparent_and_user_agent() {
    let target = FakeTarget::start().await;
    let p = probe(&format!(
        "name: e\nevery: 10s\nhttp:\n  url: {}\nexpect:\n  body_contains: [\"traceparent: 00-\", \"user-agent: prober/\"]\n",
        target.url("/echo")
    ));
    let o = run(&p).await;

    assert!(o.success, "{:#?}", o.assertions);
    assert_eq!(o.trace_id.len(), 32);
}

#[tokio::test]
async fn a_json_body_is_sent_with_its_content_type() {
    let target = FakeTarget::start().await;
    let p = probe(&format!(
        "name: p\nevery: 10s\nhttp:\n  url: {}\n  method: POST\n  json: {{user: alice}}\nexpect:\n  body_contains: [\"POST /echo\", \"content-type: application/json\"]\n",
        target.url("/echo")
    ));
    let o = run(&p).await;
    assert!(o.success, "{:#?}", o.assertions);
}

#[tokio::test]
async fn secret_values_are_scrubbed_from_the_outcome() {
    let target = FakeTarget::start().await;
    // The target echoes the header into the body, and the failing assertion quotes the body.
    let p = probe(&format!(
        "name: s\nevery: 10s\nhttp:\n  url: {}\n  headers:\n    Authorization: {{value: \"Bearer hunter2-secret\", secret: true}}\nexpect:\n  body_contains: [nothing-like-this]\n",
        target.url("/echo")
    ));
    let o = run(&p).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion));
    let json = serde_json::to_string(&o).unwrap();
    assert!(!json.contains("hunter2-secret"), "{json}");
    assert!(
        json.contains("<redacted>"),
        "the echo should show where the secret was"
    );
}

/// A server that keeps connections open; counts connections and requests.
async fn keep_alive_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (conns.clone(), reqs.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    buf.clear();
                    while !buf.ends_with(b"\r\n\r\n") {
                        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        buf.push(byte[0]);
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    let close = String::from_utf8_lossy(&buf).contains("connection: close");
                    let extra = if close { "connection: close\r\n" } else { "" };
                    let msg = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{extra}\r\nok");
                    if sock.write_all(msg.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns, reqs)
}

#[tokio::test]
async fn keep_alive_reuses_one_connection_across_runs_and_is_off_by_default() {
    use std::sync::atomic::Ordering;
    let (addr, conns, reqs) = keep_alive_server().await;
    let runner = Runner::new().unwrap();
    let reused = http_probe(&format!("http://{addr}/"), "keep_alive: true", "");

    let runs = [
        runner.run(&reused).await,
        runner.run(&reused).await,
        runner.run(&reused).await,
    ];

    assert!(runs.iter().all(|o| o.success), "{runs:#?}");
    assert_eq!(
        (conns.load(Ordering::SeqCst), reqs.load(Ordering::SeqCst)),
        (1, 3)
    );
    assert!(runs[0].phases.connect_us.unwrap() > 0);
    assert_eq!(
        (runs[1].phases.connect_us, runs[1].phases.tls_us),
        (None, None),
        "a reused connection has no connect phase (nothing measured, not 0)"
    );
    assert!(runs[2].phases.first_byte_us.unwrap() > 0);
    assert_eq!(runner.idle_connections(), 1);

    let fresh = http_probe(&format!("http://{addr}/"), "", "");
    for _ in 0..2 {
        assert!(runner.run(&fresh).await.success);
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        3,
        "without keep_alive every run opens a connection"
    );
}
