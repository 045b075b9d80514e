//! Daemon settings: flags > environment (`PROBER_*`, `DATABASE_URL`) > `prober.yaml` > defaults.
//!
//! Flags and environment come from clap (each flag names its variable); the
//! file fills what they left unset; the defaults fill the rest. The defaults
//! work in a fresh checkout against a local Postgres.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::access::{ApiAccess, NamedToken, Scope, MIN_TOKEN_LEN};
use super::diag::{Ctx, Diagnostic, Severity};
use super::yaml::{self, Document, Pos};

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
    /// Settings file [default: prober.yaml in the working directory, if present].
    #[arg(long = "config", env = "PROBER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Postgres URL; the database is created if missing [default: postgres://postgres@127.0.0.1:5432/prober].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// The name of this instance's location, recorded with every run, e.g. eu-west-1 [default: local].
    #[arg(long, env = "PROBER_LOCATION")]
    pub location: Option<String>,
    /// Probe files or directories, comma-separated [default: probes].
    #[arg(long = "probes", env = "PROBER_PROBES", value_delimiter = ',')]
    pub probes: Option<Vec<PathBuf>>,
    /// Address of the HTTP server: /healthz, /readyz, /metrics and the API /api/v1/… [default: 127.0.0.1:9680].
    #[arg(long, env = "PROBER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Runs in flight at once, across all probes [default: 1024].
    #[arg(long, env = "PROBER_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,
    /// Runs in flight at once against one host [default: 64].
    #[arg(long, env = "PROBER_MAX_PER_HOST")]
    pub max_per_host: Option<usize>,
    /// Results waiting for Postgres before the oldest are dropped and counted [default: 200000].
    #[arg(long, env = "PROBER_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Do not run database migrations at start [default: they run].
    #[arg(long, env = "PROBER_NO_MIGRATE")]
    pub no_migrate: bool,
    /// An admin bearer token for the API's write endpoints, named `api_token` in the audit log; more, scoped tokens go in prober.yaml's api.tokens [default: none; writes are refused].
    #[arg(long, env = "PROBER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Probe labels added to every per-probe series of /metrics, comma-separated, e.g. team,service [default: none].
    #[arg(
        long = "metrics-labels",
        env = "PROBER_METRICS_LABELS",
        value_delimiter = ','
    )]
    pub metrics_labels: Option<Vec<String>>,
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
    // Lists of entries hold `Option`s: a broken entry is reported and becomes
    // `null`, so the entries after it keep their index (and their place).
    receivers: Option<Vec<Option<ReceiverFile>>>,
    dashboard_url: Option<String>,
    silences: Option<Vec<Option<SilenceFile>>>,
    api_token: Option<String>,
    api: Option<ApiFile>,
    metrics_labels: Option<Vec<String>>,
}

/// `api:` in `prober.yaml`: who may call the API, and manual runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFile {
    public_read: Option<bool>,
    tokens: Option<Vec<Option<TokenFile>>>,
    run_min_interval: Option<String>,
    manual_runs_count: Option<bool>,
}

/// One entry of `api.tokens`: a name, the value's SHA-256 or the value (`${file:…}`, `${env:…}`), scopes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    name: String,
    sha256: Option<String>,
    token: Option<String>,
    scopes: Vec<String>,
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
    by_label: Option<Vec<Option<ByLabelFile>>>,
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
    pub alerting: super::policy::Policy,
    /// Where notifications of firing and resolved alerts go.
    pub receivers: Vec<super::receivers::Receiver>,
    /// Link to a probe's dashboard; `{probe}` is replaced by its name.
    pub dashboard_url: Option<String>,
    /// Alerting overrides by label, applied in order between the defaults and a probe's own `alert:`.
    pub alerting_by_label: Vec<LabelOverride>,
    /// How often the periodic rules (latency, SLO burn rate), reminders and silences are evaluated.
    pub evaluate_every: Duration,
    /// Re-notify while an alert keeps firing; `None` = never.
    pub remind_every: Option<Duration>,
    /// Silences and maintenance windows from the settings file.
    pub silences: Vec<super::policy::Silence>,
    /// `api_token` / `PROBER_API_TOKEN`: an admin token named `api_token`.
    pub api_token: Option<ApiToken>,
    /// `api:` — named, scoped tokens, public reads, manual-run limits.
    pub api: ApiAccess,
    /// The settings file read, if any: a reload reads its alerting parts again.
    pub file: Option<PathBuf>,
    /// Probe labels added to every per-probe series of `/metrics` (a probe without one gets "").
    pub metrics_labels: Vec<String>,
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
            alerting: super::policy::Policy::default(),
            receivers: Vec::new(),
            dashboard_url: None,
            alerting_by_label: Vec::new(),
            evaluate_every: DEFAULT_EVALUATE_EVERY,
            remind_every: None,
            silences: Vec::new(),
            api_token: None,
            api: ApiAccess::default(),
            file: None,
            metrics_labels: Vec::new(),
        }
    }
}

/// How an unset `${env:NAME}` is treated: an error when the daemon starts
/// (it cannot send without the value), a warning for `prober check`, which
/// runs where the daemon's environment is usually not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvMode {
    Require,
    Warn,
}

