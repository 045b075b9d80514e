//! The fold and the rollup (migration 0011): pending rows of closed minutes
//! move into minute rows once, closed hours into hour and day rows once, late
//! runs go to every resolution, and every read (the live views, the quantile
//! and window queries, the dashboards' views) is exact before, during and
//! after, also while batches and folds run concurrently.

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
        "minute_bins_live",
        "hour_bins_live",
        "day_bins_live",
        "minute_counters_live",
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

/// Phase-total samples and failures stored in a `hist_*` table, checked
/// against the bins' counts.
async fn stored(pool: &PgPool, table: &str) -> (i64, i64) {
    // The minute rows: those in the table and those packed into hour blocks
    // (migration 0015), pending ones aside.
    let table = match table {
        "hist_minute" => {
            "(select probe_id, location_id, minute, bins, stats, sums from hist_minute
                          union all
                          select b.probe_id, b.location_id, k.minute, k.bins, k.stats, k.sums
                          from hist_minute_block b,
                               prober_block_minutes(b.hour, b.bins, b.stats, b.sums) k) m"
        }
        other => other,
    };
    let (runs, failures, n): (i64, i64, i64) = sqlx::query_as(&format!(
        "select coalesce(sum(prober_runs(stats, 0)), 0)::bigint,
                coalesce(sum(prober_failures(stats, 0)), 0)::bigint,
                (select coalesce(sum(e & 4294967295), 0)::bigint
                 from {table}, unnest(bins) e where e >> 48 = 0)
         from {table}"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(n, runs, "{table}: bins and stats count the same samples");
    (runs, failures)
}

#[tokio::test]
async fn closed_minutes_fold_once_hours_roll_up_once_and_reads_stay_exact() {
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

    // A new database has no mark: runs wait as pending rows, readable at once.
    let early: Vec<_> = (0..24)
        .map(|i| run(start + TimeDelta::seconds(5 * i), &mut hist, &mut failures))
        .collect();
    store.write_runs(&early).await.unwrap();
    assert_eq!(store.rollup(start).await.unwrap(), None, "not started");
    assert_eq!(stored(&pool, "hist_pending").await.0, 24);
    assert_exact(&store, &pool, &hist, failures).await;

    // The mark starts at the hour: 09:00.
    store
        .start_rollups(start + TimeDelta::seconds(9 * 60 + 30))
        .await
        .unwrap();
    let later: Vec<_> = (24..360)
        .map(|i| run(start + TimeDelta::seconds(5 * i), &mut hist, &mut failures))
        .collect();
    store.write_runs(&later).await.unwrap();

    // Minutes closed two minutes before `now` are folded: 09:00–09:18.
    let rolled = store
        .rollup(start + TimeDelta::seconds(21 * 60 + 30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rolled.through, start, "no hour has closed");
    assert!(rolled.upserted > 0);
    assert_eq!(stored(&pool, "hist_minute").await.0, 19 * 12);
    assert_eq!(stored(&pool, "hist_hour").await.0, 0);
    assert_exact(&store, &pool, &hist, failures).await;

    // Again with the same clock: nothing to do, nothing counted twice.
    let again = store
        .rollup(start + TimeDelta::seconds(21 * 60 + 30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.upserted, again.through), (0, start));
    assert_exact(&store, &pool, &hist, failures).await;

    // 10:05: the rest is folded and the hour 09:00 rolls up into hours and days.
    let rolled = store
        .rollup(start + TimeDelta::minutes(65))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rolled.through, start + TimeDelta::hours(1));
    for table in ["hist_minute", "hist_hour", "hist_day"] {
        assert_eq!(stored(&pool, table).await, (360, failures), "{table}");
    }
    assert_exact(&store, &pool, &hist, failures).await;

    // A late run of a rolled-up hour goes to every resolution when folded;
    // one of an open minute waits.
    let late = run(
        start + TimeDelta::seconds(5 * 60 + 1),
        &mut hist,
        &mut failures,
    );
    let pending = run(
        start + TimeDelta::seconds(70 * 60 + 1),
        &mut hist,
        &mut failures,
    );
    store.write_runs(&[late, pending]).await.unwrap();
    assert_exact(&store, &pool, &hist, failures).await;
    store
        .rollup(start + TimeDelta::minutes(65))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored(&pool, "hist_hour").await.0, 361);
    assert_eq!(stored(&pool, "hist_day").await.0, 361);
    assert_eq!(stored(&pool, "hist_pending").await.0, 1);
    assert_exact(&store, &pool, &hist, failures).await;

    // Everything closed: the stored rows hold every sample exactly once,
    // the hour 09:00 packed into blocks (before H less an hour), with every
    // run as the API showed it before.
    let day = (start - TimeDelta::hours(9), start + TimeDelta::hours(15));
    let before = store.runs("api", day.0, day.1, None, 1_000).await.unwrap();
    store
        .rollup(start + TimeDelta::hours(3))
        .await
        .unwrap()
        .unwrap();
    let after = store.runs("api", day.0, day.1, None, 1_000).await.unwrap();
    assert_eq!(after.len(), hist.len() as usize);
    assert_eq!(
        format!("{after:?}"),
        format!("{before:?}"),
        "packing changes no run"
    );
    let packed: (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from runs), (select count(*) from hist_minute),
                (select coalesce(sum(cardinality(run_id)), 0)::bigint from run_blocks)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        packed,
        (1, 1, hist.len() as i64 - 1),
        "only 10:10 is left as rows"
    );
    for table in ["hist_minute", "hist_hour", "hist_day"] {
        assert_eq!(
            stored(&pool, table).await,
            (hist.len() as i64, failures),
            "{table}"
        );
    }
    assert_eq!(stored(&pool, "hist_pending").await.0, 0);
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
    // has minutes on both sides of a moving fold.
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
    let rolled = store
        .rollup(start + TimeDelta::hours(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rolled.through, start + TimeDelta::hours(2));
    for table in ["hist_minute", "hist_hour", "hist_day"] {
        assert_eq!(stored(&pool, table).await.0, 1_200, "{table}");
    }
    let mark: DateTime<Utc> = sqlx::query_scalar("select rolled_through from hist_mark")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mark, start + TimeDelta::hours(2));
    assert_exact(&store, &pool, &hist, 0).await;
}

