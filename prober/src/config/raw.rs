//! The probe file format exactly as written: plain serde structs.
//!
//! These types are the single source of the format: the loader deserializes
//! into them and `prober schema` derives the JSON Schema from them. They are
//! "raw": a duration is still a string, a URL is unchecked. `probe.rs` turns a
//! `RawProbe` into a validated `Probe` that cannot be invalid.

use std::collections::BTreeMap;

pub use super::raw_browser::{RawBrowser, RawBrowserStep, RawExpectText, RawFill};
pub use super::raw_http::{RawBasicAuth, RawHttp, RawHttpTls, RawOAuth2, RawScalar};
pub use super::raw_kinds::{RawDns, RawGrpc, RawIcmp, RawTcp, RawTls, RawWebSocket};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One probe: what to check, how often, and what the answer must look like.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a probe: a mapping with `name`, a schedule and `http`"
)]
// What `check` enforces after parsing, said in the schema too, so an editor
// flags it: exactly one of `every` and `cron`, exactly one kind of check.
#[schemars(extend("allOf" = [
    {"oneOf": [{"required": ["every"]}, {"required": ["cron"]}]},
    {"oneOf": [
        {"required": ["http"]}, {"required": ["steps"]}, {"required": ["tcp"]},
        {"required": ["dns"]}, {"required": ["tls"]}, {"required": ["grpc"]},
        {"required": ["icmp"]}, {"required": ["websocket"]}, {"required": ["browser"]}
    ]}
]))]
pub struct RawProbe {
    /// Unique across all probe files; the stable id of the probe in the database, the API and alerts.
    pub name: String,
    /// What the probe checks, for people reading a dashboard or an alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form labels such as `team`, `service`, `env`; used for filtering and routing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// URL of the runbook on-call should follow when this probe fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// Run at a fixed interval, such as `30s`, `1m`, `5m`. Exactly one of `every` and `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)([0-9]+(ms|s|m|h))*$"))]
    pub every: Option<String>,
    /// Run on a cron schedule with seconds: `sec min hour day-of-month month day-of-week`, e.g. `0 */5 * * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Give up on an attempt after this long (default 10s, at most half the interval; always shorter than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// An HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<RawHttp>,
    /// What the response must look like for the run to pass. Without it: status 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<RawExpect>,
    /// A scenario: HTTP requests run in order, sharing variables. Instead of `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<RawStep>>,
    /// Connect to a TCP port; optionally send bytes and expect a banner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<RawTcp>,
    /// Send ICMP echo requests ("ping") and time the replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<RawIcmp>,
    /// Open a WebSocket, send a message, expect a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<RawWebSocket>,
    /// Run scripted steps in headless Chromium; Web Vitals recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<RawBrowser>,
    /// Query a DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<RawDns>,
    /// A TLS handshake: certificate expiry, host name match, issuer and chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    /// The standard gRPC health check (`grpc.health.v1.Health/Check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<RawGrpc>,
    /// Retry a failed run; every attempt is recorded and the last one decides.
    /// All attempts and the delays between them must end before the next run (attempts × timeout + delays < interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RawRetry>,
    /// When this probe's failures alert on-call (defaults come from the settings' `alerting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<RawAlert>,
    /// Probes this one depends on: while one of them fires, this probe's alerts do not notify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The W3C `traceparent` header sent with the probe's requests (`http`, `steps`, `grpc`),
    /// carrying the run's trace id: `true` (default, sampled), `unsampled` (the backend decides
    /// whether to record it) or `false` (not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<RawTrace>,
}

/// `trace:` as written: a boolean or `unsampled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawTrace {
    On(bool),
    Mode(RawTraceMode),
}

/// The one word `trace:` takes besides a boolean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawTraceMode {
    Unsampled,
}

// By hand rather than `untagged`, so a wrong value says what is allowed.
impl<'de> Deserialize<'de> for RawTrace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TraceVisitor)
    }
}

