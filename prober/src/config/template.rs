//! Strings with `${…}` placeholders, parsed once at load time.
//!
//! Only `${env:NAME}` exists for now; any other `${…}` form is refused at
//! load time, so a typo never reaches a production request. `$${` writes a
//! literal `${`.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Env(String),
}

/// A parsed string template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// A variable the template needs and the environment does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingEnv(pub String);

impl fmt::Display for MissingEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "environment variable {} is not set (used as ${{env:{}}}); export it before starting the prober",
            self.0, self.0
        )
    }
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
                match inner.strip_prefix("env:") {
                    Some(name) if valid_env_name(name) => {
                        if !lit.is_empty() {
                            parts.push(Part::Lit(std::mem::take(&mut lit)));
                        }
                        parts.push(Part::Env(name.to_string()));
                    }
                    Some(name) => {
                        return Err(format!(
                            "`${{env:{name}}}` is not a valid environment variable name; use letters, digits and _"
                        ))
                    }
                    None => {
                        return Err(format!(
                            "unknown placeholder `${{{inner}}}`: the supported form is ${{env:NAME}} (write $${{ for a literal ${{)"
                        ))
                    }
                }
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

    /// Names of the environment variables the template reads.
    pub fn env_vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Env(n) => Some(n.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Renders with values from `lookup`.
    pub fn render_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<String, MissingEnv> {
        let mut out = String::with_capacity(self.source.len());
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Env(n) => out.push_str(&lookup(n).ok_or_else(|| MissingEnv(n.clone()))?),
            }
        }
        Ok(out)
    }

    /// Renders with the process environment.
    pub fn render(&self) -> Result<String, MissingEnv> {
        self.render_with(|n| std::env::var(n).ok())
    }
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
            MissingEnv("TOKEN".into())
        );
    }

    #[test]
    fn unknown_forms_and_unclosed_braces_are_refused() {
        assert!(Template::parse("${token}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(Template::parse("${env:A-B}").is_err());
        assert!(Template::parse("x ${env:A")
            .unwrap_err()
            .contains("closing"));
    }

    #[test]
    fn dollar_escapes_and_lone_dollars_stay_literal() {
        let t = Template::parse("price $5, literal $${env:X}").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.render().unwrap(), "price $5, literal ${env:X}");
    }
}
