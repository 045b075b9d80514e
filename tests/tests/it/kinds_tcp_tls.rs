//! The `tcp` and `tls` probe kinds against real servers on loopback, started
//! by each test: open, closed, talking and silent ports; certificates that are
//! self-signed, expired, about to expire or for another host.

use std::net::SocketAddr;
use std::time::Duration;

use prober::probe::Runner;

use prober::run::{ErrorClass, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{cli, closed_port, probe, FakeTarget, TestCert};

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

/// How a fake TCP server treats each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Accepts and holds the connection, silent.
    Silent,
    /// Writes `SSH-2.0-fake\r\n` and keeps the connection open (as SSH does).
    Banner,
    /// Writes `SSH-2.0-fake\r\n` and closes.
    BannerThenClose,
    /// Answers `PING` with `+PONG` (as Redis does).
    Pong,
    /// Writes 100 KiB of `x` and keeps the connection open.
    Flood,
    /// Drips 20 KiB of `x` in small writes, then `READY` in two pieces,
    /// and keeps the connection open (or closes, with `true`).
    Drip(bool),
}

async fn tcp_server(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let hold = Duration::from_secs(30);
                match behaviour {
                    Behaviour::Silent => tokio::time::sleep(hold).await,
                    Behaviour::Banner => {
                        let _ = sock.write_all(b"SSH-2.0-fake\r\n").await;
                        tokio::time::sleep(hold).await;
                    }
                    Behaviour::BannerThenClose => {
                        let _ = sock.write_all(b"SSH-2.0-fake\r\n").await;
                    }
                    Behaviour::Pong => {
                        let mut got = Vec::new();
                        let mut buf = [0u8; 64];
                        while !got.windows(4).any(|w| w == b"PING") {
                            match sock.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = sock.write_all(b"+PONG\r\n").await;
                        tokio::time::sleep(hold).await;
                    }
                    Behaviour::Flood => {
                        let _ = sock.write_all(&vec![b'x'; 100 * 1024]).await;
                        tokio::time::sleep(hold).await;
                    }
                    Behaviour::Drip(close) => {
                        for _ in 0..200 {
                            let _ = sock.write_all(&[b'x'; 100]).await;
                            let _ = sock.flush().await;
                        }
                        let _ = sock.write_all(b"REA").await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = sock.write_all(b"DY\r\n").await;
                        if !close {
                            tokio::time::sleep(hold).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn tcp_yaml(addr: SocketAddr, timeout: &str, extra: &str) -> String {
    format!(
        "name: tcp-test\nevery: 10s\ntimeout: {timeout}\ntcp:\n  host: {}\n  port: {}\n{extra}",
        addr.ip(),
        addr.port()
    )
}

fn tcp_probe(addr: SocketAddr, extra: &str) -> prober::config::Probe {
    probe(&tcp_yaml(addr, "2s", extra))
}

fn tls_probe(addr: SocketAddr, extra: &str) -> prober::config::Probe {
    probe(&format!(
        "name: tls-test\nevery: 10s\ntimeout: 3s\ntls:\n  host: 127.0.0.1\n  port: {}\n  server_name: localhost\n{extra}",
        addr.port()
    ))
}

/// A self-signed certificate for `other.example` only.
fn cert_for_other_host() -> TestCert {
    let params = rcgen::CertificateParams::new(vec!["other.example".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        der: cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

// ---- tcp ----

#[tokio::test]
async fn tcp_an_open_port_passes_with_the_connect_phase_measured() {
    let addr = tcp_server(Behaviour::Silent).await;
    let o = run(&tcp_probe(addr, "")).await;

    assert!(o.success, "{o:#?}");
    assert_eq!(
        o.phases.dns_us, None,
        "an IP address is not looked up: no DNS phase"
    );
    assert!(o.phases.connect_us.is_some_and(|c| c > 0), "{:?}", o.phases);
    assert!(o.phases.total_us > 0);
    assert_eq!(o.info["tcp.remote_addr"], addr.to_string());
    assert!(
        !o.info.contains_key("tcp.banner"),
        "nothing is read without expect"
    );
}

#[tokio::test]
async fn tcp_a_closed_port_is_a_connect_error_naming_host_and_port() {
    let addr = closed_port().await;
    let o = run(&tcp_probe(addr, "")).await;

    assert!(!o.success);
    assert_eq!(class(&o), Some(ErrorClass::Connect), "{o:#?}");
    let msg = message(&o);
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(msg.contains("nothing is listening"), "{msg}");
}

#[tokio::test]
async fn tcp_a_banner_matching_expect_passes_and_is_reported() {
    let addr = tcp_server(Behaviour::Banner).await;
    let o = run(&tcp_probe(addr, "  expect: '^SSH-2\\.0-'\n")).await;

    assert!(o.success, "{o:#?}");
    assert_eq!(o.info["tcp.banner"], "SSH-2.0-fake", "one line, trimmed");
    assert!(o.phases.first_byte_us.is_some(), "{:?}", o.phases);
    assert_eq!(o.assertions.len(), 1);
    assert!(o.assertions[0].passed, "{:?}", o.assertions);
}

#[tokio::test]
async fn tcp_send_then_expect_matches_the_reply() {
    let addr = tcp_server(Behaviour::Pong).await;
    let o = run(&tcp_probe(
        addr,
        "  send: \"PING\\r\\n\"\n  expect: '^\\+PONG'\n",
    ))
    .await;

    assert!(o.success, "{o:#?}");
    assert_eq!(o.info["tcp.banner"], "+PONG");
    assert!(o.phases.first_byte_us.is_some(), "{:?}", o.phases);
}

#[tokio::test]
async fn tcp_a_banner_that_does_not_match_is_an_assertion_failure_with_expected_and_actual() {
    let addr = tcp_server(Behaviour::BannerThenClose).await;
    let o = run(&tcp_probe(addr, "  expect: '^220 '\n")).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    let a = &o.assertions[0];
    assert!(!a.passed);
    assert!(a.expected.contains("^220 "), "{a:?}");
    assert_eq!(a.actual, "SSH-2.0-fake");
    assert!(
        message(&o).contains("closed the connection"),
        "{}",
        message(&o)
    );
}

#[tokio::test]
async fn tcp_a_wrong_banner_from_a_server_that_stays_open_is_an_assertion_not_a_timeout() {
    let addr = tcp_server(Behaviour::Banner).await;
    let o = run(&probe(&tcp_yaml(addr, "300ms", "  expect: '^220 '\n"))).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    assert_eq!(o.assertions[0].actual, "SSH-2.0-fake");
    assert!(
        message(&o).contains("nothing more within the timeout"),
        "{}",
        message(&o)
    );
}

#[tokio::test]
async fn tcp_a_match_after_a_long_drip_is_found_at_once_open_or_closed() {
    // Past 4 KiB `expect` is tried only once an eighth more has arrived or
    // the server pauses: the last small piece must still match, at once.
    for close in [false, true] {
        let addr = tcp_server(Behaviour::Drip(close)).await;
        let o = run(&tcp_probe(addr, "  expect: \"READY\"\n")).await;
        assert!(o.success, "close {close}: {}", message(&o));
        assert!(
            o.phases.total_us < 1_000_000,
            "found at once, not at the 2 s timeout: {} µs",
            o.phases.total_us
        );
    }
}

#[tokio::test]
async fn tcp_reading_stops_at_64_kib_without_a_match() {
    let addr = tcp_server(Behaviour::Flood).await;
    let o = run(&tcp_probe(addr, "  expect: 'never'\n")).await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    assert_eq!(o.response_bytes, 64 * 1024);
    assert!(message(&o).contains("limit"), "{}", message(&o));
}

#[tokio::test]
async fn tcp_a_port_that_accepts_and_never_writes_times_out_waiting_for_the_first_byte() {
    let addr = tcp_server(Behaviour::Silent).await;
    let o = run(&probe(&tcp_yaml(addr, "300ms", "  expect: '^SSH'\n"))).await;

    assert_eq!(class(&o), Some(ErrorClass::Timeout), "{o:#?}");
    let msg = message(&o);
    assert!(msg.contains("first byte"), "{msg}");
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(o.phases.connect_us.is_some());
    assert!(
        o.phases.first_byte_us.is_some(),
        "the unfinished phase is credited"
    );
    assert!(!o.assertions[0].passed);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_once_json_prints_the_outcome_and_info() {
    let addr = tcp_server(Behaviour::Pong).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        tcp_yaml(addr, "2s", "  send: \"PING\\r\\n\"\n  expect: PONG\n"),
    )
    .unwrap();

    let out = cli(dir.path(), &["once", "p.yaml", "--json"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);

    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(o["probe"], "tcp-test");
    assert_eq!(o["success"], true);
    assert_eq!(o["info"]["tcp.remote_addr"], addr.to_string());
    assert_eq!(o["info"]["tcp.banner"], "+PONG");
    assert!(o["phases"]["connect_ms"].as_f64().is_some(), "{o}");
    assert!(
        o["phases"]["dns_ms"].is_null(),
        "an IP address: no DNS phase: {o}"
    );
}

// ---- tls ----

#[tokio::test]
async fn tls_a_self_signed_cert_without_verify_passes_and_reports_days_left_and_hostname_match() {
    let target = FakeTarget::start_tls(&TestCert::self_signed(90)).await;
    let o = run(&tls_probe(
        target.addr,
        "  verify: false\n  cert_valid_days: 30\n",
    ))
    .await;

    assert!(o.success, "{o:#?}");
    let cert = o.cert.as_ref().unwrap();
    assert!((89..=90).contains(&cert.days_left), "{cert:?}");
    assert_eq!(o.info["tls.hostname_match"], "true");
    let san = &o.info["tls.san"];
    assert!(
        san.contains("localhost") && san.contains("127.0.0.1"),
        "{san}"
    );
    assert_eq!(o.info["tls.chain_length"], "1");
    assert!(o.info["tls.version"].starts_with("TLS 1."), "{:?}", o.info);
    assert!(!o.info["tls.cipher"].is_empty());
    assert!(o.info.contains_key("tls.subject") && o.info.contains_key("tls.issuer"));
    assert_eq!(o.phases.dns_us, None);
    assert!(o.phases.connect_us.is_some());
    assert!(o.phases.tls_us.is_some_and(|t| t > 0), "{:?}", o.phases);
    assert!(o.assertions[0].passed, "{:?}", o.assertions);
}

#[tokio::test]
async fn tls_reports_expiry_even_when_invalid_a_self_signed_cert_with_verify_fails_tls() {
    let target = FakeTarget::start_tls(&TestCert::self_signed(90)).await;
    let o = run(&tls_probe(target.addr, "  verify: true\n")).await;

    assert_eq!(class(&o), Some(ErrorClass::Tls), "{o:#?}");
    let msg = message(&o);
    assert!(
        msg.contains("tls.verify: false"),
        "advice names this kind's field: {msg}"
    );
    let cert = o
        .cert
        .as_ref()
        .expect("the certificate is reported even though it failed");
    assert!((89..=90).contains(&cert.days_left), "{cert:?}");
    assert_eq!(o.info["tls.hostname_match"], "true");
    assert_eq!(o.info["tls.chain_length"], "1");
    assert!(
        !o.info.contains_key("tls.version"),
        "no handshake, no version"
    );
}

#[tokio::test]
async fn tls_an_expired_cert_with_verify_fails_tls_and_reports_negative_days_left() {
    let target = FakeTarget::start_tls(&TestCert::self_signed(-3)).await;
    let o = run(&tls_probe(target.addr, "")).await;

    assert_eq!(class(&o), Some(ErrorClass::Tls), "{o:#?}");
    let cert = o.cert.as_ref().unwrap();
    assert!(cert.days_left < 0, "{cert:?}");
}

#[tokio::test]
async fn tls_an_expired_cert_without_verify_fails_cert_valid_days_as_an_assertion() {
    let target = FakeTarget::start_tls(&TestCert::self_signed(-3)).await;
    let o = run(&tls_probe(
        target.addr,
        "  verify: false\n  cert_valid_days: 1\n",
    ))
    .await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    assert!(o.cert.as_ref().unwrap().days_left < 0);
    let a = &o.assertions[0];
    assert!(!a.passed);
    assert_eq!(a.expected, ">= 1 days");
    assert!(
        a.actual.starts_with('-') && a.actual.contains("days left (expires"),
        "{a:?}"
    );
}

#[tokio::test]
async fn tls_a_cert_for_another_host_without_verify_passes_with_hostname_match_false() {
    let target = FakeTarget::start_tls(&cert_for_other_host()).await;
    let o = run(&tls_probe(target.addr, "  verify: false\n")).await;

    assert!(o.success, "{o:#?}");
    assert_eq!(o.info["tls.hostname_match"], "false");
    assert_eq!(o.info["tls.san"], "other.example");
}

#[tokio::test]
async fn tls_cert_valid_days_30_on_a_10_day_cert_is_an_assertion_failure() {
    let target = FakeTarget::start_tls(&TestCert::self_signed(10)).await;
    let o = run(&tls_probe(
        target.addr,
        "  verify: false\n  cert_valid_days: 30\n",
    ))
    .await;

    assert_eq!(class(&o), Some(ErrorClass::Assertion), "{o:#?}");
    let a = &o.assertions[0];
    assert_eq!(a.expected, ">= 30 days");
    assert!(a.actual.starts_with("10 days left (expires "), "{a:?}");
    assert!(message(&o).contains("10 days left"), "{}", message(&o));
}

#[tokio::test]
async fn tls_a_port_that_does_not_speak_tls_is_a_tls_error_without_a_cert() {
    let addr = tcp_server(Behaviour::BannerThenClose).await;
    let o = run(&tls_probe(addr, "")).await;

    assert_eq!(class(&o), Some(ErrorClass::Tls), "{o:#?}");
    assert!(o.cert.is_none());
}

#[tokio::test]
async fn tls_a_silent_port_times_out_in_the_handshake() {
    let addr = tcp_server(Behaviour::Silent).await;
    let o = run(&probe(&format!(
        "name: t\nevery: 10s\ntimeout: 300ms\ntls:\n  host: 127.0.0.1\n  port: {}\n",
        addr.port()
    )))
    .await;

    assert_eq!(class(&o), Some(ErrorClass::Timeout), "{o:#?}");
    assert!(message(&o).contains("TLS handshake"), "{}", message(&o));
    assert!(o.phases.tls_us.is_some());
}

#[tokio::test]
async fn tls_a_closed_port_is_a_connect_error() {
    let addr = closed_port().await;
    let o = run(&tls_probe(addr, "")).await;

    assert_eq!(class(&o), Some(ErrorClass::Connect), "{o:#?}");
    assert!(message(&o).contains(&addr.to_string()));
}
