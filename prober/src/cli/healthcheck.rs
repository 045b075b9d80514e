//! `prober healthcheck`: asks the local daemon's `/healthz` whether it is alive,
//! for container health checks (Docker's HEALTHCHECK) that have no curl.
//! Exit 0 when it answers 200 within the timeout, 1 otherwise (with why on stderr).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::settings::{Settings, SettingsArgs};

use super::EXIT_FAILED;

/// The status line of a response is all we read; more is never needed.
const MAX_HEAD: u64 = 1024;

/// Resolves the daemon's listen address the way `prober run` does, then checks it.
pub fn run(args: &SettingsArgs, timeout: Duration) -> ExitCode {
    let settings = match Settings::resolve(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("unhealthy: cannot read the settings to find the daemon's address: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let addr = local_addr(settings.listen);
    match check(addr, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Where to reach a daemon listening on `listen` from this host: a wildcard
/// address (0.0.0.0, ::) is reached on loopback.
pub fn local_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GET `/healthz` on `addr`; `Ok` when the answer is 200, within `timeout` for
/// each of connect, write and read.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        format!("cannot connect to {addr}: {e}; is `prober run` up, and is its listen address (--listen, PROBER_LISTEN, prober.yaml) the one this command resolves?")
    })?;
    let io = |e: std::io::Error| format!("GET http://{addr}/healthz failed: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request =
        format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\nuser-agent: prober-healthcheck\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut head = Vec::new();
    let mut limited = (&mut stream).take(MAX_HEAD);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = limited.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(format!("GET http://{addr}/healthz answered {code}, not 200")),
        None => Err(format!(
            "GET http://{addr}/healthz: no HTTP answer (got {status_line:?}); is something else listening there?"
        )),
    }
}
