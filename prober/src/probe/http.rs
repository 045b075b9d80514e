//! The HTTP check, on hyper directly so every phase is measured where it happens:
//! DNS (the system resolver), TCP connect, TLS handshake, first byte (request
//! written → first response byte on the wire), transfer (first byte → end of
//! body). ARCHITECTURE.md says why not reqwest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use url::Url;

use super::assert::{evaluate, ResponseView};
use super::timing::{TimedIo, WireClock};
use super::tls::{self, TlsClients};
use super::USER_AGENT;
use crate::config::probe::{Body, HttpCheck, HttpRequest};
use crate::config::template::Vars;
use crate::config::Probe;
use crate::run::{AssertionResult, CertInfo, ErrorClass, Outcome, Phases, ProbeError};

/// What stage a run is in, for the timeout message and the partial phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Dns,
    Connect,
    Tls,
    FirstByte,
    Transfer,
}

impl Stage {
    fn describe(self) -> &'static str {
        match self {
            Stage::Dns => "resolving the host name",
            Stage::Connect => "connecting",
            Stage::Tls => "in the TLS handshake",
            Stage::FirstByte => "waiting for the first byte of the response",
            Stage::Transfer => "reading the response body",
        }
    }
}

/// What a run has measured so far; survives a timeout that drops the run's future.
struct Progress {
    stage: Stage,
    stage_started: Instant,
    /// Phases of completed hops (redirects) plus the current one.
    done: Phases,
    hop: Phases,
    url: Url,
    method: Method,
    status: Option<u16>,
    response_bytes: u64,
    remote_addr: Option<SocketAddr>,
    cert: Option<CertInfo>,
    redirects: u32,
}

impl Progress {
    fn enter(&mut self, stage: Stage) {
        self.stage = stage;
        self.stage_started = Instant::now();
    }

    /// Credits the time spent in the current, unfinished stage (used on timeout).
    fn close_partial(&mut self) {
        let us = micros(self.stage_started.elapsed());
        let slot = match self.stage {
            Stage::Dns => &mut self.hop.dns_us,
            Stage::Connect => &mut self.hop.connect_us,
            Stage::Tls => &mut self.hop.tls_us,
            Stage::FirstByte => &mut self.hop.first_byte_us,
            Stage::Transfer => &mut self.hop.transfer_us,
        };
        if slot.is_none() {
            *slot = Some(us);
        }
    }

    fn end_hop(&mut self) {
        let hop = std::mem::take(&mut self.hop);
        self.done.add(&hop);
    }
}

/// A response read to its end (or to the size limit).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

use super::net::{self, fail, micros};

/// What an HTTP exchange needs besides the request: TLS, the keep-alive pool, and whose it is.
#[derive(Clone, Copy)]
pub struct HttpCtx<'a> {
    pub tls: &'a TlsClients,
    pub pool: &'a ConnPool,
    /// The probe's name: keep-alive connections are never shared between probes.
    pub probe: &'a str,
}

/// An idle keep-alive connection, and what was measured when it was opened.
struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    clock: Arc<WireClock>,
    remote_addr: Option<SocketAddr>,
    cert: Option<CertInfo>,
}

/// Idle connections of probes with `keep_alive: true`: at most one per probe and origin.
#[derive(Default)]
pub struct ConnPool {
    idle: Mutex<HashMap<String, Idle>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnPool")
    }
}

impl ConnPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Idle>> {
        match self.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn take(&self, key: &str) -> Option<Idle> {
        self.lock().remove(key)
    }

