//! Hour and day histograms rolled up from minute data in bulk.
//!
//! The writer adds a run's samples to the minute tables. Once a minute, the
//! minutes closed since the last time are summed into the hour tables (a
//! probe every second: 60 runs become one row per bin); once an hour, the
//! closed hour's rows are summed into the day tables. One row,
//! `rollup_mark`, holds the two marks: `rolled_through` (T, minutes before it
//! are in the hour tables) and `day_rolled_through` (D, hours before it are in
//! the day tables). A run whose minute is before T (late: queued while
//! Postgres was away) is added to the hour tables by the writer itself, and
//! to the day tables when before D. Readers use the `*_live` views, which add
//! what is not rolled up yet, so every answer is exact whatever T and D are.
//! Migration 0008
//! explains the locking.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::{err, Store, StoreError};

/// How often the writer rolls up closed minutes.
pub const ROLLUP_EVERY: Duration = Duration::from_secs(60);

/// How long after a minute ends it is rolled up: runs finish after the tick
/// they belong to (up to their timeout), and a minute rolled up too early only
/// sends its late runs down the writer's slower path.
const CLOSE_AFTER: TimeDelta = TimeDelta::minutes(2);

/// What one rollup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolled {
    /// Rows added to or updated in the hour and day tables.
    pub upserted: u64,
    /// The mark after the rollup.
    pub through: DateTime<Utc>,
}

const ROLL_BINS: &str = r#"
insert into {table} as t ({col}, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count)
select date_trunc('{col}', {src_col}, 'UTC'), probe_id, location_id, phase, bin_lo_us, bin_hi_us, sum(count)
from {src}_bins
where {src_col} >= $1 and {src_col} < $2
group by 1, 2, 3, 4, 5, 6
on conflict (probe_id, phase, {col}, location_id, bin_lo_us)
do update set count = t.count + excluded.count
"#;

const ROLL_COUNTERS: &str = r#"
insert into {table} as t ({col}, probe_id, location_id, phase, runs, failures, sum_us)
select date_trunc('{col}', {src_col}, 'UTC'), probe_id, location_id, phase,
       sum(runs), sum(failures), sum(sum_us)
from {src}_counters
where {src_col} >= $1 and {src_col} < $2
group by 1, 2, 3, 4
on conflict (probe_id, phase, {col}, location_id)
do update set runs = t.runs + excluded.runs, failures = t.failures + excluded.failures,
              sum_us = t.sum_us + excluded.sum_us
"#;

impl Store {
    /// Starts rolling up minutes into hours from `at` on (rounded up to a
    /// minute) and hours into days from the hour after `at`: earlier data is
    /// in the hour and day tables already, as writers put it there while there
    /// was no mark. Keeps an existing mark (another replica, or this one
    /// before a restart, started rollups already).
    pub async fn start_rollups(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "insert into rollup_mark (rolled_through, day_rolled_through) values ($1, $2)
             on conflict (only_row) do nothing",
        )
        .bind(ceil(at, MINUTE))
        .bind(ceil(at, HOUR))
        .execute(self.pool())
        .await
        .map_err(|e| err("cannot start the hour and day rollups", e))?;
        Ok(())
    }

    /// Adds the minutes (of every location) that closed by `now` (less
    /// [`CLOSE_AFTER`]) and are not rolled up yet to the hour tables, then the
    /// hours wholly rolled up and not yet in the day tables to those, and
    /// moves the marks, in one transaction. Replicas rolling up at once queue
    /// on the mark's row lock; the later finds nothing left to do. `None` when
    /// rollups have not been started.
    pub async fn rollup(&self, now: DateTime<Utc>) -> Result<Option<Rolled>, StoreError> {
        let fail = |e: sqlx::Error| err("rolling up minutes into hours and days failed", e);
        let mut tx = self.pool().begin().await.map_err(fail)?;
        // The first rollup after a long stop covers many minutes: more than
        // the connections' 30 s `statement_timeout` may be needed.
        sqlx::query("set local statement_timeout = '10min'")
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        let marks: Option<(DateTime<Utc>, DateTime<Utc>)> =
            sqlx::query_as("select rolled_through, day_rolled_through from rollup_mark for update")
                .fetch_optional(&mut *tx)
                .await
                .map_err(fail)?;
        let Some((from, day_from)) = marks else {
            return Ok(None);
        };
        let to = floor(now - CLOSE_AFTER, MINUTE).max(from);
        // Only hours whose every minute is in the hour tables.
        let day_to = floor(to, HOUR).max(day_from);
        let mut upserted = 0;
        for (template, table, col, src, src_col, lo, hi) in [
            (ROLL_BINS, "hour_bins", "hour", "minute", "minute", from, to),
            (
                ROLL_COUNTERS,
                "hour_counters",
                "hour",
                "minute",
                "minute",
                from,
                to,
            ),
            (
                ROLL_BINS, "day_bins", "day", "hour", "hour", day_from, day_to,
            ),
            (
                ROLL_COUNTERS,
                "day_counters",
                "day",
                "hour",
                "hour",
                day_from,
                day_to,
            ),
        ] {
            if hi <= lo {
                continue;
            }
            let sql = template
                .replace("{table}", table)
                .replace("{col}", col)
                .replace("{src}", src)
                .replace("{src_col}", src_col);
            let done = sqlx::query(&sql)
                .bind(lo)
                .bind(hi)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            upserted += done.rows_affected();
        }
        sqlx::query("update rollup_mark set rolled_through = $1, day_rolled_through = $2")
            .bind(to)
            .bind(day_to)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(Some(Rolled {
            upserted,
            through: to,
        }))
    }
}

/// `t` rounded down to a multiple of `step` (a minute or an hour).
fn floor(t: DateTime<Utc>, step: TimeDelta) -> DateTime<Utc> {
    t.duration_trunc(step).unwrap_or(t)
}

/// `t` rounded up to a multiple of `step`.
fn ceil(t: DateTime<Utc>, step: TimeDelta) -> DateTime<Utc> {
    let down = floor(t, step);
    if down == t {
        t
    } else {
        down + step
    }
}

const MINUTE: TimeDelta = TimeDelta::minutes(1);
const HOUR: TimeDelta = TimeDelta::hours(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_round_as_documented() {
        let t: DateTime<Utc> = "2026-11-26T10:15:42.5Z".parse().unwrap();
        let m: DateTime<Utc> = "2026-11-26T10:15:00Z".parse().unwrap();
        assert_eq!(floor(t, MINUTE), m);
        assert_eq!(ceil(t, MINUTE), m + TimeDelta::minutes(1));
        assert_eq!(ceil(m, MINUTE), m);
        let h: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        assert_eq!(floor(t, HOUR), h);
        assert_eq!(ceil(t, HOUR), h + TimeDelta::hours(1));
        assert_eq!(ceil(h, HOUR), h);
    }
}
