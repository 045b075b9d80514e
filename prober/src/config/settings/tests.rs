//! Settings, read and checked as the daemon and `prober check` do.

use super::sink::env_refs;
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
    let err = Settings::resolve(&args).unwrap_err().to_string();
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
    assert_eq!(s.receivers[1].endpoint(), super::alerting::PAGERDUTY_URL);
    assert!(
        !format!("{s:?}").contains("k3y"),
        "secrets stay out of logs"
    );

    std::fs::write(
        &file,
        "receivers:\n  - {name: pd, type: pagerduty, routng_key: abc}\n",
    )
    .unwrap();
    let err = Settings::resolve(&args).unwrap_err().to_string();
    assert!(err.contains("routng_key"), "{err}");
    std::fs::write(&file, "receivers:\n  - {name: pd, type: pagerduty}\n").unwrap();
    let err = Settings::resolve(&args).unwrap_err().to_string();
    assert!(err.contains("routing_key: is required"), "{err}");
    std::fs::write(
        &file,
        "receivers:\n  - {name: x, type: email, url: \"http://a/\"}\n",
    )
    .unwrap();
    let err = Settings::resolve(&args).unwrap_err().to_string();
    assert!(err.contains("not a receiver type"), "{err}");
}

#[test]
fn alerting_label_overrides_silences_and_the_token_are_read_and_checked() {
    let dir = tempfile_dir();
    let file = dir.join("prober.yaml");
    std::env::set_var("PROBER_TEST_API_TOKEN", "t0k-0123456789abcdef");
    std::fs::write(
        &file,
        "api_token: \"${env:PROBER_TEST_API_TOKEN}\"\nalerting:\n  failures_to_fire: 4\n  trend_severity: page\n  slo: {objective: 99.5}\n  remind_every: 4h\n  by_label:\n    - labels: {team: pay}\n      alert: {severity: ticket, min_locations: 2, trend_severity: ticket}\nsilences:\n  - matchers: {team: pay}\n    cron: \"0 0 2 * * Sun\"\n    duration: 2h\n    comment: weekly maintenance\n",
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
    use crate::config::policy::Severity;
    assert_eq!(s.alerting.trend_severity, Severity::Page);
    assert_eq!(
        s.alerting_by_label[0].alert.trend_severity,
        Some(Severity::Ticket)
    );
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
        ("alerting:\n  trend_severity: urgent\n", "alerting.trend_severity: \"urgent\" is not a severity"),
        ("alerting:\n  evaluate_every: 10ms\n", "alerting.evaluate_every: must be at least 1s"),
    ] {
        std::fs::write(&file, text).unwrap();
        let err = Settings::resolve(&args).unwrap_err().to_string();
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
        let err = Settings::resolve(&args).unwrap_err().to_string();
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
        let e = check_receiver_url(bad).unwrap_err().0;
        assert!(e.contains(words), "{bad:?}: {e}");
    }
    let e = check_receiver_url("https://hooks.slack.com/services/T0/B0/SECRET-PATH x").err();
    assert!(
        e.is_none_or(|e| !e.0.contains("SECRET-PATH")),
        "the URL is not echoed"
    );
}

#[test]
fn each_receiver_type_has_its_required_fields_and_no_foreign_ones() {
    use super::alerting::ReceiverKind::*;
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
        let e = check_dashboard_url(bad).unwrap_err().0;
        assert!(e.contains(words), "{bad}: {e}");
    }
}