    fn put(&self, key: String, idle: Idle) {
        self.lock().insert(key, idle);
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A new W3C trace id (32 hex digits, never all zero).
pub fn new_trace_id() -> String {
    format!("{:032x}", rand::random::<u128>().max(1))
}

/// Runs an HTTP check once.
pub async fn run(probe: &Probe, check: &HttpCheck, ctx: HttpCtx<'_>) -> Outcome {
    let started_at = Utc::now();
    let trace_id = new_trace_id();
    let x = exchange_check(check, ctx, &trace_id, probe.timeout, &Vars::new()).await;
    let mut outcome = Outcome::failed(
        &probe.name,
        &probe.version,
        started_at,
        ErrorClass::Config,
        String::new(),
        Duration::ZERO,
    );
    outcome.trace_id = trace_id;
    x.fill(&mut outcome);
    outcome
}

/// Everything one request (with its redirects) produced.
#[derive(Debug)]
pub struct Exchange {
    pub request: String,
    pub phases: Phases,
    pub status_code: Option<u16>,
    pub response_bytes: u64,
    pub remote_addr: Option<String>,
    pub redirects: u32,
    pub cert: Option<CertInfo>,
    pub assertions: Vec<AssertionResult>,
    pub error: Option<ProbeError>,
    /// The final response, for extracting variables.
    pub response: Option<Response>,
}

impl Exchange {
    /// Copies the exchange's findings into an outcome.
    pub fn fill(self, o: &mut Outcome) {
        o.request = self.request;
        o.phases = self.phases;
        o.status_code = self.status_code;
        o.response_bytes = self.response_bytes;
        o.remote_addr = self.remote_addr;
        o.redirects = self.redirects;
        o.cert = self.cert;
        o.assertions = self.assertions;
        o.success = self.error.is_none();
        o.error = self.error;
    }
}

/// Sends a check's request (following redirects as allowed) within `timeout`,
/// and evaluates its expectations; `vars` fills `${var}` placeholders.
pub async fn exchange_check(
    check: &HttpCheck,
    ctx: HttpCtx<'_>,
    trace_id: &str,
    timeout: Duration,
    vars: &Vars,
) -> Exchange {
    let start = Instant::now();
    let mut x = Exchange {
        request: format!("{} {}", check.request.method, check.request.url.source()),
        phases: Phases::default(),
        status_code: None,
        response_bytes: 0,
        remote_addr: None,
        redirects: 0,
        cert: None,
        assertions: Vec::new(),
        error: None,
        response: None,
    };
    let url = match render_url(&check.request, vars) {
        Ok(u) => u,
        Err(e) => {
            x.error = Some(e);
            x.phases.total_us = micros(start.elapsed());
            return x;
        }
    };
    let mut progress = Progress {
        stage: Stage::Dns,
        stage_started: start,
        done: Phases::default(),
        hop: Phases::default(),
        url,
        method: check.request.method.clone(),
        status: None,
        response_bytes: 0,
        remote_addr: None,
        cert: None,
        redirects: 0,
    };
    let result = tokio::time::timeout(
        timeout,
        exchange(&check.request, ctx, trace_id, vars, &mut progress),
    )
    .await;
    let total = start.elapsed();
    let response = match result {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            x.error = Some(e);
            None
        }
        Err(_) => {
            progress.close_partial();
            let where_ = match progress.remote_addr {
                Some(a) => format!("{} ({a})", progress.url),
                None => progress.url.to_string(),
            };
            x.error = Some(fail(
                ErrorClass::Timeout,
                format!(
                    "no complete response within the timeout of {} (still {} at {where_}); the target is slow or hung — raise `timeout` only if that latency is acceptable",
                    humantime::format_duration(timeout),
                    progress.stage.describe(),
                ),
            ));
            None
        }
    };
    progress.end_hop();
    x.phases = progress.done;
    x.phases.total_us = micros(total);
    x.request = format!("{} {}", progress.method, progress.url);
    x.status_code = progress.status;
    x.response_bytes = progress.response_bytes;
    x.remote_addr = progress.remote_addr.map(|a| a.to_string());
    x.redirects = progress.redirects;
    x.cert = progress.cert;
    if let Some(resp) = response {
        x.assertions = evaluate(
            &check.expect,
            &ResponseView {
                status: resp.status.as_u16(),
                headers: &resp.headers,
                body: &resp.body,
                total,
                cert: x.cert.as_ref(),
            },
            vars,
        );
        x.error = first_failure(&x.assertions);
        x.response = Some(resp);
    }
    x
}

/// The error that decides a run whose response arrived: the status first, then other expectations.
fn first_failure(assertions: &[AssertionResult]) -> Option<ProbeError> {
    let failed = assertions.iter().find(|a| !a.passed)?;
    let class = if failed.check == "status" {
        ErrorClass::HttpStatus
    } else {
        ErrorClass::Assertion
    };
    let others = assertions.iter().filter(|a| !a.passed).count() - 1;
    let more = if others > 0 {
        format!(" (and {others} more failed)")
    } else {
        String::new()
    };
    Some(fail(
        class,
        format!(
            "{}: expected {}, got {}{more}",
            failed.check, failed.expected, failed.actual
        ),
    ))
}

fn render_url(req: &HttpRequest, vars: &Vars) -> Result<Url, ProbeError> {
    let text = req
        .url
        .render_vars(vars)
        .map_err(|e| fail(ErrorClass::Config, format!("http.url: {e}")))?;
    Url::parse(&text).map_err(|e| {
        fail(
            ErrorClass::Config,
            format!("http.url {text:?} is not a valid URL ({e})"),
        )
    })
}

/// Sends the request, following redirects as allowed, and reads the final response.
async fn exchange(
    req: &HttpRequest,
    ctx: HttpCtx<'_>,
    trace_id: &str,
    vars: &Vars,
    p: &mut Progress,
) -> Result<Response, ProbeError> {
    let mut headers = render_headers(req, trace_id, vars)?;
    let mut body = render_body(req, vars)?;
    loop {
        let resp = hop(req, ctx, &headers, body.clone(), p).await?;
        let location = resp
            .headers
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok());
        let (true, Some(location)) = (resp.status.is_redirection(), location) else {
            return Ok(resp);
        };
        if req.redirects == 0 {
            return Ok(resp);
        }
        if p.redirects >= req.redirects {
            return Err(fail(
                ErrorClass::RedirectLimit,
                format!(
                    "gave up after {} redirect(s): {} answered {} to {location}; fix the redirect loop or raise `http.redirects`",
                    p.redirects, p.url, resp.status
                ),
            ));
        }
        let next = p.url.join(location).map_err(|e| {
            fail(
                ErrorClass::InvalidResponse,
                format!(
                    "{} redirected to {location:?}, which is not a valid URL ({e})",
                    p.url
                ),
            )
        })?;
        if next.origin() != p.url.origin() {
            // Credentials are for the origin they were written for.
            headers.remove(header::AUTHORIZATION);
            headers.remove(header::COOKIE);
            for h in req.headers.iter().filter(|h| h.secret) {
                headers.remove(&h.name);
            }
        }
        let see_other = matches!(resp.status.as_u16(), 301..=303);
        if see_other && p.method != Method::HEAD {
            p.method = Method::GET;
            body = Bytes::new();
            headers.remove(header::CONTENT_TYPE);
        }
        p.end_hop();
        p.url = next;
        p.redirects += 1;
    }
}