/// Most probe labels `/metrics` adds to per-probe series: each one multiplies nothing
/// (one value per probe) but lengthens every line of a page that can reach 85 MB.
pub const MAX_METRICS_LABELS: usize = 10;
/// Longest value of a probe label on `/metrics`, in bytes; longer values are cut.
pub const MAX_METRICS_LABEL_VALUE: usize = 128;
/// Label names `/metrics` uses itself (or Prometheus reserves); a probe label cannot take them.
pub const RESERVED_METRICS_LABELS: &[&str] = &[
    "probe",
    "location",
    "le",
    "result",
    "phase",
    "error_class",
    "job",
    "instance",
];

/// Where settings given as flags or environment variables are reported.
const FROM_FLAGS: &str = "(flags or environment)";
/// The most problems reported for one settings file.
const MAX_FILE_ERRORS: usize = 100;

/// The settings read and checked: what `prober check --config` prints and
/// what the daemon refuses to start (or reload) with.
#[derive(Debug, Default)]
pub struct SettingsCheck {
    /// The settings, when there is no error.
    pub settings: Option<Settings>,
    /// Every problem, placed at `file:line:column` of the settings file (or naming the flag).
    pub diagnostics: Vec<Diagnostic>,
    /// The settings file read, if any.
    pub file: Option<PathBuf>,
    /// The probe paths the daemon would load (flag, file or default), known even with errors.
    pub probes: Vec<PathBuf>,
}

impl SettingsCheck {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        (self.diagnostics.iter()).filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        (self.diagnostics.iter()).filter(|d| d.severity == Severity::Warning)
    }
}

impl Settings {
    /// Resolves settings from arguments/environment, the settings file, and
    /// defaults. The error lists every problem, one per line, each with its place.
    pub fn resolve(args: &SettingsArgs) -> Result<Settings, String> {
        let check = Settings::check(args, EnvMode::Require);
        for w in check.warnings() {
            tracing::warn!("{w}");
        }
        match check.settings {
            Some(s) => Ok(s),
            None => {
                let mut lines: Vec<String> = check.errors().map(ToString::to_string).collect();
                let n = lines.len();
                let how = match &check.file {
                    Some(f) => format!("`prober check --config {}` checks it offline", f.display()),
                    None => "see README.md, Settings".to_string(),
                };
                lines.push(format!(
                    "{n} error(s) in the settings; fix them and start again ({how})"
                ));
                Err(lines.join("\n"))
            }
        }
    }

    /// Reads the settings file (`--config`, or `prober.yaml` in the working
    /// directory if present) and checks it with the flags and environment,
    /// reporting every problem. Neither the database nor the network is touched.
    pub fn check(args: &SettingsArgs, mode: EnvMode) -> SettingsCheck {
        let path = match &args.config {
            Some(p) => Some(p.clone()),
            None if Path::new(DEFAULT_SETTINGS_FILE).exists() => {
                Some(PathBuf::from(DEFAULT_SETTINGS_FILE))
            }
            None => None,
        };
        let mut sink = Sink {
            file: path.clone().unwrap_or_else(|| PathBuf::from(FROM_FLAGS)),
            doc: empty_document(),
            out: Vec::new(),
            mode,
        };
        let file = match &path {
            Some(p) => read_file(p, &mut sink),
            None => Some((SettingsFile::default(), Vec::new())),
        };
        let Some((file, removed)) = file else {
            return SettingsCheck {
                settings: None,
                diagnostics: sink.out,
                probes: args
                    .probes
                    .clone()
                    .unwrap_or_else(|| Settings::default().probes),
                file: path,
            };
        };
        let from_file = sink.out.len();
        let mut settings = build(args, file, &mut sink);
        settings.file.clone_from(&path);
        // A key removed for a bad value is reported already: drop complaints its removal caused.
        let tail = sink.out.split_off(from_file);
        sink.out.extend(tail.into_iter().filter(|d| match &d.field {
            Some(f) => !removed.iter().any(|r| super::load::related(r, f)),
            None => true,
        }));
        (sink.out).sort_by_key(|d| (d.file != sink.file, d.pos.line, d.pos.col));
        let ok = !sink.out.iter().any(|d| d.severity == Severity::Error);
        SettingsCheck {
            probes: settings.probes.clone(),
            settings: ok.then_some(settings),
            diagnostics: sink.out,
            file: path,
        }
    }
}

/// Where problems of the settings go: placed in the file by path, or at the flag.
struct Sink {
    file: PathBuf,
    doc: Document,
    out: Vec<Diagnostic>,
    mode: EnvMode,
}

