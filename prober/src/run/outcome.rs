//! The result of one run: data, never an error.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a run failed. The classes are stable: they are stored, graphed and alerted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The host name did not resolve.
    Dns,
    /// No TCP connection (refused, unreachable, reset during connect).
    Connect,
    /// The TLS handshake failed (untrusted, expired or wrong-host certificate, protocol error).
    Tls,
    /// The run did not finish within the probe's timeout.
    Timeout,
    /// The status code was not one of those expected.
    HttpStatus,
    /// The response broke an expectation other than the status.
    Assertion,
    /// The body was longer than `http.max_body_bytes`.
    BodyTooLarge,
    /// More redirects than `http.redirects` allows.
    RedirectLimit,
    /// The server answered with something that is not valid HTTP, or closed mid-response.
    InvalidResponse,
    /// The probe could not be prepared (an environment variable missing at run time).
    Config,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Dns => "dns",
            ErrorClass::Connect => "connect",
            ErrorClass::Tls => "tls",
            ErrorClass::Timeout => "timeout",
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::Assertion => "assertion",
            ErrorClass::BodyTooLarge => "body_too_large",
            ErrorClass::RedirectLimit => "redirect_limit",
            ErrorClass::InvalidResponse => "invalid_response",
            ErrorClass::Config => "config",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed run's class and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProbeError {
    pub class: ErrorClass,
    pub message: String,
}

/// Time spent in each phase, in microseconds. A phase that did not happen is
/// `None`: not reached (the run failed or timed out before it), or not part
/// of this run (DNS for an IP address, TLS for `http://`, connect on a reused
/// connection). So a phase's histogram only ever counts real measurements.
///
/// In JSON (the API, `prober once --json`, notifications, `runs.detail`) the
/// phases are milliseconds as numbers, `dns_ms` … `total_ms`, like every
/// duration the API gives; `null` for a phase that did not happen. Reading
/// accepts the older microsecond form (`dns_us` …) too, as stored before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(from = "PhasesWire")]
pub struct Phases {
    #[serde(rename = "dns_ms", serialize_with = "ms::opt")]
    #[schema(value_type = Option<f64>)]
    pub dns_us: Option<u64>,
    #[serde(rename = "connect_ms", serialize_with = "ms::opt")]
    #[schema(value_type = Option<f64>)]
    pub connect_us: Option<u64>,
    #[serde(rename = "tls_ms", serialize_with = "ms::opt")]
    #[schema(value_type = Option<f64>)]
    pub tls_us: Option<u64>,
    /// From the request written to the first byte of the response.
    #[serde(rename = "first_byte_ms", serialize_with = "ms::opt")]
    #[schema(value_type = Option<f64>)]
    pub first_byte_us: Option<u64>,
    /// From the first byte of the response to the last byte of the body.
    #[serde(rename = "transfer_ms", serialize_with = "ms::opt")]
    #[schema(value_type = Option<f64>)]
    pub transfer_us: Option<u64>,
    /// The whole run, redirects included.
    #[serde(rename = "total_ms", serialize_with = "ms::one")]
    #[schema(value_type = f64)]
    pub total_us: u64,
}

/// Microseconds written as milliseconds: the one conversion of every
/// duration the JSON API gives (`serialize_with` helpers and the plain function).
pub mod ms {
    use serde::Serializer;

    /// `us` in milliseconds (13812 µs → 13.812).
    pub fn of(us: u64) -> f64 {
        us as f64 / 1000.0
    }

    /// Milliseconds back to whole microseconds (negative and NaN → 0).
    pub fn to_us(ms: f64) -> u64 {
        let us = (ms * 1000.0).round();
        if us.is_finite() && us > 0.0 {
            us as u64
        } else {
            0
        }
    }

    pub fn one<S: Serializer>(us: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(of(*us))
    }

    pub fn signed<S: Serializer>(us: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*us as f64 / 1000.0)
    }

    pub fn de_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        <f64 as serde::Deserialize>::deserialize(d).map(to_us)
    }

    pub fn opt<S: Serializer>(us: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match us {
            Some(us) => s.serialize_f64(of(*us)),
            None => s.serialize_none(),
        }
    }
}

