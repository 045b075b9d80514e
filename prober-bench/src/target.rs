//! The loopback target: a hand-written HTTP/1.1 responder on its own thread
//! and current-thread runtime, so its CPU can be read and subtracted. With
//! `--otlp` or `--otlp-metrics` it is the OTLP/HTTP receiver too (`POST
//! /v1/traces`, `/v1/metrics`, read and answered, not decoded), so the
//! receiver's CPU is subtracted with it. For `--protocol` other than h1,
//! `--keep-alive` and `--hyper-target`, hyper's server answers on the same
//! thread and runtime instead (`target_hyper`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::protocol::Wire;
use crate::target_hyper::HyperServer;

/// The target's answer: small, and the connection closes after it.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";

/// What the target thread reports once listening: its address and thread id.
type Ready = Result<(SocketAddr, Option<u32>), String>;

/// The loopback target: its own thread and current-thread runtime.
pub struct Target {
    pub addr: SocketAddr,
    tid: Option<u32>,
    pub served: Arc<AtomicU64>,
    /// Bytes of OTLP exports the target took as the receiver (`--otlp`).
    pub otlp_bytes: Arc<AtomicU64>,
    /// Connections accepted and requests answered over HTTP/2 (hyper's server only).
    pub connections: Arc<AtomicU64>,
    pub served_h2: Arc<AtomicU64>,
    /// The PEM file of the CA that signed the target's certificate (TLS protocols).
    pub ca_file: Option<PathBuf>,
    /// How long each answer actually took after the request head was read, µs
    /// (the "truth" for accuracy: the timer rounds the nominal delay up).
    delays: Arc<Mutex<Histogram<u64>>>,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Target {
    /// Starts the hand-written target; it answers every request after `delay`.
    pub fn start(delay: Duration) -> Result<Target, String> {
        Target::start_for(delay, &Wire::default())
    }

    /// Starts the target `wire` asks for; it answers every request after `delay`.
    pub fn start_for(delay: Duration, wire: &Wire) -> Result<Target, String> {
        let server = if wire.hand_written() {
            None
        } else {
            Some(HyperServer::new(wire)?)
        };
        let ca_file = server.as_ref().and_then(|s| s.ca_file.clone());
        let (tx, rx) = std::sync::mpsc::channel::<Ready>();
        let stop = CancellationToken::new();
        let served = Served {
            served: Arc::new(AtomicU64::new(0)),
            otlp_bytes: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
            served_h2: Arc::new(AtomicU64::new(0)),
            delays: Arc::new(Mutex::new(new_histogram()?)),
        };
        let thread = std::thread::Builder::new()
            .name("bench-target".into())
            .spawn({
                let stop = stop.clone();
                let served = served.clone();
                move || target_thread(delay, stop, served, server, tx)
            })
            .map_err(|e| format!("cannot start the target thread: {e}"))?;
        let (addr, tid) = rx
            .recv()
            .map_err(|_| "the target thread ended before it was listening".to_string())??;
        Ok(Target {
            addr,
            tid,
            served: served.served,
            otlp_bytes: served.otlp_bytes,
            connections: served.connections,
            served_h2: served.served_h2,
            ca_file,
            delays: served.delays,
            stop,
            thread,
        })
    }

    /// A copy of the answer-delay histogram so far.
    pub fn delays(&self) -> Histogram<u64> {
        self.delays.lock().clone()
    }

    /// CPU time of the target thread in µs, if the kernel tells.
    pub fn cpu_us(&self) -> Option<u64> {
        let text =
            std::fs::read_to_string(format!("/proc/self/task/{}/schedstat", self.tid?)).ok()?;
        let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
        Some(ns / 1000)
    }

    /// Stops listening and waits for the thread.
    pub fn stop(self) {
        self.stop.cancel();
        let _ = self.thread.join();
        if let Some(file) = self.ca_file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// What the target counts: answers, and how long each took.
#[derive(Clone)]
pub struct Served {
    pub served: Arc<AtomicU64>,
    /// Bytes of OTLP exports received (`--otlp`).
    pub otlp_bytes: Arc<AtomicU64>,
    /// Connections accepted, answers over HTTP/2 (hyper's server counts them).
    pub connections: Arc<AtomicU64>,
    pub served_h2: Arc<AtomicU64>,
    pub delays: Arc<Mutex<Histogram<u64>>>,
}

/// A histogram of µs from 1 µs to an hour, 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

fn target_thread(
    delay: Duration,
    stop: CancellationToken,
    served: Served,
    server: Option<HyperServer>,
    ready: std::sync::mpsc::Sender<Ready>,
) {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the target's runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on 127.0.0.1: {e}")));
                return;
            }
        };
        match listener.local_addr() {
            Ok(addr) => {
                let _ = ready.send(Ok((addr, tid)));
            }
            Err(e) => {
                let _ = ready.send(Err(format!("cannot read the target's address: {e}")));
                return;
            }
        }
        match server {
            None => accept_until_stopped(listener, delay, stop, served).await,
            Some(s) => s.accept_until_stopped(listener, delay, stop, served).await,
        }
    });
}

async fn accept_until_stopped(
    listener: TcpListener,
    delay: Duration,
    stop: CancellationToken,
    served: Served,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((sock, _)) => {
                    tokio::spawn(serve(sock, delay, served.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bench target: accept failed");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
        }
    }
}

/// The answer to an OTLP export: 200 with an empty `ExportTraceServiceResponse`.
const OTLP_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// The largest OTLP export the sink reads.
const OTLP_MAX_BODY: usize = 64 << 20;

/// `POST /v1/traces` (`--otlp`) or `/v1/metrics` (`--otlp-metrics`): reads
/// the export's body and answers it; not a probe's request.
async fn sink_otlp(mut sock: TcpStream, head: &[u8], read: usize, served: Served) {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let len: usize = (text.lines())
        .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
        .unwrap_or(0)
        .min(OTLP_MAX_BODY);
    let mut left = len.saturating_sub(read);
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    if sock.write_all(OTLP_RESPONSE).await.is_ok() {
        served.otlp_bytes.fetch_add(len as u64, Ordering::Relaxed);
        let _ = sock.shutdown().await;
    }
}

/// Reads the request head, waits `delay`, answers 200 and closes.
async fn serve(mut sock: TcpStream, delay: Duration, served: Served) {
    let mut buf = [0u8; 4096];
    let mut len = 0;
    loop {
        match sock.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let from = len.saturating_sub(3);
                len += n;
                if buf[from..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
                if len == buf.len() {
                    return;
                }
            }
        }
    }
    if buf[..len].starts_with(b"POST /v1/traces ") || buf[..len].starts_with(b"POST /v1/metrics ") {
        let head_end =
            (buf[..len].windows(4).position(|w| w == b"\r\n\r\n")).map_or(len, |i| i + 4);
        sink_otlp(sock, &buf[..head_end], len - head_end, served).await;
        return;
    }
    let head_read = Instant::now();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if sock.write_all(RESPONSE).await.is_ok() {
        let took = head_read.elapsed().as_micros();
        let _ = served
            .delays
            .lock()
            .record(u64::try_from(took).unwrap_or(u64::MAX).max(1));
        let _ = sock.shutdown().await;
        served.served.fetch_add(1, Ordering::Relaxed);
    }
}
