//! Where settings problems go: placed in the file by path, or at the flag
//! that gave the value; and the value helpers that report as they read
//! (durations, `${env:NAME}`).

use std::path::PathBuf;
use std::time::Duration;

use super::super::diag::{Ctx, Diagnostic, Severity};
use super::super::yaml::{Document, Pos};
use super::alerting::expand_env;
use super::{EnvMode, ValueProblem};

/// The longest duration a setting takes (retention, intervals, limits):
/// 100 years. Times computed from longer ones overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Where problems of the settings go: placed in the file by path, or at the flag.
pub(super) struct Sink {
    pub(super) file: PathBuf,
    pub(super) doc: Document,
    pub(super) out: Vec<Diagnostic>,
    pub(super) mode: EnvMode,
}

impl Sink {
    pub(super) fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            file: &self.file,
            doc: &self.doc,
            probe: None,
            out: &mut self.out,
        }
    }

    pub(super) fn error(&mut self, field: &str, message: impl Into<String>) {
        self.ctx().error(field, message);
    }

    pub(super) fn warning(&mut self, field: &str, message: impl Into<String>) {
        self.ctx().warning(field, message);
    }

    /// A problem with a value that came from `flag` (or its variable) rather than the file.
    pub(super) fn flag_error(&mut self, flag: &str, field: &str, message: impl Into<String>) {
        self.out.push(Diagnostic {
            severity: Severity::Error,
            file: PathBuf::from(flag),
            pos: Pos::default(),
            probe: None,
            field: Some(field.to_string()),
            message: message.into(),
        });
    }

    /// A problem with a value that came from `flag` when `from_flag`, else from the file.
    pub(super) fn place(
        &mut self,
        from_flag: bool,
        flag: &str,
        field: &str,
        message: impl Into<String>,
    ) {
        if from_flag {
            self.flag_error(flag, field, message);
        } else {
            self.error(field, message);
        }
    }

    /// A duration setting: its value, or the default when absent (or bad,
    /// reported). At most [`MAX_DURATION`]: past it times overflow.
    pub(super) fn duration(
        &mut self,
        field: &str,
        text: Option<&str>,
        default: Duration,
    ) -> Duration {
        let Some(text) = text else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    field,
                    format!(
                        "{text:?} is longer than 100 years, the longest duration a setting takes"
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(
                    field,
                    format!("{text:?} is not a duration ({e}); write it with its unit, like 250ms, 10s, 14d"),
                );
                default
            }
        }
    }

    /// `value` with `${env:NAME}` substituted; `None` when it cannot be known
    /// here: a malformed reference (an error) or an unset variable (an error
    /// when the daemon starts, a warning for `prober check`). `whose` names the
    /// setting's owner, such as `receiver "chat"`.
    pub(super) fn expand(&mut self, field: &str, value: &str, whose: &str) -> Option<String> {
        let vars = match env_refs(value) {
            Ok(v) => v,
            Err(e) => {
                self.error(field, e.0);
                return None;
            }
        };
        let unset: Vec<&str> = (vars.iter().copied())
            .filter(|v| std::env::var_os(v).is_none())
            .collect();
        if unset.is_empty() {
            return match expand_env(field, value) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(field, e);
                    None
                }
            };
        }
        for var in unset {
            match self.mode {
                EnvMode::Require => self.error(
                    field,
                    format!("{whose}: environment variable {var} is not set (used as ${{env:{var}}}); export it before starting the prober, or write the value in the file"),
                ),
                EnvMode::Warn => self.warning(
                    field,
                    format!("{whose}: environment variable {var} is not set here; the daemon refuses to start until it is"),
                ),
            }
        }
        None
    }
}

/// The variables `${env:NAME}` of `value` refers to; a malformed reference is an error.
pub(super) fn env_refs(value: &str) -> Result<Vec<&str>, ValueProblem> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` without a closing `}`; write it like ${env:NAME}".into());
        };
        let inner = &after[..end];
        let Some(name) = inner.strip_prefix("env:") else {
            return Err(format!(
                "`${{{inner}}}` is not a setting placeholder; only ${{env:NAME}} (an environment variable) is replaced here"
            )
            .into());
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{env:{name}}}` is not a valid environment variable name; use letters, digits and _"
            )
            .into());
        }
        out.push(name);
        rest = &after[end + 1..];
    }
    Ok(out)
}
