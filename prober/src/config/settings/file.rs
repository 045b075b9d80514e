//! The settings file: its raw shape (every key optional, unknown keys
//! refused) and reading it, every bad key reported with its place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::super::diag::{Diagnostic, Severity};
use super::super::load::{deserialize_all, Retry};
use super::super::raw::{RawAlert, RawSlo};
use super::super::yaml::{self, Document, Pos, ReadError};
use super::sink::Sink;
use super::MAX_FILE_ERRORS;

/// The `prober.yaml` file: every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SettingsFile {
    pub(super) database_url: Option<String>,
    pub(super) location: Option<String>,
    pub(super) probes: Option<Vec<PathBuf>>,
    pub(super) listen: Option<SocketAddr>,
    pub(super) max_concurrency: Option<usize>,
    pub(super) max_per_host: Option<usize>,
    pub(super) queue_capacity: Option<usize>,
    pub(super) queue_max_bytes: Option<usize>,
    pub(super) batch_size: Option<usize>,
    pub(super) flush_interval: Option<String>,
    pub(super) recent_runs: Option<usize>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) migrate: Option<bool>,
    pub(super) retention: Option<RetentionFile>,
    pub(super) alerting: Option<AlertingFile>,
    // Lists of entries hold `Option`s: a broken entry is reported and becomes
    // `null`, so the entries after it keep their index (and their place).
    pub(super) receivers: Option<Vec<Option<ReceiverFile>>>,
    pub(super) dashboard_url: Option<String>,
    pub(super) trace_url: Option<String>,
    pub(super) silences: Option<Vec<Option<SilenceFile>>>,
    pub(super) api_token: Option<String>,
    pub(super) api: Option<ApiFile>,
    pub(super) metrics_labels: Option<Vec<String>>,
    pub(super) trends: Option<TrendsFile>,
    pub(super) spool: Option<SpoolFile>,
    pub(super) otel: Option<OtelFile>,
    pub(super) ui: Option<super::ui::UiFile>,
    pub(super) browser: Option<super::browser::BrowserFile>,
    pub(super) proxy: Option<String>,
    pub(super) no_proxy: Option<String>,
}

/// `otel:` in `prober.yaml`: the OTLP export of runs as traces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OtelFile {
    pub(super) endpoint: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) headers: Option<std::collections::BTreeMap<String, String>>,
    pub(super) traces: Option<bool>,
    pub(super) queue_runs: Option<usize>,
    pub(super) self_traces: Option<bool>,
    pub(super) sample_ratio: Option<f64>,
    pub(super) metrics: Option<bool>,
    pub(super) metrics_temporality: Option<String>,
    pub(super) metrics_interval: Option<String>,
}

/// `spool:` in `prober.yaml`: results on local disk until Postgres has them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SpoolFile {
    pub(super) enabled: Option<bool>,
    pub(super) dir: Option<PathBuf>,
    pub(super) sync_every: Option<String>,
    pub(super) memory_bytes: Option<usize>,
}

/// `api:` in `prober.yaml`: who may call the API, and manual runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiFile {
    pub(super) public_read: Option<bool>,
    pub(super) tokens: Option<Vec<Option<TokenFile>>>,
    pub(super) run_min_interval: Option<String>,
    pub(super) manual_runs_count: Option<bool>,
}

/// One entry of `api.tokens`: a name, the value's SHA-256 or the value (`${file:…}`, `${env:…}`), scopes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenFile {
    pub(super) name: String,
    pub(super) sha256: Option<String>,
    pub(super) token: Option<String>,
    pub(super) scopes: Vec<String>,
}

/// A silence or maintenance window in `prober.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SilenceFile {
    pub(super) matchers: std::collections::BTreeMap<String, String>,
    pub(super) starts_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(super) ends_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(super) cron: Option<String>,
    pub(super) duration: Option<String>,
    pub(super) comment: String,
    pub(super) created_by: Option<String>,
}

/// `alerting.by_label`: overrides for the probes that carry all these labels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ByLabelFile {
    pub(super) labels: std::collections::BTreeMap<String, String>,
    pub(super) alert: RawAlert,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReceiverFile {
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) url: Option<String>,
    pub(super) secret: Option<String>,
    pub(super) routing_key: Option<String>,
    pub(super) labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertingFile {
    pub(super) failures_to_fire: Option<u32>,
    pub(super) successes_to_resolve: Option<u32>,
    pub(super) severity: Option<String>,
    pub(super) slo: Option<RawSlo>,
    pub(super) cert_expiry_days: Option<u32>,
    pub(super) trend_severity: Option<String>,
    pub(super) evaluate_every: Option<String>,
    pub(super) remind_every: Option<String>,
    pub(super) by_label: Option<Vec<Option<ByLabelFile>>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrendsFile {
    pub(super) enabled: Option<bool>,
    pub(super) analyse_every: Option<String>,
    pub(super) min_shift: Option<String>,
    pub(super) min_shift_ratio: Option<f64>,
    pub(super) max_pvalue: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionFile {
    pub(super) runs: Option<String>,
    pub(super) minutes: Option<String>,
    pub(super) hours: Option<String>,
}

/// The document of no file: every place in it is unknown.
pub(super) fn empty_document() -> Document {
    Document {
        value: serde_json::Value::Null,
        values: std::collections::HashMap::new(),
        keys: std::collections::HashMap::new(),
    }
}

/// Reads, parses and deserializes the settings file, reporting every bad key.
/// `None` when nothing more can be checked (unreadable, not YAML, not a mapping).
pub(super) fn read_file(path: &Path, sink: &mut Sink) -> Option<(SettingsFile, Vec<String>)> {
    let fatal = |sink: &mut Sink, pos: Pos, message: String| {
        sink.out.push(Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            pos,
            probe: None,
            field: None,
            message,
        });
    };
    let text = match yaml::read_bounded(path) {
        Ok(t) => t,
        Err(e) if !path.exists() || !matches!(e, ReadError::TooLarge) => {
            let hint = "pass the settings file with --config (or PROBER_CONFIG), or remove the option to use the defaults";
            let e = e.to_string();
            let e = e.strip_prefix("cannot read the file: ").unwrap_or(&e);
            fatal(
                sink,
                Pos::default(),
                format!("cannot read the settings file: {e}; {hint}"),
            );
            return None;
        }
        Err(e) => {
            fatal(sink, Pos { line: 1, col: 1 }, e.to_string());
            return None;
        }
    };
    let docs = match yaml::parse(&text) {
        Ok(d) => d,
        Err(e) => {
            fatal(sink, e.pos, format!("invalid YAML: {}", e.message));
            return None;
        }
    };
    let mut docs = docs.into_iter();
    let Some(doc) = docs.next() else {
        return Some((SettingsFile::default(), Vec::new()));
    };
    if let Some(extra) = docs.next() {
        let pos = extra.value_pos("");
        fatal(sink, pos, "a settings file holds one YAML document; remove this `---` and what follows, or merge it into the first".into());
    }
    match &doc.value {
        serde_json::Value::Null => return Some((SettingsFile::default(), Vec::new())),
        serde_json::Value::Object(_) => {}
        _ => {
            let pos = doc.value_pos("");
            fatal(sink, pos, "the settings file is a mapping of settings (`location: eu-west-1`, …); see README.md, Settings".into());
            return None;
        }
    }
    let value = doc.value.clone();
    sink.doc = doc;
    let retry = Retry {
        max_errors: MAX_FILE_ERRORS,
        keep_list_slots: true,
    };
    let (file, removed) = deserialize_all::<SettingsFile>(&mut sink.ctx(), value, retry);
    file.map(|f| (f, removed))
}
