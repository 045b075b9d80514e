//! TLS for probes: rustls with the system and Mozilla roots, and a verifier
//! that keeps the server's certificate even when verification fails, so an
//! expired or untrusted certificate is still reported with its expiry.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::probe::{TlsMin, TlsOptions};
use crate::run::CertInfo;
use x509_parser::extensions::GeneralName;

/// Shared TLS state: the provider and the verifier, built once.
pub struct TlsClients {
    provider: Arc<CryptoProvider>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl std::fmt::Debug for TlsClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClients")
    }
}

static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();

/// Mozilla's roots plus the system's (so a company CA installed on the host works).
fn roots() -> Arc<RootCertStore> {
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system certificate rustls cannot parse is skipped, not fatal.
                let _ = store.add(cert);
            }
            Arc::new(store)
        })
        .clone()
}

impl TlsClients {
    pub fn new() -> Result<TlsClients, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(roots(), provider.clone())
            .build()
            .map_err(|e| format!("cannot build the TLS verifier: {e}"))?;
        Ok(TlsClients { provider, webpki })
    }

    /// A client config for one connection, and the slot where it leaves the server's certificate.
    pub fn for_connection(&self, verify: bool) -> Result<(Arc<ClientConfig>, CertSlot), String> {
        self.with_options(verify, &TlsOptions::default(), &[b"http/1.1"])
    }

    /// Like [`TlsClients::for_connection`], with a probe's `tls` options (its
    /// CA bundle, client certificate, minimum version) and the ALPN
    /// protocols to offer, most wanted first.
    pub fn with_options(
        &self,
        verify: bool,
        opts: &TlsOptions,
        alpn: &[&[u8]],
    ) -> Result<(Arc<ClientConfig>, CertSlot), String> {
        let slot = CertSlot::default();
        let webpki = match &opts.roots {
            None => self.webpki.clone(),
            Some(certs) => {
                let mut store = RootCertStore::empty();
                for c in certs.iter() {
                    store.add(c.clone()).map_err(|e| {
                        format!("a certificate of `tls.ca_file` is not a usable CA ({e})")
                    })?;
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
                    .build()
                    .map_err(|e| format!("cannot build a verifier from `tls.ca_file`: {e}"))?
            }
        };
        let verifier = Arc::new(CapturingVerifier {
            inner: verify.then_some(webpki),
            provider: self.provider.clone(),
            slot: slot.clone(),
        });
        let versions: &[&rustls::SupportedProtocolVersion] = match opts.min_version {
            Some(TlsMin::Tls13) => &[&rustls::version::TLS13],
            _ => rustls::DEFAULT_VERSIONS,
        };
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &opts.client {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| {
                    format!(
                        "the client certificate {} and its key do not go together ({e}); check `tls.cert_file` and `tls.key_file`",
                        id.cert_file.display()
                    )
                })?,
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok((Arc::new(config), slot))
    }
}

/// A TLS handshake as a step of an attempt, for `sni`: the `tls` stage and
/// phase, with `alpn` offered and a probe's `opts`; the server's certificate
/// goes into `p.cert` whether or not the handshake succeeds.
pub async fn handshake_timed(
    clients: &TlsClients,
    verify: bool,
    opts: &TlsOptions,
    alpn: &[&[u8]],
    sni: &str,
    tcp: tokio::net::TcpStream,
    p: &mut crate::probe::Progress,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, crate::run::ProbeError> {
    use crate::probe::net::fail;
    use crate::run::ErrorClass;
    p.enter(crate::probe::Stage::Tls);
    let (config, slot) =
        (clients.with_options(verify, opts, alpn)).map_err(|e| fail(ErrorClass::Tls, e))?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| {
        fail(
            ErrorClass::Config,
            format!("{sni:?} is not a valid TLS server name ({e})"),
        )
    })?;
    let result = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await;
    p.hop.tls_us = Some(p.stage_us());
    p.cert = slot.info(Utc::now());
    p.cert_names = slot.names();
    result.map_err(|e| fail(ErrorClass::Tls, explain(&e, sni)))
}

