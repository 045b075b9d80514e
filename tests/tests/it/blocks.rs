//! Blocks (migration 0015): the rollup packs closed hours of runs and minute
//! rows into one row per (probe, location, hour); a batch replayed after its
//! hour was packed is still counted once, a late run joins its hour's block,
//! every read stays exact, and retention drops packed hours with their days.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use prober::results::hist::bin_key;
use prober::store::{Resolution, Store};
use sqlx::PgPool;

use crate::db::TestDb;
use crate::store::{lcg, meta, record};

async fn store(db: &TestDb) -> Store {
    let store = Store::new(&db.url, "blocks-location").unwrap();
    store.migrate().await.unwrap();
    store
}

/// A new database with a migrated store, and a pool to look at it (the
/// database lives as long as the first).
pub(crate) async fn lab() -> (TestDb, Store, PgPool) {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let pool = db.pool().await;
    (db, store, pool)
}

/// (runs stored as rows, runs packed, samples of phase `total` at minute
/// resolution, the same at hour resolution).
async fn counts(pool: &PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "select (select count(*) from runs),
                (select coalesce(sum(cardinality(run_id)), 0)::bigint from run_blocks),
                (select coalesce(sum(prober_runs(stats, 0)), 0)::bigint
                 from prober_minutes('-infinity', 'infinity')),
                (select coalesce(sum(prober_runs(stats, 0)), 0)::bigint from hist_hour_live)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_batch_replayed_after_its_hour_was_packed_counts_once() {
    let (_db, store, pool) = lab().await;
    let m = meta("api");
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    store.start_rollups(start).await.unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let mut seed = 3;
    // Every sample's time and total, for the half-hour check below.
    let mut samples = Vec::new();
    let mut sample = |at: DateTime<Utc>, hist: &mut Histogram<u64>| {
        let us = 2_000 + lcg(&mut seed) % 90_000;
        hist.record(us).unwrap();
        samples.push((at, us));
        record(&m, at, us, true)
    };
    // One run a minute for two hours: every (minute, phase) cell holds one
    // sample, whose bin a block leaves out and puts back when read.
    let batch: Vec<_> = (0..120)
        .map(|i| sample(start + TimeDelta::seconds(60 * i), &mut hist))
        .collect();
    assert_eq!(store.write_runs(&batch).await.unwrap(), 120);

    // 12:05: H is 12:00, so 09:00 and 10:00 are packed.
    store
        .rollup(start + TimeDelta::minutes(185))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counts(&pool).await, (0, 120, 120, 120));
    let blocks: (i64, i64) = sqlx::query_as(
        "select (select count(*) from run_blocks), (select count(*) from hist_minute_block)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(blocks, (2, 2), "one block per hour, of runs and of minutes");
    let explicit: i64 =
        sqlx::query_scalar("select sum(cardinality(bins))::bigint from hist_minute_block")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(explicit, 0, "one-sample cells store no bins");

    // The batch again (a writer that never saw its acknowledgement): no run
    // is new, nothing is counted twice, once folded and packed either.
    assert_eq!(store.write_runs(&batch).await.unwrap(), 0);
    store
        .rollup(start + TimeDelta::minutes(186))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counts(&pool).await, (0, 120, 120, 120));

    // A late run of the packed hour is new: stored as a row, folded into
    // every resolution, then packed into its hour's block by the pack of
    // the next hour (its minute's cells now hold two samples each).
    let late = sample(start + TimeDelta::seconds(30 * 60 + 7), &mut hist);
    assert_eq!(store.write_runs(&[late]).await.unwrap(), 1);
    store
        .rollup(start + TimeDelta::minutes(187))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counts(&pool).await, (1, 120, 121, 121));
    store
        .rollup(start + TimeDelta::minutes(245))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counts(&pool).await, (0, 121, 121, 121));

    let binned: i64 = sqlx::query_scalar(
        "select sum(e & 4294967295)::bigint
         from prober_minutes('-infinity', 'infinity') m, unnest(m.bins) e where e >> 48 = 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(binned, 121, "every sample has its bin again when read");
    let day = (start - TimeDelta::hours(9), start + TimeDelta::hours(15));
    for res in [Resolution::Minute, Resolution::Hour, Resolution::Day] {
        for q in [0.5, 0.99] {
            let got = store
                .quantile("api", 0, res, day.0, day.1, q)
                .await
                .unwrap();
            assert_eq!(
                got,
                Some(hist.value_at_quantile(q) as i64),
                "p{q} at {res:?}"
            );
        }
    }
    // Half an hour inside a packed hour: only the blocks' minutes in range.
    let half = store
        .quantile(
            "api",
            0,
            Resolution::Minute,
            start + TimeDelta::minutes(30),
            start + TimeDelta::minutes(60),
            1.0,
        )
        .await
        .unwrap();
    let mut second_half = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    for (at, us) in &samples {
        if *at >= start + TimeDelta::minutes(30) && *at < start + TimeDelta::minutes(60) {
            second_half.record(*us).unwrap();
        }
    }
    assert_eq!(second_half.len(), 31);
    assert_eq!(half, Some(second_half.max() as i64));
    let runs = store.runs("api", day.0, day.1, None, 1_000).await.unwrap();
    assert_eq!(runs.len(), 121);
    assert!(runs
        .windows(2)
        .all(|w| (w[0].scheduled_at, w[0].run_id) > (w[1].scheduled_at, w[1].run_id)));
}

