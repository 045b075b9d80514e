//! The bench's scratch databases: the guard that only a local database with
//! "bench" in its name is dropped, its recreation, what the runs of the
//! window left in Postgres, and the CPU of the Postgres backends.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};

use crate::procfs::{stat_ticks, USER_HZ};

/// Refuses anything but a local database with "bench" in its name; returns the name.
pub fn check_database_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("--database-url {url:?}: {e}"))?;
    let host = parsed.host_str().unwrap_or("");
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return Err(format!(
            "--database-url: host {host:?} is not loopback; the bench drops and recreates its database, so it only runs against a local Postgres"
        ));
    }
    let opts = PgConnectOptions::from_str(url).map_err(|e| format!("--database-url: {e}"))?;
    let db = opts.get_database().unwrap_or("").to_string();
    if !db.contains("bench") {
        return Err(format!(
            "--database-url: database {db:?} would be dropped and recreated; use a scratch name containing \"bench\", like prober_bench"
        ));
    }
    Ok(db)
}

/// Drops and recreates the bench database; returns a connection to `postgres`.
pub async fn recreate_database(url: &str, db: &str) -> Result<PgConnection, String> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| format!("--database-url: {e}"))?;
    let mut admin =
        opts.database("postgres").connect().await.map_err(|e| {
            format!("cannot connect to database \"postgres\" to recreate {db:?}: {e}")
        })?;
    let quoted = format!("\"{}\"", db.replace('"', "\"\""));
    for sql in [
        format!("drop database if exists {quoted} with (force)"),
        format!("create database {quoted}"),
    ] {
        sqlx::query(&sql)
            .execute(&mut admin)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
    }
    Ok(admin)
}

/// What Postgres holds for the runs scheduled inside the window.
pub struct Stored {
    pub runs: i64,
    pub failed: i64,
    /// Start lateness p50, p99, max, µs.
    pub lateness: [Option<i32>; 3],
    /// Total latency p50, p99, µs.
    pub total: [Option<i32>; 2],
    /// Failed runs by error class, most first.
    pub classes: Vec<(String, i64)>,
    /// Rows in `runs`, whole bench.
    pub all_rows: i64,
}

/// Reads the window's runs back from the bench database.
pub async fn query_window(
    url: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Stored, String> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect to the bench database to read the results: {e}"))?;
    let row = sqlx::query(
        "select count(*), count(*) filter (where not success),
                percentile_disc(0.5) within group (order by lateness_us),
                percentile_disc(0.99) within group (order by lateness_us),
                max(lateness_us),
                percentile_disc(0.5) within group (order by total_us),
                percentile_disc(0.99) within group (order by total_us)
         from prober_run_rows($1, $2) where scheduled_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&mut conn)
    .await
    .map_err(|e| format!("reading lateness from runs failed: {e}"))?;
    let get = |i: usize| row.try_get::<Option<i32>, _>(i).ok().flatten();
    let mut stored = Stored {
        runs: row.try_get(0).unwrap_or(0),
        failed: row.try_get(1).unwrap_or(0),
        lateness: [get(2), get(3), get(4)],
        total: [get(5), get(6)],
        classes: Vec::new(),
        all_rows: 0,
    };
    let rows = sqlx::query(
        "select coalesce(e.name, 'unknown'), count(*) from prober_run_rows($1, $2) r
         left join error_classes e on e.id = r.error_class
         where not r.success and r.scheduled_at < $2
         group by 1 order by 2 desc",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut conn)
    .await
    .map_err(|e| format!("reading error classes failed: {e}"))?;
    for r in rows {
        stored
            .classes
            .push((r.try_get(0).unwrap_or_default(), r.try_get(1).unwrap_or(0)));
    }
    stored.all_rows =
        sqlx::query_scalar("select count(*) from prober_run_rows('-infinity', 'infinity')")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("counting runs failed: {e}"))?;
    let _ = conn.close().await;
    Ok(stored)
}

/// CPU ticks of the Postgres backends connected to the bench database, by pid.
/// Empty when Postgres is not a process of this host's /proc.
pub async fn pg_backend_cpu(admin: &mut PgConnection, db: &str) -> HashMap<i32, u64> {
    let rows = sqlx::query("select pid from pg_stat_activity where datname = $1")
        .bind(db)
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    let mut out = HashMap::new();
    for row in rows {
        let Ok(pid) = row.try_get::<i32, _>(0) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.starts_with("postgres") {
            continue;
        }
        if let Some(t) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        {
            out.insert(pid, t);
        }
    }
    out
}

/// Postgres backend CPU over the window: (µs, backends counted, backends gone).
pub fn pg_delta(
    before: &HashMap<i32, u64>,
    after: &HashMap<i32, u64>,
) -> Option<(u64, usize, usize)> {
    if after.is_empty() {
        return None;
    }
    let ticks: u64 = after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    let gone = before.keys().filter(|p| !after.contains_key(p)).count();
    Some((ticks * (1_000_000 / USER_HZ), after.len(), gone))
}

/// A scratch store: the database of `url` (checked as [`check_database_url`]
/// does) dropped, created again and migrated, as `location`.
pub async fn fresh_store(url: &str, location: &str) -> Result<prober::store::Store, String> {
    let db = check_database_url(url)?;
    let admin = recreate_database(url, &db).await?;
    let _ = sqlx::Connection::close(admin).await;
    let store = prober::store::Store::new(url, location).map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::DEFAULT_BENCH_DATABASE_URL;

    #[test]
    fn only_a_local_scratch_database_is_dropped() {
        assert_eq!(
            check_database_url(DEFAULT_BENCH_DATABASE_URL).unwrap(),
            "prober_bench"
        );
        assert!(check_database_url("postgres://postgres@127.0.0.1:5432/prober").is_err());
        assert!(check_database_url("postgres://postgres@db.example.com/prober_bench").is_err());
    }

    #[test]
    fn backend_cpu_counts_what_the_window_added_and_the_backends_gone() {
        let before = HashMap::from([(1, 10), (2, 5), (3, 7)]);
        let after = HashMap::from([(1, 12), (2, 9), (4, 1)]);
        // (12-10) + (9-5) + 1 new = 7 ticks of 10 ms; pid 3 left.
        assert_eq!(pg_delta(&before, &after), Some((70_000, 3, 1)));
        assert_eq!(pg_delta(&before, &HashMap::new()), None);
    }
}