#[test]
fn trace_urls_take_only_the_trace_id_placeholder() {
    assert_eq!(
        check_trace_url("https://tempo.example.com/trace/{trace_id}"),
        Ok(())
    );
    for (bad, words) in [
        (
            "https://tempo.example.com/trace/{probe}",
            "unknown placeholder {probe}; the only placeholder is {trace_id}",
        ),
        ("https://tempo.example.com/{trace_id", "without a closing"),
        (
            "tempo/{trace_id}",
            "https://tempo.example.com/trace/{trace_id}",
        ),
        ("ftp://tempo.example.com/{trace_id}", "http or https"),
    ] {
        let e = check_trace_url(bad).unwrap_err().0;
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
    assert!(env_refs("${env:X").unwrap_err().0.contains("closing"));
    assert!(env_refs("${uuid}")
        .unwrap_err()
        .0
        .contains("only ${env:NAME}"));
    assert!(env_refs("${env:A-B}")
        .unwrap_err()
        .0
        .contains("not a valid"));
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
    let err = Settings::resolve(&args).unwrap_err().to_string();
    assert!(
        err.contains(
            "receiver \"pd\": environment variable PROBER_TEST_SURELY_UNSET_KEY is not set"
        ),
        "{err}"
    );
}

#[test]
fn an_unreadable_file_is_reported_with_every_problem_of_the_flags() {
    let dir = tempfile_dir();
    let args = SettingsArgs {
        config: Some(dir.join("missing.yaml")),
        location: Some("x".repeat(65)),
        metrics_labels: Some(vec!["9bad".into()]),
        ..SettingsArgs::default()
    };

    let err = Settings::resolve(&args).unwrap_err();

    let lines: Vec<String> = err.errors.iter().map(ToString::to_string).collect();
    assert_eq!(err.errors.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cannot read the settings file")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("--location / PROBER_LOCATION")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"9bad\" is not a Prometheus label")),
        "{lines:?}"
    );
    assert!(
        err.to_string().contains(
            "3 error(s) in the settings; fix them and start again (`prober check --config "
        ),
        "{err}"
    );
}

#[test]
fn a_receiver_of_an_unknown_type_still_has_its_other_fields_checked() {
    let dir = tempfile_dir();
    let file = dir.join("prober.yaml");
    std::fs::write(
        &file,
        "receivers:\n  - {name: x, type: email, url: \"ftp://a/\", labels: {team: \"\"}}\n",
    )
    .unwrap();
    let args = SettingsArgs {
        config: Some(file),
        ..SettingsArgs::default()
    };

    let err = Settings::resolve(&args).unwrap_err().to_string();

    assert!(
        err.contains("receivers[0].type: \"email\" is not a receiver type"),
        "{err}"
    );
    assert!(
        err.contains("receivers[0].url: the scheme is ftp:"),
        "{err}"
    );
    assert!(
        err.contains("receivers[0].labels: \"team\" has an empty name or value"),
        "{err}"
    );
}