impl Sink {
    fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            file: &self.file,
            doc: &self.doc,
            probe: None,
            out: &mut self.out,
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.ctx().error(field, message);
    }

    fn warning(&mut self, field: &str, message: impl Into<String>) {
        self.ctx().warning(field, message);
    }

    /// A problem with a value that came from `flag` (or its variable) rather than the file.
    fn flag_error(&mut self, flag: &str, field: &str, message: impl Into<String>) {
        self.out.push(Diagnostic {
            severity: Severity::Error,
            file: PathBuf::from(flag),
            pos: Pos::default(),
            probe: None,
            field: Some(field.to_string()),
            message: message.into(),
        });
    }

    /// A problem with a value that came from `flag` when `from_flag`, else from the file.
    fn place(&mut self, from_flag: bool, flag: &str, field: &str, message: impl Into<String>) {
        if from_flag {
            self.flag_error(flag, field, message);
        } else {
            self.error(field, message);
        }
    }

    /// A duration setting: its value, or the default when absent (or bad, reported).
    fn duration(&mut self, field: &str, text: Option<&str>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        humantime::parse_duration(text).unwrap_or_else(|e| {
            self.error(
                field,
                format!("{text:?} is not a duration ({e}); write it with its unit, like 250ms, 10s, 14d"),
            );
            default
        })
    }

    /// `value` with `${env:NAME}` substituted; `None` when it cannot be known
    /// here: a malformed reference (an error) or an unset variable (an error
    /// when the daemon starts, a warning for `prober check`). `whose` names the
    /// setting's owner, such as `receiver "chat"`.
    fn expand(&mut self, field: &str, value: &str, whose: &str) -> Option<String> {
        let vars = match env_refs(value) {
            Ok(v) => v,
            Err(e) => {
                self.error(field, e);
                return None;
            }
        };
        let unset: Vec<&str> = (vars.iter().copied())
            .filter(|v| std::env::var_os(v).is_none())
            .collect();
        if unset.is_empty() {
            return match super::template::expand_env(field, value) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(field, e);
                    None
                }
            };
        }
        for var in unset {
            match self.mode {
                EnvMode::Require => self.error(
                    field,
                    format!("{whose}: environment variable {var} is not set (used as ${{env:{var}}}); export it before starting the prober, or write the value in the file"),
                ),
                EnvMode::Warn => self.warning(
                    field,
                    format!("{whose}: environment variable {var} is not set here; the daemon refuses to start until it is"),
                ),
            }
        }
        None
    }
}

fn empty_document() -> Document {
    Document {
        value: serde_json::Value::Null,
        values: std::collections::HashMap::new(),
        keys: std::collections::HashMap::new(),
    }
}

/// The variables `${env:NAME}` of `value` refers to; a malformed reference is an error.
fn env_refs(value: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` without a closing `}`; write it like ${env:NAME}".into());
        };
        let inner = &after[..end];
        let Some(name) = inner.strip_prefix("env:") else {
            return Err(format!(
                "`${{{inner}}}` is not a setting placeholder; only ${{env:NAME}} (an environment variable) is replaced here"
            ));
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{env:{name}}}` is not a valid environment variable name; use letters, digits and _"
            ));
        }
        out.push(name);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Reads, parses and deserializes the settings file, reporting every bad key.
/// `None` when nothing more can be checked (unreadable, not YAML, not a mapping).
fn read_file(path: &Path, sink: &mut Sink) -> Option<(SettingsFile, Vec<String>)> {
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
        Err(e) if !path.exists() || e.starts_with("cannot read") => {
            let hint = "pass the settings file with --config (or PROBER_CONFIG), or remove the option to use the defaults";
            let e = e.strip_prefix("cannot read the file: ").unwrap_or(&e);
            fatal(
                sink,
                Pos::default(),
                format!("cannot read the settings file: {e}; {hint}"),
            );
            return None;
        }
        Err(e) => {
            fatal(sink, Pos { line: 1, col: 1 }, e);
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
    let retry = super::load::Retry {
        max_errors: MAX_FILE_ERRORS,
        keep_list_slots: true,
    };
    let (file, removed) =
        super::load::deserialize_all::<SettingsFile>(&mut sink.ctx(), value, retry);
    file.map(|f| (f, removed))
}

/// Turns the file and the flags into settings, reporting every problem in `sink`.
fn build(args: &SettingsArgs, file: SettingsFile, sink: &mut Sink) -> Settings {
    let d = Settings::default();
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
    let alerting = overrides_at(sink, "alerting", &defaults).apply(d.alerting);
    let alerting_by_label = by_label(sink, alerting_file.by_label.as_deref().unwrap_or(&[]));
    let silences = silences(sink, file.silences.unwrap_or_default());
    let api_token = match (&args.api_token, &file.api_token) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(t)) => sink.expand("api_token", t, "the API token"),
        (None, None) => None,
    }
    .filter(|t| !t.is_empty())
    .map(ApiToken);
    if api_token
        .as_ref()
        .is_some_and(|t| t.0.chars().count() < MIN_TOKEN_LEN)
    {
        sink.place(
            args.api_token.is_some(),
            "--api-token / PROBER_API_TOKEN",
            "api_token",
            format!("is shorter than {MIN_TOKEN_LEN} characters; use a random one, e.g. `openssl rand -hex 32`"),
        );
    }
    let api = api_access(sink, file.api.clone().unwrap_or_default());
    let receivers = receivers(sink, file.receivers.unwrap_or_default());
    if let Some(t) = &file.dashboard_url {
        if let Err(e) = check_dashboard_url(t) {
            sink.error("dashboard_url", e);
        }
    }
    let metrics_labels = match (&args.metrics_labels, file.metrics_labels) {
        (Some(l), _) => {
            let l: Vec<String> = l
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            for (_, m) in metrics_label_problems(&l) {
                sink.flag_error(
                    "--metrics-labels / PROBER_METRICS_LABELS",
                    "metrics_labels",
                    m,
                );
            }
            l
        }
        (None, Some(l)) => {
            for (i, m) in metrics_label_problems(&l) {
                let field = i.map_or("metrics_labels".to_string(), |i| {
                    format!("metrics_labels[{i}]")
                });
                sink.error(&field, m);
            }
            l
        }
        (None, None) => Vec::new(),
    };
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
        flush_interval: sink.duration(
            "flush_interval",
            file.flush_interval.as_deref(),
            d.flush_interval,
        ),
        recent_runs: file.recent_runs.unwrap_or(d.recent_runs),
        shutdown_grace: sink.duration(
            "shutdown_grace",
            file.shutdown_grace.as_deref(),
            d.shutdown_grace,
        ),
        migrate: !args.no_migrate && file.migrate.unwrap_or(d.migrate),
        retention: Retention {
            runs: sink.duration(
                "retention.runs",
                retention.runs.as_deref(),
                d.retention.runs,
            ),
            minutes: sink.duration(
                "retention.minutes",
                retention.minutes.as_deref(),
                d.retention.minutes,
            ),
            hours: sink.duration(
                "retention.hours",
                retention.hours.as_deref(),
                d.retention.hours,
            ),
        },
        alerting,
        receivers,
        dashboard_url: file.dashboard_url.clone(),
        alerting_by_label,
        evaluate_every: sink.duration(
            "alerting.evaluate_every",
            alerting_file.evaluate_every.as_deref(),
            d.evaluate_every,
        ),
        remind_every: alerting_file
            .remind_every
            .as_deref()
            .map(|t| sink.duration("alerting.remind_every", Some(t), Duration::from_secs(1))),
        silences,
        api_token,
        api,
        file: None,
        metrics_labels,
    };
    check_values(args, &s, sink);
    s
}

