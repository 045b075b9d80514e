//! `prober check` and `prober schema`, run as the real binary against the
//! fixture files: every broken file is refused with a problem at its line, and
//! the valid files and the shipped examples are accepted.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file of `tests/fixtures/broken`: (file name, line of its problem, text the problem's line must hold).
/// A file added to the directory without a row here fails
/// `check_rejects_the_whole_broken_corpus_in_one_run`.
const CORPUS: &[(&str, usize, &str)] = &[
    ("alert_bad_severity.yaml", 6, "alert.severity"),
    ("alias_bomb_7_levels.yaml", 6, "an alias bomb?"),
    ("alias_bomb_9_levels.yaml", 6, "an alias bomb?"),
    ("nested_too_deep.yaml", 67, "nested more than 64 deep"),
    ("alert_latency_quantile.yaml", 6, "between 0 and 1"),
    ("alert_slo_objective.yaml", 5, "alert.slo.objective"),
    ("depends_on_cycle.yaml", 2, "cycle-a → cycle-b → cycle-a"),
    ("depends_on_itself.yaml", 5, "cannot depend on itself"),
    (
        "steps_var_before_defined.yaml",
        12,
        "${session}` is used before",
    ),
    ("steps_duplicate_name.yaml", 7, "steps[1].name"),
    (
        "steps_extract_two_sources.yaml",
        8,
        "steps[0].extract.token",
    ),
    ("steps_timeout_too_long.yaml", 7, "steps[0].timeout"),
    ("steps_variable_outside_scenario.yaml", 5, "no `steps:`"),
    ("two_kinds.yaml", 5, "a probe has one check"),
    ("expect_on_tcp.yaml", 5, "`expect` applies to `http`"),
    ("tcp_bad_banner_regex.yaml", 7, "tcp.expect"),
    ("dns_bad_type.yaml", 6, "dns.type"),
    ("dns_server_is_a_name.yaml", 6, "dns.server"),
    ("dns_bad_rcode.yaml", 7, "dns.rcode"),
    ("grpc_target_with_scheme.yaml", 5, "grpc.target"),
    ("retry_one_attempt.yaml", 4, "retry.attempts"),
    ("retry_unknown_class.yaml", 6, "retry.on[1]"),
    (
        "retry_budget_over_interval.yaml",
        4,
        "timeout: a retried run may take 34s (3 attempts × timeout 10s + 2 × retry.delay 2s)",
    ),
    ("bad_cron_five_fields.yaml", 3, "cron"),
    ("bad_duration_words.yaml", 3, "every"),
    ("bad_env_var_name.yaml", 7, "environment variable name"),
    ("bad_header_name.yaml", 7, "not a valid header name"),
    ("bad_method.yaml", 5, "http.method"),
    ("body_and_json.yaml", 9, "both `body` and `json`"),
    ("cron_never_fires.yaml", 3, "cron"),
    ("dup_a.yaml", 2, "checkout-api-health"),
    ("dup_b.yaml", 2, "checkout-api-health"),
    ("duplicate_key.yaml", 7, "duplicate key `url`"),
    ("every_and_cron.yaml", 4, "both `every` and `cron`"),
    ("every_is_a_number.yaml", 3, "every"),
    (
        "header_check_without_assertion.yaml",
        8,
        "expect.headers[0]",
    ),
    ("headers_as_list.yaml", 7, "http.headers"),
    ("http_is_a_string.yaml", 4, "http"),
    ("interval_below_minimum.yaml", 3, "minimum"),
    ("invalid_json_path.yaml", 8, "expect.json[0].path"),
    (
        "invalid_regex_body_matches.yaml",
        8,
        "expect.body_matches[0]",
    ),
    (
        "invalid_regex_json_matches.yaml",
        9,
        "expect.json[0].matches",
    ),
    ("json_check_two_assertions.yaml", 8, "exactly one of"),
    ("list_second_probe_bad.yaml", 8, "runbook"),
    ("max_body_bytes_zero.yaml", 6, "max_body_bytes"),
    ("missing_name.yaml", 2, "`name`"),
    ("missing_url.yaml", 5, "`url`"),
    ("name_is_a_number.yaml", 2, "name"),
    (
        "name_is_a_path.yaml",
        2,
        "name \"../etc/passwd\" is not allowed",
    ),
    ("name_is_a_dot.yaml", 2, "name \".\" is not allowed"),
    ("no_schedule.yaml", 2, "no schedule"),
    ("second_document_bad.yaml", 7, "shop cart"),
    ("several_problems.yaml", 6, "tls_verfy"),
    ("status_class_2x.yaml", 7, "\"2x\""),
    ("status_class_6xx.yaml", 7, "6xx"),
    ("status_code_out_of_range.yaml", 7, "700"),
    ("status_list_wrong_type.yaml", 7, "expect.status"),
    ("timeout_not_below_cron_gap.yaml", 4, "timeout"),
    ("timeout_not_below_interval.yaml", 4, "timeout"),
    ("top_level_scalar.yaml", 2, "a probe file holds"),
    ("unclosed_placeholder.yaml", 5, "closing"),
    ("unknown_key_in_expect.yaml", 7, "status_code"),
    ("unknown_key_in_http.yaml", 6, "`header`"),
    ("unknown_key_in_json_check.yaml", 9, "`equal`"),
    ("unknown_key_in_secret_header.yaml", 9, "secrte"),
    ("unknown_placeholder.yaml", 7, "${token}"),
    ("unknown_top_level_key.yaml", 4, "timout"),
    ("url_scheme_ftp.yaml", 5, "ftp"),
    ("yaml_syntax.yaml", 3, "invalid YAML"),
    ("zero_duration.yaml", 4, "greater than zero"),
];

