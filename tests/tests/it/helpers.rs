//! Fake targets on loopback that misbehave on command, and helpers to build
//! probes and run the CLI.
//!
//! The target speaks HTTP/1.1 by hand over a raw socket, so each test controls
//! exactly when headers and body bytes leave (a delay before the headers, a
//! body dripped over time, an endless body, bytes that are not HTTP).
//! Routes:
//! - `/ok` → 200 "ok"
//! - `/delay/{ms}` → waits, then 200
//! - `/drip/{ms}` → headers now, a 10-chunk body spread over `ms`
//! - `/status/{code}` → that status
//! - `/endless` → a chunked body that never ends
//! - `/redirect/{n}` → 302 to `/redirect/{n-1}`; `/redirect/0` → 200
//! - `/loop` → 302 to itself
//! - `/echo` → 200 with the request head as the body
//! - `/json` → a JSON document
//! - `/hang` → reads the request and never answers

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use prober::config::load::{load_text, LoadReport};
use prober::config::Probe;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Tests that assert on measured timings hold this for writing; tests that load
/// the CPU (the daemon, bulk store writes) hold it for reading. So a timing
/// test never shares the machine's two cores with a heavy one.
pub static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A fake HTTP target on 127.0.0.1, served until the test ends.
pub struct FakeTarget {
    pub addr: SocketAddr,
    scheme: &'static str,
    host: String,
    pub counts: Arc<Counts>,
}

/// Requests a fake target has read, and responses it has finished writing.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: std::sync::atomic::AtomicUsize,
    pub responses: std::sync::atomic::AtomicUsize,
}

impl Counts {
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn responses(&self) -> usize {
        self.responses.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl FakeTarget {
    /// Plain HTTP.
    pub async fn start() -> FakeTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(sock, c.clone()));
            }
        });
        FakeTarget {
            addr,
            scheme: "http",
            host: "127.0.0.1".into(),
            counts,
        }
    }

    /// HTTPS with the given certificate.
    pub async fn start_tls(cert: &TestCert) -> FakeTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cert.server_config()));
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(sock).await {
                        serve(tls, c).await;
                    }
                });
            }
        });
        FakeTarget {
            addr,
            scheme: "https",
            host: "localhost".into(),
            counts,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}:{}{path}", self.scheme, self.host, self.addr.port())
    }
}

/// A listener that answers every connection with bytes that are not HTTP.
pub async fn start_garbage() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"SSH-2.0-OpenSSH_9.2\r\nnot http at all\r\n")
                    .await;
            });
        }
    });
    addr
}

