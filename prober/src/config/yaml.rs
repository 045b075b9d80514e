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

use std::collections::HashMap;

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
            message: e.info().to_string(),
        })?;
        builder.on_event(event, &span)?;
    }
    Ok(builder.docs)
}

/// A container being filled while events arrive.
enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        pending_key: Option<String>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<Document>,
    stack: Vec<(Frame, String)>,
    current: Option<Document>,
    anchors: HashMap<usize, Value>,
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
                // A scalar in key position is a key, not a value.
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
                        return Ok(());
                    }
                }
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value, span);
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    pos: Pos::of(span),
                    message: "alias to an unknown anchor".into(),
                })?;
                self.push_value(value, span);
            }
            Event::SequenceStart(anchor, _) => {
                let path = self.child_path();
                self.record_value_pos(&path, span);
                self.stack.push((
                    Frame::Seq {
                        items: Vec::new(),
                        anchor,
                    },
                    path,
                ));
            }
            Event::MappingStart(anchor, _) => {
                let path = self.child_path();
                self.record_value_pos(&path, span);
                self.stack.push((
                    Frame::Map {
                        map: Map::new(),
                        pending_key: None,
                        anchor,
                    },
                    path,
                ));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((frame, _)) = self.stack.pop() {
                    let (value, anchor) = match frame {
                        Frame::Seq { items, anchor } => (Value::Array(items), anchor),
                        Frame::Map { map, anchor, .. } => (Value::Object(map), anchor),
                    };
                    if anchor > 0 {
                        self.anchors.insert(anchor, value.clone());
                    }
                    self.attach(value);
                }
            }
            _ => {}
        }
        Ok(())
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

    #[test]
    fn plain_scalars_resolve_like_yaml_core_schema() {
        assert_eq!(resolve_plain("30"), Value::from(30));
        assert_eq!(resolve_plain("30s"), Value::from("30s"));
        assert_eq!(resolve_plain("1.5"), Value::from(1.5));
        assert_eq!(resolve_plain("true"), Value::Bool(true));
        assert_eq!(resolve_plain("~"), Value::Null);
    }
}
