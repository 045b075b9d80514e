//! The outcome of the probe-file reloads, shared: the daemon's reload writes
//! it, `/readyz` and `/metrics` read it.

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde::Serialize;

use crate::schedule::Diff;

/// The outcome of the last reload, shown in `/readyz` and `/metrics` until fixed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadState {
    /// Problems of the last attempt (empty when it applied), each with file:line.
    pub errors: Vec<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub succeeded_total: u64,
    pub failed_total: u64,
    pub last_diff: Option<Diff>,
}

/// The [`ReloadState`] behind a lock: one writer (the daemon's reload), many readers.
#[derive(Debug, Default)]
pub struct ReloadStatus(RwLock<ReloadState>);

impl ReloadStatus {
    /// A status whose last success is `at` (the probe files loaded at start).
    pub fn loaded_at(at: DateTime<Utc>) -> ReloadStatus {
        ReloadStatus(RwLock::new(ReloadState {
            last_success_at: Some(at),
            ..ReloadState::default()
        }))
    }

    /// A copy of the current state.
    pub fn get(&self) -> ReloadState {
        self.0.read().clone()
    }

    /// Changes the state under the write lock (one reload at a time goes through here).
    pub fn update<T>(&self, f: impl FnOnce(&mut ReloadState) -> T) -> T {
        f(&mut self.0.write())
    }
}
