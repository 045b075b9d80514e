//! A commit whose acknowledgement is lost (issue 18, item 6): Postgres
//! commits a batch of runs, and the connection dies before the daemon hears
//! of it. A proxy that reads the wire protocol marks a runs write (its Bind
//! carries the batch's column arrays, far larger than any other statement's)
//! and, when armed, drops the connection at that statement's ReadyForQuery:
//! the commit is done, its reply never arrives. The daemon writes the batch
//! again on a new connection; each run is stored once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prober::daemon::{http_executor, Daemon};
use prober::store::writer::StoreState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::db::TestDb;
use crate::helpers::{daemon_settings, probes, wait_for, FakeTarget};

/// A Bind this large is a runs write (each of its ~20 array parameters
/// carries a 20-byte array header; other statements bind a few scalars).
const RUNS_WRITE_BIND: usize = 500;

#[derive(Clone, Default)]
struct AckProxy {
    /// Drop the next runs write's acknowledgement.
    armed: Arc<AtomicBool>,
    /// One was dropped.
    dropped: Arc<AtomicBool>,
}

impl AckProxy {
    async fn start(&self, upstream: std::net::SocketAddr) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        me.serve(client, server).await;
                    }
                });
            }
        });
        addr
    }

    async fn serve(self, client: TcpStream, server: TcpStream) {
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        // Set by the client side when it forwards a runs write's Bind.
        let runs_write = Arc::new(AtomicBool::new(false));
        let marked = runs_write.clone();
        let up = async move {
            // The startup message has no type byte; every later one has.
            let mut typed = false;
            loop {
                let Some((kind, msg)) = read_message(&mut cr, typed).await else {
                    return;
                };
                typed = true;
                if kind == Some(b'B') && msg.len() >= RUNS_WRITE_BIND {
                    marked.store(true, Ordering::SeqCst);
                }
                if sw.write_all(&msg).await.is_err() {
                    return;
                }
            }
        };
        let down = async move {
            loop {
                let Some((kind, msg)) = read_message(&mut sr, true).await else {
                    return;
                };
                if kind == Some(b'Z') && runs_write.swap(false, Ordering::SeqCst) {
                    // The runs write is committed: its ReadyForQuery is the
                    // acknowledgement. Armed, the connection dies here.
                    if self.armed.swap(false, Ordering::SeqCst) {
                        self.dropped.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                if cw.write_all(&msg).await.is_err() {
                    return;
                }
            }
        };
        // Either side ending ends both: the sockets close.
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    }
}

/// One protocol message, whole (type byte, length, body), and its type.
async fn read_message(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    typed: bool,
) -> Option<(Option<u8>, Vec<u8>)> {
    let mut head = vec![0u8; if typed { 5 } else { 4 }];
    r.read_exact(&mut head).await.ok()?;
    let at = head.len() - 4;
    let len = u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]) as usize;
    if !(4..=64 << 20).contains(&len) {
        return None;
    }
    let mut msg = head;
    let body = msg.len();
    msg.resize(body + len - 4, 0);
    r.read_exact(&mut msg[body..]).await.ok()?;
    Some((typed.then(|| msg[0]), msg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_acknowledgement_is_lost_is_written_again_and_stored_once() {
    let _shared = crate::helpers::TIMING.read().await;
    let target = FakeTarget::start().await;
    let db = TestDb::create().await;
    let proxy = AckProxy::default();
    let addr = proxy.start("127.0.0.1:5432".parse().unwrap()).await;
    let yaml: String = (0..20)
        .map(|i| {
            format!(
                "- name: p{i}\n  every: 1s\n  http: {{url: \"{}\"}}\n",
                target.url("/ok")
            )
        })
        .collect();
    // Without TLS: the proxy reads the protocol in clear.
    let url = format!("{}?sslmode=disable", db.url_via(addr));
    let daemon = Daemon::start(
        &daemon_settings(url),
        probes(&yaml),
        http_executor().unwrap(),
    )
    .await
    .unwrap();
    let written = || daemon.store_health.runs_written.load(Ordering::SeqCst);
    assert!(wait_for(Duration::from_secs(15), || written() >= 20).await);

    proxy.armed.store(true, Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(15), || proxy
            .dropped
            .load(Ordering::SeqCst))
        .await,
        "no runs write was seen to drop its acknowledgement"
    );
    // Committed, and not counted by the daemon: it never heard of it.
    let unacknowledged = written();
    let (stored, _) = db.count_runs().await;
    assert!(
        stored > unacknowledged as i64,
        "the batch committed before its acknowledgement was lost ({stored} stored, {unacknowledged} acknowledged)"
    );
    assert!(
        wait_for(Duration::from_secs(30), || daemon.queue.is_empty()
            && daemon.store_health.state() == StoreState::Ok
            && written() > unacknowledged)
        .await,
        "the batch is written again on a new connection"
    );
    let (stats, queue) = (daemon.scheduler_stats.clone(), daemon.queue.clone());
    daemon.shutdown().await;
    let finished = stats.runs_finished.load(Ordering::SeqCst) as i64;
    let (stored, distinct) = db.count_runs().await;
    assert_eq!(queue.dropped(), 0);
    assert_eq!(stored, distinct, "the batch written twice is stored once");
    assert_eq!(stored, finished, "every run stored");
}
