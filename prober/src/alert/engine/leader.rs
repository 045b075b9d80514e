//! Leadership: one replica evaluates the rules over every location and runs
//! the trend analysis: the holder of the `evaluator` lease, a row in
//! Postgres (`leases`) that it renews every [`RENEW_EVERY`] and that another
//! replica takes once it has not been renewed for [`LEASE_TTL`]. A replica
//! killed, frozen or cut off from Postgres is replaced within TTL + one
//! renewal; a clean shutdown hands the lease over at once.
//!
//! Safety: the holder counts itself leader only until its last successful
//! renewal's start + TTL on its own monotonic clock, which ends no later
//! than Postgres's `expires_at` (taken after the request left); a holder
//! that thaws after a freeze is therefore a follower until it renews. Its
//! leader's changes carry the lease's `term` and are refused once another
//! replica has taken it ([`crate::alert::persist::Fence`]).

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::store::Store;

/// The lease of the replica that evaluates the periodic rules.
pub const EVALUATOR_LEASE: &str = "evaluator";

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How often the holder renews it, and a follower tries to take it.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// The lease as this replica holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    term: i64,
    until: Instant,
}

/// One replica's side of a lease.
#[derive(Debug)]
pub struct Lease {
    name: &'static str,
    /// This replica, unique per process (location, host, process, random).
    pub holder: String,
    ttl: Duration,
    held: Mutex<Option<Held>>,
}

impl Lease {
    /// A lease named `name` that `holder` renews with `ttl`.
    pub fn new(name: &'static str, holder: String, ttl: Duration) -> Lease {
        Lease {
            name,
            holder,
            ttl,
            held: Mutex::new(None),
        }
    }

    /// A holder name for this process: `location/host/pid/random`.
    pub fn holder_for(location: &str) -> String {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{location}/{host}/{}/{}", std::process::id(), &random[..8])
    }

    /// The term this replica holds now, if it holds the lease (its local
    /// deadline not passed).
    pub fn term(&self) -> Option<i64> {
        let held = *self.held.lock();
        held.filter(|h| Instant::now() < h.until).map(|h| h.term)
    }

    /// Renews the lease, or takes it if it is free or expired; returns the
    /// term held now, or `None` (another replica holds it, or Postgres did
    /// not answer: then this replica stops counting itself leader when its
    /// deadline passes).
    pub async fn renew(&self, store: &Store) -> Option<i64> {
        let sent = Instant::now();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let query = sqlx::query_scalar(
            "insert into leases as l (name, holder, term, expires_at)
             values ($1, $2, 1, now() + $3 * interval '1 millisecond')
             on conflict (name) do update
             set holder = excluded.holder,
                 term = case when l.holder = excluded.holder then l.term else l.term + 1 end,
                 expires_at = excluded.expires_at
             where l.holder = excluded.holder or l.expires_at < now()
             returning term",
        )
        .bind(self.name)
        .bind(&self.holder)
        .bind(ttl_ms)
        .fetch_optional(store.pool());
        // A hung Postgres must not hold the renewal past the lease.
        let got = crate::store::bounded(self.ttl / 2, query).await;
        let mut held = self.held.lock();
        match got {
            Ok(Some(term)) => {
                *held = Some(Held {
                    term,
                    until: sent + self.ttl,
                });
                Some(term)
            }
            Ok(None) => {
                *held = None;
                None
            }
            Err(e) => {
                tracing::warn!(lease = self.name, error = %e, "cannot renew the lease; this replica stops leading when it expires");
                held.filter(|h| Instant::now() < h.until).map(|h| h.term)
            }
        }
    }

    /// Gives the lease up (a clean shutdown): another replica takes it at
    /// its next try instead of after the TTL.
    pub async fn release(&self, store: &Store) {
        *self.held.lock() = None;
        // Expired, not deleted: the next holder's term is still higher.
        let done = sqlx::query(
            "update leases set expires_at = '-infinity' where name = $1 and holder = $2",
        )
        .bind(self.name)
        .bind(&self.holder)
        .execute(store.pool())
        .await;
        if let Err(e) = done {
            tracing::warn!(lease = self.name, error = %e, "cannot release the lease; another replica takes it when it expires");
        }
    }

    /// The fence of changes made under term `term` of this lease.
    pub fn fence(&self, term: i64) -> crate::alert::persist::Fence<'_> {
        crate::alert::persist::Fence {
            lease: self.name,
            holder: &self.holder,
            term,
        }
    }
}
