//! Notification claims across a crash (issue 18, item 4): a `prober run`
//! killed while a page is in flight (the receiver has the request and has
//! not answered) restarts on the same spool directory and sends that page
//! again at once, with the same idempotency key, instead of waiting out the
//! claim's 30 s lease; and pages nothing twice beyond it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::db::TestDb;
use crate::helpers::{cli_command, closed_port, Children};

/// A webhook receiver on loopback that leaves its first request
/// unanswered (the sender is killed meanwhile) and accepts the others.
/// Records each request's arrival and `Idempotency-Key`.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(Instant, String, String)>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let (head, start, len) = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let len = header(&head, "content-length")
                                .and_then(|v| v.parse::<usize>().ok())
                                .unwrap_or(0);
                            break (head, end + 4, len);
                        }
                    };
                    while buf.len() < start + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let key = header(&head, "idempotency-key").unwrap_or_default();
                    let body = String::from_utf8_lossy(&buf[start..start + len]).into_owned();
                    let first = {
                        let mut seen = me.seen.lock().unwrap();
                        seen.push((Instant::now(), key, body));
                        seen.len() == 1
                    };
                    if first {
                        // Held: the connection stays open, unanswered, until
                        // the sender dies.
                        let _ = sock.read(&mut chunk).await;
                        return;
                    }
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        url
    }

    fn seen(&self) -> Vec<(Instant, String, String)> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait(&self, n: usize, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.seen().len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_interrupted_by_a_crash_is_sent_again_at_restart_not_after_the_lease() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let target = closed_port().await;
    let probes = dir.path().join("probes");
    std::fs::create_dir_all(&probes).unwrap();
    std::fs::write(
        probes.join("checkout.yaml"),
        format!("name: checkout\nevery: 1s\nhttp: {{url: \"http://{target}/\"}}\n"),
    )
    .unwrap();
    let config = dir.path().join("prober.yaml");
    std::fs::write(
        &config,
        format!(
            "location: lab\nalerting: {{failures_to_fire: 1, severity: page}}\nreceivers:\n  - {{name: hook, type: webhook, url: \"{hook}\"}}\n"
        ),
    )
    .unwrap();
    let start = || {
        cli_command(dir.path(), &["run"])
            .env("PROBER_CONFIG", &config)
            .env("PROBER_PROBES", &probes)
            .env("DATABASE_URL", &db.url)
            .env("PROBER_LISTEN", "127.0.0.1:0")
            .env("PROBER_SPOOL_DIR", dir.path().join("spool"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = Children(vec![start()]);
    assert!(
        receiver.wait(1, Duration::from_secs(30)).await,
        "the failing probe was never paged"
    );
    // The page is in flight: the receiver holds it. SIGKILL.
    let killed = &mut first.0[0];
    killed.kill().unwrap();
    killed.wait().unwrap();
    let restarted_at = Instant::now();
    let _second = Children(vec![start()]);
    assert!(
        receiver.wait(2, Duration::from_secs(40)).await,
        "the interrupted page was never sent again"
    );
    let seen = receiver.seen();
    let again = seen[1].0.duration_since(restarted_at);
    assert!(
        again < Duration::from_secs(15),
        "sent again {again:?} after the restart: the restarted process waited out the claim's lease instead of recovering its own claim"
    );
    assert_eq!(seen[1].1, seen[0].1, "the same idempotency key");
    assert!(!seen[0].1.is_empty(), "webhooks carry an idempotency key");
    assert!(seen[1].2.contains("\"trigger\""), "{}", seen[1].2);
    // Nothing else: the restarted engine knows the alert fired and was told.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.seen().len(), 2, "{:?}", receiver.seen());
}
