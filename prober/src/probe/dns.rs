//! The DNS check: one query of `dns.name`/`dns.type`, sent by us to one server
//! over UDP (or TCP), and the response held to the probe's expectations.
//!
//! hickory-proto encodes the query and decodes the response; the sockets are
//! tokio's, so nothing is cached (every run really asks the server) and the
//! `dns` phase is exactly the query's round trip: the request written → the
//! response read. Over TCP the connection is set up first and timed as the
//! `connect` phase. The server is `dns.server`, or else the first usable
//! `nameserver` line of /etc/resolv.conf, read at every run.
//!
//! # How answers are compared
//!
//! Only the answer records of the asked type count (the CNAMEs that lead to
//! them do not), each as its record data in presentation form: `1.2.3.4`,
//! `2001:db8::1`, `10 mail.example.com.`, `0 issue "ca.example"`.
//! An expected answer matches when both sides agree after normalising:
//! - TXT and CAA: leading and trailing white space trimmed (and, for TXT, one
//!   pair of surrounding double quotes removed); otherwise exact, case included.
//! - Every other type: runs of white space are one space, case is ignored, a
//!   trailing dot on each word is dropped (`mail.example.com.` equals
//!   `mail.example.com`), and IP addresses compare as addresses
//!   (`2001:0db8::0001` equals `2001:db8::1`).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::net::fail;
use super::{Kind, Progress, Stage};
use crate::config::probe::DnsCheck;
use crate::run::{AssertionResult, ErrorClass, ProbeError};

/// The UDP payload size we advertise (EDNS), the size DNS flag day 2020 settled on.
const EDNS_PAYLOAD: u16 = 1232;

/// The response, decoded.
struct Answer {
    rcode: String,
    answers: Vec<String>,
    truncated: bool,
}

/// The `dns` kind. The server asked is `remote_addr` in the progress (from
/// /etc/resolv.conf when `dns.server` is not set); the query's round trip is `dns`.
pub struct DnsKind<'a> {
    check: &'a DnsCheck,
    timeout: Duration,
}

impl<'a> DnsKind<'a> {
    pub fn new(check: &'a DnsCheck, timeout: Duration) -> DnsKind<'a> {
        DnsKind { check, timeout }
    }

    /// The server asked, as shown.
    fn server(p: &Progress) -> String {
        p.remote_addr
            .map_or_else(|| "(system resolver)".to_string(), |s| s.to_string())
    }
}

impl Kind for DnsKind<'_> {
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
        p.remote_addr = self.check.server;
        let answer = query(self.check, p).await?;
        p.info.insert("dns.rcode".into(), answer.rcode.clone());
        p.info
            .insert("dns.answers".into(), answer.answers.join(", "));
        if answer.truncated {
            p.info.insert("dns.truncated".into(), "true".into());
        }
        p.assertions = evaluate(self.check, &answer);
        first_failure(&p.assertions, answer.truncated).map_or(Ok(()), Err)
    }

    fn timed_out(&self, p: &Progress) -> ProbeError {
        let server = Self::server(p);
        let doing = match p.stage() {
            Stage::Connect => format!("connecting to {server} over TCP"),
            Stage::Query => format!("waiting for the answer from {server}"),
            _ => "finding the server to ask".to_string(),
        };
        let check = self.check;
        fail(
            ErrorClass::Timeout,
            format!(
                "no answer to {} {} within the timeout of {} (still {doing}); the server is down, unreachable or not answering{}",
                check.record_type,
                check.name,
                humantime::format_duration(self.timeout),
                if check.tcp { "" } else { " (over UDP a lost packet looks the same)" },
            ),
        )
    }

    fn conclude(&mut self, p: &mut Progress, error: Option<ProbeError>) -> Option<ProbeError> {
        let server = Self::server(p);
        let transport = if self.check.tcp { "tcp" } else { "udp" };
        p.request = format!(
            "{} {} @{server} ({transport})",
            self.check.record_type, self.check.name
        );
        p.info.insert("dns.server".into(), server);
        error
    }
}

/// Finds the server, sends the query and decodes the response.
async fn query(check: &DnsCheck, p: &mut Progress) -> Result<Answer, ProbeError> {
    let server = match check.server {
        Some(s) => s,
        None => {
            let s = system_nameserver().await?;
            p.remote_addr = Some(s);
            s
        }
    };
    let (id, request) = build_query(check)?;
    let response = if check.tcp {
        exchange_tcp(server, id, &request, p).await?
    } else {
        exchange_udp(server, id, &request, p).await?
    };
    let truncated = response.metadata.truncation;
    let rcode = rcode_name(response.metadata.response_code);
    let wanted = RecordType::from_str(&check.record_type).unwrap_or(RecordType::A);
    let answers = response
        .answers
        .iter()
        .filter(|r| r.record_type() == wanted)
        .map(|r| r.data.to_string())
        .collect();
    Ok(Answer {
        rcode,
        answers,
        truncated,
    })
}

