//! Bodies for each receiver type, from a notification's [`Content`].
//! Contracts: `shared/reference/contracts.md` (Alertmanager v2, PagerDuty
//! Events v2, Slack incoming webhooks).

use serde_json::{json, Map, Value};

use super::Content;
use crate::alert::Event;
use crate::config::receivers::{Receiver, ReceiverKind};

/// How often firing alerts are sent to Alertmanager again (as Prometheus does).
pub const ALERTMANAGER_RESEND: std::time::Duration = std::time::Duration::from_secs(60);

/// PagerDuty's limit on `payload.summary`.
pub const PAGERDUTY_SUMMARY_MAX: usize = 1024;

/// The body to POST to a receiver.
pub fn body(r: &Receiver, c: &Content) -> Value {
    match r.kind {
        ReceiverKind::Webhook => webhook(c),
        ReceiverKind::Slack => slack(c),
        ReceiverKind::PagerDuty => pagerduty(c, r.routing_key.as_deref().unwrap_or_default()),
        ReceiverKind::Alertmanager => alertmanager(c),
    }
}

/// What a rule's firing means, in words.
fn rule_text(rule: &str) -> &str {
    match rule {
        "failing" => "failing",
        "latency" => "slow",
        "slo_page" | "slo_ticket" => "burning its error budget",
        "cert_expiry" => "certificate expiring",
        other => other,
    }
}

/// The Alertmanager `alertname` of a rule.
fn alertname(rule: &str) -> &'static str {
    match rule {
        "latency" => "ProbeSlow",
        "slo_page" | "slo_ticket" => "ProbeErrorBudgetBurn",
        "cert_expiry" => "ProbeCertificateExpiring",
        _ => "ProbeFailing",
    }
}

/// One line: what is wrong, where, and the error.
pub fn summary(c: &Content) -> String {
    let what = rule_text(&c.rule);
    let head = match c.event {
        Event::Trigger => format!(
            "[{}] probe {} {what} at {}",
            c.severity.to_uppercase(),
            c.probe,
            c.location
        ),
        Event::Remind => format!(
            "[{} REMINDER] probe {} still {what} at {} (since {})",
            c.severity.to_uppercase(),
            c.probe,
            c.location,
            c.fired_at.unwrap_or(c.since).to_rfc3339()
        ),
        Event::Resolve => format!(
            "[RESOLVED] probe {} no longer {what} at {}",
            c.probe, c.location
        ),
    };
    match (&c.last_failure, c.event) {
        (Some(f), Event::Trigger | Event::Remind) if c.rule == "failing" => format!(
            "{head}: {} failed runs; {}: {}",
            c.failed_runs, f.error_class, f.error
        ),
        _ => format!("{head}: {}", c.reason),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn phases_text(c: &Content) -> Option<String> {
    let p = c.last_failure.as_ref()?.phases;
    let ms =
        |v: Option<u64>| v.map_or("-".to_string(), |us| format!("{:.1}ms", us as f64 / 1000.0));
    Some(format!(
        "dns {} · connect {} · tls {} · first byte {} · transfer {} · total {}",
        ms(p.dns_us),
        ms(p.connect_us),
        ms(p.tls_us),
        ms(p.first_byte_us),
        ms(p.transfer_us),
        ms(Some(p.total_us))
    ))
}

/// The generic webhook: the content itself, versioned.
fn webhook(c: &Content) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("version".into(), json!(1));
        m.insert("summary".into(), json!(summary(c)));
    }
    v
}

fn slack(c: &Content) -> Value {
    let text = summary(c);
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Probe*\n{}", c.probe)}),
        json!({"type": "mrkdwn", "text": format!("*Location*\n{}", c.location)}),
        json!({"type": "mrkdwn", "text": format!("*Severity*\n{}", c.severity)}),
        json!({"type": "mrkdwn", "text": format!("*State*\n{} since {}", c.state, c.since.to_rfc3339())}),
    ];
    if c.event != Event::Resolve {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Failed runs*\n{}", c.failed_runs)}));
    }
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", text)}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(f) = &c.last_failure {
        let mut detail = format!("*Last failure* ({}):\n```{}```", f.error_class, f.error);
        if let Some(s) = &f.step {
            detail.push_str(&format!("\nstep: `{s}`"));
        }
        if !f.request.is_empty() {
            detail.push_str(&format!("\nrequest: `{}`", f.request));
        }
        if let Some(a) = &f.assertion {
            detail.push_str(&format!(
                "\n{}: expected `{}`, got `{}`",
                a.check, a.expected, a.actual
            ));
        }
        if let Some(p) = phases_text(c) {
            detail.push_str(&format!("\n{p}"));
        }
        if let Some(t) = &f.trace_id {
            detail.push_str(&format!("\ntrace id: `{t}`"));
        }
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&detail, 2900)}}),
        );
    }
    let mut links = Vec::new();
    if let Some(u) = &c.runbook_url {
        links.push(format!("<{u}|Runbook>"));
    }
    if let Some(u) = &c.dashboard_url {
        links.push(format!("<{u}|Dashboard>"));
    }
    if let Some(u) = &c.trace_url {
        links.push(format!("<{u}|Trace of the last failed run>"));
    }
    if !links.is_empty() {
        blocks.push(
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": links.join(" · ")}]}),
        );
    }
    json!({"text": text, "blocks": blocks})
}