/// Checks resolved values, reporting each where it was set.
fn check_values(args: &SettingsArgs, s: &Settings, sink: &mut Sink) {
    if s.location.is_empty() || s.location.len() > 64 {
        sink.place(
            args.location.is_some(),
            "--location / PROBER_LOCATION",
            "location",
            "must be 1 to 64 characters (it is recorded with every run)",
        );
    }
    for (field, v, flag) in [
        (
            "max_concurrency",
            s.max_concurrency,
            args.max_concurrency
                .is_some()
                .then_some("--max-concurrency / PROBER_MAX_CONCURRENCY"),
        ),
        (
            "max_per_host",
            s.max_per_host,
            args.max_per_host
                .is_some()
                .then_some("--max-per-host / PROBER_MAX_PER_HOST"),
        ),
        (
            "queue_capacity",
            s.queue_capacity,
            args.queue_capacity
                .is_some()
                .then_some("--queue-capacity / PROBER_QUEUE_CAPACITY"),
        ),
        ("batch_size", s.batch_size, None),
        ("recent_runs", s.recent_runs, None),
    ] {
        if v == 0 {
            sink.place(
                flag.is_some(),
                flag.unwrap_or_default(),
                field,
                "must be at least 1",
            );
        }
    }
    if s.evaluate_every < Duration::from_secs(1) {
        sink.error("alerting.evaluate_every", "must be at least 1s");
    }
    if s.remind_every.is_some_and(|r| r < Duration::from_secs(1)) {
        sink.error("alerting.remind_every", "must be at least 1s");
    }
    if s.retention.minutes < s.retention.runs.min(DAY) {
        sink.error("retention.minutes", "must be at least a day");
    }
}

