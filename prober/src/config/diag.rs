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
