//! The `websocket` kind against WebSocket servers on loopback
//! (tokio-tungstenite's server side), in clear text and over TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use prober::probe::Runner;
use prober::run::{ErrorClass, Outcome};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{probe, FakeTarget, TestCert};

/// A WebSocket server that answers each message with `reply(message)`;
/// over TLS with `cert`.
async fn server(cert: Option<&TestCert>, reply: fn(&str) -> String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = cert.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c.server_config())));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(sock).await {
                            echo(tls, reply).await;
                        }
                    }
                    None => echo(sock, reply).await,
                }
            });
        }
    });
    addr
}

async fn echo<S>(stream: S, reply: fn(&str) -> String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            if ws.send(Message::text(reply(t.as_str()))).await.is_err() {
                return;
            }
        }
    }
}

async fn run(url: &str, extra: &str) -> Outcome {
    let extra: String = extra.lines().map(|l| format!("  {l}\n")).collect();
    let p = probe(&format!(
        "name: ws\nevery: 10s\ntimeout: 1s\nwebsocket:\n  url: {url}\n{extra}"
    ));
    Runner::new().unwrap().run(&p).await
}

#[tokio::test]
async fn a_websocket_upgrades_echoes_and_is_timed_in_clear_text_and_over_tls() {
    let plain = server(None, |m| m.to_string()).await;
    let o = run(
        &format!("ws://{plain}/live"),
        "send: ping-1\nexpect: \"^ping-1$\"",
    )
    .await;
    assert!(o.success, "{o:#?}");
    assert_eq!(o.status_code, Some(101));
    let ph = &o.phases;
    assert!(
        ph.connect_us.is_some() && ph.first_byte_us.is_some() && ph.transfer_us.is_some(),
        "{ph:?}"
    );
    assert_eq!(ph.tls_us, None);
    assert!(
        o.assertions
            .iter()
            .any(|a| a.check == "message matches" && a.passed && a.actual == "ping-1"),
        "{:?}",
        o.assertions
    );

    let cert = TestCert::self_signed(30);
    let tls = server(Some(&cert), |m| format!("pong to {m}")).await;
    let url = format!("wss://localhost:{}/live", tls.port());
    let o = run(&url, "send: hi\nexpect: \"pong\"\ntls_verify: false").await;
    assert!(o.success, "{o:#?}");
    assert!(o.phases.tls_us.is_some() && o.cert.is_some(), "{o:#?}");
    // Verified by default: a self-signed certificate is refused.
    let o = run(&url, "send: hi").await;
    assert_eq!(
        o.error.as_ref().map(|e| e.class),
        Some(ErrorClass::Tls),
        "{o:#?}"
    );

    // A reply that does not match: the wait runs to the timeout, and says what came.
    let o = run(&url, "send: hi\nexpect: \"^ok$\"\ntls_verify: false").await;
    let e = o.error.as_ref().expect("no matching message");
    assert_eq!(e.class, ErrorClass::Timeout, "{e:?}");
    assert!(
        e.message.contains("the last was pong to hi"),
        "{}",
        e.message
    );
    let a = o
        .assertions
        .iter()
        .find(|a| a.check == "message matches")
        .unwrap();
    assert!(
        !a.passed && a.actual == "pong to hi" && a.expected == "^ok$",
        "{a:?}"
    );

    // Not a WebSocket endpoint: the upgrade's status, as http_status.
    let http = FakeTarget::start().await;
    let o = run(&format!("ws://{}/", http.addr), "send: hi").await;
    let e = o.error.as_ref().expect("no upgrade");
    assert_eq!(e.class, ErrorClass::HttpStatus, "{e:?}");
    assert!(e.message.contains("instead of 101"), "{}", e.message);
}
