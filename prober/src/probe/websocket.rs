//! The WebSocket check: connect, TLS for `wss://`, the HTTP/1.1 upgrade,
//! then `send` and read until a message matches `expect` (tokio-tungstenite
//! over our own timed connection).
//!
//! Phases: dns, connect, tls (`wss://`), first byte (the upgrade: request
//! written → `101 Switching Protocols`), transfer (the message sent → the
//! reply that matched; none when there is nothing to send or expect).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::assert::excerpt;
use super::net::{self, fail};
use super::tls::{self, TlsClients};
use super::{Kind, Progress, Stage};
use crate::config::probe::{TlsOptions, WebSocketCheck};
use crate::run::{AssertionResult, ErrorClass, ProbeError};

/// The largest message read (a probe's reply is small; a bigger one is refused, not buffered).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Messages read while waiting for one that matches `expect`.
pub const MAX_MESSAGES: usize = 100;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The `websocket` kind.
pub struct WsKind<'a> {
    check: &'a WebSocketCheck,
    tls: &'a TlsClients,
    timeout: Duration,
    /// The last message received (kept when the timeout cuts the wait for a match).
    last: Option<String>,
}

impl<'a> WsKind<'a> {
    pub fn new(check: &'a WebSocketCheck, tls: &'a TlsClients, timeout: Duration) -> WsKind<'a> {
        WsKind {
            check,
            tls,
            timeout,
            last: None,
        }
    }
}

/// A WebSocket error during the exchange, as a class and advice.
fn classify(e: WsError, url: &url::Url) -> ProbeError {
    match e {
        WsError::Http(resp) => fail(
            ErrorClass::HttpStatus,
            format!(
                "{url} answered the WebSocket upgrade with {} instead of 101 Switching Protocols; check the path and that the server speaks WebSocket there",
                resp.status()
            ),
        ),
        WsError::Capacity(c) => fail(
            ErrorClass::BodyTooLarge,
            format!("a message from {url} was over {MAX_MESSAGE_BYTES} bytes ({c}) and was not read"),
        ),
        other => fail(
            ErrorClass::InvalidResponse,
            format!("the WebSocket exchange with {url} failed ({other})"),
        ),
    }
}

impl Kind for WsKind<'_> {
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
        let c = self.check;
        let url = &c.url;
        p.request = format!("websocket {url}");
        p.target = url.to_string();
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = net::resolve_timed(&host, port, "websocket.url", p).await?;
        let tcp = net::connect_timed(&addrs, url.as_str(), p).await?;
        let stream: Box<dyn Stream> = if url.scheme() == "wss" {
            let opts = TlsOptions::default();
            let s =
                tls::handshake_timed(self.tls, c.tls_verify, &opts, &[b"http/1.1"], &host, tcp, p)
                    .await?;
            Box::new(s)
        } else {
            Box::new(tcp)
        };
        p.enter(Stage::FirstByte);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let (mut ws, response) =
            tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
                .await
                .map_err(|e| classify(e, url))?;
        p.hop.first_byte_us = Some(p.stage_us());
        p.status = Some(response.status().as_u16());
        if c.send.is_none() && c.expect.is_none() {
            let _ = ws.close(None).await;
            return Ok(());
        }
        p.enter(Stage::Transfer);
        if let Some(text) = &c.send {
            ws.send(Message::text(text.clone()))
                .await
                .map_err(|e| classify(e, url))?;
        }
        let mut last = String::new();
        let mut matched = c.expect.is_none();
        for _ in 0..MAX_MESSAGES {
            let text = match ws.next().await {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Err(e)) => return Err(classify(e, url)),
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                Some(Ok(_)) => continue,
            };
            p.response_bytes += text.len() as u64;
            matched = c.expect.as_ref().is_none_or(|r| r.is_match(&text));
            self.last = Some(text.clone());
            last = text;
            if matched {
                break;
            }
        }
        p.hop.transfer_us = Some(p.stage_us());
        let _ = ws.close(None).await;
        if let Some(r) = &c.expect {
            p.assertions.push(AssertionResult {
                check: "message matches".into(),
                passed: matched,
                expected: r.as_str().to_string(),
                actual: if last.is_empty() {
                    "no message before the server closed".into()
                } else {
                    excerpt(&last)
                },
            });
        }
        if matched {
            return Ok(());
        }
        Err(fail(
            ErrorClass::Assertion,
            format!(
                "no message from {url} matched `expect` {:?} (last: {}); check what the server sends back",
                c.expect.as_ref().map(regex::Regex::as_str).unwrap_or_default(),
                excerpt(&last)
            ),
        ))
    }

    fn timed_out(&self, p: &Progress) -> ProbeError {
        let doing = match (p.stage(), &self.last) {
            (Stage::FirstByte, _) => "waiting for the upgrade's answer".to_string(),
            (Stage::Transfer, None) => "waiting for a message; none came".to_string(),
            (Stage::Transfer, Some(last)) => format!(
                "waiting for a message that matches `expect`; the last was {}",
                excerpt(last)
            ),
            (other, _) => other.describe().to_string(),
        };
        fail(
            ErrorClass::Timeout,
            format!(
                "the WebSocket exchange with {} did not finish within the timeout of {} (still {doing}); check what the server sends, or raise `timeout` only if that latency is acceptable",
                self.check.url,
                humantime::format_duration(self.timeout),
            ),
        )
    }

    fn conclude(&mut self, p: &mut Progress, error: Option<ProbeError>) -> Option<ProbeError> {
        // Cut while waiting: the expectation is reported failed, with what came.
        let judged = p.assertions.iter().any(|a| a.check == "message matches");
        if let (Some(r), false, true) = (&self.check.expect, judged, error.is_some()) {
            p.assertions.push(AssertionResult {
                check: "message matches".into(),
                passed: false,
                expected: r.as_str().to_string(),
                actual: (self.last.as_deref()).map_or_else(|| "no message".into(), excerpt),
            });
        }
        error
    }
}
