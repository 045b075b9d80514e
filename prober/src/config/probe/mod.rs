//! Validated probe definitions: types that cannot hold an invalid probe.
//!
//! `validate` turns a raw probe into a [`Probe`], reporting every problem it
//! finds (not just the first) through a `Ctx` that knows where each field was
//! written: the probe as a whole and its run budget (`validate`), a request
//! (`request`), its expectations (`expect`), durations (`duration`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};
use regex::Regex;
use serde_json::Value;
use serde_json_path::JsonPath;

pub use super::kinds::{
    AlertOverrides, DnsCheck, GrpcCheck, IcmpCheck, Retry, TcpCheck, TlsCheck, WebSocketCheck,
};
pub use super::steps::{Extract, ExtractFrom, Scenario, Step};
use super::template::Template;

mod duration;
mod expect;
mod reach;
mod request;
mod validate;

pub use duration::{is_duration_syntax, parse_duration};
pub use expect::parse_json_path;
pub(in crate::config) use reach::one_of;
pub use reach::{
    BasicAuth, ClientIdentity, HttpVersion, IpVersion, OAuth2, Proxy, ProxyProblem, TlsMin,
    TlsOptions,
};
pub(in crate::config) use request::{check_url, regex};
pub use request::{template, validate_http, Scope};
pub use validate::{is_safe_name, validate, MAX_NAME_LEN};

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
    /// The `traceparent` its requests carry.
    pub trace: Trace,
}

/// The W3C `traceparent` header a probe's requests carry (`http`, `steps`, `grpc`): the run's
/// trace id, its run id's 32 hex digits, with the sampled flag set or not; or no header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Trace {
    #[default]
    Sampled,
    Unsampled,
    Off,
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
    Http(Box<HttpCheck>),
    Steps(Scenario),
    Tcp(TcpCheck),
    Dns(DnsCheck),
    Tls(TlsCheck),
    Grpc(GrpcCheck),
    Icmp(IcmpCheck),
    WebSocket(WebSocketCheck),
    Browser(Box<super::browser::BrowserCheck>),
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
    /// `version`: which HTTP to speak.
    pub version: HttpVersion,
    /// `tls`: CA bundle, client certificate, server name, minimum version.
    pub tls: TlsOptions,
    /// `resolve`: host names pinned to addresses (no DNS lookup for them).
    pub resolve: Vec<(String, std::net::IpAddr)>,
    /// `ip_version`: the address family connected to.
    pub ip_version: IpVersion,
    /// `source_address`: the local address connections are made from.
    pub source_address: Option<std::net::IpAddr>,
    /// `proxy` and `no_proxy`: the proxy the connection goes through.
    pub proxy: Option<Proxy>,
    /// `oauth2`: a client-credentials bearer token, cached by the runner.
    pub oauth2: Option<Box<OAuth2>>,
    /// `basic_auth`: sent as `Authorization: Basic …`, never shown.
    pub basic_auth: Option<Box<BasicAuth>>,
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
    /// `http_version`: `"1.1"` or `"2"`.
    pub http_version: Option<String>,
    /// `tls_version`: `"1.2"` or `"1.3"`.
    pub tls_version: Option<String>,
    /// `tls_cipher`: matched against the negotiated suite's name.
    pub tls_cipher: Option<Regex>,
    /// `cert_issuer`: matched against the server certificate's issuer.
    pub cert_issuer: Option<Regex>,
    /// `cert_names`: each covered by the server certificate's SANs.
    pub cert_names: Vec<String>,
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

/// What one run may spend: up to `attempts` attempts of at most `timeout`
/// each, `delay` apart. Held at load to end strictly inside the interval, so a
/// retried run is over before the next tick; the runner applies the timeout to
/// each attempt, and the scheduler gives up on a run only past [`Budget::total`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub timeout: Duration,
    /// Attempts in all, the first included (1 without `retry`).
    pub attempts: u32,
    pub delay: Duration,
}

impl Budget {
    /// The budget of a probe with this timeout and these retries.
    pub fn new(timeout: Duration, retry: Option<&Retry>) -> Budget {
        match retry {
            Some(r) => Budget {
                timeout,
                attempts: r.attempts.max(1),
                delay: r.delay,
            },
            None => Budget {
                timeout,
                attempts: 1,
                delay: Duration::ZERO,
            },
        }
    }

    /// The longest a run may take: every attempt's timeout and the delays between attempts.
    pub fn total(&self) -> Duration {
        self.timeout * self.attempts + self.delay * self.attempts.saturating_sub(1)
    }
}

impl Probe {
    /// What one run of the probe may spend: its timeout per attempt, its
    /// attempts and the delay between them. The runner keeps to it.
    pub fn budget(&self) -> Budget {
        Budget::new(self.timeout, self.retry.as_deref())
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
            Check::Icmp(c) => c.host.clone(),
            Check::WebSocket(c) => c.url.host_str().unwrap_or_default().to_string(),
            Check::Browser(b) => (b.first_url())
                .and_then(|t| t.render().ok())
                .and_then(|u| url::Url::parse(&u).ok())
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default(),
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
        if let Check::Browser(b) = &self.check {
            out.extend(b.templates());
        }
        out
    }

    /// The names of the probe's steps (a scenario's or a browser check's),
    /// in order: step `i`'s histograms are phase `100 + i`.
    pub fn step_names(&self) -> Vec<&str> {
        match &self.check {
            Check::Steps(s) => s.steps.iter().map(|s| s.name.as_str()).collect(),
            Check::Browser(b) => b.steps.iter().map(|s| s.name.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