/// [`Phases`] as read from JSON: milliseconds, or the microseconds of
/// documents written before the API settled on milliseconds (alerts'
/// `last_failure`, `runs.detail`).
#[derive(Deserialize)]
struct PhasesWire {
    dns_ms: Option<f64>,
    connect_ms: Option<f64>,
    tls_ms: Option<f64>,
    first_byte_ms: Option<f64>,
    transfer_ms: Option<f64>,
    total_ms: Option<f64>,
    dns_us: Option<u64>,
    connect_us: Option<u64>,
    tls_us: Option<u64>,
    first_byte_us: Option<u64>,
    transfer_us: Option<u64>,
    total_us: Option<u64>,
}

impl From<PhasesWire> for Phases {
    fn from(w: PhasesWire) -> Phases {
        let pick = |ms: Option<f64>, us: Option<u64>| ms.map(ms::to_us).or(us);
        Phases {
            dns_us: pick(w.dns_ms, w.dns_us),
            connect_us: pick(w.connect_ms, w.connect_us),
            tls_us: pick(w.tls_ms, w.tls_us),
            first_byte_us: pick(w.first_byte_ms, w.first_byte_us),
            transfer_us: pick(w.transfer_ms, w.transfer_us),
            total_us: pick(w.total_ms, w.total_us).unwrap_or(0),
        }
    }
}

impl Phases {
    /// Adds another hop's phases (after a redirect) to these.
    pub fn add(&mut self, other: &Phases) {
        fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            }
        }
        self.dns_us = sum(self.dns_us, other.dns_us);
        self.connect_us = sum(self.connect_us, other.connect_us);
        self.tls_us = sum(self.tls_us, other.tls_us);
        self.first_byte_us = sum(self.first_byte_us, other.first_byte_us);
        self.transfer_us = sum(self.transfer_us, other.transfer_us);
    }
}

/// The server certificate, read even when it failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub not_after: DateTime<Utc>,
    /// Whole days until expiry; negative once expired.
    pub days_left: i64,
}

/// Longest excerpt of a body or value shown as `actual`.
const EXCERPT_CHARS: usize = 200;

/// Shortens `s` to a readable excerpt: one line (runs of whitespace, such
/// as an HTML body's newlines, become one space), [`EXCERPT_CHARS`] at
/// most, and the whole length when cut. Here, in the leaf every layer
/// imports, so a file's check can show a hostile value as a probe's
/// assertion does.
pub fn excerpt(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = flat.chars();
    let head: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}… ({} bytes)", s.len())
    } else {
        head
    }
}

/// One expectation, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AssertionResult {
    /// What was checked, e.g. `status`, `body contains`, `json $.status equals`.
    pub check: String,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
}

/// Everything one run measured. `prober once --json` prints exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    pub probe: String,
    /// Content hash of the probe definition that ran.
    pub probe_version: String,
    pub started_at: DateTime<Utc>,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
    /// The request as sent: method and URL of the last hop.
    pub request: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub phases: Phases,
    pub response_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    pub redirects: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<CertInfo>,
    pub assertions: Vec<AssertionResult>,
    /// W3C trace id sent in `traceparent`, to find the run in the backend's traces.
    pub trace_id: String,
    /// A scenario's steps, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepOutcome>,
    /// With `retry`: every attempt, the last one deciding the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// Kind-specific facts (DNS answers, gRPC status, TLS chain), by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub info: std::collections::BTreeMap<String, String>,
}

/// How a step of a scenario went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Passed,
    Failed,
    /// Not run: an earlier step failed (and this one is not `always`).
    Skipped,
}

/// One step of a scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepOutcome {
    pub name: String,
    pub status: StepStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
    pub request: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub phases: Phases,
    pub assertions: Vec<AssertionResult>,
    /// Names of the variables this step extracted (values are not shown: they may be tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extracted: Vec<String>,
}

/// One attempt of a retried run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
    #[serde(
        rename = "total_ms",
        serialize_with = "ms::one",
        deserialize_with = "ms::de_one"
    )]
    #[schema(value_type = f64)]
    pub total_us: u64,
}

impl Outcome {
    /// A run that failed before or outside the check itself.
    pub fn failed(
        probe: &str,
        version: &str,
        started_at: DateTime<Utc>,
        class: ErrorClass,
        message: String,
        elapsed: std::time::Duration,
    ) -> Outcome {
        Outcome {
            probe: probe.to_string(),
            probe_version: version.to_string(),
            started_at,
            success: false,
            error: Some(ProbeError { class, message }),
            request: String::new(),
            status_code: None,
            phases: Phases {
                total_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                ..Phases::default()
            },
            response_bytes: 0,
            remote_addr: None,
            redirects: 0,
            cert: None,
            assertions: Vec::new(),
            trace_id: String::new(),
            steps: Vec::new(),
            attempts: Vec::new(),
            info: Default::default(),
        }
    }

