//! The raw form of an HTTP request (`http:`) and of how it reaches its
//! server (`version`, `tls`, `resolve`, `proxy`, `basic_auth`), beside `raw.rs`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::raw::RawHeaderValue;

/// The HTTP request a probe sends.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping with at least `url:`")]
pub struct RawHttp {
    /// HTTP method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `http://` or `https://` URL; `${env:NAME}` is replaced by the environment variable NAME.
    pub url: String,
    /// Request headers. A value is a string, or `{value, secret: true}` to keep it out of every output.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, RawHeaderValue>,
    /// A text body. Use `json` instead for a JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A JSON body, sent with `content-type: application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// Follow up to this many redirects (default 0: the 3xx response is what the probe sees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirects: Option<u32>,
    /// Verify the server's certificate (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// Reuse the connection between runs (default false: a new connection each run, as a new user sees it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<bool>,
    /// Stop reading the body past this many bytes and fail the run (default 1048576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// HTTP version: `auto` (default: HTTP/2 where TLS's ALPN agrees, else HTTP/1.1; HTTP/1.1 in
    /// clear text), `"1.1"`, or `"2"` (only HTTP/2; over `http://`, h2c with prior knowledge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<RawScalar>,
    /// TLS options for `https://` URLs: a CA bundle, a client certificate, the server name, the minimum version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawHttpTls>,
    /// Host names pinned to addresses, like curl's `--resolve`: `{api.example.com: 192.0.2.7}`.
    /// The name is still sent as the Host header and the TLS server name; no DNS lookup is made.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolve: BTreeMap<String, String>,
    /// Address family: `any` (default: IPv6 and IPv4 raced as Happy Eyeballs does), `4` or `6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<RawScalar>,
    /// The local address connections are made from (a host with several addresses or interfaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// A proxy: `http://host:port` (HTTP CONNECT), `socks5://host:port` (names resolved here) or
    /// `socks5h://host:port` (names resolved by the proxy), with `user:password@` if it asks; or
    /// `env` for `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` as curl reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Hosts reached directly despite `proxy`, as `NO_PROXY` writes them: `localhost, .internal, 10.0.0.0/8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
    /// OAuth2 client credentials: a bearer token fetched from `token_url`, cached until it
    /// expires, sent as `Authorization: Bearer …`. Its fetch is timed apart from the probe's latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<RawOAuth2>,
    /// HTTP basic authentication. `password` may be `${env:NAME}`; it never appears in any output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<RawBasicAuth>,
}

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

/// `http.oauth2`: the client-credentials grant (RFC 6749 §4.4).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    /// The authorization server's token endpoint.
    pub token_url: String,
    pub client_id: String,
    /// Write `${env:NAME}` rather than the secret itself; it never appears in any output.
    pub client_secret: String,
    /// Scopes asked for (space-joined into `scope`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}
