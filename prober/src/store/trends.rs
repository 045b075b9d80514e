//! What the trend analysis reads and writes: per-probe series of merged
//! histograms, and the findings (`trends`, migration 0013), one row per
//! change however often the analysis sees it again.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::Row;

use super::block_points::{add_block, series_of, Gathered, Span};
use super::events::{events_of_json, ChangeEvent, FINDING_CONTEXT_COLUMNS, FINDING_CONTEXT_JOINS};
use super::int8s::Int8s;
use super::{err, Resolution, Store, StoreError};
use crate::results::hist::SparseHist;
use crate::run::PHASES;

/// One point of a probe's series at one location: every phase's merged bins
/// and the runs and failures in `[time, time + step)`.
#[derive(Debug, Clone)]
pub struct TrendPoint {
    pub time: DateTime<Utc>,
    pub runs: i64,
    pub failures: i64,
    /// Indexed like [`PHASES`]; empty where the phase was never reached.
    pub phases: Vec<SparseHist>,
}

/// A probe at a location that has runs to analyse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub probe_id: i32,
    pub probe: String,
    pub location_id: i16,
    pub location: String,
    /// Runs in the window [`Store::trend_subjects`] looked at.
    pub runs: i64,
}

/// A finding as the analysis reports it, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFinding {
    pub probe_id: i32,
    pub location_id: i16,
    pub phase: i16,
    /// `p50`, `p95`, `p99` (any `pNN` a latency rule uses) or `failure_ratio`.
    pub statistic: std::borrow::Cow<'static, str>,
    /// `step` or `drift`.
    pub kind: &'static str,
    pub change_at: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub before: f64,
    pub after: f64,
    pub p_value: f64,
    pub effect_size: Option<f64>,
    pub summary: String,
    /// A drift's forecast: when its line reaches the latency alert's
    /// threshold, and the threshold (µs).
    pub crosses: Option<(DateTime<Utc>, f64)>,
}

/// A stored finding, as the API and the command line show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    pub id: i64,
    pub probe: String,
    pub location: String,
    /// `total`, `dns`, `connect`, `tls`, `first_byte` or `transfer`.
    pub phase: String,
    /// `p50`, `p95`, `p99` (or the quantile of a forecast's latency rule, like
    /// `p90`) or `failure_ratio`.
    pub statistic: String,
    /// `step` (a change point) or `drift` (a slow trend; the change is per day).
    pub kind: String,
    pub detected_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub change_at: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// µs for latency statistics, a ratio (0–1) for `failure_ratio`.
    pub before: f64,
    pub after: f64,
    pub absolute_change: f64,
    pub relative_change: f64,
    pub p_value: f64,
    /// Probability that a run after the change is slower than one before (0.5: no change).
    pub effect_size: Option<f64>,
    pub summary: String,
    /// `open`, `acknowledged` or `ended`.
    pub state: String,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Change events within an hour of `change_at` whose labels are all among
    /// the probe's, oldest first (at most 50, the nearest).
    pub events: Vec<ChangeEvent>,
    /// When the probe's definition changed (a new version first seen) within
    /// an hour of `change_at`, the nearest: the probe changed, maybe not the service.
    pub probe_changed_at: Option<DateTime<Utc>>,
    /// When the prober's build recording this probe's runs at this location
    /// changed within an hour of `change_at`, the nearest (from the runs, kept 14 days).
    pub build_changed_at: Option<DateTime<Utc>>,
    /// A drift's forecast: when it carries the statistic across the probe's
    /// `latency` alert threshold (`crosses_ms`), at the slope measured.
    pub crosses_at: Option<DateTime<Utc>>,
    pub crosses_ms: Option<f64>,
}

/// Whether [`Store::save_finding`] added a row or updated the one that
/// already reported the same change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    New(i64),
    Updated(i64),
}

/// Which findings to list.
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    pub probe: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub state: Option<String>,
    /// Every one must be among the labels of the probe's newest definition.
    pub labels: Vec<(String, String)>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// How long [`Store::v1_rows_present`]'s answer is kept.
const V1_CHECK_EVERY: Duration = Duration::from_secs(60);

