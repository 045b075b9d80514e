//! The raw form of how an HTTP request reaches its server (`http.version`,
//! `http.tls`, `http.basic_auth`), beside `raw.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A value written as a number or a string (`version: 2` or `version: "1.1"`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, expecting = "expected a number or a string")]
pub enum RawScalar {
    Number(serde_json::Number),
    Text(String),
}

impl std::fmt::Display for RawScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawScalar::Number(n) => write!(f, "{n}"),
            RawScalar::Text(t) => f.write_str(t),
        }
    }
}

/// `http.tls`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHttpTls {
    /// PEM file of the CAs to trust instead of the system's and Mozilla's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM file of the client certificate (and its chain) for mutual TLS; needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The name sent in SNI and checked against the certificate, instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<RawScalar>,
}

/// `http.basic_auth`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub username: String,
    /// Write `${env:NAME}` rather than the password itself.
    pub password: String,
}
