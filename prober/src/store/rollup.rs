//! The fold and the rollup: pending histogram rows into minute, hour and day rows.
//!
//! The writer inserts one `hist_pending` row per (probe, location, minute) of
//! each batch and never updates anything (migration 0011 has the encoding).
//! Once a minute the daemon's writer task calls [`Store::rollup`], which, in
//! one short transaction under an advisory lock (replicas take turns):
//! 1. deletes the pending rows of closed minutes and adds them to
//!    `hist_minute`, and to `hist_hour` and `hist_day` when their minute is
//!    before the mark H (late runs, e.g. queued while Postgres was away):
//!    first those whose minute row exists, then, in a second statement, the
//!    new minutes;
//! 2. adds the minute rows of the hours closed since, [H, H'), to `hist_hour`
//!    and `hist_day`, and moves H to H';
//! 3. then rewrites `hist_recent` (every probe's last day and month in one
//!    row, for the fleet reads; migration 0014) for the new H. Between two
//!    moves, triggers keep those rows exact as minutes are folded.
//!
//! Then, in transactions of their own, [`Store::pack`] moves the runs and
//! minute rows of the hours before H less [`PACK_AFTER`] into one block row
//! per (probe, location, hour) each (migration 0015), and
//! [`Store::pack_hours`] the hour rows of the days closed more than
//! [`HOURS_PACK_AFTER`] ago into one block per (probe, location, day)
//! (migration 0020).
//!
//! After the transaction, [`Store::vacuum_rolled`] vacuums what it churned:
//! `hist_pending` is a queue (every row deleted a minute after it is
//! written), and day rows are rewritten every hour. Autovacuum would get to
//! them, but when it is slow or off (a tuned-down cluster) the dead rows make
//! every fold scan more and the table grow without bound.
//!
//! A pending row is deleted in the transaction that counts it, so every run
//! is counted once at every resolution, whoever folds. Readers use the
//! `*_live` views: stored rows plus the pending rows and the minutes at or
//! after H, so every answer is exact whatever has been folded.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::{err, Store, StoreError};

/// How often the writer folds closed minutes.
pub const ROLLUP_EVERY: Duration = Duration::from_secs(60);

/// How long after a minute ends it is folded: runs finish after the tick they
/// belong to (up to their timeout); a run arriving later is still counted, by
/// the next fold, at a little more cost.
const CLOSE_AFTER: TimeDelta = TimeDelta::minutes(2);

/// Hours before H less this are packed into blocks (`Store::pack`): the
/// last closed hour stays rows, for the readers of the latest runs and for
/// late and replayed runs to meet their rows.
const PACK_AFTER: TimeDelta = TimeDelta::hours(1);

/// How far back the first pack of a database looks: past the longest
/// default retention (minutes, 31 days).
const PACK_FIRST: TimeDelta = TimeDelta::days(32);

/// Days that ended more than this ago have their hour rows packed into
/// day blocks (`Store::pack_hours`, migration 0020): past every window the
/// daemon reads from `hist_hour` directly (the trend analysis' drift week
/// and the same hours of earlier days), and past the 30-day reads (panels,
/// fleet reads, burn rates), which then open no block.
pub const HOURS_PACK_AFTER: TimeDelta = TimeDelta::days(35);

/// Days of hour rows packed per rollup at most: packing a day of 1,000
/// probes at 60 s takes Postgres about 20–30 s, and an upgraded database holding
/// a year of hour rows catches up a day a minute rather than in one go.
const HOUR_PACK_DAYS_PER_ROLLUP: usize = 1;

/// Days without hour rows passed over per rollup at most (each is one
/// short transaction), so a daemon that was stopped for weeks catches up.
const HOUR_PACK_EMPTY_DAYS_PER_ROLLUP: usize = 64;

/// Pending rows folded per transaction, about (whole probes per chunk).
/// The fold of a minute of 5,000 probes every second is 300,000 rows and
/// seconds of one Postgres core; in one statement it held that core while
/// the prober needed it, and runs started late (BENCHMARKS.md, "The fold in
/// chunks"). A chunk of this many rows takes Postgres about 0.1 s.
pub const FOLD_CHUNK_ROWS: i64 = 5_000;

/// After a chunk of the fold, a pause this many times as long as the chunk
/// took: the fold uses at most half of one Postgres core, however large.
const FOLD_PAUSE_RATIO: f64 = 1.0;

/// The advisory lock folds take, so replicas never interleave (`"prober"` in ASCII).
pub(super) const FOLD_LOCK: i64 = 0x7072_6f62_6572;