#[test]
fn a_silence_without_an_end_still_has_its_matchers_checked() {
    let dir = tempfile_dir();
    let file = dir.join("prober.yaml");
    std::fs::write(&file, "silences:\n  - matchers: {}\n    comment: x\n").unwrap();
    let args = SettingsArgs {
        config: Some(file),
        ..SettingsArgs::default()
    };

    let err = Settings::resolve(&args).unwrap_err().to_string();

    assert!(err.contains("silences[0]: give ends_at"), "{err}");
    assert!(
        err.contains("silences[0].matchers: give at least one"),
        "{err}"
    );
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("prober-settings-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn trend_settings_are_read_and_their_bounds_checked_in_place() {
    let dir = tempfile_dir();
    let file = dir.join("prober.yaml");
    std::fs::write(
        &file,
        "trends:\n  enabled: true\n  analyse_every: 10m\n  min_shift: 2ms\n  min_shift_ratio: 0.1\n",
    )
    .unwrap();
    let args = SettingsArgs {
        config: Some(file.clone()),
        ..SettingsArgs::default()
    };
    let t = Settings::resolve(&args).unwrap().trends;
    assert_eq!(t.analyse_every, Duration::from_secs(600));
    assert_eq!(t.min_shift, Duration::from_millis(2));
    assert_eq!(
        (t.min_shift_ratio, t.max_pvalue, t.enabled),
        (0.1, 0.001, true)
    );

    std::fs::write(
        &file,
        "trends:\n  analyse_every: 10s\n  min_shift_ratio: 5\n  max_pvalue: 0.5\n  sensitivity: high\n",
    )
    .unwrap();
    let err = Settings::resolve(&args).unwrap_err().to_string();
    assert!(err.contains("sensitivity"), "{err}");
    std::fs::write(
        &file,
        "trends:\n  analyse_every: 10s\n  min_shift_ratio: 5\n  max_pvalue: 0.5\n",
    )
    .unwrap();
    let err = Settings::resolve(&args).unwrap_err().to_string();
    for field in [
        "trends.analyse_every",
        "trends.min_shift_ratio",
        "trends.max_pvalue",
    ] {
        assert!(err.contains(field), "{field}: {err}");
    }
}

#[test]
fn the_spool_is_on_by_default_in_the_working_directory_and_can_be_moved_or_turned_off() {
    let dir = tempfile_dir();
    let file = dir.join("prober.yaml");
    let resolve = |yaml: &str, args: SettingsArgs| {
        std::fs::write(&file, yaml).unwrap();
        Settings::resolve(&SettingsArgs {
            config: Some(file.clone()),
            ..args
        })
    };
    let s = resolve("location: x\n", SettingsArgs::default()).unwrap();
    assert_eq!(s.spool.dir, Some(PathBuf::from(DEFAULT_SPOOL_DIR)));
    assert_eq!(s.spool.sync_every, Duration::from_secs(1));
    assert_eq!(Settings::default().spool.dir, None, "code chooses its own");

    assert_eq!(s.spool.memory_bytes, 16 << 20);
    let s = resolve(
        "spool:\n  dir: /var/x\n  sync_every: 200ms\n  memory_bytes: 2097152\n",
        SettingsArgs::default(),
    )
    .unwrap();
    assert_eq!(s.spool.dir, Some(PathBuf::from("/var/x")));
    assert_eq!(s.spool.sync_every, Duration::from_millis(200));
    assert_eq!(s.spool.memory_bytes, 2 << 20);
    let small = resolve("spool:\n  memory_bytes: 4096\n", SettingsArgs::default())
        .unwrap_err()
        .to_string();
    assert!(
        small.contains("spool.memory_bytes") && small.contains("1 MiB"),
        "{small}"
    );
    let flag = SettingsArgs {
        spool_dir: Some("/flag".into()),
        ..SettingsArgs::default()
    };
    let s = resolve("spool:\n  dir: /var/x\n", flag).unwrap();
    assert_eq!(s.spool.dir, Some(PathBuf::from("/flag")));

    let off = resolve("spool:\n  enabled: false\n", SettingsArgs::default()).unwrap();
    assert_eq!(off.spool.dir, None);
    let no_spool = SettingsArgs {
        no_spool: true,
        ..SettingsArgs::default()
    };
    assert_eq!(resolve("location: x\n", no_spool).unwrap().spool.dir, None);

    let err = resolve(
        "spool:\n  dir: \"\"\n  sync_every: 2m\n",
        SettingsArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spool.dir") && err.contains("spool.enabled: false"),
        "{err}"
    );
    assert!(
        err.contains("spool.sync_every") && err.contains("between 10ms and 60s"),
        "{err}"
    );
}

#[test]
fn browser_settings_are_read_and_bad_ones_named_with_their_line() {
    let s = resolve_yaml(
        "browser:\n  executable: /opt/chrome\n  max_concurrent: 4\n  memory_mb: 512\n  screenshots: /var/lib/prober/shots\n  sandbox: false\n",
    )
    .unwrap();
    assert_eq!(s.browser.max_concurrent, 4);
    assert_eq!(s.browser.memory_mb, 512);
    assert_eq!(
        s.browser.executable.as_deref(),
        Some(Path::new("/opt/chrome"))
    );
    assert_eq!(s.browser.screenshots, Path::new("/var/lib/prober/shots"));
    assert!(!s.browser.sandbox);
    let d = resolve_yaml("location: x\n").unwrap();
    assert_eq!(d.browser.screenshots, Path::new(DEFAULT_SCREENSHOTS_DIR));
    assert!(d.browser.sandbox && d.browser.max_concurrent == 2);

    let e = resolve_yaml("browser:\n  max_concurrent: 0\n  memory_mb: 16\n").unwrap_err();
    assert!(
        e.contains(":2:") && e.contains("browser.max_concurrent"),
        "{e}"
    );
    assert!(
        e.contains(":3:") && e.contains("browser.memory_mb") && e.contains("at least 128"),
        "{e}"
    );
    let e = resolve_yaml("browser:\n  memory_mb: 17592186044416\n").unwrap_err();
    assert!(
        e.contains(":2:") && e.contains("browser.memory_mb") && e.contains("at most 1048576"),
        "{e}"
    );
    assert_eq!(
        resolve_yaml("browser:\n  memory_mb: 1048576\n")
            .unwrap()
            .browser
            .memory_mb,
        1 << 20
    );
}
