//! Daemon settings: flags > environment (`PROBER_*`, `DATABASE_URL`) > `prober.yaml` > defaults.
//!
//! Flags and environment come from clap (each flag names its variable); the
//! file fills what they left unset; the defaults fill the rest. The defaults
//! work in a fresh checkout against a local Postgres.
//!
//! Every problem is reported at once, placed at `file:line:column` of the
//! settings file (or naming the flag): [`Settings::check`] collects them,
//! [`Settings::resolve`] refuses to go on with any error ([`SettingsError`]).
//!
//! - `file.rs`: the file's raw shape and reading it;
//! - `sink.rs`: where problems go, durations and `${env:NAME}`;
//! - `build.rs`: flags over file over defaults, and the value checks;
//! - `policy.rs`, `receivers.rs`: alerting defaults, overrides, silences; receivers;
//! - `access.rs`: API tokens and access;
//! - `checks.rs`: single values (dashboard URL, `/metrics` labels);
//! - `otel.rs`: `otel:`, the OTLP export of runs as traces;
//! - `alerting.rs`: the one place that names alert and notify types.

mod access;
mod alerting;
mod browser;
mod build;
mod checks;
mod file;
mod otel;
mod policy;
mod receivers;
mod sink;
#[cfg(test)]
mod tests;

/// Settings resolved from `yaml` as a `prober.yaml` (the section tests' reader).
#[cfg(test)]
pub(super) fn resolve_yaml(yaml: &str) -> Result<Settings, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("prober.yaml");
    std::fs::write(&file, yaml).map_err(|e| e.to_string())?;
    Settings::resolve(&SettingsArgs {
        config: Some(file),
        ..SettingsArgs::default()
    })
    .map_err(|e| e.to_string())
}
mod ui;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::access::ApiAccess;
use super::diag::{Diagnostic, Severity};

pub use browser::{BrowserOptions, DEFAULT_SCREENSHOTS_DIR};
pub use checks::{check_dashboard_url, check_trace_url, metrics_label_problems, trace_link};
pub use receivers::{check_receiver_url, receiver_field_problems};
pub use ui::{StatusPage, UiSettings};

/// Where the daemon keeps its data unless told otherwise.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/prober";
/// The instance's location when none is set.
pub const DEFAULT_LOCATION: &str = "local";
/// `/healthz`, `/readyz` and (later) the API and `/metrics`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9680";
/// Where `prober run` spools results unless `spool.dir` says otherwise
/// (relative to the working directory). [`Settings::default`] has no spool:
/// a daemon started from code (the tests, the benchmark) chooses its own.
pub const DEFAULT_SPOOL_DIR: &str = "spool";
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
    /// Results waiting for Postgres before the oldest are dropped and counted [default: 1000000].
    #[arg(long, env = "PROBER_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Directory where results wait on disk until Postgres has them, replayed after a crash [default: spool].
    #[arg(long, env = "PROBER_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Keep results waiting for Postgres in memory only: a crash loses them [default: they are spooled].
    #[arg(long, env = "PROBER_NO_SPOOL")]
    pub no_spool: bool,
    /// Directory where browser checks keep failure screenshots, a directory per probe [default: screenshots].
    #[arg(long, env = "PROBER_SCREENSHOTS_DIR")]
    pub screenshots_dir: Option<PathBuf>,
    /// Run browser checks' Chromium without its sandbox, where it cannot work (a container without user namespaces) [default: sandboxed unless root].
    #[arg(long, env = "PROBER_NO_BROWSER_SANDBOX")]
    pub no_browser_sandbox: bool,
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

