//! YAML text → JSON values that remember where every key and value came from.
//!
//! serde deserializers for YAML lose positions once a value is parsed, but
//! `prober check` must point at the line of every problem, including problems
//! found after parsing (a timeout longer than the interval). So we parse the
//! YAML event stream ourselves (with `saphyr-parser`), build `serde_json`
//! values, and keep a side index from each value's path (`http.headers.Accept`,
//! `expect.status[1]`) to its line and column. The typed structs are then
//! deserialized from the JSON value, and every error, whenever it is found,
//! is placed by looking its path up in the index.
//!
//! Hostile input is bounded before it costs memory: a file is read up to
//! [`MAX_FILE_BYTES`] (never slurped whole), nesting stops at [`MAX_DEPTH`], and
//! the nodes that aliases repeat are counted against [`MAX_ALIAS_NODES`] *before*
//! they are copied, so a "billion laughs" file is refused at its first
//! expensive alias, in microseconds, with its line.

mod read;

use std::collections::HashMap;

pub use read::{read_bounded, ReadError, MAX_FILE_BYTES};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

/// The deepest nesting of lists and mappings (a probe needs 6).
pub const MAX_DEPTH: usize = 64;
/// How many nodes (values, keys, lists, mappings) aliases may repeat in one file.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// One YAML document: its value and where each part of it is.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    /// Position of the value at each path ("" is the document itself).
    pub values: HashMap<String, Pos>,
    /// Position of the key at each path of a mapping entry.
    pub keys: HashMap<String, Pos>,
}

impl Document {
    /// Where the value at `path` starts, falling back to its nearest parent.
    pub fn value_pos(&self, path: &str) -> Pos {
        self.lookup(&self.values, path)
    }

    /// Where the key of the entry at `path` is, falling back to the value, then the parent.
    pub fn key_pos(&self, path: &str) -> Pos {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.lookup(&self.values, path))
    }

    fn lookup(&self, map: &HashMap<String, Pos>, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = map.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return map.get("").copied().unwrap_or_default(),
            }
        }
    }

    /// The sub-document at `path` (one probe of a file holding a list), with paths re-rooted.
    /// The items of a document that is a list, each as a document of its own, in one
    /// pass over the position index (a file of 10,000 probes must not cost 10,000 passes).
    pub fn items(&self) -> Vec<Document> {
        let Value::Array(items) = &self.value else {
            return Vec::new();
        };
        let mut docs: Vec<Document> = items
            .iter()
            .map(|v| Document {
                value: v.clone(),
                values: HashMap::new(),
                keys: HashMap::new(),
            })
            .collect();
        let split = |k: &str| -> Option<(usize, String)> {
            let rest = k.strip_prefix('[')?;
            let end = rest.find(']')?;
            let i = rest[..end].parse().ok()?;
            let tail = &rest[end + 1..];
            Some((i, tail.strip_prefix('.').unwrap_or(tail).to_string()))
        };
        for (k, pos) in &self.values {
            if let Some((i, rel)) = split(k) {
                if let Some(d) = docs.get_mut(i) {
                    d.values.insert(rel, *pos);
                }
            }
        }
        for (k, pos) in &self.keys {
            if let Some((i, rel)) = split(k) {
                if let Some(d) = docs.get_mut(i) {
                    d.keys.insert(rel, *pos);
                }
            }
        }
        docs
    }

    pub fn sub(&self, path: &str, value: Value) -> Document {
        let reroot = |m: &HashMap<String, Pos>| -> HashMap<String, Pos> {
            m.iter()
                .filter_map(|(k, v)| Some((relative(k, path)?.to_string(), *v)))
                .collect()
        };
        Document {
            value,
            values: reroot(&self.values),
            keys: reroot(&self.keys),
        }
    }
}

/// `key` relative to `base`, if it is `base` or below it.
fn relative<'a>(key: &'a str, base: &str) -> Option<&'a str> {
    if base.is_empty() {
        return Some(key);
    }
    let rest = key.strip_prefix(base)?;
    if rest.is_empty() || rest.starts_with('[') {
        Some(rest)
    } else {
        rest.strip_prefix('.')
    }
}

/// A YAML syntax error, with where it is.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Joins a path and a mapping key the way serde_path_to_error paths are printed here.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins a path and a sequence index.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// Parses every document of a YAML stream.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            // The scanner's own limit on `[` and `{` nesting (deeper than ours).
            message: match e.info() {
                "recursion limit exceeded" => too_deep(),
                info => info.to_string(),
            },
        })?;
        builder.on_event(event, &span)?;
    }
    Ok(builder.docs)
}

fn too_deep() -> String {
    format!(
        "lists and mappings are nested more than {MAX_DEPTH} deep here; a probe needs a \
         handful of levels, flatten this value"
    )
}

