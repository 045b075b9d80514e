//! Idle keep-alive connections of probes with `keep_alive: true`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use parking_lot::Mutex;

use crate::probe::timing::WireClock;
use crate::run::CertInfo;

/// An idle keep-alive connection, and what was measured when it was opened.
pub(super) struct Idle {
    pub(super) sender: http1::SendRequest<Full<Bytes>>,
    pub(super) clock: Arc<WireClock>,
    pub(super) remote_addr: Option<SocketAddr>,
    pub(super) cert: Option<CertInfo>,
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