/// The rows the trend reads gather at `resolution` (columns `probe_id`,
/// `location_id`, the time column returned, `bins`, `stats`): the branches
/// of the live views (migration 0011), at minutes without the packed blocks
/// (read apart, `block_points.rs`), and the v1 tables' branches only when
/// `v1` says they hold rows (hours and minutes; days read the live view,
/// v1 included, as the trend analysis reads no days). Empty, those cost more than the rest of a
/// read: a probe's 8 hours at 5 minutes took 2 ms with them, 0.7 without.
fn trend_rows(resolution: Resolution, v1: bool, from: &str, to: &str) -> (String, &'static str) {
    let pick = |sql: &str| if v1 { sql.to_string() } else { String::new() };
    match resolution {
        Resolution::Minute => (
            format!(
                "(select probe_id, location_id, minute, bins, stats from hist_minute
                  union all select probe_id, location_id, minute, bins, stats from hist_pending
                  {})",
                pick("union all select probe_id, location_id, minute, bins, stats from v1_minute_rows")
            ),
            "minute",
        ),
        // The minute branches bounded by their minutes too, not only by the
        // hour they are truncated to (which no index reads): a week's read
        // of hours took 8 ms in Postgres without, scanning every pending
        // row of the probe and every partition; 1.4 ms with.
        Resolution::Hour => {
            let minutes = format!(
                "minute >= date_trunc('hour', {from}, 'UTC') and minute < {to} + interval '1 hour'"
            );
            (
                format!(
                    "(select probe_id, location_id, hour, bins, stats from hist_hour
                      union all
                      select probe_id, location_id, date_trunc('hour', minute, 'UTC'), bins, stats
                      from hist_minute where minute >= (select rolled_through from hist_mark)
                      and {minutes}
                      union all
                      select probe_id, location_id, date_trunc('hour', minute, 'UTC'), bins, stats
                      from hist_pending where {minutes}
                      {})",
                    pick("union all select probe_id, location_id, hour, bins, stats from v1_hour_rows")
                ),
                "hour",
            )
        }
        Resolution::Day => Resolution::Day.rows("$3", "$4"),
    }
}

const FINDING_COLUMNS: &str = "t.id, p.name, l.name, t.phase, t.statistic, t.kind, t.detected_at,
    t.updated_at, t.change_at, t.window_end, t.before_value, t.after_value, t.absolute_change,
    t.relative_change, t.p_value, t.effect_size, t.summary, t.state, t.acknowledged_by,
    t.acknowledged_at, t.crosses_at, t.crosses_us";

/// A finding's row: its columns, then its context (`events.rs`).
fn finding_select(filter: &str) -> String {
    format!(
        "select {FINDING_COLUMNS}, {FINDING_CONTEXT_COLUMNS}
         from trends t join probes p on p.id = t.probe_id join locations l on l.id = t.location_id
         {FINDING_CONTEXT_JOINS}
         {filter}"
    )
}

