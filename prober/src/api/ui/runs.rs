//! A probe page's runs: the last runs with their phases as a waterfall, the
//! whole story of the newest failed one, and the definition's versions with
//! what changed between them.

use maud::{html, Markup};
use serde_json::Value;

use super::chart::waterfall;
use super::{us, when};
use crate::config::Probe;
use crate::run::trace_id;
use crate::store::history::ProbeVersion;
use crate::store::read::StoredRun;

/// Most changes listed between two versions.
const MAX_CHANGES: usize = 30;
/// Longest value shown in a change, in characters.
const MAX_VALUE_CHARS: usize = 120;

/// The link to a run's trace: `trace_url` with `{trace_id}` replaced.
fn trace_link(trace_url: Option<&str>, id: &str) -> Markup {
    html! {
        @match trace_url {
            Some(u) => a href=(crate::config::settings::trace_link(u, id)) rel="noopener noreferrer" { code { (id) } },
            None => code { (id) },
        }
    }
}

pub fn runs_table(runs: &[StoredRun], trace_url: Option<&str>) -> Markup {
    let scale = runs
        .iter()
        .filter_map(|r| r.phases_us[0])
        .max()
        .unwrap_or(0) as f64;
    html! {
        @if runs.is_empty() { p.muted { "No runs stored in the last 7 days." } }
        @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Scheduled" } th scope="col" { "Result" } th.num scope="col" { "Total" }
                    th.hide-narrow scope="col" { "Phases (DNS, connect, TLS, first byte, transfer)" }
                    th.hide-narrow scope="col" { "Location" } th.hide-narrow scope="col" { "Trace" }
                } }
                tbody { @for r in runs {
                    tr data-run=(r.run_id) {
                        td { (when(r.scheduled_at)) }
                        td {
                            @if r.success { span.up { "ok" } } @else {
                                span.down { (r.error_class.as_deref().unwrap_or("failed")) }
                            }
                            @if let Some(c) = r.status_code { " " span.muted { (c) } }
                        }
                        td.num { (us(r.phases_us[0].map(i64::from))) }
                        td.hide-narrow { (waterfall(&r.phases_us, scale)) }
                        td.hide-narrow { (r.location) }
                        td.hide-narrow { (trace_link(trace_url, &trace_id(r.run_id))) }
                    }
                } }
            } }
        }
    }
}

/// The newest failed run among `runs`, told whole: when, what failed and
/// why, what was expected, the request, its steps and attempts, its trace.
pub fn failure_story(
    probe: &Probe,
    versions: &[ProbeVersion],
    runs: &[StoredRun],
    trace_url: Option<&str>,
) -> Markup {
    let Some(r) = runs.iter().find(|r| !r.success) else {
        return html! {};
    };
    // The definition the run ran: its version's, else (not stored, or older
    // than the versions read) the current one, said so.
    let (def, current) = match versions.iter().find(|v| v.version == r.version) {
        Some(v) => (v.definition.clone(), false),
        None => (
            serde_json::from_str(probe.definition.get()).unwrap_or(Value::Null),
            r.version != probe.version,
        ),
    };
    let note = if current {
        " (the current definition; the run's version is not stored)"
    } else {
        ""
    };
    let request = request_of(&def);
    let expect = def.get("expect").or_else(|| def.pointer("/http/expect"));
    let detail = r.detail.as_ref();
    html! {
        section.failure aria-label="The last failed run" {
            h2 { "The last failed run" }
            table {
                tbody {
                    tr { th scope="row" { "When" } td { (when(r.scheduled_at)) " at " (r.location) " (version " code { (r.version) } ")" } }
                    tr { th scope="row" { "Error class" } td { span.down { (r.error_class.as_deref().unwrap_or("unknown")) } } }
                    tr { th scope="row" { "What happened" } td.message { (r.error_message.as_deref().unwrap_or("no message stored")) } }
                    @if let Some(c) = r.status_code { tr { th scope="row" { "Status" } td { (c) } } }
                    @if let Some(req) = &request { tr { th scope="row" { "Request" } td { code { (req) } (note) } } }
                    @if let Some(e) = expect { tr { th scope="row" { "Expected" } td { code { (compact(e)) } (note) } } }
                    tr { th scope="row" { "Total" } td { (us(r.phases_us[0].map(i64::from))) } }
                    tr { th scope="row" { "Trace" } td { (trace_link(trace_url, &trace_id(r.run_id))) } }
                }
            }
            @if let Some(steps) = detail.and_then(|d| d.get("steps")).and_then(Value::as_array) {
                h3 { "Steps" }
                ol { @for s in steps {
                    li {
                        (s.get("name").and_then(Value::as_str).unwrap_or("step")) ": "
                        @match s.get("error") {
                            Some(e) if !e.is_null() => span.down { (e.get("message").and_then(Value::as_str).unwrap_or("failed")) },
                            _ => span.up { "ok" },
                        }
                    }
                } }
            }
            @if let Some(attempts) = detail.and_then(|d| d.get("attempts")).and_then(Value::as_array) {
                h3 { "Attempts" }
                ol { @for a in attempts { li { code { (compact(a)) } } } }
            }
        }
    }
}