/// A container being filled while events arrive.
enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
        /// `Builder::nodes` when the container started (its size is the difference at its end).
        first_node: usize,
    },
    Map {
        map: Map<String, Value>,
        pending_key: Option<String>,
        anchor: usize,
        first_node: usize,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<Document>,
    stack: Vec<(Frame, String)>,
    current: Option<Document>,
    /// Each anchor's value and how many nodes it holds.
    anchors: HashMap<usize, (Value, usize)>,
    /// Nodes built so far in the file, each repeated one counted again.
    nodes: usize,
    /// Nodes repeated by aliases so far in the file.
    alias_nodes: usize,
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxError> {
        match event {
            Event::DocumentStart(_) => {
                self.current = Some(Document {
                    value: Value::Null,
                    values: HashMap::new(),
                    keys: HashMap::new(),
                });
            }
            Event::DocumentEnd => {
                if let Some(doc) = self.current.take() {
                    self.docs.push(doc);
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = if tag.is_some() || style != ScalarStyle::Plain {
                    Value::String(text.into_owned())
                } else {
                    resolve_plain(&text)
                };
                self.on_scalar(value, anchor, span)?;
            }
            Event::Alias(id) => self.on_alias(id, span)?,
            Event::SequenceStart(anchor, _) => self.on_start(true, anchor, span)?,
            Event::MappingStart(anchor, _) => self.on_start(false, anchor, span)?,
            Event::SequenceEnd | Event::MappingEnd => self.on_end(span)?,
            _ => {}
        }
        Ok(())
    }

    /// A scalar: a key when a mapping waits for one, else a value.
    fn on_scalar(&mut self, value: Value, anchor: usize, span: &Span) -> Result<(), SyntaxError> {
        if let Some((Frame::Map { pending_key, .. }, path)) = self.stack.last_mut() {
            if pending_key.is_none() {
                let key = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let key_path = join_key(path, &key);
                if let Some(doc) = self.current.as_mut() {
                    if doc.keys.contains_key(&key_path) {
                        return Err(SyntaxError {
                            pos: Pos::of(span),
                            message: format!(
                                "duplicate key `{key}`: each key may appear once in a mapping; remove one"
                            ),
                        });
                    }
                    doc.keys.insert(key_path, Pos::of(span));
                }
                *pending_key = Some(key);
                self.nodes += 1;
                return Ok(());
            }
        }
        self.nodes += 1;
        if anchor > 0 {
            self.anchors.insert(anchor, (value.clone(), 1));
        }
        self.push_value(value, span);
        Ok(())
    }

    /// An alias: a copy of its anchor's value, charged before it is made.
    fn on_alias(&mut self, id: usize, span: &Span) -> Result<(), SyntaxError> {
        let unknown = || SyntaxError {
            pos: Pos::of(span),
            message: "alias to an unknown anchor".into(),
        };
        let size = self.anchors.get(&id).ok_or_else(unknown)?.1;
        // Counted before the copy is made: the copy is what costs memory.
        self.charge(size, span, "this alias")?;
        let value = self.anchors.get(&id).ok_or_else(unknown)?.0.clone();
        self.nodes = self.nodes.saturating_add(size);
        self.push_value(value, span);
        Ok(())
    }

    /// A sequence (`seq`) or mapping starts: a frame, within [`MAX_DEPTH`].
    fn on_start(&mut self, seq: bool, anchor: usize, span: &Span) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError {
                pos: Pos::of(span),
                message: too_deep(),
            });
        }
        let path = self.child_path();
        self.record_value_pos(&path, span);
        let first_node = self.nodes;
        self.nodes += 1;
        let frame = if seq {
            Frame::Seq {
                items: Vec::new(),
                anchor,
                first_node,
            }
        } else {
            Frame::Map {
                map: Map::new(),
                pending_key: None,
                anchor,
                first_node,
            }
        };
        self.stack.push((frame, path));
        Ok(())
    }

    /// A sequence or mapping ends: its value goes to its parent (and to its
    /// anchor, charged for every node it holds).
    fn on_end(&mut self, span: &Span) -> Result<(), SyntaxError> {
        let Some((frame, _)) = self.stack.pop() else {
            return Ok(());
        };
        let (value, anchor, first_node) = match frame {
            Frame::Seq {
                items,
                anchor,
                first_node,
            } => (Value::Array(items), anchor, first_node),
            Frame::Map {
                map,
                anchor,
                first_node,
                ..
            } => (Value::Object(map), anchor, first_node),
        };
        if anchor > 0 {
            let size = self.nodes - first_node;
            self.charge(size, span, "this anchor")?;
            self.anchors.insert(anchor, (value.clone(), size));
        }
        self.attach(value);
        Ok(())
    }

    fn charge(&mut self, size: usize, span: &Span, what: &str) -> Result<(), SyntaxError> {
        self.alias_nodes = self.alias_nodes.saturating_add(size);
        if self.alias_nodes <= MAX_ALIAS_NODES {
            return Ok(());
        }
        Err(SyntaxError {
            pos: Pos::of(span),
            message: format!(
                "anchors and aliases repeat more than {MAX_ALIAS_NODES} values in this file \
                 ({what} alone repeats {size}: an alias bomb?); write the values out, or use \
                 fewer and smaller anchors"
            ),
        })
    }

    /// The path the next value will have.
    fn child_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some((Frame::Seq { items, .. }, path)) => join_index(path, items.len()),
            Some((
                Frame::Map {
                    pending_key: Some(k),
                    ..
                },
                path,
            )) => join_key(path, k),
            Some((Frame::Map { .. }, path)) => path.clone(),
        }
    }

    fn record_value_pos(&mut self, path: &str, span: &Span) {
        if let Some(doc) = self.current.as_mut() {
            doc.values.insert(path.to_string(), Pos::of(span));
        }
    }

    fn push_value(&mut self, value: Value, span: &Span) {
        let path = self.child_path();
        self.record_value_pos(&path, span);
        self.attach(value);
    }

    /// Puts a finished value into its parent, or makes it the document.
    fn attach(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => {
                if let Some(doc) = self.current.as_mut() {
                    doc.value = value;
                }
            }
            Some((Frame::Seq { items, .. }, _)) => items.push(value),
            Some((
                Frame::Map {
                    map, pending_key, ..
                },
                _,
            )) => {
                if let Some(k) = pending_key.take() {
                    map.insert(k, value);
                }
            }
        }
    }
}