#[tokio::test]
async fn retention_drops_packed_hours_with_their_days() {
    let (_db, store, pool) = lab().await;
    let m = meta("old");
    let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
    let old = record(&m, now - TimeDelta::days(20), 1_000, true);
    let recent = record(&m, now - TimeDelta::hours(3), 1_000, true);
    store.write_runs(&[old, recent]).await.unwrap();
    store
        .start_rollups(now - TimeDelta::days(21))
        .await
        .unwrap();
    store.rollup(now).await.unwrap().unwrap();
    let packed: (i64, i64) = sqlx::query_as(
        "select (select count(*) from run_blocks), (select count(*) from hist_minute_block)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(packed, (2, 2));

    let retention = prober::config::settings::Retention {
        runs: std::time::Duration::from_secs(14 * 86_400),
        minutes: std::time::Duration::from_secs(31 * 86_400),
        hours: std::time::Duration::from_secs(400 * 86_400),
    };
    store.apply_retention(now, &retention).await.unwrap();
    let left: (i64, i64) = sqlx::query_as(
        "select (select count(*) from run_blocks), (select count(*) from hist_minute_block)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        (1, 2),
        "the 20-day-old hour of runs is gone, its minutes are kept 31 days"
    );
}

/// A replay racing the pack of its own hour: the pack has moved the hour's
/// runs into its block, not yet committed, when the replayed batch is
/// written. The replay waits for the pack and then finds its runs in the
/// block: counted once (it used to wait on the moved rows only, insert them
/// again once the pack committed, and count them twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_racing_the_pack_of_its_hour_counts_once() {
    use chrono::DurationRound;
    /// The rollup's fold lock (`store/rollup.rs`: "prober" in ASCII).
    const FOLD_LOCK: i64 = 0x7072_6f62_6572;
    let (_db, store, pool) = lab().await;
    let m = meta("api");
    // Old enough for its hour to be packed now.
    let start = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap() - TimeDelta::hours(4);
    store.start_rollups(start).await.unwrap();
    let batch: Vec<_> = (0..60)
        .map(|i| {
            record(
                &m,
                start + TimeDelta::minutes(i),
                10_000 + 100 * i as u64,
                true,
            )
        })
        .collect();
    assert_eq!(store.write_runs(&batch).await.unwrap(), 60);
    // Folded and rolled up, not packed yet (H is the hour after).
    store
        .rollup(start + TimeDelta::minutes(65))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counts(&pool).await, (60, 0, 60, 60));

    // A pack in progress, as the rollup runs it.
    let mut packing = pool.begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(FOLD_LOCK)
        .execute(&mut *packing)
        .await
        .unwrap();
    sqlx::query("select prober_pack($1)")
        .bind(start + TimeDelta::hours(1))
        .execute(&mut *packing)
        .await
        .unwrap();
    let replay = tokio::spawn({
        let store = store.clone();
        async move { store.write_runs(&batch).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!replay.is_finished(), "the replay waits for the pack");
    packing.commit().await.unwrap();
    assert_eq!(
        replay.await.unwrap().unwrap(),
        0,
        "nothing new in the replay"
    );
    assert_eq!(
        counts(&pool).await,
        (0, 60, 60, 60),
        "every run once, as a row or packed, at every resolution"
    );
}

/// (phase, bin key) → count of a point's phases.
fn point_bins(p: &prober::store::trends::TrendPoint) -> BTreeMap<(i64, i64), u64> {
    let mut out = BTreeMap::new();
    for (phase, h) in p.phases.iter().enumerate() {
        for (lo, _, n) in h.bins() {
            *out.entry((phase as i64, i64::from(bin_key(lo))))
                .or_default() += n;
        }
    }
    out
}

#[tokio::test]
async fn trend_points_opened_from_blocks_equal_the_minute_rows_they_hold() {
    let (_db, store, pool) = lab().await;
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    store.start_rollups(start).await.unwrap();
    let mut seed = 11;
    // "slow" runs once a minute (every cell one sample, its bin implied by
    // its sum in a block); "fast" every 10 s, some failing (cells of six
    // samples, bins stored).
    let mut batch = Vec::new();
    for (name, every) in [("slow", 60), ("fast", 10)] {
        let m = meta(name);
        for i in 0..(3 * 3600 / every) {
            let us = 2_000 + lcg(&mut seed) % 90_000;
            let ok = !lcg(&mut seed).is_multiple_of(9);
            batch.push(record(&m, start + TimeDelta::seconds(every * i), us, ok));
        }
    }
    assert_eq!(store.write_runs(&batch).await.unwrap(), 180 + 1_080);
    // 12:05: 09:00 and 10:00 packed, 11:00 stays minute rows.
    store
        .rollup(start + TimeDelta::minutes(185))
        .await
        .unwrap()
        .unwrap();
    let blocks: i64 = sqlx::query_scalar("select count(*) from hist_minute_block")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(blocks, 4, "two hours of two probes packed");
    let probes: Vec<(i32, i16)> =
        sqlx::query_as("select id, (select id from locations limit 1) from probes order by name")
            .fetch_all(&pool)
            .await
            .unwrap();
    // A 7-minute step: points that straddle the hours, so a point gathers
    // from a block and from the next block or from minute rows; a window
    // that starts and ends inside blocks.
    let (from, to) = (
        start + TimeDelta::minutes(23),
        start + TimeDelta::minutes(170),
    );
    let got = store
        .trend_points_of(&probes, from, to, Duration::from_secs(420))
        .await
        .unwrap();
    for key in &probes {
        let want: Vec<(DateTime<Utc>, Vec<i64>, i64, i64)> = sqlx::query_as(
            "select date_bin(interval '420 s', m.minute, timestamptz '1970-01-01 00:00:00+00'),
                    prober_cat(m.bins), sum(prober_runs(m.stats, 0))::int8,
                    sum(prober_failures(m.stats, 0))::int8
             from prober_minutes($1, $2) m
             where m.probe_id = $3 and m.location_id = $4 and m.minute >= $1 and m.minute < $2
             group by 1 order by 1",
        )
        .bind(from)
        .bind(to)
        .bind(key.0)
        .bind(key.1)
        .fetch_all(&pool)
        .await
        .unwrap();
        let points = &got[key];
        assert_eq!(points.len(), want.len(), "{key:?}");
        assert!(want.len() >= 20, "{key:?}: {} points", want.len());
        for (p, (t, bins, runs, failures)) in points.iter().zip(&want) {
            assert_eq!((p.time, p.runs, p.failures), (*t, *runs, *failures));
            assert_eq!(point_bins(p), elements(bins), "{key:?} at {t}");
        }
    }
    // Hours: the trend reads' own union of the live view's branches.
    let hourly = store
        .trend_points_of(
            &probes,
            start,
            start + TimeDelta::hours(3),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    for key in &probes {
        let want: Vec<(DateTime<Utc>, Vec<i64>, i64, i64)> = sqlx::query_as(
            "select h.hour, prober_cat(h.bins), sum(prober_runs(h.stats, 0))::int8,
                    sum(prober_failures(h.stats, 0))::int8
             from hist_hour_live h where h.probe_id = $1 and h.location_id = $2
             group by 1 order by 1",
        )
        .bind(key.0)
        .bind(key.1)
        .fetch_all(&pool)
        .await
        .unwrap();
        let points = &hourly[key];
        assert_eq!((points.len(), want.len()), (3, 3), "{key:?}");
        for (p, (t, bins, runs, failures)) in points.iter().zip(&want) {
            assert_eq!((p.time, p.runs, p.failures), (*t, *runs, *failures));
            assert_eq!(point_bins(p), elements(bins), "{key:?} at {t}");
        }
    }
}

/// (phase, bin key) → count of stored bin elements.
fn elements(bins: &[i64]) -> BTreeMap<(i64, i64), u64> {
    let mut w = BTreeMap::new();
    for e in bins {
        *w.entry((e >> 48, (e >> 32) & 0xffff)).or_default() += (e & 0xffff_ffff) as u64;
    }
    w
}

/// A previous release (N-1) writes the v1 tables during a rolling upgrade:
/// the trend reads, which leave the v1 branches out while those are empty,
/// count its runs once it has written any.
#[tokio::test]
async fn trend_points_count_what_a_previous_release_wrote_to_the_v1_tables() {
    let (_db, store, pool) = lab().await;
    let at: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    store.start_rollups(at).await.unwrap();
    store
        .write_runs(&[record(&meta("old"), at, 40_000, true)])
        .await
        .unwrap();
    let (probe, location): (i32, i16) =
        sqlx::query_as("select id, (select id from locations limit 1) from probes")
            .fetch_one(&pool)
            .await
            .unwrap();
    // N-1's minute at 09:10: 3 runs of phase total, one failed, one bin;
    // its own rollup mark at 09:00, so the minute is not rolled up yet.
    let v1_minute = at + TimeDelta::minutes(10);
    sqlx::query(
        "insert into rollup_mark values (true, $1, $1)
         on conflict (only_row) do update set rolled_through = $1, day_rolled_through = $1",
    )
    .bind(at)
    .execute(&pool)
    .await
    .unwrap();
    for sql in [
        "insert into minute_counters values ($1, $2, $3, 0, 3, 1, 150000)",
        "insert into minute_bins values ($1, $2, $3, 0, 49152, 49407, 3)",
    ] {
        sqlx::query(sql)
            .bind(v1_minute)
            .bind(probe)
            .bind(location)
            .execute(&pool)
            .await
            .unwrap();
    }
    for step in [300, 3600] {
        let points = store
            .trend_points(
                probe,
                location,
                at,
                at + TimeDelta::hours(1),
                Duration::from_secs(step),
            )
            .await
            .unwrap();
        let (runs, failures): (i64, i64) =
            (points.iter()).fold((0, 0), |(r, f), p| (r + p.runs, f + p.failures));
        assert_eq!((runs, failures), (4, 1), "step {step} s: {points:?}");
        let total: u64 = points.iter().map(|p| p.phases[0].total()).sum();
        assert_eq!(total, 4, "step {step} s");
    }
}
