//! A connection wrapper that notes when the request was last written and
//! when the first response byte arrived: the "first byte" phase, measured on
//! the wire (above TLS), not at the point hyper has parsed the headers.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Instants seen on one connection, as nanoseconds since `base` (0 = not yet).
#[derive(Debug)]
pub struct WireClock {
    base: Instant,
    last_write_ns: AtomicU64,
    first_read_ns: AtomicU64,
}

impl WireClock {
    pub fn new(base: Instant) -> Arc<WireClock> {
        Arc::new(WireClock {
            base,
            last_write_ns: AtomicU64::new(0),
            first_read_ns: AtomicU64::new(0),
        })
    }

    fn now_ns(&self) -> u64 {
        // At least 1 so that 0 keeps meaning "not yet".
        (self.base.elapsed().as_nanos() as u64).max(1)
    }

    /// When the last request bytes were written before the response began.
    pub fn last_write(&self) -> Option<Instant> {
        self.at(&self.last_write_ns)
    }

    /// When the first response byte was read.
    pub fn first_read(&self) -> Option<Instant> {
        self.at(&self.first_read_ns)
    }

    /// Forget the previous exchange (a reused keep-alive connection).
    pub fn reset(&self) {
        self.last_write_ns.store(0, Ordering::Relaxed);
        self.first_read_ns.store(0, Ordering::Relaxed);
    }

    fn at(&self, cell: &AtomicU64) -> Option<Instant> {
        match cell.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.base + std::time::Duration::from_nanos(ns)),
        }
    }
}

/// An IO stream that reports to a [`WireClock`].
pub struct TimedIo<T> {
    inner: T,
    clock: Arc<WireClock>,
}

impl<T> TimedIo<T> {
    pub fn new(inner: T, clock: Arc<WireClock>) -> TimedIo<T> {
        TimedIo { inner, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let clock = &self.clock;
            if buf.filled().len() > before && clock.first_read_ns.load(Ordering::Relaxed) == 0 {
                clock.first_read_ns.store(clock.now_ns(), Ordering::Relaxed);
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&res);
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T> TimedIo<T> {
    fn note_write(&self, res: &Poll<io::Result<usize>>) {
        // Writes after the response started (none in HTTP/1 request-response) do not move the mark.
        if matches!(res, Poll::Ready(Ok(n)) if *n > 0)
            && self.clock.first_read_ns.load(Ordering::Relaxed) == 0
        {
            self.clock
                .last_write_ns
                .store(self.clock.now_ns(), Ordering::Relaxed);
        }
    }
}
