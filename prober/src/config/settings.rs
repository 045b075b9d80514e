//! Daemon settings: flags > environment (`PROBER_*`, `DATABASE_URL`) > `prober.yaml` > defaults.
//!
//! Flags and environment come from clap (each flag names its variable); the
//! file fills what they left unset; the defaults fill the rest. The defaults
//! work in a fresh checkout against a local Postgres.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::yaml;

/// Where the daemon keeps its data unless told otherwise.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/prober";
/// The instance's location when none is set.
pub const DEFAULT_LOCATION: &str = "local";
/// `/healthz`, `/readyz` and (later) the API and `/metrics`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9680";
/// The settings file read when present in the working directory.
pub const DEFAULT_SETTINGS_FILE: &str = "prober.yaml";

/// Settings as given on the command line or in the environment; `None` = not given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// Settings file (default: prober.yaml, if present).
    #[arg(long = "config", env = "PROBER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Postgres URL; the database is created if missing.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// The name of this instance's location, recorded with every run (e.g. eu-west-1).
    #[arg(long, env = "PROBER_LOCATION")]
    pub location: Option<String>,
    /// Probe files or directories.
    #[arg(long = "probes", env = "PROBER_PROBES", value_delimiter = ',')]
    pub probes: Option<Vec<PathBuf>>,
    /// Address for /healthz, /readyz.
    #[arg(long, env = "PROBER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Runs in flight at once, across all probes.
    #[arg(long, env = "PROBER_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,
    /// Runs in flight at once against one host.
    #[arg(long, env = "PROBER_MAX_PER_HOST")]
    pub max_per_host: Option<usize>,
    /// Results waiting for Postgres before the oldest are dropped (and counted).
    #[arg(long, env = "PROBER_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Do not run database migrations at start.
    #[arg(long, env = "PROBER_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Bearer token for the API's write endpoints (silences); unset = they are refused.
    #[arg(long, env = "PROBER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// The `prober.yaml` file: every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    database_url: Option<String>,
    location: Option<String>,
    probes: Option<Vec<PathBuf>>,
    listen: Option<SocketAddr>,
    max_concurrency: Option<usize>,
    max_per_host: Option<usize>,
    queue_capacity: Option<usize>,
    batch_size: Option<usize>,
    flush_interval: Option<String>,
    recent_runs: Option<usize>,
    shutdown_grace: Option<String>,
    migrate: Option<bool>,
    retention: Option<RetentionFile>,
    alerting: Option<AlertingFile>,
    receivers: Option<Vec<ReceiverFile>>,
    dashboard_url: Option<String>,
    silences: Option<Vec<SilenceFile>>,
    api_token: Option<String>,
}

/// A silence or maintenance window in `prober.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceFile {
    matchers: std::collections::BTreeMap<String, String>,
    starts_at: Option<chrono::DateTime<chrono::Utc>>,
    ends_at: Option<chrono::DateTime<chrono::Utc>>,
    cron: Option<String>,
    duration: Option<String>,
    comment: String,
    created_by: Option<String>,
}

/// `alerting.by_label`: overrides for the probes that carry all these labels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ByLabelFile {
    labels: std::collections::BTreeMap<String, String>,
    alert: super::raw::RawAlert,
}

/// Alerting overrides for the probes that carry every one of `labels`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelOverride {
    pub labels: std::collections::BTreeMap<String, String>,
    pub alert: super::kinds::AlertOverrides,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverFile {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    secret: Option<String>,
    routing_key: Option<String>,
    labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertingFile {
    failures_to_fire: Option<u32>,
    successes_to_resolve: Option<u32>,
    severity: Option<String>,
    slo: Option<super::raw::RawSlo>,
    cert_expiry_days: Option<u32>,
    evaluate_every: Option<String>,
    remind_every: Option<String>,
    by_label: Option<Vec<ByLabelFile>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    runs: Option<String>,
    minutes: Option<String>,
    hours: Option<String>,
}

/// How long each kind of data is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Raw runs (dropped by whole day partitions).
    pub runs: Duration,
    /// Minute histograms and counters.
    pub minutes: Duration,
    /// Hour histograms and counters. Day rollups are kept forever.
    pub hours: Duration,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub location: String,
    pub probes: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub max_concurrency: usize,
    pub max_per_host: usize,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub recent_runs: usize,
    pub shutdown_grace: Duration,
    pub migrate: bool,
    pub retention: Retention,
    /// Default alerting policy; probes override it with `alert:`.
    pub alerting: crate::alert::Policy,
    /// Where notifications of firing and resolved alerts go.
    pub receivers: Vec<crate::notify::Receiver>,
    /// Link to a probe's dashboard; `{probe}` is replaced by its name.
    pub dashboard_url: Option<String>,
    /// Alerting overrides by label, applied in order between the defaults and a probe's own `alert:`.
    pub alerting_by_label: Vec<LabelOverride>,
    /// How often the periodic rules (latency, SLO burn rate), reminders and silences are evaluated.
    pub evaluate_every: Duration,
    /// Re-notify while an alert keeps firing; `None` = never.
    pub remind_every: Option<Duration>,
    /// Silences and maintenance windows from the settings file.
    pub silences: Vec<crate::alert::silence::Silence>,
    /// Bearer token of the silence endpoints.
    pub api_token: Option<ApiToken>,
    /// The settings file read, if any: a reload reads its alerting parts again.
    pub file: Option<PathBuf>,
}

