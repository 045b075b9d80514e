//! Evaluates a probe's expectations against a response. Every expectation is
//! checked and reported, with what was expected and what was found.

use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use crate::config::probe::{Expect, JsonCheck, TextCheck};
use crate::config::template::{Template, Vars};
pub use crate::run::excerpt;
use crate::run::{AssertionResult, CertInfo};

/// What the expectations look at.
pub struct ResponseView<'a> {
    pub status: u16,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub total: Duration,
    pub cert: Option<&'a CertInfo>,
    /// The certificate's SANs, for `cert_names`.
    pub cert_names: &'a [super::tls::San],
    /// What the connection agreed on: `http.version`, `tls.version`, … (the run's `info`).
    pub facts: &'a std::collections::BTreeMap<String, String>,
}

fn result(check: String, passed: bool, expected: String, actual: String) -> AssertionResult {
    AssertionResult {
        check,
        passed,
        expected,
        actual,
    }
}

/// The expected text, or why it could not be rendered (a scenario variable without a value).
fn expected_text(t: &Template, vars: &Vars) -> Result<String, String> {
    t.render_vars(vars).map_err(|e| e.to_string())
}

/// Checks every expectation; the status check always comes first. `vars` fills `${var}`.
pub fn evaluate(expect: &Expect, r: &ResponseView<'_>, vars: &Vars) -> Vec<AssertionResult> {
    let mut out = Vec::new();
    let accepted: Vec<String> = expect.status.iter().map(ToString::to_string).collect();
    out.push(result(
        "status".into(),
        expect.status.iter().any(|s| s.matches(r.status)),
        accepted.join(" or "),
        r.status.to_string(),
    ));
    if let Some(max) = expect.max_latency {
        out.push(result(
            "max latency".into(),
            r.total <= max,
            format!("<= {}", humantime::format_duration(max)),
            format!("{:.1}ms", r.total.as_secs_f64() * 1000.0),
        ));
    }
    let body = String::from_utf8_lossy(r.body);
    for t in &expect.body_contains {
        out.push(match expected_text(t, vars) {
            Ok(s) => body_result("body contains", body.contains(s.as_str()), &s, &body),
            Err(e) => result("body contains".into(), false, t.source().to_string(), e),
        });
    }
    for t in &expect.body_not_contains {
        out.push(match expected_text(t, vars) {
            Ok(s) => body_result(
                "body does not contain",
                !body.contains(s.as_str()),
                &s,
                &body,
            ),
            Err(e) => result(
                "body does not contain".into(),
                false,
                t.source().to_string(),
                e,
            ),
        });
    }
    for re in &expect.body_matches {
        let found = re.is_match(&body);
        out.push(body_result("body matches", found, re.as_str(), &body));
    }
    if !expect.json.is_empty() {
        evaluate_json(expect, &body, vars, &mut out);
    }
    for h in &expect.headers {
        let values: Vec<&str> = (r.headers.get_all(&h.name).iter())
            .filter_map(|v| v.to_str().ok())
            .collect();
        let actual = if values.is_empty() {
            "(header absent)".to_string()
        } else {
            values.join(", ")
        };
        let (what, expected, passed) = match &h.check {
            TextCheck::Equals(t) => match expected_text(t, vars) {
                Ok(e) => {
                    let passed = values.iter().any(|v| *v == e);
                    ("equals", e, passed)
                }
                Err(e) => ("equals", format!("{} ({e})", t.source()), false),
            },
            TextCheck::Matches(re) => (
                "matches",
                re.as_str().to_string(),
                values.iter().any(|v| re.is_match(v)),
            ),
        };
        out.push(result(
            format!("header {} {what}", h.name),
            passed,
            expected,
            actual,
        ));
    }
    if let Some(days) = expect.cert_valid_days {
        let (passed, actual) = match r.cert {
            Some(c) => (
                c.days_left >= i64::from(days),
                format!("{} days left (expires {})", c.days_left, c.not_after),
            ),
            None => (false, "no certificate (not an https:// URL?)".to_string()),
        };
        out.push(result(
            "certificate valid for".into(),
            passed,
            format!(">= {days} days"),
            actual,
        ));
    }
    evaluate_cert(expect, r, &mut out);
    evaluate_facts(expect, r, &mut out);
    out
}

