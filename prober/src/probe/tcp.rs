//! The TCP check: resolve (the system resolver, as for HTTP), connect, send
//! `send` if given, and with `expect` read until the regex matches what the
//! server sent so far (a banner or a reply), up to [`MAX_READ_BYTES`].
//!
//! Phases: dns (0 for an IP address), connect, first byte (`send` written, or
//! connected when there is nothing to send → first byte received) and transfer
//! (first byte → the byte that completed the match). A phase the run never
//! reached, or that this kind does not have (tls), is `None`.
//!
//! Resolving and connecting are every kind's (`net.rs`); `host_port` is shared with `tls`.

use std::net::SocketAddr;
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::assert::excerpt;
use super::net::{self, fail, micros};
use super::{Kind, Progress, Stage};
use crate::config::probe::TcpCheck;
use crate::run::{AssertionResult, ErrorClass, ProbeError};

/// Most bytes read while waiting for `expect` to match.
pub const MAX_READ_BYTES: usize = 64 * 1024;
/// Up to this much read, `expect` is tried after every read; past it, once
/// an eighth more has arrived or the server pauses for [`QUIET`], so a
/// server dripping a byte at a time costs O(n) matching, not O(n²).
const MATCH_EVERY_READ: usize = 4 * 1024;
/// A pause in the server's writes after which what arrived is matched.
const QUIET: std::time::Duration = std::time::Duration::from_millis(2);

/// How reading for `expect` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    Matched,
    Eof,
    Cap,
}

/// The `tcp` kind, and what it read (kept when the timeout cuts the read).
pub struct TcpKind<'a> {
    check: &'a TcpCheck,
    timeout: Duration,
    /// Bytes received (only read when `expect` is set).
    received: Vec<u8>,
    /// Set once reading started: how it ended, if it did.
    read_end: Option<ReadEnd>,
    reading: bool,
}

impl<'a> TcpKind<'a> {
    pub fn new(check: &'a TcpCheck, timeout: Duration) -> TcpKind<'a> {
        TcpKind {
            check,
            timeout,
            received: Vec::new(),
            read_end: None,
            reading: false,
        }
    }
}

impl Kind for TcpKind<'_> {
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
        let check = self.check;
        p.request = format!("tcp {}", host_port(&check.host, check.port));
        p.target = host_port(&check.host, check.port);
        let addrs = net::resolve_timed(&check.host, check.port, "the probe", p).await?;
        let what = host_port(&check.host, check.port);
        let mut stream = net::connect_timed(&addrs, &what, p).await?;
        let where_ = target(&check.host, check.port, p.remote_addr);
        if let Some(send) = &check.send {
            p.enter(Stage::Send);
            stream.write_all(send.as_bytes()).await.map_err(|e| {
                fail(
                    ErrorClass::InvalidResponse,
                    format!("could not send `send` to {where_}: {e}; the server closed the connection at once"),
                )
            })?;
            let _ = stream.flush().await;
        }
        let Some(re) = &check.expect else {
            return Ok(());
        };
        self.read_until_match(&mut stream, re, p, &where_).await
    }

    fn timed_out(&self, p: &Progress) -> ProbeError {
        let where_ = target(&self.check.host, self.check.port, p.remote_addr);
        let hint = match p.stage() {
            Stage::FirstByte if self.check.send.is_none() => {
                "the service accepted the connection but sent nothing; does it wait for the client to speak first (set `send`)?"
            }
            Stage::FirstByte => "the service accepted the connection and `send` but did not answer; is `send` what it expects?",
            Stage::Connect => "the host did not answer the connection attempt; is a firewall dropping packets?",
            _ => "the target is slow or hung; raise `timeout` only if that latency is acceptable",
        };
        fail(
            ErrorClass::Timeout,
            format!(
                "not done within the timeout of {} (still {} at {where_}); {hint}",
                humantime::format_duration(self.timeout),
                describe(p.stage()),
            ),
        )
    }

    /// Holds what was read to `expect`: a read cut by the timeout after some
    /// bytes is a mismatch (the service answered, just not as expected).
    fn conclude(&mut self, p: &mut Progress, mut error: Option<ProbeError>) -> Option<ProbeError> {
        let check = self.check;
        let where_ = target(&check.host, check.port, p.remote_addr);
        let received = String::from_utf8_lossy(&self.received).into_owned();
        if let (Some(re), true) = (&check.expect, self.reading) {
            let passed = self.read_end == Some(ReadEnd::Matched);
            p.assertions.push(AssertionResult {
                check: "tcp expect".into(),
                passed,
                expected: format!("matches /{}/", re.as_str()),
                actual: if received.is_empty() {
                    "nothing".into()
                } else {
                    excerpt(&received)
                },
            });
            let timed_out = error
                .as_ref()
                .is_some_and(|e| e.class == ErrorClass::Timeout);
            if !passed && (error.is_none() || timed_out && !received.is_empty()) {
                error = Some(self.mismatch_error(re, &received, &where_));
            }
        }
        p.response_bytes = self.received.len() as u64;
        if let Some(addr) = p.remote_addr {
            p.info.insert("tcp.remote_addr".into(), addr.to_string());
        }
        if !received.is_empty() {
            p.info.insert("tcp.banner".into(), excerpt(&received));
        }
        error
    }
}

