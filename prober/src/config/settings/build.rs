//! Layering: flags and environment over the file over the defaults, and
//! the checks of the resolved values.

use std::time::Duration;

use super::file::{RetentionFile, SettingsFile, SpoolFile, TrendsFile};
use super::sink::Sink;
use super::DEFAULT_SPOOL_DIR;
use super::{access, checks, policy, receivers};
use super::{Retention, Settings, SettingsArgs, SpoolSettings, TrendSettings, DAY};

/// Turns the file and the flags into settings, reporting every problem in `sink`.
pub(super) fn build(args: &SettingsArgs, mut file: SettingsFile, sink: &mut Sink) -> Settings {
    let d = Settings::default();
    let alerting = policy::alerting(
        sink,
        file.alerting.take().unwrap_or_default(),
        file.silences.take().unwrap_or_default(),
        &d,
    );
    let api_token = access::api_token(sink, args, file.api_token.take());
    let api = access::api_access(sink, file.api.take().unwrap_or_default());
    let receivers = receivers::receivers(sink, file.receivers.take().unwrap_or_default());
    if let Some(t) = &file.dashboard_url {
        if let Err(e) = checks::check_dashboard_url(t) {
            sink.error("dashboard_url", e.0);
        }
    }
    if let Some(t) = &file.trace_url {
        if let Err(e) = checks::check_trace_url(t) {
            sink.error("trace_url", e.0);
        }
    }
    let metrics_labels = checks::metrics_labels(sink, args, file.metrics_labels.take());
    let retention = file.retention.take().unwrap_or_default();
    let retention = retention_of(sink, &retention, &d.retention);
    let trends = trends_of(sink, &file.trends.take().unwrap_or_default(), &d.trends);
    let spool = spool_of(sink, args, file.spool.take().unwrap_or_default(), &d.spool);
    let otel = super::otel::otel_of(sink, file.otel.take().unwrap_or_default(), &d.otel);
    let ui = super::ui::ui_of(sink, file.ui.take().unwrap_or_default(), &d.ui);
    let browser = super::browser::browser_of(sink, args, file.browser.take().unwrap_or_default());
    let proxy = proxy_of(sink, file.proxy.take(), file.no_proxy.take());
    let s = Settings {
        ui,
        browser,
        proxy,
        trends,
        spool,
        otel,
        retention,
        alerting: alerting.policy,
        receivers,
        dashboard_url: file.dashboard_url.take(),
        trace_url: file.trace_url.take(),
        alerting_by_label: alerting.by_label,
        evaluate_every: alerting.evaluate_every,
        remind_every: alerting.remind_every,
        silences: alerting.silences,
        api_token,
        api,
        metrics_labels,
        ..layered(args, file, sink, d)
    };
    check_values(args, &s, sink);
    s
}

/// The plain settings: a flag (or its variable) over the file over the default.
fn layered(args: &SettingsArgs, file: SettingsFile, sink: &mut Sink, d: Settings) -> Settings {
    Settings {
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
        queue_max_bytes: file.queue_max_bytes.unwrap_or(d.queue_max_bytes),
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
        file: None,
        ..d
    }
}

/// `retention:`: each kind of data's keep time, or its default.
fn retention_of(sink: &mut Sink, f: &RetentionFile, d: &Retention) -> Retention {
    Retention {
        runs: sink.duration("retention.runs", f.runs.as_deref(), d.runs),
        minutes: sink.duration("retention.minutes", f.minutes.as_deref(), d.minutes),
        hours: sink.duration("retention.hours", f.hours.as_deref(), d.hours),
    }
}

/// `spool:`: the directory (flag over file over `spool` in the working
/// directory; none with `--no-spool` or `enabled: false`) and how often it is synced.
fn spool_of(
    sink: &mut Sink,
    args: &SettingsArgs,
    f: SpoolFile,
    d: &SpoolSettings,
) -> SpoolSettings {
    let dir = (args.spool_dir.clone())
        .or(f.dir)
        .unwrap_or_else(|| DEFAULT_SPOOL_DIR.into());
    if dir.as_os_str().is_empty() {
        sink.error(
            "spool.dir",
            "must name a directory; to keep results in memory only, set spool.enabled: false (or --no-spool)",
        );
    }
    let enabled = !args.no_spool && f.enabled.unwrap_or(true);
    let s = SpoolSettings {
        dir: enabled.then_some(dir),
        sync_every: sink.duration("spool.sync_every", f.sync_every.as_deref(), d.sync_every),
        memory_bytes: f.memory_bytes.unwrap_or(d.memory_bytes),
    };
    if s.memory_bytes < super::SPOOL_MEMORY_MIN {
        sink.error(
            "spool.memory_bytes",
            "must be at least 1048576 (1 MiB; default 16 MiB: the memory waiting results may take, the rest wait on disk)",
        );
    }
    if s.sync_every < Duration::from_millis(10) || s.sync_every > Duration::from_secs(60) {
        sink.error(
            "spool.sync_every",
            "must be between 10ms and 60s (default 1s: what an operating system crash can lose)",
        );
    }
    s
}