fn render_headers(req: &HttpRequest, trace_id: &str, vars: &Vars) -> Result<HeaderMap, ProbeError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    if !req.keep_alive {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if matches!(req.body, Some(Body::Json(_))) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for h in &req.headers {
        let field = format!("http.headers.{}", h.name);
        let value = h
            .value
            .render_vars(vars)
            .map_err(|e| fail(ErrorClass::Config, format!("{field}: {e}")))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            fail(
                ErrorClass::Config,
                format!("{field}: the value has characters not allowed in a header (a newline?)"),
            )
        })?;
        value.set_sensitive(h.secret);
        headers.insert(h.name.clone(), value);
    }
    let span_id = rand::random::<u64>().max(1);
    let traceparent = format!("00-{trace_id}-{span_id:016x}-01");
    if let Ok(v) = HeaderValue::from_str(&traceparent) {
        headers.insert("traceparent", v);
    }
    Ok(headers)
}

fn render_body(req: &HttpRequest, vars: &Vars) -> Result<Bytes, ProbeError> {
    let (field, t) = match &req.body {
        None => return Ok(Bytes::new()),
        Some(Body::Text(t)) => ("http.body", t),
        Some(Body::Json(t)) => ("http.json", t),
    };
    t.render_vars(vars)
        .map(Bytes::from)
        .map_err(|e| fail(ErrorClass::Config, format!("{field}: {e}")))
}

/// A boxed stream, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One request on a new connection.
async fn hop(
    req: &HttpRequest,
    ctx: HttpCtx<'_>,
    headers: &HeaderMap,
    body: Bytes,
    p: &mut Progress,
) -> Result<Response, ProbeError> {
    let url = p.url.clone();
    let host = url
        .host_str()
        .ok_or_else(|| fail(ErrorClass::Config, format!("{url} has no host")))?
        .to_string();
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(fail(
                ErrorClass::InvalidResponse,
                format!("cannot follow to {url}: scheme {other:?} is not http or https"),
            ))
        }
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let key = req
        .keep_alive
        .then(|| format!("{}|{}", ctx.probe, url.origin().ascii_serialization()));
    if let Some(idle) = key.as_deref().and_then(|k| ctx.pool.take(k)) {
        if idle.sender.is_ready() {
            // A reused connection: no DNS, connect or TLS this time, so those
            // phases stay None (nothing measured, nothing added to their histograms).
            p.remote_addr = idle.remote_addr;
            p.cert = idle.cert.clone();
            idle.clock.reset();
            p.enter(Stage::FirstByte);
            return send(
                req,
                ctx,
                headers,
                body,
                p,
                idle.sender,
                idle.clock,
                key,
                &url,
            )
            .await;
        }
    }
    let addrs = resolve(&host, port, p).await?;
    let tcp = connect(&addrs, &url, p).await?;
    let clock = WireClock::new(Instant::now());
    let stream: Box<dyn Stream> = if https {
        p.enter(Stage::Tls);
        let (config, slot) = ctx
            .tls
            .for_connection(req.tls_verify)
            .map_err(|e| fail(ErrorClass::Tls, e))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
            fail(
                ErrorClass::Config,
                format!("{host:?} is not a valid TLS server name ({e})"),
            )
        })?;
        let result = connector.connect(name, tcp).await;
        p.cert = slot.info(Utc::now());
        let tls_stream = result.map_err(|e| fail(ErrorClass::Tls, tls::explain(&e, &host)))?;
        p.hop.tls_us = Some(micros(p.stage_started.elapsed()));
        Box::new(TimedIo::new(tls_stream, clock.clone()))
    } else {
        // http://: no TLS phase (None, not 0).
        Box::new(TimedIo::new(tcp, clock.clone()))
    };
    p.enter(Stage::FirstByte);
    let (sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| classify_hyper(&e, &url))?;
    tokio::spawn(async move {
        // The connection's own errors surface through the request future.
        let _ = conn.await;
    });
    send(req, ctx, headers, body, p, sender, clock, key, &url).await
}

