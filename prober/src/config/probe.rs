//! Validated probe definitions: types that cannot hold an invalid probe.
//!
//! `validate` turns a [`RawProbe`] into a [`Probe`], reporting every problem
//! it finds (not just the first) through a [`Ctx`] that knows where each
//! field was written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, Method};
use regex::Regex;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::diag::Ctx;
pub use super::kinds::{AlertOverrides, DnsCheck, GrpcCheck, Retry, TcpCheck, TlsCheck};
use super::raw::{RawExpect, RawHeaderValue, RawHttp, RawProbe, RawStatus};
pub use super::steps::{Extract, ExtractFrom, Scenario, Step};
use super::template::Template;
use super::{kinds, steps};

/// Timeout of a run when the probe does not set one (capped at half the interval).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Body bytes read before a run fails with `body_too_large`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// The shortest interval accepted: shorter ones are a load test, not a probe.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A probe, ready to run.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub runbook: Option<String>,
    pub schedule: Schedule,
    pub timeout: Duration,
    pub check: Check,
    /// Where the probe was defined.
    pub source: SourceRef,
    /// Content hash of the definition as written: changes whenever the file's probe changes.
    pub version: String,
    /// The definition as written, with secret header values redacted (stored and shown),
    /// as compact JSON text: one allocation instead of a tree of values.
    pub definition: std::sync::Arc<serde_json::value::RawValue>,
    /// Retries of a failed run (boxed: most probes have none).
    pub retry: Option<Box<Retry>>,
    /// Alerting overrides (over the settings' defaults); `None` when the probe sets none
    /// (boxed: most probes have none).
    pub alert: Option<Box<AlertOverrides>>,
    /// Probes whose firing alerts hold back this probe's notifications.
    pub depends_on: Vec<String>,
}

/// File and line of a probe's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// When a probe runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron {
        expr: String,
        schedule: Box<cron::Schedule>,
    },
}

impl Schedule {
    /// The shortest time between two runs (for cron: over the next 100 firings).
    pub fn min_interval(&self) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron { schedule, .. } => {
                let times: Vec<_> = schedule.upcoming(chrono::Utc).take(100).collect();
                times
                    .windows(2)
                    .filter_map(|w| (w[1] - w[0]).to_std().ok())
                    .min()
                    .unwrap_or(Duration::MAX)
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Schedule::Cron { expr, .. } => write!(f, "cron {expr:?}"),
        }
    }
}

/// What a probe does in one run.
#[derive(Debug, Clone)]
pub enum Check {
    Http(HttpCheck),
    Steps(Scenario),
    Tcp(TcpCheck),
    Dns(DnsCheck),
    Tls(TlsCheck),
    Grpc(GrpcCheck),
}

/// An HTTP request and its expectations.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub request: HttpRequest,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: Method,
    pub url: Template,
    pub headers: Vec<HeaderSpec>,
    pub body: Option<Body>,
    pub redirects: u32,
    pub tls_verify: bool,
    pub keep_alive: bool,
    pub max_body_bytes: u64,
}

/// A request header; a secret one never appears in any output.
#[derive(Clone)]
pub struct HeaderSpec {
    pub name: HeaderName,
    pub value: Template,
    pub secret: bool,
}

impl fmt::Debug for HeaderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value: &dyn fmt::Debug = if self.secret {
            &"<redacted>"
        } else {
            &self.value
        };
        f.debug_struct("HeaderSpec")
            .field("name", &self.name)
            .field("value", value)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub enum Body {
    Text(Template),
    Json(Template),
}

/// What a response must look like.
#[derive(Debug, Clone)]
pub struct Expect {
    pub status: Vec<StatusMatch>,
    pub max_latency: Option<Duration>,
    pub body_contains: Vec<Template>,
    pub body_not_contains: Vec<Template>,
    pub body_matches: Vec<Regex>,
    pub json: Vec<JsonExpect>,
    pub headers: Vec<HeaderExpect>,
    pub cert_valid_days: Option<u32>,
}

/// An accepted status: a code or a class (`2` for `2xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    Class(u16),
}

