//! Layers that keep every answer inside the API's contract, whatever a handler
//! or axum itself did: a request id on every answer and on the request's log
//! lines, a body limit on every route, every 4xx/5xx as the JSON envelope
//! (axum's own plain-text rejections, 404, 405, 413, 415, 422), and a handler
//! that panics answering the 500 envelope instead of closing the connection.
//!
//! Kept apart from the router (`mod.rs` calls [`layers`] once) so that routes
//! can change without touching this, and this without touching routes.

use std::any::Any;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use super::error::ApiError;

/// The largest request body any endpoint reads; larger ones answer 413.
pub const MAX_BODY_BYTES: usize = 65_536;

/// The header that carries the request id, in both directions.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id a client may send to have it echoed.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The most of a plain-text error body that is read to put into the envelope.
const MAX_PLAIN_ERROR_BYTES: usize = 4 * 1024;

/// Wraps the whole router: request id (outermost), panic catcher, body limit,
/// envelope (innermost, so it sees what the handlers answered). The router is
/// the fallback of an outer one, so the layers also see what axum adds around
/// the routes (a 405's `Allow` header).
pub fn layers(router: Router) -> Router {
    Router::new()
        .fallback_service(router)
        .layer(middleware::from_fn(no_nul))
        .layer(middleware::from_fn(envelope))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panic_answer))
        .layer(middleware::from_fn(request_id))
}

// === request id ===

/// An id the client may choose: 1–128 characters of letters, digits and `-_.:`,
/// so it is safe in a header and a log line.
fn sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The request being answered, as the error path names it.
#[derive(Debug, Clone)]
pub struct CurrentRequest {
    /// The request id, as answered in `x-request-id`.
    pub id: String,
    /// The method and path: `GET /api/v1/probes/checkout/runs`.
    pub route: String,
}

tokio::task_local! {
    /// Set for the whole of a request's handling by [`request_id`].
    static CURRENT: CurrentRequest;
}

/// The request the calling task is answering, if any: a handler's error path
/// uses it to log the request id and to name it in the answer.
pub fn current_request() -> Option<CurrentRequest> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `f` as if answering `request` (for tests of the error path).
#[cfg(test)]
pub(crate) fn with_request<R>(request: CurrentRequest, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(request, f)
}

/// Echoes a sane `x-request-id` or makes one (a UUID), runs the request in a
/// span that carries it (and with it as [`current_request`]), and puts it on
/// the answer.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let current = CurrentRequest {
        id: id.clone(),
        route: format!("{} {}", req.method(), req.uri().path()),
    };
    let mut res = CURRENT
        .scope(current, next.run(req).instrument(span.clone()))
        .await;
    span.in_scope(|| {
        if res.status().is_server_error() {
            tracing::warn!(status = res.status().as_u16(), "answered");
        } else {
            tracing::debug!(status = res.status().as_u16(), "answered");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}

// === NUL ===

/// Refuses a path or query with an encoded NUL (`%00`): no name, label or
/// key holds one, and Postgres refuses it in text, which would turn client
/// input into a 503.
async fn no_nul(req: Request, next: Next) -> Response {
    let nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    if nul(req.uri().path()) || req.uri().query().is_some_and(nul) {
        return ApiError::bad_request(
            "the URL holds a NUL character (%00), which no name, label or key may hold; remove it",
        )
        .into_response();
    }
    next.run(req).await
}

// === envelope ===

/// Whether an error answer is already what its client reads: the JSON
/// envelope, or a page's HTML (`ui/`) for a person at a browser. axum's own
/// rejections are plain text.
fn is_json(res: &Response) -> bool {
    res.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"))
}

/// The code and the advice for an error status that axum (not a handler) answered.
fn advice(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => (
            "bad_request",
            "check the parameters against /api/v1/openapi.json",
        ),
        StatusCode::NOT_FOUND => ("not_found", "see /api/v1/openapi.json for the endpoints"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not take that method; the Allow header lists those it takes",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the body is too large: request bodies are limited to 65536 bytes (64 KiB) on every endpoint",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => (
            "unprocessable_entity",
            "the JSON does not have the fields and types the endpoint takes; see /api/v1/openapi.json",
        ),
        s if s.is_server_error() => ("internal", "the error was logged with the request id"),
        _ => ("client_error", "see /api/v1/openapi.json"),
    }
}

/// Turns an error answer that is not JSON (axum's extractor rejections, 405,
/// 413, …) into the envelope, keeping its status and headers (e.g. `Allow`).
async fn envelope(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&res) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, advice) = advice(status);
    let mut message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    if status == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = parts.headers.get(ALLOW).and_then(|v| v.to_str().ok()) {
            message = format!("method not allowed here (allowed: {allow})");
        }
    }
    let answer = ApiError {
        status,
        code,
        message: format!("{message}; {advice}"),
        details: Vec::new(),
    }
    .into_response();
    let (new_parts, new_body) = answer.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    for (name, value) in new_parts.headers.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, Body::new(new_body))
}

/// A JSON body that could not be read, as the envelope with axum's status
/// (400 not JSON, 413 too large, 415 not `application/json`, 422 wrong
/// fields or types) and `example` as the advice.
pub fn json_rejection(e: JsonRejection, example: &str) -> ApiError {
    let status = e.status();
    let (code, advice) = advice(status);
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => advice.to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => format!("{}; {example}", e.body_text()),
        StatusCode::UNPROCESSABLE_ENTITY => format!(
            "the body does not have the fields this endpoint takes: {}; {example}",
            e.body_text()
        ),
        _ => format!("the body is not JSON: {}; {example}", e.body_text()),
    };
    ApiError {
        status,
        code,
        message,
        details: Vec::new(),
    }
}

// === panics ===

/// A handler panicked: the 500 envelope (the panic is logged with the request id).
fn panic_answer(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = %what, "an API handler panicked");
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message: "an internal error stopped this request; it was logged with this answer's x-request-id: please report it".to_string(),
        details: Vec::new(),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_echoed_only_when_sane() {
        assert!(sane_request_id("abc-123_x.y:z"));
        assert!(sane_request_id(&"a".repeat(MAX_REQUEST_ID_LEN)));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id(&"a".repeat(MAX_REQUEST_ID_LEN + 1)));
        assert!(!sane_request_id("a b"));
        assert!(!sane_request_id("a\u{7f}"));
        assert!(!sane_request_id("é"));
    }

    #[test]
    fn the_413_advice_states_the_limit() {
        assert!(advice(StatusCode::PAYLOAD_TOO_LARGE)
            .1
            .contains(&MAX_BODY_BYTES.to_string()));
    }

    /// Sends `GET path` to a router served on loopback; returns the raw answer.
    async fn get(router: Router, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        server.abort();
        String::from_utf8_lossy(&buf).to_string()
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_the_500_envelope_with_its_request_id() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let router = layers(Router::new().route("/boom", axum::routing::get(boom)));

        let answer = get(router, "/boom").await;

        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(answer.contains("\"code\":\"internal\""), "{answer}");
        assert!(answer.contains("x-request-id: "), "{answer}");
    }
}