/// A port on loopback where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A self-signed certificate and its key.
pub struct TestCert {
    pub der: rustls::pki_types::CertificateDer<'static>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCert {
    /// A server's TLS configuration presenting this certificate (no ALPN, no client auth).
    pub fn server_config(&self) -> rustls::ServerConfig {
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![self.der.clone()], self.key.clone_key())
        .unwrap()
    }

    /// Self-signed for `localhost` and 127.0.0.1, expiring in `days` days (negative: expired).
    pub fn self_signed(days: i64) -> TestCert {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let at = |secs: i64| epoch + Duration::from_secs(secs as u64);
        let start = if days < 0 { days - 365 } else { -1 };
        params.not_before = at(today + start * 86_400);
        params.not_after = at(today + days * 86_400 + 3_600);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCert {
            der: cert.der().clone(),
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

/// Reads a request head (and discards any body announced by content-length).
async fn read_head<S: AsyncRead + Unpin>(sock: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body).await.ok()?;
    Some(head)
}

async fn respond<S: AsyncWrite + Unpin>(sock: &mut S, status: &str, extra: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body).await;
    let _ = sock.flush().await;
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, counts: Arc<Counts>) {
    let Some(head) = read_head(&mut sock).await else {
        return;
    };
    counts
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    route(&mut sock, &head).await;
    counts
        .responses
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

async fn route<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, head: &str) {
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let arg = |i: usize| {
        parts
            .get(i)
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
    };
    match parts[0] {
        "ok" => respond(&mut sock, "200 OK", "", b"ok").await,
        "delay" => {
            tokio::time::sleep(Duration::from_millis(arg(1))).await;
            respond(&mut sock, "200 OK", "", b"slow but ok").await;
        }
        "drip" => {
            let chunk = b"0123456789";
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\n";
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.flush().await;
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(arg(1) / 10)).await;
                let _ = sock.write_all(chunk).await;
                let _ = sock.flush().await;
            }
        }
        "status" => {
            let code = arg(1);
            respond(&mut sock, &format!("{code} Whatever"), "", b"status body").await;
        }
        "endless" => {
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            let _ = sock.write_all(head.as_bytes()).await;
            let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
            // Until the prober hangs up (bounded: it stops reading at its limit).
            for _ in 0..100_000 {
                if sock.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        "redirect" => {
            let n = arg(1);
            if n == 0 {
                respond(&mut sock, "200 OK", "", b"arrived").await;
            } else {
                let loc = format!("location: /redirect/{}\r\n", n - 1);
                respond(&mut sock, "302 Found", &loc, b"").await;
            }
        }
        "loop" => respond(&mut sock, "302 Found", "location: /loop\r\n", b"").await,
        "echo" => respond(&mut sock, "200 OK", "", head.as_bytes()).await,
        "json" => {
            let body = br#"{"status":"ok","version":"v1.4.2","items":[{"id":1},{"id":2}]}"#;
            respond(
                &mut sock,
                "200 OK",
                "content-type: application/json\r\nx-served-by: fake-target\r\n",
                body,
            )
            .await;
        }
        "hang" => tokio::time::sleep(Duration::from_secs(3600)).await,
        // A NUL byte in a text body, and `\u0000` in a JSON string.
        "nul" => respond(&mut sock, "200 OK", "", b"before\0after").await,
        "nuljson" => {
            let body = br#"{"status":"bad\u0000","k\u0000":"v"}"#;
            respond(
                &mut sock,
                "200 OK",
                "content-type: application/json\r\n",
                body,
            )
            .await;
        }
        _ => respond(&mut sock, "404 Not Found", "", b"no such route").await,
    }
}

/// Loads the probes of a YAML text, panicking with the diagnostics if any is an error.
pub fn probes(yaml: &str) -> Vec<Probe> {
    let mut report = LoadReport::default();
    load_text(Path::new("test.yaml"), yaml, &mut report);
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    assert!(
        errors.is_empty(),
        "probe definition has errors: {errors:#?}"
    );
    report.probes
}

/// The one probe of a YAML text.
pub fn probe(yaml: &str) -> Probe {
    let mut p = probes(yaml);
    assert_eq!(p.len(), 1);
    p.remove(0)
}

/// A minimal probe of `url` with extra YAML lines under `http:` and at the top level.
pub fn http_probe(url: &str, http_extra: &str, top_extra: &str) -> Probe {
    let http_extra = http_extra
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect::<String>();
    probe(&format!(
        "name: test\nevery: 10s\ntimeout: 3s\n{top_extra}\nhttp:\n  url: {url}\n{http_extra}"
    ))
}

/// The prober CLI with `args`, run in `dir`.
pub fn cli_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prober-cli"));
    cmd.current_dir(dir).args(args);
    cmd
}

