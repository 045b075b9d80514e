//! The audit log: who changed what, when, from where, and the outcome.
//!
//! Best-effort and non-blocking: [`AuditLog::record`] puts an entry on a
//! bounded channel and returns; one task writes what arrives in batches once
//! the database is prepared. A full channel (Postgres away for long) drops the
//! entry, counted (`prober_audit_dropped_total`) and logged, so no API answer
//! ever waits on Postgres.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::writer::StoreHealth;
use super::{err, Store, StoreError};

/// Entries waiting for Postgres before new ones are dropped.
pub const AUDIT_QUEUE: usize = 4096;
/// Longest `detail` kept, in characters.
pub const MAX_DETAIL_CHARS: usize = 2000;
/// Longest `path` kept, in characters.
const MAX_PATH_CHARS: usize = 512;
/// Entries per insert.
const BATCH: usize = 256;

/// One audited event.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub token_name: Option<String>,
    pub scope: Option<String>,
    pub method: String,
    pub path: String,
    pub remote_addr: Option<String>,
    pub status: u16,
    pub detail: Option<String>,
}

impl AuditEntry {
    /// A reload (a configuration change), applied (200) or refused (422).
    pub fn reload(trigger: &str, applied: bool, detail: String) -> AuditEntry {
        AuditEntry {
            at: Utc::now(),
            token_name: None,
            scope: None,
            method: "RELOAD".into(),
            path: trigger.to_string(),
            remote_addr: None,
            status: if applied { 200 } else { 422 },
            detail: Some(detail),
        }
    }
}

/// Text as Postgres takes it: no NUL, at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

/// The sending side, shared by the API and reloads.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditEntry>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Queues an entry; never waits. A full queue drops it (counted, logged).
    pub fn record(&self, e: AuditEntry) {
        if let Err(err) = self.tx.try_send(e) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let e = match err {
                mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e) => e,
            };
            tracing::warn!(
                dropped_total = n,
                method = %e.method, path = %e.path, status = e.status,
                "audit entry dropped: the audit queue is full (Postgres unavailable?)"
            );
        }
    }

    /// Entries dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The log and its writer task, which starts writing once the database is prepared.
    pub fn start(store: Store, health: Arc<StoreHealth>, stop: CancellationToken) -> AuditLog {
        let (tx, rx) = mpsc::channel(AUDIT_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_loop(store, health, rx, dropped.clone(), stop));
        AuditLog { tx, dropped }
    }
}

async fn write_loop(
    store: Store,
    health: Arc<StoreHealth>,
    mut rx: mpsc::Receiver<AuditEntry>,
    dropped: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = health.wait_prepared() => {}
        _ = stop.cancelled() => return,
    }
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else {
            // Stopping: write what is already queued, once.
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
            if !batch.is_empty() {
                let _ = store.insert_audit(&batch).await;
            }
            return;
        };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        // A few tries, then the batch is dropped (counted): the API never waits on this.
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=4 {
            match store.insert_audit(&batch).await {
                Ok(()) => break,
                Err(e) if attempt == 4 => {
                    let n = dropped.fetch_add(batch.len() as u64, Ordering::Relaxed)
                        + batch.len() as u64;
                    tracing::warn!(error = %e, entries = batch.len(), dropped_total = n, "audit entries dropped: Postgres did not take them");
                }
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => {}
                    }
                    delay *= 2;
                }
            }
        }
        batch.clear();
    }
}

/// An audit row as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The token's name; null: no token (refused), or a change no request made.
    pub token_name: Option<String>,
    /// The scope the request needed.
    pub scope: Option<String>,
    /// The HTTP method, or `RELOAD` for a configuration change.
    pub method: String,
    /// The request path, or the reload's trigger (`api`, `sighup`, `file-change`).
    pub path: String,
    pub remote_addr: Option<String>,
    /// The status answered (a reload: 200 applied, 422 refused).
    pub status: i16,
    /// Why it was refused, or what a reload changed.
    pub detail: Option<String>,
}

impl Store {
    /// Inserts audit entries in one statement.
    pub async fn insert_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        let at: Vec<DateTime<Utc>> = entries.iter().map(|e| e.at).collect();
        let opt = |f: fn(&AuditEntry) -> &Option<String>, max: usize| -> Vec<Option<String>> {
            entries
                .iter()
                .map(|e| f(e).as_deref().map(|t| clean(t, max)))
                .collect()
        };
        let token = opt(|e| &e.token_name, 200);
        let scope = opt(|e| &e.scope, 16);
        let remote = opt(|e| &e.remote_addr, 64);
        let detail = opt(|e| &e.detail, MAX_DETAIL_CHARS);
        let method: Vec<String> = entries.iter().map(|e| clean(&e.method, 16)).collect();
        let path: Vec<String> = entries
            .iter()
            .map(|e| clean(&e.path, MAX_PATH_CHARS))
            .collect();
        let status: Vec<i16> = entries
            .iter()
            .map(|e| i16::try_from(e.status).unwrap_or(i16::MAX))
            .collect();
        sqlx::query(
            "insert into audit_log (at, token_name, scope, method, path, remote_addr, status, detail)
             select * from unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::int2[], $8::text[])",
        )
        .bind(&at)
        .bind(&token)
        .bind(&scope)
        .bind(&method)
        .bind(&path)
        .bind(&remote)
        .bind(&status)
        .bind(&detail)
        .execute(self.pool())
        .await
        .map(|_| ())
        .map_err(|e| err("cannot write the audit log", e))
    }

    /// Audit rows newest first: at most `limit`, with an id below `before` when given.
    pub async fn audit(
        &self,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        sqlx::query_as::<_, AuditRow>(
            "select id, at, token_name, scope, method, path, remote_addr, status, detail
             from audit_log where ($2::int8 is null or id < $2) order by id desc limit $1",
        )
        .bind(limit)
        .bind(before)
        .fetch_all(self.pool())
        .await
        .map_err(|e| err("cannot read the audit log", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cleaned_and_capped() {
        assert_eq!(clean("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("abc", 3), "abc");
    }
}