/// The corpus file that holds several problems on purpose, and each of them.
const SEVERAL_PROBLEMS: &str = "several_problems.yaml";
const SEVERAL_PROBLEMS_EXPECTED: &[(usize, &str)] = &[
    (6, "tls_verfy"),
    (8, "6xx"),
    (9, "expect.max_latency"),
    (12, "expect.headers[0].matches"),
];

/// Words of the Rust implementation that must never reach a message about a probe file.
const RUST_INTERNALS: &[&str] = &["Raw", "struct ", "untagged enum"];

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the real `prober` command line with `args`.
fn prober<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_prober-cli"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env_remove("PROBER_PROBES")
        .output()
        .expect("the prober-cli binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn broken_dir() -> PathBuf {
    fixtures().join("broken")
}

fn valid_dir() -> PathBuf {
    fixtures().join("valid")
}

/// Names of the probe files (`*.yaml`, `*.yml`) directly in `dir`.
fn probe_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("the fixture directory exists")
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| matches!(p.extension().and_then(OsStr::to_str), Some("yaml" | "yml")))
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect()
}

/// The problem lines of `stderr` about `file`, each with its line number:
/// lines of the form `FILE:LINE:COL: ...`.
fn problems_of<'a>(stderr: &'a str, file: &Path) -> Vec<(usize, &'a str)> {
    let prefix = format!("{}:", file.display());
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (line, rest) = rest.split_once(':')?;
            let (col, _) = rest.split_once(':')?;
            col.parse::<usize>().ok()?;
            Some((line.parse().ok()?, l))
        })
        .collect()
}

#[test]
fn check_rejects_the_whole_broken_corpus_in_one_run() {
    // Arrange
    let dir = broken_dir();
    let in_table: BTreeSet<String> = CORPUS.iter().map(|(f, _, _)| f.to_string()).collect();
    let on_disk = probe_files(&dir);
    assert_eq!(
        in_table.len(),
        CORPUS.len(),
        "a file appears twice in the CORPUS table"
    );
    assert_eq!(
        on_disk,
        in_table,
        "the CORPUS table must have exactly one row per file of {}",
        dir.display()
    );

    // Act
    let run = prober(&[OsStr::new("check"), dir.as_os_str()]);

    // Assert
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    let mut misses = Vec::new();
    for (file, line, needle) in CORPUS {
        let problems = problems_of(&run.stderr, &dir.join(file));
        let found = problems
            .iter()
            .any(|(l, text)| l == line && text.contains(needle));
        if !found {
            misses.push(format!(
                "{file}: no problem at line {line} mentioning {needle:?}; got {problems:?}"
            ));
        }
    }
    assert!(
        misses.is_empty(),
        "{} corpus file(s) not reported as expected:\n{}\n\nstderr:\n{}",
        misses.len(),
        misses.join("\n"),
        run.stderr
    );
}

