//! Hour and day rollups: closed minutes move from the minute tables into the
//! hour and day tables once, late runs take the direct path, and every read
//! (the live views, the quantile and window queries, the dashboards' views)
//! is exact before, during and after a rollup, also while batches and
//! rollups run concurrently.

use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use prober::store::{Resolution, Store};
use sqlx::PgPool;

use crate::db::TestDb;
use crate::store::{lcg, meta, record};

async fn store(db: &TestDb) -> Store {
    let store = Store::new(&db.url, "rollup-location").unwrap();
    store.migrate().await.unwrap();
    store
}

/// Phase-total samples and failures in a table or view, for one probe.
async fn totals(pool: &PgPool, relation: &str) -> (i64, i64) {
    let (bins, counters) = if relation.contains("counters") {
        (relation.replace("counters", "bins"), relation.to_string())
    } else {
        (relation.to_string(), relation.replace("bins", "counters"))
    };
    let n: i64 = sqlx::query_scalar(&format!(
        "select coalesce(sum(count), 0)::bigint from {bins} where phase = 0"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    let (runs, failures): (i64, i64) = sqlx::query_as(&format!(
        "select coalesce(sum(runs), 0)::bigint, coalesce(sum(failures), 0)::bigint from {counters} where phase = 0"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(n, runs, "{bins} and {counters} count the same samples");
    (runs, failures)
}

/// What every reader must see whatever has been rolled up.
async fn assert_exact(store: &Store, pool: &PgPool, hist: &Histogram<u64>, failures: i64) {
    let all = hist.len() as i64;
    for relation in [
        "minute_bins",
        "hour_bins_live",
        "day_bins_live",
        "minute_counters",
        "hour_counters_live",
        "day_counters_live",
    ] {
        assert_eq!(totals(pool, relation).await, (all, failures), "{relation}");
    }
    for resolution in ["hour", "day"] {
        let n: i64 = sqlx::query_scalar(
            "select coalesce(sum(count), 0)::bigint from all_bins where resolution = $1 and phase = 0",
        )
        .bind(resolution)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(n, all, "all_bins at {resolution}");
    }
    let from: DateTime<Utc> = "2026-11-26T00:00:00Z".parse().unwrap();
    let to = from + TimeDelta::days(1);
    for q in [0.5, 0.95, 0.99] {
        for res in [Resolution::Minute, Resolution::Hour, Resolution::Day] {
            let got = store.quantile("api", 0, res, from, to, q).await.unwrap();
            assert_eq!(
                got,
                Some(hist.value_at_quantile(q) as i64),
                "p{q} at {res:?}"
            );
        }
    }
}

#[tokio::test]
async fn closed_minutes_move_to_hours_and_days_once_and_reads_stay_exact() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let pool = db.pool().await;
    let m = meta("api");
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let mut failures = 0;
    let mut seed = 11;
    let mut run = |at: DateTime<Utc>, hist: &mut Histogram<u64>, failures: &mut i64| {
        let us = 40_000 + lcg(&mut seed) % 30_000;
        let ok = !lcg(&mut seed).is_multiple_of(10);
        hist.record(us).unwrap();
        *failures += i64::from(!ok);
        record(&m, at, us, ok)
    };

    // Without a mark every run goes to all three resolutions at once.
    let early: Vec<_> = (0..24)
        .map(|i| run(start + TimeDelta::seconds(5 * i), &mut hist, &mut failures))
        .collect();
    store.write_runs(&early).await.unwrap();
    assert_eq!(totals(&pool, "hour_bins").await.0, 24);
    assert_eq!(store.rollup(start).await.unwrap(), None, "not started");

    // From 09:10 on, minutes wait for the rollup.
    store
        .start_rollups(start + TimeDelta::seconds(9 * 60 + 30))
        .await
        .unwrap();
    let later: Vec<_> = (24..360)
        .map(|i| run(start + TimeDelta::seconds(5 * i), &mut hist, &mut failures))
        .collect();
    store.write_runs(&later).await.unwrap();
    assert_eq!(totals(&pool, "hour_bins").await.0, 120, "09:00–09:10 only");
    // Days roll up from 10:00 on: every run so far went to the day tables at once.
    assert_eq!(totals(&pool, "day_counters").await.0, 360);
    assert_exact(&store, &pool, &hist, failures).await;

    // Minutes closed two minutes before `now` are rolled up: 09:10–09:19.
    let rolled = store
        .rollup(start + TimeDelta::seconds(21 * 60 + 30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rolled.through, start + TimeDelta::minutes(19));
    assert!(rolled.upserted > 0);
    assert_eq!(totals(&pool, "hour_bins").await.0, 19 * 12);
    assert_eq!(totals(&pool, "day_bins").await.0, 360);
    assert_exact(&store, &pool, &hist, failures).await;

    // Again with the same clock: nothing to do, nothing counted twice.
    let again = store
        .rollup(start + TimeDelta::seconds(21 * 60 + 30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.upserted, again.through), (0, rolled.through));
    assert_exact(&store, &pool, &hist, failures).await;

    // A late run of a rolled-up minute goes to the hour and day tables directly;
    // one of a pending minute waits.
    let late = run(
        start + TimeDelta::seconds(5 * 60 + 1),
        &mut hist,
        &mut failures,
    );
    let pending = run(
        start + TimeDelta::seconds(25 * 60 + 1),
        &mut hist,
        &mut failures,
    );
    store.write_runs(&[late, pending]).await.unwrap();
    assert_eq!(totals(&pool, "hour_bins").await.0, 19 * 12 + 1);
    assert_exact(&store, &pool, &hist, failures).await;

    // Everything closed: the physical tables hold every sample exactly once.
    store
        .rollup(start + TimeDelta::hours(2))
        .await
        .unwrap()
        .unwrap();
    for table in ["hour_bins", "day_bins", "hour_counters", "day_counters"] {
        assert_eq!(
            totals(&pool, table).await,
            (hist.len() as i64, failures),
            "{table}"
        );
    }
    assert_exact(&store, &pool, &hist, failures).await;
}

#[tokio::test]
async fn concurrent_batches_and_rollups_count_every_sample_once() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let pool = db.pool().await;
    let m = meta("api");
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    store.start_rollups(start).await.unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    // 30 batches, each of 40 runs spread over the hour, so that every batch
    // has minutes on both sides of a moving mark.
    let mut batches = Vec::new();
    let mut seed = 5;
    for b in 0..30 {
        let batch: Vec<_> = (0..40)
            .map(|i| {
                let at = start + TimeDelta::seconds((b * 97 + i * 89) % 3_600);
                let us = 1_000 + lcg(&mut seed) % 200_000;
                hist.record(us).unwrap();
                record(&m, at, us, true)
            })
            .collect();
        batches.push(batch);
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for batch in batches {
                store.write_runs(&batch).await.unwrap();
            }
        })
    };
    let roller = {
        let store = store.clone();
        tokio::spawn(async move {
            for minute in (3..=62).step_by(2) {
                store
                    .rollup(start + TimeDelta::minutes(minute))
                    .await
                    .unwrap();
            }
        })
    };
    writer.await.unwrap();
    roller.await.unwrap();
    assert_exact(&store, &pool, &hist, 0).await;
    store
        .rollup(start + TimeDelta::hours(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(totals(&pool, "hour_bins").await.0, 1_200);
    // Days came from the closed hours (09:00–10:00), partly while batches ran.
    assert_eq!(totals(&pool, "day_counters").await.0, 1_200);
    assert_eq!(totals(&pool, "day_bins").await.0, 1_200);
    let day_mark: DateTime<Utc> = sqlx::query_scalar("select day_rolled_through from rollup_mark")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(day_mark, start + TimeDelta::hours(2));
    assert_exact(&store, &pool, &hist, 0).await;
}

#[tokio::test]
async fn locations_share_one_mark_and_any_replica_rolls_up_all_of_them() {
    let db = TestDb::create().await;
    let eu = store(&db).await;
    let us = Store::new(&db.url, "us-east").unwrap();
    let pool = db.pool().await;
    let m = meta("api");
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    eu.start_rollups(start).await.unwrap();
    // A later replica keeps the mark it finds.
    us.start_rollups(start + TimeDelta::hours(5)).await.unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    for (i, s) in [&eu, &us].into_iter().enumerate() {
        let batch: Vec<_> = (0..60)
            .map(|k| {
                let us = 5_000 + 1_000 * (k + i as i64 * 60) as u64;
                hist.record(us).unwrap();
                record(&m, start + TimeDelta::seconds(10 * k), us, true)
            })
            .collect();
        s.write_runs(&batch).await.unwrap();
    }
    assert_eq!(totals(&pool, "hour_bins").await.0, 0, "both locations wait");
    assert_exact(&eu, &pool, &hist, 0).await;

    // Only eu rolls up (us stopped): both locations' minutes move.
    let rolled = eu
        .rollup(start + TimeDelta::minutes(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rolled.through, start + TimeDelta::minutes(28));
    let locations: i64 = sqlx::query_scalar("select count(distinct location_id) from hour_bins")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(locations, 2);
    assert_eq!(totals(&pool, "hour_bins").await.0, 120);
    assert_exact(&eu, &pool, &hist, 0).await;
}