impl StatusMatch {
    pub fn matches(&self, code: u16) -> bool {
        match self {
            StatusMatch::Code(c) => *c == code,
            StatusMatch::Class(c) => code / 100 == *c,
        }
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusMatch::Code(c) => write!(f, "{c}"),
            StatusMatch::Class(c) => write!(f, "{c}xx"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JsonExpect {
    pub path_src: String,
    pub path: JsonPath,
    pub check: JsonCheck,
}

#[derive(Debug, Clone)]
pub enum JsonCheck {
    Equals(Value),
    /// Equals a string, which may hold `${var}`.
    EqualsText(Template),
    Exists(bool),
    Matches(Regex),
}

#[derive(Debug, Clone)]
pub struct HeaderExpect {
    pub name: HeaderName,
    pub check: TextCheck,
}

#[derive(Debug, Clone)]
pub enum TextCheck {
    Equals(Template),
    Matches(Regex),
}

impl Probe {
    /// The longest a run may take: every attempt's timeout and the delays
    /// between attempts. The scheduler and `once` give up on a run only past it.
    pub fn run_budget(&self) -> Duration {
        match &self.retry {
            Some(r) => {
                let attempts = r.attempts.max(1);
                self.timeout * attempts + r.delay * (attempts - 1)
            }
            None => self.timeout,
        }
    }

    /// The HTTP requests of the probe, with the field each is written at.
    pub fn http_requests(&self) -> Vec<(String, &HttpRequest)> {
        match &self.check {
            Check::Http(h) => vec![("http".to_string(), &h.request)],
            Check::Steps(s) => (s.steps.iter().enumerate())
                .map(|(i, st)| (format!("steps[{i}].http"), &st.check.request))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The host the probe talks to, for the per-host limit ("" when unknown).
    pub fn target_host(&self) -> String {
        match &self.check {
            Check::Tcp(c) => c.host.clone(),
            Check::Tls(c) => c.host.clone(),
            Check::Grpc(c) => c.host.clone(),
            Check::Dns(c) => c
                .server
                .map_or_else(|| "dns".to_string(), |s| s.ip().to_string()),
            Check::Http(_) | Check::Steps(_) => (self.http_requests().first())
                .and_then(|(_, r)| r.url.render().ok())
                .and_then(|u| url::Url::parse(&u).ok())
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default(),
        }
    }

    /// Values of the secret headers as sent, and of every `${secret:NAME}`
    /// (wherever it is used); used to scrub every output. Values extracted with
    /// `secret: true` are only known during a run; the scenario adds them.
    pub fn secrets(&self) -> Vec<String> {
        let headers = (self.http_requests().into_iter())
            .flat_map(|(_, r)| r.headers.iter())
            .filter(|h| h.secret)
            .filter_map(|h| h.value.render().ok());
        let mut out: Vec<String> = headers.collect();
        for t in self.all_templates() {
            out.extend(t.secret_vars().filter_map(|n| std::env::var(n).ok()));
        }
        out.retain(|v| !v.is_empty());
        out.sort();
        out.dedup();
        out
    }

    /// Every template of the probe: requests and expectations.
    fn all_templates(&self) -> Vec<&Template> {
        let mut out: Vec<&Template> = self.templates().into_iter().map(|(_, t)| t).collect();
        let expects: Vec<&Expect> = match &self.check {
            Check::Http(h) => vec![&h.expect],
            Check::Steps(s) => s.steps.iter().map(|st| &st.check.expect).collect(),
            _ => Vec::new(),
        };
        for e in expects {
            out.extend(e.body_contains.iter().chain(&e.body_not_contains));
            out.extend(e.json.iter().filter_map(|j| match &j.check {
                JsonCheck::EqualsText(t) => Some(t),
                _ => None,
            }));
            out.extend(e.headers.iter().filter_map(|h| match &h.check {
                TextCheck::Equals(t) => Some(t),
                TextCheck::Matches(_) => None,
            }));
        }
        out
    }

    /// Every request template of the probe, with the field it came from.
    pub fn templates(&self) -> Vec<(String, &Template)> {
        let mut out = Vec::new();
        for (at, r) in self.http_requests() {
            out.push((format!("{at}.url"), &r.url));
            for hd in &r.headers {
                out.push((format!("{at}.headers.{}", hd.name), &hd.value));
            }
            match &r.body {
                Some(Body::Text(t)) => out.push((format!("{at}.body"), t)),
                Some(Body::Json(t)) => out.push((format!("{at}.json"), t)),
                None => {}
            }
        }
        out
    }
}

// === validation ===

/// The longest probe name.
pub const MAX_NAME_LEN: usize = 128;

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`: safe as a URL path segment, a file name and
/// a metric label value (no `/`, never `.` or `..`, no leading `-`).
pub fn is_safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A safe name close to `name`, for the error message.
fn suggest_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut out: String = trimmed.chars().take(MAX_NAME_LEN).collect();
    if out.is_empty() {
        out = "probe-1".into();
    }
    out
}

/// Validates one probe, reporting every problem through `ctx`.
pub fn validate(raw: &RawProbe, ctx: &mut Ctx<'_>) -> Option<Probe> {
    let errors_before = ctx.error_count();
    if raw.name.trim().is_empty() {
        ctx.error("name", "the name is empty; give the probe a unique name");
    } else if !is_safe_name(&raw.name) {
        ctx.error(
            "name",
            format!(
                "name {:?} is not allowed: a name starts with a letter or digit and holds only \
                 letters, digits, '.', '_' and '-' ({MAX_NAME_LEN} at most); it is a path segment \
                 of the API and a metric label, so rename the probe (e.g. {:?})",
                raw.name,
                suggest_name(&raw.name)
            ),
        );
    }
    if let Some(rb) = &raw.runbook {
        check_url(ctx, "runbook", rb);
    }
    let schedule = validate_schedule(raw, ctx);
    let timeout = validate_timeout(raw, schedule.as_ref(), ctx);
    let check = validate_check(raw, timeout, ctx);
    let retry = raw
        .retry
        .as_ref()
        .and_then(|r| kinds::validate_retry(r, ctx))
        .map(Box::new);
    let alert = raw
        .alert
        .as_ref()
        .map(|a| kinds::validate_alert(a, ctx))
        .filter(|a| *a != AlertOverrides::default())
        .map(Box::new);
    for (i, d) in raw.depends_on.iter().enumerate() {
        if d == &raw.name {
            ctx.error(
                &format!("depends_on[{i}]"),
                "a probe cannot depend on itself; name the probes it needs (e.g. a database or login probe)",
            );
        }
    }
    if ctx.error_count() > errors_before {
        return None;
    }
    let definition =
        match serde_json::value::to_raw_value(&redacted_definition(&ctx.doc.value, raw)) {
            Ok(d) => std::sync::Arc::from(d),
            Err(e) => {
                ctx.error(
                    "",
                    format!("the definition cannot be written as JSON ({e})"),
                );
                return None;
            }
        };
    Some(Probe {
        name: raw.name.clone(),
        description: raw.description.clone(),
        labels: raw.labels.clone(),
        runbook: raw.runbook.clone(),
        schedule: schedule?,
        timeout: timeout?,
        check: check?,
        source: ctx.source(),
        version: ctx.version(),
        definition,
        retry,
        alert,
        depends_on: raw.depends_on.clone(),
    })
}

/// The one check of a probe: exactly one of the kinds.
fn validate_check(raw: &RawProbe, timeout: Option<Duration>, ctx: &mut Ctx<'_>) -> Option<Check> {
    let kinds: Vec<&str> = [
        ("http", raw.http.is_some()),
        ("steps", raw.steps.is_some()),
        ("tcp", raw.tcp.is_some()),
        ("dns", raw.dns.is_some()),
        ("tls", raw.tls.is_some()),
        ("grpc", raw.grpc.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    match kinds.as_slice() {
        [] => {
            ctx.error(
                "",
                "the probe has no check: add one of `http:` (with at least a `url`), `steps:`, `tcp:`, `dns:`, `tls:`, `grpc:`",
            );
            return None;
        }
        [_] => {}
        [_, second, ..] => {
            ctx.error_at_key(
                second,
                format!(
                    "a probe has one check, and this one also has `{}`; split it into two probes",
                    kinds[0]
                ),
            );
            return None;
        }
    }
    if raw.expect.is_some() && raw.http.is_none() {
        ctx.error_at_key(
            "expect",
            "`expect` applies to `http`; a scenario puts `expect` in each step, and tcp/dns/tls/grpc have their own keys",
        );
    }
    if let Some(http) = &raw.http {
        return validate_http(
            http,
            raw.expect.as_ref(),
            ctx,
            "http",
            "expect",
            &Scope::default(),
        )
        .map(Check::Http);
    }
    if let Some(steps) = &raw.steps {
        return steps::validate_steps(steps, timeout, ctx).map(Check::Steps);
    }
    if let Some(t) = &raw.tcp {
        return kinds::validate_tcp(t, ctx).map(Check::Tcp);
    }
    if let Some(d) = &raw.dns {
        return kinds::validate_dns(d, ctx).map(Check::Dns);
    }
    if let Some(t) = &raw.tls {
        return kinds::validate_tls(t, ctx).map(Check::Tls);
    }
    raw.grpc
        .as_ref()
        .and_then(|g| kinds::validate_grpc(g, ctx))
        .map(Check::Grpc)
}

/// The probe's JSON with every secret header value replaced.
fn redacted_definition(value: &Value, raw: &RawProbe) -> Value {
    let mut v = value.clone();
    let mut requests: Vec<(String, &RawHttp)> =
        raw.http.iter().map(|h| ("/http".to_string(), h)).collect();
    for (i, st) in raw.steps.iter().flatten().enumerate() {
        requests.push((format!("/steps/{i}/http"), &st.http));
    }
    for (at, http) in requests {
        for (name, hv) in &http.headers {
            if matches!(hv, RawHeaderValue::Detailed(d) if d.secret) {
                let key = name.replace('~', "~0").replace('/', "~1");
                if let Some(slot) = v.pointer_mut(&format!("{at}/headers/{key}/value")) {
                    *slot = Value::String("<redacted>".into());
                }
            }
        }
    }
    v
}

/// Parses `30s`, `1m30s`, `500ms`; reports a bad one at `field`.
pub fn parse_duration(ctx: &mut Ctx<'_>, field: &str, text: &str) -> Option<Duration> {
    if !is_duration_syntax(text) {
        ctx.error(
            field,
            format!("{text:?} is not a duration; write a number and a unit (ms, s, m, h), like 500ms, 30s, 5m, 1h or 1m30s"),
        );
        return None;
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            ctx.error(field, format!("{field} must be greater than zero"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            ctx.error(
                field,
                format!("{text:?} is not a duration ({e}); write it like 500ms, 30s, 5m or 1h"),
            );
            None
        }
    }
}

/// `500ms`, `30s`, `1m30s`: digits and a unit, repeated. The JSON Schema says the same.
pub fn is_duration_syntax(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

fn validate_schedule(raw: &RawProbe, ctx: &mut Ctx<'_>) -> Option<Schedule> {
    match (&raw.every, &raw.cron) {
        (Some(_), Some(_)) => {
            ctx.error(
                "cron",
                "both `every` and `cron` are set; keep exactly one of them",
            );
            None
        }
        (None, None) => {
            ctx.error(
                "",
                "the probe has no schedule; add `every: 30s` or `cron: \"0 */5 * * * *\"`",
            );
            None
        }
        (Some(every), None) => {
            let d = parse_duration(ctx, "every", every)?;
            if d < MIN_INTERVAL {
                ctx.error(
                    "every",
                    format!(
                        "every {every} is shorter than the minimum of {}; probe less often",
                        humantime::format_duration(MIN_INTERVAL)
                    ),
                );
                return None;
            }
            Some(Schedule::Every(d))
        }
        (None, Some(expr)) => match cron::Schedule::from_str(expr) {
            Ok(s) if s.upcoming(chrono::Utc).take(2).count() < 2 => {
                ctx.error(
                    "cron",
                    format!("{expr:?} never fires (or fires only once more); check the day and month fields"),
                );
                None
            }
            Ok(s) => Some(Schedule::Cron {
                expr: expr.clone(),
                schedule: Box::new(s),
            }),
            Err(_) => {
                let fields = expr.split_whitespace().count();
                let hint = if (6..=7).contains(&fields) {
                    "a field is out of range or malformed".to_string()
                } else {
                    format!("it has {fields} fields; prober's cron needs 6 or 7, seconds first")
                };
                ctx.error(
                    "cron",
                    format!(
                        "{expr:?} is not a cron expression ({hint}); write \"sec min hour day month weekday\", e.g. \"0 */5 * * * *\""
                    ),
                );
                None
            }
        },
    }
}

fn validate_timeout(
    raw: &RawProbe,
    schedule: Option<&Schedule>,
    ctx: &mut Ctx<'_>,
) -> Option<Duration> {
    let interval = schedule.map(Schedule::min_interval);
    let Some(text) = &raw.timeout else {
        let half = interval.map_or(DEFAULT_TIMEOUT, |i| i / 2);
        return Some(DEFAULT_TIMEOUT.min(half));
    };
    let timeout = parse_duration(ctx, "timeout", text)?;
    if let (Some(interval), Some(schedule)) = (interval, schedule) {
        if timeout >= interval {
            ctx.error(
                "timeout",
                format!(
                    "timeout {text} must be shorter than the interval ({schedule}, {} between runs); lower the timeout or run less often",
                    humantime::format_duration(interval)
                ),
            );
            return None;
        }
    }
    Some(timeout)
}

pub(super) fn check_url(ctx: &mut Ctx<'_>, field: &str, text: &str) -> Option<url::Url> {
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
    let method = match &raw.method {
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
    };
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
        },
        expect: expect?,
    })
}

