//! Run blocks, second encoding (migration 0021): a packed run's id is left
//! out when the schedule derives it, its time is a difference, its int4
//! columns are split in halves; every run reads back as it was written, a
//! replayed batch still counts once, and a late run rewrites a block of the
//! first encoding in the second.

use chrono::{DateTime, TimeDelta, Utc};
use prober::run::{tick_run_id, RunRecord, Trigger};
use sqlx::PgPool;

use crate::blocks::lab;
use crate::store::{lcg, meta, record};

/// The location `blocks::lab`'s store writes as.
const LOCATION: &str = "blocks-location";

/// Every run the store reads, as text, in a stable order.
async fn all_runs(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select r::text from prober_run_rows('-infinity', 'infinity') r
         order by r.scheduled_at, r.run_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// (runs packed, of them with no stored id, blocks in the second encoding).
async fn packed(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "select coalesce(sum(cardinality(run_id)), 0)::bigint,
                (select count(*) from run_blocks, unnest(run_id) i where i is null),
                count(*) filter (where at_us is not null and scheduled_at is null)
         from run_blocks",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_sql_tick_run_id_is_the_schedulers() {
    let (_db, _store, pool) = lab().await;
    // Before 1970 the millisecond is 0, past 2262 the nanoseconds are
    // i64::MAX (Rust's fallbacks).
    let ticks: [DateTime<Utc>; 7] = [
        "2026-11-26T09:00:00Z".parse().unwrap(),
        "2026-11-26T09:00:00.123Z".parse().unwrap(),
        "2026-11-26T09:00:00.123456Z".parse().unwrap(),
        "1999-12-31T23:59:59.999999Z".parse().unwrap(),
        "1969-12-31T23:59:59.998500Z".parse().unwrap(),
        "1600-01-01T00:00:00Z".parse().unwrap(),
        "2300-01-01T00:00:00.000001Z".parse().unwrap(),
    ];
    for (location, probe) in [("home", "api"), ("eu-west", "checkout → pay"), ("", "ü")] {
        for at in ticks {
            let sql: uuid::Uuid = sqlx::query_scalar("select prober_tick_run_id($1, $2, $3)")
                .bind(location)
                .bind(probe)
                .bind(at)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(
                sql,
                tick_run_id(location, probe, at),
                "{location} {probe} {at}"
            );
        }
    }
}

/// Runs of one probe over two hours: every other a scheduled tick's (its id
/// derived), the others with random ids; phases missing, values past 16 bits
/// and at the int4 limit.
fn mixed_runs(start: DateTime<Utc>) -> Vec<RunRecord> {
    let m = meta("api");
    let mut seed = 11;
    (0..240)
        .map(|i| {
            let at = start + TimeDelta::milliseconds(30_000 * i + (lcg(&mut seed) % 3) as i64);
            let total = match i % 5 {
                0 => 900,
                1 => 65_535,
                2 => 65_536,
                3 => 2_147_483_647,
                _ => 5_000 + lcg(&mut seed) % 200_000,
            };
            let mut r = record(&m, at, total, i % 7 != 0);
            if i % 2 == 0 {
                r.run_id = tick_run_id(LOCATION, "api", at);
            }
            if i % 3 == 0 {
                r.outcome.phases.dns_us = None;
                r.outcome.phases.tls_us = None;
            }
            r.lateness_us = (lcg(&mut seed) % 100_000) as i64;
            r.outcome.response_bytes = 70_000 + (i as u64 % 2);
            r.trigger = if i % 11 == 0 {
                Trigger::Api
            } else {
                Trigger::Schedule
            };
            r
        })
        .collect()
}

#[tokio::test]
async fn packed_runs_read_back_as_they_were_written_and_count_once() {
    let (_db, store, pool) = lab().await;
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    store.start_rollups(start).await.unwrap();
    let batch = mixed_runs(start);
    assert_eq!(store.write_runs(&batch).await.unwrap(), 240);
    let before = all_runs(&pool).await;
    assert_eq!(before.len(), 240);

    // 12:05: the hours 09:00 and 10:00 are packed.
    store
        .rollup(start + TimeDelta::minutes(185))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        packed(&pool).await,
        (240, 120, 2),
        "tick ids are not stored"
    );
    assert_eq!(all_runs(&pool).await, before, "every column reads back");

    // The batch replayed: no run is new, derived id or stored.
    assert_eq!(store.write_runs(&batch).await.unwrap(), 0);
    // A packed run inserted again as a row, as a previous release's writer
    // does on a late replay (it cannot see derived ids): packed once.
    sqlx::query("insert into runs select * from prober_run_rows($1, $1) where run_id = $2")
        .bind(batch[4].scheduled_at)
        .bind(batch[4].run_id)
        .execute(&pool)
        .await
        .unwrap();
    // A run of a packed hour with a new id is new, though a packed run has
    // its time: stored, then packed into the block.
    let mut other = batch[2].clone();
    other.run_id = uuid::Uuid::now_v7();
    assert_eq!(
        store
            .write_runs(std::slice::from_ref(&other))
            .await
            .unwrap(),
        1
    );
    store
        .rollup(start + TimeDelta::minutes(245))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(packed(&pool).await, (241, 120, 2));
    let runs = store
        .runs("api", start, start + TimeDelta::hours(2), None, 1_000)
        .await
        .unwrap();
    assert_eq!(runs.len(), 241);
    let mut ids: Vec<_> = batch.iter().map(|r| r.run_id).collect();
    ids.push(other.run_id);
    ids.sort();
    let mut got: Vec<_> = runs.iter().map(|r| r.run_id).collect();
    got.sort();
    assert_eq!(got, ids, "the API returns every id, derived or stored");

    // Pages of 7 over a range ending 30 h later (the first windows hold no
    // run): the same runs in the same order as one page of all.
    let to = start + TimeDelta::hours(30);
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.runs("api", start, to, cursor, 7).await.unwrap();
        paged.extend(page.iter().map(|r| (r.scheduled_at, r.run_id)));
        match page.last() {
            Some(r) if page.len() == 7 => cursor = Some((r.scheduled_at, r.run_id)),
            _ => break,
        }
    }
    let whole: Vec<_> = runs.iter().map(|r| (r.scheduled_at, r.run_id)).collect();
    assert_eq!(paged, whole);

    // The names the packed ids derive from stay as they are.
    for sql in [
        "update probes set name = 'api-renamed' where name = 'api'",
        "delete from probes where name = 'api'",
        "update locations set name = 'elsewhere'",
    ] {
        let e = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(
            e.to_string().contains("packed runs derive their ids")
                || e.to_string().contains("it has packed runs"),
            "{sql}: {e}"
        );
    }
}

