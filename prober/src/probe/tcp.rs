//! The TCP check: resolve (the system resolver, as for HTTP), connect, send
//! `send` if given, and with `expect` read until the regex matches what the
//! server sent so far (a banner or a reply), up to [`MAX_READ_BYTES`].
//!
//! Phases: dns (0 for an IP address), connect, first byte (`send` written, or
//! connected when there is nothing to send → first byte received) and transfer
//! (first byte → the byte that completed the match). A phase the run never
//! reached, or that this kind does not have (tls), is `None`.
//!
//! Resolving and connecting are shared with the `tls` kind (`tls_check.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::assert::excerpt;
use super::net;
pub(crate) use super::net::{fail, micros};
use crate::config::probe::TcpCheck;
use crate::config::Probe;
use crate::run::{AssertionResult, ErrorClass, Outcome, Phases, ProbeError};

/// Most bytes read while waiting for `expect` to match.
pub const MAX_READ_BYTES: usize = 64 * 1024;

/// What stage a run is in, for the timeout message and the partial phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Dns,
    Connect,
    Tls,
    Send,
    FirstByte,
    Read,
}

impl Stage {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Stage::Dns => "resolving the host name",
            Stage::Connect => "connecting",
            Stage::Tls => "in the TLS handshake",
            Stage::Send => "sending `send`",
            Stage::FirstByte => "waiting for the first byte from the server",
            Stage::Read => "reading until `expect` matched",
        }
    }
}

/// What a run has measured so far; outlives a timeout that drops the run's future.
#[derive(Debug)]
pub(crate) struct Progress {
    pub(crate) stage: Stage,
    pub(crate) stage_started: Instant,
    pub(crate) phases: Phases,
    pub(crate) remote_addr: Option<SocketAddr>,
    /// Bytes received (only read when `expect` is set).
    pub(crate) received: Vec<u8>,
    /// Set once reading started: how it ended, if it did.
    pub(crate) read_end: Option<ReadEnd>,
    pub(crate) reading: bool,
}

/// How reading for `expect` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadEnd {
    Matched,
    Eof,
    Cap,
}

impl Progress {
    pub(crate) fn new(start: Instant) -> Progress {
        Progress {
            stage: Stage::Dns,
            stage_started: start,
            phases: Phases::default(),
            remote_addr: None,
            received: Vec::new(),
            read_end: None,
            reading: false,
        }
    }

    pub(crate) fn enter(&mut self, stage: Stage) {
        self.stage = stage;
        self.stage_started = Instant::now();
    }