/// A fold in chunks of a few probes, each its own transaction: new
/// minutes, late runs into folded minutes and into minutes before the mark
/// H (which must reach the hour and day rows too), and batches written
/// while the chunks go. Every probe's samples are counted once at every
/// resolution, and its quantiles are HdrHistogram's.
#[tokio::test]
async fn a_fold_in_chunks_of_probes_counts_every_sample_once() {
    let db = TestDb::create().await;
    let store = store(&db).await.with_fold_chunk_rows(3);
    let pool = db.pool().await;
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    store.start_rollups(start).await.unwrap();
    let probes: Vec<_> = (0..7).map(|i| meta(&format!("chunk-{i}"))).collect();
    let mut hists: Vec<_> = (0..probes.len())
        .map(|_| Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap())
        .collect();
    let mut seed = 23;
    // A batch with a run of every probe in each of `minutes` (after 09:00).
    let mut batch = |minutes: &[i64]| {
        let mut batch = Vec::new();
        for (i, m) in probes.iter().enumerate() {
            for &minute in minutes {
                let us = 1_000 + lcg(&mut seed) % 300_000;
                hists[i].record(us).unwrap();
                let at = start + TimeDelta::minutes(minute) + TimeDelta::seconds(i as i64);
                batch.push(record(m, at, us, true));
            }
        }
        batch
    };
    let minutes = |at: i64| start + TimeDelta::minutes(at);

    // New minutes, folded in chunks while H stays at 09:00.
    store.write_runs(&batch(&[0, 1, 10, 20, 30])).await.unwrap();
    store.rollup(minutes(25)).await.unwrap();
    // Late runs into folded minutes, new minutes, then the hour closes.
    store.write_runs(&batch(&[1, 10, 40, 50])).await.unwrap();
    store.rollup(minutes(65)).await.unwrap();
    let mark: DateTime<Utc> = sqlx::query_scalar("select rolled_through from hist_mark")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mark, minutes(60));
    // Late runs before H (into folded minutes and into new ones): the
    // chunks must add them to the hour and day rows as well.
    store.write_runs(&batch(&[10, 55, 59, 61])).await.unwrap();
    assert!(stored(&pool, "hist_pending").await.0 > 3, "several chunks");
    // Batches written while a fold goes.
    let writer = {
        let store = store.clone();
        let batches: Vec<_> = (0..6).map(|b| batch(&[5 * b + 3, 62 + b])).collect();
        tokio::spawn(async move {
            for b in batches {
                store.write_runs(&b).await.unwrap();
            }
        })
    };
    store.rollup(minutes(70)).await.unwrap();
    writer.await.unwrap();
    store.rollup(start + TimeDelta::hours(3)).await.unwrap();
    assert_eq!(stored(&pool, "hist_pending").await.0, 0);
    let all = hists.iter().map(|h| h.len() as i64).sum::<i64>();
    for table in ["hist_minute", "hist_hour", "hist_day"] {
        assert_eq!(stored(&pool, table).await.0, all, "{table}");
    }
    let from: DateTime<Utc> = "2026-11-26T00:00:00Z".parse().unwrap();
    let to = from + TimeDelta::days(1);
    for (m, hist) in probes.iter().zip(&hists) {
        for q in [0.5, 0.99] {
            for res in [Resolution::Minute, Resolution::Hour, Resolution::Day] {
                let got = store.quantile(&m.name, 0, res, from, to, q).await.unwrap();
                let want = Some(hist.value_at_quantile(q) as i64);
                assert_eq!(got, want, "{} p{q} at {res:?}", m.name);
            }
        }
    }
}

