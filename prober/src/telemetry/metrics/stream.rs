//! The `/metrics` response, streamed: at 10,000 probes the page is ~85 MB (the
//! per-probe, per-phase histograms), more than the daemon's whole memory
//! budget, so it is encoded on a blocking thread in 64 KiB chunks that go out
//! as the client reads them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::{fmt, io};

use axum::body::{Body, HttpBody};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::Frame;
use prometheus_client::encoding::prometheus_text;
use tokio::sync::mpsc;

use super::Metrics;

/// Bytes encoded before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;
/// Chunks encoded ahead of the client: the most a scrape holds besides its snapshot.
const CHUNKS_AHEAD: usize = 4;

/// Encodes `metrics` on a blocking thread into a streamed body. An encoding
/// failure aborts the response (no final chunk), so a scraper never takes a
/// truncated page for a whole one.
pub fn respond(metrics: Arc<Metrics>) -> Response {
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx,
            buf: String::with_capacity(CHUNK),
        };
        let done = metrics.encode(&mut out).and_then(|()| out.flush());
        if done.is_err() && !out.tx.is_closed() {
            tracing::error!("encoding /metrics failed");
            let _ = out
                .tx
                .blocking_send(Err(io::Error::other("encoding the metrics failed")));
        }
    });
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        Body::new(ChunkBody(rx)),
    )
        .into_response()
}

/// Sends what is written in chunks of about [`CHUNK`] bytes; fails once the client is gone.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: String,
}

impl ChunkWriter {
    fn flush(&mut self) -> fmt::Result {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, String::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| fmt::Error)
    }
}

impl fmt::Write for ChunkWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }
}

/// The response body: the chunks as they come.
struct ChunkBody(mpsc::Receiver<io::Result<Bytes>>);

impl HttpBody for ChunkBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_page_goes_out_in_chunks_unchanged() {
        use std::fmt::Write as _;
        let (tx, mut rx) = mpsc::channel(CHUNKS_AHEAD);
        let line = "prober_probe_runs_total{probe=\"p\",result=\"success\"} 1\n";
        let writer = std::thread::spawn(move || {
            let mut out = ChunkWriter {
                tx,
                buf: String::new(),
            };
            for _ in 0..10_000 {
                out.write_str(line)?;
            }
            out.flush()
        });
        let mut chunks = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            chunks.push(chunk.unwrap_or_else(|e| panic!("{e}")));
        }
        assert_eq!(writer.join().ok(), Some(Ok(())));
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= CHUNK + line.len()));
        assert_eq!(chunks.concat(), line.repeat(10_000).as_bytes());
    }
}
