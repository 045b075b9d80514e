//! The fleet reads' recent rows (migration 0014): `prober_recent(probe, at)`
//! answers exactly what the hour and day rows answer, at every step of the
//! fold and the rollup, with late runs in closed minutes, hours and days, two
//! locations, pending rows, and a mark moved by a release that does not keep
//! the recent rows (N-1); and the quantile functions agree with HdrHistogram
//! on merged and on concatenated, unsorted input.

use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use prober::store::Store;
use sqlx::PgPool;

use crate::db::TestDb;
use crate::store::{lcg, meta, record};

/// One window's content, comparable: the merged bins of every phase and the
/// per-phase (phase, runs, failures, sum of µs).
#[derive(Debug, PartialEq)]
struct Window {
    bins: Vec<i64>,
    stats: Vec<(i64, i64, i64, i64)>,
}

const MERGED: &str = "select coalesce(prober_merge(bins), '{}') from src";
const STATS: &str = "select e >> 48, sum((e >> 24) & 16777215)::int8, sum(e & 16777215)::int8,
                            sum(v)::int8
                     from src, unnest(stats, sums) as u(e, v) group by 1 order by 1";

async fn window(pool: &PgPool, src: &str, probe: i32, at: DateTime<Utc>) -> Window {
    let with = format!("with src as ({src}) ");
    let bins: Vec<i64> = sqlx::query_scalar(&format!("{with}{MERGED}"))
        .bind(probe)
        .bind(at)
        .fetch_one(pool)
        .await
        .unwrap();
    let stats = sqlx::query_as(&format!("{with}{STATS}"))
        .bind(probe)
        .bind(at)
        .fetch_all(pool)
        .await
        .unwrap();
    Window { bins, stats }
}