/// An hour packed in the first encoding (migration 0015, before 0021): read
/// as it was, and rewritten in the second when a late run joins it.
#[tokio::test]
async fn a_late_run_rewrites_a_first_encoding_block() {
    let (_db, store, pool) = lab().await;
    let start: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
    store.start_rollups(start).await.unwrap();
    let mut batch = mixed_runs(start);
    let late = batch.remove(5);
    let first_hour: Vec<_> = batch
        .into_iter()
        .filter(|r| r.scheduled_at < start + TimeDelta::hours(1))
        .collect();
    assert_eq!(store.write_runs(&first_hour).await.unwrap(), 119);
    let rows = all_runs(&pool).await;
    // Packed as migration 0015's `prober_pack` did.
    sqlx::query(
        "with moved as (delete from runs returning *)
         insert into run_blocks (probe_id, location_id, hour, run_id, scheduled_at, version_id,
                                 build_id, lateness_us, total_us, dns_us, connect_us, tls_us,
                                 first_byte_us, transfer_us, response_bytes, status_code,
                                 error_class, success, error_message, detail, trigger)
         select probe_id, location_id, date_trunc('hour', scheduled_at, 'UTC'),
                array_agg(run_id order by scheduled_at, run_id),
                array_agg(scheduled_at order by scheduled_at, run_id),
                array_agg(version_id order by scheduled_at, run_id),
                array_agg(build_id order by scheduled_at, run_id),
                array_agg(lateness_us order by scheduled_at, run_id),
                array_agg(total_us order by scheduled_at, run_id),
                array_agg(dns_us order by scheduled_at, run_id),
                array_agg(connect_us order by scheduled_at, run_id),
                array_agg(tls_us order by scheduled_at, run_id),
                array_agg(first_byte_us order by scheduled_at, run_id),
                array_agg(transfer_us order by scheduled_at, run_id),
                array_agg(response_bytes order by scheduled_at, run_id),
                array_agg(status_code order by scheduled_at, run_id),
                array_agg(error_class order by scheduled_at, run_id),
                array_agg(success order by scheduled_at, run_id),
                array_agg(error_message order by scheduled_at, run_id),
                array_agg(detail order by scheduled_at, run_id),
                array_agg(trigger order by scheduled_at, run_id)
         from moved group by 1, 2, 3",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("update hist_mark set packed_through = $1")
        .bind(start + TimeDelta::hours(1))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(packed(&pool).await, (119, 0, 0));
    assert_eq!(
        all_runs(&pool).await,
        rows,
        "the first encoding reads as before"
    );
    assert_eq!(store.write_runs(&first_hour).await.unwrap(), 0, "replay");

    assert_eq!(store.write_runs(&[late]).await.unwrap(), 1);
    store
        .rollup(start + TimeDelta::minutes(185))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(packed(&pool).await, (120, 60, 1), "rewritten in the second");
    let after = all_runs(&pool).await;
    assert_eq!(after.len(), 120);
    assert!(rows.iter().all(|r| after.contains(r)), "no run changed");
    assert_eq!(store.write_runs(&first_hour).await.unwrap(), 0, "replay");
}
