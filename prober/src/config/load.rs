//! Finds probe files, parses and validates them, and reports every problem at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use serde_path_to_error::Segment;

use super::diag::{plain_serde_message, Ctx, Diagnostic, Severity};
use super::probe::{validate, Probe};
use super::raw::RawProbe;
use super::yaml::{self, join_index, join_key, Document, Pos};

/// The result of loading a set of paths: the probes that are valid, and every problem found.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub probes: Vec<Probe>,
    pub diagnostics: Vec<Diagnostic>,
    pub files: usize,
    /// Files that hold no probe (empty, only comments, an empty list): a reload keeps
    /// the probes such a file had, since it is most likely being written.
    pub empty_files: Vec<PathBuf>,
}

impl LoadReport {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        (self.diagnostics.iter()).filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        (self.diagnostics.iter()).filter(|d| d.severity == Severity::Warning)
    }

    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }
}

/// Loads every `*.yaml`/`*.yml` under `paths` (files are taken as given, directories recursively).
pub fn load_paths(paths: &[PathBuf]) -> LoadReport {
    let mut report = LoadReport::default();
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files, &mut report.diagnostics);
    }
    files.sort();
    files.dedup();
    report.files = files.len();
    for f in &files {
        match yaml::read_bounded(f) {
            Ok(text) => load_text(f, &text, &mut report),
            Err(message) => {
                report
                    .diagnostics
                    .push(file_error(f, Pos { line: 1, col: 1 }, message.to_string()))
            }
        }
    }
    check_unique_names(&mut report);
    check_dependencies(&mut report);
    warn_missing_env(&mut report);
    (report.diagnostics)
        .sort_by(|a, b| (&a.file, a.pos.line, a.pos.col).cmp(&(&b.file, b.pos.line, b.pos.col)));
    report
}

/// The probe files under `paths`, as [`load_paths`] finds them (unreadable paths are skipped).
pub fn probe_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files, &mut Vec::new());
    }
    files.sort();
    files.dedup();
    files
}

fn file_error(file: &Path, pos: Pos, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_path_buf(),
        pos,
        probe: None,
        field: None,
        message,
    }
}

/// Directories deeper than this under a probe path are not read.
const MAX_DEPTH: usize = 16;

fn collect_files(path: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    collect_under(path, out, diags, &mut std::collections::HashSet::new(), 0);
}

/// `seen`: the directories read so far, by their real path, so a symlink
/// loop (`probes/self -> .`) is read once instead of until the kernel stops it.
fn collect_under(
    path: &Path,
    out: &mut Vec<PathBuf>,
    diags: &mut Vec<Diagnostic>,
    seen: &mut std::collections::HashSet<PathBuf>,
    depth: usize,
) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    if depth > MAX_DEPTH {
        diags.push(Diagnostic {
            severity: Severity::Warning,
            ..file_error(
                path,
                Pos::default(),
                format!("directory nested more than {MAX_DEPTH} deep under the probe path: not read; move its probe files nearer the top"),
            )
        });
        return;
    }
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if !seen.insert(real) {
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => {
            diags.push(file_error(
                path,
                Pos::default(),
                format!(
                    "cannot read probe path: {e}; pass a probe file or a directory of *.yaml files"
                ),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect_under(&p, out, diags, seen, depth + 1);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

/// Loads the probes of one file's text.
pub fn load_text(file: &Path, text: &str, report: &mut LoadReport) {
    let docs = match yaml::parse(text) {
        Ok(d) => d,
        Err(e) => {
            report.diagnostics.push(file_error(
                file,
                e.pos,
                format!("invalid YAML: {}", e.message),
            ));
            return;
        }
    };
    let mut entries = 0;
    for doc in &docs {
        match &doc.value {
            Value::Null => {}
            Value::Object(_) => {
                entries += 1;
                load_probe(file, doc.clone(), report);
            }
            Value::Array(_) => {
                for item in doc.items() {
                    entries += 1;
                    load_probe(file, item, report);
                }
            }
            _ => {
                entries += 1;
                report.diagnostics.push(file_error(
                    file,
                    doc.value_pos(""),
                    "a probe file holds one probe (a mapping with `name:`) or a list of probes"
                        .into(),
                ))
            }
        }
    }
    if entries == 0 {
        report.empty_files.push(file.to_path_buf());
        // Empty, only comments, or an empty list: most likely a file not finished or
        // emptied by mistake. A warning, not an error, so a placeholder file still loads.
        report.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            ..file_error(
                file,
                Pos { line: 1, col: 1 },
                "the file holds no probe (it is empty or only comments); add a probe (see probes/README.md) or remove the file".into(),
            )
        });
    }
}

/// How many bad keys of one probe are reported before giving up on it.
const MAX_ERRORS_PER_PROBE: usize = 20;

fn load_probe(file: &Path, doc: Document, report: &mut LoadReport) {
    let name = doc
        .value
        .get("name")
        .and_then(Value::as_str)
        .map(String::from);
    let mut ctx = Ctx {
        file,
        doc: &doc,
        probe: name,
        out: &mut report.diagnostics,
    };
    let retry = Retry {
        max_errors: MAX_ERRORS_PER_PROBE,
        keep_list_slots: false,
    };
    let (raw, removed) = deserialize_all::<RawProbe>(&mut ctx, doc.value.clone(), retry);
    let Some(raw) = raw else { return };
    if removed.is_empty() {
        if let Some(p) = validate(&raw, &mut ctx) {
            report.probes.push(p);
        }
        return;
    }
    // The probe is refused already; still check what remains, except complaints about
    // missing sections or about the parents of removed keys, which the removal caused.
    let mut rest = Vec::new();
    let mut inner = Ctx {
        file,
        doc: &doc,
        probe: ctx.probe.clone(),
        out: &mut rest,
    };
    let _ = validate(&raw, &mut inner);
    report
        .diagnostics
        .extend(rest.into_iter().filter(|d| match &d.field {
            None => false,
            Some(f) => !removed.iter().any(|r| related(r, f)),
        }));
}

/// How [`deserialize_all`] recovers from a bad key.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Problems reported before giving up on the value.
    pub max_errors: usize,
    /// A bad list item (or an item missing a required key) is replaced by
    /// `null` rather than removed, so the items after it keep their index and
    /// later problems keep their place; the target's lists must then hold
    /// `Option`s. Without it, a missing required key ends the attempt.
    pub keep_list_slots: bool,
}

/// Deserializes `value` as a `T`, reporting every bad key through `ctx`: a
/// bad key is reported, removed, and deserialization tried again, so one run
/// shows every bad key. Returns the value (`None` if it could not be made
/// whole) and the paths removed (complaints about them are already reported).
pub fn deserialize_all<T: serde::de::DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    mut value: Value,
    retry: Retry,
) -> (Option<T>, Vec<String>) {
    let mut removed: Vec<String> = Vec::new();
    loop {
        match serde_path_to_error::deserialize(&value) {
            Ok(r) => return (Some(r), removed),
            Err(e) => {
                let path = match report_serde_error(ctx, &e, &removed) {
                    Some(path) => path,
                    // A missing key: drop the incomplete item when its slot can be kept.
                    None if retry.keep_list_slots && missing_in_list_item(&e) => serde_path(&e),
                    None => return (None, removed),
                };
                if removed.len() + 1 >= retry.max_errors
                    || !remove_path(&mut value, &path, retry.keep_list_slots)
                {
                    return (None, removed);
                }
                removed.push(path);
            }
        }
    }
}

