//! The raw form of the probe kinds other than HTTP and browsers (tcp,
//! websocket, icmp, dns, tls, grpc), beside `raw.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::raw_http::RawScalar;

/// A TCP check.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    pub host: String,
    pub port: u16,
    /// Bytes to send once connected (`\r\n` escapes as in YAML double quotes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// A regular expression the first bytes received must match (a banner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

/// A WebSocket check: the upgrade, a message sent, a reply expected.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    /// `ws://` or `wss://` URL.
    pub url: String,
    /// A text message to send once connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// A regular expression a message from the server must match (the first that does counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Verify the server's certificate for `wss://` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
}

/// An ICMP echo ("ping") check.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIcmp {
    pub host: String,
    /// Echo requests per run (default 3, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Between two requests (default 200ms, at least 10ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long the last request's reply is waited for (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// Address family: `any` (default), `4` or `6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<RawScalar>,
    /// Fail the run when more than this share of requests is lost, in percent (default 99:
    /// the run fails only when no reply comes back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_loss_percent: Option<u8>,
}

/// A DNS check.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// The name to query.
    pub name: String,
    /// Record type: A (default), AAAA, CNAME, MX, TXT, NS, SOA, SRV, PTR, CAA.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub record_type: Option<String>,
    /// `ip` or `ip:port` of the server to ask (default: the first nameserver of /etc/resolv.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `udp` (default) or `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Expected response code (default NOERROR), e.g. NXDOMAIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// Each of these must be among the answers (as text: `1.2.3.4`, `10 mail.example.com.`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// At least this many answers (default 1 when rcode is NOERROR, else 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_answers: Option<u32>,
}

/// A TLS check.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub host: String,
    /// Default 443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Name to ask for (SNI) and to match the certificate against (default: `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Verify the chain and host name (default true). Expiry is reported either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    /// Fail when the certificate expires within this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_valid_days: Option<u32>,
}

/// A gRPC health check.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGrpc {
    /// `host:port` of the server.
    pub target: String,
    /// The service to ask about (default: the server as a whole, "").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Use TLS (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// Verify the server's certificate when `tls` is on (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
}