#[tokio::test]
async fn locations_share_one_mark_and_any_replica_folds_all_of_them() {
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
    assert_eq!(
        stored(&pool, "hist_minute").await.0,
        0,
        "both locations wait"
    );
    assert_exact(&eu, &pool, &hist, 0).await;

    // Only eu folds (us stopped): both locations' minutes move.
    let rolled = eu
        .rollup(start + TimeDelta::minutes(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rolled.through, start);
    let locations: i64 = sqlx::query_scalar("select count(distinct location_id) from hist_minute")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(locations, 2);
    assert_eq!(stored(&pool, "hist_minute").await.0, 120);
    assert_eq!(stored(&pool, "hist_pending").await.0, 0);
    assert_exact(&eu, &pool, &hist, 0).await;
}

/// `hist_pending` is a queue: every row is deleted a minute after it is
/// written. The vacuum after each fold lets Postgres reuse that space, so the
/// table stays the size of a few minutes of batches however long the daemon
/// runs, even where autovacuum is slow or off (as on the CI machine).
#[tokio::test]
async fn the_pending_queue_stays_small_as_folds_vacuum_it() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let pool = db.pool().await;
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    store.start_rollups(start).await.unwrap();
    let metas: Vec<_> = (0..150).map(|i| meta(&format!("p{i}"))).collect();
    let size = || async {
        sqlx::query_scalar::<_, i64>("select pg_relation_size('hist_pending')")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let mut after_warmup = 0;
    for minute in 0..40 {
        let at = start + TimeDelta::minutes(minute);
        let batch: Vec<_> = metas
            .iter()
            .map(|m| record(m, at, 20_000 + 37 * minute as u64, true))
            .collect();
        store.write_runs(&batch).await.unwrap();
        let rolled = store
            .rollup(at + TimeDelta::seconds(30))
            .await
            .unwrap()
            .unwrap();
        store.vacuum_rolled(rolled.hours).await.unwrap();
        if minute == 9 {
            after_warmup = size().await;
        }
    }
    let end = size().await;
    assert!(after_warmup > 0);
    // Without the vacuum the table grows by every minute's batch: 4x by now.
    assert!(
        end <= after_warmup + 8192 * 2,
        "hist_pending grew from {after_warmup} to {end} bytes over 30 folds"
    );
    assert_eq!(stored(&pool, "hist_minute").await.0, 150 * 37);
}

/// The SQL blocks of README.md ("What is stored"), run as a user would, answer
/// exactly what HdrHistogram answers on the same samples, before and after
/// the fold and rollup.
#[tokio::test]
async fn the_readme_s_sql_answers_exactly() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```sql\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(!blocks.is_empty(), "README.md shows SQL");
    let db = TestDb::create().await;
    let store = store(&db).await;
    let pool = db.pool().await;
    let m = meta("api-health");
    let now = Utc::now();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let mut seed = 3;
    let mut failures = 0i64;
    let batch: Vec<_> = (0..200)
        .map(|i| {
            let us = 20_000 + lcg(&mut seed) % 90_000;
            let ok = i % 9 != 0;
            failures += i64::from(!ok);
            hist.record(us).unwrap();
            record(&m, now - TimeDelta::minutes(5 + 6 * i), us, ok)
        })
        .collect();
    store.write_runs(&batch).await.unwrap();
    let want = (
        Some(hist.value_at_quantile(0.95) as i64),
        Some(200_i64),
        Some(failures),
    );
    for folded in [false, true] {
        if folded {
            store.start_rollups(now - TimeDelta::days(2)).await.unwrap();
            store.rollup(now).await.unwrap().unwrap();
        }
        for sql in &blocks {
            // The per-probe query (`prober_recent`) counts runs over a day and
            // 30 days; every run here is in both.
            let (columns, want) = if sql.contains("runs_30d") {
                (
                    "p95_us, runs_24h::bigint, runs_30d::bigint from ({}) q where name = 'api-health'",
                    (want.0, Some(200), Some(200)),
                )
            } else {
                ("p95_us, runs::bigint, failures::bigint from ({}) q", want)
            };
            let got: (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(&format!(
                "select {}",
                columns.replace("{}", sql.trim().trim_end_matches(';'))
            ))
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("README.md's SQL fails: {e}\n{sql}"));
            assert_eq!(got, want, "folded: {folded}\n{sql}");
        }
    }
}
