//! API access settings: named, scoped bearer tokens (stored as SHA-256
//! digests), whether reads need a token, and the limits on manual runs.
//! `prober.yaml`'s `api:` section becomes an [`ApiAccess`] in `settings.rs`.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// What a token may do; each scope includes the ones below it: admin ⊇ run ⊇ read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// GET endpoints under `/api/v1` (when `api.public_read` is false).
    Read,
    /// `POST /api/v1/probes/{name}/run`.
    Run,
    /// Everything: reload, silences, the audit log, and any endpoint to come.
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "run" => Some(Scope::Run),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Run => "run",
            Scope::Admin => "admin",
        }
    }
}

/// A configured token: its name (recorded in the audit log), the SHA-256 of its
/// value, and its widest scope. The value itself is never kept.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub scope: Scope,
}

impl std::fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedToken")
            .field("name", &self.name)
            .field("sha256", &"<redacted>")
            .field("scope", &self.scope)
            .finish()
    }
}

impl NamedToken {
    /// A token from its value (hashed here; the value is dropped).
    pub fn from_value(name: &str, value: &str, scope: Scope) -> NamedToken {
        NamedToken {
            name: name.to_string(),
            sha256: digest(value),
            scope,
        }
    }
}

/// The SHA-256 of a token's value.
pub fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// 64 hex digits to a digest.
pub fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Shortest token value accepted (a guessable token is no protection).
pub const MIN_TOKEN_LEN: usize = 16;
/// Largest token file read for `${file:PATH}`.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;
/// Default `api.run_min_interval`: the least time between two manual runs of one probe.
pub const DEFAULT_RUN_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// The name the audit log gives the token set by `api_token` / `PROBER_API_TOKEN`.
pub const LEGACY_TOKEN_NAME: &str = "api_token";

/// Who may call the API and how manual runs are treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAccess {
    /// GET endpoints under `/api/v1` answer without a token (default true).
    pub public_read: bool,
    /// Named tokens from `api.tokens` (`api_token` is added as an admin token named `api_token`).
    pub tokens: Vec<NamedToken>,
    /// Least time between the starts of two manual runs of one probe (default 10s).
    pub run_min_interval: Duration,
    /// Manual runs count in alert state, availability, counters and histograms (default false).
    pub manual_runs_count: bool,
}

impl Default for ApiAccess {
    fn default() -> ApiAccess {
        ApiAccess {
            public_read: true,
            tokens: Vec::new(),
            run_min_interval: DEFAULT_RUN_MIN_INTERVAL,
            manual_runs_count: false,
        }
    }
}

/// Why a `${file:PATH}` token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}; mount the secret there or fix the path")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes; it must hold the token alone")]
    TooLarge { path: String },
    #[error("the token file {path} is not UTF-8 text")]
    NotUtf8 { path: String },
}

/// Reads a `${file:PATH}` token: at most [`MAX_TOKEN_FILE_BYTES`], UTF-8, trimmed.
pub fn read_token_file(path: &str) -> Result<String, TokenFileError> {
    use std::io::Read;
    let path_of = || path.to_string();
    let f = std::fs::File::open(path).map_err(|source| TokenFileError::Open {
        path: path_of(),
        source,
    })?;
    let mut buf = Vec::new();
    f.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| TokenFileError::Read {
            path: path_of(),
            source,
        })?;
    if buf.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(TokenFileError::TooLarge { path: path_of() });
    }
    let text = String::from_utf8(buf).map_err(|_| TokenFileError::NotUtf8 { path: path_of() })?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_include_the_ones_below() {
        assert!(Scope::Admin >= Scope::Run && Scope::Run >= Scope::Read);
        assert_eq!(Scope::parse("run"), Some(Scope::Run));
        assert_eq!(Scope::parse("write"), None);
    }

    #[test]
    fn a_hex_digest_round_trips_and_bad_hex_is_refused() {
        let d = digest("a-long-enough-token");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_sha256_hex(&hex), Some(d));
        assert_eq!(parse_sha256_hex(&hex.to_uppercase()), Some(d));
        assert_eq!(parse_sha256_hex(&hex[..63]), None);
        assert_eq!(parse_sha256_hex(&format!("{}zz", &hex[..62])), None);
        assert_eq!(d, digest("a-long-enough-token"));
        assert_ne!(d, digest("another-token-value"));
    }

    #[test]
    fn a_token_file_is_trimmed_and_bounded() {
        let dir = std::env::temp_dir().join(format!("prober-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok");
        std::fs::write(&ok, "  s3cret-token-from-a-file \n").unwrap();
        assert_eq!(
            read_token_file(ok.to_str().unwrap()).unwrap(),
            "s3cret-token-from-a-file"
        );
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 5000]).unwrap();
        assert!(read_token_file(big.to_str().unwrap())
            .unwrap_err()
            .to_string()
            .contains("larger than"));
        assert!(read_token_file(dir.join("missing").to_str().unwrap())
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
