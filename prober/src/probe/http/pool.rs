//! Idle keep-alive connections of probes with `keep_alive: true`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use parking_lot::Mutex;

use crate::probe::timing::WireClock;
use crate::run::CertInfo;

/// A connection's request side: HTTP/1.1 or HTTP/2.
pub(super) enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    pub(super) fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }

    pub(super) fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    /// The version as recorded with the run and matched by `expect.http_version`.
    pub(super) fn version(&self) -> &'static str {
        if self.is_h2() {
            "2"
        } else {
            "1.1"
        }
    }

    pub(super) async fn send(
        &mut self,
        request: http::Request<Full<Bytes>>,
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(request).await,
            Sender::H2(s) => s.send_request(request).await,
        }
    }
}

/// An idle keep-alive connection, and what was measured when it was opened.
pub(super) struct Idle {
    pub(super) sender: Sender,
    pub(super) clock: Arc<WireClock>,
    pub(super) remote_addr: Option<SocketAddr>,
    pub(super) cert: Option<CertInfo>,
    /// What the connection agreed on (`tls.version`, `tls.cipher`), recorded again on reuse.
    pub(super) facts: Vec<(&'static str, String)>,
}

/// Idle connections of probes with `keep_alive: true`: at most one per probe and origin.
#[derive(Default)]
pub struct ConnPool {
    idle: Mutex<HashMap<String, Idle>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnPool")
    }
}

impl ConnPool {
    pub(super) fn take(&self, key: &str) -> Option<Idle> {
        self.idle.lock().remove(key)
    }

    pub(super) fn put(&self, key: String, idle: Idle) {
        self.idle.lock().insert(key, idle);
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.idle.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