/// The first `nameserver` of /etc/resolv.conf that is a plain IP address, port 53.
async fn system_nameserver() -> Result<SocketAddr, ProbeError> {
    const PATH: &str = "/etc/resolv.conf";
    let text = tokio::fs::read_to_string(PATH).await.map_err(|e| {
        fail(
            ErrorClass::Config,
            format!("no dns.server is set and {PATH} cannot be read ({e}); set dns.server"),
        )
    })?;
    nameserver_in(&text).ok_or_else(|| {
        fail(
            ErrorClass::Config,
            format!(
                "no dns.server is set and {PATH} has no usable `nameserver` line; set dns.server"
            ),
        )
    })
}

/// The first `nameserver` line of a resolv.conf text that holds an IP address
/// (one with an interface zone, `fe80::1%eth0`, is skipped).
fn nameserver_in(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver")
            .then(|| words.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// The query, encoded, and its id.
fn build_query(check: &DnsCheck) -> Result<(u16, Vec<u8>), ProbeError> {
    let mut name = Name::from_utf8(&check.name).map_err(|e| {
        fail(
            ErrorClass::Config,
            format!("dns.name {:?} is not a valid DNS name ({e})", check.name),
        )
    })?;
    // The name is asked as written, never completed with search domains.
    name.set_fqdn(true);
    let record_type = RecordType::from_str(&check.record_type).map_err(|_| {
        fail(
            ErrorClass::Config,
            format!("dns.type {:?} is not a record type", check.record_type),
        )
    })?;
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, record_type));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    message.set_edns(edns);
    let bytes = message.to_vec().map_err(|e| {
        fail(
            ErrorClass::Config,
            format!("cannot encode the query for {:?}: {e}", check.name),
        )
    })?;
    Ok((message.metadata.id, bytes))
}

/// Decodes a response; `None` if it is not the response to query `id`.
fn decode(bytes: &[u8], id: u16, server: SocketAddr) -> Result<Option<Message>, ProbeError> {
    let message = Message::from_vec(bytes).map_err(|e| {
        fail(
            ErrorClass::Dns,
            format!("{server} answered with something that is not a valid DNS message ({e}); is a DNS server listening there?"),
        )
    })?;
    let ours = message.metadata.id == id && message.metadata.message_type == MessageType::Response;
    Ok(ours.then_some(message))
}

fn socket_error(server: SocketAddr, transport: &str, e: &std::io::Error) -> ProbeError {
    let hint = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "nothing answers DNS there; is the server up, and are the address and port right?"
        }
        _ => "check that the server is reachable from the prober (routes, firewalls)",
    };
    fail(
        ErrorClass::Dns,
        format!("the DNS query to {server} over {transport} failed: {e}; {hint}"),
    )
}

async fn exchange_udp(
    server: SocketAddr,
    id: u16,
    request: &[u8],
    p: &mut Progress,
) -> Result<Message, ProbeError> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| socket_error(server, "UDP", &e))?;
    // Connected: only the server's datagrams are received (and ICMP errors reported).
    socket
        .connect(server)
        .await
        .map_err(|e| socket_error(server, "UDP", &e))?;
    p.enter(Stage::Query);
    socket
        .send(request)
        .await
        .map_err(|e| socket_error(server, "UDP", &e))?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| socket_error(server, "UDP", &e))?;
        // A stray or late datagram (another id) is skipped; the timeout bounds the wait.
        if let Some(message) = decode(&buf[..n], id, server)? {
            p.hop.dns_us = Some(p.stage_us());
            return Ok(message);
        }
    }
}

