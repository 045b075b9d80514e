//! The TLS check: resolve, connect, and a TLS handshake with SNI `server_name`
//! (no ALPN), then report the server's certificate — also, and above all, when
//! the handshake failed verification (expired, untrusted, wrong host): the
//! verifier keeps what the server presented.
//!
//! Phases: dns (0 for an IP address), connect, tls. The kind has no first byte
//! or transfer; those stay `None`.
//!
//! `info`: `tls.version` and `tls.cipher` (after a handshake), `tls.subject`,
//! `tls.issuer`, `tls.san`, `tls.hostname_match` (computed here from the SANs,
//! so it is known with `verify: false` too) and `tls.chain_length`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;

use super::net::{self, fail};
use super::tcp::host_port;
use super::tls::{self, covers, sans, CertSlot, TlsClients};
use super::{Kind, Progress, Stage};
use crate::config::probe::TlsCheck;
use crate::run::{AssertionResult, CertInfo, ErrorClass, ProbeError};

/// The `tls` kind. The verifier's slot keeps what the server presented, so
/// the certificate is reported even when the timeout cut the handshake.
pub struct TlsKind<'a> {
    check: &'a TlsCheck,
    tls: &'a TlsClients,
    timeout: Duration,
    slot: Option<CertSlot>,
}

impl<'a> TlsKind<'a> {
    pub fn new(check: &'a TlsCheck, tls: &'a TlsClients, timeout: Duration) -> TlsKind<'a> {
        TlsKind {
            check,
            tls,
            timeout,
            slot: None,
        }
    }
}

impl Kind for TlsKind<'_> {
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
        let check = self.check;
        let hp = host_port(&check.host, check.port);
        p.request = if check.server_name == check.host {
            format!("tls {hp}")
        } else {
            format!("tls {hp} (server name {})", check.server_name)
        };
        let (config, slot) =
            (self.tls.for_inspection(check.verify)).map_err(|e| fail(ErrorClass::Config, e))?;
        self.slot = Some(slot);
        handshake(check, config, p).await
    }

    fn timed_out(&self, p: &Progress) -> ProbeError {
        let hp = host_port(&self.check.host, self.check.port);
        let where_ = match p.remote_addr {
            Some(a) if a.to_string() != hp => format!("{hp} ({a})"),
            _ => hp,
        };
        let hint = match p.stage() {
            Stage::Tls => "the port may not speak TLS (or waits for a STARTTLS command), or the server is overloaded",
            Stage::Connect => "the host did not answer the connection attempt; is a firewall dropping packets?",
            _ => "the target is slow or hung; raise `timeout` only if that latency is acceptable",
        };
        fail(
            ErrorClass::Timeout,
            format!(
                "no TLS handshake within the timeout of {} (still {} at {where_}); {hint}",
                humantime::format_duration(self.timeout),
                p.stage().describe(),
            ),
        )
    }

    /// Reports the certificate presented (handshake done, failed or cut) and holds it to `cert_valid_days`.
    fn conclude(&mut self, p: &mut Progress, mut error: Option<ProbeError>) -> Option<ProbeError> {
        let Some(slot) = &self.slot else {
            // The client could not be prepared: nothing was presented.
            return error;
        };
        let check = self.check;
        p.cert = slot.info(Utc::now());
        if let Some(cert) = &p.cert {
            p.info.insert("tls.subject".into(), cert.subject.clone());
            p.info.insert("tls.issuer".into(), cert.issuer.clone());
        }
        let presented = slot.certificates();
        if let Some(end_entity) = presented.first() {
            let sans = sans(end_entity);
            let list: Vec<String> = sans.iter().map(ToString::to_string).collect();
            p.info.insert("tls.san".into(), list.join(", "));
            p.info.insert(
                "tls.hostname_match".into(),
                covers(&sans, &check.server_name).to_string(),
            );
            p.info
                .insert("tls.chain_length".into(), presented.len().to_string());
        }
        if let Some(days) = check.cert_valid_days {
            let a = valid_days_assertion(days, p.cert.as_ref());
            if !a.passed && error.is_none() {
                error = Some(fail(
                    ErrorClass::Assertion,
                    format!(
                        "{}: expected {}, got {}; renew the certificate of {}",
                        a.check, a.expected, a.actual, check.server_name
                    ),
                ));
            }
            p.assertions.push(a);
        }
        error
    }
}

/// Resolves, connects and shakes hands; what was negotiated goes into `info`.
async fn handshake(
    check: &TlsCheck,
    config: Arc<rustls::ClientConfig>,
    p: &mut Progress,
) -> Result<(), ProbeError> {
    let name = ServerName::try_from(check.server_name.clone()).map_err(|e| {
        fail(
            ErrorClass::Config,
            format!(
                "{:?} is not a valid TLS server name ({e})",
                check.server_name
            ),
        )
    })?;
    let addrs = net::resolve_timed(&check.host, check.port, "the probe", p).await?;
    let hp = host_port(&check.host, check.port);
    let tcp = net::connect_timed(&addrs, &hp, p).await?;
    p.enter(Stage::Tls);
    let connector = tokio_rustls::TlsConnector::from(config);
    let result = connector.connect(name, tcp).await;
    p.hop.tls_us = Some(p.stage_us());
    let mut stream = result.map_err(|e| {
        let advice = tls::explain(&e, &host_port(&check.server_name, check.port))
            .replace("`http.tls_verify: false`", "`tls.verify: false`");
        fail(ErrorClass::Tls, advice)
    })?;
    let (_, conn) = stream.get_ref();
    let version = conn.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_string(),
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_string(),
        other => format!("{other:?}"),
    });
    if let Some(v) = version {
        p.info.insert("tls.version".into(), v);
    }
    if let Some(s) = conn.negotiated_cipher_suite() {
        p.info
            .insert("tls.cipher".into(), format!("{:?}", s.suite()));
    }
    // A polite close_notify; the server's answer does not matter.
    let _ = stream.shutdown().await;
    Ok(())
}

fn valid_days_assertion(days: u32, cert: Option<&CertInfo>) -> AssertionResult {
    let (passed, actual) = match cert {
        Some(c) => (
            c.days_left >= i64::from(days),
            format!("{} days left (expires {})", c.days_left, c.not_after),
        ),
        None => (
            false,
            "no certificate (the server sent none before the handshake stopped)".to_string(),
        ),
    };
    AssertionResult {
        check: "certificate valid for".into(),
        passed,
        expected: format!(">= {days} days"),
        actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tls::San;
    use std::net::IpAddr;

    fn dns(s: &str) -> San {
        San::Dns(s.into())
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let sans = [dns("*.example.com")];
        assert!(covers(&sans, "www.example.com"));
        assert!(covers(&sans, "WWW.Example.com."));
        assert!(!covers(&sans, "example.com"));
        assert!(!covers(&sans, "a.b.example.com"));
    }

    #[test]
    fn an_ip_address_is_matched_against_ip_entries_only() {
        let sans = [
            dns("127.0.0.1"),
            San::Ip("::1".parse().unwrap_or(IpAddr::from([0u8; 4]))),
        ];
        assert!(!covers(&sans, "127.0.0.1"));
        assert!(covers(&sans, "::1"));
        assert!(covers(&[dns("localhost")], "localhost"));
        assert!(!covers(&[dns("other.example")], "localhost"));
    }
}
