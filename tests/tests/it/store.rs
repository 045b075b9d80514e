//! The Postgres store against a fresh database: runs land whole, writes are
//! idempotent, and the quantiles the SQL function returns over stored bins
//! equal HdrHistogram's on the same samples, at minute, hour and day resolution.

use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use hdrhistogram::Histogram;
use prober::run::{ErrorClass, Outcome, Phases, ProbeError};
use prober::run::{ProbeMeta, RunRecord};
use prober::store::{Resolution, Store};

use crate::db::TestDb;

pub(crate) fn meta(name: &str) -> Arc<ProbeMeta> {
    Arc::new(ProbeMeta {
        name: name.into(),
        version: "v1hash".into(),
        definition: serde_json::value::to_raw_value(&serde_json::json!({"name": name}))
            .unwrap()
            .into(),
        source: "probes/x.yaml:1".into(),
    })
}

pub(crate) fn record(
    meta: &Arc<ProbeMeta>,
    at: DateTime<Utc>,
    total_us: u64,
    success: bool,
) -> RunRecord {
    let mut o = Outcome::failed(
        &meta.name,
        &meta.version,
        at,
        ErrorClass::Timeout,
        String::new(),
        std::time::Duration::from_micros(total_us),
    );
    o.success = success;
    o.error = (!success).then(|| ProbeError {
        class: ErrorClass::HttpStatus,
        message: "status: expected 2xx, got 503".into(),
    });
    o.status_code = Some(if success { 200 } else { 503 });
    o.phases = Phases {
        dns_us: Some(0),
        connect_us: Some(total_us / 10),
        tls_us: Some(0),
        first_byte_us: Some(total_us / 2),
        transfer_us: Some(total_us / 5),
        total_us,
    };
    RunRecord {
        run_id: uuid::Uuid::now_v7(),
        meta: meta.clone(),
        scheduled_at: at,
        started_at: at + TimeDelta::microseconds(700),
        lateness_us: 700,
        outcome: o,
        trigger: prober::run::Trigger::Schedule,
    }
}

/// probe, location, version, build, lateness, success, error class, status, total, first byte, message
type RunRow = (
    String,
    String,
    String,
    String,
    i32,
    bool,
    Option<String>,
    Option<i16>,
    i32,
    Option<i32>,
    Option<String>,
);

async fn migrated_store(db: &TestDb) -> Store {
    let store = Store::new(&db.url, "test-location").unwrap();
    store.migrate().await.unwrap();
    store
}

