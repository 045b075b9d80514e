//! The loopback target for `--protocol h2c|h1-tls|h2-tls`, `--keep-alive`
//! and `--hyper-target`: hyper's HTTP/1.1 and HTTP/2 servers, behind rustls
//! (ALPN `h2`, `http/1.1`) for the TLS protocols, with a certificate signed
//! by a CA made at start (its PEM in the temporary directory, for the probes'
//! `tls.ca_file`). It runs on the target thread's current-thread runtime
//! (`target.rs`), so its CPU is subtracted as the hand-written responder's is.
//! It answers what that one does (200, `ok\n`), without closing the connection
//! unless the probe asks (`connection: close`, or HTTP/2's end of stream).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::protocol::Wire;
use crate::target::Served;

/// hyper's server as the bench's target: TLS or not, HTTP/2 or not.
pub struct HyperServer {
    /// Present for the TLS protocols; ALPN then picks the HTTP version.
    tls: Option<TlsAcceptor>,
    /// Without TLS: HTTP/2 with prior knowledge (h2c) rather than HTTP/1.1.
    h2c: bool,
    /// The CA's PEM file (TLS only), removed when the target stops.
    pub ca_file: Option<PathBuf>,
}

impl HyperServer {
    pub fn new(wire: &Wire) -> Result<HyperServer, String> {
        let (tls, ca_file) = if wire.protocol.tls() {
            let ca_file =
                std::env::temp_dir().join(format!("prober-bench-ca-{}.pem", std::process::id()));
            (Some(acceptor(&ca_file)?), Some(ca_file))
        } else {
            (None, None)
        };
        Ok(HyperServer {
            tls,
            h2c: wire.protocol.h2() && !wire.protocol.tls(),
            ca_file,
        })
    }

    pub async fn accept_until_stopped(
        self,
        listener: TcpListener,
        delay: Duration,
        stop: CancellationToken,
        served: Served,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((sock, _)) => {
                        served.connections.fetch_add(1, Ordering::Relaxed);
                        let tls = self.tls.clone();
                        tokio::spawn(connection(sock, tls, self.h2c, delay, served.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "bench target: accept failed");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
            }
        }
    }
}

/// A certificate for 127.0.0.1 and `localhost` signed by a fresh CA whose
/// PEM goes to `ca_file`; the acceptor offers ALPN `h2` and `http/1.1`.
fn acceptor(ca_file: &std::path::Path) -> Result<TlsAcceptor, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("target certificate: {what}: {e}");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", &e))?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (ca.distinguished_name).push(rcgen::DnType::CommonName, "prober-bench CA");
    let ca_key = rcgen::KeyPair::generate().map_err(|e| fail("CA key", &e))?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).map_err(|e| fail("CA", &e))?;
    std::fs::write(ca_file, ca.pem()).map_err(|e| fail(&ca_file.display().to_string(), &e))?;
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let params = rcgen::CertificateParams::new(names).map_err(|e| fail("leaf", &e))?;
    let key = rcgen::KeyPair::generate().map_err(|e| fail("leaf key", &e))?;
    let cert = params
        .signed_by(&key, &ca)
        .map_err(|e| fail("signing", &e))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fail("TLS versions", &e))?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .map_err(|e| fail("TLS config", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One connection: the TLS handshake if any, then HTTP/2 or HTTP/1.1 until
/// the probe closes it (or asks to, with `connection: close`).
async fn connection(
    sock: TcpStream,
    tls: Option<TlsAcceptor>,
    h2c: bool,
    delay: Duration,
    served: Served,
) {
    // HTTP/2 writes its frames separately; no Nagle wait between them.
    let _ = sock.set_nodelay(true);
    match tls {
        None => serve_http(sock, h2c, delay, served).await,
        Some(acceptor) => {
            let Ok(stream) = acceptor.accept(sock).await else {
                return;
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_http(stream, h2, delay, served).await;
        }
    }
}

async fn serve_http<S>(stream: S, h2: bool, delay: Duration, served: Served)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let service = service_fn(move |req| answer(req, delay, served.clone()));
    // A probe that closes its connection ends it; the errors that leaves are not the bench's.
    let _ = if h2 {
        http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await
    } else {
        http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(io, service)
            .await
    };
}

/// Waits `delay`, answers 200 `ok\n`, and counts the answer and its delay.
async fn answer(
    req: Request<Incoming>,
    delay: Duration,
    served: Served,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let head_read = Instant::now();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    (response.headers_mut()).insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let took = u64::try_from(head_read.elapsed().as_micros()).unwrap_or(u64::MAX);
    let _ = served.delays.lock().record(took.max(1));
    served.served.fetch_add(1, Ordering::Relaxed);
    if req.version() == Version::HTTP_2 {
        served.served_h2.fetch_add(1, Ordering::Relaxed);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Protocol;

    #[test]
    fn tls_targets_write_a_ca_the_generated_probes_load() {
        let wire = Wire {
            protocol: Protocol::H2Tls,
            ..Wire::default()
        };
        let server = HyperServer::new(&wire).unwrap();
        let ca = server.ca_file.clone().unwrap();
        let every = Duration::from_secs(1);
        let probes = crate::probes::build_probes_with(
            1,
            every,
            every / 2,
            "https://127.0.0.1:8443/",
            &wire.http_lines(Some(&ca)),
        );
        let _ = std::fs::remove_file(&ca);
        let probes = probes.unwrap();
        let requests = probes[0].http_requests();
        assert!(requests[0].1.tls_verify);
    }
}
