//! `api:` and `api_token`: named, scoped tokens (hashed here, never kept
//! in clear), public reads, manual runs.

use super::super::access::{
    digest, parse_sha256_hex, read_token_file, ApiAccess, NamedToken, Scope, LEGACY_TOKEN_NAME,
    MIN_TOKEN_LEN,
};
use super::file::ApiFile;
use super::sink::Sink;
use super::{ApiToken, EnvMode, SettingsArgs};

/// `api_token` (the flag or variable over the file's, `${env:NAME}`
/// substituted): the admin token named `api_token`, at least
/// [`MIN_TOKEN_LEN`] characters.
pub(super) fn api_token(
    sink: &mut Sink,
    args: &SettingsArgs,
    file: Option<String>,
) -> Option<ApiToken> {
    let api_token = match (&args.api_token, &file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(t)) => sink.expand("api_token", t, "the API token"),
        (None, None) => None,
    }
    .filter(|t| !t.is_empty())
    .map(ApiToken);
    if api_token
        .as_ref()
        .is_some_and(|t| t.0.chars().count() < MIN_TOKEN_LEN)
    {
        sink.place(
            args.api_token.is_some(),
            "--api-token / PROBER_API_TOKEN",
            "api_token",
            format!("is shorter than {MIN_TOKEN_LEN} characters; use a random one, e.g. `openssl rand -hex 32`"),
        );
    }
    api_token
}

/// `api:`: the tokens (names unique, scopes known, a 64-hex-digit `sha256` or a
/// value of at least [`MIN_TOKEN_LEN`] characters), public reads, manual runs.
pub(super) fn api_access(sink: &mut Sink, f: ApiFile) -> ApiAccess {
    let d = ApiAccess::default();
    let mut tokens: Vec<NamedToken> = Vec::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    for (i, t) in f.tokens.unwrap_or_default().into_iter().enumerate() {
        let at = format!("api.tokens[{i}]");
        let Some(t) = t else {
            sink.error(
                &at,
                "an empty entry; give name, sha256 (or token) and scopes, or remove it",
            );
            continue;
        };
        if t.name.trim().is_empty() {
            sink.error(
                &format!("{at}.name"),
                "must not be empty; the audit log names the token that made each change",
            );
        } else if t.name == LEGACY_TOKEN_NAME {
            sink.error(
                &format!("{at}.name"),
                "`api_token` is the name of the api_token setting's token; pick another name",
            );
        } else if let Some((_, j)) = names.iter().find(|(n, _)| *n == t.name) {
            let line = sink.doc.value_pos(&format!("api.tokens[{j}].name")).line;
            sink.error(&format!("{at}.name"), format!("{:?} is also the name of api.tokens[{j}] (line {line}); names must be unique, rename one", t.name));
        }
        names.push((t.name.clone(), i));
        let mut scope: Option<Scope> = None;
        for (k, s) in t.scopes.iter().enumerate() {
            match Scope::parse(s) {
                Some(s) => scope = scope.max(Some(s)),
                None => sink.error(&format!("{at}.scopes[{k}]"), format!("{s:?} is not a scope; use read, run or admin (admin includes run, run includes read)")),
            }
        }
        if t.scopes.is_empty() {
            sink.error(
                &format!("{at}.scopes"),
                "give at least one scope: read, run or admin",
            );
        }
        let sha256 = match (&t.sha256, &t.token) {
            (Some(h), None) => parse_sha256_hex(h).or_else(|| {
                sink.error(&format!("{at}.sha256"), "must be 64 hexadecimal digits: the SHA-256 of the token, e.g. from `printf %s \"$TOKEN\" | sha256sum`");
                None
            }),
            (None, Some(v)) => token_value(sink, &format!("{at}.token"), v, &t.name)
                .map(|v| digest(&v)),
            _ => {
                sink.error(&at, "give exactly one of sha256 (the token's SHA-256, hex) and token (the value, usually \"${file:/run/secrets/NAME}\" or \"${env:NAME}\")");
                None
            }
        };
        if let (Some(sha256), Some(scope)) = (sha256, scope) {
            tokens.push(NamedToken {
                name: t.name,
                sha256,
                scope,
            });
        }
    }
    ApiAccess {
        public_read: f.public_read.unwrap_or(d.public_read),
        tokens,
        run_min_interval: sink.duration(
            "api.run_min_interval",
            f.run_min_interval.as_deref(),
            d.run_min_interval,
        ),
        manual_runs_count: f.manual_runs_count.unwrap_or(d.manual_runs_count),
    }
}

/// A token's value: `${file:PATH}` (the whole value: the file's text, trimmed),
/// else the text with `${env:NAME}` substituted; at least [`MIN_TOKEN_LEN`] characters.
/// `None` when it cannot be known here (reported as an error, or a warning for `check`).
fn token_value(sink: &mut Sink, field: &str, value: &str, name: &str) -> Option<String> {
    let whose = format!("token {name:?}");
    let v = match value
        .strip_prefix("${file:")
        .and_then(|r| r.strip_suffix('}'))
    {
        Some(path) => match read_token_file(path) {
            Ok(v) => v,
            Err(e) => {
                match sink.mode {
                    EnvMode::Require => sink.error(field, format!("{whose}: {e}")),
                    EnvMode::Warn => sink.warning(
                        field,
                        format!("{whose}: {e}; the daemon refuses to start until it can read it"),
                    ),
                }
                return None;
            }
        },
        None => sink.expand(field, value, &whose)?,
    };
    if v.chars().count() < MIN_TOKEN_LEN {
        sink.error(field, format!("{whose} is shorter than {MIN_TOKEN_LEN} characters; use a random one, e.g. `openssl rand -hex 32`"));
        return None;
    }
    Some(v)
}