/// Reads an `alert:`-shaped block of the settings at `at`, reporting its problems there.
fn overrides_at(
    sink: &mut Sink,
    at: &str,
    raw: &super::raw::RawAlert,
) -> super::kinds::AlertOverrides {
    let (o, problems) = super::kinds::alert_overrides(raw);
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

/// `api:`: the tokens (names unique, scopes known, a 64-hex-digit `sha256` or a
/// value of at least [`MIN_TOKEN_LEN`] characters), public reads, manual runs.
fn api_access(sink: &mut Sink, f: ApiFile) -> ApiAccess {
    let d = ApiAccess::default();
    let mut tokens: Vec<NamedToken> = Vec::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    for (i, t) in f.tokens.unwrap_or_default().into_iter().enumerate() {
        let at = format!("api.tokens[{i}]");
        let Some(t) = t else {
            sink.error(
                &at,
                "an empty entry; give name, sha256 (or token) and scopes, or remove it",
            );
            continue;
        };
        if t.name.trim().is_empty() {
            sink.error(
                &format!("{at}.name"),
                "must not be empty; the audit log names the token that made each change",
            );
        } else if t.name == super::access::LEGACY_TOKEN_NAME {
            sink.error(
                &format!("{at}.name"),
                "`api_token` is the name of the api_token setting's token; pick another name",
            );
        } else if let Some((_, j)) = names.iter().find(|(n, _)| *n == t.name) {
            let line = sink.doc.value_pos(&format!("api.tokens[{j}].name")).line;
            sink.error(&format!("{at}.name"), format!("{:?} is also the name of api.tokens[{j}] (line {line}); names must be unique, rename one", t.name));
        }
        names.push((t.name.clone(), i));
        let mut scope: Option<Scope> = None;
        for (k, s) in t.scopes.iter().enumerate() {
            match Scope::parse(s) {
                Some(s) => scope = scope.max(Some(s)),
                None => sink.error(&format!("{at}.scopes[{k}]"), format!("{s:?} is not a scope; use read, run or admin (admin includes run, run includes read)")),
            }
        }
        if t.scopes.is_empty() {
            sink.error(
                &format!("{at}.scopes"),
                "give at least one scope: read, run or admin",
            );
        }
        let sha256 = match (&t.sha256, &t.token) {
            (Some(h), None) => super::access::parse_sha256_hex(h).or_else(|| {
                sink.error(&format!("{at}.sha256"), "must be 64 hexadecimal digits: the SHA-256 of the token, e.g. from `printf %s \"$TOKEN\" | sha256sum`");
                None
            }),
            (None, Some(v)) => token_value(sink, &format!("{at}.token"), v, &t.name)
                .map(|v| super::access::digest(&v)),
            _ => {
                sink.error(&at, "give exactly one of sha256 (the token's SHA-256, hex) and token (the value, usually \"${file:/run/secrets/NAME}\" or \"${env:NAME}\")");
                None
            }
        };
        if let (Some(sha256), Some(scope)) = (sha256, scope) {
            tokens.push(NamedToken {
                name: t.name,
                sha256,
                scope,
            });
        }
    }
    ApiAccess {
        public_read: f.public_read.unwrap_or(d.public_read),
        tokens,
        run_min_interval: sink.duration(
            "api.run_min_interval",
            f.run_min_interval.as_deref(),
            d.run_min_interval,
        ),
        manual_runs_count: f.manual_runs_count.unwrap_or(d.manual_runs_count),
    }
}

/// A token's value: `${file:PATH}` (the whole value: the file's text, trimmed),
/// else the text with `${env:NAME}` substituted; at least [`MIN_TOKEN_LEN`] characters.
/// `None` when it cannot be known here (reported as an error, or a warning for `check`).
fn token_value(sink: &mut Sink, field: &str, value: &str, name: &str) -> Option<String> {
    let whose = format!("token {name:?}");
    let v = match value
        .strip_prefix("${file:")
        .and_then(|r| r.strip_suffix('}'))
    {
        Some(path) => match super::access::read_token_file(path) {
            Ok(v) => v,
            Err(e) => {
                match sink.mode {
                    EnvMode::Require => sink.error(field, format!("{whose}: {e}")),
                    EnvMode::Warn => sink.warning(
                        field,
                        format!("{whose}: {e}; the daemon refuses to start until it can read it"),
                    ),
                }
                return None;
            }
        },
        None => sink.expand(field, value, &whose)?,
    };
    if v.chars().count() < MIN_TOKEN_LEN {
        sink.error(field, format!("{whose} is shorter than {MIN_TOKEN_LEN} characters; use a random one, e.g. `openssl rand -hex 32`"));
        return None;
    }
    Some(v)
}

/// Checks the silences of the settings file.
fn silences(sink: &mut Sink, files: Vec<Option<SilenceFile>>) -> Vec<super::policy::Silence> {
    use chrono::{DateTime, Utc};
    let mut out = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = format!("silences[{i}]");
        let Some(f) = f else {
            sink.error(&at, "an empty entry; give matchers, a time or a cron window, and a comment, or remove it");
            continue;
        };
        if f.ends_at.is_none() && f.cron.is_none() {
            sink.error(&at, "give ends_at (a one-off silence) or cron and duration (a recurring maintenance window)");
            continue;
        }
        let duration_ms = f.duration.as_deref().map(|t| {
            let d = sink.duration(&format!("{at}.duration"), Some(t), Duration::from_secs(1));
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        });
        let s = super::policy::Silence {
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
        out.push(s);
    }
    out
}

/// Checks the receivers and substitutes `${env:NAME}` in their url, secret and routing key.
fn receivers(sink: &mut Sink, files: Vec<Option<ReceiverFile>>) -> Vec<super::receivers::Receiver> {
    use super::receivers::{Receiver, ReceiverKind, PAGERDUTY_URL};
    let mut out: Vec<Receiver> = Vec::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = format!("receivers[{i}]");
        let Some(f) = f else {
            sink.error(
                &at,
                "an empty entry; give name, type and the type's fields, or remove it",
            );
            continue;
        };
        let whose = format!("receiver {:?}", f.name);
        if f.name.trim().is_empty() {
            sink.error(
                &format!("{at}.name"),
                "must not be empty; notifications name their receiver",
            );
        } else if let Some((_, j)) = names.iter().find(|(n, _)| *n == f.name) {
            let line = sink.doc.value_pos(&format!("receivers[{j}].name")).line;
            sink.error(
                &format!("{at}.name"),
                format!("{:?} is also the name of receivers[{j}] (line {line}); names must be unique, rename one", f.name),
            );
        }
        names.push((f.name.clone(), i));
        let Some(kind) = ReceiverKind::parse(&f.kind) else {
            sink.error(
                &format!("{at}.type"),
                format!(
                    "{:?} is not a receiver type; use webhook, slack, pagerduty or alertmanager",
                    f.kind
                ),
            );
            continue;
        };
        let problems = receiver_field_problems(
            kind,
            f.url.is_some(),
            f.secret.is_some(),
            f.routing_key.is_some(),
        );
        for (field, m) in &problems {
            sink.error(&format!("{at}.{field}"), m.clone());
        }
        let mut expand = |field: &str, v: &Option<String>| {
            v.as_deref()
                .map(|v| sink.expand(&format!("{at}.{field}"), v, &whose))
        };
        let url = expand("url", &f.url);
        let secret = expand("secret", &f.secret);
        let routing_key = expand("routing_key", &f.routing_key);
        if let Some(Some(u)) = &url {
            if let Err(e) = check_receiver_url(u) {
                sink.error(&format!("{at}.url"), e);
            }
        }
        if matches!(&secret, Some(Some(s)) if s.is_empty()) {
            sink.error(&format!("{at}.secret"), "is empty; remove it or set a key");
        }
        if matches!(&routing_key, Some(Some(s)) if s.is_empty()) {
            sink.error(
                &format!("{at}.routing_key"),
                "is empty; set the integration key of the PagerDuty service",
            );
        }
        if let Some((k, _)) = f
            .labels
            .iter()
            .flatten()
            .find(|(k, v)| k.is_empty() || v.is_empty())
        {
            sink.error(
                &format!("{at}.labels"),
                format!("{k:?} has an empty name or value"),
            );
        }
        // Unknown here (an unset variable under `prober check`): keep the text as written.
        let known = |v: Option<Option<String>>, raw: &Option<String>| {
            v.map(|x| x.unwrap_or_else(|| raw.clone().unwrap_or_default()))
        };
        out.push(Receiver {
            name: f.name,
            kind,
            url: known(url, &f.url).unwrap_or_else(|| PAGERDUTY_URL.to_string()),
            secret: known(secret, &f.secret),
            routing_key: known(routing_key, &f.routing_key),
            labels: f.labels.unwrap_or_default(),
        });
    }
    out
}

