//! What every probe kind does first: resolve a host with the system resolver
//! and connect over TCP, with the error messages in one place. Each kind times
//! these steps into its own phases.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use super::progress::{Progress, Stage};
use crate::run::{ErrorClass, ProbeError};

/// Microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub fn fail(class: ErrorClass, message: impl Into<String>) -> ProbeError {
    ProbeError {
        class,
        message: message.into(),
    }
}

/// The addresses of `host`, and whether a lookup was needed (false for an IP address).
/// `field` names where the host was written, for the message.
pub async fn resolve(
    host: &str,
    port: u16,
    field: &str,
) -> Result<(Vec<SocketAddr>, bool), ProbeError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((vec![SocketAddr::new(ip, port)], false));
    }
    match tokio::net::lookup_host((bare, port)).await {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(fail(
                    ErrorClass::Dns,
                    format!("{host} resolved to no address; check its DNS records"),
                ))
            } else {
                Ok((addrs, true))
            }
        }
        Err(e) => Err(fail(
            ErrorClass::Dns,
            format!(
                "could not resolve {host} ({e}); check the host in {field} and its DNS records"
            ),
        )),
    }
}

/// Connects to the first of `addrs` that accepts; `tried` is set to each address tried.
/// `what` says what the connection was for (a URL, a gRPC target), for the message.
pub async fn connect(
    addrs: &[SocketAddr],
    what: &str,
    tried: &mut Option<SocketAddr>,
) -> Result<TcpStream, ProbeError> {
    let mut last_err = None;
    for addr in addrs {
        *tried = Some(*addr);
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last_err = Some((*addr, e)),
        }
    }
    let (addr, e) = last_err
        .map(|(a, e)| (a.to_string(), e))
        .unwrap_or_else(|| ("?".into(), std::io::Error::other("no address")));
    let hint = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "nothing is listening there; is the service up, and is the port right?"
        }
        _ => "check that the host is reachable from the prober (routes, firewalls)",
    };
    let target = if what == addr {
        addr
    } else {
        format!("{addr} for {what}")
    };
    Err(fail(
        ErrorClass::Connect,
        format!("could not connect to {target}: {e}; {hint}"),
    ))
}

/// Resolves `host` as a step of an attempt: the `dns` phase of the hop under
/// way (`None` for an IP address, which is not looked up).
pub async fn resolve_timed(
    host: &str,
    port: u16,
    field: &str,
    p: &mut Progress,
) -> Result<Vec<SocketAddr>, ProbeError> {
    p.enter(Stage::Dns);
    let result = resolve(host, port, field).await;
    let looked_up = !matches!(result, Ok((_, false)));
    p.hop.dns_us = looked_up.then(|| p.stage_us());
    result.map(|(addrs, _)| addrs)
}

/// Connects as a step of an attempt: the `connect` phase, and the address tried in `remote_addr`.
pub async fn connect_timed(
    addrs: &[SocketAddr],
    what: &str,
    p: &mut Progress,
) -> Result<TcpStream, ProbeError> {
    p.enter(Stage::Connect);
    let result = connect(addrs, what, &mut p.remote_addr).await;
    p.hop.connect_us = Some(p.stage_us());
    result
}