/// What a TCP attempt was doing, in this kind's words.
fn describe(stage: Stage) -> &'static str {
    match stage {
        Stage::Send => "sending `send`",
        Stage::FirstByte => "waiting for the first byte from the server",
        Stage::Transfer => "reading until `expect` matched",
        other => other.describe(),
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host:port`, and the address connected to when it says more.
fn target(host: &str, port: u16, addr: Option<SocketAddr>) -> String {
    let hp = host_port(host, port);
    match addr {
        Some(a) if a.to_string() != hp => format!("{hp} ({a})"),
        _ => hp,
    }
}

impl TcpKind<'_> {
    /// Reads until `expect` matches what arrived, the server closes, or the cap.
    async fn read_until_match(
        &mut self,
        stream: &mut TcpStream,
        re: &Regex,
        p: &mut Progress,
        where_: &str,
    ) -> Result<(), ProbeError> {
        p.enter(Stage::FirstByte);
        self.reading = true;
        let mut buf = vec![0u8; 8192];
        let mut first_byte_at = None;
        // What was matched last, and when the last bytes came.
        let (mut matched_len, mut last_read) = (0, Instant::now());
        loop {
            let room = (MAX_READ_BYTES - self.received.len()).min(buf.len());
            let read = stream.read(&mut buf[..room]);
            let read = if matched_len < self.received.len() {
                match tokio::time::timeout(QUIET, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        // The server paused: what arrived is matched now.
                        matched_len = self.received.len();
                        if re.is_match(&String::from_utf8_lossy(&self.received)) {
                            self.read_end = Some(ReadEnd::Matched);
                            p.hop.transfer_us = Some(micros(
                                last_read.saturating_duration_since(p.stage_started()),
                            ));
                            return Ok(());
                        }
                        continue;
                    }
                }
            } else {
                read.await
            };
            let n = read.map_err(|e| {
                fail(
                    ErrorClass::InvalidResponse,
                    format!("the connection to {where_} failed while reading: {e}"),
                )
            })?;
            let now = Instant::now();
            if n == 0 {
                if matched_len < self.received.len()
                    && re.is_match(&String::from_utf8_lossy(&self.received))
                {
                    // Matched by bytes not yet tried when the server closed.
                    self.read_end = Some(ReadEnd::Matched);
                    p.hop.transfer_us = Some(micros(
                        last_read.saturating_duration_since(p.stage_started()),
                    ));
                    return Ok(());
                }
                self.read_end = Some(ReadEnd::Eof);
                if let Some(at) = first_byte_at {
                    p.hop.transfer_us = Some(micros(now.saturating_duration_since(at)));
                }
                return Ok(());
            }
            last_read = now;
            if first_byte_at.is_none() {
                first_byte_at = Some(now);
                p.hop.first_byte_us =
                    Some(micros(now.saturating_duration_since(p.stage_started())));
                p.enter_at(Stage::Transfer, now);
            }
            self.received.extend_from_slice(&buf[..n]);
            let len = self.received.len();
            let due = len <= MATCH_EVERY_READ
                || len - matched_len >= matched_len / 8
                || len >= MAX_READ_BYTES;
            if due {
                matched_len = len;
            }
            let end = if due && re.is_match(&String::from_utf8_lossy(&self.received)) {
                Some(ReadEnd::Matched)
            } else if len >= MAX_READ_BYTES {
                Some(ReadEnd::Cap)
            } else {
                None
            };
            if let Some(end) = end {
                self.read_end = Some(end);
                p.hop.transfer_us = Some(micros(now.saturating_duration_since(p.stage_started())));
                return Ok(());
            }
        }
    }

    /// Why `expect` did not match: the server closed, sent too much, or went quiet.
    fn mismatch_error(&self, re: &Regex, received: &str, where_: &str) -> ProbeError {
        let got = if received.is_empty() {
            "nothing".to_string()
        } else {
            format!("{:?}", excerpt(received))
        };
        let n = self.received.len();
        let how = match self.read_end {
            Some(ReadEnd::Eof) => format!("{where_} closed the connection after {n} bytes"),
            Some(ReadEnd::Cap) => format!("read the limit of {MAX_READ_BYTES} bytes from {where_}"),
            _ => format!(
                "{where_} sent {n} bytes, then nothing more within the timeout of {}",
                humantime::format_duration(self.timeout)
            ),
        };
        let sent = self.check.send.is_some();
        fail(
            ErrorClass::Assertion,
            format!(
                "tcp expect: no match for /{}/: {how}; got {got}. Check the regex against what the service sends{}",
                re.as_str(),
                if sent { ", and whether `send` is what it expects" } else { "" }
            ),
        )
    }
}