/// What one rollup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolled {
    /// Rows added to or updated in the minute, hour and day tables.
    pub upserted: u64,
    /// Minutes before this are in the hour and day tables.
    pub through: DateTime<Utc>,
    /// Whether this rollup moved the mark (rolled at least one hour up).
    pub hours: bool,
}

/// Merges the rows of `{src}` where `{filter}` and `{late}` hold by (probe,
/// location, `{res}`) and adds them to `hist_{res}`. Each group's bins are
/// gathered into one array and normalised by one call of `prober_bins_norm`
/// (migration 0011): one small sort and group per row written. Grouping
/// every bin by (probe, location, period, bin) across the whole fold, one
/// hash table of 1.5 million entries at 5,000 runs/s, cost more
/// (ARCHITECTURE.md, "The fold's SQL"). Counters are few (one per phase), so
/// they are still summed in one table-wide group, the cheaper of the two
/// measured for them.
const UPSERT: &str = r#"
b_{res} as (
    select probe_id, location_id, date_trunc('{res}', minute, 'UTC') as t,
           prober_bins_norm(array_agg(e)) as bins
    from {src}, unnest(bins) e where {filter} and {late} group by 1, 2, 3
),
s_{res} as (
    select probe_id, location_id, t,
           array_agg((p << 48) | (r << 24) | f order by p) as stats, array_agg(s order by p) as sums
    from (select probe_id, location_id, date_trunc('{res}', minute, 'UTC') as t, e >> 48 as p,
                 sum((e >> 24) & 16777215)::int8 as r, sum(e & 16777215)::int8 as f,
                 sum(v)::int8 as s
          from {src}, unnest(stats, sums) as u(e, v) where {filter} and {late}
          group by 1, 2, 3, 4) x
    group by 1, 2, 3
),
w_{res} as (
    insert into hist_{res} as h (probe_id, location_id, {res}, bins, stats, sums)
    select probe_id, location_id, t, b.bins, s.stats, s.sums
    from s_{res} s join b_{res} b using (probe_id, location_id, t)
    order by 1, 2, 3
    on conflict (probe_id, location_id, {res}) do update
    set bins = prober_bins_add(h.bins, excluded.bins),
        stats = prober_stats_add(h.stats, excluded.stats),
        sums = prober_sums_add(h.stats, h.sums, excluded.stats, excluded.sums)
    returning 1
)
"#;

/// The statement adding `src` (a relation with the pending rows' columns) to
/// the tables of `targets` (resolution, condition on `minute`).
fn add_statement(prelude: &str, src: &str, filter: &str, targets: &[(&str, &str)]) -> String {
    let ctes: Vec<String> = targets
        .iter()
        .map(|(res, late)| {
            UPSERT
                .replace("{src}", src)
                .replace("{filter}", filter)
                .replace("{res}", res)
                .replace("{late}", late)
        })
        .collect();
    let counts: Vec<String> = targets
        .iter()
        .map(|(res, _)| format!("(select count(*) from w_{res})"))
        .collect();
    format!(
        "with {prelude}{} select ({})::int8",
        ctes.join(","),
        counts.join(" + ")
    )
}

/// The pending row `p`'s minute row exists: its minute was folded before.
const MINUTE_ROW_EXISTS: &str =
    "exists (select 1 from hist_minute m where m.probe_id = p.probe_id \
     and m.location_id = p.location_id and m.minute = p.minute)";

/// Step 1, late rows first: pending rows of minutes before $1 whose minute
/// row exists already, into those minute rows, and into hour and day rows
/// when before H ($2). A statement of its own, before [`fold_sql`]'s
/// inserts: one statement that updated a minute row at or after R and
/// inserted another counted the new one twice in `hist_recent` (its update
/// trigger's refresh reads the inserted row, then its insert trigger adds
/// it; migration 0022).
fn fold_late_sql() -> String {
    fold_statement(&format!("{IN_CHUNK} and {MINUTE_ROW_EXISTS}"))
}

/// Step 1, then: the other pending rows of minutes before $1 into new minute
/// rows, and into hour and day rows when before H ($2). A row whose minute
/// row appeared since step 1 (a late run written in between) stays pending
/// for the next fold, so this statement never updates a minute row.
fn fold_sql() -> String {
    fold_statement(&format!("{IN_CHUNK} and not {MINUTE_ROW_EXISTS}"))
}

/// The pending row `p` is of a minute before $1 and of a probe in the
/// chunk [$3, $4] (`hist_pending_probe` finds them).
const IN_CHUNK: &str = "p.minute < $1 and p.probe_id between $3 and $4";