/// Alerting overrides for the probes that carry every one of `labels`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelOverride {
    pub labels: std::collections::BTreeMap<String, String>,
    pub alert: super::kinds::AlertOverrides,
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
    /// Most memory the queued results take (their binary form and
    /// [`ENTRY_OVERHEAD`](crate::store::queue::ENTRY_OVERHEAD) each) before the oldest are dropped.
    pub queue_max_bytes: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub recent_runs: usize,
    pub shutdown_grace: Duration,
    pub migrate: bool,
    pub retention: Retention,
    /// Default alerting policy; probes override it with `alert:`.
    pub alerting: alerting::Policy,
    /// Where notifications of firing and resolved alerts go.
    pub receivers: Vec<alerting::Receiver>,
    /// Link to a probe's dashboard; `{probe}` is replaced by its name.
    pub dashboard_url: Option<String>,
    /// Link to a run's trace in the tracing backend; `{trace_id}` is replaced by its trace id.
    pub trace_url: Option<String>,
    /// Alerting overrides by label, applied in order between the defaults and a probe's own `alert:`.
    pub alerting_by_label: Vec<LabelOverride>,
    /// How often the periodic rules (latency, SLO burn rate), reminders and silences are evaluated.
    pub evaluate_every: Duration,
    /// Re-notify while an alert keeps firing; `None` = never.
    pub remind_every: Option<Duration>,
    /// Silences and maintenance windows from the settings file.
    pub silences: Vec<alerting::Silence>,
    /// `api_token` / `PROBER_API_TOKEN`: an admin token named `api_token`.
    pub api_token: Option<ApiToken>,
    /// `api:` — named, scoped tokens, public reads, manual-run limits.
    pub api: ApiAccess,
    /// The settings file read, if any: a reload reads its alerting parts again.
    pub file: Option<PathBuf>,
    /// Probe labels added to every per-probe series of `/metrics` (a probe without one gets "").
    pub metrics_labels: Vec<String>,
    /// `trends:` — the trend analysis (read at start; a reload does not change it).
    pub trends: TrendSettings,
    /// `spool:` — results on local disk until Postgres has them (read at start).
    pub spool: SpoolSettings,
    /// `otel:` — every run as an OTLP trace (read at start).
    pub otel: OtelSettings,
    /// `ui:` — the built-in pages, the public status page and the badges (read at start).
    pub ui: UiSettings,
    /// `browser:` — the browsers of browser checks (read at start).
    pub browser: BrowserOptions,
    /// `proxy`, `no_proxy` — the proxy of every HTTP probe that names none (read at start).
    pub proxy: Option<super::probe::Proxy>,
}

/// `otel:` in the settings: every run exported as an OTLP trace.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    /// The receiver's base address (`/v1/traces` is added for http); `None`:
    /// the standard `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` variables, read by the exporter.
    pub endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Sent with every export (an API key, say); `${env:NAME}` substituted.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Whether runs are exported: an endpoint is set (here or in the
    /// environment) and `otel.traces` is not false.
    pub traces: bool,
    /// Runs waiting for the receiver (default 8,192); past it new runs' spans are dropped, counted.
    pub queue_runs: usize,
    /// The prober's own work as spans too (store writes, rollups, alert
    /// evaluation, notification delivery, API requests); default false.
    pub self_traces: bool,
    /// The share of the prober's own traces kept (0–1, default 1); runs are always exported.
    pub sample_ratio: f64,
    /// Runs and per-phase durations as OTLP metrics (a receiver set and `otel.metrics: true`).
    pub metrics: bool,
    /// Cumulative (default) or delta sums and histograms.
    pub metrics_temporality: MetricsTemporality,
    /// How often the metrics are sent (default 60 s, OpenTelemetry's; at least 1 s).
    pub metrics_interval: std::time::Duration,
}

/// The temporality of the OTLP metrics: what a sum or histogram point counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsTemporality {
    /// Since the prober started (Prometheus' way).
    Cumulative,
    /// Since the previous export (Datadog's, Dynatrace's way); a series no
    /// run touched in an interval is not sent, and costs no memory.
    Delta,
}

impl Default for OtelSettings {
    fn default() -> Self {
        OtelSettings {
            endpoint: None,
            protocol: OtlpProtocol::Http,
            headers: std::collections::BTreeMap::new(),
            traces: false,
            queue_runs: 8_192,
            self_traces: false,
            sample_ratio: 1.0,
            metrics: false,
            metrics_temporality: MetricsTemporality::Cumulative,
            metrics_interval: std::time::Duration::from_secs(60),
        }
    }
}

/// OTLP over gRPC, or over HTTP with protobuf bodies (the specification's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    Http,
}

/// The trend analysis' settings (README, "Trends").
#[derive(Debug, Clone, PartialEq)]
pub struct TrendSettings {
    /// Whether the daemon analyses at all. Off by default until the harness
    /// meets its budgets (BENCHMARKS.md, "Trends": 2 false findings per
    /// 1,000 stationary probe-days against 1, small steps missed, 20 %
    /// steps found in ~40 min); every finding opens a `trend` ticket.
    pub enabled: bool,
    /// How often a pass runs (default 5 minutes; at least 1 minute).
    pub analyse_every: Duration,
    /// A step is reported only if its shift is at least this (default 1 ms) ...
    pub min_shift: Duration,
    /// ... and at least this fraction of the median before it (default 0.05).
    pub min_shift_ratio: f64,
    /// ... and the histograms differ with a p-value below this (default 0.001).
    pub max_pvalue: f64,
}