/// `cert_issuer`, `cert_names`, `tls_cipher`: the certificate and the suite the connection used.
fn evaluate_cert(expect: &Expect, r: &ResponseView<'_>, out: &mut Vec<AssertionResult>) {
    const NONE: &str = "no certificate (not an https:// URL?)";
    if let Some(re) = &expect.cert_issuer {
        let (passed, actual) = r.cert.map_or((false, NONE.to_string()), |c| {
            (re.is_match(&c.issuer), c.issuer.clone())
        });
        out.push(result(
            "certificate issuer matches".into(),
            passed,
            re.as_str().to_string(),
            actual,
        ));
    }
    let names: Vec<String> = r.cert_names.iter().map(ToString::to_string).collect();
    for name in &expect.cert_names {
        let actual = if r.cert.is_none() {
            NONE.to_string()
        } else {
            format!(
                "SANs: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        };
        out.push(result(
            "certificate covers".into(),
            super::tls::covers(r.cert_names, name),
            name.clone(),
            actual,
        ));
    }
    if let Some(re) = &expect.tls_cipher {
        let got = r.facts.get("tls.cipher");
        out.push(result(
            "tls cipher matches".into(),
            got.is_some_and(|c| re.is_match(c)),
            re.as_str().to_string(),
            got.cloned()
                .unwrap_or_else(|| "none (no TLS on this connection)".into()),
        ));
    }
}

/// `http_version` and `tls_version`: what the connection agreed on.
fn evaluate_facts(expect: &Expect, r: &ResponseView<'_>, out: &mut Vec<AssertionResult>) {
    for (check, fact, want) in [
        ("http version", "http.version", &expect.http_version),
        ("tls version", "tls.version", &expect.tls_version),
    ] {
        if let Some(want) = want {
            let got = r.facts.get(fact);
            out.push(result(
                check.into(),
                got == Some(want),
                want.clone(),
                got.cloned()
                    .unwrap_or_else(|| "none (no TLS on this connection)".into()),
            ));
        }
    }
}

fn body_result(check: &str, passed: bool, expected: &str, body: &str) -> AssertionResult {
    result(check.into(), passed, format!("{expected:?}"), excerpt(body))
}

fn evaluate_json(expect: &Expect, body: &str, vars: &Vars, out: &mut Vec<AssertionResult>) {
    let doc: Result<Value, _> = serde_json::from_str(body);
    for j in &expect.json {
        // A string expectation may hold variables: render it to the JSON string it stands for.
        let text = match &j.check {
            JsonCheck::EqualsText(t) => Some(expected_text(t, vars).map(Value::String)),
            _ => None,
        };
        let (what, expected) = match (&j.check, &text) {
            (JsonCheck::EqualsText(t), Some(Err(e))) => ("equals", format!("{} ({e})", t.source())),
            (JsonCheck::EqualsText(_), Some(Ok(v))) => ("equals", v.to_string()),
            (JsonCheck::EqualsText(t), None) => ("equals", t.source().to_string()),
            (JsonCheck::Equals(v), _) => ("equals", v.to_string()),
            (JsonCheck::Exists(e), _) => ("exists", e.to_string()),
            (JsonCheck::Matches(re), _) => ("matches", re.as_str().to_string()),
        };
        let check = format!("json {} {what}", j.path_src);
        let doc = match &doc {
            Ok(d) => d,
            Err(e) => {
                out.push(result(
                    check,
                    false,
                    expected,
                    format!("the body is not JSON ({e}): {}", excerpt(body)),
                ));
                continue;
            }
        };
        let found: Vec<&Value> = j.path.query(doc).all();
        let actual = match found.as_slice() {
            [] => "(no match)".to_string(),
            [one] => excerpt(&one.to_string()),
            many => excerpt(&Value::Array(many.iter().map(|v| (*v).clone()).collect()).to_string()),
        };
        let passed = match &j.check {
            JsonCheck::Equals(v) => found.len() == 1 && found[0] == v,
            JsonCheck::EqualsText(_) => match &text {
                Some(Ok(v)) => found.len() == 1 && found[0] == v,
                _ => false,
            },
            JsonCheck::Exists(e) => found.is_empty() != *e,
            JsonCheck::Matches(re) => {
                !found.is_empty()
                    && found.iter().all(|v| match v {
                        Value::String(s) => re.is_match(s),
                        other => re.is_match(&other.to_string()),
                    })
            }
        };
        out.push(result(check, passed, expected, actual));
    }
}