/// Sends the request on a connection, reads the response, and keeps the
/// connection for the next run when keep-alive is on and the server allows it.
#[allow(clippy::too_many_arguments)]
async fn send(
    req: &HttpRequest,
    ctx: HttpCtx<'_>,
    headers: &HeaderMap,
    body: Bytes,
    p: &mut Progress,
    mut sender: http1::SendRequest<Full<Bytes>>,
    clock: Arc<WireClock>,
    key: Option<String>,
    url: &Url,
) -> Result<Response, ProbeError> {
    let url = url.clone();
    let request = build_request(&p.method, &url, headers, body)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| classify_hyper(&e, &url))?;
    let first_byte_at = clock.first_read().unwrap_or_else(Instant::now);
    let written_at = clock.last_write().unwrap_or(p.stage_started);
    p.hop.first_byte_us = Some(micros(first_byte_at.saturating_duration_since(written_at)));
    p.status = Some(response.status().as_u16());
    p.enter(Stage::Transfer);
    p.stage_started = first_byte_at;
    let (parts, mut incoming) = response.into_parts();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| classify_hyper(&e, &url))?;
        if let Ok(data) = frame.into_data() {
            p.response_bytes += data.len() as u64;
            if p.response_bytes > req.max_body_bytes {
                p.hop.transfer_us = Some(micros(first_byte_at.elapsed()));
                return Err(fail(
                    ErrorClass::BodyTooLarge,
                    format!(
                        "the body of {url} passed the limit of {} bytes (http.max_body_bytes) and was not read further; raise the limit or probe a smaller resource",
                        req.max_body_bytes
                    ),
                ));
            }
            body.extend_from_slice(&data);
        }
    }
    p.hop.transfer_us = Some(micros(first_byte_at.elapsed()));
    let server_closes = parts
        .headers
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if let (Some(key), false) = (key, server_closes) {
        ctx.pool.put(
            key,
            Idle {
                sender,
                clock,
                remote_addr: p.remote_addr,
                cert: p.cert.clone(),
            },
        );
    }
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(body),
    })
}

fn build_request(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, ProbeError> {
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .body(Full::new(body))
        .map_err(|e| fail(ErrorClass::Config, format!("cannot build the request: {e}")))?;
    *request.headers_mut() = headers.clone();
    let host = HeaderValue::from_str(&host)
        .map_err(|_| fail(ErrorClass::Config, format!("bad host in {url}")))?;
    request.headers_mut().insert(header::HOST, host);
    Ok(request)
}

async fn resolve(host: &str, port: u16, p: &mut Progress) -> Result<Vec<SocketAddr>, ProbeError> {
    p.enter(Stage::Dns);
    let result = net::resolve(host, port, "the URL").await;
    let looked_up = !matches!(result, Ok((_, false)));
    // An IP address is not looked up: no DNS phase (None, not 0).
    p.hop.dns_us = looked_up.then(|| micros(p.stage_started.elapsed()));
    result.map(|(addrs, _)| addrs)
}

async fn connect(
    addrs: &[SocketAddr],
    url: &Url,
    p: &mut Progress,
) -> Result<TcpStream, ProbeError> {
    p.enter(Stage::Connect);
    let result = net::connect(addrs, url.as_str(), &mut p.remote_addr).await;
    p.hop.connect_us = Some(micros(p.stage_started.elapsed()));
    result
}

/// The one place that turns hyper's errors into error classes.
fn classify_hyper(e: &hyper::Error, url: &Url) -> ProbeError {
    let detail = std::error::Error::source(e)
        .map(|s| format!("{e}: {s}"))
        .unwrap_or_else(|| e.to_string());
    if e.is_parse() || e.is_parse_status() {
        fail(
            ErrorClass::InvalidResponse,
            format!(
                "{url} did not answer with valid HTTP ({detail}); is this port serving HTTP{}?",
                if url.scheme() == "http" {
                    " (or does it expect https://)"
                } else {
                    ""
                }
            ),
        )
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        fail(
            ErrorClass::InvalidResponse,
            format!("{url} closed the connection before a complete response ({detail})"),
        )
    } else {
        fail(
            ErrorClass::InvalidResponse,
            format!("the exchange with {url} failed ({detail})"),
        )
    }
}
