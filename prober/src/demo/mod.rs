//! `prober demo`: targets on loopback that every shipped example of `probes/`
//! probes, so a first run is green, and a switch that turns one probe red.
//!
//! | port | what | file |
//! |---|---|---|
//! | 9681 | HTTP: a small shop and its API, and the `/control/…` switches | `shop.rs` |
//! | 9682 | HTTPS: the shop's edge, with a self-signed certificate made at start | `shop.rs`, `cert.rs` |
//! | 9683 | TCP: a mail-relay-like banner (`220 prober demo ready`) | `banner.rs` |
//! | 9684 | DNS over UDP and TCP: the zone `shop.demo.` | `dns.rs` |
//! | 9685 | gRPC: `grpc.health.v1.Health`, `orders.v1.Orders` SERVING | `grpc.rs` |
//!
//! Everything is bounded: connections per listener, request heads and bodies,
//! the order and token maps, DNS message sizes, idle connections.
//! [`start`] binds every port before it serves any, so a port in use fails the
//! whole start with an error that names it; the [`DemoHandle`] stops the
//! targets when dropped.

mod banner;
mod cert;
pub mod dns;
mod grpc;
mod pages;
mod shop;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The default address the demo targets listen on.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The shop over HTTP; `/control/fail` turns its home page red.
pub const HTTP_PORT: u16 = 9681;
/// The shop's edge over HTTPS (self-signed).
pub const TLS_PORT: u16 = 9682;
/// The TCP banner.
pub const TCP_PORT: u16 = 9683;
/// DNS, UDP and TCP.
pub const DNS_PORT: u16 = 9684;
/// gRPC health.
pub const GRPC_PORT: u16 = 9685;

/// The flag and environment variable that move the demo targets, for messages.
pub const BIND_FLAG: &str = "--demo-bind / PROBER_DEMO_BIND";

/// Most connections served at once per TCP listener; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// An idle connection (or a slow TLS handshake) is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `/control/slow?ms=` accepted.
pub const MAX_SLOW: Duration = Duration::from_secs(30);

/// Where each target listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoAddrs {
    pub http: SocketAddr,
    pub tls: SocketAddr,
    pub tcp: SocketAddr,
    /// UDP and TCP on the same port.
    pub dns: SocketAddr,
    pub grpc: SocketAddr,
}