/// What a TLS connection agreed on: version and cipher suite, as `info` facts.
pub fn negotiated(conn: &rustls::ClientConnection) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(v) = conn.protocol_version() {
        let v = match v {
            rustls::ProtocolVersion::TLSv1_3 => "1.3".to_string(),
            rustls::ProtocolVersion::TLSv1_2 => "1.2".to_string(),
            other => format!("{other:?}"),
        };
        out.push(("tls.version", v));
    }
    if let Some(c) = conn.negotiated_cipher_suite() {
        out.push(("tls.cipher", format!("{:?}", c.suite())));
    }
    out
}

/// Where the verifier leaves the chain the server presented on one connection
/// (end-entity first), whether or not it verified.
#[derive(Clone, Default, Debug)]
pub struct CertSlot(Arc<Mutex<Vec<CertificateDer<'static>>>>);

impl CertSlot {
    /// The end-entity certificate the server presented, parsed.
    pub fn info(&self, now: DateTime<Utc>) -> Option<CertInfo> {
        let der = self.0.lock().first()?.clone();
        cert_info(&der, now)
    }

    /// The names the end-entity certificate is for (its SANs).
    pub fn names(&self) -> Vec<San> {
        self.0.lock().first().map(|d| sans(d)).unwrap_or_default()
    }

    /// The whole presented chain (empty if the server sent no certificate).
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        self.0.lock().clone()
    }
}

/// Reads subject, issuer and expiry from a DER certificate.
pub fn cert_info(der: &[u8], now: DateTime<Utc>) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)?;
    Some(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after,
        days_left: (not_after - now).num_days(),
    })
}

#[derive(Debug)]
struct CapturingVerifier {
    /// `None` when verification is off for this probe.
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    slot: CertSlot,
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.slot.0.lock() = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        match &self.inner {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Turns a rustls handshake error into advice.
pub fn explain(err: &std::io::Error, host: &str) -> String {
    let text = err.to_string();
    let hint = if text.contains("UnknownIssuer") {
        "the certificate is not signed by a trusted CA (self-signed or a missing intermediate); fix the chain, give the CA that signed it (`http.tls.ca_file`), or turn certificate verification off for a test target (`http.tls_verify: false`)"
    } else if text.contains("Expired") {
        "the certificate has expired; renew it"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        "the certificate does not cover this host name; check the URL or the certificate's names"
    } else if text.contains("NoApplicationProtocol") {
        "the server speaks none of the HTTP versions offered in ALPN (with `http.version: \"2\"` only h2 is offered); use `version: auto`"
    } else if text.contains("CertificateRequired") {
        "the server requires a client certificate: set `http.tls.cert_file` and `http.tls.key_file`"
    } else if text.contains("NotValidYet") {
        "the certificate is not valid yet; check the server's clock and the certificate"
    } else {
        "check that the port speaks TLS and that the server's certificate and protocols are sound"
    };
    format!("TLS handshake with {host} failed: {text}; {hint}")
}

impl TlsClients {
    /// Like [`TlsClients::for_connection`] (same roots, same verification, same
    /// certificate slot), for inspecting a server rather than speaking HTTP to it:
    /// no ALPN protocol is offered.
    pub fn for_inspection(&self, verify: bool) -> Result<(Arc<ClientConfig>, CertSlot), String> {
        let (config, slot) = self.for_connection(verify)?;
        let mut config = ClientConfig::clone(&config);
        config.alpn_protocols.clear();
        Ok((Arc::new(config), slot))
    }
}

/// A subject alternative name of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Dns(d) => f.write_str(d),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The DNS names and IP addresses a DER certificate is for.
pub fn sans(der: &[u8]) -> Vec<San> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(San::Dns((*d).to_string())),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| San::Ip(IpAddr::from(a))),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| San::Ip(IpAddr::from(a))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether the names cover `server_name`, as a client checks it: an IP address
/// against the IP entries; a name against the DNS entries, case-insensitively,
/// `*.` matching exactly one leftmost label. The subject's CN is not consulted
/// (browsers and rustls ignore it).
pub fn covers(sans: &[San], server_name: &str) -> bool {
    let bare = server_name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return sans.contains(&San::Ip(ip));
    }
    let name = server_name.trim_end_matches('.').to_ascii_lowercase();
    sans.iter().any(|s| {
        let San::Dns(pattern) = s else {
            return false;
        };
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(suffix) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => pattern == name,
        }
    })
}