/// The pending rows where `which` holds into minute, hour and day rows.
/// The minute target comes first, and its statement trigger fires first: a
/// probe's late minute before H and a new one at or after R in one
/// statement have the minute trigger add the new minute to the probe's
/// `hist_recent` row, and then the hour and day triggers rewrite that row
/// whole. In the other order the rewrite would read the new minute and the
/// minute trigger add it again (migrations 0014 and 0022).
fn fold_statement(which: &str) -> String {
    add_statement(
        &format!(
            "moved as (delete from hist_pending p where {which} \
             returning p.probe_id, p.location_id, p.minute, p.bins, p.stats, p.sums),"
        ),
        "moved",
        "true",
        &[
            ("minute", "true"),
            ("hour", "minute < $2"),
            ("day", "minute < $2"),
        ],
    )
}

/// Step 2: minute rows of [$1, $2) into hour and day rows.
fn roll_sql() -> String {
    add_statement(
        "",
        "hist_minute",
        "minute >= $1 and minute < $2",
        &[("hour", "true"), ("day", "true")],
    )
}

impl Store {
    /// Starts folding and rolling up with the mark at `at`'s hour, unless a
    /// mark exists (another replica, this one before a restart, or the
    /// migration that copied v1 data). Without a mark nothing was ever
    /// folded, so any mark is right: pending rows before it are folded into
    /// every resolution at once, later ones wait for their hour to close.
    pub async fn start_rollups(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "insert into hist_mark (rolled_through) values ($1) on conflict (only_row) do nothing",
        )
        .bind(floor(at, HOUR))
        .execute(self.pool())
        .await
        .map_err(|e| err("cannot start the hour and day rollups", e))?;
        Ok(())
    }

    /// Folds the pending rows of minutes closed by `now` (less
    /// [`CLOSE_AFTER`]) and rolls the hours closed since the last time into
    /// hour and day rows. The fold goes in chunks of about
    /// [`FOLD_CHUNK_ROWS`] pending rows (whole probes), each a transaction;
    /// the last chunk, the hour rollup and the recent rows' refresh are one
    /// transaction. `None` without a mark.
    pub async fn rollup(&self, now: DateTime<Utc>) -> Result<Option<Rolled>, StoreError> {
        let fail = |e: sqlx::Error| err("folding minutes into minute, hour and day rows failed", e);
        let close = floor(now - CLOSE_AFTER, MINUTE);
        // The probes before `rest` were folded in chunks of their own.
        let (chunked, rest) = self.fold_chunks(close).await?;
        let mut tx = self.fold_transaction().await.map_err(fail)?;
        type Mark = (
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        );
        let mark: Option<Mark> = sqlx::query_as(
            "select rolled_through, recent_through, packed_through, hours_packed_through
             from hist_mark for update",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        let Some((from, recent, packed, hours_packed)) = mark else {
            return Ok(None);
        };
        let to = floor(close, HOUR).max(from);
        if to > from {
            // The recent rows are rewritten for the new H below: their
            // triggers stand aside until then (migration 0014).
            sqlx::query("update hist_mark set recent_through = null")
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        let mut upserted = chunked + fold(&mut tx, close, from, (rest, i32::MAX)).await?;
        if to > from {
            upserted += sqlx::query_scalar::<_, i64>(&roll_sql())
                .bind(from)
                .bind(to)
                .fetch_one(&mut *tx)
                .await
                .map_err(fail)?;
            sqlx::query("update hist_mark set rolled_through = $1")
                .bind(to)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        // Also when another release moved H without them (N-1 in a rolling
        // upgrade): readers use the recent rows only while R = H.
        if to > from || recent != Some(to) {
            sqlx::query("select prober_recent_refresh($1, null, null)")
                .bind(to)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        self.pack(packed, to - PACK_AFTER).await?;
        self.pack_hours(hours_packed, floor_day(to) - HOURS_PACK_AFTER)
            .await?;
        Ok(Some(Rolled {
            upserted: u64::try_from(upserted).unwrap_or(0),
            through: to,
            hours: to > from,
        }))
    }
}

/// Step 1 for the probes `[first, last]`, in `tx`: late rows, then new
/// minutes (`$1` the close, `$2` the mark H).
async fn fold(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    close: DateTime<Utc>,
    mark: DateTime<Utc>,
    (first, last): (i32, i32),
) -> Result<i64, StoreError> {
    let fail = |e: sqlx::Error| err("folding minutes into minute, hour and day rows failed", e);
    let mut upserted = 0;
    for sql in [fold_late_sql(), fold_sql()] {
        upserted += sqlx::query_scalar::<_, i64>(&sql)
            .bind(close)
            .bind(mark)
            .bind(first)
            .bind(last)
            .fetch_one(&mut **tx)
            .await
            .map_err(fail)?;
    }
    Ok(upserted)
}

/// The last probe id of each chunk of about `rows` pending rows, whole
/// probes, from `(probe id, rows)` in probe order; the rows after the last
/// end are left for the rollup's own transaction.
fn chunk_ends(counts: &[(i32, i64)], rows: i64) -> Vec<i32> {
    let mut ends = Vec::new();
    let mut sum = 0;
    for &(probe, n) in counts {
        sum += n;
        if sum >= rows {
            ends.push(probe);
            sum = 0;
        }
    }
    if sum == 0 {
        // The last chunk ended on the last probe: the rollup's transaction takes it.
        ends.pop();
    }
    ends
}

impl Store {
    /// Pending rows folded per transaction ([`FOLD_CHUNK_ROWS`] unless set):
    /// tests fold a few probes per chunk.
    pub fn with_fold_chunk_rows(mut self, rows: i64) -> Store {
        self.fold_chunk_rows = rows.max(1);
        self
    }

    /// Folds the pending rows of minutes before `close` in chunks of about
    /// `fold_chunk_rows` rows of whole probes, each in a transaction of its
    /// own, with a pause after each ([`FOLD_PAUSE_RATIO`]); the rows after
    /// the last chunk are left to the caller. Returns the rows upserted and
    /// the first probe id left. Rows written meanwhile for probes already
    /// passed wait for the next fold: a row of a minute before H then goes
    /// to the hour and day rows too, as any late row does.
    async fn fold_chunks(&self, close: DateTime<Utc>) -> Result<(i64, i32), StoreError> {
        let fail = |e: sqlx::Error| err("folding minutes into minute, hour and day rows failed", e);
        // Under the fold's statement timeout: after a long outage the
        // pending rows are many, and the pool's 30 s would fail every fold.
        let mut tx = self.fold_transaction().await.map_err(fail)?;
        let counts: Vec<(i32, i64)> = sqlx::query_as(
            "select probe_id, count(*) from hist_pending where minute < $1 group by 1 order by 1",
        )
        .bind(close)
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        let mut upserted = 0;
        let mut first = i32::MIN;
        for last in chunk_ends(&counts, self.fold_chunk_rows) {
            let started = std::time::Instant::now();
            let mut tx = self.fold_transaction().await.map_err(fail)?;
            let mark: Option<DateTime<Utc>> =
                sqlx::query_scalar("select rolled_through from hist_mark")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(fail)?;
            let Some(mark) = mark else {
                return Ok((upserted, first));
            };
            upserted += fold(&mut tx, close, mark, (first, last)).await?;
            tx.commit().await.map_err(fail)?;
            first = last.saturating_add(1);
            tokio::time::sleep(started.elapsed().mul_f64(FOLD_PAUSE_RATIO)).await;
        }
        Ok((upserted, first))
    }

    /// A transaction holding the fold lock (replicas fold and pack in turn),
    /// with a statement timeout long enough for the first fold or pack after
    /// a long stop: more than the connections' 30 s may be needed.
    async fn fold_transaction(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("set local statement_timeout = '10min'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(FOLD_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Packs the runs and minute rows before `through` into hour blocks
    /// (`prober_pack`, migration 0015), from where the last pack stopped
    /// (`packed`, read with the mark), a day per transaction: the first pack
    /// of a database full of rows (an upgrade) moves at most a day's rows at
    /// a time. Nothing to do when the last pack reached `through`.
    async fn pack(
        &self,
        packed: Option<DateTime<Utc>>,
        through: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fail = |e: sqlx::Error| err("packing closed hours into blocks failed", e);
        let mut at = packed.unwrap_or(through - PACK_FIRST);
        while at < through {
            at = (at + TimeDelta::days(1)).min(through);
            let mut tx = self.fold_transaction().await.map_err(fail)?;
            sqlx::query("select prober_pack($1)")
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
        }
        Ok(())
    }

    /// Packs the hour rows of the days before `through` (a UTC midnight)
    /// into day blocks (`prober_pack_hours`, migration 0020), a day per
    /// transaction from where the last pack stopped (`packed`; the first
    /// pack of a database starts at its oldest hour row): at most
    /// [`HOUR_PACK_DAYS_PER_ROLLUP`] days with rows, and
    /// [`HOUR_PACK_EMPTY_DAYS_PER_ROLLUP`] without. Nothing to do when the
    /// last pack reached `through`.
    pub(super) async fn pack_hours(
        &self,
        packed: Option<DateTime<Utc>>,
        through: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fail = |e: sqlx::Error| err("packing closed days of hour rows into blocks failed", e);
        let pack = |at: DateTime<Utc>| async move {
            let mut tx = self.fold_transaction().await?;
            let packed: i64 = sqlx::query_scalar("select prober_pack_hours($1)")
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(packed)
        };
        let mut at = match packed {
            Some(at) => at,
            None => {
                // Sets the mark (nothing is older), so this is asked once.
                // No index answers it: a scan of every hour row, under the
                // fold's long statement timeout, not the pool's 30 s.
                let mut tx = self.fold_transaction().await.map_err(fail)?;
                let oldest: Option<DateTime<Utc>> =
                    sqlx::query_scalar("select min(hour) from hist_hour")
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                let start = floor_day(oldest.unwrap_or(through).min(through));
                pack(start).await.map_err(fail)?;
                start
            }
        };
        let (mut full, mut empty) = (0, 0);
        while at < through
            && full < HOUR_PACK_DAYS_PER_ROLLUP
            && empty < HOUR_PACK_EMPTY_DAYS_PER_ROLLUP
        {
            at = (at + TimeDelta::days(1)).min(through);
            if pack(at).await.map_err(fail)? > 0 {
                full += 1;
            } else {
                empty += 1;
            }
        }
        Ok(())
    }

    /// Vacuums the tables a rollup churned: `hist_pending` and `hist_recent`
    /// (its rows are rewritten as minutes are added) after every fold,
    /// `hist_hour` and `hist_day` after an hour was rolled up (`hours`),
    /// and then `runs` and `hist_minute` too, which the pack emptied of an
    /// hour (their old partitions are truncated to nothing).
    /// `skip_locked`: a replica's vacuum in progress is enough. Without the
    /// table's ownership Postgres skips it with a warning, and the rows wait
    /// for autovacuum: nothing is wrong, only slower.
    pub async fn vacuum_rolled(&self, hours: bool) -> Result<(), StoreError> {
        let tables = if hours {
            "hist_pending, hist_recent, hist_hour, hist_day, runs, hist_minute"
        } else {
            "hist_pending, hist_recent"
        };
        sqlx::raw_sql(&format!("vacuum (skip_locked) {tables}"))
            .execute(self.pool())
            .await
            .map_err(|e| err(&format!("vacuuming {tables} after a rollup failed"), e))?;
        Ok(())
    }
}

/// `t` rounded down to its UTC midnight.
fn floor_day(t: DateTime<Utc>) -> DateTime<Utc> {
    floor(t, TimeDelta::days(1))
}

/// `t` rounded down to a multiple of `step` (a minute, an hour or a day).
fn floor(t: DateTime<Utc>, step: TimeDelta) -> DateTime<Utc> {
    t.duration_trunc(step).unwrap_or(t)
}

const MINUTE: TimeDelta = TimeDelta::minutes(1);
const HOUR: TimeDelta = TimeDelta::hours(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_whole_probes_and_leave_the_rest() {
        let counts = [(1, 3), (2, 3), (5, 1), (7, 4), (9, 2)];
        assert_eq!(chunk_ends(&counts, 5), vec![2, 7], "probe 9's 2 rows left");
        assert_eq!(
            chunk_ends(&[(1, 2), (2, 2)], 2),
            vec![1],
            "the chunk ending on the last probe is left"
        );
        assert_eq!(chunk_ends(&counts, 1), vec![1, 2, 5, 7]);
        assert_eq!(
            chunk_ends(&counts, 100),
            Vec::<i32>::new(),
            "one transaction"
        );
        assert_eq!(chunk_ends(&[], 1), Vec::<i32>::new());
    }

    #[test]
    fn minutes_round_as_documented() {
        let t: DateTime<Utc> = "2026-11-26T10:15:42.5Z".parse().unwrap();
        let m: DateTime<Utc> = "2026-11-26T10:15:00Z".parse().unwrap();
        assert_eq!(floor(t, MINUTE), m);
        let h: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        assert_eq!(floor(t, HOUR), h);
        let d: DateTime<Utc> = "2026-11-26T00:00:00Z".parse().unwrap();
        assert_eq!(floor_day(t), d);
    }
}