/// Runs the prober CLI with `args` in `dir`, with extra environment variables.
pub fn cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = cli_command(dir, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A TCP proxy on loopback that the test can cut (dropping every connection
/// and refusing new ones) and restore: a network outage on command.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    /// While true, what the server sends is kept, not forwarded.
    held: tokio::sync::watch::Sender<bool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let held = tokio::sync::watch::Sender::new(false);
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let (u, c, h) = (up.clone(), conns.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !u.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let held = h.subscribe();
                let task = tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(target).await {
                        let (mut cr, mut cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let up = async move {
                            let mut sw = sw;
                            let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        };
                        let down = async move {
                            let (mut sr, mut held) = (sr, held);
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let Ok(n) = sr.read(&mut buf).await else {
                                    return;
                                };
                                if n == 0 {
                                    return;
                                }
                                // Withheld until released (the bytes are kept, in order).
                                if held.wait_for(|h| !*h).await.is_err() {
                                    return;
                                }
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        };
                        tokio::join!(up, down);
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            up,
            held,
            conns,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keeps every reply of the server (on open and new connections) from
    /// the client until [`Proxy::release`]: a hung Postgres, to the client.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Delivers the replies kept since [`Proxy::hold`], and the later ones.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
}

/// GET `path` from `addr` over plain HTTP/1.1; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path).await
}

/// Sends `method path` (no body) to `addr` over plain HTTP/1.1; returns the status code and body.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_request_as(addr, method, path, None).await
}

/// The admin token of the tests' daemons that call write endpoints (`Settings::api_token`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// [`ADMIN_TOKEN`] as the settings hold it.
pub fn admin_token() -> Option<prober::config::settings::ApiToken> {
    Some(prober::config::settings::ApiToken(ADMIN_TOKEN.into()))
}

/// [`http_request`] with `Authorization: Bearer <token>` when a token is given.
pub async fn http_request_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    http_send(addr, method, path, token, None).await
}

/// [`http_request_as`] with a JSON body (`content-type: application/json`) when one is given.
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let (kind, body) = json.map_or((String::new(), ""), |b| {
        ("content-type: application/json\r\n".to_string(), b)
    });
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}{kind}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// An HTTP target whose status code the test sets (200 at first); every
/// answer closes the connection.
pub async fn switchable_target() -> (String, std::sync::Arc<std::sync::atomic::AtomicU16>) {
    use std::sync::atomic::{AtomicU16, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let status = std::sync::Arc::new(AtomicU16::new(200));
    let s = status.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let code = s.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf).await;
                let msg =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = sock.write_all(msg.as_bytes()).await;
            });
        }
    });
    (url, status)
}

/// `n` probe files in `dir/probes`, `p000` … each every second against
/// `url`; returns the directory.
pub fn probe_files(dir: &Path, n: usize, url: &str) -> std::path::PathBuf {
    let probes = dir.join("probes");
    std::fs::create_dir_all(&probes).unwrap();
    for i in 0..n {
        std::fs::write(
            probes.join(format!("p{i:03}.yaml")),
            format!("name: p{i:03}\nevery: 1s\nhttp: {{url: \"{url}\"}}\n"),
        )
        .unwrap();
    }
    probes
}

/// A real server from Debian's packages (Prometheus, Alertmanager) on a
/// loopback port, with a directory of its own; killed when dropped.
pub struct RealServer {
    child: std::process::Child,
    pub addr: SocketAddr,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealServer {
    /// Starts the first of `bins` that is installed with the arguments `args`
    /// gives for its address and directory (after `config`, written there as
    /// the file `config_name`), and waits until `ready` answers 200. `None`
    /// when none is installed.
    pub async fn start(
        bins: &[&str],
        config_name: &str,
        config: &str,
        ready: &str,
        args: impl FnOnce(SocketAddr, &std::path::Path, &std::path::Path) -> Vec<String>,
    ) -> Option<RealServer> {
        let bin = (bins.iter()).find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join(config_name);
        std::fs::write(&config_path, config).unwrap();
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let child = std::process::Command::new(bin)
            .args(args(addr, &config_path, dir.path()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = RealServer {
            child,
            addr,
            url: format!("http://{addr}"),
            _dir: dir,
        };
        for _ in 0..150 {
            let listening = tokio::net::TcpStream::connect(addr).await.is_ok();
            if listening && http_get(addr, ready).await.0 == 200 {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{bin} did not become ready on {addr}");
    }
}

/// Child processes, thawed and killed when the test ends, passed or not.
pub struct Children(pub Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            signal("CONT", c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends signal `name` (`KILL`, `STOP`, `CONT`, `INT`) to `pid`.
pub fn signal(name: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
    assert!(status.is_ok(), "kill -{name} {pid}");
}

/// Settings of an in-process daemon for the store's tests: location
/// `test-lab`, any port, quick flushes, a 5 s shutdown grace.
pub fn daemon_settings(database_url: String) -> prober::config::settings::Settings {
    prober::config::settings::Settings {
        database_url,
        location: "test-lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    }
}

/// One HTTP/1.1 request read off `sock`: its head (request line and headers)
/// and its body (by `content-length`); `None` when the peer goes away first.
pub async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = (head.lines())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some((head, buf[head_end..head_end + len].to_vec()))
}

/// The probe example of probes/README.md named `name`: its ```yaml block, as shown.
pub fn probes_readme_example(name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../probes/README.md"))
        .unwrap();
    let first = format!("name: {name}");
    doc.split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.starts_with(&first))
        .unwrap_or_else(|| panic!("no example named {name} in probes/README.md"))
        .to_string()
}