async fn exchange_tcp(
    server: SocketAddr,
    id: u16,
    request: &[u8],
    p: &mut Progress,
) -> Result<Message, ProbeError> {
    p.enter(Stage::Connect);
    let connected = TcpStream::connect(server).await;
    p.hop.connect_us = Some(p.stage_us());
    let mut stream = connected.map_err(|e| socket_error(server, "TCP", &e))?;
    let _ = stream.set_nodelay(true);
    p.enter(Stage::Query);
    let len = u16::try_from(request.len())
        .map_err(|_| fail(ErrorClass::Config, "the DNS query is too long for TCP"))?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| socket_error(server, "TCP", &e))?;
    let closed = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            fail(
                ErrorClass::Dns,
                format!("{server} closed the TCP connection without a complete answer; does it serve DNS over TCP?"),
            )
        } else {
            socket_error(server, "TCP", &e)
        }
    };
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(closed)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.map_err(closed)?;
    p.hop.dns_us = Some(p.stage_us());
    decode(&buf, id, server)?.ok_or_else(|| {
        fail(
            ErrorClass::Dns,
            format!("{server} answered over TCP with a message that is not the response to our query (another id)"),
        )
    })
}

/// The mnemonic of a response code, as in `dns.rcode`: NOERROR, NXDOMAIN, …
fn rcode_name(code: ResponseCode) -> String {
    let n = u16::from(code);
    let name = match n {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        _ => return format!("RCODE{n}"),
    };
    name.to_string()
}

/// Normalises record data (expected or received) for comparison; see the module docs.
fn normalise(record_type: &str, text: &str) -> String {
    let text = text.trim();
    match record_type {
        "TXT" => {
            let unquoted = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(text);
            unquoted.to_string()
        }
        "CAA" => text.to_string(),
        _ => text
            .split_whitespace()
            .map(|word| match word.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) if word.len() > 1 => word.trim_end_matches('.').to_ascii_lowercase(),
                Err(_) => word.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Checks the response: the response code, the number of answers, each expected answer.
fn evaluate(check: &DnsCheck, answer: &Answer) -> Vec<AssertionResult> {
    let mut out = vec![AssertionResult {
        check: "rcode".into(),
        passed: answer.rcode == check.rcode,
        expected: check.rcode.clone(),
        actual: answer.rcode.clone(),
    }];
    let count = answer.answers.len();
    if check.min_answers > 0 {
        out.push(AssertionResult {
            check: format!("{} answers", check.record_type),
            passed: u32::try_from(count).unwrap_or(u32::MAX) >= check.min_answers,
            expected: format!("at least {}", check.min_answers),
            actual: count.to_string(),
        });
    }
    let got: Vec<String> = answer
        .answers
        .iter()
        .map(|a| normalise(&check.record_type, a))
        .collect();
    let listed = if answer.answers.is_empty() {
        "no answer".to_string()
    } else {
        answer.answers.join(", ")
    };
    for expected in &check.answers {
        let want = normalise(&check.record_type, expected);
        out.push(AssertionResult {
            check: format!("{} answers include", check.record_type),
            passed: got.contains(&want),
            expected: expected.clone(),
            actual: listed.clone(),
        });
    }
    out
}

/// The error of a run whose response broke an expectation.
fn first_failure(assertions: &[AssertionResult], truncated: bool) -> Option<ProbeError> {
    let failed = assertions.iter().find(|a| !a.passed)?;
    let others = assertions.iter().filter(|a| !a.passed).count() - 1;
    let more = if others > 0 {
        format!(" (and {others} more failed)")
    } else {
        String::new()
    };
    let hint = if truncated {
        "; the response was truncated (TC bit): set `dns.protocol: tcp` to get it whole"
    } else {
        ""
    };
    Some(fail(
        ErrorClass::Assertion,
        format!(
            "{}: expected {}, got {}{more}{hint}",
            failed.check, failed.expected, failed.actual
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_normalise() {
        assert_eq!(
            normalise("MX", " 10  Mail.Example.COM. "),
            "10 mail.example.com"
        );
        assert_eq!(
            normalise("MX", "10 mail.example.com"),
            "10 mail.example.com"
        );
        assert_eq!(normalise("AAAA", "2001:0db8::0001"), "2001:db8::1");
        assert_eq!(normalise("NS", "."), ".");
        assert_eq!(normalise("TXT", "\"v=spf1 -all.\""), "v=spf1 -all.");
        assert_eq!(normalise("TXT", "Case Kept."), "Case Kept.");
    }

    #[test]
    fn the_first_usable_nameserver_is_taken() {
        let conf = "# comment\nsearch example.com\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(
            nameserver_in(conf),
            Some(SocketAddr::from(([10, 0, 0, 2], 53)))
        );
        assert_eq!(nameserver_in("search x\n"), None);
    }

    #[test]
    fn response_codes_have_their_mnemonics() {
        assert_eq!(rcode_name(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_name(ResponseCode::NoError), "NOERROR");
        assert_eq!(rcode_name(ResponseCode::Refused), "REFUSED");
    }
}
