//! Postgres failover (issue 18, item 8): `DATABASE_URL` names two hosts
//! with `target_session_attrs=read-write`. Each host is a proxy in front of
//! the machine's Postgres that the test turns into a primary (forwarding),
//! a standby (forwarding, every session read-only, as on a hot standby) or
//! a dead host (refusing). The daemon writes through whichever is the
//! primary, follows a switchover and a crash of the primary, and loses no
//! run.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::db::TestDb;
use crate::helpers::{probes, FakeTarget};

const DEAD: u8 = 0;
const PRIMARY: u8 = 1;
const STANDBY: u8 = 2;

/// A Postgres host as the daemon sees it.
#[derive(Clone)]
struct Host {
    addr: std::net::SocketAddr,
    role: Arc<AtomicU8>,
    /// Sessions opened through this host.
    sessions: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Host {
    async fn start(upstream: std::net::SocketAddr, role: u8) -> Host {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h = Host {
            addr: listener.local_addr().unwrap(),
            role: Arc::new(AtomicU8::new(role)),
            sessions: Arc::default(),
            conns: Arc::default(),
        };
        let me = h.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let role = me.role.load(Ordering::SeqCst);
                if role == DEAD {
                    continue; // closed at once
                }
                me.sessions.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(serve(client, upstream, role == STANDBY));
                me.conns.lock().unwrap().push(task.abort_handle());
            }
        });
        h
    }

    /// Becomes `role`; its open sessions end (a restart, as a promotion
    /// or a demotion does, or a crash).
    fn become_(&self, role: u8) {
        self.role.store(role, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// Reads one startup-phase message (length-prefixed, no type byte).
async fn message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let n = u32::from_be_bytes(len) as usize;
    if !(8..=10_000).contains(&n) {
        return None;
    }
    let mut body = vec![0u8; n - 4];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Forwards one session; as a standby, its startup asks for read-only
/// transactions (`-c default_transaction_read_only=on`).
async fn serve(mut client: TcpStream, upstream: std::net::SocketAddr, standby: bool) {
    let mut startup = match message(&mut client).await {
        Some(m) => m,
        None => return,
    };
    // SSLRequest or GSSENCRequest: refused, the startup message follows.
    if matches!(
        u32::from_be_bytes([startup[0], startup[1], startup[2], startup[3]]),
        80_877_103 | 80_877_104
    ) {
        if client.write_all(b"N").await.is_err() {
            return;
        }
        startup = match message(&mut client).await {
            Some(m) => m,
            None => return,
        };
    }
    if standby {
        startup = read_only(&startup);
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut out = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&startup);
    if server.write_all(&out).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// The startup message (protocol version, then name/value pairs) with
/// `default_transaction_read_only=on` added to its `options`.
fn read_only(startup: &[u8]) -> Vec<u8> {
    let mut fields: Vec<String> = startup[4..]
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    while fields.last().is_some_and(|f| f.is_empty()) {
        fields.pop();
    }
    const RO: &str = "-c default_transaction_read_only=on";
    match fields.iter().position(|f| f == "options") {
        Some(i) if i % 2 == 0 => fields[i + 1] = format!("{} {RO}", fields[i + 1]),
        _ => fields.extend(["options".to_string(), RO.to_string()]),
    }
    let mut out = startup[..4].to_vec();
    for f in fields {
        out.extend_from_slice(f.as_bytes());
        out.push(0);
    }
    out.push(0);
    out
}

async fn stored(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from runs")
        .fetch_one(db)
        .await
        .unwrap_or(0)
}

/// Waits until the runs stored exceed `n`; returns how long it took.
async fn wait_more(db: &sqlx::PgPool, n: i64, what: &str) -> Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if stored(db).await > n + 5 {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: no runs stored for 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_the_primary_across_a_switchover_and_a_crash() {
    let db = TestDb::create().await;
    let pg: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    // The first host listed starts as a standby: the store must pass it over.
    let a = Host::start(pg, STANDBY).await;
    let b = Host::start(pg, PRIMARY).await;
    let target = FakeTarget::start().await;
    let yaml: String = (0..20)
        .map(|i| {
            format!(
                "---\nname: p{i}\nevery: 1s\nhttp: {{url: \"{}\"}}\n",
                target.url("/")
            )
        })
        .collect();
    let settings = Settings {
        database_url: format!(
            "postgres://postgres@{},{}/{}?target_session_attrs=read-write",
            a.addr, b.addr, db.name
        ),
        location: "lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        ..Settings::default()
    };
    let d = Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    let pool = db.pool().await;
    let first = wait_more(&pool, 0, "with the first host a standby").await;
    assert!(b.sessions.load(Ordering::SeqCst) > 0);

    // Switchover: b is demoted and restarts as a standby, a is promoted.
    let a_before = a.sessions.load(Ordering::SeqCst);
    let n = stored(&pool).await;
    let switched = Utc::now();
    b.become_(STANDBY);
    a.become_(PRIMARY);
    let switchover = wait_more(&pool, n, "after the switchover").await;
    let a_sessions = a.sessions.load(Ordering::SeqCst);

    // The primary crashes; b is promoted.
    let n = stored(&pool).await;
    a.become_(DEAD);
    b.become_(PRIMARY);
    let crash = wait_more(&pool, n, "after the primary crashed").await;

    d.shutdown().await;
    let runs = stored(&pool).await;
    let requests = target.counts.requests() as i64;
    let distinct: i64 = sqlx::query_scalar("select count(distinct run_id) from runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "failover: writes began {first:?} after start (first host a standby), resumed {switchover:?} after a switchover and {crash:?} after a crash; {runs} runs, {requests} requests"
    );
    assert!(a_sessions > a_before, "the promoted host was never used");
    let after: i64 = sqlx::query_scalar("select count(*) from runs where scheduled_at > $1")
        .bind(switched)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(after > 0);
    for (what, took) in [("switchover", switchover), ("crash", crash)] {
        assert!(
            took < Duration::from_secs(10),
            "writes resumed {took:?} after the {what}"
        );
    }
    // Nothing lost, nothing twice: every request the target saw is one run.
    assert_eq!(runs, distinct);
    assert_eq!(runs, requests, "every run stored once");
}
