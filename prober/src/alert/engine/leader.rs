//! Leadership: the replica holding a Postgres advisory lock evaluates the
//! rules over every location. The lock lives on a connection of its own, so
//! it dies with the replica (or its connection) and another takes over.

use crate::store::Store;

/// The advisory lock held by the replica that evaluates the periodic rules.
pub const EVALUATOR_LOCK: i64 = 0x7072_6f62_6572_0001;

/// Holds the evaluator lock on a connection of its own; `None` while another replica holds it.
#[derive(Default)]
pub(super) struct Leadership {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl Leadership {
    /// Keeps or takes the lock; returns whether this replica holds it now.
    pub(super) async fn check(&mut self, store: &Store) -> bool {
        if let Some(c) = self.conn.as_mut() {
            if sqlx::query("select 1").execute(&mut **c).await.is_ok() {
                return true;
            }
            tracing::warn!("lost the connection holding the alert evaluator lock; another replica may take over");
            self.conn = None;
        }
        let Ok(mut c) = store.pool().acquire().await else {
            return false;
        };
        let got: Result<bool, _> = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(EVALUATOR_LOCK)
            .fetch_one(&mut *c)
            .await;
        if got.unwrap_or(false) {
            tracing::info!("this replica now evaluates the periodic alert rules");
            self.conn = Some(c);
            true
        } else {
            false
        }
    }
}
