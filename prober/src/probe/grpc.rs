//! The gRPC check: the standard health check, `grpc.health.v1.Health/Check`
//! for `grpc.service`, with tonic-health's generated client.
//!
//! We set up the connection ourselves, so each phase is its own measurement:
//! DNS (the system resolver, 0 for an IP address), TCP connect, TLS (rustls
//! from [`TlsClients`], ALPN `h2`; 0 without TLS), then first byte: the health
//! request sent → its response. tonic's channel then speaks HTTP/2 over that
//! one connection (its own TLS stays off, so no second TLS stack is linked).
//!
//! SERVING passes. NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN, and the NOT_FOUND
//! status a server gives for a service it does not know, are `assertion`
//! failures; any other gRPC error status is `invalid_response`.

use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::transport::{Endpoint, Uri};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::net::{self, fail};
use super::tls::{self, TlsClients};
use super::{Kind, Progress, Stage, USER_AGENT};
use crate::config::probe::GrpcCheck;
use crate::run::{AssertionResult, ErrorClass, ProbeError};

/// The one method this check calls.
const METHOD: &str = "grpc.health.v1.Health/Check";

/// What the health check answered.
enum Answer {
    /// A response with this serving status.
    Status(ServingStatus),
    /// An error status.
    Error(Status),
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// The `grpc` kind: a health check.
pub struct GrpcKind<'a> {
    check: &'a GrpcCheck,
    tls: &'a TlsClients,
    timeout: Duration,
}

impl<'a> GrpcKind<'a> {
    pub fn new(check: &'a GrpcCheck, tls: &'a TlsClients, timeout: Duration) -> GrpcKind<'a> {
        GrpcKind {
            check,
            tls,
            timeout,
        }
    }
}

impl Kind for GrpcKind<'_> {
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
        let check = self.check;
        let target = authority(&check.host, check.port);
        p.request = format!(
            "{METHOD} {:?} {}://{target}",
            check.service,
            if check.tls { "https" } else { "http" }
        );
        p.target = target.clone();
        let answer = health_check(check, self.tls, &target, p).await?;
        // tonic enforces the deadline it sends (grpc-timeout), and at the same
        // instant as the runner: a call it cancelled then is the attempt's timeout.
        let cancelled = matches!(&answer, Answer::Error(s) if s.code() == Code::Cancelled);
        if cancelled && p.remaining().is_zero() {
            return Err(self.timed_out(p));
        }
        judge(check, &target, answer, p).map_or(Ok(()), Err)
    }

    fn timed_out(&self, p: &Progress) -> ProbeError {
        let at = match p.remote_addr {
            Some(a) if a.to_string() != p.target => format!("{} ({a})", p.target),
            _ => p.target.clone(),
        };
        let doing = match p.stage() {
            Stage::FirstByte => "waiting for the health check's response",
            other => other.describe(),
        };
        fail(
            ErrorClass::Timeout,
            format!(
                "no health check answer within the timeout of {} (still {doing} at {at}); the server is slow or hung — raise `timeout` only if that latency is acceptable",
                humantime::format_duration(self.timeout),
            ),
        )
    }
}

/// Turns the answer into assertions, info and the run's error, if any.
fn judge(check: &GrpcCheck, target: &str, answer: Answer, p: &mut Progress) -> Option<ProbeError> {
    let service = if check.service.is_empty() {
        "the server as a whole (service \"\")".to_string()
    } else {
        format!("service {:?}", check.service)
    };
    match answer {
        Answer::Status(status) => {
            let name = status.as_str_name();
            p.info.insert("grpc.status".into(), name.into());
            let passed = status == ServingStatus::Serving;
            p.assertions.push(AssertionResult {
                check: "grpc health status".into(),
                passed,
                expected: "SERVING".into(),
                actual: name.into(),
            });
            (!passed).then(|| {
                fail(
                    ErrorClass::Assertion,
                    format!("grpc health status: expected SERVING, got {name} for {service} at {target}"),
                )
            })
        }
        Answer::Error(status) => {
            let code = code_name(status.code());
            p.info.insert("grpc.code".into(), code.into());
            let detail = if status.message().is_empty() {
                code.to_string()
            } else {
                format!("{code}: {}", status.message())
            };
            if status.code() == Code::DeadlineExceeded {
                return Some(fail(
                    ErrorClass::Timeout,
                    format!("the health check of {service} at {target} ran out of time ({detail}); the server is slow or hung"),
                ));
            }
            if status.code() == Code::NotFound {
                p.assertions.push(AssertionResult {
                    check: "grpc health status".into(),
                    passed: false,
                    expected: "SERVING".into(),
                    actual: format!("unknown service ({detail})"),
                });
                return Some(fail(
                    ErrorClass::Assertion,
                    format!("grpc health status: expected SERVING, got {code} ({:?}): the health service at {target} does not know {service}; check `grpc.service` (the full name, e.g. package.v1.Service) and that the server registers it", status.message()),
                ));
            }
            let source = causes(&status, status.message());
            let hint = match status.code() {
                Code::Unimplemented => "the server does not offer grpc.health.v1.Health; enable the standard health service on it",
                Code::Unauthenticated | Code::PermissionDenied => "the health service asks for credentials; this check sends none",
                Code::Unavailable | Code::Unknown | Code::Internal => {
                    if check.tls {
                        "is this a gRPC port, and does it serve TLS?"
                    } else {
                        "is this a gRPC port? If it serves TLS, set `grpc.tls: true`"
                    }
                }
                _ => "see the server's logs",
            };
            Some(fail(
                ErrorClass::InvalidResponse,
                format!("the health check of {service} at {target} failed with gRPC status {detail}{source}; {hint}"),
            ))
        }
    }
}

