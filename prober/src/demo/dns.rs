//! A tiny authoritative DNS server (9684, UDP and TCP) for the zone `shop.demo.`:
//!
//! | name | type | data |
//! |---|---|---|
//! | `shop.demo.` | A | 127.0.0.1 |
//! | `shop.demo.` | AAAA | ::1 |
//! | `shop.demo.` | MX | `10 mail.shop.demo.` |
//! | `shop.demo.` | TXT | `prober demo` |
//! | `mail.shop.demo.` | A | 127.0.0.1 |
//!
//! Another name under `demo.` is NXDOMAIN; a name outside it is REFUSED (no
//! recursion). The transports ([`serve_udp`], [`serve_tcp`]) take any
//! [`Answer`] function, so the tests' fake servers share them. Malformed
//! packets are dropped; TCP messages are capped at [`MAX_MESSAGE`] bytes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::IDLE_TIMEOUT;

/// Turns a query's bytes into a response's, or `None` to stay silent.
pub type Answer = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// The longest DNS message read (UDP datagram or TCP message); longer ones are dropped.
pub const MAX_MESSAGE: usize = 4096;

/// A DNS server started by [`spawn`]; dropping it stops it.
pub struct DnsServer {
    stop: CancellationToken,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves `answer` on `udp` and `tcp` until the returned server is dropped.
pub fn spawn(udp: UdpSocket, tcp: TcpListener, answer: Answer) -> DnsServer {
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(serve_udp(udp, answer.clone(), stop.clone()));
    tasks.spawn(serve_tcp(tcp, answer, stop.clone(), tasks.clone()));
    DnsServer { stop }
}

/// Answers datagrams on `socket` until `stop`.
pub async fn serve_udp(socket: UdpSocket, answer: Answer, stop: CancellationToken) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue, // e.g. an ICMP error from an earlier reply
            },
        };
        if let Some(reply) = answer(&buf[..n]) {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

/// Answers length-prefixed messages on TCP connections until `stop`.
pub async fn serve_tcp(
    listener: TcpListener,
    answer: Answer,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    super::accept_each(listener, stop, tasks, move |sock| {
        tcp_connection(sock, answer.clone())
    })
    .await;
}

async fn tcp_connection(mut sock: TcpStream, answer: Answer) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(IDLE_TIMEOUT, sock.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_MESSAGE {
            return;
        }
        let mut buf = vec![0u8; len];
        match tokio::time::timeout(IDLE_TIMEOUT, sock.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = answer(&buf) else {
            continue;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if sock.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// The demo zone's answer to a query; `None` (dropped) for anything that is
/// not one well-formed query.
pub fn answer_demo_zone(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let q = request.queries.first()?.clone();
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.add_query(q.clone());
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return response.to_vec().ok();
    }
    let name = q.name().to_ascii().to_ascii_lowercase();
    let name = if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    };
    if name != "demo." && !name.ends_with(".demo.") {
        response.metadata.response_code = ResponseCode::Refused;
        return response.to_vec().ok();
    }
    response.metadata.authoritative = true;
    let record = |data: RData| Record::from_rdata(q.name().clone(), 60, data);
    match (name.as_str(), q.query_type()) {
        ("shop.demo.", RecordType::A) | ("mail.shop.demo.", RecordType::A) => {
            response.add_answer(record(RData::A(A(Ipv4Addr::LOCALHOST))));
        }
        ("shop.demo.", RecordType::AAAA) => {
            response.add_answer(record(RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))));
        }
        ("shop.demo.", RecordType::MX) => {
            let exchange = Name::from_ascii("mail.shop.demo.").ok()?;
            response.add_answer(record(RData::MX(MX::new(10, exchange))));
        }
        ("shop.demo.", RecordType::TXT) => {
            response.add_answer(record(RData::TXT(TXT::new(vec!["prober demo".into()]))));
        }
        ("shop.demo.", _) | ("mail.shop.demo.", _) | ("demo.", _) => {} // the name exists: no data
        _ => response.metadata.response_code = ResponseCode::NXDomain,
    }
    response.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn ask(name: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let bytes = answer_demo_zone(&m.to_vec().unwrap()).unwrap();
        Message::from_vec(&bytes).unwrap()
    }

    #[test]
    fn the_zone_answers_its_names_and_refuses_others() {
        let a = ask("shop.demo.", RecordType::A);
        assert_eq!(a.metadata.id, 7);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            ask("nope.demo.", RecordType::A).metadata.response_code,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask("example.com.", RecordType::A).metadata.response_code,
            ResponseCode::Refused
        );
        assert!(ask("shop.demo.", RecordType::SRV).answers.is_empty());
    }

    #[test]
    fn garbage_is_dropped() {
        assert_eq!(answer_demo_zone(b"\x00\x01garbage"), None);
        assert_eq!(answer_demo_zone(&[]), None);
    }
}