impl Default for TrendSettings {
    fn default() -> Self {
        TrendSettings {
            enabled: false,
            analyse_every: Duration::from_secs(300),
            min_shift: Duration::from_millis(1),
            min_shift_ratio: 0.05,
            max_pvalue: 0.001,
        }
    }
}

/// `spool:` in the settings: results on local disk until Postgres has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// Where the segments go; `None`: no spool (results wait in memory only).
    pub dir: Option<PathBuf>,
    /// How often the segment being written is `fdatasync`ed (default 1 s).
    pub sync_every: Duration,
    /// The queue's memory window: past it waiting runs are held on disk
    /// only, and read back as the writer drains (default [`SPOOL_MEMORY_BYTES`]).
    pub memory_bytes: usize,
}

/// The default `spool.memory_bytes`: 16 MiB, ~75,000 typical runs (over a
/// minute at 1,000 runs/s), far more than a batch.
pub const SPOOL_MEMORY_BYTES: usize = 16 << 20;
/// The least `spool.memory_bytes`: room for a few batches.
pub const SPOOL_MEMORY_MIN: usize = 1 << 20;

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            dir: None,
            sync_every: Duration::from_secs(1),
            memory_bytes: SPOOL_MEMORY_BYTES,
        }
    }
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
            queue_capacity: 1_000_000,
            queue_max_bytes: 256 << 20,
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
            alerting: alerting::Policy::default(),
            receivers: Vec::new(),
            dashboard_url: None,
            trace_url: None,
            alerting_by_label: Vec::new(),
            evaluate_every: DEFAULT_EVALUATE_EVERY,
            remind_every: None,
            silences: Vec::new(),
            api_token: None,
            api: ApiAccess::default(),
            file: None,
            metrics_labels: Vec::new(),
            trends: TrendSettings::default(),
            spool: Default::default(),
            otel: OtelSettings::default(),
            ui: UiSettings::default(),
            browser: Default::default(),
            proxy: None,
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

/// The settings hold errors: every one, placed, and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", summary(.errors, .file.as_deref()))]
pub struct SettingsError {
    /// Every error, placed at `file:line:column` (or naming the flag).
    pub errors: Vec<Diagnostic>,
    /// The settings file read, if any.
    pub file: Option<PathBuf>,
}

/// One line per error, then how many and what to do.
fn summary(errors: &[Diagnostic], file: Option<&Path>) -> String {
    let mut lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let how = match file {
        Some(f) => format!("`prober check --config {}` checks it offline", f.display()),
        None => "see README.md, Settings".to_string(),
    };
    lines.push(format!(
        "{} error(s) in the settings; fix them and start again ({how})",
        errors.len()
    ));
    lines.join("\n")
}

/// What is wrong with one value, in words; the caller places it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueProblem(pub String);

impl From<&str> for ValueProblem {
    fn from(s: &str) -> ValueProblem {
        ValueProblem(s.to_string())
    }
}

impl From<String> for ValueProblem {
    fn from(s: String) -> ValueProblem {
        ValueProblem(s)
    }
}

impl Settings {
    /// Resolves settings from arguments/environment, the settings file, and
    /// defaults. The error holds every problem, each with its place.
    pub fn resolve(args: &SettingsArgs) -> Result<Settings, SettingsError> {
        let check = Settings::check(args, EnvMode::Require);
        for w in check.warnings() {
            tracing::warn!("{w}");
        }
        match check.settings {
            Some(s) => Ok(s),
            None => Err(SettingsError {
                errors: check.errors().cloned().collect(),
                file: check.file,
            }),
        }
    }

    /// Reads the settings file (`--config`, or `prober.yaml` in the working
    /// directory if present) and checks it with the flags and environment,
    /// reporting every problem. Neither the database nor the network is touched.
    /// A file that cannot be read (or parsed) is reported, and the flags and
    /// environment are still checked.
    pub fn check(args: &SettingsArgs, mode: EnvMode) -> SettingsCheck {
        let path = match &args.config {
            Some(p) => Some(p.clone()),
            None if Path::new(DEFAULT_SETTINGS_FILE).exists() => {
                Some(PathBuf::from(DEFAULT_SETTINGS_FILE))
            }
            None => None,
        };
        let mut sink = sink::Sink {
            file: path.clone().unwrap_or_else(|| PathBuf::from(FROM_FLAGS)),
            doc: file::empty_document(),
            out: Vec::new(),
            mode,
        };
        let (file, removed) = match &path {
            Some(p) => file::read_file(p, &mut sink).unwrap_or_default(),
            None => Default::default(),
        };
        let from_file = sink.out.len();
        let mut settings = build::build(args, file, &mut sink);
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
