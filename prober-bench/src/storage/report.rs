//! The storage figures: every table of schema `public` with its partitions
//! summed under their root (found in the catalog, so whatever schema is
//! current is measured), and the table `--storage` prints.

use std::fmt::Write;

use serde::Serialize;
use sqlx::{PgPool, Row};

use super::StorageFigures;
use crate::procfs::machine_line;

/// One table of schema `public`, its partitions summed under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relation {
    pub name: String,
    pub partitions: i64,
    /// `count(*)`: exact.
    pub rows: i64,
    /// `pg_total_relation_size` summed over the partitions: heap, TOAST and indexes.
    pub bytes: i64,
}

/// Tables (plain, partitioned, materialized views) of schema `public` grouped
/// by their partition root.
const SIZES: &str = "
select coalesce(pg_partition_root(c.oid), c.oid)::regclass::text as root,
       count(*) filter (where c.relispartition) as partitions,
       sum(pg_total_relation_size(c.oid))::bigint as bytes
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public' and c.relkind in ('r', 'p', 'm')
group by 1";

/// The relations, largest first; the database's size; the newest migration.
pub async fn relations(pool: &PgPool) -> Result<(Vec<Relation>, i64, i64), String> {
    let fail = |e: sqlx::Error| format!("reading the relations' sizes failed: {e}");
    let rows = sqlx::query(SIZES).fetch_all(pool).await.map_err(fail)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.try_get(0).map_err(fail)?;
        // `regclass::text` quotes the name where it must be.
        let count: i64 = sqlx::query_scalar(&format!("select count(*) from {name}"))
            .fetch_one(pool)
            .await
            .map_err(|e| format!("count(*) from {name}: {e}"))?;
        out.push(Relation {
            name,
            partitions: r.try_get(1).map_err(fail)?,
            rows: count,
            bytes: r.try_get(2).map_err(fail)?,
        });
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    let database: i64 = sqlx::query_scalar("select pg_database_size(current_database())")
        .fetch_one(pool)
        .await
        .map_err(fail)?;
    let schema: i64 = sqlx::query_scalar("select coalesce(max(version), 0) from _sqlx_migrations")
        .fetch_one(pool)
        .await
        .map_err(fail)?;
    Ok((out, database, schema))
}

/// `value` per run written; 0 without runs.
pub fn per_run(value: i64, runs: u64) -> f64 {
    if runs == 0 {
        0.0
    } else {
        value as f64 / runs as f64
    }
}

/// Runs per second of `secs`; 0 for no time.
fn rate(runs: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        runs as f64 / secs
    } else {
        0.0
    }
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// The table `--storage` prints.
pub fn render(f: &StorageFigures) -> String {
    let s = &f.seeded;
    let mut out = String::new();
    let _ = writeln!(out, "{}", machine_line());
    let _ = writeln!(
        out,
        "prober {} storage, schema {}: {} probes every {} ms over {} h ({} – {})",
        prober::VERSION,
        f.schema_version,
        f.probes,
        f.every_ms,
        f.hours,
        f.from.format("%Y-%m-%dT%H:%M:%SZ"),
        f.to.format("%Y-%m-%dT%H:%M:%SZ"),
    );
    let _ = writeln!(
        out,
        "seeding: {} runs in {} batches, {:.1} s wall ({:.0} runs/s); write_runs {:.1} s ({:.0} runs/s); {} rollups {:.2} s; partitions {:.2} s\n",
        s.runs,
        s.batches,
        s.wall_s,
        rate(s.runs, s.wall_s),
        s.write_s,
        rate(s.runs, s.write_s),
        s.rollups,
        s.rollup_s,
        s.maintenance_s,
    );
    let _ = writeln!(
        out,
        "| {:<28} | {:>5} | {:>10} | {:>13} | {:>8} | {:>9} | {:>8} |",
        "table", "parts", "rows", "bytes", "MiB", "bytes/run", "rows/run"
    );
    let _ = writeln!(
        out,
        "|{:-<30}|{:->7}|{:->12}|{:->15}|{:->10}|{:->11}|{:->10}|",
        "", "", "", "", "", "", ""
    );
    let row = |out: &mut String, name: &str, parts: String, rows: i64, bytes: i64| {
        let _ = writeln!(
            out,
            "| {:<28} | {:>5} | {:>10} | {:>13} | {:>8.2} | {:>9.1} | {:>8.3} |",
            name,
            parts,
            rows,
            bytes,
            mib(bytes),
            per_run(bytes, s.runs),
            per_run(rows, s.runs),
        );
    };
    let (full, empty): (Vec<&Relation>, Vec<&Relation>) =
        f.relations.iter().partition(|r| r.rows > 0);
    for r in &full {
        row(&mut out, &r.name, r.partitions.to_string(), r.rows, r.bytes);
    }
    let empty_bytes: i64 = empty.iter().map(|r| r.bytes).sum();
    row(
        &mut out,
        &format!("({} empty tables)", empty.len()),
        String::new(),
        0,
        empty_bytes,
    );
    let rows: i64 = f.relations.iter().map(|r| r.rows).sum();
    let bytes: i64 = f.relations.iter().map(|r| r.bytes).sum();
    row(&mut out, "TOTAL", String::new(), rows, bytes);
    let _ = writeln!(
        out,
        "\ndatabase (pg_database_size, system catalogs included): {} bytes, {:.2} MiB, {:.1} bytes/run\n",
        f.database_bytes,
        mib(f.database_bytes),
        per_run(f.database_bytes, s.runs)
    );
    let h = &f.hour_blocks;
    let _ = writeln!(
        out,
        "hour rows packed into day blocks (migration 0020; the rollup does it 35 days on): \
         {} rows, {} bytes ({:.1} bytes/run) -> {} blocks, {} bytes ({:.1} bytes/run, {:.0} bytes an hour)\n",
        h.hour_rows,
        h.row_bytes,
        per_run(h.row_bytes, s.runs),
        h.blocks,
        h.block_bytes,
        per_run(h.block_bytes, s.runs),
        per_run(h.block_bytes, u64::try_from(h.hour_rows).unwrap_or(0)),
    );
    let _ = writeln!(
        out,
        "| {:<70} | {:>8} | {:>8} |",
        "read (1 untimed, 5 timed)", "p50 ms", "max ms"
    );
    let _ = writeln!(out, "|{:-<72}|{:->10}|{:->10}|", "", "", "");
    for (what, [p50, max]) in &f.reads {
        let _ = writeln!(out, "| {what:<70} | {p50:>8.1} | {max:>8.1} |");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_per_run_divide_by_the_runs_written() {
        assert_eq!(per_run(1_500_000, 12_000), 125.0);
        assert_eq!(per_run(12_000 * 6, 12_000), 6.0);
        assert_eq!(per_run(100, 0), 0.0);
        assert_eq!(rate(1000, 0.5), 2000.0);
        assert_eq!(rate(1000, 0.0), 0.0);
    }
}