/// YAML 1.2 core schema resolution of a plain (unquoted) scalar.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Number(i.into());
        }
    }
    let looks_numeric = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && s.chars().any(|c| c.is_ascii_digit());
    if looks_numeric {
        if let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_positions() {
        let docs =
            parse("name: a\nhttp:\n  url: http://x\n  headers:\n    A: b\nlist: [1, \"2\", x]\n")
                .unwrap();
        let d = &docs[0];
        assert_eq!(d.value["http"]["url"], "http://x");
        assert_eq!(d.value_pos("http.url"), Pos { line: 3, col: 8 });
        assert_eq!(d.key_pos("http.url"), Pos { line: 3, col: 3 });
        assert_eq!(d.value_pos("http.headers.A"), Pos { line: 5, col: 8 });
        assert_eq!(d.value["list"], serde_json::json!([1, "2", "x"]));
        assert_eq!(d.value_pos("list[2]").line, 6);
        // Unknown paths fall back to the nearest parent.
        assert_eq!(d.value_pos("http.nope"), d.value_pos("http"));
    }

    #[test]
    fn several_documents_and_anchors() {
        let docs = parse("a: &x {k: 1}\n---\nb: *x\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value["b"]["k"], 1);
    }

    #[test]
    fn duplicate_keys_are_errors_with_their_line() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    /// A "billion laughs" document of `levels` levels, each alias repeated 9 times.
    fn alias_bomb(levels: usize) -> String {
        let mut s = String::from(
            "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 1..levels {
            let refs = vec![format!("*a{}", i - 1); 9].join(",");
            s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        s
    }

    #[test]
    fn alias_bombs_are_refused_at_the_alias_that_crosses_the_budget() {
        for levels in [7, 9] {
            let text = alias_bomb(levels);
            assert!(text.len() < 450, "{}", text.len());
            let err = parse(&text).unwrap_err();
            assert!(err.message.contains("alias bomb"), "{err:?}");
            assert!(err.pos.line >= 5 && err.pos.line <= 7, "{err:?}");
        }
        // Ordinary anchors stay fine.
        let ok = "d: &d {every: 30s, timeout: 5s}\nprobes:\n- *d\n- *d\n";
        assert_eq!(parse(ok).unwrap()[0].value["probes"][1]["every"], "30s");
    }

    #[test]
    fn nested_anchors_count_their_copies_too() {
        // Each anchor copies what it holds: 60 nested anchors over 2,000 values.
        let mut text = String::new();
        for i in 0..60 {
            text.push_str(&format!("&n{i} ["));
        }
        text.push_str(&vec!["x"; 2_000].join(","));
        text.push_str(&"]".repeat(60));
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("this anchor"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused_with_its_place() {
        // Block style: one level per line.
        let deep: String = (0..10_000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        let err = parse(&deep).unwrap_err();
        assert!(err.message.contains("nested more than 64"), "{err:?}");
        assert_eq!(err.pos.line, 65, "{err:?}");
        // Flow style: the scanner stops first, with the same words.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse(&deep).unwrap_err();
        assert!(err.message.contains("nested more than 64"), "{err:?}");
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn plain_scalars_resolve_like_yaml_core_schema() {
        assert_eq!(resolve_plain("30"), Value::from(30));
        assert_eq!(resolve_plain("30s"), Value::from("30s"));
        assert_eq!(resolve_plain("1.5"), Value::from(1.5));
        assert_eq!(resolve_plain("true"), Value::Bool(true));
        assert_eq!(resolve_plain("~"), Value::Null);
    }
}