/// The API token: shown as `<redacted>` wherever settings are printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(pub String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Default period of the periodic alert evaluation.
pub const DEFAULT_EVALUATE_EVERY: Duration = Duration::from_secs(30);

const DAY: Duration = Duration::from_secs(86_400);

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            database_url: DEFAULT_DATABASE_URL.to_string(),
            location: DEFAULT_LOCATION.to_string(),
            probes: vec![PathBuf::from("probes")],
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(([127, 0, 0, 1], 9680).into()),
            max_concurrency: 1024,
            max_per_host: 64,
            queue_capacity: 200_000,
            batch_size: 2_000,
            flush_interval: Duration::from_millis(250),
            recent_runs: 20,
            shutdown_grace: Duration::from_secs(10),
            migrate: true,
            retention: Retention {
                runs: 14 * DAY,
                minutes: 31 * DAY,
                hours: 400 * DAY,
            },
            alerting: crate::alert::Policy::default(),
            receivers: Vec::new(),
            dashboard_url: None,
            alerting_by_label: Vec::new(),
            evaluate_every: DEFAULT_EVALUATE_EVERY,
            remind_every: None,
            silences: Vec::new(),
            api_token: None,
            file: None,
        }
    }
}

impl Settings {
    /// Resolves settings from arguments/environment, the settings file, and defaults.
    pub fn resolve(args: &SettingsArgs) -> Result<Settings, String> {
        let (file, file_path) = match &args.config {
            Some(p) => (read_file(p)?, Some(p.clone())),
            None if Path::new(DEFAULT_SETTINGS_FILE).exists() => (
                read_file(Path::new(DEFAULT_SETTINGS_FILE))?,
                Some(PathBuf::from(DEFAULT_SETTINGS_FILE)),
            ),
            None => (SettingsFile::default(), None),
        };
        let d = Settings::default();
        let dur = |field: &str, v: Option<String>, default: Duration| -> Result<Duration, String> {
            match v {
                None => Ok(default),
                Some(text) => humantime::parse_duration(&text).map_err(|e| {
                    let place = file_path
                        .as_ref()
                        .map_or(String::new(), |p| format!("{}: ", p.display()));
                    format!("{place}{field}: {text:?} is not a duration ({e}); write it like 250ms, 10s, 14d")
                }),
            }
        };
        let retention = file.retention.clone().unwrap_or_default();
        let alerting_file = file.alerting.clone().unwrap_or_default();
        let defaults = super::raw::RawAlert {
            enabled: None,
            failures_to_fire: alerting_file.failures_to_fire,
            successes_to_resolve: alerting_file.successes_to_resolve,
            severity: alerting_file.severity.clone(),
            latency: None,
            slo: alerting_file.slo.clone(),
            cert_expiry_days: alerting_file.cert_expiry_days,
            min_locations: None,
        };
        let alerting = overrides_at("alerting", &defaults)?.apply(d.alerting);
        let mut alerting_by_label = Vec::new();
        for (i, b) in alerting_file.by_label.iter().flatten().enumerate() {
            if b.labels.is_empty() {
                return Err(format!("alerting.by_label[{i}].labels: give at least one label; defaults for every probe go in alerting itself"));
            }
            alerting_by_label.push(LabelOverride {
                labels: b.labels.clone(),
                alert: overrides_at(&format!("alerting.by_label[{i}]"), &b.alert)?,
            });
        }
        let silences = silences(file.silences.clone().unwrap_or_default(), &dur)?;
        let api_token = match args.api_token.clone().or(file.api_token.clone()) {
            Some(t) => Some(crate::notify::expand_env("api_token", &t)?)
                .filter(|t| !t.is_empty())
                .map(ApiToken),
            None => None,
        };
        let receivers = receivers(file.receivers.clone().unwrap_or_default())?;
        let s = Settings {
            database_url: (args.database_url.clone())
                .or(file.database_url)
                .unwrap_or(d.database_url),
            location: (args.location.clone())
                .or(file.location)
                .unwrap_or(d.location),
            probes: args.probes.clone().or(file.probes).unwrap_or(d.probes),
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            max_concurrency: (args.max_concurrency)
                .or(file.max_concurrency)
                .unwrap_or(d.max_concurrency),
            max_per_host: (args.max_per_host)
                .or(file.max_per_host)
                .unwrap_or(d.max_per_host),
            queue_capacity: (args.queue_capacity)
                .or(file.queue_capacity)
                .unwrap_or(d.queue_capacity),
            batch_size: file.batch_size.unwrap_or(d.batch_size),
            flush_interval: dur("flush_interval", file.flush_interval, d.flush_interval)?,
            recent_runs: file.recent_runs.unwrap_or(d.recent_runs),
            shutdown_grace: dur("shutdown_grace", file.shutdown_grace, d.shutdown_grace)?,
            migrate: !args.no_migrate && file.migrate.unwrap_or(d.migrate),
            retention: Retention {
                runs: dur("retention.runs", retention.runs, d.retention.runs)?,
                minutes: dur("retention.minutes", retention.minutes, d.retention.minutes)?,
                hours: dur("retention.hours", retention.hours, d.retention.hours)?,
            },
            alerting,
            receivers,
            dashboard_url: file.dashboard_url.clone(),
            alerting_by_label,
            evaluate_every: dur(
                "alerting.evaluate_every",
                alerting_file.evaluate_every.clone(),
                d.evaluate_every,
            )?,
            remind_every: match alerting_file.remind_every.clone() {
                None => None,
                Some(t) => Some(dur("alerting.remind_every", Some(t), Duration::ZERO)?),
            },
            silences,
            api_token,
            file: file_path.clone(),
        };
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.location.is_empty() || self.location.len() > 64 {
            problems.push("location must be 1 to 64 characters".to_string());
        }
        for (name, v) in [
            ("max_concurrency", self.max_concurrency),
            ("max_per_host", self.max_per_host),
            ("queue_capacity", self.queue_capacity),
            ("batch_size", self.batch_size),
            ("recent_runs", self.recent_runs),
        ] {
            if v == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        if self.evaluate_every < Duration::from_secs(1) {
            problems.push("alerting.evaluate_every must be at least 1s".into());
        }
        if self
            .remind_every
            .is_some_and(|r| r < Duration::from_secs(1))
        {
            problems.push("alerting.remind_every must be at least 1s".into());
        }
        if self.retention.minutes < self.retention.runs.min(DAY) {
            problems.push("retention.minutes must be at least a day".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid settings: {}", problems.join("; ")))
        }
    }
}

/// Reads an `alert:`-shaped block of the settings; problems name `at`.
fn overrides_at(
    at: &str,
    raw: &super::raw::RawAlert,
) -> Result<super::kinds::AlertOverrides, String> {
    let (o, problems) = super::kinds::alert_overrides(raw);
    if problems.is_empty() {
        return Ok(o);
    }
    let list: Vec<String> = problems
        .iter()
        .map(|(f, m)| format!("{at}.{}: {m}", f.trim_start_matches("alert.")))
        .collect();
    Err(format!("invalid settings: {}", list.join("; ")))
}

/// Reads a duration setting: (field, text if given, default).
type DurationField<'a> = dyn Fn(&str, Option<String>, Duration) -> Result<Duration, String> + 'a;

/// Checks the silences of the settings file.
fn silences(
    files: Vec<SilenceFile>,
    dur: &DurationField<'_>,
) -> Result<Vec<crate::alert::silence::Silence>, String> {
    use chrono::{DateTime, Utc};
    let mut out = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = format!("silences[{i}]");
        if f.ends_at.is_none() && f.cron.is_none() {
            return Err(format!("{at}: give ends_at (a one-off silence) or cron and duration (a recurring maintenance window)"));
        }
        let duration_ms = match f.duration {
            Some(t) => Some(
                u64::try_from(dur(&format!("{at}.duration"), Some(t), Duration::ZERO)?.as_millis())
                    .unwrap_or(u64::MAX),
            ),
            None => None,
        };
        let s = crate::alert::silence::Silence {
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
        s.validate().map_err(|e| format!("{at}: {e}"))?;
        out.push(s);
    }
    Ok(out)
}

/// Checks the receivers and substitutes `${env:NAME}` in their url, secret and routing key.
fn receivers(files: Vec<ReceiverFile>) -> Result<Vec<crate::notify::Receiver>, String> {
    use crate::notify::{expand_env, Receiver, ReceiverKind, PAGERDUTY_URL};
    let mut out: Vec<Receiver> = Vec::new();
    let mut problems = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = format!("receivers[{i}]");
        if f.name.is_empty() {
            problems.push(format!("{at}.name must not be empty"));
        }
        if out.iter().any(|r| r.name == f.name) {
            problems.push(format!(
                "{at}.name: {:?} is used by another receiver; names must be unique",
                f.name
            ));
        }
        let Some(kind) = ReceiverKind::parse(&f.kind) else {
            problems.push(format!(
                "{at}.type: {:?} is not a receiver type; use webhook, slack, pagerduty or alertmanager",
                f.kind
            ));
            continue;
        };
        let expand = |field: &str, v: Option<String>| -> Result<Option<String>, String> {
            v.map(|v| expand_env(&format!("{at}.{field}"), &v))
                .transpose()
        };
        let (url, secret, routing_key) = match (
            expand("url", f.url),
            expand("secret", f.secret),
            expand("routing_key", f.routing_key),
        ) {
            (Ok(u), Ok(s), Ok(k)) => (u, s, k),
            (u, s, k) => {
                problems.extend([u.err(), s.err(), k.err()].into_iter().flatten());
                continue;
            }
        };
        let url = match (url, kind) {
            (Some(u), _) => u,
            (None, ReceiverKind::PagerDuty) => PAGERDUTY_URL.to_string(),
            (None, _) => {
                problems.push(format!(
                    "{at}.url is required for a {} receiver",
                    kind.as_str()
                ));
                continue;
            }
        };
        if !matches!(url::Url::parse(&url), Ok(u) if u.scheme() == "http" || u.scheme() == "https")
        {
            problems.push(format!("{at}.url: not an http(s) URL"));
        }
        if kind == ReceiverKind::PagerDuty && routing_key.as_deref().is_none_or(str::is_empty) {
            problems.push(format!("{at}.routing_key is required for a pagerduty receiver (the integration key of the PagerDuty service)"));
        }
        if kind == ReceiverKind::Webhook && secret.as_deref() == Some("") {
            problems.push(format!("{at}.secret is empty; remove it or set a key"));
        }
        out.push(Receiver {
            name: f.name,
            kind,
            url,
            secret,
            routing_key,
            labels: f.labels.unwrap_or_default(),
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(format!("invalid receivers: {}", problems.join("; ")))
    }
}

fn read_file(path: &Path) -> Result<SettingsFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read settings file {}: {e}", path.display()))?;
    let docs = yaml::parse(&text).map_err(|e| {
        format!(
            "{}:{}:{}: invalid YAML: {}",
            path.display(),
            e.pos.line,
            e.pos.col,
            e.message
        )
    })?;
    let Some(doc) = docs.into_iter().next() else {
        return Ok(SettingsFile::default());
    };
    if doc.value.is_null() {
        return Ok(SettingsFile::default());
    }
    serde_path_to_error::deserialize(&doc.value).map_err(|e| {
        let field = e.path().to_string();
        let pos = doc.value_pos(&field);
        format!(
            "{}:{}:{}: {field}: {}",
            path.display(),
            pos.line,
            pos.col,
            e.inner()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile_dir();
        let file = dir.join("prober.yaml");
        std::fs::write(
            &file,
            "location: from-file\nmax_per_host: 7\nretention:\n  runs: 3d\n",
        )
        .unwrap();
        let args = SettingsArgs {
            config: Some(file),
            location: Some("from-flag".into()),
            ..SettingsArgs::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.location, "from-flag");
        assert_eq!(s.max_per_host, 7);
        assert_eq!(s.retention.runs, 3 * DAY);
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
    }

    #[test]
    fn a_typo_in_the_settings_file_is_an_error_with_its_line() {
        let dir = tempfile_dir();
        let file = dir.join("prober.yaml");
        std::fs::write(&file, "location: x\nmax_concurency: 3\n").unwrap();
        let args = SettingsArgs {
            config: Some(file),
            ..SettingsArgs::default()
        };
        let err = Settings::resolve(&args).unwrap_err();
        assert!(err.contains("max_concurency"), "{err}");
    }

    #[test]
    fn receivers_are_read_checked_and_unknown_keys_refused() {
        let dir = tempfile_dir();
        let file = dir.join("prober.yaml");
        std::env::set_var("PROBER_TEST_SETTINGS_KEY", "k3y");
        std::fs::write(
            &file,
            "dashboard_url: https://grafana.example/d/x?var-probe={probe}\nreceivers:\n  - {name: hook, type: webhook, url: \"http://127.0.0.1:9/h\", secret: \"${env:PROBER_TEST_SETTINGS_KEY}\", labels: {team: pay}}\n  - {name: pd, type: pagerduty, routing_key: abc}\n",
        )
        .unwrap();
        let args = SettingsArgs {
            config: Some(file.clone()),
            ..SettingsArgs::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.receivers.len(), 2);
        assert_eq!(s.receivers[0].secret.as_deref(), Some("k3y"));
        assert_eq!(
            s.receivers[0].labels.get("team").map(String::as_str),
            Some("pay")
        );
        assert_eq!(s.receivers[1].endpoint(), crate::notify::PAGERDUTY_URL);
        assert!(
            !format!("{s:?}").contains("k3y"),
            "secrets stay out of logs"
        );

        std::fs::write(
            &file,
            "receivers:\n  - {name: pd, type: pagerduty, routng_key: abc}\n",
        )
        .unwrap();
        let err = Settings::resolve(&args).unwrap_err();
        assert!(err.contains("routng_key"), "{err}");
        std::fs::write(&file, "receivers:\n  - {name: pd, type: pagerduty}\n").unwrap();
        let err = Settings::resolve(&args).unwrap_err();
        assert!(err.contains("routing_key is required"), "{err}");
        std::fs::write(
            &file,
            "receivers:\n  - {name: x, type: email, url: \"http://a/\"}\n",
        )
        .unwrap();
        let err = Settings::resolve(&args).unwrap_err();
        assert!(err.contains("not a receiver type"), "{err}");
    }

    #[test]
    fn alerting_label_overrides_silences_and_the_token_are_read_and_checked() {
        let dir = tempfile_dir();
        let file = dir.join("prober.yaml");
        std::env::set_var("PROBER_TEST_API_TOKEN", "t0k");
        std::fs::write(
            &file,
            "api_token: \"${env:PROBER_TEST_API_TOKEN}\"\nalerting:\n  failures_to_fire: 4\n  slo: {objective: 99.5}\n  remind_every: 4h\n  by_label:\n    - labels: {team: pay}\n      alert: {severity: ticket, min_locations: 2}\nsilences:\n  - matchers: {team: pay}\n    cron: \"0 0 2 * * Sun\"\n    duration: 2h\n    comment: weekly maintenance\n",
        )
        .unwrap();
        let args = SettingsArgs {
            config: Some(file.clone()),
            ..SettingsArgs::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.alerting.failures_to_fire, 4);
        assert_eq!(s.alerting.slo.map(|o| o.objective), Some(0.995));
        assert_eq!(s.remind_every, Some(Duration::from_secs(4 * 3600)));
        assert_eq!(s.alerting_by_label.len(), 1);
        assert_eq!(s.alerting_by_label[0].alert.min_locations, Some(2));
        assert_eq!(s.silences[0].duration_ms, Some(2 * 3600 * 1000));
        assert_eq!(s.silences[0].id, "file:0");
        assert_eq!(s.api_token, Some(ApiToken("t0k".into())));
        assert!(
            !format!("{s:?}").contains("t0k"),
            "the token stays out of logs"
        );

        for (text, needle) in [
            ("silences:\n  - matchers: {team: pay}\n    comment: x\n", "give ends_at"),
            ("silences:\n  - matchers: {team: pay}\n    cron: \"nope\"\n    duration: 1h\n    comment: x\n", "not a cron expression"),
            ("alerting:\n  by_label:\n    - labels: {team: pay}\n      alert: {severity: loud}\n", "alerting.by_label[0].severity"),
            ("alerting:\n  slo: {objective: 120}\n", "alerting.slo.objective"),
            ("alerting:\n  evaluate_every: 10ms\n", "evaluate_every must be at least 1s"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Settings::resolve(&args).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("prober-settings-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
