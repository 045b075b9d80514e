//! The `/metrics` response, streamed: at 10,000 probes the page is ~85 MB (the
//! per-probe, per-phase histograms), more than the daemon's whole memory
//! budget, so it is encoded on a blocking thread in 64 KiB chunks that go out
//! as the client reads them.
//!
//! A scraper that never reads must not hold a thread for ever: at most
//! [`MAX_SCRAPES`] pages are encoded at once (more get 503), and a scrape
//! whose client takes no chunk for [`STALL`], or is not done within
//! [`SCRAPE_MAX`], is abandoned. A page ends with an empty chunk (the end
//! marker): a body whose encoder stopped without it ends in an error, so a
//! cut page is never taken for a whole one.

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

use super::{openmetrics, Format, Metrics};

/// Bytes encoded before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;
/// Chunks encoded ahead of the client: the most a scrape holds besides its snapshot.
const CHUNKS_AHEAD: usize = 4;
/// Pages encoded at once (each on a blocking thread); past it a scrape gets
/// 503 and is tried again by its scraper.
pub const MAX_SCRAPES: usize = 8;
/// A client that takes no chunk for this long is gone: its scrape ends.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest a scrape may take in all (a scraper's own timeout is
/// shorter: Prometheus's is at most its scrape interval).
pub const SCRAPE_MAX: std::time::Duration = std::time::Duration::from_secs(300);

/// Encodes `metrics` on a blocking thread into a streamed body. An encoding
/// failure aborts the response (no final chunk), so a scraper never takes a
/// truncated page for a whole one.
pub fn respond(metrics: Arc<Metrics>, format: Format) -> Response {
    let Ok(permit) = metrics.scrapes.clone().try_acquire_owned() else {
        tracing::warn!(
            at_once = MAX_SCRAPES,
            "too many /metrics scrapes at once; answering 503"
        );
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("{MAX_SCRAPES} /metrics scrapes are being served already; try again shortly (a scraper that does not read its page holds one for up to {} s)\n", STALL.as_secs()),
        )
            .into_response();
    };
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = ChunkWriter::new(tx, STALL, SCRAPE_MAX);
        let done = metrics.encode(&mut out, format).and_then(|()| out.finish());
        if done.is_err() && !out.tx.is_closed() && !out.stalled {
            tracing::error!("encoding /metrics failed");
        }
    });
    let content_type = match format {
        Format::Text => prometheus_text::CONTENT_TYPE,
        Format::OpenMetrics => openmetrics::CONTENT_TYPE,
    };
    (
        // The page depends on `Accept`: a cache must not give one scraper the other's.
        [
            (header::CONTENT_TYPE, content_type),
            (header::VARY, "accept"),
        ],
        Body::new(ChunkBody(rx)),
    )
        .into_response()
}

/// Sends what is written in chunks of about [`CHUNK`] bytes; fails once the client is gone.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: String,
    /// How long a chunk may wait for the client to take one.
    stall: std::time::Duration,
    /// When the whole scrape must be done.
    deadline: std::time::Instant,
    /// The client was too slow: its scrape is abandoned.
    stalled: bool,
}

impl ChunkWriter {
    fn new(
        tx: mpsc::Sender<io::Result<Bytes>>,
        stall: std::time::Duration,
        max: std::time::Duration,
    ) -> ChunkWriter {
        ChunkWriter {
            tx,
            buf: String::with_capacity(CHUNK),
            stall,
            deadline: std::time::Instant::now() + max,
            stalled: false,
        }
    }

    fn flush(&mut self) -> fmt::Result {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, String::with_capacity(CHUNK));
        self.send(Bytes::from(chunk))
    }

    /// The last chunk, then the end marker.
    fn finish(&mut self) -> fmt::Result {
        self.flush()?;
        self.send(Bytes::new())
    }

    /// Sends a chunk once the client has room, within the stall and the
    /// scrape's deadline (this thread waits on the client, never on tokio's).
    fn send(&mut self, chunk: Bytes) -> fmt::Result {
        use mpsc::error::TrySendError;
        let give_up = self.deadline.min(std::time::Instant::now() + self.stall);
        let mut chunk = Ok(chunk);
        loop {
            match self.tx.try_send(chunk) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(c)) if std::time::Instant::now() < give_up => {
                    chunk = c;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => {
                    self.stalled = true;
                    tracing::warn!(
                        stall_s = self.stall.as_secs(),
                        "a /metrics client read too slowly; its scrape is abandoned"
                    );
                    return Err(fmt::Error);
                }
                Err(TrySendError::Closed(_)) => return Err(fmt::Error),
            }
        }
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

/// The response body: the chunks as they come, until the end marker; the
/// channel closed without it (the encoder stopped) is an error.
struct ChunkBody(mpsc::Receiver<io::Result<Bytes>>);

impl HttpBody for ChunkBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|chunk| match chunk {
            Some(Ok(c)) if c.is_empty() => None,
            Some(c) => Some(c.map(Frame::data)),
            None => Some(Err(io::Error::other(
                "the metrics page was cut short (its client read too slowly, or encoding failed)",
            ))),
        })
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
            let mut out = ChunkWriter::new(tx, STALL, SCRAPE_MAX);
            for _ in 0..10_000 {
                out.write_str(line)?;
            }
            out.finish()
        });
        let mut chunks = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            chunks.push(chunk.unwrap_or_else(|e| panic!("{e}")));
        }
        assert_eq!(writer.join().ok(), Some(Ok(())));
        assert_eq!(chunks.pop().map(|c| c.len()), Some(0), "the end marker");
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= CHUNK + line.len()));
        assert_eq!(chunks.concat(), line.repeat(10_000).as_bytes());
    }

    #[test]
    fn a_client_that_takes_nothing_frees_the_thread() {
        use std::fmt::Write as _;
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let mut out = ChunkWriter::new(tx, std::time::Duration::from_millis(50), SCRAPE_MAX);
        let line = "x".repeat(1024);
        let started = std::time::Instant::now();
        let wrote = (0..10_000).try_for_each(|_| out.write_str(&line));
        assert!(wrote.is_err() && out.stalled, "the writer gives up");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        drop(out);
        // The body: the chunks sent, then an error, never a clean end.
        let mut body = ChunkBody(rx);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut frames = 0;
        let end = loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => frames += 1,
                Poll::Ready(other) => break other.map(|r| r.is_err()),
                Poll::Pending => break None,
            }
        };
        assert_eq!(frames, CHUNKS_AHEAD);
        assert_eq!(end, Some(true), "a cut page ends in an error");
    }
}