struct TraceVisitor;

impl serde::de::Visitor<'_> for TraceVisitor {
    type Value = RawTrace;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("true, false or unsampled")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawTrace, E> {
        Ok(RawTrace::On(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawTrace, E> {
        match v {
            "unsampled" => Ok(RawTrace::Mode(RawTraceMode::Unsampled)),
            _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
        }
    }
}

/// Alerting for one probe; unset keys take the settings' defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    /// Set false to never alert on this probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Consecutive failed runs that fire the alert (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures_to_fire: Option<u32>,
    /// Consecutive successful runs that resolve it (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successes_to_resolve: Option<u32>,
    /// `page` (default) or `ticket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Alert when a latency quantile over a window is above a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<RawLatencyRule>,
    /// An availability objective over 30 days, alerted on by burn rate
    /// (the SRE Workbook's multi-window pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<RawSlo>,
    /// Open a ticket when a run sees a certificate with fewer days left (default 14; 0 = off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expiry_days: Option<u32>,
    /// Page only when at least this many locations fail at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_locations: Option<u32>,
    /// Severity of the `trend` alert: `ticket` (default) or `page`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend_severity: Option<String>,
}

/// `latency:` — e.g. `{quantile: 0.99, above: 800ms, over: 10m}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLatencyRule {
    /// Between 0 and 1, e.g. 0.95 or 0.99.
    pub quantile: f64,
    /// The threshold, e.g. `800ms`.
    pub above: String,
    /// The window, whole minutes (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over: Option<String>,
    /// `page` or `ticket` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// `slo:` — e.g. `{objective: 99.9}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSlo {
    /// Percent of runs that must succeed over 30 days, e.g. 99.9.
    pub objective: f64,
    /// Failed runs a burn-rate window must hold before it fires (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_failures: Option<u32>,
}

/// One step of a scenario.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Names the step in results, histograms and alerts; unique within the probe.
    pub name: String,
    /// The request; `${var}` uses a variable extracted by an earlier step.
    pub http: RawHttp,
    /// What the response must look like (default: status 2xx). `${var}` works here too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<RawExpect>,
    /// Variables to take from the response, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extract: BTreeMap<String, RawExtract>,
    /// Run even after an earlier step failed (cleanup).
    #[serde(default)]
    pub always: bool,
    /// Give up on this step after this long (within the probe's `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Where a variable's value comes from: exactly one of the keys.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawExtract {
    /// An RFC 9535 JSON path into the body; strings are taken as they are, other values as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
    /// A response header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A regular expression on the body: the first capture group (or the whole match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<bool>,
    /// The value is secret: redacted from every output of the run (requests,
    /// errors, assertions, the database, the API, logs, notifications).
    #[serde(default)]
    pub secret: bool,
}

/// Retries of a failed run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all, the first included (2–10).
    pub attempts: u32,
    /// Wait between attempts (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Error classes worth a retry (default: connect, timeout, dns, tls, invalid_response).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<String>,
}

/// A header value: plain, or marked secret.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawHeaderValue {
    Plain(String),
    Detailed(RawSecretHeader),
}

// By hand rather than `untagged`, so that a typo inside `{value, secret}` is
// reported as an unknown key at its line instead of "matched no variant".
impl<'de> Deserialize<'de> for RawHeaderValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HeaderValueVisitor)
    }
}

struct HeaderValueVisitor;