/// What a receiver of `kind` must have and must not have: (field, problem).
pub fn receiver_field_problems(
    kind: super::receivers::ReceiverKind,
    url: bool,
    secret: bool,
    routing_key: bool,
) -> Vec<(&'static str, String)> {
    use super::receivers::ReceiverKind;
    let mut out = Vec::new();
    let name = kind.as_str();
    match kind {
        ReceiverKind::PagerDuty if !routing_key => out.push((
            "routing_key",
            "is required for a pagerduty receiver (the integration key of the PagerDuty service)"
                .to_string(),
        )),
        ReceiverKind::Webhook | ReceiverKind::Slack | ReceiverKind::Alertmanager if !url => {
            out.push(("url", format!("is required for a {name} receiver")));
        }
        _ => {}
    }
    if routing_key && kind != ReceiverKind::PagerDuty {
        out.push((
            "routing_key",
            format!("only a pagerduty receiver uses it, not a {name} receiver; remove it"),
        ));
    }
    if secret && kind != ReceiverKind::Webhook {
        out.push((
            "secret",
            format!("only a webhook receiver signs with it, not a {name} receiver; remove it"),
        ));
    }
    out
}

/// A receiver's URL must be http or https with a host. The URL is not
/// repeated in the message: a Slack webhook's path is its secret.
pub fn check_receiver_url(url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| {
        format!("not a URL ({e}); write it whole, like https://hooks.example.com/prober")
    })?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!(
            "the scheme is {}:; receivers are reached over http or https",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host; write it like https://hooks.example.com/prober".into());
    }
    Ok(())
}

/// `dashboard_url`: an http(s) URL in which `{probe}` is the only placeholder.
pub fn check_dashboard_url(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let end = after.find('}').ok_or_else(|| {
            "`{` without a closing `}`; the only placeholder is {probe}".to_string()
        })?;
        let name = &after[..end];
        if name != "probe" {
            return Err(format!(
                "unknown placeholder {{{name}}}; the only placeholder is {{probe}} (the probe's name)"
            ));
        }
        rest = &after[end + 1..];
    }
    let u = url::Url::parse(&template.replace("{probe}", "p"))
        .map_err(|e| format!("not a URL ({e}); write it like https://grafana.example.com/d/probe?var-probe={{probe}}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err("must be an http or https URL with a host".into());
    }
    Ok(())
}