pub(crate) fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[tokio::test]
async fn runs_land_with_phases_version_build_and_lateness() {
    let db = TestDb::create().await;
    let store = migrated_store(&db).await;
    let m = meta("checkout");
    let at: DateTime<Utc> = "2026-11-26T10:15:30Z".parse().unwrap();
    let ok = record(&m, at, 52_000, true);
    let bad = record(&m, at + TimeDelta::seconds(30), 1_200, false);

    let written = store.write_runs(&[ok.clone(), bad.clone()]).await.unwrap();

    assert_eq!(written, 2);
    let pool = db.pool().await;
    let rows: Vec<RunRow> = sqlx::query_as(
        "select probe, location, version, build, lateness_us, success, error_class, status_code,
                    total_us, first_byte_us, error_message
             from runs_view order by scheduled_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let r = &rows[0];
    assert_eq!(
        (r.0.as_str(), r.1.as_str(), r.2.as_str()),
        ("checkout", "test-location", "v1hash")
    );
    assert_eq!(r.3, prober::VERSION);
    assert_eq!((r.4, r.5, r.8, r.9), (700, true, 52_000, Some(26_000)));
    assert_eq!(rows[1].6.as_deref(), Some("http_status"));
    assert_eq!(rows[1].7, Some(503));
    assert!(rows[1].10.as_deref().unwrap().contains("503"));
    let started: DateTime<Utc> =
        sqlx::query_scalar("select started_at from runs_view where run_id = $1")
            .bind(ok.run_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(started, ok.started_at);
}

#[tokio::test]
async fn a_replayed_batch_is_neither_stored_nor_counted_twice() {
    let db = TestDb::create().await;
    let store = migrated_store(&db).await;
    let m = meta("search");
    let at: DateTime<Utc> = "2026-11-26T23:59:30Z".parse().unwrap();
    let batch: Vec<RunRecord> = (0..50)
        .map(|i| {
            record(
                &m,
                at + TimeDelta::seconds(i),
                10_000 + i as u64 * 100,
                i % 7 != 0,
            )
        })
        .collect();

    // The first run twice in one batch, then the batch again.
    let twice = [batch[0].clone(), batch[0].clone()];
    assert_eq!(store.write_runs(&twice).await.unwrap(), 1);
    assert_eq!(store.write_runs(&batch).await.unwrap(), 49);
    assert_eq!(store.write_runs(&batch).await.unwrap(), 0);
    // Replayed after its minutes were folded into minute, hour and day rows too.
    store.rollup(at + TimeDelta::days(2)).await.unwrap();
    assert_eq!(store.write_runs(&batch[10..20]).await.unwrap(), 0);
    store.rollup(at + TimeDelta::days(2)).await.unwrap();

    let pool = db.pool().await;
    let runs: i64 = sqlx::query_scalar("select count(*) from runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 50);
    // The batch crosses midnight: two day partitions, and every counter and bin counts each run once.
    for table in [
        "minute_counters_live",
        "hour_counters_live",
        "day_counters_live",
    ] {
        let (n, failures): (i64, i64) = sqlx::query_as(&format!(
            "select sum(runs)::bigint, sum(failures)::bigint from {table} where phase = 0"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((n, failures), (50, 8), "{table}");
    }
    for table in ["minute_bins_live", "hour_bins_live", "day_bins_live"] {
        let n: i64 = sqlx::query_scalar(&format!(
            "select sum(count)::bigint from {table} where phase = 0"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, 50, "{table}");
    }
    let days: i64 = sqlx::query_scalar(
        "select count(*) from pg_inherits i join pg_class p on p.oid = i.inhparent where p.relname = 'runs'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(days >= 2, "a partition per day");
}

#[tokio::test]
async fn sql_quantiles_equal_hdrhistogram_across_hours_and_after_rollup() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let store = migrated_store(&db).await;
    let m = meta("api");
    let other = meta("other-probe");
    // Three hours of runs every 2 s, crossing two hour boundaries, long-tailed latencies.
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    let mut dense = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let mut seed = 7;
    let mut batch = Vec::new();
    for i in 0..5_400 {
        let us = match i % 20 {
            0 => 200_000 + lcg(&mut seed) % 3_000_000,
            1..=3 => 1_000 + lcg(&mut seed) % 5_000,
            _ => 45_000 + lcg(&mut seed) % 10_000,
        };
        dense.record(us).unwrap();
        batch.push(record(&m, start + TimeDelta::seconds(2 * i), us, true));
        // Another probe's samples must not leak into this probe's quantiles.
        batch.push(record(
            &other,
            start + TimeDelta::seconds(2 * i),
            9_000_000,
            true,
        ));
        if batch.len() >= 1_000 {
            store.write_runs(&batch).await.unwrap();
            batch.clear();
        }
    }
    store.write_runs(&batch).await.unwrap();

    let end = start + TimeDelta::hours(3);
    for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
        let expected = dense.value_at_quantile(q) as i64;
        for res in [Resolution::Minute, Resolution::Hour, Resolution::Day] {
            let (from, to) = match res {
                Resolution::Day => (start - TimeDelta::hours(9), end + TimeDelta::hours(12)),
                _ => (start, end),
            };
            let got = store.quantile("api", 0, res, from, to, q).await.unwrap();
            assert_eq!(got, Some(expected), "q={q} at {res:?}");
        }
    }
    // A range that starts mid-way still agrees with HdrHistogram on the same samples.
    let mut second_half = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let mut seed = 7;
    for i in 0..5_400 {
        let us = match i % 20 {
            0 => 200_000 + lcg(&mut seed) % 3_000_000,
            1..=3 => 1_000 + lcg(&mut seed) % 5_000,
            _ => 45_000 + lcg(&mut seed) % 10_000,
        };
        if i >= 2_700 {
            second_half.record(us).unwrap();
        }
    }
    let mid = start + TimeDelta::seconds(5_400);
    let got = store
        .quantile("api", 0, Resolution::Minute, mid, end, 0.95)
        .await
        .unwrap();
    assert_eq!(got, Some(second_half.value_at_quantile(0.95) as i64));
}

#[tokio::test]
async fn retention_drops_old_partitions_and_keeps_recent_ones() {
    let db = TestDb::create().await;
    let store = migrated_store(&db).await;
    let m = meta("old");
    let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
    let old = record(&m, now - TimeDelta::days(20), 1_000, true);
    let recent = record(&m, now - TimeDelta::hours(1), 1_000, true);
    store.write_runs(&[old, recent]).await.unwrap();

    let retention = prober::config::settings::Retention {
        runs: std::time::Duration::from_secs(14 * 86_400),
        minutes: std::time::Duration::from_secs(31 * 86_400),
        hours: std::time::Duration::from_secs(400 * 86_400),
    };
    let dropped = store.apply_retention(now, &retention).await.unwrap();

    assert!(dropped >= 1);
    let pool = db.pool().await;
    let runs: i64 = sqlx::query_scalar("select count(*) from runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        runs, 1,
        "the 20-day-old run's partition is gone, the recent one stays"
    );
    let minutes: i64 =
        sqlx::query_scalar("select sum(runs)::bigint from minute_counters_live where phase = 0")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(minutes, 2, "minute data is kept longer than raw runs");
}

#[tokio::test]
async fn a_batch_of_thousands_of_new_probes_registers_them_all_at_once() {
    let db = TestDb::create().await;
    let store = migrated_store(&db).await;
    let at: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
    let metas: Vec<Arc<ProbeMeta>> = (0..3_000).map(|i| meta(&format!("bulk-{i:05}"))).collect();
    let batch: Vec<RunRecord> = metas.iter().map(|m| record(m, at, 1_000, true)).collect();

    assert_eq!(store.write_runs(&batch).await.unwrap(), 3_000);

    let pool = db.pool().await;
    let (probes, versions, runs): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from probes), (select count(*) from probe_versions),
                (select count(distinct probe_id) from runs)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((probes, versions, runs), (3_000, 3_000, 3_000));
    let names_match: i64 = sqlx::query_scalar(
        "select count(*) from runs_view where probe like 'bulk-%' and version = 'v1hash'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        names_match, 3_000,
        "every run points at its own probe and version"
    );
}

#[tokio::test]
async fn the_day_window_is_exact_before_and_after_the_recent_rows_exist() {
    let db = TestDb::create().await;
    let store = migrated_store(&db).await;
    let m = meta("api");
    let now = Utc::now();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let mut seed = 3;
    let mut runs = |at: DateTime<Utc>, n: i64, hist: &mut Histogram<u64>| -> Vec<RunRecord> {
        (0..n)
            .map(|i| {
                let us = 2_000 + lcg(&mut seed) % 400_000;
                hist.record(us).unwrap();
                record(&m, at + TimeDelta::milliseconds(i), us, i % 4 != 0)
            })
            .collect()
    };
    let hour = now.duration_trunc(TimeDelta::hours(1)).unwrap();
    let from = hour - TimeDelta::hours(23);
    // Closed hours (one outside the window), and the current hour.
    let outside = runs(
        from - TimeDelta::minutes(30),
        50,
        &mut Histogram::new(2).unwrap(),
    );
    store.write_runs(&outside).await.unwrap();
    store
        .write_runs(&runs(from + TimeDelta::minutes(10), 200, &mut hist))
        .await
        .unwrap();
    store
        .write_runs(&runs(hour - TimeDelta::minutes(50), 300, &mut hist))
        .await
        .unwrap();
    store.write_runs(&runs(hour, 100, &mut hist)).await.unwrap();
    let check = |w: &prober::store::read::WindowStats, hist: &Histogram<u64>| {
        assert_eq!(w.runs, hist.len() as i64);
        // Every batch is a multiple of 100 runs, a quarter of them failed.
        assert_eq!(w.failures, hist.len() as i64 / 4);
        for (got, q) in [(w.p50_us, 0.5), (w.p95_us, 0.95), (w.p99_us, 0.99)] {
            assert_eq!(got, Some(hist.value_at_quantile(q) as i64), "p{q}");
        }
    };
    // No rollup yet: from the hour rows.
    let first = store.last_day().await.unwrap();
    check(&first["api"], &hist);
    // Rolled up: from the recent rows (when now is past the rollup's two
    // minutes' grace; before that, from the hour rows again) and the pending
    // runs of the current hour.
    store.start_rollups(now).await.unwrap();
    store.rollup(now).await.unwrap();
    store
        .write_runs(&runs(hour + TimeDelta::seconds(1), 100, &mut hist))
        .await
        .unwrap();
    let second = store.last_day().await.unwrap();
    check(&second["api"], &hist);
    assert_eq!(
        store.windows(Resolution::Hour, from).await.unwrap()["api"],
        second["api"],
        "the generic window over hour rows agrees"
    );
}

/// The queue's depth counts the batch the writer is writing, and every
/// dropped result is counted and reported once, also those a failed batch
/// could not put back.
#[test]
fn the_queue_counts_its_batch_in_flight_and_every_drop() {
    use prober::store::queue::{ResultQueue, ENTRY_OVERHEAD};
    let m = meta("q");
    let at: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
    let run = |i: i64| record(&m, at + TimeDelta::seconds(i), 1_000, true);
    let q = ResultQueue::new(3);
    for i in 0..3 {
        q.push(&run(i));
    }
    let batch = q.take(2);
    assert_eq!(
        (q.len(), q.depth()),
        (1, 3),
        "the batch in flight is still due"
    );
    assert_eq!(batch.records[1].scheduled_at, at + TimeDelta::seconds(1));
    q.written(batch);
    assert_eq!(q.depth(), 1);

    // A failed batch goes back; past the capacity its oldest are dropped.
    let failed = q.take(1);
    q.push(&run(10));
    q.push(&run(11));
    q.push(&run(12));
    assert_eq!((q.depth(), q.dropped()), (4, 0));
    q.put_back(failed);
    q.push(&run(13));
    assert_eq!((q.len(), q.depth(), q.dropped()), (3, 3, 2));
    assert_eq!(
        q.unreported_drops(),
        1,
        "the first drop is logged at once, the next waits"
    );
    q.report_drops();
    assert_eq!(q.unreported_drops(), 0, "and is logged by the next report");
    let left: Vec<_> = q.take(3).records.iter().map(|r| r.scheduled_at).collect();
    assert_eq!(
        left,
        [11, 12, 13].map(|i| at + TimeDelta::seconds(i)),
        "the newest are kept, in order"
    );

    // Bounded by bytes too: room for two runs, so the third drops the first.
    q.push(&run(20));
    let one = q.bytes();
    assert!(
        one > ENTRY_OVERHEAD && one < 300,
        "a queued run takes {one} bytes"
    );
    let q = ResultQueue::bounded(100, 2 * one + one / 2, None, Vec::new());
    for i in 0..3 {
        q.push(&run(i));
    }
    assert_eq!((q.len(), q.dropped(), q.bytes()), (2, 1, 2 * one));
}

/// The pending rows of a batch of new runs, which the writer builds in Rust,
/// equal, array for array, the rows the statement groups from the samples
/// when a run of the batch is already known (a replay).
#[tokio::test]
async fn pending_rows_built_by_the_writer_equal_the_sql_grouping() {
    let at: DateTime<Utc> = "2026-11-26T10:29:10Z".parse().unwrap();
    let mut batch = Vec::new();
    for (p, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let m = meta(name);
        for i in 0..40u64 {
            let mut r = record(
                &m,
                at + TimeDelta::seconds(i as i64 * 2),
                900 + (i * 37 + p as u64 * 11) % 400 * 25,
                !(i + p as u64).is_multiple_of(6),
            );
            if i.is_multiple_of(9) {
                // An API run is stored but not counted.
                r.trigger = prober::run::Trigger::Api;
            }
            batch.push(r);
        }
    }
    let built = TestDb::create().await;
    let store = migrated_store(&built).await;
    assert_eq!(store.write_runs(&batch).await.unwrap(), 120);
    let from_rust = pending_rows(&built).await;

    let grouped = TestDb::create().await;
    let store = migrated_store(&grouped).await;
    let known = record(&meta("known"), at, 1_000, true);
    store
        .write_runs(std::slice::from_ref(&known))
        .await
        .unwrap();
    let mut replay = batch.clone();
    replay.push(known);
    assert_eq!(store.write_runs(&replay).await.unwrap(), 120);
    let from_sql = pending_rows(&grouped).await;

    assert_eq!(from_rust.len(), 6, "3 probes × 2 minutes");
    assert_eq!(from_rust, from_sql);
}

/// Every pending row but probe `known`'s: probe, minute, bins, stats, sums.
async fn pending_rows(db: &TestDb) -> Vec<(String, DateTime<Utc>, Vec<i64>, Vec<i64>, Vec<i64>)> {
    sqlx::query_as(
        "select p.name, h.minute, h.bins, h.stats, h.sums
         from hist_pending h join probes p on p.id = h.probe_id
         where p.name <> 'known' order by 1, 2",
    )
    .fetch_all(&db.pool().await)
    .await
    .unwrap()
}
