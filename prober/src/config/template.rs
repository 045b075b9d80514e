//! Strings with `${…}` placeholders, parsed once at load time.
//!
//! Forms: `${env:NAME}` (the environment), `${secret:NAME}` (the environment,
//! and the value is redacted from every output), `${name}` (a variable extracted by
//! an earlier step of a scenario), and the built-ins `${uuid}`, `${now_unix}`,
//! `${random_int}` (fresh at each use). Anything else is refused at load time,
//! so a typo never reaches a production request. `$${` writes a literal `${`.

use std::collections::HashMap;
use std::fmt;

/// Values computed at each use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Uuid,
    NowUnix,
    RandomInt,
}

impl Builtin {
    fn parse(name: &str) -> Option<Builtin> {
        match name {
            "uuid" => Some(Builtin::Uuid),
            "now_unix" => Some(Builtin::NowUnix),
            "random_int" => Some(Builtin::RandomInt),
            _ => None,
        }
    }

    fn value(self) -> String {
        match self {
            Builtin::Uuid => uuid::Uuid::new_v4().to_string(),
            Builtin::NowUnix => chrono::Utc::now().timestamp().to_string(),
            Builtin::RandomInt => (rand::random::<u32>() % 1_000_000_000).to_string(),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Env(String),
    /// An environment variable whose value is secret.
    Secret(String),
    Var(String),
    Builtin(Builtin),
}

/// A parsed string template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// An environment variable is not set.
    MissingEnv(String),
    /// A scenario variable has no value (its step did not run or did not extract it).
    MissingVar(String),
    /// A scenario variable was extracted empty.
    EmptyVar(String),
}

/// Kept under its old name: most callers only know environment variables.
pub type MissingEnv = RenderError;

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::MissingEnv(n) => write!(
                f,
                "environment variable {n} is not set (used as ${{env:{n}}}); export it before starting the prober"
            ),
            RenderError::MissingVar(n) => write!(
                f,
                "variable ${{{n}}} has no value: the step that extracts it did not run or found nothing"
            ),
            RenderError::EmptyVar(n) => write!(
                f,
                "variable ${{{n}}} is empty: the step that extracts it matched an empty value"
            ),
        }
    }
}

/// Variables of a scenario run.
pub type Vars = HashMap<String, String>;

fn is_ident(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses `source`, refusing unknown placeholder forms with a message that says what is allowed.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = source;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("$${") {
                lit.push_str("${");
                rest = r;
            } else if let Some(r) = rest.strip_prefix("${") {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("`${{` without a closing `}}` in {source:?}"))?;
                let inner = &r[..end];
                let env = (inner.strip_prefix("env:").map(|n| ("env", n)))
                    .or_else(|| inner.strip_prefix("secret:").map(|n| ("secret", n)));
                let part = match env {
                    Some((form, name)) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                        if form == "env" {
                            Part::Env(name.to_string())
                        } else {
                            Part::Secret(name.to_string())
                        }
                    }
                    Some((form, name)) => {
                        return Err(format!(
                            "`${{{form}:{name}}}` is not a valid environment variable name; use letters, digits and _"
                        ))
                    }
                    None => match Builtin::parse(inner) {
                        Some(b) => Part::Builtin(b),
                        None if is_ident(inner) => Part::Var(inner.to_string()),
                        None => {
                            return Err(format!(
                                "unknown placeholder `${{{inner}}}`: use ${{env:NAME}}, ${{secret:NAME}}, a scenario variable ${{name}}, or ${{uuid}}, ${{now_unix}}, ${{random_int}} (write $${{ for a literal ${{)"
                            ))
                        }
                    },
                };
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(part);
                rest = &r[end + 1..];
            } else {
                lit.push('$');
                rest = &rest[1..];
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// The text as written in the probe file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Names of the environment variables the template reads (`env:` and `secret:`).
    pub fn env_vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Env(n) | Part::Secret(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// Names of the environment variables the template reads as `${secret:NAME}`.
    pub fn secret_vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Secret(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// Names of the scenario variables the template reads.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// Renders with environment values from `env` and scenario variables from `vars`.
    pub fn render_full(
        &self,
        env: impl Fn(&str) -> Option<String>,
        vars: &Vars,
    ) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.source.len());
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Env(n) | Part::Secret(n) => {
                    out.push_str(&env(n).ok_or_else(|| RenderError::MissingEnv(n.clone()))?)
                }
                Part::Var(n) => match vars.get(n) {
                    Some(v) if v.is_empty() => return Err(RenderError::EmptyVar(n.clone())),
                    Some(v) => out.push_str(v),
                    None => return Err(RenderError::MissingVar(n.clone())),
                },
                Part::Builtin(b) => out.push_str(&b.value()),
            }
        }
        Ok(out)
    }

    /// Renders with the process environment, each `${secret:NAME}` written as
    /// `redacted`: for checks whose messages may quote the text.
    pub fn render_masked(&self) -> Result<String, RenderError> {
        let secrets: Vec<&str> = self.secret_vars().collect();
        self.render_with(|n| {
            if secrets.contains(&n) {
                Some("redacted".to_string())
            } else {
                std::env::var(n).ok()
            }
        })
    }

    /// Renders with values from `lookup` (environment only).
    pub fn render_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<String, RenderError> {
        self.render_full(lookup, &Vars::new())
    }

    /// Renders with the process environment and the scenario's variables.
    pub fn render_vars(&self, vars: &Vars) -> Result<String, RenderError> {
        self.render_full(|n| std::env::var(n).ok(), vars)
    }

    /// Renders with the process environment.
    pub fn render(&self) -> Result<String, RenderError> {
        self.render_vars(&Vars::new())
    }
}