/// Accepts connections on `listener` until `stop`, at most [`MAX_CONNECTIONS`]
/// at once, each served by `serve` in `tasks` and dropped when `stop` fires.
/// A failed accept (out of descriptors, say) is logged and retried after a pause.
pub(crate) async fn accept_each<F, Fut>(
    listener: TcpListener,
    stop: CancellationToken,
    tasks: TaskTracker,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let sock = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    tracing::warn!(error = %e, "demo: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (conn, stop) = (serve(sock), stop.clone());
        tasks.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

/// The `/control/…` switches, shared by the shop and the handle.
#[derive(Debug, Default)]
pub(crate) struct Switches {
    failing: AtomicBool,
    slow_ms: AtomicU64,
}

impl Switches {
    pub(crate) fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
        if on {
            self.slow_ms.store(0, Ordering::SeqCst);
        }
    }

    pub(crate) fn set_slow(&self, delay: Duration) {
        let ms = delay.min(MAX_SLOW).as_millis();
        self.slow_ms
            .store(u64::try_from(ms).unwrap_or(0), Ordering::SeqCst);
        self.failing.store(false, Ordering::SeqCst);
    }

    pub(crate) fn heal(&self) {
        self.failing.store(false, Ordering::SeqCst);
        self.slow_ms.store(0, Ordering::SeqCst);
    }

    pub(crate) fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    pub(crate) fn slow(&self) -> Duration {
        Duration::from_millis(self.slow_ms.load(Ordering::SeqCst))
    }
}

/// The running demo targets. Dropping it stops them (their tasks end soon
/// after); [`DemoHandle::shutdown`] waits until the ports are free.
pub struct DemoHandle {
    pub addrs: DemoAddrs,
    switches: Arc<Switches>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl DemoHandle {
    /// The fail switch, as `/control/fail` (true) and `/control/ok` (false) set it:
    /// the shop's home page answers 503 while it is on.
    pub fn switch_fail(&self, on: bool) {
        if on {
            self.switches.set_failing(true);
        } else {
            self.switches.heal();
        }
    }

    /// The slow switch, as `/control/slow?ms=` sets it (capped at [`MAX_SLOW`]; zero heals).
    pub fn switch_slow(&self, delay: Duration) {
        self.switches.set_slow(delay);
    }

    /// Stops every target and waits (up to 5 s) until their tasks have ended
    /// and the ports are released.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }

    /// One line for a log: where the targets listen and how to make one fail.
    pub fn describe(&self) -> String {
        let a = &self.addrs;
        format!(
            "demo targets: shop http://{} (HTTPS {}), banner tcp {}, dns {} (udp+tcp, zone shop.demo.), grpc health {}; \
             make the home page fail with `curl -X POST {}/control/fail` (heal: /control/ok)",
            a.http,
            a.tls,
            a.tcp,
            a.dns,
            a.grpc,
            curl_host(a.http)
        )
    }
}

impl Drop for DemoHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `localhost:9681` for a loopback or wildcard address, else the address itself.
fn curl_host(addr: SocketAddr) -> String {
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Starts every demo target on `bind` at the fixed ports (9681–9685).
///
/// Fails, serving nothing, if any port cannot be bound; the message names the
/// port and how to move the targets.
pub async fn start(bind: IpAddr) -> Result<DemoHandle, DemoError> {
    let http = bind_tcp(bind, HTTP_PORT, "HTTP shop").await?;
    let tls = bind_tcp(bind, TLS_PORT, "HTTPS edge").await?;
    let tcp = bind_tcp(bind, TCP_PORT, "TCP banner").await?;
    let dns_udp = UdpSocket::bind((bind, DNS_PORT))
        .await
        .map_err(|e| bind_error(bind, DNS_PORT, "DNS (UDP)", e))?;
    let dns_tcp = bind_tcp(bind, DNS_PORT, "DNS (TCP)").await?;
    let grpc = bind_tcp(bind, GRPC_PORT, "gRPC health").await?;
    let addrs = DemoAddrs {
        http: local(&http)?,
        tls: local(&tls)?,
        tcp: local(&tcp)?,
        dns: local(&dns_tcp)?,
        grpc: local(&grpc)?,
    };
    let acceptor = cert::acceptor()?;

    let switches = Arc::new(Switches::default());
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let shop = shop::Shop::new(switches.clone());
    tasks.spawn(shop::serve(
        http,
        shop.router(),
        None,
        stop.clone(),
        tasks.clone(),
    ));
    tasks.spawn(shop::serve(
        tls,
        shop::edge_router(),
        Some(acceptor),
        stop.clone(),
        tasks.clone(),
    ));
    tasks.spawn(banner::serve(tcp, stop.clone(), tasks.clone()));
    let answer: dns::Answer = Arc::new(dns::answer_demo_zone);
    tasks.spawn(dns::serve_udp(dns_udp, answer.clone(), stop.clone()));
    tasks.spawn(dns::serve_tcp(dns_tcp, answer, stop.clone(), tasks.clone()));
    tasks.spawn(grpc::serve(grpc, stop.clone()));
    Ok(DemoHandle {
        addrs,
        switches,
        stop,
        tasks,
    })
}

/// Why the demo targets could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A port could not be bound: which, why, and what to do.
    #[error("cannot listen on {addr} for the demo {what} target: {source}; {}", bind_advice(*.addr, .source))]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot read a demo listener's address: {0}")]
    Address(#[source] std::io::Error),
    #[error("cannot make the demo's TLS certificate: {0}")]
    Certificate(#[source] Box<dyn std::error::Error + Send + Sync>),
}

async fn bind_tcp(ip: IpAddr, port: u16, what: &'static str) -> Result<TcpListener, DemoError> {
    TcpListener::bind((ip, port))
        .await
        .map_err(|e| bind_error(ip, port, what, e))
}

fn local(l: &TcpListener) -> Result<SocketAddr, DemoError> {
    l.local_addr().map_err(DemoError::Address)
}

fn bind_error(ip: IpAddr, port: u16, what: &'static str, source: std::io::Error) -> DemoError {
    DemoError::Bind {
        addr: SocketAddr::new(ip, port),
        what,
        source,
    }
}

/// What to do when `addr` could not be bound because of `e`.
fn bind_advice(addr: SocketAddr, e: &std::io::Error) -> String {
    let (ip, port) = (addr.ip(), addr.port());
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another program (another `prober demo`, or `docker compose up`, which publishes it) holds port {port}: \
             stop it (`ss -ltnp 'sport = :{port}'` shows which), or move the demo targets to another address with \
             {BIND_FLAG} (e.g. 127.0.0.2; the shipped probes/ expect 127.0.0.1)"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{ip} is not an address of this machine: choose one with {BIND_FLAG} (default {DEFAULT_BIND})"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("not allowed to listen on {addr}: choose another address with {BIND_FLAG}")
        }
        _ => format!("choose another address with {BIND_FLAG}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_named_with_the_flag_that_moves_the_targets() {
        let e = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let msg = bind_error(DEFAULT_BIND, HTTP_PORT, "HTTP shop", e).to_string();
        assert!(msg.starts_with("cannot listen on 127.0.0.1:9681 for the demo HTTP shop target"));
        assert!(msg.contains("holds port 9681"), "{msg}");
        assert!(msg.contains("--demo-bind / PROBER_DEMO_BIND"), "{msg}");
    }

    #[test]
    fn the_slow_switch_is_capped_and_the_fail_switch_clears_it() {
        let s = Switches::default();
        s.set_slow(Duration::from_secs(3600));
        assert_eq!(s.slow(), MAX_SLOW);
        s.set_failing(true);
        assert!(s.failing());
        assert_eq!(s.slow(), Duration::ZERO);
        s.heal();
        assert!(!s.failing());
    }
}
