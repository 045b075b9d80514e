//! What the OpenAPI document states about every operation, added in one place
//! after utoipa has generated it from the handlers: the bearer scheme and which
//! operations take it, the error envelope for every error status an operation
//! can answer (the layers of `contract.rs` make them all JSON), and the
//! `x-request-id` header on every answer.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Schema, Type};
use utoipa::Modify;

/// The security scheme's name in the document.
pub const BEARER: &str = "bearer";

/// The document's additions; see the module's doc.
pub struct Contract;

impl Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The API token: `api_token` in prober.yaml or PROBER_API_TOKEN.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("get", item.get.as_mut()),
                ("post", item.post.as_mut()),
                ("put", item.put.as_mut()),
                ("delete", item.delete.as_mut()),
                ("patch", item.patch.as_mut()),
            ];
            for (method, op) in ops {
                if let Some(op) = op {
                    // The guard's own rule (auth.rs), with reads public as by default:
                    // the document cannot drift from what is enforced.
                    let m = axum::http::Method::from_bytes(method.to_uppercase().as_bytes())
                        .unwrap_or(axum::http::Method::GET);
                    let token = super::auth::required_scope(&m, path, true);
                    complete(op, path, token);
                }
            }
        }
    }
}

/// Adds the security requirement, the error statuses and the request id header to one operation.
fn complete(op: &mut Operation, path: &str, scope: Option<crate::config::access::Scope>) {
    let token = scope.is_some();
    if let Some(scope) = scope {
        // The scope the token needs, as the requirement's one entry.
        op.security = Some(vec![SecurityRequirement::new(BEARER, [scope.as_str()])]);
    }
    // A NUL in the path or query is refused (contract.rs): say so on every free string.
    for p in op.parameters.iter_mut().flatten() {
        if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
            // Plain strings and optional ones (`["string", "null"]`) alike.
            let stringy = o.schema_type == Type::String.into()
                || o.schema_type
                    == utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]);
            if o.pattern.is_none() && o.format.is_none() && stringy {
                o.pattern = Some("^[^\\x00]*$".to_string());
            }
        }
    }
    let takes_input =
        op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
    let api = path.starts_with("/api/");
    let mut errors: Vec<(&str, &str)> = Vec::new();
    if takes_input {
        errors.push((
            "400",
            "Bad input: the message says which parameter and why.",
        ));
    }
    if token {
        errors.push(("401", "No token, or a wrong one."));
        errors.push(("403", "No token is configured: the endpoint is refused."));
    }
    if path.contains('{') {
        errors.push(("404", "No such probe or silence."));
    }
    if op.request_body.is_some() {
        errors.push((
            "413",
            "The body is larger than 65536 bytes (64 KiB), the limit of every endpoint.",
        ));
        errors.push((
            "415",
            "The body is not sent as Content-Type: application/json.",
        ));
        errors.push((
            "422",
            "The JSON does not have the fields and types the endpoint takes.",
        ));
    }
    errors.push((
        "500",
        "An internal error; logged with the answer's x-request-id.",
    ));
    if api {
        errors.push(("503", "The history store (Postgres) is unavailable."));
    }
    for (status, description) in errors {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build(),
                )
            });
    }
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(r) = response {
            r.headers.insert(
                super::REQUEST_ID.to_string(),
                HeaderBuilder::new()
                    .description(Some(
                        "The request's id: the client's when it sent a sane one (1-128 letters, digits, - _ . :), else a new UUID; also in the request's log lines.",
                    ))
                    .build(),
            );
        }
    }
}

/// `/metrics`, for the document only (the handler is `api::metrics`, over `telemetry::metrics::respond`).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4: per-probe counters, histograms and the daemon's own series. OpenMetrics 1.0 (`application/openmetrics-text`) when `Accept` prefers it, with a recent run's trace id as the exemplar of each probe's duration histogram.", content_type = "text/plain", body = String),
        (status = 503, description = "Too many scrapes at once; `Retry-After` says when to try again.", content_type = "text/plain", body = String)))]
#[allow(dead_code)]
pub async fn metrics() {}
