//! The ICMP check ("ping"): `count` echo requests `interval` apart, each
//! reply's round trip timed, then `wait` for the last one. Unprivileged
//! datagram ICMP sockets where the kernel allows them
//! (`net.ipv4.ping_group_range`), raw sockets (`CAP_NET_RAW`) otherwise.
//!
//! Phases: dns (the lookup; none for an IP address), first byte (the
//! average round trip of the replies), and a total of the two: the latency a
//! ping measures, not the run's wall time (which is mostly `interval`s). The
//! run's `info` has `icmp.sent`, `icmp.received`, `icmp.loss_percent` and the
//! round trips' `icmp.rtt_min_ms`, `icmp.rtt_avg_ms`, `icmp.rtt_max_ms`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::net::{self, fail, micros};
use super::{Kind, Progress, Stage};
use crate::config::probe::IcmpCheck;
use crate::run::{AssertionResult, ErrorClass, ProbeError};

/// Bytes of payload after the 8-byte header (ping's default).
const PAYLOAD_BYTES: usize = 56;

/// The `icmp` kind.
pub struct IcmpKind<'a> {
    check: &'a IcmpCheck,
    timeout: Duration,
}

impl<'a> IcmpKind<'a> {
    pub fn new(check: &'a IcmpCheck, timeout: Duration) -> IcmpKind<'a> {
        IcmpKind { check, timeout }
    }
}

/// An ICMP socket for `ip`'s family: datagram if allowed, else raw; and whether it is raw.
fn open(ip: &IpAddr) -> Result<(UdpSocket, bool), ProbeError> {
    let (domain, proto) = match ip {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let (socket, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => (s, false),
        Err(dgram) => match Socket::new(domain, Type::RAW, Some(proto)) {
            Ok(s) => (s, true),
            Err(raw) => {
                return Err(fail(
                    ErrorClass::Config,
                    format!(
                        "cannot open an ICMP socket: the kernel refuses unprivileged ICMP ({dgram}; `sysctl net.ipv4.ping_group_range` must include the prober's group) and raw sockets ({raw}; they need CAP_NET_RAW). Allow one: widen ping_group_range, or grant the prober CAP_NET_RAW"
                    ),
                ))
            }
        },
    };
    let io = |e: std::io::Error| {
        fail(
            ErrorClass::Config,
            format!("cannot set up the ICMP socket: {e}"),
        )
    };
    socket.set_nonblocking(true).map_err(io)?;
    let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket)).map_err(io)?;
    Ok((socket, raw))
}

/// RFC 1071's checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request: type, code, checksum, identifier, sequence, payload.
fn request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut pkt = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend((0..PAYLOAD_BYTES).map(|i| i as u8));
    // ICMPv6's checksum covers a pseudo-header: the kernel fills it in.
    if !v6 {
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    pkt
}

