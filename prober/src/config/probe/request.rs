//! A request as written (`http` or a scenario step's `http`): method, URL,
//! headers, body, and the templates in them.

use http::{HeaderName, Method};
use regex::Regex;

use super::expect::validate_expect;
use super::{Body, HeaderSpec, HttpCheck, HttpRequest, DEFAULT_MAX_BODY_BYTES};
use crate::config::diag::Ctx;
use crate::config::raw::{RawExpect, RawHeaderValue, RawHttp};
use crate::config::template::Template;

pub(in crate::config) fn check_url(ctx: &mut Ctx<'_>, field: &str, text: &str) -> Option<url::Url> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(u) => {
            ctx.error(
                field,
                format!(
                    "{text:?} is not an http:// or https:// URL with a host (scheme {:?})",
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            ctx.error(field, format!("{text:?} is not a valid URL ({e})"));
            None
        }
    }
}

/// Which scenario variables a template may use where it is written.
#[derive(Debug, Default)]
pub struct Scope {
    /// `None` outside a scenario; else the variables earlier steps extract.
    pub defined: Option<Vec<String>>,
}

/// Parses a template and checks that every variable it uses can exist there.
pub fn template(ctx: &mut Ctx<'_>, field: &str, text: &str, scope: &Scope) -> Option<Template> {
    let t = match Template::parse(text) {
        Ok(t) => t,
        Err(e) => {
            ctx.error(field, e);
            return None;
        }
    };
    let mut ok = true;
    for var in t.vars() {
        match &scope.defined {
            None => {
                ctx.error(
                    field,
                    format!(
                        "`${{{var}}}` is a scenario variable, but this probe has no `steps:` to extract it; use ${{env:NAME}} for the environment"
                    ),
                );
                ok = false;
            }
            Some(defined) if !defined.iter().any(|d| d == var) => {
                ctx.error(
                    field,
                    format!(
                        "`${{{var}}}` is used before any earlier step extracts it; add `extract: {{{var}: ...}}` to a step above"
                    ),
                );
                ok = false;
            }
            Some(_) => {}
        }
    }
    ok.then_some(t)
}

/// The method (GET when none is written); a non-standard one is a warning.
fn validate_method(method: Option<&str>, ctx: &mut Ctx<'_>, at: &str) -> Option<Method> {
    match method {
        None => Some(Method::GET),
        Some(m) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) => {
                const STANDARD: [&str; 9] = [
                    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
                ];
                if !STANDARD.contains(&method.as_str()) {
                    ctx.warning(
                        &format!("{at}.method"),
                        format!(
                            "{m:?} is not a standard HTTP method (a typo?); it is sent as written"
                        ),
                    );
                }
                Some(method)
            }
            Err(_) => {
                ctx.error(
                    &format!("{at}.method"),
                    format!("{m:?} is not an HTTP method; use GET, POST, PUT, …"),
                );
                None
            }
        },
    }
}

/// Validates a request written at `at` (`http` or `steps[i].http`) and its expectations at `expect_at`.
pub fn validate_http(
    raw: &RawHttp,
    expect: Option<&RawExpect>,
    ctx: &mut Ctx<'_>,
    at: &str,
    expect_at: &str,
    scope: &Scope,
) -> Option<HttpCheck> {
    let before = ctx.error_count();
    let method = validate_method(raw.method.as_deref(), ctx, at);
    let url = template(ctx, &format!("{at}.url"), &raw.url, scope);
    if let Some(u) = &url {
        // A URL with env placeholders is checked once rendered, if the variables are set
        // (secrets masked: the message may quote the URL).
        if let Ok(rendered) = u.render_masked() {
            check_url(ctx, &format!("{at}.url"), &rendered);
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let field = format!("{at}.headers.{name}");
        let (text, secret) = match value {
            RawHeaderValue::Plain(v) => (v.as_str(), false),
            RawHeaderValue::Detailed(d) => (d.value.as_str(), d.secret),
        };
        let Ok(hname) = HeaderName::from_bytes(name.as_bytes()) else {
            ctx.error_at_key(&field, format!("{name:?} is not a valid header name"));
            continue;
        };
        if let Some(value) = template(ctx, &field, text, scope) {
            headers.push(HeaderSpec {
                name: hname,
                value,
                secret,
            });
        }
    }
    let body = match (&raw.body, &raw.json) {
        (Some(_), Some(_)) => {
            ctx.error(
                &format!("{at}.json"),
                "both `body` and `json` are set; keep one",
            );
            None
        }
        (Some(b), None) => template(ctx, &format!("{at}.body"), b, scope).map(Body::Text),
        (None, Some(j)) => {
            template(ctx, &format!("{at}.json"), &j.to_string(), scope).map(Body::Json)
        }
        (None, None) => None,
    };
    if raw.max_body_bytes == Some(0) {
        ctx.error(
            &format!("{at}.max_body_bytes"),
            "max_body_bytes must be at least 1",
        );
    }
    let reach = super::reach::validate_reach(raw, ctx, at, scope);
    let expect = validate_expect(expect, ctx, expect_at, scope);
    if ctx.error_count() > before {
        return None;
    }
    Some(HttpCheck {
        request: HttpRequest {
            method: method?,
            url: url?,
            headers,
            body,
            redirects: raw.redirects.unwrap_or(0),
            tls_verify: raw.tls_verify.unwrap_or(true),
            keep_alive: raw.keep_alive.unwrap_or(false),
            max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            version: reach.version,
            tls: reach.tls,
            resolve: reach.resolve,
            ip_version: reach.ip_version,
            basic_auth: reach.basic_auth,
            proxy: reach.proxy,
            oauth2: reach.oauth2,
            source_address: reach.source_address,
        },
        expect: expect?,
    })
}

pub(in crate::config) fn regex(ctx: &mut Ctx<'_>, field: &str, text: &str) -> Option<Regex> {
    match Regex::new(text) {
        Ok(r) => Some(r),
        Err(e) => {
            let detail = e.to_string().lines().last().unwrap_or_default().to_string();
            ctx.error(
                field,
                format!("{text:?} is not a valid regular expression ({detail})"),
            );
            None
        }
    }
}
