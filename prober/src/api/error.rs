//! The one API error type: `{"error": {"code", "message"}}` with the right status.
//!
//! An internal failure (the store, a task that died) is logged here with its
//! whole chain of causes, the request id and the route, and answered with an
//! opaque message naming the request id: the database's own words (table
//! names, SQL, addresses) never reach a client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::contract::current_request;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<String>,
}

/// The JSON body of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`, `payload_too_large`, `unsupported_media_type`, `unprocessable_entity`, `invalid_probes`, `internal`, `store_unavailable`.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
    /// Individual problems (for `invalid_probes`: one per line, with file:line).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn unknown_probe(name: &str) -> ApiError {
        ApiError::not_found(format!(
            "no probe named {name:?}; GET /api/v1/probes lists them"
        ))
    }
}

/// A store failure is a known condition (Postgres away): 503, logged with
/// its chain; the answer names the request id, never the database's words.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let request = log_failure("the history store failed", &e);
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "store_unavailable",
            message: format!(
                "the history store is unavailable; live data is still served by /api/v1/probes ({request}; the server log has the cause)"
            ),
            details: Vec::new(),
        }
    }
}

impl ApiError {
    /// 500 for a failure inside the prober (`what` failed because of `e`):
    /// logged with its chain, answered with the request id only.
    pub fn internal(what: &str, e: &(dyn std::error::Error + 'static)) -> ApiError {
        let request = log_failure(what, e);
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: format!(
                "{what}; this is a fault of the prober, please report it ({request}; the server log has the cause)"
            ),
            details: Vec::new(),
        }
    }
}

/// Logs `what` failed with `e`'s whole chain, the request id and the route;
/// returns how the answer names the request (`request <id>`).
fn log_failure(what: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let chain = error_chain(e);
    match current_request() {
        Some(r) => {
            tracing::error!(request_id = %r.id, route = %r.route, error = %chain, "{what}");
            format!("request {}", r.id)
        }
        None => {
            tracing::error!(error = %chain, "{what}");
            "no request id".to_string()
        }
    }
}

/// `e` and every error under it, joined with `: `; a cause whose text its
/// wrapper already shows is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("relation \"runs\" does not exist")]
    struct Inner;

    #[test]
    fn the_chain_joins_every_cause_once() {
        assert_eq!(
            error_chain(&Outer(Inner)),
            "outer failed: relation \"runs\" does not exist"
        );
    }

    /// What a test's log lines were written to.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_store_error_is_logged_with_its_chain_and_request_and_answered_without_them() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let e = crate::store::err(
            "reading the runs of \"checkout\"",
            sqlx::Error::Protocol("relation \"runs\" does not exist".into()),
        );
        let request = crate::api::contract::CurrentRequest {
            id: "req-42".into(),
            route: "GET /api/v1/probes/checkout/runs".into(),
        };

        let answer = tracing::subscriber::with_default(subscriber, || {
            crate::api::contract::with_request(request, || ApiError::from(e))
        });

        let log = String::from_utf8(log.0.lock().clone()).unwrap();
        assert!(log.contains("req-42"), "{log}");
        assert!(log.contains("GET /api/v1/probes/checkout/runs"), "{log}");
        assert!(log.contains("reading the runs of"), "{log}");
        assert!(log.contains("relation"), "the cause is in the log: {log}");
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.code, "store_unavailable");
        assert!(
            answer.message.contains("request req-42"),
            "{}",
            answer.message
        );
        assert!(!answer.message.contains("relation"), "{}", answer.message);
        assert!(!answer.message.contains("checkout"), "{}", answer.message);
    }

    #[test]
    fn an_internal_error_answers_without_its_cause() {
        let e = ApiError::internal("the reload task failed", &Outer(Inner));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.code, "internal");
        assert!(!e.message.contains("relation"), "{}", e.message);
        assert!(!e.message.contains("outer failed"), "{}", e.message);
    }
}
