//! Who may call what: one middleware in front of every route.
//!
//! Each request needs a scope, decided by its method and path alone
//! ([`required_scope`]): `/healthz`, `/readyz`, `/metrics` and the OpenAPI
//! document need none; GETs under `/api/v1` need `read` when `api.public_read`
//! is false (and the audit log always needs `admin`); `POST …/probes/{name}/run`
//! needs `run`; every other method — reload, silences, and any write endpoint to
//! come — needs `admin`, so a new write route is protected without a line here.
//! Tokens are compared as SHA-256 digests, in constant time (`subtle`), against
//! every configured token. With no token configured a protected request is refused
//! (403) with how to set one: never open by default.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::config::access::{digest, NamedToken, Scope, LEGACY_TOKEN_NAME};
use crate::config::settings::Settings;
use crate::store::audit::AuditEntry;

/// The caller of a request that passed the guard: the token's name and the
/// scope the request needed (`None` for an open endpoint or an anonymous read).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub token: Option<String>,
    pub scope: Option<Scope>,
}

/// The scope `method path` needs; `None`: open to anyone.
pub fn required_scope(method: &Method, path: &str, public_read: bool) -> Option<Scope> {
    if super::ui::is_private_page(path) && (method == Method::GET || method == Method::HEAD) {
        return (!public_read).then_some(Scope::Read);
    }
    if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        if path == "/api/v1/audit" {
            return Some(Scope::Admin);
        }
        return (!public_read).then_some(Scope::Read);
    }
    let run_now = path
        .strip_prefix("/api/v1/probes/")
        .and_then(|rest| rest.strip_suffix("/run"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'));
    if method == Method::POST && run_now {
        Some(Scope::Run)
    } else {
        Some(Scope::Admin)
    }
}

/// Every configured token: `api.tokens`, then `api_token` as an admin token named `api_token`.
pub fn tokens(settings: &Settings) -> Vec<NamedToken> {
    let mut all = settings.api.tokens.clone();
    if let Some(t) = &settings.api_token {
        all.push(NamedToken::from_value(
            LEGACY_TOKEN_NAME,
            &t.0,
            Scope::Admin,
        ));
    }
    all
}

/// Whether a request changes something (and so goes to the audit log).
pub fn is_write(method: &Method) -> bool {
    method != Method::GET && method != Method::HEAD && method != Method::OPTIONS
}

/// A refused request: the answer, and the token's name when a known token lacked the scope.
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    pub token: Option<String>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal { error, token: None }
    }
}

/// Decides whether the request may proceed; `Ok` carries the caller.
pub fn authorize(
    settings: &Settings,
    method: &Method,
    path: &str,
    authorization: Option<&HeaderValue>,
) -> Result<Caller, Refusal> {
    let Some(need) = required_scope(method, path, settings.api.public_read) else {
        return Ok(Caller::default());
    };
    let what = format!("{method} {path} needs a token with scope {}", need.as_str());
    let all = tokens(settings);
    if all.is_empty() {
        return Err(Refusal::from(ApiError::forbidden(format!(
            "{what}, and no API token is configured, so it is refused: add one under api.tokens in prober.yaml (name, sha256 of the token, scopes) or set PROBER_API_TOKEN / --api-token (an admin token), restart, then send Authorization: Bearer <token>"
        ))));
    }
    let Some(header) = authorization else {
        return Err(unauthorized(format!(
            "{what}: send it as Authorization: Bearer <token>"
        )));
    };
    let given = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(given) = given else {
        return Err(unauthorized(format!(
            "{what}: the Authorization header is not `Bearer <token>`"
        )));
    };
    let d = digest(given);
    // Compare with every token (no early exit), digest against digest.
    let mut found: Option<&NamedToken> = None;
    for t in &all {
        let equal: bool = t.sha256.ct_eq(&d).into();
        if equal && found.is_none() {
            found = Some(t);
        }
    }
    let Some(token) = found else {
        return Err(unauthorized(format!(
            "{what}: the bearer token matches no configured token; check the token you send"
        )));
    };
    if token.scope < need {
        return Err(Refusal {
            error: ApiError::forbidden(format!(
                "{what}; token {:?} has scope {}: use a token with scope {} (configured under api.tokens in prober.yaml)",
                token.name,
                token.scope.as_str(),
                need.as_str()
            )),
            token: Some(token.name.clone()),
        });
    }
    Ok(Caller {
        token: Some(token.name.clone()),
        scope: Some(need),
    })
}

fn unauthorized(message: String) -> Refusal {
    Refusal::from(ApiError::unauthorized(message))
}

