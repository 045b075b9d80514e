//! Replicas of one location share its probes (issue 18, item 2).
//!
//! Each replica renews its row in `members` every [`RENEW_EVERY`] and reads
//! the live rows of its location: the members. A probe's ticks are run by
//! the member with the highest rendezvous score (SHA-256 of member and
//! probe), so a member that joins or leaves moves only its share of the
//! probes. One replica alone runs every probe: the zero-configuration case.
//!
//! Handover: a replica killed, frozen or cut off from Postgres stops renewing;
//! its row expires after [`MEMBER_TTL`] and the others take its probes at
//! their next renewal, within TTL + one renewal (≤ 8 s). A clean shutdown
//! deletes the row as scheduling stops, so the others take over within one
//! renewal. While two replicas' views differ (a few seconds around a change)
//! both may run a tick; its run id ([`crate::run::tick_run_id`]) is the same
//! on both, and the store keeps one.
//!
//! Postgres away: the last view is kept for a TTL (this replica always in
//! it); past that every replica that cannot read the members runs every
//! probe, since the others' rows may have expired meanwhile (their ticks
//! are stored once). A replica starts running ticks
//! once it has read the members, or after [`JOIN_WAIT`] if Postgres does
//! not answer (then alone, it runs every probe).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::schedule::Turn;
use crate::store::writer::StoreHealth;
use crate::store::Store;

/// How long a member's row lasts without renewal.
pub const MEMBER_TTL: Duration = Duration::from_secs(6);
/// How often a member renews its row and reads the others'.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A replica runs no tick until it has read the members once, or for this
/// long when Postgres does not answer (then it runs every probe): a replica
/// joining others does not run their probes meanwhile.
pub const JOIN_WAIT: Duration = Duration::from_secs(4);

/// This replica's view of its location's members.
#[derive(Debug)]
pub struct Members {
    location: String,
    /// This replica's name: `location/host/pid/random`.
    pub me: String,
    /// Every live member, this one included, sorted.
    view: RwLock<Arc<Vec<String>>>,
    /// Set once the members have been read (or [`JOIN_WAIT`] passed).
    joined: std::sync::atomic::AtomicBool,
    created: std::time::Instant,
    /// The last successful read of the members.
    read_at: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl Members {
    pub fn new(location: &str, me: String) -> Members {
        Members {
            location: location.to_string(),
            view: RwLock::new(Arc::new(vec![me.clone()])),
            me,
            joined: std::sync::atomic::AtomicBool::new(false),
            created: std::time::Instant::now(),
            read_at: parking_lot::Mutex::new(None),
        }
    }

    /// The members as last read.
    pub fn view(&self) -> Arc<Vec<String>> {
        self.view.read().clone()
    }

    /// Whether this replica runs `probe`'s ticks.
    pub fn owns(&self, probe: &str) -> bool {
        self.turn(probe) == Turn::Mine
    }

    /// Whose turn `probe`'s tick is: unknown while joining (up to
    /// [`JOIN_WAIT`] before the first read of the members).
    pub fn turn(&self, probe: &str) -> Turn {
        use std::sync::atomic::Ordering;
        if !self.joined.load(Ordering::Relaxed) {
            if self.created.elapsed() < JOIN_WAIT {
                return Turn::Unknown;
            }
            self.joined.store(true, Ordering::Relaxed);
        }
        // Members not read for a TTL (Postgres away): the others' rows may
        // have expired meanwhile, so every probe runs here rather than none
        // (a tick another replica also runs is stored once).
        if self.read_at.lock().is_none_or(|t| t.elapsed() > MEMBER_TTL) {
            return Turn::Mine;
        }
        let view = self.view();
        match owner(&view, probe) {
            Some(m) if *m != self.me => Turn::Theirs,
            _ => Turn::Mine,
        }
    }

    /// Renews this replica's row and reads the live members; on failure the
    /// view stays as it was. Returns the view before when it changed.
    pub async fn renew(&self, store: &Store) -> Option<Arc<Vec<String>>> {
        let ttl_ms = i64::try_from(MEMBER_TTL.as_millis()).unwrap_or(i64::MAX);
        let query = sqlx::query_scalar(
            "with me as (
                insert into members (location, member, expires_at)
                values ($1, $2, now() + $3 * interval '1 millisecond')
                on conflict (location, member) do update set expires_at = excluded.expires_at
                returning member),
             gone as (
                -- Rows of replicas killed long ago: they would pile up otherwise.
                delete from members
                 where location = $1 and expires_at < now() - interval '1 hour')
             select member from members
              where location = $1 and expires_at > now() and member <> $2
             union all select member from me",
        )
        .bind(&self.location)
        .bind(&self.me)
        .bind(ttl_ms)
        .fetch_all(store.pool());
        match crate::store::bounded(RENEW_EVERY, query).await {
            Ok(mut members) => {
                members.sort();
                members.dedup();
                *self.read_at.lock() = Some(std::time::Instant::now());
                let joined = self.joined.swap(true, std::sync::atomic::Ordering::Relaxed);
                let mut view = self.view.write();
                if !joined {
                    // The first read, before any tick ran here: every probe this
                    // replica runs is taken over, its alerts read as saved.
                    *view = Arc::new(members);
                    return Some(Arc::new(Vec::new()));
                }
                if **view == members {
                    return None;
                }
                tracing::info!(
                    location = %self.location,
                    members = members.len(),
                    me = %self.me,
                    "the replicas sharing this location's probes changed; each probe now runs on one of them"
                );
                Some(std::mem::replace(&mut *view, Arc::new(members)))
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot renew this replica's membership; the probes stay assigned as they were");
                None
            }
        }
    }

