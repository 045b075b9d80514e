//! Connections through a proxy: HTTP CONNECT or SOCKS5, by hyper-util's
//! connectors (`Tunnel`, `SocksV5`) over our own timed TCP connection to the
//! proxy. Which hosts skip it follows curl's `NO_PROXY` rules (hyper-util's
//! `Matcher`). The proxy's lookup is the run's `dns` phase; the connection to
//! it and the tunnel's handshake are its `connect` phase.

use std::future::{poll_fn, Ready};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;
use url::Url;

use crate::config::probe::Proxy;
use crate::probe::net::{self, fail};
use crate::probe::Progress;
use crate::run::{ErrorClass, ProbeError};

/// A connector that hands over the one connection it was given: the proxy's,
/// already made and timed by us.
struct Given(Option<TokioIo<TcpStream>>);

impl Service<Uri> for Given {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(
            (self.0.take()).ok_or_else(|| std::io::Error::other("the proxy connection was used")),
        )
    }
}

/// Calls a connector service once, as the Service contract asks (ready first).
async fn call<S: Service<Uri>>(mut svc: S, dst: Uri) -> Result<S::Response, S::Error> {
    poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(dst).await
}

/// A connection to `host:port` of `url` through `proxy`, or `None` when the
/// proxy's rules send it direct.
pub async fn through(
    proxy: &Proxy,
    url: &Url,
    host: &str,
    port: u16,
    p: &mut Progress,
) -> Result<Option<TcpStream>, ProbeError> {
    let matcher = match proxy {
        Proxy::Direct => return Ok(None),
        Proxy::Env => Matcher::from_env(),
        Proxy::Url { url, no_proxy } => Matcher::builder()
            .all(url.to_string())
            .no(no_proxy.clone())
            .build(),
    };
    let dst: Uri = format!("{}://{host}:{port}", url.scheme())
        .parse()
        .map_err(|e| fail(ErrorClass::Config, format!("{url}: {e}")))?;
    let Some(intercept) = matcher.intercept(&dst) else {
        return Ok(None);
    };
    let proxy_uri = intercept.uri().clone();
    let scheme = proxy_uri.scheme_str().unwrap_or("http").to_string();
    let shown = match Url::parse(&proxy_uri.to_string()) {
        Ok(u) => Proxy::shown(&u),
        Err(_) => format!("{scheme}://{}", proxy_uri.host().unwrap_or("?")),
    };
    if !matches!(scheme.as_str(), "http" | "socks5" | "socks5h") {
        return Err(fail(
            ErrorClass::Config,
            format!("the proxy {shown} is not http://, socks5:// or socks5h://; the prober speaks HTTP CONNECT (to an http:// proxy) and SOCKS5"),
        ));
    }
    let proxy_host = proxy_uri.host().unwrap_or_default().to_string();
    let default_port = if scheme == "http" { 80 } else { 1080 };
    let proxy_port = proxy_uri.port_u16().unwrap_or(default_port);
    let addrs = net::resolve_timed(&proxy_host, proxy_port, "http.proxy", p).await?;
    let tcp = net::connect_timed(&addrs, &shown, p).await?;
    let given = Given(Some(TokioIo::new(tcp)));
    let tunneled = if scheme == "http" {
        let mut tunnel = Tunnel::new(proxy_uri, given);
        if let Some(auth) = intercept.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        call(tunnel, dst).await.map_err(|e| e.to_string())
    } else {
        let mut socks = SocksV5::new(proxy_uri, given).local_dns(scheme == "socks5");
        if let Some((user, pass)) = intercept.raw_auth() {
            socks = socks.with_auth(user.to_string(), pass.to_string());
        }
        call(socks, dst).await.map_err(|e| format!("{e:?}"))
    };
    // The connection to the proxy and its handshake: the connect phase.
    p.hop.connect_us = Some(p.stage_us());
    let io = tunneled.map_err(|e| {
        fail(
            ErrorClass::Connect,
            format!("the proxy {shown} did not open a connection to {host}:{port} ({e}); check the proxy's address and credentials, and that it allows this destination"),
        )
    })?;
    p.info.insert("proxy".into(), shown);
    Ok(Some(io.into_inner()))
}
