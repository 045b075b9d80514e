//! What a response must look like (`expect`): status, latency, body, JSON and headers.

use http::HeaderName;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::reach::one_of;
use super::request::{regex, template, Scope};
use super::{parse_duration, Expect, HeaderExpect, JsonCheck, JsonExpect, StatusMatch, TextCheck};
use crate::config::diag::Ctx;
use crate::config::raw::{
    OneOrMany, RawExpect, RawHeaderExpect, RawJsonExpect, RawScalar, RawStatus,
};

pub(super) fn validate_expect(
    raw: Option<&RawExpect>,
    ctx: &mut Ctx<'_>,
    at: &str,
    scope: &Scope,
) -> Option<Expect> {
    let default = RawExpect::default();
    let raw = raw.unwrap_or(&default);
    let before = ctx.error_count();
    let status = validate_status(raw, ctx, at);
    let max_latency = raw
        .max_latency
        .as_ref()
        .and_then(|t| parse_duration(ctx, &format!("{at}.max_latency"), t));
    let body_contains = (raw.body_contains.iter().enumerate())
        .filter_map(|(i, t)| template(ctx, &format!("{at}.body_contains[{i}]"), t, scope))
        .collect();
    let body_not_contains = (raw.body_not_contains.iter().enumerate())
        .filter_map(|(i, t)| template(ctx, &format!("{at}.body_not_contains[{i}]"), t, scope))
        .collect();
    let body_matches = (raw.body_matches.iter().enumerate())
        .filter_map(|(i, r)| regex(ctx, &format!("{at}.body_matches[{i}]"), r))
        .collect();
    let json = (raw.json.iter().enumerate())
        .filter_map(|(i, j)| validate_json(j, ctx, &format!("{at}.json[{i}]"), scope))
        .collect();
    let headers = (raw.headers.iter().enumerate())
        .filter_map(|(i, h)| validate_header(h, ctx, &format!("{at}.headers[{i}]"), scope))
        .collect();
    let mut fact = |field: &str, raw: &Option<RawScalar>, allowed: [&'static str; 2]| {
        let allowed = allowed.map(|a| (a, a));
        (raw.as_ref())
            .and_then(|v| one_of(ctx, &format!("{at}.{field}"), v, &allowed))
            .map(str::to_string)
    };
    let http_version = fact("http_version", &raw.http_version, ["1.1", "2"]);
    let tls_version = fact("tls_version", &raw.tls_version, ["1.2", "1.3"]);
    let tls_cipher =
        (raw.tls_cipher.as_ref()).and_then(|r| regex(ctx, &format!("{at}.tls_cipher"), r));
    let cert_issuer =
        (raw.cert_issuer.as_ref()).and_then(|r| regex(ctx, &format!("{at}.cert_issuer"), r));
    if raw.cert_names.len() > MAX_CERT_NAMES {
        ctx.error(
            &format!("{at}.cert_names"),
            format!(
                "at most {MAX_CERT_NAMES} names (there are {})",
                raw.cert_names.len()
            ),
        );
    }
    for (i, n) in raw.cert_names.iter().enumerate() {
        if n.trim().is_empty() || n.len() > 253 || n.contains(char::is_whitespace) {
            ctx.error(
                &format!("{at}.cert_names[{i}]"),
                format!("{n:?} is not a host name or IP address (1-253 characters, no spaces)"),
            );
        }
    }
    if ctx.error_count() > before {
        return None;
    }
    Some(Expect {
        status,
        max_latency,
        body_contains,
        body_not_contains,
        body_matches,
        json,
        headers,
        cert_valid_days: raw.cert_valid_days,
        http_version,
        tls_version,
        tls_cipher,
        cert_issuer,
        cert_names: raw.cert_names.clone(),
    })
}

/// The most names `expect.cert_names` may list.
pub const MAX_CERT_NAMES: usize = 20;

/// The accepted statuses (`2xx` when none is written).
fn validate_status(raw: &RawExpect, ctx: &mut Ctx<'_>, at: &str) -> Vec<StatusMatch> {
    let before = ctx.error_count();
    let mut status = Vec::new();
    let written = raw.status.clone().map(|s| s.into_vec()).unwrap_or_default();
    for (i, s) in written.into_iter().enumerate() {
        let field = match &raw.status {
            Some(OneOrMany::Many(_)) => format!("{at}.status[{i}]"),
            _ => format!("{at}.status"),
        };
        match s {
            RawStatus::Code(c) if (100..=599).contains(&c) => status.push(StatusMatch::Code(c)),
            RawStatus::Code(c) => {
                ctx.error(&field, format!("{c} is not an HTTP status code (100–599)"))
            }
            RawStatus::Class(c) => match parse_class(&c) {
                Some(m) => status.push(m),
                None => ctx.error(
                    &field,
                    format!("{c:?} is not a status code or class; write 200 or \"2xx\" (1xx–5xx)"),
                ),
            },
        }
    }
    if status.is_empty() && ctx.error_count() == before {
        status.push(StatusMatch::Class(2));
    }
    status
}

/// The longest JSON path a probe file may hold, in bytes.
pub const MAX_JSON_PATH_BYTES: usize = 1024;