/// Asserts that `prober_recent` equals the live hour and day views at `at`.
/// Returns whether it answered from the recent rows (R = `at`'s hour).
async fn assert_recent_exact(pool: &PgPool, probe: i32, at: DateTime<Utc>, what: &str) -> bool {
    let day = window(
        pool,
        "select bins, stats, sums from prober_recent($1, $2) where bins is not null",
        probe,
        at,
    )
    .await;
    let day_live = window(
        pool,
        "select bins, stats, sums from hist_hour_live
         where probe_id = $1 and hour >= date_trunc('hour', $2::timestamptz, 'UTC') - interval '23 hours'",
        probe,
        at,
    )
    .await;
    assert_eq!(day, day_live, "{what}: the last 24 hours at {at}");
    assert!(!day.stats.is_empty(), "{what}: the day window holds runs");
    // Month: counters only (sums are not kept for it).
    let month = window(
        pool,
        "select '{}'::int8[] as bins, month_stats as stats,
                array_fill(0::int8, array[cardinality(month_stats)]) as sums
         from prober_recent($1, $2) where month_stats is not null",
        probe,
        at,
    )
    .await;
    let month_live = window(
        pool,
        "select '{}'::int8[] as bins, stats, array_fill(0::int8, array[cardinality(stats)]) as sums
         from hist_day_live
         where probe_id = $1 and day >= date_trunc('day', $2::timestamptz, 'UTC') - interval '29 days'",
        probe,
        at,
    )
    .await;
    assert_eq!(month, month_live, "{what}: the last 30 days at {at}");
    sqlx::query_scalar(
        "select coalesce((select recent_through = date_trunc('hour', $1::timestamptz, 'UTC')
                          from hist_mark), false)",
    )
    .bind(at)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn recent_rows_answer_as_the_hour_and_day_rows_through_folds_and_rollups() {
    let db = TestDb::create().await;
    let eu = Store::new(&db.url, "eu-west").unwrap();
    eu.migrate().await.unwrap();
    let us = Store::new(&db.url, "us-east").unwrap();
    let pool = db.pool().await;
    let m = meta("api");
    let mut seed = 7;
    let mut runs = |store: &Store, at: DateTime<Utc>, n: i64| {
        let batch: Vec<_> = (0..n)
            .map(|i| {
                let us = 1_000 + lcg(&mut seed) % 900_000;
                record(&m, at + TimeDelta::seconds(i), us, i % 7 != 0)
            })
            .collect();
        let store = store.clone();
        async move { store.write_runs(&batch).await.unwrap() }
    };
    let nine: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    runs(&eu, nine - TimeDelta::days(2), 20).await;
    runs(&eu, nine + TimeDelta::minutes(5), 30).await;
    runs(&us, nine + TimeDelta::minutes(40), 30).await;
    let probe: i32 = sqlx::query_scalar("select id from probes where name = 'api'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let at = nine + TimeDelta::minutes(50);

    // No mark yet: answered from the hour and day rows.
    assert!(!assert_recent_exact(&pool, probe, at, "before the rollups start").await);
    eu.start_rollups(nine + TimeDelta::minutes(1))
        .await
        .unwrap();
    eu.rollup(nine + TimeDelta::minutes(50)).await.unwrap();
    assert!(assert_recent_exact(&pool, probe, at, "first fold: R = H = 09:00").await);

    // 10:05: 09:00 rolls up, R moves with H; at 10:30 the recent rows answer,
    // at 11:10 (H not moved yet) the hour rows do.
    eu.rollup(nine + TimeDelta::minutes(65)).await.unwrap();
    let ten_thirty = nine + TimeDelta::minutes(90);
    assert!(assert_recent_exact(&pool, probe, ten_thirty, "after the hour rolled up").await);
    assert!(!assert_recent_exact(&pool, probe, nine + TimeDelta::minutes(130), "H behind").await);

    // Minutes of the current hour, folded: added by the minute rows' trigger.
    runs(&eu, nine + TimeDelta::minutes(70), 40).await;
    runs(&us, nine + TimeDelta::minutes(72), 10).await;
    eu.rollup(nine + TimeDelta::minutes(85)).await.unwrap();
    assert!(assert_recent_exact(&pool, probe, ten_thirty, "current minutes folded").await);

    // Late runs into a closed hour of the day window, a closed day of the
    // month window, and a minute already folded: each refreshes its pairs.
    runs(&eu, nine + TimeDelta::minutes(6), 5).await;
    runs(&us, nine - TimeDelta::days(20), 5).await;
    runs(&eu, nine + TimeDelta::minutes(70), 3).await;
    eu.rollup(nine + TimeDelta::minutes(86)).await.unwrap();
    assert!(assert_recent_exact(&pool, probe, ten_thirty, "late runs folded").await);

    // A late run into a folded minute of the current hour and a new minute,
    // in one fold: the minute row's update and insert both reach the recent
    // row, each once.
    runs(
        &eu,
        nine + TimeDelta::minutes(70) + TimeDelta::seconds(50),
        2,
    )
    .await;
    runs(&eu, nine + TimeDelta::minutes(82), 3).await;
    eu.rollup(nine + TimeDelta::minutes(87)).await.unwrap();
    assert!(assert_recent_exact(&pool, probe, ten_thirty, "a late and a new minute").await);

    // Not folded yet: pending rows count too.
    runs(&us, nine + TimeDelta::minutes(88), 4).await;
    runs(&eu, nine - TimeDelta::hours(5), 4).await;
    assert!(assert_recent_exact(&pool, probe, ten_thirty, "pending rows").await);

    // A previous release moves H without the recent rows: they are not used
    // until this release's next rollup rewrites them.
    sqlx::query("update hist_mark set rolled_through = rolled_through + interval '1 hour'")
        .execute(&pool)
        .await
        .unwrap();
    let eleven_thirty = nine + TimeDelta::minutes(150);
    assert!(!assert_recent_exact(&pool, probe, eleven_thirty, "N-1 moved H").await);
    eu.rollup(nine + TimeDelta::minutes(150)).await.unwrap();
    assert!(assert_recent_exact(&pool, probe, eleven_thirty, "rewritten").await);
}

#[tokio::test]
async fn quantile_functions_agree_with_hdrhistogram_on_merged_and_concatenated_bins() {
    let db = TestDb::create().await;
    let store = Store::new(&db.url, "test-location").unwrap();
    store.migrate().await.unwrap();
    let pool = db.pool().await;
    let m = meta("api");
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let mut seed = 5;
    // Three batches: three pending rows per minute, each sorted, together not.
    for batch in 0..3 {
        let runs: Vec<_> = (0..400)
            .map(|i| {
                let us = 50 + lcg(&mut seed) % (2_000_000 >> (2 * batch));
                hist.record(us).unwrap();
                record(&m, start + TimeDelta::milliseconds(100 * i), us, true)
            })
            .collect();
        store.write_runs(&runs).await.unwrap();
    }
    let qs = [0.0, 0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];
    for (input, sorted) in [("prober_merge", true), ("prober_cat", false)] {
        let (is_sorted, got, several): (bool, Vec<i64>, Vec<i64>) = sqlx::query_as(&format!(
            "with b as (select {input}(prober_phase(bins, 0)) as b from hist_pending)
             select b = array(select x from unnest(b) x order by x),
                    array(select prober_quantile(q, b, 0) from unnest($1::float8[]) with ordinality u(q, o) order by o),
                    prober_quantiles($1::float8[], b, 0)
             from b"
        ))
        .bind(&qs[..])
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(is_sorted, sorted, "{input} gives a sorted array: {sorted}");
        let want: Vec<i64> = qs
            .iter()
            .map(|&q| hist.value_at_quantile(q) as i64)
            .collect();
        assert_eq!(got, want, "prober_quantile over {input}");
        assert_eq!(several, want, "prober_quantiles over {input}");
    }
    // No sample of the phase: null, as before.
    let none: (Option<i64>, Vec<Option<i64>>) = sqlx::query_as(
        "select prober_quantile(0.5, '{}'::int8[], 0), prober_quantiles(array[0.5, 0.9], '{}'::int8[], 0)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(none, (None, vec![None, None]));
}
