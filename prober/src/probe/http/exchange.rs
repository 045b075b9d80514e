//! One HTTP request, following redirects as allowed, on a new or kept-alive
//! connection; each phase written into the attempt's [`Progress`] as it ends.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use url::Url;

use super::pool::{Idle, Sender};
use super::HttpCtx;
use crate::config::probe::{Body, HttpRequest, HttpVersion, IpVersion};
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
    if let Some(oauth) = &req.oauth2 {
        let token = ctx.tokens.token(ctx.probe, oauth, vars, p).await?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            fail(
                ErrorClass::InvalidResponse,
                "the OAuth2 token has characters not allowed in a header",
            )
        })?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
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
    if let Some(auth) = &req.basic_auth {
        use base64::Engine;
        let part = |t: &crate::config::template::Template, field: &str| {
            t.render_vars(vars)
                .map_err(|e| fail(ErrorClass::Config, format!("http.basic_auth.{field}: {e}")))
        };
        let pair = format!(
            "{}:{}",
            part(&auth.username, "username")?,
            part(&auth.password, "password")?
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
            fail(
                ErrorClass::Config,
                "http.basic_auth: not a valid header value",
            )
        })?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
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
    sender: Sender,
    clock: Arc<WireClock>,
    /// Where it goes back to after the response, with keep-alive.
    key: Option<String>,
    /// What the connection agreed on (TLS version and cipher), for `info`.
    facts: Vec<(&'static str, String)>,
}

impl Conn {
    /// Writes the connection's facts and HTTP version into the run's `info`.
    fn record(&self, p: &mut Progress) {
        for (k, v) in &self.facts {
            p.info.insert((*k).to_string(), v.clone());
        }
        p.info
            .insert("http.version".into(), self.sender.version().into());
    }
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
    conn.record(p);
    let request = build_request(method, url, headers, body, conn.sender.is_h2())?;
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
        facts: idle.facts,
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
    let proxied = match req.proxy.as_ref().or(ctx.default_proxy) {
        Some(proxy) => super::proxy::through(proxy, url, &host, port, p).await?,
        None => None,
    };
    let tcp = match proxied {
        Some(tcp) => tcp,
        None => {
            let addrs = addresses(req, &host, port, p).await?;
            net::connect_timed_from(&addrs, req.source_address, url.as_str(), p).await?
        }
    };
    let clock = WireClock::new(Instant::now());
    let mut facts = Vec::new();
    let (stream, h2): (Box<dyn Stream>, bool) = if https {
        let alpn: &[&[u8]] = match req.version {
            HttpVersion::Auto => &[b"h2", b"http/1.1"],
            HttpVersion::Http1 => &[b"http/1.1"],
            HttpVersion::Http2 => &[b"h2"],
        };
        let sni = req.tls.server_name.clone().unwrap_or_else(|| host.clone());
        let tls_stream =
            tls::handshake_timed(ctx.tls, req.tls_verify, &req.tls, alpn, &sni, tcp, p).await?;
        let session = tls_stream.get_ref().1;
        facts = tls::negotiated(session);
        let h2 = session.alpn_protocol() == Some(b"h2");
        if req.version == HttpVersion::Http2 && !h2 {
            return Err(fail(
                ErrorClass::Tls,
                format!("{host} did not choose HTTP/2 in TLS's ALPN, and `http.version` is \"2\"; the server speaks HTTP/1.1 here: use `version: auto` or \"1.1\""),
            ));
        }
        (Box::new(TimedIo::new(tls_stream, clock.clone())), h2)
    } else {
        // http://: no TLS phase (None, not 0); HTTP/2 only with prior knowledge (h2c).
        let h2c = req.version == HttpVersion::Http2;
        (Box::new(TimedIo::new(tcp, clock.clone())), h2c)
    };
    p.enter(Stage::FirstByte);
    let io = TokioIo::new(stream);
    let sender = if h2 {
        let (sender, conn) = http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), io)
            .await
            .map_err(|e| classify_hyper(&e, url))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Sender::H2(sender)
    } else {
        let (sender, conn) = http1::handshake::<_, Full<Bytes>>(io)
            .await
            .map_err(|e| classify_hyper(&e, url))?;
        tokio::spawn(async move {
            // The connection's own errors surface through the request future.
            let _ = conn.await;
        });
        Sender::H1(sender)
    };
    Ok(Conn {
        sender,
        clock,
        key,
        facts,
    })
}