/// The request a probe sends, as `METHOD URL` (or the kind's target).
fn request_of(def: &Value) -> Option<String> {
    if let Some(h) = def.get("http") {
        let method = h.get("method").and_then(Value::as_str).unwrap_or("GET");
        return Some(format!("{method} {}", h.get("url")?.as_str()?));
    }
    ["tcp", "dns", "grpc", "tls"]
        .iter()
        .find_map(|k| def.get(*k).map(|v| format!("{k} {}", compact(v))))
}

/// A JSON value on one line, cut to [`MAX_VALUE_CHARS`].
fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > MAX_VALUE_CHARS {
        let cut: String = s.chars().take(MAX_VALUE_CHARS).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// What changed from `old` to `new`: each leaf added, removed or changed, by path.
pub fn changes(old: &Value, new: &Value) -> Vec<String> {
    fn walk(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
        if out.len() > MAX_CHANGES {
            return;
        }
        match (old, new) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&p, a.get(k), b.get(k), out);
                }
            }
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => out.push(format!("{path}: {} → {}", compact(a), compact(b))),
            (None, Some(b)) => out.push(format!("{path}: added {}", compact(b))),
            (Some(a), None) => out.push(format!("{path}: removed (was {})", compact(a))),
            (None, None) => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out.truncate(MAX_CHANGES);
    out
}

pub fn versions_section(probe: &Probe, versions: &[ProbeVersion]) -> Markup {
    let current: Value = serde_json::from_str(probe.definition.get()).unwrap_or(Value::Null);
    let pretty = serde_json::to_string_pretty(&current).unwrap_or_default();
    html! {
        h2 { "Definition" }
        pre { code { (pretty) } }
        h2 { "Versions" }
        @if versions.is_empty() { p.muted { "No version stored yet." } }
        ol.plain { @for (i, v) in versions.iter().enumerate() {
            li {
                code { (v.version) } " first seen " (when(v.first_seen_at)) " · " (v.source)
                @if let Some(older) = versions.get(i + 1) {
                    @let c = changes(&older.definition, &v.definition);
                    ul { @for line in &c { li { code { (line) } } } }
                }
            }
        } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_each_leaf_added_removed_or_changed() {
        let old = json!({"every": "30s", "http": {"url": "http://a/", "expect": {"status": [200]}}, "labels": {"team": "pay"}});
        let new = json!({"every": "1m", "http": {"url": "http://a/", "expect": {"status": [200, 204]}}, "runbook": "r"});
        assert_eq!(
            changes(&old, &new),
            vec![
                "every: \"30s\" → \"1m\"",
                "http.expect.status: [200] → [200,204]",
                "labels: removed (was {\"team\":\"pay\"})",
                "runbook: added \"r\"",
            ]
        );
        assert!(changes(&new, &new).is_empty());
    }

    #[test]
    fn a_long_value_is_cut() {
        let v = json!("x".repeat(500));
        assert!(compact(&v).chars().count() <= MAX_VALUE_CHARS + 1);
    }
}