fn pagerduty(c: &Content, routing_key: &str) -> Value {
    let severity = if c.severity == "page" {
        "critical"
    } else {
        "warning"
    };
    let mut links = Vec::new();
    if let Some(u) = &c.runbook_url {
        links.push(json!({"href": u, "text": "Runbook"}));
    }
    if let Some(u) = &c.dashboard_url {
        links.push(json!({"href": u, "text": "Dashboard"}));
    }
    if let Some(u) = &c.trace_url {
        links.push(json!({"href": u, "text": "Trace of the last failed run"}));
    }
    let mut details = Map::new();
    details.insert("probe".into(), json!(c.probe));
    details.insert("location".into(), json!(c.location));
    details.insert("state".into(), json!(c.state));
    details.insert("since".into(), json!(c.since));
    details.insert("fired_at".into(), json!(c.fired_at));
    details.insert("failed_runs".into(), json!(c.failed_runs));
    details.insert("reason".into(), json!(c.reason));
    if let Some(f) = &c.last_failure {
        details.insert("error_class".into(), json!(f.error_class));
        details.insert("error".into(), json!(f.error));
        details.insert("failed_step".into(), json!(f.step));
        details.insert("request".into(), json!(f.request));
        if let Some(a) = &f.assertion {
            details.insert("failed_check".into(), json!(a.check));
            details.insert("expected".into(), json!(a.expected));
            details.insert("actual".into(), json!(a.actual));
        }
        details.insert("phases".into(), json!(f.phases));
        details.insert("trace_id".into(), json!(f.trace_id));
        details.insert("run_id".into(), json!(f.run_id));
    }
    if let Some(d) = &c.description {
        details.insert("description".into(), json!(d));
    }
    let mut body = json!({
        "routing_key": routing_key,
        // A reminder is a trigger with the same dedup key: PagerDuty folds it into the incident.
        "event_action": match c.event {
            Event::Resolve => "resolve",
            Event::Trigger | Event::Remind => "trigger",
        },
        "dedup_key": truncate(&c.dedup_key, 255),
        "payload": {
            "summary": truncate(&summary(c), PAGERDUTY_SUMMARY_MAX),
            "source": format!("prober/{}", c.location),
            "severity": severity,
            "timestamp": c.since,
            "component": c.probe,
            "group": c.location,
            "class": c.last_failure.as_ref().map(|f| f.error_class.clone()),
            "custom_details": details,
        },
        "client": "prober",
    });
    if let Value::Object(m) = &mut body {
        if !links.is_empty() {
            m.insert("links".into(), json!(links));
        }
        if let Some(u) = &c.dashboard_url {
            m.insert("client_url".into(), json!(u));
        }
    }
    body
}

fn alertmanager(c: &Content) -> Value {
    let mut annotations = Map::new();
    annotations.insert("summary".into(), json!(summary(c)));
    annotations.insert("failed_runs".into(), json!(c.failed_runs.to_string()));
    annotations.insert("reason".into(), json!(c.reason));
    if let Some(f) = &c.last_failure {
        annotations.insert("error_class".into(), json!(f.error_class));
        annotations.insert("error".into(), json!(f.error));
        if let Some(s) = &f.step {
            annotations.insert("failed_step".into(), json!(s));
        }
        if let Some(a) = &f.assertion {
            annotations.insert(
                "failed_check".into(),
                json!(format!(
                    "{}: expected {}, got {}",
                    a.check, a.expected, a.actual
                )),
            );
        }
        if let Some(p) = phases_text(c) {
            annotations.insert("phases".into(), json!(p));
        }
        if let Some(t) = &f.trace_id {
            annotations.insert("trace_id".into(), json!(t));
        }
        if let Some(u) = &c.trace_url {
            annotations.insert("trace_url".into(), json!(u));
        }
    }
    if let Some(d) = &c.description {
        annotations.insert("description".into(), json!(d));
    }
    if let Some(u) = &c.runbook_url {
        annotations.insert("runbook_url".into(), json!(u));
    }
    if let Some(u) = &c.dashboard_url {
        annotations.insert("dashboard_url".into(), json!(u));
    }
    let mut alert = json!({
        "labels": {
            "alertname": alertname(&c.rule),
            "probe": c.probe,
            "rule": c.rule,
            "location": c.location,
            "severity": c.severity,
        },
        "annotations": annotations,
        "startsAt": c.fired_at.unwrap_or(c.since),
    });
    if let Value::Object(m) = &mut alert {
        // Like Prometheus: a firing alert ends 4 re-send intervals from now
        // unless re-sent (so it resolves if the prober dies); a resolve ends it.
        let ends = match c.event {
            Event::Resolve => c.resolved_at.unwrap_or(c.since),
            Event::Trigger | Event::Remind => {
                chrono::Utc::now()
                    + chrono::Duration::from_std(ALERTMANAGER_RESEND * 4)
                        .unwrap_or(chrono::Duration::minutes(4))
            }
        };
        m.insert("endsAt".into(), json!(ends));
        if let Some(u) = &c.dashboard_url {
            m.insert("generatorURL".into(), json!(u));
        }
    }
    json!([alert])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_summary_is_cut_at_a_char_boundary() {
        let s = "é".repeat(800);
        let t = truncate(&s, PAGERDUTY_SUMMARY_MAX);
        assert!(t.len() <= PAGERDUTY_SUMMARY_MAX);
        assert!(t.ends_with("..."));
    }
}