/// Substitutes `${env:NAME}` in a setting of `prober.yaml` (a receiver's url,
/// secret or routing key, a token): the only placeholder there, rendered by
/// the same [`Template`] as probe files. `field` starts every error: an
/// unclosed or malformed reference, or an unset variable.
pub fn expand_env(field: &str, value: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${env:") {
        if start > 0 {
            parts.push(Part::Lit(rest[..start].to_string()));
        }
        let after = &rest[start + 6..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "{field}: unclosed ${{env:...}}; write it like ${{env:NAME}}"
            ));
        };
        parts.push(Part::Env(after[..end].to_string()));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_string()));
    }
    let t = Template {
        source: value.to_string(),
        parts,
    };
    t.render().map_err(|e| format!("{field}: {e}"))
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The source is safe to print: it holds `${env:NAME}`, never the value.
        fmt::Debug::fmt(&self.source, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_placeholders_render_from_the_lookup() {
        let t = Template::parse("Bearer ${env:TOKEN}!").unwrap();
        assert!(!t.is_literal());
        assert_eq!(t.env_vars().collect::<Vec<_>>(), vec!["TOKEN"]);
        let out = t.render_with(|n| (n == "TOKEN").then(|| "abc".to_string()));
        assert_eq!(out.unwrap(), "Bearer abc!");
        assert_eq!(
            t.render_with(|_| None).unwrap_err(),
            RenderError::MissingEnv("TOKEN".into())
        );
    }

    #[test]
    fn scenario_variables_and_builtins_render() {
        let t = Template::parse("/orders/${order_id}?t=${now_unix}&r=${random_int}").unwrap();
        assert_eq!(t.vars().collect::<Vec<_>>(), vec!["order_id"]);
        let mut vars = Vars::new();
        assert_eq!(
            t.render_vars(&vars).unwrap_err(),
            RenderError::MissingVar("order_id".into())
        );
        vars.insert("order_id".into(), String::new());
        assert_eq!(
            t.render_vars(&vars).unwrap_err(),
            RenderError::EmptyVar("order_id".into())
        );
        vars.insert("order_id".into(), "42".into());
        assert!(t.render_vars(&vars).unwrap().starts_with("/orders/42?t="));
        let u = Template::parse("${uuid}").unwrap();
        assert_ne!(
            u.render().unwrap(),
            u.render().unwrap(),
            "fresh at each use"
        );
    }

    #[test]
    fn unknown_forms_and_unclosed_braces_are_refused() {
        assert!(Template::parse("${to-ken}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(Template::parse("${env:A-B}").is_err());
        assert!(Template::parse("x ${env:A")
            .unwrap_err()
            .contains("closing"));
        assert!(Template::parse("${1abc}").is_err());
    }

    #[test]
    fn secret_placeholders_read_the_environment_and_are_known_as_secret() {
        let t = Template::parse("/v1?api_key=${secret:API_KEY}&u=${env:USER_ID}").unwrap();
        assert_eq!(t.env_vars().collect::<Vec<_>>(), vec!["API_KEY", "USER_ID"]);
        assert_eq!(t.secret_vars().collect::<Vec<_>>(), vec!["API_KEY"]);
        let out = t.render_with(|n| Some(format!("<{n}>"))).unwrap();
        assert_eq!(out, "/v1?api_key=<API_KEY>&u=<USER_ID>");
        assert_eq!(
            format!("{t:?}"),
            format!("{:?}", t.source()),
            "Debug shows the source"
        );
        assert!(Template::parse("${secret:}").is_err());
        assert!(Template::parse("${secret:A-B}")
            .unwrap_err()
            .contains("`${secret:A-B}`"));
    }

    #[test]
    fn settings_env_references_are_substituted_and_a_missing_one_is_an_error() {
        std::env::set_var("PROBER_TEST_NOTIFY_SECRET", "s3cret");
        assert_eq!(
            expand_env("x", "a${env:PROBER_TEST_NOTIFY_SECRET}b").ok(),
            Some("as3cretb".to_string())
        );
        assert_eq!(
            expand_env("x", "plain $5").ok(),
            Some("plain $5".to_string())
        );
        let e = expand_env("receivers[0].secret", "${env:PROBER_TEST_SURELY_UNSET}");
        assert!(e
            .is_err_and(|e| e.starts_with("receivers[0].secret: ")
                && e.contains("PROBER_TEST_SURELY_UNSET")));
        let e = expand_env("receivers[0].url", "http://${env:HOST");
        assert!(e.is_err_and(|e| e.contains("unclosed")));
    }

    #[test]
    fn dollar_escapes_and_lone_dollars_stay_literal() {
        let t = Template::parse("price $5, literal $${env:X}").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.render().unwrap(), "price $5, literal ${env:X}");
    }
}