/// A stream, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Hands the connection we made (and timed) to tonic's channel, once.
struct Handover(Option<Box<dyn Stream>>);

impl tonic::codegen::Service<Uri> for Handover {
    type Response = TokioIo<Box<dyn Stream>>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        std::future::ready(self.0.take().map(TokioIo::new).ok_or_else(|| {
            std::io::Error::other("the connection was lost (a run does not reconnect)")
        }))
    }
}

async fn health_check(
    check: &GrpcCheck,
    tls: &TlsClients,
    target: &str,
    p: &mut Progress,
) -> Result<Answer, ProbeError> {
    let addrs = net::resolve_timed(&check.host, check.port, "`grpc.target`", p).await?;
    let tcp = net::connect_timed(&addrs, &format!("gRPC target {target}"), p).await?;
    let stream: Box<dyn Stream> = if check.tls {
        Box::new(handshake(check, tls, tcp, p).await?)
    } else {
        // Plaintext: no TLS phase (None, not 0).
        Box::new(tcp)
    };
    p.enter(Stage::Http2);
    let scheme = if check.tls { "https" } else { "http" };
    // The endpoint's URI only names the connection (always http, so tonic never
    // tries TLS itself); the origin is what the requests carry.
    let origin = Uri::try_from(format!("{scheme}://{target}")).map_err(|e| {
        fail(
            ErrorClass::Config,
            format!("{target:?} is not a valid gRPC target ({e})"),
        )
    })?;
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .and_then(|e| e.user_agent(USER_AGENT))
        .map_err(|e| {
            fail(
                ErrorClass::Config,
                format!("{target:?} is not a valid gRPC target ({e})"),
            )
        })?
        .origin(origin);
    let channel = endpoint
        .connect_with_connector(Handover(Some(stream)))
        .await
        .map_err(|e| {
            fail(
                ErrorClass::InvalidResponse,
                format!(
                    "could not start HTTP/2 with {target} ({e}{}); is this a gRPC port?",
                    causes(&e, "")
                ),
            )
        })?;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: check.service.clone(),
    });
    // Tells the server how long we wait, so it can give up too.
    request.set_timeout(p.remaining());
    if let Some(v) = p.traceparent().and_then(|t| t.parse().ok()) {
        request.metadata_mut().insert("traceparent", v);
    }
    p.enter(Stage::FirstByte);
    let result = HealthClient::new(channel).check(request).await;
    p.hop.first_byte_us = Some(p.stage_us());
    Ok(match result {
        Ok(response) => Answer::Status(
            ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown),
        ),
        Err(status) => Answer::Error(status),
    })
}

async fn handshake(
    check: &GrpcCheck,
    tls: &TlsClients,
    tcp: TcpStream,
    p: &mut Progress,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
    let opts = crate::config::probe::TlsOptions::default();
    let stream = tls::handshake_timed(tls, check.tls_verify, &opts, &[b"h2"], &check.host, tcp, p)
        .await
        .map_err(|mut e| {
            e.message = e.message.replace("http.tls_verify", "grpc.tls_verify");
            e
        })?;
    Ok(stream)
}

/// The causes under an error, each once and not repeating `said`: ` (a: b)`, or nothing.
fn causes(e: &(dyn std::error::Error + 'static), said: &str) -> String {
    let mut seen = vec![e.to_string(), said.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !seen.contains(&text) {
            seen.push(text);
        }
        next = cause.source();
    }
    if seen.len() > 2 {
        format!(" ({})", seen[2..].join(": "))
    } else {
        String::new()
    }
}

/// The canonical name of a gRPC status code, as in `grpc.code`: NOT_FOUND, UNAVAILABLE, …
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