    /// Deletes this replica's row: the others take its probes at their next renewal.
    pub async fn leave(&self, store: &Store) {
        let query = sqlx::query("delete from members where location = $1 and member = $2")
            .bind(&self.location)
            .bind(&self.me)
            .execute(store.pool());
        if let Err(e) = crate::store::bounded(RENEW_EVERY, query).await {
            tracing::warn!(error = %e, "cannot leave the members of this location; the others take its probes when its row expires");
        }
    }

    /// Renews every [`RENEW_EVERY`] once the database is prepared, until
    /// `leave` is cancelled (scheduling stopped): then leaves. `changed` is
    /// told the view before and after each change.
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        health: Arc<StoreHealth>,
        leave: CancellationToken,
        changed: impl Fn(&[String], &[String]) + Send + Sync + 'static,
    ) {
        tokio::select! {
            _ = health.wait_prepared() => {}
            _ = leave.cancelled() => return,
        }
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(before) = self.renew(&store).await {
                        changed(&before, &self.view());
                    }
                }
                _ = leave.cancelled() => {
                    self.leave(&store).await;
                    return;
                }
            }
        }
    }
}

/// Of `probes`, those `me` runs under `after` but did not under `before`.
pub fn adopted<'a>(
    probes: impl Iterator<Item = &'a str>,
    me: &str,
    before: &[String],
    after: &[String],
) -> Vec<String> {
    let mine = |view: &[String], p: &str| owner(view, p).is_some_and(|m| m == me);
    probes
        .filter(|p| !mine(before, p) && mine(after, p))
        .map(str::to_string)
        .collect()
}

/// The member that runs `probe`: the highest rendezvous score.
pub fn owner<'a>(members: &'a [String], probe: &str) -> Option<&'a String> {
    members.iter().max_by_key(|m| score(m, probe))
}

fn score(member: &str, probe: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((member.len() as u64).to_le_bytes());
    h.update(member.as_bytes());
    h.update(probe.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("lab/host/{i}/abcd")).collect()
    }

    #[test]
    fn each_probe_has_one_owner_and_the_shares_are_even() {
        let members = names(3);
        let probes: Vec<String> = (0..3000).map(|i| format!("p{i}")).collect();
        let mut counts = [0usize; 3];
        for p in &probes {
            let owners: Vec<&String> = members
                .iter()
                .filter(|m| owner(&members, p) == Some(*m))
                .collect();
            assert_eq!(owners.len(), 1);
            counts[members.iter().position(|m| m == owners[0]).unwrap()] += 1;
        }
        for c in counts {
            assert!((900..=1100).contains(&c), "uneven shares: {counts:?}");
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_probes() {
        let three = names(3);
        let two: Vec<String> = three[..2].to_vec();
        for i in 0..1000 {
            let p = format!("p{i}");
            let before = owner(&three, &p).unwrap();
            let after = owner(&two, &p).unwrap();
            if before != &three[2] {
                assert_eq!(before, after, "{p} moved though its owner stayed");
            }
        }
    }

    #[test]
    fn adopted_probes_are_those_that_move_to_this_replica() {
        let three = names(3);
        let two: Vec<String> = three[..2].to_vec();
        let probes: Vec<String> = (0..300).map(|i| format!("p{i}")).collect();
        let me = &three[0];
        let got = adopted(probes.iter().map(String::as_str), me, &three, &two);
        let expected: Vec<String> = probes
            .iter()
            .filter(|p| owner(&three, p) == Some(&three[2]) && owner(&two, p) == Some(me))
            .cloned()
            .collect();
        assert_eq!(got, expected);
        assert!(!got.is_empty());
        assert!(adopted(probes.iter().map(String::as_str), me, &two, &three).is_empty());
    }

    #[test]
    fn alone_a_replica_owns_everything() {
        let m = Members::new("lab", "lab/h/1/x".into());
        assert_eq!(
            m.turn("anything"),
            Turn::Unknown,
            "not known before it has read the members"
        );
        m.joined.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(m.owns("anything"), "never read: alone");
        *m.read_at.lock() = Some(std::time::Instant::now());
        assert!(m.owns("anything"));
        *m.view.write() = Arc::new(vec!["lab/h/1/x".into(), "lab/h/2/y".into()]);
        let mine = (0..100).filter(|i| m.owns(&format!("p{i}"))).count();
        assert!(mine > 20 && mine < 80, "{mine}");
    }
}
