//! Hour and day histograms rolled up from minute data in bulk.
//!
//! The writer adds a run's samples to the minute tables; the hour and day
//! tables receive the same samples once a minute has closed, summed over every
//! run of that minute (a probe every second: 60 runs become one row per bin).
//! One mark for the database, `rollup_mark.rolled_through` (T), says where the
//! minute rows stop being counted in the hour and day tables. A run whose minute is before
//! T (late: queued while Postgres was away) is added to all three tables by
//! the writer itself. Readers use the `*_live` views, which add the minute
//! rows from T on, so every answer is exact whatever T is. Migration 0008
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
select date_trunc('{col}', minute, 'UTC'), probe_id, location_id, phase, bin_lo_us, bin_hi_us, sum(count)
from minute_bins
where minute >= $1 and minute < $2
group by 1, 2, 3, 4, 5, 6
on conflict (probe_id, phase, {col}, location_id, bin_lo_us)
do update set count = t.count + excluded.count
"#;

const ROLL_COUNTERS: &str = r#"
insert into {table} as t ({col}, probe_id, location_id, phase, runs, failures, sum_us)
select date_trunc('{col}', minute, 'UTC'), probe_id, location_id, phase,
       sum(runs), sum(failures), sum(sum_us)
from minute_counters
where minute >= $1 and minute < $2
group by 1, 2, 3, 4
on conflict (probe_id, phase, {col}, location_id)
do update set runs = t.runs + excluded.runs, failures = t.failures + excluded.failures,
              sum_us = t.sum_us + excluded.sum_us
"#;

impl Store {
    /// Starts rolling up minutes from `at` on (rounded up to a minute): earlier
    /// minutes are in the hour and day tables already, as writers put them
    /// there while there was no mark. Keeps an existing mark (another replica,
    /// or this one before a restart, started rollups already).
    pub async fn start_rollups(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "insert into rollup_mark (rolled_through) values ($1) on conflict (only_row) do nothing",
        )
        .bind(ceil_minute(at))
        .execute(self.pool())
        .await
        .map_err(|e| err("cannot start the hour and day rollups", e))?;
        Ok(())
    }

    /// Adds the minutes (of every location) that closed by `now` (less
    /// [`CLOSE_AFTER`]) and are not rolled up yet to the hour and day tables,
    /// and moves the mark, in one transaction. Replicas rolling up at once
    /// queue on the mark's row lock; the later finds nothing left to do.
    /// `None` when rollups have not been started.
    pub async fn rollup(&self, now: DateTime<Utc>) -> Result<Option<Rolled>, StoreError> {
        let fail = |e: sqlx::Error| err("rolling up minutes into hours and days failed", e);
        let mut tx = self.pool().begin().await.map_err(fail)?;
        let from: Option<DateTime<Utc>> =
            sqlx::query_scalar("select rolled_through from rollup_mark for update")
                .fetch_optional(&mut *tx)
                .await
                .map_err(fail)?;
        let Some(from) = from else {
            return Ok(None);
        };
        let to = floor_minute(now - CLOSE_AFTER);
        if to <= from {
            return Ok(Some(Rolled {
                upserted: 0,
                through: from,
            }));
        }
        let mut upserted = 0;
        for (template, table, col) in [
            (ROLL_BINS, "hour_bins", "hour"),
            (ROLL_BINS, "day_bins", "day"),
            (ROLL_COUNTERS, "hour_counters", "hour"),
            (ROLL_COUNTERS, "day_counters", "day"),
        ] {
            let sql = template.replace("{table}", table).replace("{col}", col);
            let done = sqlx::query(&sql)
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            upserted += done.rows_affected();
        }
        sqlx::query("update rollup_mark set rolled_through = $1")
            .bind(to)
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

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_minute(t);
    if floor == t {
        t
    } else {
        floor + TimeDelta::minutes(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_round_as_documented() {
        let t: DateTime<Utc> = "2026-11-26T10:15:42.5Z".parse().unwrap();
        let m: DateTime<Utc> = "2026-11-26T10:15:00Z".parse().unwrap();
        assert_eq!(floor_minute(t), m);
        assert_eq!(ceil_minute(t), m + TimeDelta::minutes(1));
        assert_eq!(ceil_minute(m), m);
    }
}