impl Store {
    /// Whether the v1 tables hold rows: a previous release (N-1) wrote them
    /// during a rolling upgrade or after a rollback (migration 0011). Asked
    /// at most once every [`V1_CHECK_EVERY`], so the trend reads see such
    /// rows within a minute of the first.
    async fn v1_rows_present(&self) -> Result<bool, StoreError> {
        if let Some((at, present)) = *self.v1_checked.lock() {
            if at.elapsed() < V1_CHECK_EVERY {
                return Ok(present);
            }
        }
        let present: bool = sqlx::query_scalar(
            "select exists (select from minute_counters) or exists (select from hour_counters)",
        )
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            err(
                "checking whether a previous release wrote the v1 tables failed \
                 (is Postgres reachable, and migration 0011 applied? the next pass asks again)",
                e,
            )
        })?;
        *self.v1_checked.lock() = Some((std::time::Instant::now(), present));
        Ok(present)
    }

    /// Every probe and location with runs in `[from, to)`, and how many.
    pub async fn trend_subjects(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Subject>, StoreError> {
        let v1 = self.v1_rows_present().await?;
        let (rows, _) = trend_rows(Resolution::Hour, v1, "date_trunc('hour', $1)", "$2");
        let rows = sqlx::query(&format!(
            "select h.probe_id, p.name, h.location_id, l.name, sum(prober_runs(h.stats, 0))::int8
             from {rows} h
             join probes p on p.id = h.probe_id
             join locations l on l.id = h.location_id
             where h.hour >= date_trunc('hour', $1) and h.hour < $2
             group by 1, 2, 3, 4 order by 2, 4",
        ))
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await
        .map_err(|e| err("listing the probes to analyse for trends failed", e))?;
        rows.iter()
            .map(|r| {
                Ok(Subject {
                    probe_id: r.try_get(0)?,
                    probe: r.try_get(1)?,
                    location_id: r.try_get(2)?,
                    location: r.try_get(3)?,
                    runs: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| err("listing the probes to analyse for trends failed", e))
    }

    /// One probe's series at one location: a point per `step` in
    /// `[from, to)`, every phase's bins merged, read from the minute rows
    /// for steps under an hour and the hour rows otherwise. Points without
    /// runs are absent. The rows' bins are concatenated in SQL and added up
    /// here: `prober_merge`'s sort and group in SQL took 3–4 times as long.
    pub async fn trend_points(
        &self,
        probe_id: i32,
        location_id: i16,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<TrendPoint>, StoreError> {
        let mut all = self
            .trend_points_of(&[(probe_id, location_id)], from, to, step)
            .await?;
        Ok(all.remove(&(probe_id, location_id)).unwrap_or_default())
    }

    /// [`Store::trend_points`] of several probes and locations in one read:
    /// what a pass reads of every screened probe's new points.
    pub async fn trend_points_of(
        &self,
        subjects: &[(i32, i16)],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Duration,
    ) -> Result<HashMap<(i32, i16), Vec<TrendPoint>>, StoreError> {
        let resolution = Resolution::for_step(step);
        let step_secs = step.as_secs().max(60) as i64;
        // The probes and locations as values, not joins: the live views take
        // them only as restrictions (see `Resolution::rows`); one probe as
        // plain equalities, so each of the views' branches is an index range;
        // several as `= any` restrictions, the pairs checked after (probe 1
        // at location 2 is not asked for by probe 1 at 1 and probe 2 at 2).
        let who = if subjects.len() == 1 {
            "h.probe_id = ($1::int4[])[1] and h.location_id = ($2::int2[])[1]"
        } else {
            "h.probe_id = any($1::int4[]) and h.location_id = any($2::int2[])
             and (h.probe_id, h.location_id) in (select * from unnest($1::int4[], $2::int2[]))"
        };
        // Minutes: the rows not packed yet merged per point here, and the
        // blocks as they are stored, opened in Rust (`block_points.rs`).
        let (rows, col) = trend_rows(resolution, self.v1_rows_present().await?, "$3", "$4");
        let blocks = match resolution {
            Resolution::Minute => format!(
                "union all
                     select h.probe_id, h.location_id, h.hour, h.bins, h.stats, h.sums, null, null
                     from hist_minute_block h
                     where {who} and h.hour >= date_trunc('hour', $3, 'UTC') and h.hour < $4"
            ),
            _ => String::new(),
        };
        let sql = format!(
            "select h.probe_id, h.location_id,
                    date_bin(make_interval(secs => $5), h.{col}, timestamptz '1970-01-01 00:00:00+00') t,
                    prober_cat(h.bins) bins, null::int8[] stats, null::int8[] sums,
                    sum(prober_runs(h.stats, 0))::int8, sum(prober_failures(h.stats, 0))::int8
             from {rows} h
             where {who} and h.{col} >= $3 and h.{col} < $4
             group by 1, 2, 3
             {blocks}"
        );
        let fail = |e| {
            let first = subjects.first().map_or(0, |s| s.0);
            let more = match subjects.len() {
                0 | 1 => String::new(),
                n => format!(" and {} more", n - 1),
            };
            err(
                &format!("reading the trend series of probe id {first}{more}"),
                e,
            )
        };
        let (probes, locations): (Vec<i32>, Vec<i16>) = subjects.iter().copied().unzip();
        let rows = sqlx::query(&sql)
            .bind(&probes)
            .bind(&locations)
            .bind(from)
            .bind(to)
            .bind(step_secs as f64)
            .fetch_all(self.pool())
            .await
            .map_err(fail)?;
        let span = Span {
            from: from.timestamp(),
            to: to.timestamp(),
            step: step_secs,
        };
        let mut gathered: HashMap<(i32, i16), BTreeMap<i64, Gathered>> = HashMap::new();
        for r in &rows {
            let key = (r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?);
            let t: DateTime<Utc> = r.try_get(2).map_err(fail)?;
            let Int8s(bins) = r.try_get(3).map_err(fail)?;
            let points = gathered.entry(key).or_default();
            match r.try_get::<Option<Int8s>, _>(4).map_err(fail)? {
                Some(Int8s(stats)) => {
                    let Int8s(sums) = r.try_get(5).map_err(fail)?;
                    add_block(points, span, t.timestamp(), &bins, &stats, &sums);
                }
                None => {
                    let (runs, failures) =
                        (r.try_get(6).map_err(fail)?, r.try_get(7).map_err(fail)?);
                    points
                        .entry(t.timestamp())
                        .or_default()
                        .add(runs, failures, &bins);
                }
            }
        }
        Ok(series_of(gathered))
    }
}

impl Store {
    /// Stores a finding, or updates the open one that reports the same
    /// change: same probe, location, phase, statistic and kind, the same
    /// direction, its change time within `same_within` of this one. Steps
    /// and drifts move as points arrive; they are reported once. A change
    /// the other way is another change (a rise and its recovery).
    pub async fn save_finding(
        &self,
        f: &NewFinding,
        now: DateTime<Utc>,
        same_within: TimeDelta,
    ) -> Result<Saved, StoreError> {
        let fail = |e| err("saving a trend finding failed", e);
        let absolute = f.after - f.before;
        let relative = if f.before.abs() > f64::EPSILON {
            absolute / f.before
        } else {
            0.0
        };
        // One statement: the finding of the same change, locked, updated;
        // else a new row. A step of one phase and a step of the total the
        // same way at about the same time are one change: a phase's step
        // can be confirmed a pass or two before the total's (it is less
        // noisy; by a periodic analysis, the only one that looks for a
        // phase's change points), and the total's finding, which names the phases that
        // moved, then takes its row (phase and all; `detected_at` stays,
        // the change was told then); a phase's step found after the
        // total's leaves the total's as it is.
        let (id, new): (i64, bool) = sqlx::query_as(
            "with existing as (
                 select id, phase from trends
                 where probe_id = $1 and location_id = $2 and statistic = $4
                   and (phase = $3 or ($5 = 'step' and (phase = 0 or $3 = 0)))
                   and kind = $5 and state <> 'ended' and change_at between $7 - $16 and $7 + $16
                   and sign(after_value - before_value) = sign($10::float8 - $9::float8)
                 order by phase <> $3, abs(extract(epoch from change_at - $7)) limit 1 for update
             ), updated as (
                 update trends t set phase = $3, updated_at = $6, change_at = $7, window_end = $8,
                        before_value = $9, after_value = $10, absolute_change = $11,
                        relative_change = $12, p_value = $13, effect_size = $14, summary = $15,
                        crosses_at = $17, crosses_us = $18
                 from existing e where t.probe_id = $1 and t.id = e.id
                   and not (e.phase = 0 and $3 <> 0)
                 returning t.id
             ), kept as (
                 select id from existing where phase = 0 and $3 <> 0
             ), inserted as (
                 insert into trends (probe_id, location_id, phase, statistic, kind, detected_at,
                        updated_at, change_at, window_end, before_value, after_value,
                        absolute_change, relative_change, p_value, effect_size, summary,
                        crosses_at, crosses_us)
                 select $1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        $17, $18
                 where not exists (select 1 from existing)
                 returning id
             )
             select id, false from updated union all select id, false from kept
             union all select id, true from inserted",
        )
        .bind(f.probe_id)
        .bind(f.location_id)
        .bind(f.phase)
        .bind(f.statistic.as_ref())
        .bind(f.kind)
        .bind(now)
        .bind(f.change_at)
        .bind(f.window_end)
        .bind(f.before)
        .bind(f.after)
        .bind(absolute)
        .bind(relative)
        .bind(f.p_value)
        .bind(f.effect_size)
        .bind(&f.summary)
        .bind(same_within)
        .bind(f.crosses.map(|c| c.0))
        .bind(f.crosses.map(|c| c.1))
        .fetch_one(self.pool())
        .await
        .map_err(fail)?;
        Ok(if new {
            Saved::New(id)
        } else {
            Saved::Updated(id)
        })
    }

    /// The latest change time of a step of the total's p50 stored at or
    /// after `from` for each of several probes and locations (absent: none):
    /// a wider spread is judged only where the level did not step
    /// (`analysis::steps::candidates`).
    pub async fn latest_steps(
        &self,
        subjects: &[(i32, i16)],
        from: DateTime<Utc>,
    ) -> Result<HashMap<(i32, i16), DateTime<Utc>>, StoreError> {
        let (probes, locations): (Vec<i32>, Vec<i16>) = subjects.iter().copied().unzip();
        let rows: Vec<(i32, i16, DateTime<Utc>)> = sqlx::query_as(
            "select probe_id, location_id, max(change_at) from trends
             where probe_id = any($1) and location_id = any($2)
               and (probe_id, location_id) in (select * from unnest($1::int4[], $2::int2[]))
               and kind = 'step' and phase = 0 and statistic = 'p50' and change_at >= $3
             group by 1, 2",
        )
        .bind(&probes)
        .bind(&locations)
        .bind(from)
        .fetch_all(self.pool())
        .await
        .map_err(|e| err("reading the latest step findings failed", e))?;
        Ok(rows.into_iter().map(|(p, l, t)| ((p, l), t)).collect())
    }

    /// Stored findings, newest first.
    pub async fn findings(&self, filter: &FindingFilter) -> Result<Vec<Finding>, StoreError> {
        // One object per filter, every one contained: `a=b&a=c` matches nothing.
        let wanted: Vec<sqlx::types::Json<std::collections::BTreeMap<&str, &str>>> = filter
            .labels
            .iter()
            .map(|(k, v)| sqlx::types::Json([(k.as_str(), v.as_str())].into()))
            .collect();
        let sql = finding_select(
            "where ($1::text is null or p.name = $1)
               and ($2::timestamptz is null or t.detected_at >= $2 or t.updated_at >= $2)
               and ($3::text is null or t.state = $3)
               and not exists (
                   select 1 from unnest($5::jsonb[]) w
                   where not coalesce((select v.definition -> 'labels' from probe_versions v
                                       where v.probe_id = t.probe_id order by v.id desc limit 1),
                                      '{}'::jsonb) @> w)
             order by t.detected_at desc, t.id desc
             limit $4",
        );
        let rows = sqlx::query(&sql)
            .bind(&filter.probe)
            .bind(filter.since)
            .bind(&filter.state)
            .bind(filter.limit.max(1))
            .bind(&wanted)
            .fetch_all(self.pool())
            .await
            .map_err(|e| err("reading trend findings failed", e))?;
        rows.iter()
            .map(finding_of_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| err("reading trend findings failed", e))
    }

    /// Stored findings by kind and state.
    pub async fn finding_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("select kind, state, count(*) from trends group by 1, 2 order by 1, 2")
                .fetch_all(self.pool())
                .await
                .map_err(|e| err("counting trend findings failed", e))?;
        Ok(rows
            .into_iter()
            .map(|(k, s, n)| (k, s, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Marks an open finding acknowledged by `by`; `None` when no finding has
    /// that id, the finding as it is now otherwise (acknowledging twice
    /// keeps the first acknowledgement).
    pub async fn ack_finding(
        &self,
        id: i64,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Finding>, StoreError> {
        let fail = |e| err(&format!("acknowledging trend finding {id} failed"), e);
        sqlx::query(
            "update trends set state = 'acknowledged', acknowledged_by = $2, acknowledged_at = $3
             where id = $1 and state = 'open'",
        )
        .bind(id)
        .bind(by)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(fail)?;
        let sql = finding_select("where t.id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(fail)?;
        row.as_ref().map(finding_of_row).transpose().map_err(fail)
    }
}

fn finding_of_row(r: &sqlx::postgres::PgRow) -> Result<Finding, sqlx::Error> {
    let phase: i16 = r.try_get(3)?;
    Ok(Finding {
        id: r.try_get(0)?,
        probe: r.try_get(1)?,
        location: r.try_get(2)?,
        phase: PHASES
            .get(usize::try_from(phase).unwrap_or(usize::MAX))
            .map_or_else(|| format!("phase {phase}"), |p| (*p).to_string()),
        statistic: r.try_get(4)?,
        kind: r.try_get(5)?,
        detected_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        change_at: r.try_get(8)?,
        window_end: r.try_get(9)?,
        before: r.try_get(10)?,
        after: r.try_get(11)?,
        absolute_change: r.try_get(12)?,
        relative_change: r.try_get(13)?,
        p_value: r.try_get(14)?,
        effect_size: r.try_get(15)?,
        summary: r.try_get(16)?,
        state: r.try_get(17)?,
        acknowledged_by: r.try_get(18)?,
        acknowledged_at: r.try_get(19)?,
        crosses_at: r.try_get(20)?,
        crosses_ms: r.try_get::<Option<f64>, _>(21)?.map(|us| us / 1_000.0),
        events: events_of_json(r.try_get(22)?)?,
        probe_changed_at: r.try_get(23)?,
        build_changed_at: r.try_get(24)?,
    })
}
