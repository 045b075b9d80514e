//! One HTTP request, following redirects as allowed, on a new or kept-alive
//! connection; each phase written into the attempt's [`Progress`] as it ends.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use url::Url;

use super::pool::Idle;
use super::HttpCtx;
use crate::config::probe::{Body, HttpRequest};
use crate::config::template::Vars;
use crate::probe::net::{self, fail, micros};
use crate::probe::timing::{TimedIo, WireClock};
use crate::probe::tls;
use crate::probe::{Progress, Stage, USER_AGENT};
use crate::run::{ErrorClass, ProbeError};

/// A response read to its end (or to the size limit).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
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

/// Sends the request (`${var}` placeholders filled from `vars`), following
/// redirects as allowed, and reads the final response. What it reaches is in `p`.
pub async fn exchange(
    req: &HttpRequest,
    ctx: HttpCtx<'_>,
    vars: &Vars,
    p: &mut Progress,
) -> Result<Response, ProbeError> {
    let mut url = render_url(req, vars)?;
    let mut method = req.method.clone();
    let mut headers = render_headers(req, p.traceparent().as_deref(), vars)?;
    let mut body = render_body(req, vars)?;
    loop {
        p.request = format!("{method} {url}");
        p.target = url.to_string();
        let resp = hop(req, ctx, &headers, body.clone(), &url, &method, p).await?;
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
                    "gave up after {} redirect(s): {url} answered {} to {location}; fix the redirect loop or raise `http.redirects`",
                    p.redirects, resp.status
                ),
            ));
        }
        let next = url.join(location).map_err(|e| {
            fail(
                ErrorClass::InvalidResponse,
                format!("{url} redirected to {location:?}, which is not a valid URL ({e})"),
            )
        })?;
        if next.origin() != url.origin() {
            // Credentials are for the origin they were written for.
            headers.remove(header::AUTHORIZATION);
            headers.remove(header::COOKIE);
            for h in req.headers.iter().filter(|h| h.secret) {
                headers.remove(&h.name);
            }
        }
        let see_other = matches!(resp.status.as_u16(), 301..=303);
        if see_other && method != Method::HEAD {
            method = Method::GET;
            body = Bytes::new();
            headers.remove(header::CONTENT_TYPE);
        }
        p.end_hop();
        url = next;
        p.redirects += 1;
    }
}

fn render_headers(
    req: &HttpRequest,
    traceparent: Option<&str>,
    vars: &Vars,
) -> Result<HeaderMap, ProbeError> {
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
    if let Some(v) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
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

/// A connection ready for the request, the clock on its wire, and its pool key.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    clock: Arc<WireClock>,
    /// Where it goes back to after the response, with keep-alive.
    key: Option<String>,
}

/// One request, on a kept-alive connection or a new one.
async fn hop(
    req: &HttpRequest,
    ctx: HttpCtx<'_>,
    headers: &HeaderMap,
    body: Bytes,
    url: &Url,
    method: &Method,
    p: &mut Progress,
) -> Result<Response, ProbeError> {
    let key = req
        .keep_alive
        .then(|| format!("{}|{}", ctx.probe, url.origin().ascii_serialization()));
    let conn = match key.as_deref().and_then(|k| ctx.pool.take(k)) {
        Some(idle) if idle.sender.is_ready() => reuse(idle, key, p),
        _ => open(req, ctx, url, key, p).await?,
    };
    let request = build_request(method, url, headers, body)?;
    send(req, ctx, request, conn, url, p).await
}

/// A kept-alive connection: no DNS, connect or TLS this time, so those phases
/// stay `None` (nothing measured, nothing added to their histograms).
fn reuse(idle: Idle, key: Option<String>, p: &mut Progress) -> Conn {
    p.remote_addr = idle.remote_addr;
    p.cert = idle.cert.clone();
    idle.clock.reset();
    p.enter(Stage::FirstByte);
    Conn {
        sender: idle.sender,
        clock: idle.clock,
        key,
    }
}

/// A new connection: resolve, connect, TLS for https, and the HTTP/1 handshake.
async fn open(
    req: &HttpRequest,
    ctx: HttpCtx<'_>,
    url: &Url,
    key: Option<String>,
    p: &mut Progress,
) -> Result<Conn, ProbeError> {
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
    let addrs = net::resolve_timed(&host, port, "the URL", p).await?;
    let tcp = net::connect_timed(&addrs, url.as_str(), p).await?;
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
        p.hop.tls_us = Some(p.stage_us());
        Box::new(TimedIo::new(tls_stream, clock.clone()))
    } else {
        // http://: no TLS phase (None, not 0).
        Box::new(TimedIo::new(tcp, clock.clone()))
    };
    p.enter(Stage::FirstByte);
    let (sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| classify_hyper(&e, url))?;
    tokio::spawn(async move {
        // The connection's own errors surface through the request future.
        let _ = conn.await;
    });
    Ok(Conn { sender, clock, key })
}

/// Sends the request on a connection, reads the response, and keeps the
/// connection for the next run when keep-alive is on and the server allows it.
async fn send(
    req: &HttpRequest,
    ctx: HttpCtx<'_>,
    request: Request<Full<Bytes>>,
    mut conn: Conn,
    url: &Url,
    p: &mut Progress,
) -> Result<Response, ProbeError> {
    let response = conn
        .sender
        .send_request(request)
        .await
        .map_err(|e| classify_hyper(&e, url))?;
    let first_byte_at = conn.clock.first_read().unwrap_or_else(Instant::now);
    let written_at = conn.clock.last_write().unwrap_or(p.stage_started());
    p.hop.first_byte_us = Some(micros(first_byte_at.saturating_duration_since(written_at)));
    p.status = Some(response.status().as_u16());
    p.enter_at(Stage::Transfer, first_byte_at);
    let (parts, mut incoming) = response.into_parts();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| classify_hyper(&e, url))?;
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
    if let (Some(key), false) = (conn.key, server_closes) {
        let idle = Idle {
            sender: conn.sender,
            clock: conn.clock,
            remote_addr: p.remote_addr,
            cert: p.cert.clone(),
        };
        ctx.pool.put(key, idle);
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
