//! The database itself: creating it, migrations, day partitions, retention,
//! and whether Postgres answers.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::ConnectOptions;

use super::{connect_options, err, redact_url, Store, StoreError, MIGRATOR};

/// Tables partitioned by day. `minute_bins` and `minute_counters` are the v1
/// tables a previous release may still write during a rolling upgrade.
const PARTITIONED: [&str; 4] = ["runs", "hist_minute", "minute_bins", "minute_counters"];

impl Store {
    /// Creates the database of `url` if it does not exist (connecting to `postgres` to do it).
    /// With several hosts, on the first.
    pub async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
        Store::create_database_with(connect_options(url)?, &redact_url(url)).await
    }

    /// Creates this store's database, on the host its pool uses, if it does not exist.
    pub async fn ensure_database(&self) -> Result<(), StoreError> {
        let opts = (*self.pool.connect_options()).clone();
        Store::create_database_with(opts, &self.target()).await
    }

    async fn create_database_with(
        opts: sqlx::postgres::PgConnectOptions,
        shown: &str,
    ) -> Result<(), StoreError> {
        let db = opts.get_database().unwrap_or("postgres").to_string();
        match opts.connect().await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
            Err(e) => return Err(err(&format!("cannot connect to {shown}"), e)),
        }
        let admin = opts.clone().database("postgres");
        let mut conn = admin.connect().await.map_err(|e| {
            err(
                &format!("database {db:?} is missing and cannot connect to database \"postgres\" to create it"),
                e,
            )
        })?;
        let quoted = format!("\"{}\"", db.replace('"', "\"\""));
        match sqlx::query(&format!("create database {quoted}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => Ok(()),
            // Another instance created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
            Err(e) => Err(err(&format!("cannot create database {db:?}"), e)),
        }
    }

    /// Runs the embedded migrations.
    /// On a connection of its own without `statement_timeout`: a migration
    /// may rightly take longer than a write.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let opts = (*self.pool.connect_options())
            .clone()
            .options([("statement_timeout", "0")]);
        let mut conn = opts.connect().await.map_err(|e| {
            err(
                &format!(
                    "database migration failed: cannot connect to {}",
                    self.target()
                ),
                e,
            )
        })?;
        let done = MIGRATOR.run_direct(&mut conn).await.map_err(|e| {
            err(
                &format!("database migration of {} failed", self.target()),
                e,
            )
        });
        let _ = sqlx::Connection::close(conn).await;
        done
    }

    /// Creates day partitions from yesterday to a few days ahead.
    pub async fn ensure_partitions_around(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let today = now.date_naive();
        for offset in -1..=3 {
            self.ensure_partition(today + chrono::Days::new(0) + chrono::TimeDelta::days(offset))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn ensure_partition(&self, day: NaiveDate) -> Result<(), StoreError> {
        if self.lock_ids().partitions.contains(&day) {
            return Ok(());
        }
        for table in PARTITIONED {
            sqlx::query("select prober_ensure_partition($1, $2)")
                .bind(table)
                .bind(day)
                .execute(&self.pool)
                .await
                .map_err(|e| err(&format!("cannot create the {table} partition for {day}"), e))?;
        }
        self.lock_ids().partitions.insert(day);
        Ok(())
    }

    /// Drops raw runs and minute data past their retention (partitions and
    /// packed blocks), and old hour rows and packed days of them.
    pub async fn apply_retention(
        &self,
        now: DateTime<Utc>,
        r: &crate::config::settings::Retention,
    ) -> Result<u64, StoreError> {
        let day =
            |d: Duration| (now - chrono::TimeDelta::from_std(d).unwrap_or_default()).date_naive();
        let mut dropped = 0u64;
        for (table, keep) in [
            ("runs", r.runs),
            ("hist_minute", r.minutes),
            ("minute_bins", r.minutes),
            ("minute_counters", r.minutes),
        ] {
            let n: i32 = sqlx::query_scalar("select prober_drop_partitions($1, $2)")
                .bind(table)
                .bind(day(keep))
                .fetch_one(&self.pool)
                .await
                .map_err(|e| err(&format!("retention of {table} failed"), e))?;
            dropped += u64::try_from(n).unwrap_or(0);
        }
        // Packed hours go with the day partitions they came from.
        for (table, keep) in [("run_blocks", r.runs), ("hist_minute_block", r.minutes)] {
            let from = day(keep).and_time(chrono::NaiveTime::MIN).and_utc();
            sqlx::query(&format!("delete from {table} where hour < $1"))
                .bind(from)
                .execute(&self.pool)
                .await
                .map_err(|e| err(&format!("retention of {table} failed"), e))?;
        }
        let cutoff = now - chrono::TimeDelta::from_std(r.hours).unwrap_or_default();
        for table in ["hist_hour", "hour_bins", "hour_counters"] {
            sqlx::query(&format!("delete from {table} where hour < $1"))
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(|e| err(&format!("retention of {table} failed"), e))?;
        }
        // A packed day goes once all its hours are past the cutoff: up to a
        // day after its hour rows would have gone.
        sqlx::query("delete from hist_hour_block where day <= $1 - interval '1 day'")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(|e| err("retention of hist_hour_block failed", e))?;
        // The audit log is kept as long as raw runs.
        sqlx::query("delete from audit_log where at < $1")
            .bind(now - chrono::TimeDelta::from_std(r.runs).unwrap_or_default())
            .execute(&self.pool)
            .await
            .map_err(|e| err("retention of audit_log failed", e))?;
        let mut ids = self.lock_ids();
        ids.partitions.retain(|d| *d >= day(r.runs));
        Ok(dropped)
    }

    /// Whether Postgres answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("{} does not answer", self.target()), e))
    }
}