impl<'de> serde::de::Visitor<'de> for HeaderValueVisitor {
    type Value = RawHeaderValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, or a mapping `{value: ..., secret: true}`")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(RawHeaderValue::Plain(v.to_string()))
    }

    // `X-Retries: 3` is a header value too.
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(RawHeaderValue::Plain(v.to_string()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(RawHeaderValue::Plain(v.to_string()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(RawHeaderValue::Plain(v.to_string()))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(RawHeaderValue::Plain(v.to_string()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let de = serde::de::value::MapAccessDeserializer::new(map);
        RawSecretHeader::deserialize(de).map(RawHeaderValue::Detailed)
    }
}

/// A header value with options.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecretHeader {
    /// The value; may use `${env:NAME}`.
    pub value: String,
    /// Redact the value everywhere the prober prints or stores it.
    #[serde(default)]
    pub secret: bool,
}

/// Expectations on the response. Every one is checked and reported.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of expectations such as `status:`, `body_contains:`, `json:`"
)]
pub struct RawExpect {
    /// Accepted status codes: numbers such as 200 or classes such as `2xx` (default `2xx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OneOrMany<RawStatus>>,
    /// Fail the run if it takes longer than this, e.g. `500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency: Option<String>,
    /// The body must contain each of these strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_contains: Vec<String>,
    /// The body must contain none of these strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_not_contains: Vec<String>,
    /// The body must match each of these regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_matches: Vec<String>,
    /// Checks on the JSON body, addressed by JSON path (RFC 9535).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<RawJsonExpect>,
    /// Checks on response headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RawHeaderExpect>,
    /// The server certificate must stay valid for at least this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_valid_days: Option<u32>,
    /// The HTTP version the exchange used: `"1.1"` or `"2"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<RawScalar>,
    /// The TLS version the connection used: `"1.2"` or `"1.3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<RawScalar>,
    /// A regular expression the negotiated cipher suite must match, e.g. `AES_256_GCM|CHACHA20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cipher: Option<String>,
    /// A regular expression the server certificate's issuer must match, e.g. `O=Let's Encrypt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_issuer: Option<String>,
    /// Names (or IP addresses) the server certificate must cover, by its SANs (`*.` wildcards as clients match them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_names: Vec<String>,
}

/// A status code (200) or class (`2xx`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a status code such as 200 or a class such as \"2xx\""
)]
pub enum RawStatus {
    Code(u16),
    Class(String),
}

/// One value or a list of them.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

// By hand rather than `untagged`, so that a bad item of a list is reported
// at its index with the item's own message.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OneOrManyVisitor(std::marker::PhantomData))
    }
}

struct OneOrManyVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for OneOrManyVisitor<T> {
    type Value = OneOrMany<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("one value or a list of values")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let de = serde::de::value::SeqAccessDeserializer::new(seq);
        Vec::<T>::deserialize(de).map(OneOrMany::Many)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let de = serde::de::value::MapAccessDeserializer::new(map);
        T::deserialize(de).map(OneOrMany::One)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        T::deserialize(serde::de::value::U64Deserializer::new(v)).map(OneOrMany::One)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        T::deserialize(serde::de::value::I64Deserializer::new(v)).map(OneOrMany::One)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        T::deserialize(serde::de::value::F64Deserializer::new(v)).map(OneOrMany::One)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        T::deserialize(serde::de::value::BoolDeserializer::new(v)).map(OneOrMany::One)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        T::deserialize(serde::de::value::StrDeserializer::new(v)).map(OneOrMany::One)
    }
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A check on one JSON path of the body: exactly one of `equals`, `exists`, `matches`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJsonExpect {
    /// RFC 9535 JSON path, such as `$.status` or `$.items[0].id`.
    pub path: String,
    /// The value found must equal this (any JSON value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// Whether the path must match something (true) or nothing (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The value found, as text, must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// A check on one response header: exactly one of `equals`, `matches`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderExpect {
    /// Header name (case-insensitive).
    pub name: String,
    /// The header's value must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The header's value must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// The JSON Schema of a probe file: one probe, or a list of probes.
pub fn json_schema() -> Value {
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    #[schemars(title = "prober probe file")]
    #[serde(untagged)]
    enum ProbeFile {
        One(Box<RawProbe>),
        Many(Vec<RawProbe>),
    }
    serde_json::to_value(schemars::schema_for!(ProbeFile)).unwrap_or(Value::Null)
}