/// Problems of `metrics_labels`: (index, problem); `None` = the list as a whole.
pub fn metrics_label_problems(labels: &[String]) -> Vec<(Option<usize>, String)> {
    let mut out = Vec::new();
    if labels.len() > MAX_METRICS_LABELS {
        out.push((None, format!("{} labels; at most {MAX_METRICS_LABELS} (each one lengthens every per-probe line of /metrics)", labels.len())));
    }
    for (i, l) in labels.iter().enumerate() {
        let mut chars = l.chars();
        let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            out.push((Some(i), format!("{l:?} is not a Prometheus label name; use letters, digits and _, not starting with a digit")));
        } else if l.starts_with("__") {
            out.push((
                Some(i),
                format!("{l:?}: names starting with __ are reserved by Prometheus"),
            ));
        } else if RESERVED_METRICS_LABELS.contains(&l.as_str()) {
            out.push((Some(i), format!("{l:?} is a label /metrics (or Prometheus) sets itself; name another probe label")));
        } else if labels[..i].contains(l) {
            out.push((Some(i), format!("{l:?} is listed twice")));
        }
    }
    out
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
        assert_eq!(
            s.receivers[1].endpoint(),
            crate::config::receivers::PAGERDUTY_URL
        );
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
        assert!(err.contains("routing_key: is required"), "{err}");
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
        std::env::set_var("PROBER_TEST_API_TOKEN", "t0k-0123456789abcdef");
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
        assert_eq!(s.api_token, Some(ApiToken("t0k-0123456789abcdef".into())));
        assert!(
            !format!("{s:?}").contains("t0k"),
            "the token stays out of logs"
        );

        for (text, needle) in [
            ("silences:\n  - matchers: {team: pay}\n    comment: x\n", "give ends_at"),
            ("silences:\n  - matchers: {team: pay}\n    cron: \"nope\"\n    duration: 1h\n    comment: x\n", "not a cron expression"),
            ("alerting:\n  by_label:\n    - labels: {team: pay}\n      alert: {severity: loud}\n", "alerting.by_label[0].alert.severity"),
            ("alerting:\n  slo: {objective: 120}\n", "alerting.slo.objective"),
            ("alerting:\n  evaluate_every: 10ms\n", "alerting.evaluate_every: must be at least 1s"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Settings::resolve(&args).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn api_tokens_are_named_scoped_hashed_and_checked_in_place() {
        use crate::config::access::{digest, Scope};
        let dir = tempfile_dir();
        let file = dir.join("prober.yaml");
        let secret = dir.join("ci-token");
        std::fs::write(&secret, "ci-token-from-a-secret-file\n").unwrap();
        std::env::set_var("PROBER_TEST_VIEWER_TOKEN", "viewer-token-0123456789");
        let hex: String = digest("alice-token-0123456789")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(
            &file,
            format!(
                "api:\n  public_read: false\n  run_min_interval: 30s\n  manual_runs_count: true\n  tokens:\n    - {{name: alice, sha256: \"{hex}\", scopes: [read, admin]}}\n    - {{name: ci, token: \"${{file:{}}}\", scopes: [run]}}\n    - {{name: viewer, token: \"${{env:PROBER_TEST_VIEWER_TOKEN}}\", scopes: [read]}}\n",
                secret.display()
            ),
        )
        .unwrap();
        let args = SettingsArgs {
            config: Some(file.clone()),
            ..SettingsArgs::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert!(!s.api.public_read);
        assert!(s.api.manual_runs_count);
        assert_eq!(s.api.run_min_interval, Duration::from_secs(30));
        let t = &s.api.tokens;
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].name.as_str(), t[0].scope), ("alice", Scope::Admin));
        assert_eq!(t[0].sha256, digest("alice-token-0123456789"));
        assert_eq!(t[1].sha256, digest("ci-token-from-a-secret-file"));
        assert_eq!(t[1].scope, Scope::Run);
        assert_eq!(t[2].sha256, digest("viewer-token-0123456789"));
        assert!(!format!("{s:?}").contains("viewer-token"));

        for (text, needle) in [
            ("api:\n  tokens:\n    - {name: a, sha256: abc, scopes: [admin]}\n", "3:25: api.tokens[0].sha256: must be 64 hexadecimal digits"),
            ("api:\n  tokens:\n    - {name: a, token: short, scopes: [admin]}\n", "api.tokens[0].token: token \"a\" is shorter than 16"),
            ("api:\n  tokens:\n    - {name: a, token: 0123456789abcdefg, scopes: [write]}\n", "api.tokens[0].scopes[0]: \"write\" is not a scope"),
            ("api:\n  tokens:\n    - {name: a, token: 0123456789abcdefg, scopes: [run]}\n    - {name: a, token: 0123456789abcdefh, scopes: [run]}\n", "api.tokens[1].name: \"a\" is also the name of api.tokens[0] (line 3)"),
            ("api:\n  tokens:\n    - {name: a, scopes: [run]}\n", "give exactly one of sha256"),
            ("api:\n  tokens:\n    - {name: a, token: \"${file:/nonexistent/t}\", scopes: [run]}\n", "cannot read the token file /nonexistent/t"),
            ("api_token: too-short\n", "api_token: is shorter than 16"),
            ("api:\n  run_min_interval: soon\n", "api.run_min_interval"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Settings::resolve(&args).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn receiver_urls_must_be_http_or_https_with_a_host() {
        for ok in [
            "http://alertmanager:9093",
            "https://hooks.slack.com/services/T/B/x",
        ] {
            assert_eq!(check_receiver_url(ok), Ok(()), "{ok}");
        }
        for (bad, words) in [
            ("hooks.example.com/prober", "not a URL"),
            ("ftp://hooks.example.com/", "the scheme is ftp:"),
            ("mailto:oncall@example.com", "the scheme is mailto:"),
            ("http://:9093/", "not a URL"),
            ("", "not a URL"),
        ] {
            let e = check_receiver_url(bad).unwrap_err();
            assert!(e.contains(words), "{bad:?}: {e}");
        }
        let e = check_receiver_url("https://hooks.slack.com/services/T0/B0/SECRET-PATH x").err();
        assert!(
            e.is_none_or(|e| !e.contains("SECRET-PATH")),
            "the URL is not echoed"
        );
    }

    #[test]
    fn each_receiver_type_has_its_required_fields_and_no_foreign_ones() {
        use crate::config::receivers::ReceiverKind::*;
        let fields = |k, url, secret, key| -> Vec<&str> {
            receiver_field_problems(k, url, secret, key)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(fields(PagerDuty, false, false, true), Vec::<&str>::new());
        assert_eq!(fields(PagerDuty, false, false, false), ["routing_key"]);
        assert_eq!(fields(PagerDuty, true, true, true), ["secret"]);
        for k in [Webhook, Slack, Alertmanager] {
            assert_eq!(fields(k, false, false, false), ["url"], "{k:?}");
            assert_eq!(fields(k, true, false, true), ["routing_key"], "{k:?}");
        }
        assert_eq!(fields(Webhook, true, true, false), Vec::<&str>::new());
        assert_eq!(fields(Slack, true, true, false), ["secret"]);
    }

    #[test]
    fn dashboard_urls_take_only_the_probe_placeholder() {
        assert_eq!(
            check_dashboard_url("https://g.example/d/p?var-probe={probe}"),
            Ok(())
        );
        assert_eq!(check_dashboard_url("https://g.example/d/p"), Ok(()));
        for (bad, words) in [
            (
                "https://g.example/d/p?var-probe={name}",
                "unknown placeholder {name}",
            ),
            (
                "https://g.example/d/p?var-probe={probe",
                "without a closing",
            ),
            ("g.example/d/{probe}", "not a URL"),
            ("file:///d/{probe}", "http or https"),
        ] {
            let e = check_dashboard_url(bad).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }

    #[test]
    fn metrics_labels_are_prometheus_names_not_reserved_not_repeated_and_few() {
        let labels = |l: &[&str]| l.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert!(metrics_label_problems(&labels(&["team", "service", "_x1"])).is_empty());
        let p = metrics_label_problems(&labels(&[
            "team", "probe", "__name__", "9x", "a-b", "team", "le",
        ]));
        let at: Vec<Option<usize>> = p.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            at,
            [Some(1), Some(2), Some(3), Some(4), Some(5), Some(6)],
            "{p:?}"
        );
        let many: Vec<String> = (0..=MAX_METRICS_LABELS).map(|i| format!("l{i}")).collect();
        assert_eq!(metrics_label_problems(&many)[0].0, None);
    }

    #[test]
    fn env_references_in_settings_are_only_env_and_well_formed() {
        assert_eq!(env_refs("a${env:X_1}b${env:Y}"), Ok(vec!["X_1", "Y"]));
        assert_eq!(env_refs("plain"), Ok(vec![]));
        assert!(env_refs("${env:X").unwrap_err().contains("closing"));
        assert!(env_refs("${uuid}")
            .unwrap_err()
            .contains("only ${env:NAME}"));
        assert!(env_refs("${env:A-B}").unwrap_err().contains("not a valid"));
    }

    #[test]
    fn an_unset_variable_is_a_warning_for_check_and_an_error_for_the_daemon() {
        let dir = tempfile_dir();
        let file = dir.join("prober.yaml");
        std::fs::write(
            &file,
            "receivers:\n  - {name: pd, type: pagerduty, routing_key: \"${env:PROBER_TEST_SURELY_UNSET_KEY}\"}\n",
        )
        .unwrap();
        let args = SettingsArgs {
            config: Some(file),
            ..SettingsArgs::default()
        };
        let warn = Settings::check(&args, EnvMode::Warn);
        assert!(warn.settings.is_some());
        let w: Vec<String> = warn.warnings().map(ToString::to_string).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains(":2:46: warning: receivers[0].routing_key: receiver \"pd\": environment variable PROBER_TEST_SURELY_UNSET_KEY"), "{w:?}");
        let err = Settings::resolve(&args).unwrap_err();
        assert!(
            err.contains(
                "receiver \"pd\": environment variable PROBER_TEST_SURELY_UNSET_KEY is not set"
            ),
            "{err}"
        );
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("prober-settings-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
