//! `prober.yaml` checked like probe files: the real CLI (`check --config`,
//! `run`) on settings files with many problems reports every one with its
//! line and column; the shipped compose settings pass.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::helpers::cli;

const PROBE: &str = "name: home\nevery: 10s\nhttp: {url: \"http://127.0.0.1:9/\"}\n";

/// A settings file with one problem per entry of [`EXPECTED`].
const BROKEN: &str = r#"location: ""
max_concurency: 3
flush_interval: 250
retention:
  runs: 7 days please
alerting:
  severity: loud
  by_label:
    - labels: {}
      alert: {failures_to_fire: 0}
silences:
  - matchers: {team: pay}
    cron: "0 0 2 * *"
    duration: 2h
    comment: weekly
dashboard_url: https://grafana.example/d/x?var-probe={probe_name}
metrics_labels: [team, le]
receivers:
  - {name: hook, type: webhook, url: "ftp://hooks.example/"}
  - {name: hook, type: slack}
  - {name: pd, type: pagerduty}
  - {name: mail, type: email}
  - {name: am, type: alertmanager, url: "http://alertmanager:9093", secret: s}
"#;

/// (line:column, field and words of the message) of every problem of [`BROKEN`].
const EXPECTED: &[(&str, &str)] = &[
    ("1:11", "location: must be 1 to 64 characters"),
    ("2:1", "max_concurency: unknown key"),
    (
        "3:17",
        "flush_interval: expected text (a string), got 250; write a duration",
    ),
    ("5:9", "retention.runs: \"7 days please\" is not a duration"),
    ("7:13", "alerting.severity: \"loud\" is not a severity"),
    (
        "9:15",
        "alerting.by_label[0].labels: give at least one label",
    ),
    (
        "10:33",
        "alerting.by_label[0].alert.failures_to_fire: must be at least 1",
    ),
    (
        "13:11",
        "silences[0].cron: \"0 0 2 * *\" is not a cron expression",
    ),
    ("16:16", "dashboard_url: unknown placeholder {probe_name}"),
    ("17:24", "metrics_labels[1]: \"le\" is a label /metrics"),
    ("19:38", "receivers[0].url: the scheme is ftp:"),
    ("20:5", "receivers[1].url: is required for a slack receiver"),
    (
        "20:12",
        "receivers[1].name: \"hook\" is also the name of receivers[0] (line 19)",
    ),
    (
        "21:5",
        "receivers[2].routing_key: is required for a pagerduty receiver",
    ),
    (
        "22:24",
        "receivers[3].type: \"email\" is not a receiver type",
    ),
    (
        "23:77",
        "receivers[4].secret: only a webhook receiver signs with it",
    ),
];

/// A directory holding `prober.yaml` (with `settings`) and `probes/home.yaml`.
fn workdir(settings: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("probes")).unwrap();
    std::fs::write(dir.path().join("probes/home.yaml"), PROBE).unwrap();
    std::fs::write(dir.path().join("prober.yaml"), settings).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts every problem of [`EXPECTED`] is on a line `prober.yaml:L:C: …` of `stderr`.
fn assert_every_problem_placed(stderr: &str) {
    let missing: Vec<_> = EXPECTED
        .iter()
        .filter(|(at, words)| {
            let prefix = format!("prober.yaml:{at}: ");
            !stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(words))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not reported: {missing:#?}\nstderr:\n{stderr}"
    );
    let placed = stderr
        .lines()
        .filter(|l| l.starts_with("prober.yaml:"))
        .count();
    assert_eq!(placed, EXPECTED.len(), "one line per problem:\n{stderr}");
}

#[test]
fn check_config_reports_every_settings_problem_with_its_line_and_column() {
    // Arrange
    let dir = workdir(BROKEN);

    // Act
    let out = cli(dir.path(), &["check", "--config", "prober.yaml"], &[]);

    // Assert
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_every_problem_placed(&stderr(&out));
    assert!(stderr(&out).contains(&format!("{} error(s)", EXPECTED.len())));
}

#[test]
fn numbers_and_durations_past_their_bounds_are_refused_not_overflowed() {
    let dir = workdir(
        "max_per_host: 10000000000\nretention: {runs: 300000000y}\nalerting: {evaluate_every: 400000000000y}\n",
    );
    let out = cli(dir.path(), &["check", "--config", "prober.yaml"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for words in [
        "max_per_host: must be 1 to 1000000",
        "retention.runs: \"300000000y\" is longer than 100 years",
        "alerting.evaluate_every: \"400000000000y\" is longer than 100 years",
    ] {
        assert!(err.contains(words), "{words}\n{err}");
    }
}

#[test]
fn check_without_config_checks_the_prober_yaml_of_the_working_directory_as_run_would() {
    let dir = workdir(BROKEN);

    let out = cli(dir.path(), &["check"], &[]);

    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_every_problem_placed(&stderr(&out));
}

#[test]
fn check_loads_the_probe_paths_the_settings_name_when_none_are_given() {
    let dir = workdir("probes: [elsewhere]\n");
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    std::fs::write(dir.path().join("elsewhere/broken.yaml"), "name: x\n").unwrap();

    let out = cli(dir.path(), &["check"], &[]);

    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("elsewhere/broken.yaml:1:1: probe \"x\": the probe has no schedule"),
        "{}",
        stderr(&out)
    );
}

/// `check` loads what `run` would: PROBER_PROBES (and `--probes`) win over the file's `probes`.
#[test]
fn check_loads_the_probes_of_prober_probes_as_run_would() {
    let dir = workdir("probes: [elsewhere]\n");
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    std::fs::write(dir.path().join("mine/broken.yaml"), "name: y\n").unwrap();

    let out = cli(dir.path(), &["check"], &[("PROBER_PROBES", "mine")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("mine/broken.yaml:1:1"),
        "{}",
        stderr(&out)
    );

    let out = cli(
        dir.path(),
        &["check", "--probes", "probes"],
        &[("PROBER_PROBES", "mine")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn run_with_a_broken_settings_file_exits_2_with_every_problem_before_touching_anything() {
    let dir = workdir(BROKEN);

    // The database is a closed loopback port: a start that got that far would fail differently.
    let out = cli(
        dir.path(),
        &[
            "run",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ],
        &[],
    );

    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_every_problem_placed(&stderr(&out));
    assert!(stderr(&out).contains("prober check --config prober.yaml"));
}

#[test]
fn an_unset_secret_is_a_warning_for_check_and_an_error_naming_receiver_and_variable_at_start() {
    let dir = workdir(
        "receivers:\n  - {name: chat, type: slack, url: \"${env:PROBER_IT_UNSET_SLACK_URL}\"}\n",
    );

    let check = cli(dir.path(), &["check"], &[]);
    let run = cli(
        dir.path(),
        &[
            "run",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ],
        &[],
    );

    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("prober.yaml:2:36: warning: receivers[0].url: receiver \"chat\": environment variable PROBER_IT_UNSET_SLACK_URL is not set"),
        "{}",
        stderr(&check)
    );
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("prober.yaml:2:36: receivers[0].url: receiver \"chat\": environment variable PROBER_IT_UNSET_SLACK_URL is not set"),
        "{}",
        stderr(&run)
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn check_config_passes_on_the_compose_stack_s_settings_and_the_shipped_probes() {
    let out = cli(
        &repo(),
        &["check", "--config", "deploy/compose/prober.yaml", "probes"],
        &[],
    );

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("settings deploy/compose/prober.yaml"),
        "{stdout}"
    );
}
