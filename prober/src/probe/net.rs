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

/// RFC 8305's "Connection Attempt Delay": the next address is tried this long
/// after the previous attempt started, if that one has not answered yet.
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The addresses in the order Happy Eyeballs tries them: the families
/// interleaved, starting with the resolver's first choice.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (a, b): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(addrs.len());
    for i in 0..a.len().max(b.len()) {
        out.extend(a.get(i));
        out.extend(b.get(i));
    }
    out
}

/// Connects to `addrs` as Happy Eyeballs (RFC 8305) does: the families
/// interleaved, a new attempt started when the last one fails or after
/// [`ATTEMPT_DELAY`], the first to connect kept and the others dropped.
/// `tried` is set to each address started, and to the one that answered.
/// `what` says what the connection was for (a URL, a gRPC target), for the message.
pub async fn connect(
    addrs: &[SocketAddr],
    what: &str,
    tried: &mut Option<SocketAddr>,
) -> Result<TcpStream, ProbeError> {
    connect_from(addrs, None, what, tried).await
}

/// One connection attempt, from `source` when given (port chosen by the kernel).
async fn attempt(addr: SocketAddr, source: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0)).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot use the source address {ip} ({e}); is it an address of this host?"),
        )
    })?;
    socket.connect(addr).await
}

/// [`connect`], from `source` when given: only addresses of its family are tried.
pub async fn connect_from(
    addrs: &[SocketAddr],
    source: Option<std::net::IpAddr>,
    what: &str,
    tried: &mut Option<SocketAddr>,
) -> Result<TcpStream, ProbeError> {
    let same_family: Vec<SocketAddr> = (addrs.iter())
        .filter(|a| source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
        .copied()
        .collect();
    if same_family.is_empty() && !addrs.is_empty() {
        return Err(fail(
            ErrorClass::Connect,
            format!("{what} has no address of the source address's family ({}); pick a source of the target's family", source.map(|s| s.to_string()).unwrap_or_default()),
        ));
    }
    let mut pending = interleave(&same_family).into_iter();
    let mut racing = tokio::task::JoinSet::new();
    let mut start = |racing: &mut tokio::task::JoinSet<_>, tried: &mut Option<SocketAddr>| {
        let addr = pending.next()?;
        *tried = Some(addr);
        racing.spawn(async move { (addr, attempt(addr, source).await) });
        Some(())
    };
    let mut more = start(&mut racing, tried).is_some();
    let mut last_err = None;
    while !racing.is_empty() {
        tokio::select! {
            done = racing.join_next() => match done {
                Some(Ok((addr, Ok(s)))) => {
                    *tried = Some(addr);
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Some(Ok((addr, Err(e)))) => {
                    last_err = Some((addr, e));
                    more = more && start(&mut racing, tried).is_some();
                }
                // An attempt's task cannot panic; if it did, the others go on.
                Some(Err(_)) | None => {}
            },
            () = tokio::time::sleep(ATTEMPT_DELAY), if more => {
                more = start(&mut racing, tried).is_some();
            }
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
    connect_timed_from(addrs, None, what, p).await
}

/// [`connect_timed`] from a source address.
pub async fn connect_timed_from(
    addrs: &[SocketAddr],
    source: Option<std::net::IpAddr>,
    what: &str,
    p: &mut Progress,
) -> Result<TcpStream, ProbeError> {
    p.enter(Stage::Connect);
    let result = connect_from(addrs, source, what, &mut p.remote_addr).await;
    p.hop.connect_us = Some(p.stage_us());
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    #[test]
    fn the_families_are_interleaved_from_the_resolver_s_first_choice() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
        let got = interleave(&[
            a("[::1]:1"),
            a("[::2]:1"),
            a("10.0.0.1:1"),
            a("10.0.0.2:1"),
            a("10.0.0.3:1"),
        ]);
        let want = [
            a("[::1]:1"),
            a("10.0.0.1:1"),
            a("[::2]:1"),
            a("10.0.0.2:1"),
            a("10.0.0.3:1"),
        ];
        assert_eq!(got, want);
        assert_eq!(
            interleave(&[a("10.0.0.1:1"), a("[::1]:1")]),
            [a("10.0.0.1:1"), a("[::1]:1")]
        );
    }

    /// A listener that never accepts, its queue full: a new connection's SYN
    /// goes unanswered, as from a host that dropped off the network.
    async fn silent() -> Option<(tokio::net::TcpListener, Vec<TcpStream>, SocketAddr)> {
        let sock = tokio::net::TcpSocket::new_v4().ok()?;
        sock.bind(SocketAddr::from(([127, 0, 0, 1], 0))).ok()?;
        let listener = sock.listen(1).ok()?;
        let addr = listener.local_addr().ok()?;
        let mut held = Vec::new();
        for _ in 0..8 {
            if let Ok(Ok(s)) = timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
                held.push(s);
            }
        }
        let hangs = timeout(Duration::from_millis(300), TcpStream::connect(addr))
            .await
            .is_err();
        hangs.then_some((listener, held, addr))
    }

    #[tokio::test]
    async fn a_silent_address_does_not_hold_up_the_next() {
        let Some((_listener, _held, silent)) = silent().await else {
            eprintln!("skipped: this kernel answers connections to a full queue");
            return;
        };
        let good = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let good = good.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut tried = None;
        // Tried one after the other, the silent address would hold the run until its timeout.
        let s = timeout(
            Duration::from_secs(5),
            connect(&[silent, good], "test", &mut tried),
        )
        .await
        .expect("the second address was tried while the first stayed silent")
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.peer_addr().ok(), Some(good));
        assert_eq!(tried, Some(good), "the address that answered is the run's");
    }
}
