//! Scenarios: HTTP steps run in order, sharing variables extracted from responses.

use std::time::Duration;

use http::HeaderName;
use regex::Regex;
use serde_json_path::JsonPath;

use super::diag::Ctx;
use super::probe::{parse_duration, regex, validate_http, HttpCheck, Scope};
use super::raw::{RawExtract, RawStep};

/// Most steps one scenario may have (their histograms use phase ids 100–199).
pub const MAX_STEPS: usize = 100;

/// A scenario: the steps, in order.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub check: HttpCheck,
    pub extract: Vec<Extract>,
    /// Runs even after an earlier step failed (cleanup).
    pub always: bool,
    pub timeout: Option<Duration>,
}

/// A variable taken from a response.
#[derive(Debug, Clone)]
pub struct Extract {
    pub name: String,
    pub from: ExtractFrom,
    /// `secret: true`: the value joins the run's redaction set.
    pub secret: bool,
}

#[derive(Debug, Clone)]
pub enum ExtractFrom {
    Json { path: JsonPath, source: String },
    Header(HeaderName),
    Regex(Regex),
    Status,
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(name, "uuid" | "now_unix" | "random_int")
}

pub fn validate_steps(
    raw: &[RawStep],
    probe_timeout: Option<Duration>,
    ctx: &mut Ctx<'_>,
) -> Option<Scenario> {
    let before = ctx.error_count();
    if raw.is_empty() {
        ctx.error("steps", "a scenario needs at least one step");
        return None;
    }
    if raw.len() > MAX_STEPS {
        ctx.error(
            "steps",
            format!("a scenario has at most {MAX_STEPS} steps; split it"),
        );
        return None;
    }
    let mut defined: Vec<String> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut steps = Vec::new();
    for (i, st) in raw.iter().enumerate() {
        let at = format!("steps[{i}]");
        if st.name.trim().is_empty() {
            ctx.error(
                &format!("{at}.name"),
                "the step's name is empty; name it (it labels results and histograms)",
            );
        } else if names.contains(&st.name.as_str()) {
            ctx.error(
                &format!("{at}.name"),
                format!(
                    "step name {:?} is used twice in this probe; names must be unique",
                    st.name
                ),
            );
        }
        names.push(&st.name);
        let scope = Scope {
            defined: Some(defined.clone()),
        };
        let check = validate_http(
            &st.http,
            st.expect.as_ref(),
            ctx,
            &format!("{at}.http"),
            &format!("{at}.expect"),
            &scope,
        );
        let timeout = st
            .timeout
            .as_ref()
            .and_then(|t| parse_duration(ctx, &format!("{at}.timeout"), t));
        if let (Some(t), Some(p)) = (timeout, probe_timeout) {
            if t > p {
                ctx.error(
                    &format!("{at}.timeout"),
                    format!(
                        "the step's timeout {} is longer than the probe's timeout {}; the probe's applies to the whole scenario",
                        humantime::format_duration(t),
                        humantime::format_duration(p)
                    ),
                );
            }
        }
        let mut extract = Vec::new();
        for (name, from) in &st.extract {
            let field = format!("{at}.extract.{name}");
            if !valid_var_name(name) {
                ctx.error_at_key(&field, format!("{name:?} is not a usable variable name: use letters, digits and _, not starting with a digit, and not uuid/now_unix/random_int"));
                continue;
            }
            let secret = from.secret;
            if let Some(from) = validate_extract(from, &field, ctx) {
                extract.push(Extract {
                    name: name.clone(),
                    from,
                    secret,
                });
            }
        }
        // Variables become usable in the steps after this one.
        defined.extend(st.extract.keys().cloned());
        if let Some(check) = check {
            steps.push(Step {
                name: st.name.clone(),
                check,
                extract,
                always: st.always,
                timeout,
            });
        }
    }
    (ctx.error_count() == before).then_some(Scenario { steps })
}

fn validate_extract(raw: &RawExtract, field: &str, ctx: &mut Ctx<'_>) -> Option<ExtractFrom> {
    match (&raw.json, &raw.header, &raw.regex, raw.status) {
        (Some(p), None, None, None) => match super::probe::parse_json_path(p) {
            Ok(path) => Some(ExtractFrom::Json {
                path,
                source: p.clone(),
            }),
            Err(e) => {
                ctx.error(
                    &format!("{field}.json"),
                    format!(
                        "{:?} is not a JSON path ({e}); write RFC 9535 paths such as $.token",
                        crate::run::excerpt(p)
                    ),
                );
                None
            }
        },
        (None, Some(h), None, None) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => Some(ExtractFrom::Header(n)),
            Err(_) => {
                ctx.error(
                    &format!("{field}.header"),
                    format!("{h:?} is not a valid header name"),
                );
                None
            }
        },
        (None, None, Some(r), None) => {
            regex(ctx, &format!("{field}.regex"), r).map(ExtractFrom::Regex)
        }
        (None, None, None, Some(true)) => Some(ExtractFrom::Status),
        _ => {
            ctx.error(
                field,
                "an extraction needs exactly one of `json`, `header`, `regex`, `status: true`",
            );
            None
        }
    }
}