pub(super) fn regex(ctx: &mut Ctx<'_>, field: &str, text: &str) -> Option<Regex> {
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

fn validate_expect(
    raw: Option<&RawExpect>,
    ctx: &mut Ctx<'_>,
    at: &str,
    scope: &Scope,
) -> Option<Expect> {
    let default = RawExpect::default();
    let raw = raw.unwrap_or(&default);
    let before = ctx.error_count();
    let mut status = Vec::new();
    for (i, s) in raw
        .status
        .clone()
        .map(|s| s.into_vec())
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let field = match &raw.status {
            Some(super::raw::OneOrMany::Many(_)) => format!("{at}.status[{i}]"),
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
    let mut json = Vec::new();
    for (i, j) in raw.json.iter().enumerate() {
        let field = format!("{at}.json[{i}]");
        let path = match JsonPath::parse(&j.path) {
            Ok(p) => Some(p),
            Err(e) => {
                ctx.error(
                    &format!("{field}.path"),
                    format!(
                        "{:?} is not a JSON path ({e}); write RFC 9535 paths such as $.status or $.items[0].id",
                        j.path
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
            (None, None, Some(r)) => {
                regex(ctx, &format!("{field}.matches"), r).map(JsonCheck::Matches)
            }
            _ => {
                ctx.error(
                    &field,
                    "a JSON check needs exactly one of `equals`, `exists`, `matches`",
                );
                None
            }
        };
        if let (Some(path), Some(check)) = (path, check) {
            json.push(JsonExpect {
                path_src: j.path.clone(),
                path,
                check,
            });
        }
    }
    let mut headers = Vec::new();
    for (i, h) in raw.headers.iter().enumerate() {
        let field = format!("{at}.headers[{i}]");
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
                    &field,
                    "a header check needs exactly one of `equals`, `matches`",
                );
                None
            }
        };
        if let (Some(name), Some(check)) = (name, check) {
            headers.push(HeaderExpect { name, check });
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
    fn names_are_limited_to_a_safe_set() {
        for ok in [
            "a",
            "checkout-health",
            "api.v2_login",
            "9",
            &"x".repeat(128),
        ] {
            assert!(is_safe_name(ok), "{ok}");
        }
        for bad in [
            ".",
            "..",
            "/",
            "a//b",
            "../etc/passwd",
            "a/b",
            "-a",
            ".hidden",
            "_a",
            "a b",
            "é",
            "a?b",
            "a%2Fb",
            &"x".repeat(129),
        ] {
            assert!(!is_safe_name(bad), "{bad}");
            assert!(
                is_safe_name(&suggest_name(bad)),
                "{bad} → {}",
                suggest_name(bad)
            );
        }
        assert_eq!(suggest_name("../etc/passwd"), "etc-passwd");
    }

    #[test]
    fn durations_need_a_unit_on_every_number() {
        for ok in ["500ms", "30s", "5m", "1h", "1m30s"] {
            assert!(is_duration_syntax(ok), "{ok}");
        }
        for bad in ["", "30", "30 seconds", "30 s", "1d", "s", "1.5s", "-1s"] {
            assert!(!is_duration_syntax(bad), "{bad}");
        }
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

    #[test]
    fn secret_header_values_do_not_show_in_debug() {
        let h = HeaderSpec {
            name: HeaderName::from_static("authorization"),
            value: Template::parse("Bearer hunter2").unwrap(),
            secret: true,
        };
        assert!(!format!("{h:?}").contains("hunter2"));
    }
}
