//! Property-based fuzzing of everything that parses user input: probe files
//! (arbitrary bytes, YAML-shaped text, and random edits of the shipped
//! examples), templates, durations and cron fields, the settings file, and
//! the API's query strings. The property is always the same: no panic, an
//! answer in bounded time, and every refusal placed (a line and column) or
//! in the API's contract. The normal suite runs a few hundred cases of each
//! (proptest's default, 256); a longer hunt is
//! `PROPTEST_CASES=100000 cargo test -p prober-tests --test it fuzz::`.
//! A failing case is kept by proptest in `tests/proptest-regressions/` and
//! replayed first on every later run: the corpus of crashes found.

use std::path::{Path, PathBuf};

use prober::config::load::{load_text, LoadReport};
use prober::config::settings::{EnvMode, Settings, SettingsArgs};
use prober::config::template::Template;
use proptest::prelude::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Loads `text` as a probe file; every diagnostic must be placed on a line of it.
fn load(text: &str) -> LoadReport {
    let mut report = LoadReport::default();
    load_text(Path::new("fuzz.yaml"), text, &mut report);
    for d in &report.diagnostics {
        let s = d.to_string();
        assert!(s.starts_with("fuzz.yaml:"), "unplaced: {s}");
    }
    report
}

/// The shipped examples' texts, the seeds for the mutation fuzzer.
fn examples() -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![repo().join("probes")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    out.sort();
    out
}

/// One edit of a text: replace, insert or delete a char at a position.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ch = prop::sample::select(vec![
        ':', '-', ' ', '\n', '\t', '{', '}', '[', ']', '&', '*', '!', '|', '>', '#', '"', '\'',
        '$', '%', '@', '`', ',', '?', '0', '9', 'a', '\0', 'é',
    ]);
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), ch).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match *e {
            Edit::Replace(i, c) if !chars.is_empty() => chars[i % n] = c,
            Edit::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i % n);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #[test]
    fn probe_files_of_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        load(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yaml_shaped_probe_files_never_panic(text in "([a-z_]{1,8}: ?|- |  |[{}\\[\\],&*!|>#\"'$%]|\\$\\{[a-z:]{0,12}\\}|[0-9]{1,4}(ms|s|m|h)?|\n){0,80}") {
        load(&text);
    }

    #[test]
    fn edited_examples_never_panic_and_refusals_are_placed(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let examples = examples();
        let text = apply(&examples[seed.index(examples.len())], &edits);
        load(&text);
    }

    #[test]
    fn templates_never_panic(source in "([a-zA-Z0-9 /:?=&.-]|\\$|\\{|\\}|\\$\\{|env:|secret:|uuid|now_unix|random_int){0,40}") {
        if let Ok(t) = Template::parse(&source) {
            let _ = t.render();
        }
    }

    #[test]
    fn durations_and_cron_fields_never_panic(every in "[0-9a-z .]{0,16}", cron in "[0-9*/,? A-Za-z-]{0,40}") {
        load(&format!("name: a\nevery: \"{every}\"\nhttp: {{url: \"http://127.0.0.1:9/\"}}\n"));
        load(&format!("name: b\ncron: \"{cron}\"\nhttp: {{url: \"http://127.0.0.1:9/\"}}\n"));
    }

    #[test]
    fn settings_files_never_panic_and_refusals_are_placed(
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let seed = std::fs::read_to_string(repo().join("deploy/compose/prober.yaml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prober.yaml");
        std::fs::write(&file, apply(&seed, &edits)).unwrap();
        let check = Settings::check(
            &SettingsArgs { config: Some(file.clone()), ..SettingsArgs::default() },
            EnvMode::Warn,
        );
        for d in &check.diagnostics {
            let s = d.to_string();
            prop_assert!(s.starts_with(&file.display().to_string()), "unplaced: {s}");
        }
    }
}
