//! The edge's certificate: self-signed, made at each start (nothing to ship or
//! leak), for `localhost`, 127.0.0.1 and ::1, valid from a day ago for
//! [`VALID_DAYS`] days, so `cert_valid_days` checks pass. Probes that check it
//! say `tls_verify: false` (http) or `verify: false` (tls): no root trusts it.

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use super::DemoError;

/// How long the demo certificate is valid.
pub const VALID_DAYS: i64 = 365;

/// A TLS acceptor (HTTP/1.1 over ALPN) with a fresh self-signed certificate.
pub fn acceptor() -> Result<TlsAcceptor, DemoError> {
    fn fail(e: impl std::error::Error + Send + Sync + 'static) -> DemoError {
        DemoError::Certificate(Box::new(e))
    }
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(fail)?;
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    params.not_before = (now - day).into();
    params.not_after = (now + day * u32::try_from(VALID_DAYS).unwrap_or(365)).into();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "prober demo edge");
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(fail)?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .map_err(fail)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