/// The deepest nesting of brackets and parentheses in a JSON path. The
/// parser recurses once a level, without a limit of its own: a path of a
/// few hundred thousand `(` overflowed the stack and aborted the daemon.
pub const MAX_JSON_PATH_DEPTH: usize = 32;

/// `path` as an RFC 9535 JSON path, refused (with why) when longer than
/// [`MAX_JSON_PATH_BYTES`] or nested deeper than [`MAX_JSON_PATH_DEPTH`]
/// before the parser sees it.
pub fn parse_json_path(path: &str) -> Result<JsonPath, String> {
    if path.len() > MAX_JSON_PATH_BYTES {
        return Err(format!(
            "it is {} bytes long, over the {MAX_JSON_PATH_BYTES} a JSON path may be",
            path.len()
        ));
    }
    let mut depth = 0usize;
    for c in path.bytes() {
        match c {
            b'(' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_PATH_DEPTH {
                    return Err(format!(
                        "its brackets and parentheses nest over {MAX_JSON_PATH_DEPTH} deep"
                    ));
                }
            }
            b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    JsonPath::parse(path).map_err(|e| e.to_string())
}

/// One JSON check, written at `field` (`expect.json[i]`).
fn validate_json(
    j: &RawJsonExpect,
    ctx: &mut Ctx<'_>,
    field: &str,
    scope: &Scope,
) -> Option<JsonExpect> {
    let path = match parse_json_path(&j.path) {
        Ok(p) => Some(p),
        Err(e) => {
            ctx.error(
                &format!("{field}.path"),
                format!(
                    "{:?} is not a JSON path ({e}); write RFC 9535 paths such as $.status or $.items[0].id",
                    crate::run::excerpt(&j.path)
                ),
            );
            None
        }
    };
    let check = match (&j.equals, j.exists, &j.matches) {
        (Some(Value::String(t)), None, None) => {
            template(ctx, &format!("{field}.equals"), t, scope).map(JsonCheck::EqualsText)
        }
        (Some(v), None, None) => Some(JsonCheck::Equals(v.clone())),
        (None, Some(e), None) => Some(JsonCheck::Exists(e)),
        (None, None, Some(r)) => regex(ctx, &format!("{field}.matches"), r).map(JsonCheck::Matches),
        _ => {
            ctx.error(
                field,
                "a JSON check needs exactly one of `equals`, `exists`, `matches`",
            );
            None
        }
    };
    Some(JsonExpect {
        path_src: j.path.clone(),
        path: path?,
        check: check?,
    })
}

/// One response header check, written at `field` (`expect.headers[i]`).
fn validate_header(
    h: &RawHeaderExpect,
    ctx: &mut Ctx<'_>,
    field: &str,
    scope: &Scope,
) -> Option<HeaderExpect> {
    let name = HeaderName::from_bytes(h.name.as_bytes()).ok();
    if name.is_none() {
        ctx.error(
            &format!("{field}.name"),
            format!("{:?} is not a valid header name", h.name),
        );
    }
    let check = match (&h.equals, &h.matches) {
        (Some(v), None) => {
            template(ctx, &format!("{field}.equals"), v, scope).map(TextCheck::Equals)
        }
        (None, Some(r)) => regex(ctx, &format!("{field}.matches"), r).map(TextCheck::Matches),
        _ => {
            ctx.error(
                field,
                "a header check needs exactly one of `equals`, `matches`",
            );
            None
        }
    };
    Some(HeaderExpect {
        name: name?,
        check: check?,
    })
}

fn parse_class(text: &str) -> Option<StatusMatch> {
    let t = text.trim();
    if let Ok(code) = t.parse::<u16>() {
        return (100..=599)
            .contains(&code)
            .then_some(StatusMatch::Code(code));
    }
    let b = t.as_bytes();
    if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1..].eq_ignore_ascii_case(b"xx") {
        return Some(StatusMatch::Class(u16::from(b[0] - b'0')));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_too_long_or_too_deep_are_refused_before_parsing() {
        assert!(parse_json_path("$.items[?(@.price > 10 && (@.stock < 5))].id").is_ok());
        let deep = |n: usize| format!("$[?{}@.a{}]", "(".repeat(n), ")".repeat(n));
        assert!(parse_json_path(&deep(MAX_JSON_PATH_DEPTH - 2)).is_ok());
        let e = parse_json_path(&deep(MAX_JSON_PATH_DEPTH)).unwrap_err();
        assert!(e.contains("nest over 32 deep"), "{e}");
        // What once overflowed the stack: refused, not parsed.
        let e = parse_json_path(&deep(300_000)).unwrap_err();
        assert!(e.contains("bytes long"), "{e}");
        let e = parse_json_path(&"(".repeat(1000)).unwrap_err();
        assert!(e.contains("nest over"), "{e}");
    }

    #[test]
    fn status_classes_parse_and_match() {
        assert_eq!(parse_class("2xx"), Some(StatusMatch::Class(2)));
        assert_eq!(parse_class("5XX"), Some(StatusMatch::Class(5)));
        assert_eq!(parse_class("204"), Some(StatusMatch::Code(204)));
        assert_eq!(parse_class("6xx"), None);
        assert_eq!(parse_class("2x"), None);
        assert!(StatusMatch::Class(2).matches(204));
        assert!(!StatusMatch::Class(2).matches(301));
    }
}