/// Whether a "missing field" error is inside a list item (which can be dropped).
fn missing_in_list_item(e: &serde_path_to_error::Error<serde_json::Error>) -> bool {
    matches!(e.path().iter().next_back(), Some(Segment::Seq { .. }))
}

/// The path of a deserialization error, as the position index spells it.
fn serde_path(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let mut path = String::new();
    for seg in e.path().iter() {
        path = match seg {
            Segment::Seq { index } => join_index(&path, *index),
            Segment::Map { key } => join_key(&path, key),
            Segment::Enum { variant } => join_key(&path, variant),
            Segment::Unknown => path,
        };
    }
    path
}

/// Whether one path is the other or lies under it.
pub fn related(a: &str, b: &str) -> bool {
    let under = |x: &str, base: &str| {
        x == base
            || x.strip_prefix(base)
                .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
    };
    under(a, b) || under(b, a)
}

/// Removes the value at `path` (as printed by [`report_serde_error`]); false if there is none.
/// With `keep_list_slots`, a list item becomes `null` (removed if it already is).
fn remove_path(value: &mut Value, path: &str, keep_list_slots: bool) -> bool {
    let (parent, last) = match path.rfind(['.', '[']) {
        Some(i) => (&path[..i], &path[i..]),
        None => ("", path),
    };
    let mut cur = value;
    for seg in split_path(parent) {
        let next = match seg {
            PathSeg::Key(k) => cur.get_mut(k),
            PathSeg::Index(i) => cur.get_mut(i),
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match split_path(last).first() {
        Some(PathSeg::Key(k)) => cur.as_object_mut().is_some_and(|m| m.remove(*k).is_some()),
        Some(PathSeg::Index(i)) => match cur.as_array_mut() {
            Some(a) if *i < a.len() => {
                if keep_list_slots && !a[*i].is_null() {
                    a[*i] = Value::Null;
                } else {
                    a.remove(*i);
                }
                true
            }
            _ => false,
        },
        None => false,
    }
}

enum PathSeg<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<PathSeg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(PathSeg::Key(&rest[..i]));
            }
            rest = &rest[i..];
            while let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').unwrap_or(r.len());
                if let Ok(n) = r[..end].parse() {
                    out.push(PathSeg::Index(n));
                }
                rest = r.get(end + 1..).unwrap_or("");
            }
        } else {
            out.push(PathSeg::Key(rest));
        }
    }
    out
}