    /// Credits the time spent in the current, unfinished stage (used on timeout).
    pub(crate) fn close_partial(&mut self) {
        let us = micros(self.stage_started.elapsed());
        let slot = match self.stage {
            Stage::Dns => &mut self.phases.dns_us,
            Stage::Connect => &mut self.phases.connect_us,
            Stage::Tls => &mut self.phases.tls_us,
            Stage::Send => return,
            Stage::FirstByte => &mut self.phases.first_byte_us,
            Stage::Read => &mut self.phases.transfer_us,
        };
        if slot.is_none() {
            *slot = Some(us);
        }
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

/// Resolves `host` with the system resolver (no lookup for an IP address).
pub(crate) async fn resolve(
    host: &str,
    port: u16,
    p: &mut Progress,
) -> Result<Vec<SocketAddr>, ProbeError> {
    p.enter(Stage::Dns);
    let result = net::resolve(host, port, "the probe").await;
    let looked_up = !matches!(result, Ok((_, false)));
    // An IP address is not looked up: no DNS phase (None, not 0).
    p.phases.dns_us = looked_up.then(|| micros(p.stage_started.elapsed()));
    result.map(|(addrs, _)| addrs)
}

/// Connects to the first address that accepts.
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    host: &str,
    port: u16,
    p: &mut Progress,
) -> Result<TcpStream, ProbeError> {
    p.enter(Stage::Connect);
    let result = net::connect(addrs, &host_port(host, port), &mut p.remote_addr).await;
    p.phases.connect_us = Some(micros(p.stage_started.elapsed()));
    result
}

/// Runs a TCP check once.
pub async fn run(probe: &Probe, check: &TcpCheck) -> Outcome {
    let started_at = Utc::now();
    let start = Instant::now();
    let mut p = Progress::new(start);
    let result = tokio::time::timeout(probe.timeout, converse(check, &mut p)).await;
    let total = start.elapsed();

    let mut o = Outcome::failed(
        &probe.name,
        &probe.version,
        started_at,
        ErrorClass::Config,
        String::new(),
        Duration::ZERO,
    );
    o.request = format!("tcp {}", host_port(&check.host, check.port));
    let where_ = target(&check.host, check.port, p.remote_addr);
    let mut error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => {
            p.close_partial();
            Some(timeout_error(check, &p, probe.timeout, &where_))
        }
    };
    let received = String::from_utf8_lossy(&p.received).into_owned();
    if let (Some(re), true) = (&check.expect, p.reading) {
        let passed = p.read_end == Some(ReadEnd::Matched);
        o.assertions.push(AssertionResult {
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
            let sent = check.send.is_some();
            error = Some(mismatch_error(
                re,
                &p,
                &received,
                sent,
                probe.timeout,
                &where_,
            ));
        }
    }
    o.phases = p.phases;
    o.phases.total_us = micros(total);
    o.response_bytes = p.received.len() as u64;
    if let Some(addr) = p.remote_addr {
        o.remote_addr = Some(addr.to_string());
        o.info.insert("tcp.remote_addr".into(), addr.to_string());
    }
    if !received.is_empty() {
        o.info.insert("tcp.banner".into(), excerpt(&received));
    }
    o.success = error.is_none();
    o.error = error;
    o
}

/// Connects, sends, and reads until `expect` matches, EOF or the cap.
async fn converse(check: &TcpCheck, p: &mut Progress) -> Result<(), ProbeError> {
    let addrs = resolve(&check.host, check.port, p).await?;
    let mut stream = connect(&addrs, &check.host, check.port, p).await?;
    let where_ = target(&check.host, check.port, p.remote_addr);
    if let Some(send) = &check.send {
        p.enter(Stage::Send);
        stream
            .write_all(send.as_bytes())
            .await
            .map_err(|e| {
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
    read_until_match(&mut stream, re, p, &where_).await
}

async fn read_until_match(
    stream: &mut TcpStream,
    re: &Regex,
    p: &mut Progress,
    where_: &str,
) -> Result<(), ProbeError> {
    p.enter(Stage::FirstByte);
    p.reading = true;
    let mut buf = vec![0u8; 8192];
    let mut first_byte_at = None;
    loop {
        let room = (MAX_READ_BYTES - p.received.len()).min(buf.len());
        let n = stream.read(&mut buf[..room]).await.map_err(|e| {
            fail(
                ErrorClass::InvalidResponse,
                format!("the connection to {where_} failed while reading: {e}"),
            )
        })?;
        let now = Instant::now();
        if n == 0 {
            p.read_end = Some(ReadEnd::Eof);
            if let Some(at) = first_byte_at {
                p.phases.transfer_us = Some(micros(now.saturating_duration_since(at)));
            }
            return Ok(());
        }
        if first_byte_at.is_none() {
            first_byte_at = Some(now);
            p.phases.first_byte_us = Some(micros(now.saturating_duration_since(p.stage_started)));
            p.enter(Stage::Read);
            p.stage_started = now;
        }
        p.received.extend_from_slice(&buf[..n]);
        let end = if re.is_match(&String::from_utf8_lossy(&p.received)) {
            Some(ReadEnd::Matched)
        } else if p.received.len() >= MAX_READ_BYTES {
            Some(ReadEnd::Cap)
        } else {
            None
        };
        if let Some(end) = end {
            p.read_end = Some(end);
            p.phases.transfer_us = Some(micros(now.saturating_duration_since(p.stage_started)));
            return Ok(());
        }
    }
}

/// Why `expect` did not match: the server closed, sent too much, or went quiet.
fn mismatch_error(
    re: &Regex,
    p: &Progress,
    received: &str,
    sent: bool,
    timeout: Duration,
    where_: &str,
) -> ProbeError {
    let got = if received.is_empty() {
        "nothing".to_string()
    } else {
        format!("{:?}", excerpt(received))
    };
    let how = match p.read_end {
        Some(ReadEnd::Eof) => format!(
            "{where_} closed the connection after {} bytes",
            p.received.len()
        ),
        Some(ReadEnd::Cap) => format!("read the limit of {MAX_READ_BYTES} bytes from {where_}"),
        _ => format!(
            "{where_} sent {} bytes, then nothing more within the timeout of {}",
            p.received.len(),
            humantime::format_duration(timeout)
        ),
    };
    fail(
        ErrorClass::Assertion,
        format!(
            "tcp expect: no match for /{}/: {how}; got {got}. Check the regex against what the service sends{}",
            re.as_str(),
            if sent { ", and whether `send` is what it expects" } else { "" }
        ),
    )
}

fn timeout_error(check: &TcpCheck, p: &Progress, timeout: Duration, where_: &str) -> ProbeError {
    let hint = match p.stage {
        Stage::FirstByte if check.send.is_none() => {
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
            humantime::format_duration(timeout),
            p.stage.describe(),
        ),
    )
}
