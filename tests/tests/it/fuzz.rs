//! Property-based fuzzing of what reads user text: the probe-file loader (any
//! bytes, YAML-ish token soup, mutations of a valid probe), templates, durations,
//! cron expressions and the settings file. Each must finish without a panic and
//! account for its input (probes or placed problems). Case counts are bounded so
//! the suite stays fast; `PROPTEST_CASES=100000 cargo test -p prober-tests --test it fuzz::`
//! runs longer. A failing case prints its minimal input: add it to the unit
//! tests of the module at fault as a regression test.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use prober::config::load::{load_text, LoadReport};
use prober::config::settings::{EnvMode, Settings, SettingsArgs};
use prober::config::template::Template;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 256;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        // No files written next to the sources; a failure prints its input.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Loads `text` as a probe file and checks that every input is accounted for.
fn load(text: &str) -> LoadReport {
    let mut report = LoadReport::default();
    load_text(Path::new("fuzz.yaml"), text, &mut report);
    assert!(
        !report.probes.is_empty() || !report.diagnostics.is_empty(),
        "the loader said nothing about {text:?}"
    );
    // YAML breaks lines at \n, \r\n and a lone \r; a problem found at the end of the
    // input may be placed on the line after the last.
    let lines = text.matches(['\n', '\r']).count() + 2;
    for d in &report.diagnostics {
        assert!(d.pos.line <= lines, "{d} is past the end of {text:?}");
    }
    report
}

const VALID: &str = "name: fuzz\nevery: 30s\ntimeout: 5s\nhttp:\n  url: http://127.0.0.1:9/x\n  headers:\n    A: {value: \"${env:X}\", secret: true}\nexpect:\n  status: [200, \"3xx\"]\n  json:\n    - {path: $.a, equals: b}\n";

/// Pieces of YAML and of the probe format, to build token soup from.
const TOKENS: &[&str] = &[
    "name: a\n",
    "name: ",
    "every: 1s\n",
    "every: ",
    "cron: ",
    "timeout: 900ms\n",
    "http:\n",
    "  url: http://127.0.0.1:9/\n",
    "steps:\n",
    "- ",
    "  ",
    "    ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "[",
    "]",
    "{",
    "}",
    ": ",
    ",",
    "\n",
    "'",
    "\"",
    "# c\n",
    "---\n",
    "...\n",
    "!!str ",
    "!x ",
    "? ",
    "|\n",
    ">-\n",
    "${",
    "env:",
    "secret:",
    "}",
    "$${",
    "x",
    "1",
    "-1",
    "0x1f",
    "1e400",
    "null",
    "~",
    "true",
    "<<: *a\n",
    "\t",
    "\u{feff}",
    "é",
    "\0",
    "\\",
    "%YAML 1.2\n",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|t| t.concat())
}

/// A valid probe with a few tokens inserted at arbitrary places.
fn mutated_probe() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), prop::sample::select(TOKENS)),
        1..6,
    )
    .prop_map(|edits| {
        let mut s = VALID.to_string();
        for (at, tok) in edits {
            let mut i = at.index(s.len() + 1);
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            s.insert_str(i, tok);
        }
        s
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_loader_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        load(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn the_loader_survives_yaml_token_soup(text in token_soup()) {
        load(&text);
    }

    #[test]
    fn the_loader_survives_a_mutated_probe(text in mutated_probe()) {
        load(&text);
    }

    #[test]
    fn templates_parse_or_refuse_and_render_without_panicking(
        text in prop_oneof![any::<String>(), "[a-z${}:_$0-9 ]{0,64}"]
    ) {
        if let Ok(t) = Template::parse(&text) {
            let _ = t.render_with(|n| Some(n.to_string()));
            let _ = t.render_masked();
            prop_assert_eq!(t.source(), text.as_str());
        }
    }

    #[test]
    fn durations_load_or_are_placed_errors(
        d in prop_oneof![any::<String>(), "[0-9]{0,25}(ns|us|ms|s|m|h|d|w|y|)[0-9a-z. +-]{0,8}"]
    ) {
        let text = format!("name: d\nevery: {}\nhttp:\n  url: http://127.0.0.1:9/\n", serde_json::to_string(&d).unwrap());
        let report = load(&text);
        if report.probes.is_empty() {
            prop_assert!(report.errors().any(|e| e.pos.line == 2), "{:?}", report.diagnostics);
        }
    }

    #[test]
    fn cron_expressions_load_or_are_placed_errors(
        c in prop_oneof![any::<String>(), "([0-9*/,?LW#-]{1,6} ){4,7}[0-9*/,?LW#A-Z-]{0,6}"]
    ) {
        let text = format!("name: c\ncron: {}\nhttp:\n  url: http://127.0.0.1:9/\n", serde_json::to_string(&c).unwrap());
        let report = load(&text);
        if report.probes.is_empty() {
            prop_assert!(report.errors().any(|e| e.pos.line >= 2), "{:?}", report.diagnostics);
        }
    }
}

proptest! {
    // Each case writes a file: fewer of them.
    #![proptest_config(Config { cases: config().cases / 8, ..config() })]

    #[test]
    fn the_settings_file_survives_token_soup(text in prop_oneof![token_soup(), settings_soup()]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prober.yaml");
        std::fs::write(&path, &text).unwrap();
        let args = SettingsArgs { config: Some(path), ..Default::default() };
        let check = Settings::check(&args, EnvMode::Warn);
        // Either settings came out, or at least one problem says why not.
        prop_assert!(check.settings.is_some() || check.errors().next().is_some());
    }
}

const SETTINGS_TOKENS: &[&str] = &[
    "location: a\n",
    "listen: ",
    "127.0.0.1:0",
    "database_url: ",
    "retention:\n",
    "  runs: 14d\n",
    "alerting:\n",
    "  by_label:\n",
    "    - ",
    "match: {a: b}\n",
    "receivers:\n",
    "  - name: r\n",
    "    type: webhook\n",
    "    url: http://127.0.0.1:9/\n",
    "silences:\n",
    "  - matchers: {}\n",
    "    duration: ",
    "99999999d",
    "2h",
    "cron: ",
    "\"* * * * * *\"",
    "window: 1h\n",
    "&a ",
    "*a",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "\n",
    "  ",
    "~",
    "${env:X}",
    "flush_interval: ",
    "0s",
    "-1",
];

fn settings_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SETTINGS_TOKENS), 0..60).prop_map(|t| t.concat())
}