    /// Replaces every occurrence of each secret in every text of the outcome.
    /// A secret is also looked for as a URL would carry it (percent-encoded).
    pub fn redact(&mut self, secrets: &[String]) {
        if secrets.is_empty() {
            return;
        }
        let secrets = &secret_forms(secrets);
        let scrub = |s: &mut String| {
            for secret in secrets {
                if s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), "<redacted>");
                }
            }
        };
        scrub(&mut self.request);
        if let Some(e) = &mut self.error {
            scrub(&mut e.message);
        }
        for a in &mut self.assertions {
            scrub(&mut a.expected);
            scrub(&mut a.actual);
        }
        for st in &mut self.steps {
            scrub(&mut st.request);
            if let Some(e) = &mut st.error {
                scrub(&mut e.message);
            }
            for a in &mut st.assertions {
                scrub(&mut a.expected);
                scrub(&mut a.actual);
            }
        }
        for at in &mut self.attempts {
            if let Some(e) = &mut at.error {
                scrub(&mut e.message);
            }
        }
        for v in self.info.values_mut() {
            scrub(v);
        }
    }
}

/// Each secret as written and percent-encoded (`+` or `%20` for a space), longest
/// first, so a secret that holds another is replaced whole.
fn secret_forms(secrets: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(secrets.len());
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out.push(s.clone());
        let encoded: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
        if encoded != *s {
            out.push(encoded.replace('+', "%20"));
            out.push(encoded);
        }
    }
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_finds_secrets_as_written_and_as_a_url_carries_them() {
        let mut o = Outcome::failed(
            "p",
            "v",
            Utc::now(),
            ErrorClass::Assertion,
            "x".into(),
            std::time::Duration::ZERO,
        );
        o.request = "GET http://h/?k=s3cr%2Ft%20v&l=s3cr/t+v&m=s3cr%2Ft+v".into();
        o.redact(&["s3cr/t v".to_string()]);
        assert_eq!(
            o.request,
            "GET http://h/?k=<redacted>&l=s3cr/t+v&m=<redacted>"
        );
    }

    #[test]
    fn error_classes_serialize_as_their_stable_names() {
        for c in [
            ErrorClass::Dns,
            ErrorClass::HttpStatus,
            ErrorClass::BodyTooLarge,
            ErrorClass::RedirectLimit,
            ErrorClass::InvalidResponse,
        ] {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn phases_are_milliseconds_in_json_and_null_where_they_did_not_happen() {
        let p = Phases {
            dns_us: None,
            connect_us: Some(900),
            tls_us: None,
            first_byte_us: Some(10_250),
            transfer_us: Some(1),
            total_us: 13_812,
        };
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"dns_ms": null, "connect_ms": 0.9, "tls_ms": null,
                "first_byte_ms": 10.25, "transfer_ms": 0.001, "total_ms": 13.812})
        );
        assert_eq!(serde_json::from_value::<Phases>(json).unwrap(), p);
    }

    #[test]
    fn phases_stored_in_microseconds_still_read() {
        let old = serde_json::json!({"dns_us": 5, "connect_us": 900, "tls_us": null,
            "first_byte_us": 10_250, "transfer_us": null, "total_us": 13_812});
        let p: Phases = serde_json::from_value(old).unwrap();
        assert_eq!(
            (p.dns_us, p.connect_us, p.tls_us),
            (Some(5), Some(900), None)
        );
        assert_eq!(p.total_us, 13_812);
    }

    #[test]
    fn redirect_hops_add_up() {
        let mut a = Phases {
            dns_us: Some(1),
            connect_us: Some(2),
            ..Phases::default()
        };
        a.add(&Phases {
            dns_us: Some(10),
            tls_us: Some(5),
            ..Phases::default()
        });
        assert_eq!(a.dns_us, Some(11));
        assert_eq!(a.connect_us, Some(2));
        assert_eq!(a.tls_us, Some(5));
        assert_eq!(a.first_byte_us, None);
    }
}
