//! How the HTTP probe reaches a server: HTTP/2 (ALPN over TLS and h2c with
//! prior knowledge), mutual TLS, a custom CA, the TLS server name and minimum
//! version, `resolve:` pins, the address family, and basic authentication.
//! Against real servers on loopback: hyper's HTTP/1.1 and HTTP/2 servers
//! behind rustls, with certificates from a test CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prober::probe::Runner;
use prober::run::{ErrorClass, Outcome};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::helpers::http_probe;

/// A test CA, and the PEM files of what it signed, in a folder of their own.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as rustls takes them and as PEM files.
pub(crate) struct Issued {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Pki {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names`, signed by this CA, saved as `{file}.crt` and `{file}.key`.
    pub(crate) fn issue(&self, file: &str, names: &[&str]) -> Issued {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_file = self.dir.path().join(format!("{file}.crt"));
        let key_file = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Issued {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            cert_file,
            key_file,
        }
    }
}

/// Answers every request with its version and its `authorization` header;
/// `/gzip` and `/br` compressed so, `/bomb` 10 MiB of zeros in 10 KiB of gzip.
async fn echo(
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    use std::io::Write;
    let auth = (req.headers().get("authorization"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let text = format!(
        "version={:?} auth={auth} peer={peer} {}",
        req.version(),
        "padding ".repeat(100)
    );
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let (coding, body) = match req.uri().path() {
        "/gzip" => (Some("gzip"), gzip(text.as_bytes())),
        "/br" => {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(text.as_bytes()).unwrap();
            drop(w);
            (Some("br"), out)
        }
        "/bomb" => (Some("gzip"), gzip(&vec![0u8; 10 * 1024 * 1024])),
        _ => (None, text.into_bytes()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    if let Some(c) = coding {
        r.headers_mut().insert(
            "content-encoding",
            hyper::header::HeaderValue::from_static(c),
        );
    }
    Ok(r)
}

/// Which HTTP a test server speaks.
#[derive(Clone, Copy)]
pub(crate) enum Speaks {
    /// HTTP/1.1 and HTTP/2 (over TLS, as ALPN chooses; in clear text, h2c with prior knowledge too).
    Both,
    H1,
    H2,
}

/// A server on `bind` (port 0), with TLS when `tls` is given; its address.
pub(crate) async fn serve(
    bind: &str,
    speaks: Speaks,
    tls: Option<rustls::ServerConfig>,
) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|mut c| {
        c.alpn_protocols = match speaks {
            Speaks::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Speaks::H1 => vec![b"http/1.1".to_vec()],
            Speaks::H2 => vec![b"h2".to_vec()],
        };
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    });
    tokio::spawn(async move {
        while let Ok((sock, peer)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| echo(req, peer.ip()));
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match speaks {
                    Speaks::Both => {}
                    Speaks::H1 => builder = builder.http1_only(),
                    Speaks::H2 => builder = builder.http2_only(),
                }
                let _ = match acceptor {
                    Some(a) => match a.accept(sock).await {
                        Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                        Err(_) => return,
                    },
                    None => builder.serve_connection(TokioIo::new(sock), service).await,
                };
            });
        }
    });
    addr
}

pub(crate) fn server_tls(id: &Issued, client_ca: Option<&Path>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(ca).unwrap();
            for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .unwrap()
}

pub(crate) async fn run(url: &str, http_extra: &str, expect: &str) -> Outcome {
    let top = if expect.is_empty() {
        String::new()
    } else {
        format!("expect:\n{}", indent(expect))
    };
    let p = http_probe(url, http_extra, &top);
    Runner::new().unwrap().run(&p).await
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn body_has(o: &Outcome, text: &str) -> bool {
    o.assertions
        .iter()
        .any(|a| a.check == "body contains" && a.passed && a.expected.contains(text))
}

fn version(o: &Outcome) -> Option<&str> {
    o.info.get("http.version").map(String::as_str)
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_h2c_is_spoken_on_request() {
    let pki = Pki::new("h2");
    let server = pki.issue("server", &["localhost"]);
    let ca = pki.ca_file();
    let tls = |speaks| serve("127.0.0.1:0", speaks, Some(server_tls(&server, None)));
    let (both, h1_only, h2_only) = (
        tls(Speaks::Both).await,
        tls(Speaks::H1).await,
        tls(Speaks::H2).await,
    );
    let https = |a: SocketAddr| format!("https://localhost:{}/", a.port());
    let trust = format!("tls:\n  ca_file: {}", ca.display());

    // auto: h2 where ALPN agrees, HTTP/1.1 where the server offers only that.
    let o = run(
        &https(both),
        &trust,
        "http_version: \"2\"\nbody_contains: [\"version=HTTP/2.0\"]",
    )
    .await;
    assert!(o.success, "{o:#?}");
    assert_eq!(version(&o), Some("2"));
    assert!(
        o.info.get("tls.version").is_some_and(|v| v == "1.3"),
        "{:?}",
        o.info
    );
    assert!(o.info.contains_key("tls.cipher"), "{:?}", o.info);
    let ph = &o.phases;
    assert!(
        ph.connect_us.is_some()
            && ph.tls_us.is_some()
            && ph.first_byte_us.is_some()
            && ph.transfer_us.is_some(),
        "every phase measured over HTTP/2: {ph:?}"
    );
    assert!(
        ph.total_us >= ph.tls_us.unwrap() + ph.first_byte_us.unwrap(),
        "{ph:?}"
    );
    let o = run(
        &https(h1_only),
        &trust,
        "body_contains: [\"version=HTTP/1.1\"]",
    )
    .await;
    assert!(o.success && version(&o) == Some("1.1"), "{o:#?}");
    let o = run(&https(h2_only), &trust, "").await;
    assert!(
        o.success && version(&o) == Some("2"),
        "an h2-only server under auto: {o:#?}"
    );

    // "1.1" offers only http/1.1; "2" only h2, and refuses an HTTP/1.1-only server.
    let o = run(
        &https(both),
        &format!("{trust}\nversion: \"1.1\""),
        "body_contains: [\"version=HTTP/1.1\"]",
    )
    .await;
    assert!(o.success && version(&o) == Some("1.1"), "{o:#?}");
    let o = run(&https(h1_only), &format!("{trust}\nversion: 2"), "").await;
    let e = o
        .error
        .as_ref()
        .expect("h2 demanded of an HTTP/1.1-only server");
    assert_eq!(e.class, ErrorClass::Tls, "{e:?}");
    assert!(e.message.contains("version: auto"), "{}", e.message);

    // The assertion fails with what was found.
    let o = run(&https(h1_only), &trust, "http_version: \"2\"").await;
    let a = o
        .assertions
        .iter()
        .find(|a| a.check == "http version")
        .unwrap();
    assert!(!a.passed && a.actual == "1.1" && a.expected == "2", "{a:?}");
    assert_eq!(
        o.error.as_ref().map(|e| e.class),
        Some(ErrorClass::Assertion)
    );

    // Clear text: HTTP/1.1 under auto; h2c with prior knowledge under "2".
    let plain = serve("127.0.0.1:0", Speaks::Both, None).await;
    let url = format!("http://{plain}/");
    let o = run(&url, "", "body_contains: [\"version=HTTP/1.1\"]").await;
    assert!(o.success && version(&o) == Some("1.1"), "{o:#?}");
    let o = run(&url, "version: 2", "body_contains: [\"version=HTTP/2.0\"]").await;
    assert!(o.success && version(&o) == Some("2"), "{o:#?}");
    assert_eq!(o.phases.tls_us, None, "h2c has no TLS phase");
    assert!(!o.info.contains_key("tls.version"));
}

#[tokio::test]
async fn mutual_tls_a_custom_ca_the_server_name_and_the_minimum_version() {
    let pki = Pki::new("mtls");
    let server = pki.issue("server", &["api.internal"]);
    let client = pki.issue("client", &["prober"]);
    let addr = serve(
        "127.0.0.1:0",
        Speaks::Both,
        Some(server_tls(&server, Some(&pki.ca_file()))),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let base = format!(
        "tls:\n  ca_file: {}\n  server_name: api.internal",
        pki.ca_file().display()
    );

    // Without a client certificate: refused, and told why.
    let o = run(&url, &base, "").await;
    let e = o
        .error
        .as_ref()
        .expect("refused without a client certificate");
    assert_eq!(e.class, ErrorClass::Tls, "{e:?}");
    assert!(e.message.contains("cert_file"), "{}", e.message);

    // With one: accepted.
    let with = format!(
        "{base}\n  cert_file: {}\n  key_file: {}\n  min_version: \"1.3\"",
        client.cert_file.display(),
        client.key_file.display()
    );
    let o = run(&url, &with, "tls_version: \"1.3\"").await;
    assert!(o.success, "{o:#?}");
    assert!(
        o.cert
            .as_ref()
            .is_some_and(|c| c.issuer.contains("mtls test CA")),
        "{:?}",
        o.cert
    );

    // The wrong CA: the server's certificate is not trusted.
    let other = Pki::new("other");
    let wrong = with.replace(
        &pki.ca_file().display().to_string(),
        &other.ca_file().display().to_string(),
    );
    let o = run(&url, &wrong, "").await;
    let e = o.error.as_ref().expect("a server signed by another CA");
    assert_eq!(e.class, ErrorClass::Tls, "{e:?}");
    assert!(
        e.message.contains("not signed by a trusted CA") && e.message.contains("ca_file"),
        "{}",
        e.message
    );

    // Without `server_name`, the address is checked against a certificate for api.internal.
    let nameless = with.replace("\n  server_name: api.internal", "");
    let o = run(&url, &nameless, "").await;
    let e = o
        .error
        .as_ref()
        .expect("the certificate does not name 127.0.0.1");
    assert_eq!(e.class, ErrorClass::Tls, "{e:?}");
}

#[tokio::test]
async fn resolve_pins_an_address_ip_version_picks_the_family_and_basic_auth_is_sent() {
    let v4 = serve("127.0.0.1:0", Speaks::Both, None).await;
    // resolve: the name is never looked up (.invalid cannot resolve), the pin is used.
    let url = format!("http://probe-target.invalid:{}/", v4.port());
    let o = run(&url, "resolve:\n  probe-target.invalid: 127.0.0.1", "").await;
    assert!(o.success, "{o:#?}");
    assert_eq!(o.phases.dns_us, None, "a pinned host is not looked up");
    assert_eq!(o.remote_addr.as_deref(), Some(v4.to_string().as_str()));

    // IPv6 on ::1, when the machine has it.
    if let Ok(l) = std::net::TcpListener::bind("[::1]:0") {
        drop(l);
        let v6 = serve("[::1]:0", Speaks::Both, None).await;
        let url = format!("http://[::1]:{}/", v6.port());
        let o = run(&url, "ip_version: 6", "").await;
        assert!(o.success, "{o:#?}");
        assert!(
            o.remote_addr
                .as_deref()
                .is_some_and(|a| a.starts_with("[::1]")),
            "{:?}",
            o.remote_addr
        );
        // The family asked for has no address: a dns error that says so.
        let o = run(&url, "ip_version: 4", "").await;
        let e = o.error.as_ref().expect("no IPv4 address for [::1]");
        assert_eq!(e.class, ErrorClass::Dns);
        assert!(e.message.contains("ip_version"), "{}", e.message);
    } else {
        eprintln!("skipped the IPv6 part: this machine has no ::1");
    }

    // A source address: the server sees the connection come from it.
    let o = run(
        &format!("http://{v4}/"),
        "source_address: 127.0.0.2",
        "body_contains: [\"peer=127.0.0.2\"]",
    )
    .await;
    assert!(o.success, "{o:#?}");
    let o = run(&format!("http://{v4}/"), "source_address: 192.0.2.1", "").await;
    let e = o.error.as_ref().expect("not an address of this host");
    assert_eq!(e.class, ErrorClass::Connect, "{e:?}");
    assert!(
        e.message.contains("source address 192.0.2.1"),
        "{}",
        e.message
    );

    // Basic auth: sent as the standard header, never shown in the run.
    std::env::set_var("PROBER_TEST_BASIC_PW", "s3cret-pw");
    let url = format!("http://{v4}/");
    let o = run(
        &url,
        "basic_auth:\n  username: alice\n  password: ${env:PROBER_TEST_BASIC_PW}",
        "body_contains: [\"auth=Basic YWxpY2U6czNjcmV0LXB3\"]",
    )
    .await;
    assert!(o.success && body_has(&o, "YWxpY2U6czNjcmV0LXB3"), "{o:#?}");
    let shown = serde_json::to_string(&o).unwrap();
    assert!(!shown.contains("s3cret-pw"), "{shown}");
}

#[tokio::test]
async fn bad_reach_options_are_refused_at_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for (extra, says) in [
        ("version: 3", "\"3\" is not one of \"auto\", \"1.1\", \"2\""),
        ("ip_version: 5", "is not one of \"any\", \"4\", \"6\""),
        ("resolve:\n  a.example: not-an-ip", "is not an IP address"),
        (
            "ip_version: 6\nresolve:\n  a.example: 127.0.0.1",
            "not an address of the family",
        ),
        (
            "tls:\n  ca_file: /nonexistent/ca.pem",
            "cannot read /nonexistent/ca.pem",
        ),
        (
            &format!("tls:\n  ca_file: {}", not_pem.display()),
            "holds no PEM certificate",
        ),
        (
            &format!("tls:\n  cert_file: {}", not_pem.display()),
            "needs its key",
        ),
        (
            "tls:\n  min_version: \"1.1\"",
            "is not one of \"1.2\", \"1.3\"",
        ),
        ("tls:\n  cipher: x", "cipher"),
        (
            "basic_auth:\n  username: a:b\n  password: x",
            "cannot contain `:`",
        ),
        ("proxy: ftp://p.example:21", "is not a proxy URL"),
        ("no_proxy: localhost", "`no_proxy` without `proxy`"),
    ] {
        let yaml = format!(
            "name: test\nevery: 10s\nhttp:\n  url: https://a.example/\n{}",
            indent(extra)
        );
        let errors = load_errors(&yaml);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(says) && e.contains("probe.yaml:")),
            "{extra}: want {says:?} in {errors:#?}"
        );
    }
}

/// probes/README.md's example of these options loads as shown, beside the
/// certificate files it names.
#[test]
fn the_documented_example_loads() {
    let block = crate::helpers::probes_readme_example("payments-mtls");
    let pki = Pki::new("docs");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let client = pki.issue("client", &["prober"]);
    std::fs::copy(pki.ca_file(), certs.join("ca.pem")).unwrap();
    std::fs::copy(&client.cert_file, certs.join("client.crt")).unwrap();
    std::fs::copy(&client.key_file, certs.join("client.key")).unwrap();
    std::fs::write(dir.path().join("payments.yaml"), block).unwrap();
    let report = prober::config::load::load_paths(&[dir.path().to_path_buf()]);
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let p = &report.probes[0];
    let prober::config::probe::Check::Http(h) = &p.check else {
        panic!("an http probe")
    };
    let r = &h.request;
    assert_eq!(r.version, prober::config::probe::HttpVersion::Auto);
    assert!(r.tls.roots.is_some() && r.tls.client.is_some());
    assert_eq!(
        r.tls.min_version,
        Some(prober::config::probe::TlsMin::Tls13)
    );
    assert_eq!(
        r.resolve,
        vec![(
            "payments.internal".to_string(),
            "10.20.0.7".parse().unwrap()
        )]
    );
    assert!(
        format!("{r:?}").contains("key: \"<redacted>\""),
        "the key is never shown: {r:?}"
    );
}

#[tokio::test]
async fn compressed_bodies_are_decoded_for_the_expectations_and_a_bomb_is_stopped() {
    let addr = serve("127.0.0.1:0", Speaks::Both, None).await;
    for coding in ["gzip", "br"] {
        let url = format!("http://{addr}/{coding}");
        let o = run(&url, "", "body_contains: [\"version=HTTP/1.1\"]").await;
        assert!(o.success, "{coding}: {o:#?}");
        assert_eq!(
            o.info.get("http.content_encoding").map(String::as_str),
            Some(coding)
        );
        let decoded: u64 = o.info["http.decoded_bytes"].parse().unwrap();
        assert!(
            o.response_bytes < decoded,
            "{coding}: the wire's {} bytes are fewer than the decoded {decoded}",
            o.response_bytes
        );
    }
    let o = run(&format!("http://{addr}/bomb"), "", "").await;
    let e = o
        .error
        .as_ref()
        .expect("10 MiB decoded is over the 1 MiB default");
    assert_eq!(e.class, ErrorClass::BodyTooLarge, "{e:?}");
    assert!(e.message.contains("gzip-decoded"), "{}", e.message);
    assert!(o.response_bytes < 100_000, "{}", o.response_bytes);
}

/// What a test proxy was asked for: each destination as the client wrote it.
pub(crate) type Asked = Arc<std::sync::Mutex<Vec<String>>>;

/// A proxy on loopback: HTTP CONNECT (`socks` false) or SOCKS5 without
/// authentication. It notes each destination and relays the bytes.
pub(crate) async fn proxy(socks: bool) -> (SocketAddr, Asked) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked: Asked = Arc::default();
    let noted = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let noted = noted.clone();
            tokio::spawn(async move {
                let dst = if socks {
                    let mut hello = [0u8; 2];
                    client.read_exact(&mut hello).await.ok()?;
                    let mut methods = vec![0u8; hello[1] as usize];
                    client.read_exact(&mut methods).await.ok()?;
                    client.write_all(&[5, 0]).await.ok()?;
                    let mut head = [0u8; 4];
                    client.read_exact(&mut head).await.ok()?;
                    let host = match head[3] {
                        1 => {
                            let mut ip = [0u8; 4];
                            client.read_exact(&mut ip).await.ok()?;
                            std::net::Ipv4Addr::from(ip).to_string()
                        }
                        3 => {
                            let len = client.read_u8().await.ok()?;
                            let mut name = vec![0u8; len as usize];
                            client.read_exact(&mut name).await.ok()?;
                            String::from_utf8(name).ok()?
                        }
                        _ => return None,
                    };
                    let port = client.read_u16().await.ok()?;
                    client
                        .write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
                        .await
                        .ok()?;
                    format!("{host}:{port}")
                } else {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        head.push(client.read_u8().await.ok()?);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let target = head
                        .strip_prefix("CONNECT ")?
                        .split(' ')
                        .next()?
                        .to_string();
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .ok()?;
                    target
                };
                noted.lock().unwrap().push(dst.clone());
                let mut upstream = tokio::net::TcpStream::connect(dst).await.ok()?;
                tokio::io::copy_bidirectional(&mut client, &mut upstream)
                    .await
                    .ok()
            });
        }
    });
    (addr, asked)
}

#[tokio::test]
async fn connect_and_socks5_proxies_carry_probes_and_no_proxy_goes_direct() {
    let target = serve("127.0.0.1:0", Speaks::Both, None).await;
    let (http_proxy, via_connect) = proxy(false).await;
    let (socks, via_socks) = proxy(true).await;
    let url = format!("http://localhost:{}/", target.port());

    // HTTP CONNECT.
    let o = run(&url, &format!("proxy: http://{http_proxy}"), "").await;
    assert!(o.success, "{o:#?}");
    assert_eq!(o.info.get("proxy"), Some(&format!("http://{http_proxy}/")));
    assert_eq!(
        o.remote_addr.as_deref(),
        Some(http_proxy.to_string().as_str())
    );
    assert_eq!(
        *via_connect.lock().unwrap(),
        [format!("localhost:{}", target.port())]
    );

    // HTTPS and HTTP/2 inside the tunnel.
    let pki = Pki::new("proxy");
    let server = pki.issue("server", &["localhost"]);
    let tls = serve("127.0.0.1:0", Speaks::Both, Some(server_tls(&server, None))).await;
    let extra = format!(
        "proxy: http://{http_proxy}\ntls:\n  ca_file: {}",
        pki.ca_file().display()
    );
    let o = run(
        &format!("https://localhost:{}/", tls.port()),
        &extra,
        "http_version: \"2\"",
    )
    .await;
    assert!(o.success, "TLS through the tunnel: {o:#?}");

    // SOCKS5: socks5h leaves the name to the proxy, socks5 resolves it here.
    let o = run(&url, &format!("proxy: socks5h://{socks}"), "").await;
    assert!(o.success, "{o:#?}");
    let o = run(&url, &format!("proxy: socks5://{socks}"), "").await;
    assert!(o.success, "{o:#?}");
    let asked = via_socks.lock().unwrap().clone();
    assert_eq!(
        asked,
        [
            format!("localhost:{}", target.port()),
            format!("127.0.0.1:{}", target.port())
        ],
        "the name to socks5h, the address to socks5"
    );

    // no_proxy: a listed host goes direct.
    let before = via_connect.lock().unwrap().len();
    let o = run(
        &url,
        &format!("proxy: http://{http_proxy}\nno_proxy: \"example.org, localhost\""),
        "",
    )
    .await;
    assert!(o.success && !o.info.contains_key("proxy"), "{o:#?}");
    assert_eq!(
        via_connect.lock().unwrap().len(),
        before,
        "not through the proxy"
    );

    // A proxy that is not there: a connect error naming the proxy.
    let gone = crate::helpers::closed_port().await;
    let o = run(&url, &format!("proxy: socks5://{gone}"), "").await;
    let e = o.error.as_ref().expect("no proxy listening");
    assert_eq!(e.class, ErrorClass::Connect, "{e:?}");
    assert!(e.message.contains(&gone.to_string()), "{}", e.message);
}

/// The errors of loading `yaml` as the file `probe.yaml`.
pub(crate) fn load_errors(yaml: &str) -> Vec<String> {
    let mut report = prober::config::load::LoadReport::default();
    prober::config::load::load_text(Path::new("probe.yaml"), yaml, &mut report);
    report.errors().map(ToString::to_string).collect()
}

/// An OAuth2 token endpoint on loopback: it takes `prober:s3cret` by basic
/// auth, answers `tok-N` (N counts its fetches) valid for `expires_in`
/// seconds, after a 150 ms think.
async fn token_server(expires_in: u64) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let counted = counted.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let counted = counted.clone();
                async move {
                    use http_body_util::BodyExt;
                    let auth = (req.headers().get("authorization"))
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let form = req.into_body().collect().await.unwrap().to_bytes();
                    let form = String::from_utf8_lossy(&form).to_string();
                    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                    // base64("prober:s3cret")
                    let ok = auth == "Basic cHJvYmVyOnMzY3JldA=="
                        && form.contains("grant_type=client_credentials")
                        && form.contains("scope=read+write");
                    let (status, body) = if ok {
                        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                        (
                            200,
                            format!(
                                r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{expires_in}}}"#
                            ),
                        )
                    } else {
                        (401, r#"{"error":"invalid_client"}"#.to_string())
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), service)
                    .await;
            });
        }
    });
    (addr, fetches)
}

#[tokio::test]
async fn oauth2_tokens_are_fetched_cached_refreshed_and_kept_out_of_the_latency() {
    use std::sync::atomic::Ordering;
    let target = serve("127.0.0.1:0", Speaks::Both, None).await;
    let url = format!("http://{target}/");
    std::env::set_var("PROBER_TEST_OAUTH_SECRET", "s3cret");
    let oauth = |token: SocketAddr, secret: &str| {
        format!("oauth2:\n  token_url: http://{token}/token\n  client_id: prober\n  client_secret: \"{secret}\"\n  scopes: [read, write]")
    };
    let p = http_probe(
        &url,
        &oauth(
            token_server(3600).await.0,
            "${env:PROBER_TEST_OAUTH_SECRET}",
        ),
        "expect:\n  body_contains: [\"auth=Bearer tok-\"]",
    );
    let runner = Runner::new().unwrap();
    let first = runner.run(&p).await;
    assert!(
        first.success && body_has(&first, "auth=Bearer tok-"),
        "{first:#?}"
    );
    assert_eq!(first.info["oauth2.token"], "fetched");
    let fetch_ms: f64 = first.info["oauth2.token_fetch_ms"].parse().unwrap();
    assert!(fetch_ms >= 150.0, "{fetch_ms}");
    assert!(
        first.phases.total_us < 150_000,
        "the token's 150 ms fetch is not the probe's latency: {:?}",
        first.phases
    );
    let second = runner.run(&p).await;
    assert!(second.success, "{second:#?}");
    assert_eq!(second.info["oauth2.token"], "cached", "{:?}", second.info);
    assert!(!second.info.contains_key("oauth2.token_fetch_ms"));
    let shown = serde_json::to_string(&(&first, &second)).unwrap();
    assert!(
        !shown.contains("s3cret") && !shown.contains("tok-1"),
        "the secret and the token are never shown: {shown}"
    );

    // A token within 30 s of its expiry is fetched again.
    let (short, fetches) = token_server(30).await;
    let p = http_probe(&url, &oauth(short, "${env:PROBER_TEST_OAUTH_SECRET}"), "");
    for _ in 0..2 {
        assert!(runner.run(&p).await.success);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);

    // An endpoint's absurd lifetime (2^64 − 1 s) is not believed: the
    // token is kept (at most a day) and the run goes on, where it once
    // overflowed the clock and killed every run of the probe.
    let (absurd, fetches) = token_server(u64::MAX).await;
    let p = http_probe(&url, &oauth(absurd, "${env:PROBER_TEST_OAUTH_SECRET}"), "");
    let o = runner.run(&p).await;
    assert!(o.success, "{o:#?}");
    let o = runner.run(&p).await;
    assert!(o.success, "{o:#?}");
    assert_eq!(o.info["oauth2.token"], "cached", "{:?}", o.info);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // Refused credentials: the token endpoint's status, and what to check.
    let p = http_probe(&url, &oauth(short, "wrong"), "");
    let o = runner.run(&p).await;
    let e = o.error.as_ref().expect("refused");
    assert_eq!(e.class, ErrorClass::HttpStatus, "{e:?}");
    assert!(
        e.message.contains("token endpoint") && e.message.contains("client_secret"),
        "{}",
        e.message
    );
}