/// The middleware: refuses or passes the request (with its [`Caller`] as an
/// extension), and puts every write, accepted or refused, in the audit log.
pub async fn guard(State(core): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let decision = authorize(
        &core.settings,
        &method,
        &path,
        req.headers().get(AUTHORIZATION),
    );
    let (caller, response, refused_because) = match decision {
        Ok(caller) => {
            req.extensions_mut().insert(caller.clone());
            (caller, next.run(req).await, None)
        }
        Err(Refusal { error, token }) => {
            let message = error.message.clone();
            if is_write(&method) {
                tracing::warn!(%method, %path, remote = ?remote, token = ?token, status = error.status.as_u16(), "API write refused: {message}");
            }
            let caller = Caller { token, scope: None };
            let answer = if super::ui::is_private_page(&path) {
                // A person at a browser: the same refusal as a page.
                let mut r = super::ui::error_page(
                    error.status,
                    "This page needs a token with scope read",
                    &message,
                );
                if error.status == axum::http::StatusCode::UNAUTHORIZED {
                    r.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"prober\""),
                    );
                }
                r
            } else {
                refusal(error)
            };
            (caller, answer, Some(message))
        }
    };
    if !is_write(&method) {
        return response;
    }
    let status = response.status();
    let (response, detail) = match refused_because {
        Some(m) => (response, Some(m)),
        None if status.is_client_error() || status.is_server_error() => {
            error_message(response).await
        }
        None => (response, None),
    };
    core.audit.record(AuditEntry {
        at: chrono::Utc::now(),
        token_name: caller.token,
        scope: caller.scope.map(|s| s.as_str().to_string()),
        method: method.to_string(),
        path,
        remote_addr: remote,
        status: status.as_u16(),
        detail,
    });
    response
}

/// Largest error body read back for the audit log's `detail`.
const MAX_ERROR_BODY: usize = 8 * 1024 * 1024;

/// The `error.message` of an error answer (the answer itself is passed on unchanged).
async fn error_message(response: Response) -> (Response, Option<String>) {
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(bytes) => {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string));
            (Response::from_parts(parts, Body::from(bytes)), message)
        }
        Err(e) => (
            Response::from_parts(parts, Body::empty()),
            Some(format!("the error answer could not be read back: {e}")),
        ),
    }
}

/// Declares the bearer scheme in the OpenAPI document.
pub struct SecurityScheme;

impl utoipa::Modify for SecurityScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme as Scheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some("A token from prober.yaml's api.tokens (or api_token / PROBER_API_TOKEN, an admin token). Scopes: read (GETs when api.public_read is false), run (POST /api/v1/probes/{name}/run), admin (everything, including reload, silences and the audit log).".into());
        components.add_security_scheme("bearer", Scheme::Http(http));
    }
}

/// An error answer; a 401 also says `WWW-Authenticate: Bearer`.
fn refusal(e: ApiError) -> Response {
    let unauthorized = e.status == axum::http::StatusCode::UNAUTHORIZED;
    let mut r = e.into_response();
    if unauthorized {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"prober\""),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::ApiToken;

    #[test]
    fn scopes_follow_method_and_path() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_scope(&get, "/healthz", false), None);
        assert_eq!(required_scope(&get, "/metrics", false), None);
        assert_eq!(required_scope(&get, "/api/v1/openapi.json", false), None);
        assert_eq!(required_scope(&get, "/api/v1/probes", true), None);
        assert_eq!(
            required_scope(&get, "/api/v1/probes", false),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&get, "/api/v1/audit", true),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&post, "/api/v1/probes/x/run", true),
            Some(Scope::Run)
        );
        assert_eq!(
            required_scope(&post, "/api/v1/probes/x/y/run", true),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&post, "/api/v1/reload", true),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/api/v1/silences/1", true),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::PUT, "/api/v1/anything-new", true),
            Some(Scope::Admin)
        );
    }

    #[test]
    fn the_legacy_token_is_an_admin_token_and_scopes_are_enforced() {
        let mut s = Settings::default();
        let post = Method::POST;
        let e = authorize(&s, &post, "/api/v1/reload", None)
            .unwrap_err()
            .error;
        assert_eq!(e.status.as_u16(), 403);
        assert!(e.message.contains("api.tokens"), "{}", e.message);
        s.api_token = Some(ApiToken("legacy-token-0123456789".into()));
        s.api.tokens.push(NamedToken::from_value(
            "ci",
            "ci-token-0123456789",
            Scope::Run,
        ));
        let bearer = |t: &str| HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
        let c = authorize(
            &s,
            &post,
            "/api/v1/reload",
            Some(&bearer("legacy-token-0123456789")),
        )
        .unwrap();
        assert_eq!(c.token.as_deref(), Some("api_token"));
        let e = authorize(
            &s,
            &post,
            "/api/v1/reload",
            Some(&bearer("ci-token-0123456789")),
        )
        .unwrap_err();
        assert_eq!(e.token.as_deref(), Some("ci"));
        let e = e.error;
        assert_eq!(e.status.as_u16(), 403);
        assert!(
            e.message.contains("token \"ci\" has scope run"),
            "{}",
            e.message
        );
        let c = authorize(
            &s,
            &post,
            "/api/v1/probes/p/run",
            Some(&bearer("ci-token-0123456789")),
        )
        .unwrap();
        assert_eq!(c.token.as_deref(), Some("ci"));
        let e = authorize(&s, &post, "/api/v1/probes/p/run", Some(&bearer("nope")))
            .unwrap_err()
            .error;
        assert_eq!(e.status.as_u16(), 401);
        let e = authorize(
            &s,
            &post,
            "/api/v1/probes/p/run",
            Some(&HeaderValue::from_static("Basic abc")),
        )
        .unwrap_err()
        .error;
        assert_eq!(e.status.as_u16(), 401);
    }
}