/// The sequence number of an echo reply in `buf`, if it is one of ours.
/// A raw IPv4 socket hands over the IP header too; a datagram socket's
/// identifier is the kernel's, and only its own replies reach it.
fn reply_seq(buf: &[u8], v6: bool, raw: bool, id: u16) -> Option<u16> {
    let icmp = if raw && !v6 {
        let ihl = usize::from(buf.first()? & 0x0f) * 4;
        buf.get(ihl..)?
    } else {
        buf
    };
    let reply_type = if v6 { 129 } else { 0 };
    if icmp.len() < 8 || icmp[0] != reply_type || icmp[1] != 0 {
        return None;
    }
    if raw && u16::from_be_bytes([icmp[4], icmp[5]]) != id {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

impl Kind for IcmpKind<'_> {
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
        let c = self.check;
        p.request = format!("icmp echo {} x{}", c.host, c.count);
        p.target = c.host.clone();
        let addrs = net::resolve_timed(&c.host, 0, "icmp.host", p).await?;
        let Some(addr) = addrs.iter().find(|a| c.ip_version.admits(&a.ip())) else {
            return Err(fail(
                ErrorClass::Dns,
                format!("{} has no address of the family `icmp.ip_version` asks for; add the record or set `ip_version: any`", c.host),
            ));
        };
        let ip = addr.ip();
        p.remote_addr = Some(SocketAddr::new(ip, 0));
        let (socket, raw) = open(&ip)?;
        let v6 = ip.is_ipv6();
        let id = rand::random::<u16>();
        let to = SocketAddr::new(ip, 0);
        p.enter(Stage::FirstByte);
        let start = Instant::now();
        let count = c.count as usize;
        let mut sent: Vec<Option<Instant>> = vec![None; count];
        let mut rtt: Vec<Option<Duration>> = vec![None; count];
        let mut next = 0usize;
        let mut buf = [0u8; 2048];
        loop {
            let now = Instant::now();
            if next < count && now >= start + c.interval * next as u32 {
                let pkt = request(v6, id, next as u16);
                socket.send_to(&pkt, to).await.map_err(|e| {
                    fail(
                        ErrorClass::Connect,
                        format!(
                            "could not send an echo request to {ip}: {e}; is there a route to it?"
                        ),
                    )
                })?;
                sent[next] = Some(Instant::now());
                next += 1;
                continue;
            }
            let all_in = next == count && rtt.iter().all(Option::is_some);
            let last_sent = sent.iter().rev().flatten().next().copied().unwrap_or(start);
            if all_in || (next == count && now >= last_sent + c.wait) {
                break;
            }
            let wake = if next < count {
                start + c.interval * next as u32
            } else {
                last_sent + c.wait
            };
            tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    if from.ip() != ip {
                        continue;
                    }
                    if let Some(seq) = reply_seq(&buf[..n], v6, raw, id) {
                        let i = usize::from(seq);
                        if let (Some(Some(at)), Some(slot @ None)) = (sent.get(i), rtt.get_mut(i)) {
                            *slot = Some(at.elapsed());
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        conclude_pings(c, p, &rtt, raw)
    }

    fn timed_out(&self, p: &Progress) -> ProbeError {
        fail(
            ErrorClass::Timeout,
            format!(
                "the echo requests to {} did not finish within the timeout of {} (still {}); raise `timeout`, or send fewer requests",
                self.check.host,
                humantime::format_duration(self.timeout),
                p.stage().describe()
            ),
        )
    }
}

/// The run's figures from the round trips, and its verdict.
fn conclude_pings(
    c: &IcmpCheck,
    p: &mut Progress,
    rtt: &[Option<Duration>],
    raw: bool,
) -> Result<(), ProbeError> {
    let got: Vec<Duration> = rtt.iter().flatten().copied().collect();
    let sent = rtt.len();
    let loss = (sent - got.len()) * 100 / sent.max(1);
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
    p.info.insert("icmp.sent".into(), sent.to_string());
    p.info.insert("icmp.received".into(), got.len().to_string());
    p.info.insert("icmp.loss_percent".into(), loss.to_string());
    p.info.insert(
        "icmp.socket".into(),
        if raw { "raw" } else { "datagram" }.into(),
    );
    if let (Some(min), Some(max)) = (got.iter().min(), got.iter().max()) {
        let avg = got.iter().sum::<Duration>() / got.len() as u32;
        p.info.insert("icmp.rtt_min_ms".into(), ms(*min));
        p.info.insert("icmp.rtt_avg_ms".into(), ms(avg));
        p.info.insert("icmp.rtt_max_ms".into(), ms(*max));
        p.hop.first_byte_us = Some(micros(avg));
        let dns = Duration::from_micros(p.hop.dns_us.unwrap_or(0));
        p.set_total(dns + avg);
    }
    let passed = loss <= usize::from(c.max_loss_percent);
    p.assertions.push(AssertionResult {
        check: "packet loss".into(),
        passed,
        expected: format!("<= {}%", c.max_loss_percent),
        actual: format!("{loss}% ({} of {sent} replies)", got.len()),
    });
    match (got.is_empty(), passed) {
        (true, _) => Err(fail(
            ErrorClass::Timeout,
            format!(
                "no echo reply from {} to {sent} request(s) within {} of the last; the host is down, or ICMP is filtered on the way",
                c.host,
                humantime::format_duration(c.wait)
            ),
        )),
        (false, false) => Err(fail(
            ErrorClass::Assertion,
            format!("packet loss: expected <= {}%, got {loss}% ({} of {sent} replies)", c.max_loss_percent, got.len()),
        )),
        (false, true) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_carries_a_valid_checksum_and_a_reply_is_matched() {
        let pkt = request(false, 0x1234, 7);
        assert_eq!(checksum(&pkt), 0, "a packet with its checksum sums to zero");
        let mut reply = pkt.clone();
        reply[0] = 0;
        assert_eq!(reply_seq(&reply, false, false, 0), Some(7));
        assert_eq!(reply_seq(&reply, false, true, 0x1234), Some(7));
        assert_eq!(
            reply_seq(&reply, false, true, 0x9999),
            None,
            "another process's"
        );
        assert_eq!(
            reply_seq(&pkt, false, false, 0),
            None,
            "a request is not a reply"
        );
        let mut with_ip = vec![0x45u8; 1];
        with_ip.extend([0u8; 19]);
        with_ip.extend(&reply);
        assert_eq!(reply_seq(&with_ip, false, true, 0x1234), Some(7));
    }
}
