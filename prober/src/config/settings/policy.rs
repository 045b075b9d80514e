//! `alerting:` and `silences:`: the default alert policy, its overrides by
//! label, and silences and maintenance windows.

use std::time::Duration;

use super::super::kinds::{alert_overrides, AlertOverrides};
use super::super::raw::RawAlert;
use super::alerting::{Policy, Silence};
use super::file::{AlertingFile, ByLabelFile, SilenceFile};
use super::sink::Sink;
use super::{LabelOverride, Settings};

/// What `alerting:` and `silences:` resolve to.
pub(super) struct Alerting {
    pub(super) policy: Policy,
    pub(super) by_label: Vec<LabelOverride>,
    pub(super) silences: Vec<Silence>,
    pub(super) evaluate_every: Duration,
    pub(super) remind_every: Option<Duration>,
}

/// `alerting:` over the default policy, its overrides by label, the
/// periods, and `silences:`, every problem reported in place.
pub(super) fn alerting(
    sink: &mut Sink,
    f: AlertingFile,
    silence_files: Vec<Option<SilenceFile>>,
    d: &Settings,
) -> Alerting {
    let defaults = RawAlert {
        enabled: None,
        failures_to_fire: f.failures_to_fire,
        successes_to_resolve: f.successes_to_resolve,
        severity: f.severity.clone(),
        latency: None,
        slo: f.slo.clone(),
        cert_expiry_days: f.cert_expiry_days,
        min_locations: None,
        trend_severity: f.trend_severity.clone(),
    };
    let policy = overrides_at(sink, "alerting", &defaults).apply(d.alerting);
    let by_label = by_label(sink, f.by_label.as_deref().unwrap_or(&[]));
    let silences = silences(sink, silence_files);
    let evaluate_every = sink.duration(
        "alerting.evaluate_every",
        f.evaluate_every.as_deref(),
        d.evaluate_every,
    );
    let remind_every = (f.remind_every.as_deref())
        .map(|t| sink.duration("alerting.remind_every", Some(t), Duration::from_secs(1)));
    Alerting {
        policy,
        by_label,
        silences,
        evaluate_every,
        remind_every,
    }
}

/// Reads an `alert:`-shaped block of the settings at `at`, reporting its problems there.
fn overrides_at(sink: &mut Sink, at: &str, raw: &RawAlert) -> AlertOverrides {
    let (o, problems) = alert_overrides(raw);
    for (f, m) in problems {
        sink.error(&format!("{at}.{}", f.trim_start_matches("alert.")), m);
    }
    o
}

/// `alerting.by_label`: each entry's labels and overrides.
fn by_label(sink: &mut Sink, entries: &[Option<ByLabelFile>]) -> Vec<LabelOverride> {
    let mut out = Vec::new();
    for (i, b) in entries.iter().enumerate() {
        let at = format!("alerting.by_label[{i}]");
        let Some(b) = b else {
            sink.error(&at, "an empty entry; give labels and alert, or remove it");
            continue;
        };
        if b.labels.is_empty() {
            sink.error(
                &format!("{at}.labels"),
                "give at least one label; defaults for every probe go in alerting itself",
            );
        }
        out.push(LabelOverride {
            labels: b.labels.clone(),
            alert: overrides_at(sink, &format!("{at}.alert"), &b.alert),
        });
    }
    out
}

/// Checks the silences of the settings file.
fn silences(sink: &mut Sink, files: Vec<Option<SilenceFile>>) -> Vec<Silence> {
    use chrono::{DateTime, Utc};
    let mut out = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = format!("silences[{i}]");
        let Some(f) = f else {
            sink.error(&at, "an empty entry; give matchers, a time or a cron window, and a comment, or remove it");
            continue;
        };
        // Without an end it is not kept, but its other fields are still checked.
        let endless = f.ends_at.is_none() && f.cron.is_none();
        if endless {
            sink.error(&at, "give ends_at (a one-off silence) or cron and duration (a recurring maintenance window)");
        }
        let duration_ms = f.duration.as_deref().map(|t| {
            let d = sink.duration(&format!("{at}.duration"), Some(t), Duration::from_secs(1));
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        });
        let s = Silence {
            id: format!("file:{i}"),
            matchers: f.matchers,
            starts_at: f.starts_at.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            ends_at: f.ends_at.unwrap_or(DateTime::<Utc>::MAX_UTC),
            cron: f.cron,
            duration_ms,
            comment: f.comment,
            created_by: f.created_by.unwrap_or_else(|| "prober.yaml".into()),
            source: "file".into(),
        };
        if let Err(e) = s.validate() {
            // The message starts with the field it is about (`cron: …`): place it there.
            let (field, message) = match e.split_once(": ") {
                Some((f, m)) if ["matchers", "comment", "cron"].contains(&f) => {
                    (format!("{at}.{f}"), m.to_string())
                }
                _ if e.starts_with("ends_at") => (format!("{at}.ends_at"), e),
                _ if e.starts_with("cron and duration") => (format!("{at}.duration"), e),
                _ => (at.clone(), e),
            };
            // One line per problem (the cron crate's message points at the text with a caret line).
            let message = (message.lines())
                .filter(|l| l.trim() != "^")
                .flat_map(str::split_whitespace)
                .collect::<Vec<_>>()
                .join(" ")
                .replace(" )", ")");
            sink.error(&field, message);
            continue;
        }
        if !endless {
            out.push(s);
        }
    }
    out
}
