//! Problems found in probe files, each placed at file:line:column.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::probe::SourceRef;
use super::yaml::{Document, Pos};

/// How bad a problem is: errors stop a probe from loading, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a probe file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub pos: Pos,
    /// The probe's name, when known.
    pub probe: Option<String>,
    /// The field's path within the probe, such as `http.url` or `expect.status[1]`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: the problem is with the file or path itself, not a place in it.
        match self.pos.line {
            0 => write!(f, "{}: ", self.file.display())?,
            line => write!(f, "{}:{line}:{}: ", self.file.display(), self.pos.col)?,
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(p) = &self.probe {
            write!(f, "probe {p:?}: ")?;
        }
        match &self.field {
            Some(field) if !field.is_empty() => write!(f, "{field}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// Where validation is: one probe in one document of one file, and the problems found so far.
pub struct Ctx<'a> {
    pub file: &'a Path,
    pub doc: &'a Document,
    pub probe: Option<String>,
    pub out: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    /// Reports a bad value at `field`.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let pos = self.doc.value_pos(field);
        self.push(Severity::Error, field, pos, message.into());
    }

    /// Reports a problem with the key of `field` itself (unknown, invalid name).
    pub fn error_at_key(&mut self, field: &str, message: impl Into<String>) {
        let pos = self.doc.key_pos(field);
        self.push(Severity::Error, field, pos, message.into());
    }

    /// Reports something suspicious that does not stop the probe from loading.
    pub fn warning(&mut self, field: &str, message: impl Into<String>) {
        let pos = self.doc.value_pos(field);
        self.push(Severity::Warning, field, pos, message.into());
    }

    fn push(&mut self, severity: Severity, field: &str, pos: Pos, message: String) {
        self.out.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            pos,
            probe: self.probe.clone(),
            field: (!field.is_empty()).then(|| field.to_string()),
            message,
        });
    }

    pub fn error_count(&self) -> usize {
        (self.out.iter())
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn source(&self) -> SourceRef {
        SourceRef {
            file: self.file.to_path_buf(),
            line: self.doc.value_pos("").line,
        }
    }

    /// Content hash of the probe as written (keys sorted, so formatting does not change it).
    pub fn version(&self) -> String {
        let canonical = self.doc.value.to_string();
        let digest = Sha256::digest(canonical.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// serde's message for a value of the wrong type or range, in the words of the
/// file format: serde names Rust types (`expected u16`, `a sequence`,
/// `struct RawHttp`), a person writing YAML reads "a whole number from 0 to
/// 65535", "a list", "a mapping". The one place these words are chosen;
/// messages it does not recognise pass through unchanged.
pub fn plain_serde_message(msg: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            // The found value comes first and may be any text: split at the last ", expected ".
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
                return format!(
                    "expected {}, got {}",
                    expected_words(expected),
                    found_words(found)
                );
            }
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid length ") {
        if let Some((n, expected)) = rest.split_once(", expected ") {
            return format!("expected {}, got {n} item(s)", expected_words(expected));
        }
    }
    if msg.starts_with("data did not match any variant of untagged enum ") {
        return "this value has none of the accepted forms; see `prober schema` for what to write here".into();
    }
    msg.to_string()
}

/// What serde expected (a Rust type's name or a visitor's `expecting`), in plain words.
fn expected_words(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" => "text (a string)",
        "a character" => "a single character",
        "a sequence" => "a list",
        "a map" => "a mapping (key: value)",
        "unit" => "nothing (null)",
        "option" => "a value",
        e if e.starts_with("struct ") => "a mapping (key: value)",
        e if e.starts_with("enum ") => "one of the accepted values (see `prober schema`)",
        e if e.starts_with("tuple struct ") || e.starts_with("a tuple of size ") => "a list",
        other => other,
    };
    words.to_string()
}

/// What serde found in the file (`Unexpected`'s wording), in plain words.
fn found_words(found: &str) -> String {
    let between = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('`'))
            .and_then(|r| r.strip_suffix('`'))
            .map(str::to_string)
    };
    if let Some(v) = between("integer ")
        .or_else(|| between("floating point "))
        .or_else(|| between("boolean "))
    {
        return v;
    }
    if let Some(s) = found.strip_prefix("string ") {
        return s.to_string();
    }
    match found {
        "sequence" => "a list",
        "map" => "a mapping",
        "unit value" => "nothing (null)",
        "Option value" => "a value",
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod plain_words_tests {
    use super::plain_serde_message as plain;

    #[test]
    fn serde_messages_say_what_to_write_in_the_words_of_the_format() {
        let cases = [
            (
                "invalid value: integer `70000`, expected u16",
                "expected a whole number from 0 to 65535, got 70000",
            ),
            (
                "invalid type: string \"abc\", expected u32",
                "expected a whole number from 0 to 4294967295, got \"abc\"",
            ),
            (
                "invalid type: string \"yes\", expected a boolean",
                "expected true or false, got \"yes\"",
            ),
            (
                "invalid type: sequence, expected a map",
                "expected a mapping (key: value), got a list",
            ),
            (
                "invalid type: map, expected a sequence",
                "expected a list, got a mapping",
            ),
            (
                "invalid type: string \"x\", expected struct RawRetry",
                "expected a mapping (key: value), got \"x\"",
            ),
            (
                "invalid type: floating point `1.5`, expected u64",
                "expected a whole number, 0 or more, got 1.5",
            ),
            (
                "invalid type: unit value, expected f64",
                "expected a number, got nothing (null)",
            ),
            (
                "invalid type: string \"a, expected u8\", expected u8",
                "expected a whole number from 0 to 255, got \"a, expected u8\"",
            ),
            // Our own `expecting` texts and other messages pass through.
            (
                "expected a status code such as 200",
                "expected a status code such as 200",
            ),
        ];
        for (serde, want) in cases {
            assert_eq!(plain(serde), want, "{serde}");
        }
        assert!(
            !plain("data did not match any variant of untagged enum RawStatus")
                .contains("RawStatus")
        );
    }
}
