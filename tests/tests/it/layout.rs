//! The shape of the code, checked like behaviour (ARCHITECTURE.md, "Invariants"):
//! dependencies between the top-level modules of `prober/src` run one way, from
//! the run vocabulary up to the command line; no file over 600 lines; no
//! function over 100 lines; migrations that have landed never change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, lowest first. A module may import (`crate::x`) only
/// modules listed before it. A new module must be placed here.
const RANKS: &[&str] = &[
    "run",       // the run vocabulary: Outcome, ErrorClass, RunRecord (a leaf)
    "trend",     // pure trend detectors over series (a leaf: imports nothing)
    "config",    // probe files, settings, alert policy and receiver definitions
    "results",   // live state in memory: recent runs, status, /metrics histograms
    "probe",     // running one probe: the kinds, retries, the run budget
    "store",     // Postgres: migrations, the writer, partitions, rollups, reads
    "schedule",  // when probes run; hands records to the store's queue
    "alert",     // alert rules, state machine, persistence of alert state
    "notify",    // receivers, the outbox and its worker
    "analysis",  // trend analysis: series from the store, findings stored
    "telemetry", // logging, /metrics collectors per subsystem
    "api",       // the HTTP API
    "daemon",    // wires everything; owns shared state and reload
    "demo",      // demo targets for the shipped examples
    "cli",       // the command line
];

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 100;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../prober/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for `lib.rs` and `main.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Source without `//` comments (doc links are not dependencies); strings stay,
/// since `serialize_with = "crate::run::ms::one"` is one.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module named after `crate::`, including inside `use crate::{a::X, b}`.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `my_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            let mut ident = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => item_start = true,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && item_start {
                    if c.is_alphanumeric() || c == '_' {
                        ident.push(c);
                    } else if !ident.is_empty() {
                        found.insert(std::mem::take(&mut ident));
                        item_start = false;
                    }
                }
            }
            if !ident.is_empty() {
                found.insert(ident);
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                found.insert(ident);
            }
        }
    }
    found
}

/// `from -> {to}` over the top-level modules, from the code's own imports.
fn module_graph() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for file in files {
        let Some(from) = module_of(&src, &file) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let rel = file.strip_prefix(&src).unwrap().display().to_string();
        let edges = graph.entry(from.clone()).or_default();
        for to in imported_modules(&code) {
            // Crate-root items (`crate::VERSION`) are free for all.
            if to != from && to.chars().next().is_some_and(|c| c.is_lowercase()) {
                edges.entry(to).or_default().push(rel.clone());
            }
        }
    }
    graph
}

#[test]
fn the_import_parser_sees_groups_paths_and_strings() {
    let code = code_only(
        "use crate::run::Outcome;\nuse crate::{config::{Probe, Check}, store};\n\
         #[serde(with = \"crate::results::x\")]\nlet v = crate::VERSION; // crate::alert::X\nfoo_crate::bar",
    );
    let got: Vec<_> = imported_modules(&code).into_iter().collect();
    assert_eq!(got, ["VERSION", "config", "results", "run", "store"]);
}