/// The addresses to connect to: pinned by `http.resolve`, else looked up;
/// only those of `http.ip_version`'s family.
async fn addresses(
    req: &HttpRequest,
    host: &str,
    port: u16,
    p: &mut Progress,
) -> Result<Vec<std::net::SocketAddr>, ProbeError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let pinned = (req.resolve.iter()).find(|(h, _)| h.eq_ignore_ascii_case(bare));
    let mut addrs = match pinned {
        // Pinned: no lookup, so no DNS phase.
        Some((_, ip)) => vec![std::net::SocketAddr::new(*ip, port)],
        None => net::resolve_timed(host, port, "the URL", p).await?,
    };
    let found = addrs.len();
    addrs.retain(|a| req.ip_version.admits(&a.ip()));
    if addrs.is_empty() {
        let family = if req.ip_version == IpVersion::V4 {
            "IPv4"
        } else {
            "IPv6"
        };
        return Err(fail(
            ErrorClass::Dns,
            format!("{host} has no {family} address ({found} of the other family), and `http.ip_version` allows only {family}; add the record, or set `ip_version: any`"),
        ));
    }
    Ok(addrs)
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
    let sent_at = Instant::now();
    let response = (conn.sender.send(request).await).map_err(|e| classify_hyper(&e, url))?;
    // HTTP/2 interleaves the connection's own frames (SETTINGS, WINDOW_UPDATE,
    // PING) with the response, so the wire's first read may not be the
    // response's: there, the first byte is when the response's headers are in.
    let (first_byte_at, written_at) = if conn.sender.is_h2() {
        (Instant::now(), sent_at)
    } else {
        (
            conn.clock.first_read().unwrap_or_else(Instant::now),
            conn.clock.last_write().unwrap_or(p.stage_started()),
        )
    };
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
            facts: conn.facts,
        };
        ctx.pool.put(key, idle);
    }
    let encoding = (parts.headers.get(header::CONTENT_ENCODING)).and_then(|v| v.to_str().ok());
    let body = match encoding.filter(|_| !body.is_empty()) {
        None => body,
        Some(enc) => match super::decode::decode(enc, &body, req.max_body_bytes, url)? {
            None => body,
            Some(decoded) => {
                // The wire's size stays `response_bytes`; the decoded size is a fact of the run.
                p.info
                    .insert("http.content_encoding".into(), enc.to_string());
                p.info
                    .insert("http.decoded_bytes".into(), decoded.len().to_string());
                decoded
            }
        },
    };
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(body),
    })
}

/// The request for one hop. HTTP/2 takes the whole URL (its `:scheme` and
/// `:authority`) and no connection-specific headers; HTTP/1.1 the path and `Host`.
fn build_request(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: Bytes,
    h2: bool,
) -> Result<Request<Full<Bytes>>, ProbeError> {
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    if h2 {
        let mut whole = url.clone();
        whole.set_fragment(None);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(whole.as_str())
            .version(http::Version::HTTP_2)
            .body(Full::new(body))
            .map_err(|e| fail(ErrorClass::Config, format!("cannot build the request: {e}")))?;
        *request.headers_mut() = headers.clone();
        request.headers_mut().remove(header::CONNECTION);
        return Ok(request);
    }
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

/// A TLS error behind a hyper error: with TLS 1.3 the server judges the
/// client's certificate after the client's handshake is done, so its refusal
/// arrives as an alert on the first read.
fn tls_cause(e: &hyper::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let inner = (err.downcast_ref::<std::io::Error>())
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>());
        if let Some(t) = err.downcast_ref::<rustls::Error>().or(inner) {
            return Some(t.to_string());
        }
        cur = err.source();
    }
    None
}

/// The one place that turns hyper's errors into error classes.
fn classify_hyper(e: &hyper::Error, url: &Url) -> ProbeError {
    let detail = std::error::Error::source(e)
        .map(|s| format!("{e}: {s}"))
        .unwrap_or_else(|| e.to_string());
    // HTTP/2's errors carry the TLS alert only in their text.
    let alert = (detail.contains("received fatal alert")).then(|| detail.clone());
    if let Some(t) = tls_cause(e).or(alert) {
        let client_cert = [
            "CertificateRequired",
            "BadCertificate",
            "UnknownCA",
            "CertificateUnknown",
            "AccessDenied",
        ];
        let hint = if client_cert.iter().any(|c| t.contains(c)) {
            "the server refused this client's certificate (or its absence): set `http.tls.cert_file` and `http.tls.key_file` to a certificate its CA signed"
        } else {
            "check the server's TLS settings and logs"
        };
        return fail(
            ErrorClass::Tls,
            format!("the TLS session with {url} failed after the handshake ({t}); {hint}"),
        );
    }
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