#[test]
fn check_reports_a_single_mistake_exactly_once() {
    // Arrange: every corpus file has one mistake, except the one made to have several.
    let dir = broken_dir();

    // Act
    let run = prober(&[OsStr::new("check"), dir.as_os_str()]);

    // Assert
    let repeated: Vec<String> = CORPUS
        .iter()
        .filter(|(file, _, _)| *file != SEVERAL_PROBLEMS)
        .filter_map(|(file, _, _)| {
            let problems = problems_of(&run.stderr, &dir.join(file));
            (problems.len() != 1)
                .then(|| format!("{file}: {} problems: {problems:#?}", problems.len()))
        })
        .collect();
    assert!(
        repeated.is_empty(),
        "a file with one mistake must get exactly one problem line:\n{}",
        repeated.join("\n")
    );
}

#[test]
fn check_reports_every_problem_of_a_file_with_several_problems() {
    // Arrange
    let file = broken_dir().join(SEVERAL_PROBLEMS);

    // Act
    let run = prober(&[OsStr::new("check"), file.as_os_str()]);

    // Assert
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    let problems = problems_of(&run.stderr, &file);
    for (line, needle) in SEVERAL_PROBLEMS_EXPECTED {
        assert!(
            problems
                .iter()
                .any(|(l, text)| l == line && text.contains(needle)),
            "no problem at line {line} mentioning {needle:?}; stderr:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        problems.len(),
        SEVERAL_PROBLEMS_EXPECTED.len(),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn check_reports_a_duplicate_name_at_both_definitions() {
    // Arrange
    let a = broken_dir().join("dup_a.yaml");
    let b = broken_dir().join("dup_b.yaml");
    let cases = [(&a, &b), (&b, &a)];

    // Act
    let run = prober(&[OsStr::new("check"), a.as_os_str(), b.as_os_str()]);

    // Assert
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    for (here, other) in cases {
        let other_place = format!("{}:2", other.display());
        let problems = problems_of(&run.stderr, here);
        assert!(
            problems.iter().any(|(line, text)| *line == 2
                && text.contains("\"checkout-api-health\"")
                && text.contains(&other_place)),
            "{} must report the name at line 2 and point at {other_place}; stderr:\n{}",
            here.display(),
            run.stderr
        );
    }
}

#[test]
fn check_prints_each_problem_on_one_line() {
    // Arrange
    let dir = broken_dir();
    let prefix = format!("{}/", dir.display());

    // Act
    let run = prober(&[OsStr::new("check"), dir.as_os_str()]);

    // Assert: every line is `FILE:LINE:COL: ...`, except the summary at the end.
    let lines: Vec<&str> = run.stderr.lines().collect();
    let (summary, problems) = lines.split_last().expect("check prints something");
    assert!(summary.contains("error(s)"), "summary: {summary:?}");
    let stray: Vec<&&str> = problems
        .iter()
        .filter(|l| !l.starts_with(&prefix))
        .collect();
    assert!(
        stray.is_empty(),
        "lines that are not `FILE:LINE:COL: message` (a message spans lines?): {stray:#?}"
    );
}

#[test]
fn check_messages_speak_of_the_file_format_not_of_rust_types() {
    // Arrange
    let dir = broken_dir();

    // Act
    let run = prober(&[OsStr::new("check"), dir.as_os_str()]);

    // Assert
    let leaks: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| RUST_INTERNALS.iter().any(|w| l.contains(w)))
        .collect();
    assert!(
        leaks.is_empty(),
        "messages name Rust types ({RUST_INTERNALS:?}) instead of saying what to write: {leaks:#?}"
    );
}

#[test]
fn check_accepts_the_valid_fixtures_and_the_shipped_examples() {
    // Arrange
    let dirs = [
        valid_dir(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../probes"),
    ];

    for dir in dirs {
        // Act
        let run = prober(&[OsStr::new("check"), dir.as_os_str()]);

        // Assert
        assert_eq!(
            run.code,
            Some(0),
            "{} must pass `prober check`; stderr:\n{}",
            dir.display(),
            run.stderr
        );
        assert!(run.stdout.starts_with("ok:"), "stdout: {}", run.stdout);
    }
}

#[test]
fn check_exits_0_and_prints_ok_for_each_valid_file() {
    // Arrange
    let files = probe_files(&valid_dir());
    assert!(files.len() >= 2, "valid fixtures: {files:?}");

    for name in files {
        let file = valid_dir().join(&name);

        // Act
        let run = prober(&[OsStr::new("check"), file.as_os_str()]);

        // Assert
        assert_eq!(run.code, Some(0), "{name}; stderr:\n{}", run.stderr);
        assert!(
            run.stdout.starts_with("ok:"),
            "{name}; stdout: {}",
            run.stdout
        );
    }
}

#[test]
fn check_on_a_missing_path_exits_2_and_names_the_path() {
    // Arrange
    let missing = fixtures().join("no-such-probes-dir");

    // Act
    let run = prober(&[OsStr::new("check"), missing.as_os_str()]);

    // Assert
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "stderr must name {}:\n{}",
        missing.display(),
        run.stderr
    );
}

#[test]
fn schema_prints_a_json_schema_of_the_probe_keys() {
    // Arrange
    let keys = ["every", "http", "expect"];

    // Act
    let run = prober(&["schema"]);

    // Assert
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    let schema: serde_json::Value =
        serde_json::from_str(&run.stdout).expect("`prober schema` prints JSON");
    let text = schema.to_string();
    for key in keys {
        assert!(
            text.contains(&format!("\"{key}\"")),
            "the schema does not mention `{key}`"
        );
    }
}

/// Writes `files` (name, text) into a new temporary directory.
fn temp_probes(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("the file is written");
    }
    dir
}

#[test]
fn check_says_what_to_write_in_plain_words_not_rust_type_names() {
    // Arrange: values of the wrong type or range, one file each: (file, text, words its message must hold).
    let cases: &[(&str, &str, &str)] = &[
        (
            "port_too_big.yaml",
            "name: db\nevery: 30s\ntcp:\n  host: 127.0.0.1\n  port: 70000\n",
            "tcp.port: expected a whole number from 0 to 65535, got 70000",
        ),
        (
            "port_is_text.yaml",
            "name: db\nevery: 30s\ntcp:\n  host: 127.0.0.1\n  port: postgres\n",
            "tcp.port: expected a whole number from 0 to 65535, got \"postgres\"",
        ),
        (
            "keep_alive_yes.yaml",
            "name: web\nevery: 30s\nhttp:\n  url: http://127.0.0.1/\n  keep_alive: \"yes\"\n",
            "http.keep_alive: expected true or false, got \"yes\"",
        ),
        (
            "redirects_negative.yaml",
            "name: web\nevery: 30s\nhttp:\n  url: http://127.0.0.1/\n  redirects: -1\n",
            "http.redirects: expected a whole number from 0 to 4294967295, got -1",
        ),
        (
            "retry_is_text.yaml",
            "name: web\nevery: 30s\nhttp:\n  url: http://127.0.0.1/\nretry: twice\n",
            "retry: expected a mapping (key: value), got \"twice\"",
        ),
        (
            "depends_on_is_a_mapping.yaml",
            "name: web\nevery: 30s\nhttp:\n  url: http://127.0.0.1/\ndepends_on: {db: yes}\n",
            "depends_on: expected a list, got a mapping",
        ),
        (
            "trace_is_a_word.yaml",
            "name: web\nevery: 30s\nhttp:\n  url: http://127.0.0.1/\ntrace: sometimes\n",
            "trace: expected true, false or unsampled, got \"sometimes\"",
        ),
    ];
    let files: Vec<(&str, &str)> = cases.iter().map(|(f, t, _)| (*f, *t)).collect();
    let dir = temp_probes(&files);

    // Act
    let run = prober(&[OsStr::new("check"), dir.path().as_os_str()]);

    // Assert
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    for (file, _, words) in cases {
        let problems = problems_of(&run.stderr, &dir.path().join(file));
        assert!(
            problems.iter().any(|(_, l)| l.contains(words)),
            "{file}: no problem says {words:?}; stderr:\n{}",
            run.stderr
        );
    }
    let rust_words = [
        "u8",
        "u16",
        "u32",
        "u64",
        "usize",
        "i64",
        "f64",
        "a sequence",
        "a map,",
        "struct ",
        "enum ",
        "a boolean",
    ];
    let leaks: Vec<&str> = (run.stderr.lines())
        .filter(|l| rust_words.iter().any(|w| l.contains(w)))
        .collect();
    assert!(leaks.is_empty(), "Rust type names: {leaks:#?}");
}

#[test]
fn check_warns_about_a_file_that_holds_no_probe_and_sums_up() {
    // Arrange
    let dir = temp_probes(&[
        ("empty.yaml", ""),
        (
            "comments.yaml",
            "# the payments probes, to come\n# name: pay\n",
        ),
        (
            "web.yaml",
            "name: web\nevery: 30s\nhttp:\n  url: http://127.0.0.1/\n",
        ),
    ]);

    // Act
    let run = prober(&[OsStr::new("check"), dir.path().as_os_str()]);

    // Assert: still valid (a warning), each empty file named, and the summary counts them.
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    for file in ["empty.yaml", "comments.yaml"] {
        let problems = problems_of(&run.stderr, &dir.path().join(file));
        assert!(
            problems
                .iter()
                .any(|(line, l)| *line == 1 && l.contains("warning: the file holds no probe")),
            "{file}: stderr:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        run.stdout.trim(),
        "ok: 1 probe(s) in 3 file(s), 2 warning(s)"
    );
}

#[test]
fn schema_requires_exactly_one_schedule_and_one_kind_as_check_does() {
    // Arrange: what `check` enforces (tests/fixtures/broken: every_and_cron, two_kinds, no_schedule).
    let schedule: BTreeSet<String> = ["every", "cron"].map(String::from).into();
    let kinds: BTreeSet<String> = [
        "http",
        "steps",
        "tcp",
        "dns",
        "tls",
        "grpc",
        "icmp",
        "websocket",
        "browser",
    ]
    .map(String::from)
    .into();

    // Act
    let run = prober(&["schema"]);

    // Assert: the probe requires `oneOf` each group's keys, one `required` key per branch,
    // so a document with two (or none) of them is invalid.
    let schema: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let probe = &schema["$defs"]["RawProbe"];
    let groups: Vec<BTreeSet<String>> = probe["allOf"]
        .as_array()
        .expect("the probe schema has allOf")
        .iter()
        .map(|g| {
            let branches = g["oneOf"].as_array().expect("each group is a oneOf");
            branches
                .iter()
                .map(|b| {
                    let required = b["required"].as_array().expect("a required key");
                    assert_eq!(required.len(), 1, "one key per branch: {b}");
                    required[0].as_str().unwrap().to_string()
                })
                .collect()
        })
        .collect();
    assert_eq!(groups, vec![schedule, kinds.clone()]);
    for key in groups.iter().flatten() {
        assert!(
            probe["properties"][key].is_object(),
            "{key} is not a property"
        );
    }
    // Neither group is also plainly required (that would contradict oneOf).
    let required: Vec<&str> = (probe["required"].as_array().into_iter().flatten())
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        required
            .iter()
            .all(|r| !kinds.contains(*r) && *r != "every" && *r != "cron"),
        "{required:?}"
    );
}

/// `prober schema | head`: a closed pipe ends the output, with no panic. The
/// pipe's reading end is closed before the prober starts, so every write fails.
#[test]
fn schema_into_a_closed_pipe_ends_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_prober-cli"))
        .arg("schema")
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn a_symlink_loop_in_a_probe_directory_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("home.yaml"),
        "name: home\nevery: 10s\nhttp: {url: \"http://127.0.0.1:9/\"}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("self")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("again")).unwrap();
    let run = prober(&[OsStr::new("check"), dir.path().as_os_str()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("ok: 1 probe(s)"), "{}", run.stdout);
}

#[test]
fn a_directory_too_deep_is_named_not_skipped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let deep = (0..20).fold(dir.path().to_path_buf(), |p, i| p.join(format!("d{i}")));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        deep.join("lost.yaml"),
        "name: lost\nevery: 10s\nhttp: {url: \"http://127.0.0.1:9/\"}\n",
    )
    .unwrap();
    let run = prober(&[OsStr::new("check"), dir.path().as_os_str()]);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("nested more than 16 deep") && said.contains("d16"),
        "{said}"
    );
}