#[test]
fn dependencies_between_modules_run_one_way() {
    let graph = module_graph();
    let rank = |m: &str| RANKS.iter().position(|r| *r == m);
    let mut problems = Vec::new();
    for (from, edges) in &graph {
        let Some(from_rank) = rank(from) else {
            problems.push(format!(
                "module `{from}` has no rank: place it in RANKS (tests/tests/it/layout.rs) and ARCHITECTURE.md"
            ));
            continue;
        };
        for (to, files) in edges {
            match rank(to) {
                None => problems.push(format!("`{from}` imports unknown module `{to}` ({})", files.join(", "))),
                Some(to_rank) if to_rank >= from_rank => problems.push(format!(
                    "`{from}` imports `{to}`, which sits above it, in {}: move the shared item down (into `{to}`'s \
                     lower neighbour or `{from}`) or invert the call (a trait or channel owned by `{from}`)",
                    files.join(", ")
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} arrow(s) against the layering:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn no_cycles_between_modules() {
    // Redundant with the ranks while they hold, but names the cycle when someone edits RANKS.
    let graph = module_graph();
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(start.clone());
                    // Report each cycle once, from its smallest module.
                    if cycle[1..cycle.len() - 1].iter().all(|m| m > start) {
                        cycles.push(cycle.join(" -> "));
                    }
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "cycles between modules:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_file_over_600_lines_and_no_function_over_100() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file.strip_prefix(&src).unwrap().display();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > MAX_FILE_LINES {
            problems.push(format!(
                "prober/src/{rel}: {} lines (at most {MAX_FILE_LINES}): split it by responsibility",
                lines.len()
            ));
        }
        for (start, name, len) in long_functions(&lines) {
            problems.push(format!(
                "prober/src/{rel}:{}: fn {name} is {len} lines (at most {MAX_FN_LINES})",
                start + 1
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Functions longer than the limit: (0-based start line, name, length). Relies on
/// rustfmt's layout: a body closes with `}` alone at the indentation of its `fn`.
fn long_functions(lines: &[&str]) -> Vec<(usize, String, usize)> {
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(name) = fn_name(trimmed) else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        // The signature ends at the first line ending in `{` (a body) or `;` (a declaration).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
        }) else {
            continue;
        };
        if !lines[open].trim_end().ends_with('{') {
            continue;
        }
        let end = (open + 1..lines.len()).find(|&j| {
            let l = lines[j];
            l.trim() == "}" && l.len() - l.trim_start().len() == indent
        });
        if let Some(end) = end {
            let len = end - i + 1;
            if len > MAX_FN_LINES {
                found.push((i, name, len));
            }
        }
    }
    found
}

/// `fn name` at the start of an item line, after visibility and qualifiers.
fn fn_name(trimmed: &str) -> Option<String> {
    let mut rest = trimmed;
    loop {
        let before = rest;
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
            "extern \"C\" ",
        ] {
            if let Some(r) = rest.strip_prefix(prefix) {
                rest = r;
            }
        }
        if rest == before {
            break;
        }
    }
    let after = rest.strip_prefix("fn ")?;
    Some(
        after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect(),
    )
}

#[test]
fn the_function_measure_counts_bodies_not_declarations() {
    let mut src = vec!["trait T {", "    fn declared(&self);", "}", "fn long() {"];
    src.extend(std::iter::repeat_n("    let x = 1;", 100));
    src.push("}");
    src.push("fn short() {}");
    let found = long_functions(&src);
    assert_eq!(found, [(3, "long".to_string(), 102)]);
}

/// Landed migrations are append-only: sqlx refuses to start on a database whose
/// recorded checksum of an applied migration differs from the file's, so an edit
/// to a landed migration breaks every database migrated before it. The list beside
/// them (`migrations/checksums.sha384`) is the record; a new migration appends a line.
#[test]
fn landed_migrations_never_change() {
    let list_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/checksums.sha384");
    let list = std::fs::read_to_string(&list_path).unwrap();
    let recorded: BTreeMap<i64, String> = list
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (hex, file) = l
                .split_once("  ")
                .unwrap_or_else(|| panic!("bad line in {}: {l:?}", list_path.display()));
            let version: i64 = file.split('_').next().unwrap().parse().unwrap();
            (version, hex.to_string())
        })
        .collect();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for m in prober::store::MIGRATOR.iter() {
        seen.insert(m.version);
        let hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
        match recorded.get(&m.version) {
            None => problems.push(format!(
                "migration {} ({}) is not in migrations/checksums.sha384: append the line\n{hex}  {}_{}.sql",
                m.version,
                m.description,
                m.version,
                m.description.replace(' ', "_")
            )),
            Some(r) if *r != hex => problems.push(format!(
                "migration {} ({}) changed after it landed: databases migrated before refuse to start. \
                 Revert the edit and add a new migration instead",
                m.version, m.description
            )),
            Some(_) => {}
        }
    }
    for version in recorded.keys().filter(|v| !seen.contains(v)) {
        problems.push(format!(
            "migration {version} is recorded as landed but its file is gone: restore it"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
