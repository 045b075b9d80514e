//! Hour blocks (migration 0020): the rollup packs the hour rows of days
//! closed more than 35 days ago into one row per (probe, location, day).
//! Every read answers as the rows did (the API's quantiles equal
//! HdrHistogram's, the burn rates count every run, the views a previous
//! release reads give the same rows and counts), a
//! late row of a packed day is added to its block, a row a block cannot hold
//! stays a row without reopening its day's block, and retention drops packed
//! days.

use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use prober::store::{Resolution, Store};
use sqlx::PgPool;

use crate::blocks::lab;
use crate::store::{lcg, meta, record};

type HourRow = (DateTime<Utc>, Vec<i64>, Vec<i64>, Vec<i64>);

/// The probe's hour rows through `source` (`prober_hours(…)` or the view
/// `hist_hour_live`), in time order.
async fn hours(pool: &PgPool, source: &str, probe: &str) -> Vec<HourRow> {
    sqlx::query_as(&format!(
        "select hour, bins, stats, sums from {source}
         where probe_id = (select id from probes where name = $1) order by hour"
    ))
    .bind(probe)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// (hour rows, packed days) of every probe.
async fn stored(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "select (select count(*) from hist_hour), (select count(*) from hist_hour_block)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Quantiles of phase `total` over two days at hour and day resolution, as
/// the API reads them, against HdrHistogram's on the same samples.
async fn assert_quantiles(store: &Store, from: DateTime<Utc>, hist: &Histogram<u64>) {
    let to = from + TimeDelta::days(2);
    for res in [Resolution::Hour, Resolution::Day] {
        for q in [0.5, 0.95, 0.99, 1.0] {
            let got = store
                .quantile("old-api", 0, res, from, to, q)
                .await
                .unwrap();
            assert_eq!(
                got,
                Some(hist.value_at_quantile(q) as i64),
                "p{q} at {res:?}"
            );
        }
    }
}

#[tokio::test]
async fn packed_days_answer_as_their_hour_rows_did_and_take_late_rows() {
    let (_db, store, pool) = lab().await;
    let m = meta("old-api");
    let start: DateTime<Utc> = "2026-09-01T00:00:00Z".parse().unwrap();
    store.start_rollups(start).await.unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let mut seed = 11;
    // A run every two minutes for two days, one in 17 failed.
    let batch: Vec<_> = (0..1_440)
        .map(|i| {
            let us = 2_000 + lcg(&mut seed) % 200_000;
            hist.record(us).unwrap();
            record(&m, start + TimeDelta::minutes(2 * i), us, i % 17 != 0)
        })
        .collect();
    assert_eq!(store.write_runs(&batch).await.unwrap(), 1_440);
    store
        .rollup(start + TimeDelta::days(2) + TimeDelta::minutes(5))
        .await
        .unwrap()
        .unwrap();
    let before = hours(&pool, "prober_hours('-infinity', 'infinity')", "old-api").await;
    assert_eq!(before.len(), 48);
    assert_eq!(stored(&pool).await, (48, 0));

    // 37 days later: the first rollup marks the oldest day and packs it, the
    // next one packs the second day (a day per rollup).
    let later = start + TimeDelta::days(37) + TimeDelta::minutes(5);
    store.rollup(later).await.unwrap().unwrap();
    assert_eq!(stored(&pool).await, (24, 1));
    store.rollup(later).await.unwrap().unwrap();
    assert_eq!(stored(&pool).await, (0, 2));
    let bounded = hours(&pool, "prober_hours('-infinity', 'infinity')", "old-api").await;
    assert_eq!(bounded, before, "prober_hours reads the blocks as the rows");
    let view = hours(&pool, "hist_hour_live", "old-api").await;
    assert_eq!(
        view, before,
        "the view a previous release reads is unchanged"
    );
    let failures: i64 = sqlx::query_scalar(
        "select sum(prober_failures(stats, 0))::bigint from prober_hours($1, $2)",
    )
    .bind(start)
    .bind(start + TimeDelta::days(2))
    .fetch_one(&pool)
    .await
    .unwrap();
    let failed = (0..1_440).filter(|i| i % 17 == 0).count() as u64;
    assert_eq!(failures, failed as i64);
    assert_quantiles(&store, start, &hist).await;
    // The burn rates' counts over a 40-day window, and the counters view a
    // previous release reads them from.
    let counts = prober::alert::persist::window_counts(
        &store,
        &["old-api".to_string()],
        &[std::time::Duration::from_secs(40 * 86_400)],
        later,
    )
    .await
    .unwrap();
    assert_eq!(
        (counts["old-api"][0].runs, counts["old-api"][0].failures),
        (1_440, failed)
    );
    let view: (i64, i64) = sqlx::query_as(
        "select sum(runs)::bigint, sum(failures)::bigint from hour_counters_live where phase = 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(view, (1_440, failed as i64));

    // A run replayed 37 days late: folded into an hour row, then added to
    // its day's block when the next day is packed.
    let late_at = start + TimeDelta::hours(3) + TimeDelta::seconds(7);
    hist.record(5_000).unwrap();
    let late = record(&m, late_at, 5_000, true);
    assert_eq!(store.write_runs(&[late]).await.unwrap(), 1);
    store
        .rollup(later + TimeDelta::minutes(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored(&pool).await, (1, 2));
    assert_quantiles(&store, start, &hist).await;
    store
        .rollup(later + TimeDelta::days(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored(&pool).await, (0, 2), "the late row joined its block");
    let after = hours(&pool, "prober_hours('-infinity', 'infinity')", "old-api").await;
    assert_eq!(after.len(), 48);
    let runs = |rows: &[HourRow]| -> i64 { rows.iter().map(|r| (r.2[0] >> 24) & 0xff_ffff).sum() };
    assert_eq!((runs(&before), runs(&after)), (1_440, 1_441));
    let changed: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(_, a)| a.0)
        .collect();
    assert_eq!(changed, vec![start + TimeDelta::hours(3)]);
    assert_quantiles(&store, start, &hist).await;
}

#[tokio::test]
async fn a_row_no_block_can_hold_stays_a_row_and_retention_drops_packed_days() {
    let (_db, store, pool) = lab().await;
    let m = meta("old-api");
    let start: DateTime<Utc> = "2026-09-01T00:00:00Z".parse().unwrap();
    store.start_rollups(start).await.unwrap();
    // The first hours of two days.
    let batch: Vec<_> = (0..2)
        .flat_map(|d| (0..4).map(move |h| start + TimeDelta::days(d) + TimeDelta::hours(h)))
        .map(|at| record(&m, at, 3_000, true))
        .collect();
    store.write_runs(&batch).await.unwrap();
    store
        .rollup(start + TimeDelta::days(2) + TimeDelta::minutes(5))
        .await
        .unwrap()
        .unwrap();
    // 40,000 samples in one bin in one hour (a probe run 11 times a second):
    // over what a block's int2 count holds.
    sqlx::query(
        "insert into hist_hour (probe_id, location_id, hour, bins, stats, sums)
         select probe_id, location_id, $1, array[(prober_key_of(1000) << 32) | 40000],
                array[40000::int8 << 24], array[40000000::int8]
         from hist_hour limit 1",
    )
    .bind(start + TimeDelta::hours(5))
    .execute(&pool)
    .await
    .unwrap();

    let later = start + TimeDelta::days(37) + TimeDelta::minutes(5);
    store.rollup(later).await.unwrap().unwrap();
    store.rollup(later).await.unwrap().unwrap();
    assert_eq!(stored(&pool).await, (1, 2), "the big row stays a row");
    let version = || async {
        sqlx::query_scalar::<_, String>("select xmin::text from hist_hour_block where day = $1")
            .bind(start)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let packed_once = version().await;
    store
        .rollup(later + TimeDelta::days(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        version().await,
        packed_once,
        "the row that stays does not reopen its day's block"
    );
    let runs: i64 = sqlx::query_scalar(
        "select sum(prober_runs(stats, 0))::bigint from prober_hours('-infinity', 'infinity')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(runs, 8 + 40_000);

    // Hours are kept 400 days: a day goes once its last hour is past that.
    let retention = prober::config::settings::Retention {
        runs: std::time::Duration::from_secs(14 * 86_400),
        minutes: std::time::Duration::from_secs(31 * 86_400),
        hours: std::time::Duration::from_secs(400 * 86_400),
    };
    let now = start + TimeDelta::days(401) + TimeDelta::hours(1);
    store.apply_retention(now, &retention).await.unwrap();
    assert_eq!(
        stored(&pool).await,
        (0, 1),
        "the first day and its big row are gone"
    );
    let days: Vec<DateTime<Utc>> = sqlx::query_scalar("select day from hist_hour_block")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(days, vec![start + TimeDelta::days(1)]);
}