fn trends_of(sink: &mut Sink, f: &TrendsFile, d: &TrendSettings) -> TrendSettings {
    let t = TrendSettings {
        enabled: f.enabled.unwrap_or(d.enabled),
        analyse_every: sink.duration(
            "trends.analyse_every",
            f.analyse_every.as_deref(),
            d.analyse_every,
        ),
        min_shift: sink.duration("trends.min_shift", f.min_shift.as_deref(), d.min_shift),
        min_shift_ratio: f.min_shift_ratio.unwrap_or(d.min_shift_ratio),
        max_pvalue: f.max_pvalue.unwrap_or(d.max_pvalue),
    };
    if t.analyse_every < Duration::from_secs(60) {
        sink.error(
            "trends.analyse_every",
            "must be at least 1m (points are 5 minutes or wider); set trends.enabled: false to stop the analysis",
        );
    }
    if !(0.0..=1.0).contains(&t.min_shift_ratio) {
        sink.error(
            "trends.min_shift_ratio",
            format!(
                "{} must be between 0 and 1 (0.05: 5 % of the median)",
                t.min_shift_ratio
            ),
        );
    }
    if !(t.max_pvalue > 0.0 && t.max_pvalue <= 0.05) {
        sink.error(
            "trends.max_pvalue",
            format!(
                "{} must be above 0 and at most 0.05 (default 0.001)",
                t.max_pvalue
            ),
        );
    }
    t
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
    // Upper bounds: far above any real use, low enough that no count
    // overflows a semaphore or an allocation ("unlimited" is not a number).
    for (field, v, max, flag) in [
        (
            "max_concurrency",
            s.max_concurrency,
            1_000_000,
            args.max_concurrency
                .is_some()
                .then_some("--max-concurrency / PROBER_MAX_CONCURRENCY"),
        ),
        (
            "max_per_host",
            s.max_per_host,
            1_000_000,
            args.max_per_host
                .is_some()
                .then_some("--max-per-host / PROBER_MAX_PER_HOST"),
        ),
        (
            "queue_capacity",
            s.queue_capacity,
            100_000_000,
            args.queue_capacity
                .is_some()
                .then_some("--queue-capacity / PROBER_QUEUE_CAPACITY"),
        ),
        ("batch_size", s.batch_size, 100_000, None),
        ("queue_max_bytes", s.queue_max_bytes, usize::MAX, None),
        ("recent_runs", s.recent_runs, 100_000, None),
    ] {
        if v == 0 || v > max {
            let message = if max == usize::MAX {
                "must be at least 1".to_string()
            } else {
                format!("must be 1 to {max}")
            };
            sink.place(flag.is_some(), flag.unwrap_or_default(), field, &message);
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

/// `proxy` and `no_proxy`: the default proxy of HTTP probes, checked as a probe's is.
fn proxy_of(
    sink: &mut Sink,
    proxy: Option<String>,
    no_proxy: Option<String>,
) -> Option<crate::config::probe::Proxy> {
    use crate::config::probe::{Proxy, ProxyProblem};
    let no_proxy = no_proxy.unwrap_or_default();
    let Some(text) = proxy else {
        if !no_proxy.is_empty() {
            sink.error(
                "no_proxy",
                "`no_proxy` without `proxy` has nothing to skip; add `proxy:` or remove it",
            );
        }
        return None;
    };
    match Proxy::parse(&text, &no_proxy) {
        Ok(p) => Some(p),
        Err(ProxyProblem::Proxy(m)) => {
            sink.error("proxy", m);
            None
        }
        Err(ProxyProblem::NoProxy(m)) => {
            sink.error("no_proxy", m);
            None
        }
    }
}