/// Places a deserialization error at its field, with a hint for the common ones.
/// Returns the path of the offending key, or `None` when there is nothing to remove and retry.
fn report_serde_error(
    ctx: &mut Ctx<'_>,
    e: &serde_path_to_error::Error<serde_json::Error>,
    removed: &[String],
) -> Option<String> {
    let path = serde_path(e);
    let msg = e.inner().to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    if let Some(field) = backticked(&msg, "unknown field `") {
        // The path may or may not already end in the unknown key.
        let at = if path.ends_with(field) {
            path.clone()
        } else {
            join_key(&path, field)
        };
        let expected = msg.split(", expected ").nth(1).unwrap_or("");
        ctx.error_at_key(
            &at,
            format!("unknown key `{field}` (a typo?); expected {expected}"),
        );
        Some(at)
    } else if let Some(field) = backticked(&msg, "missing field `") {
        // A key removed for a bad value is already reported; either way, stop here.
        if !removed.contains(&join_key(&path, field)) {
            ctx.error(&path, format!("missing required key `{field}`"));
        }
        None
    } else {
        let last = path.rsplit('.').next().unwrap_or_default();
        let hint = match last {
            "every" | "timeout" | "max_latency" | "flush_interval" | "shutdown_grace"
            | "evaluate_every" | "remind_every" | "duration" | "runs" | "minutes" | "hours"
                if msg.contains("expected a string") =>
            {
                "; write a duration with its unit, like 30s"
            }
            "listen" => "; write an address and port, like 127.0.0.1:9680",
            "starts_at" | "ends_at" => "; write an RFC 3339 time, like 2030-01-31T02:00:00Z",
            _ => "",
        };
        ctx.error(&path, format!("{}{hint}", plain_serde_message(&msg)));
        Some(path)
    }
}

fn backticked<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn check_unique_names(report: &mut LoadReport) {
    let mut by_name: HashMap<&str, Vec<&Probe>> = HashMap::new();
    for p in &report.probes {
        by_name.entry(&p.name).or_default().push(p);
    }
    let mut dups: Vec<String> = Vec::new();
    for (name, list) in &by_name {
        if list.len() < 2 {
            continue;
        }
        dups.push(name.to_string());
        for p in list {
            let others: Vec<String> = (list.iter())
                .filter(|o| o.source != p.source)
                .map(|o| o.source.to_string())
                .collect();
            report.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: p.source.file.clone(),
                pos: Pos {
                    line: p.source.line,
                    col: 1,
                },
                probe: Some(name.to_string()),
                field: Some("name".into()),
                message: format!(
                    "the name is also used at {}; names must be unique, rename one",
                    others.join(", ")
                ),
            });
        }
    }
    report.probes.retain(|p| !dups.contains(&p.name));
}

/// `depends_on`: a name that is not in the set is a warning (it may be
/// loaded from elsewhere); a cycle is an error, since the probes of a cycle
/// would hold back each other's pages while all of them fire.
fn check_dependencies(report: &mut LoadReport) {
    let by_name: HashMap<&str, &Probe> =
        report.probes.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut bad: Vec<String> = Vec::new();
    for p in &report.probes {
        let at = |message: String, severity: Severity| Diagnostic {
            severity,
            file: p.source.file.clone(),
            pos: Pos {
                line: p.source.line,
                col: 1,
            },
            probe: Some(p.name.clone()),
            field: Some("depends_on".into()),
            message,
        };
        for d in &p.depends_on {
            if !by_name.contains_key(d.as_str()) {
                report.diagnostics.push(at(
                    format!("depends_on: no probe named {d:?} is loaded; its alerts cannot hold back this probe's until it is"),
                    Severity::Warning,
                ));
            }
        }
        // Follow the dependencies; coming back to p is a cycle.
        let mut path = vec![p.name.as_str()];
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<(&str, usize)> = vec![(p.name.as_str(), 0)];
        while let Some((name, i)) = stack.pop() {
            let deps = by_name.get(name).map_or(&[][..], |q| &q.depends_on[..]);
            path.truncate(stack.len() + 1);
            let Some(next) = deps.get(i) else { continue };
            stack.push((name, i + 1));
            if next == &p.name {
                path.push(next);
                // One report per cycle: at the probe with the smallest name in it.
                if path.iter().any(|n| *n < p.name.as_str()) {
                    break;
                }
                report.diagnostics.push(at(
                    format!("depends_on makes a cycle: {}; a cycle would hold back every page of its probes, remove one dependency", path.join(" → ")),
                    Severity::Error,
                ));
                bad.push(p.name.clone());
                break;
            }
            if seen.insert(next.as_str()) {
                path.push(next);
                stack.push((next, 0));
            }
        }
    }
    report.probes.retain(|p| !bad.contains(&p.name));
}

fn warn_missing_env(report: &mut LoadReport) {
    for p in &report.probes {
        for (field, t) in p.templates() {
            for var in t.env_vars() {
                if std::env::var_os(var).is_none() {
                    report.diagnostics.push(Diagnostic {
                        severity: Severity::Warning,
                        file: p.source.file.clone(),
                        pos: Pos {
                            line: p.source.line,
                            col: 1,
                        },
                        probe: Some(p.name.clone()),
                        field: Some(field.clone()),
                        message: format!(
                            "environment variable {var} is not set here; the probe cannot run until it is"
                        ),
                    });
                }
            }
        }
    }
}
