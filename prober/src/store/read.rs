//! Reads for the API: windows over every probe, run history, latency series.
//! Percentiles always come from merged bins, by HdrHistogram's rule.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{err, Store, StoreError};
use crate::results::hist::{bin_of_key, SparseHist};

/// The first window [`Store::runs`] reads, back from its upper bound: two
/// hours hold the rows not packed yet, and a page of 100 runs of a probe
/// running every 72 s or faster. Each next window is four times as long.
const RUNS_FIRST_WINDOW: TimeDelta = TimeDelta::hours(2);

/// Counts and percentiles of one probe over a window (phase `total`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    pub runs: i64,
    pub failures: i64,
    pub p50_us: Option<i64>,
    pub p95_us: Option<i64>,
    pub p99_us: Option<i64>,
}

/// One probe's runs and failures on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayCount {
    pub day: chrono::NaiveDate,
    pub runs: i64,
    pub failures: i64,
}

/// One stored run.
#[derive(Debug, Clone)]
pub struct StoredRun {
    pub run_id: Uuid,
    pub scheduled_at: DateTime<Utc>,
    pub lateness_us: i32,
    pub location: String,
    pub version: String,
    pub success: bool,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub status_code: Option<i16>,
    pub phases_us: [Option<i32>; 6],
    pub response_bytes: i32,
    /// Steps, attempts and kind-specific facts, when the run has them.
    pub detail: Option<serde_json::Value>,
    /// `runs.trigger`: 0 scheduled, 1 API.
    pub trigger: i16,
}

/// One step of a latency series.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyPoint {
    pub time: DateTime<Utc>,
    pub count: i64,
    pub p50_us: Option<i64>,
    pub p90_us: Option<i64>,
    pub p95_us: Option<i64>,
    pub p99_us: Option<i64>,
    pub max_us: Option<i64>,
}

impl Resolution {
    /// The coarsest table whose rows fit evenly in `step`.
    pub fn for_step(step: Duration) -> Resolution {
        let s = step.as_secs();
        if s >= 86_400 && s.is_multiple_of(86_400) {
            Resolution::Day
        } else if s >= 3_600 && s.is_multiple_of(3_600) {
            Resolution::Hour
        } else {
            Resolution::Minute
        }
    }
}

impl Store {
    /// Per probe name: runs, failures and p50/p95/p99 of `total` since `from`, at `resolution`.
    pub async fn windows(
        &self,
        resolution: Resolution,
        from: DateTime<Utc>,
    ) -> Result<HashMap<String, WindowStats>, StoreError> {
        let (rows, col) = resolution.rows("$1", "'infinity'");
        // One range scan of the rows' primary key per probe (probe_id,
        // location_id, time) instead of a scan of the window across probes.
        let source = format!("{rows} h where h.probe_id = p.id and h.{col} >= $1");
        self.window_per_probe(&source, Some(from)).await
    }

    /// Per probe name: runs, failures and p50/p95/p99 of `total` over the
    /// last hour: the current minute and the 59 before it.
    pub async fn last_hour(&self) -> Result<HashMap<String, WindowStats>, StoreError> {
        let now = Utc::now();
        let minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        self.windows(Resolution::Minute, minute - TimeDelta::minutes(59))
            .await
    }

    /// Per probe name: runs, failures and p50/p95/p99 of `total` over the
    /// last day, from the current UTC hour less 23 hours: one stored row per
    /// probe and location for the closed hours (`prober_recent`, migration
    /// 0014), so the fleet overview reads about as many rows as probes.
    pub async fn last_day(&self) -> Result<HashMap<String, WindowStats>, StoreError> {
        let source = "prober_recent(p.id) h where h.bins is not null";
        self.window_per_probe(source, None).await
    }

    /// Per probe: the counters of the rows of `source` (a relation aliased
    /// `h`, with its condition, per probe `p`) read in place, phase `total`'s
    /// bins sliced out and concatenated, the quantiles taken in Rust
    /// (`SparseHist`, the same rule as `prober_quantile`). `$1` is `from`.
    async fn window_per_probe(
        &self,
        source: &str,
        from: Option<DateTime<Utc>>,
    ) -> Result<HashMap<String, WindowStats>, StoreError> {
        let sql = format!(
            "select p.name, c.runs, c.failures, c.bins
             from probes p
             cross join lateral (
                 select sum(prober_runs(h.stats, 0))::bigint runs,
                        sum(prober_failures(h.stats, 0))::bigint failures,
                        prober_cat(prober_phase(h.bins, 0)) bins
                 from {source}) c
             where c.runs > 0"
        );
        let mut query = sqlx::query(&sql);
        if let Some(from) = from {
            query = query.bind(from);
        }
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(|e| err("window query failed", e))?;
        let mut out = HashMap::new();
        for r in rows {
            let name: String = r.try_get(0).map_err(|e| err("window query", e))?;
            let bins: Option<Vec<i64>> = r.try_get(3).unwrap_or(None);
            let hist = unpack_bins(&bins.unwrap_or_default());
            let q = |q: f64| {
                hist.value_at_quantile(q)
                    .and_then(|v| i64::try_from(v).ok())
            };
            let stats = WindowStats {
                runs: r.try_get(1).unwrap_or(0),
                failures: r.try_get(2).unwrap_or(0),
                p50_us: q(0.50),
                p95_us: q(0.95),
                p99_us: q(0.99),
            };
            out.insert(name, stats);
        }
        Ok(out)
    }

    /// Per probe name: runs and failures (phase `total`) per UTC day from
    /// `from`'s day on, oldest first, from the day rows (today's live).
    pub async fn daily_counts(
        &self,
        from: DateTime<Utc>,
    ) -> Result<HashMap<String, Vec<DayCount>>, StoreError> {
        // One scan of the window across probes (about 100 ms for 1,000
        // probes, most of it the current hour's minute rows), not one per probe.
        let rows = sqlx::query(
            "select p.name, c.day, c.runs, c.failures
             from (select h.probe_id, h.day, sum(prober_runs(h.stats, 0))::bigint runs,
                          sum(prober_failures(h.stats, 0))::bigint failures
                   from hist_day_live h
                   where h.day >= date_trunc('day', $1::timestamptz, 'UTC')
                   group by 1, 2) c
             join probes p on p.id = c.probe_id
             where c.runs > 0
             order by p.name, c.day",
        )
        .bind(from)
        .fetch_all(self.pool())
        .await
        .map_err(|e| err("daily counts query failed", e))?;
        let mut out: HashMap<String, Vec<DayCount>> = HashMap::new();
        for r in rows {
            let name: String = r.try_get(0).map_err(|e| err("daily counts query", e))?;
            let day: DateTime<Utc> = r.try_get(1).map_err(|e| err("daily counts query", e))?;
            out.entry(name).or_default().push(DayCount {
                day: day.date_naive(),
                runs: r.try_get(2).unwrap_or(0),
                failures: r.try_get(3).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Per probe name: runs and failures (phase `total`) over the last 30
    /// days, from the current UTC day less 29: the counters `prober_recent`
    /// keeps (migration 0014), so about one row per probe is read.
    pub async fn month_counts(&self) -> Result<HashMap<String, (i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "select p.name, c.runs, c.failures
             from probes p
             cross join lateral (
                 select sum(prober_runs(r.month_stats, 0))::bigint runs,
                        sum(prober_failures(r.month_stats, 0))::bigint failures
                 from prober_recent(p.id) r) c
             where c.runs > 0",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| err("30-day counts query failed", e))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| err("30-day counts query failed", e))
    }

    /// Whether the store has ever seen a probe of this name.
    pub async fn probe_exists(&self, name: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar("select exists (select 1 from probes where name = $1)")
            .bind(name)
            .fetch_one(self.pool())
            .await
            .map_err(|e| err("probe lookup failed", e))
    }

    /// Runs of `probe` in `[from, to)`, newest first, strictly before `before`
    /// (a cursor): stored rows and packed hours alike (`prober_run_rows`).
    ///
    /// A page is read from the newest hours first, in windows widened until
    /// one holds `limit` runs or reaches `from`: a page found in `[lo, hi)`
    /// is the page of `[from, hi)` (every run after its last one is in the
    /// window), and the hours before `lo` are never opened (a packed hour's
    /// runs are decoded and their ids derived to be sorted).
    pub async fn runs(
        &self,
        probe: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let hi = match before {
            Some((at, _)) => to.min(at + TimeDelta::microseconds(1)),
            None => to,
        };
        let mut span = RUNS_FIRST_WINDOW;
        loop {
            let lo = if hi - from > span { hi - span } else { from };
            let page = self.runs_in(probe, lo, hi, before, limit).await?;
            if lo == from || page.len() as i64 >= limit {
                return Ok(page);
            }
            span = span.checked_mul(4).unwrap_or(TimeDelta::MAX);
        }
    }

    /// [`Store::runs`] over one window.
    async fn runs_in(
        &self,
        probe: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let (cursor_at, cursor_id) = match before {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
        let rows = sqlx::query(
            "select r.run_id, r.scheduled_at, r.lateness_us, l.name, v.version, r.success,
                    e.name, r.error_message, r.status_code,
                    r.total_us, r.dns_us, r.connect_us, r.tls_us, r.first_byte_us, r.transfer_us,
                    r.response_bytes, r.detail, r.trigger
             from prober_run_rows($2, $3) r
             join probe_versions v on v.id = r.version_id
             join locations l on l.id = r.location_id
             left join error_classes e on e.id = r.error_class
             where r.probe_id = (select id from probes where name = $1)
               and r.scheduled_at >= $2 and r.scheduled_at < $3
               and ($4::timestamptz is null or (r.scheduled_at, r.run_id) < ($4, $5))
             order by r.scheduled_at desc, r.run_id desc
             limit $6",
        )
        .bind(probe)
        .bind(from)
        .bind(to)
        .bind(cursor_at)
        .bind(cursor_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(|e| err("run history query failed", e))?;
        rows.iter()
            .map(|r| {
                Ok(StoredRun {
                    run_id: r.try_get(0)?,
                    scheduled_at: r.try_get(1)?,
                    lateness_us: r.try_get(2)?,
                    location: r.try_get(3)?,
                    version: r.try_get(4)?,
                    success: r.try_get(5)?,
                    error_class: r.try_get(6)?,
                    error_message: r.try_get(7)?,
                    status_code: r.try_get(8)?,
                    phases_us: [
                        Some(r.try_get(9)?),
                        r.try_get(10)?,
                        r.try_get(11)?,
                        r.try_get(12)?,
                        r.try_get(13)?,
                        r.try_get(14)?,
                    ],
                    response_bytes: r.try_get(15)?,
                    detail: r.try_get(16)?,
                    trigger: r.try_get(17)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| err("run history query failed", e))
    }

    /// Percentiles and counts of `phase` per `step` in `[from, to)`, merged from bins of
    /// the coarsest table that fits the step.
    pub async fn latency_series(
        &self,
        probe: &str,
        phase: i16,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<LatencyPoint>, StoreError> {
        let (rows, col) = Resolution::for_step(step).rows("$3", "$4");
        let step_secs = i64::try_from(step.as_secs()).unwrap_or(i64::MAX);
        // The phase's bins of each step merged in SQL, the counts and
        // percentiles taken in Rust (the same rule as `prober_quantile`).
        let sql = format!(
            "select date_bin(make_interval(secs => $5), h.{col}, timestamptz '1970-01-01 00:00:00+00') t,
                    prober_merge(prober_phase(h.bins, $2)) bins
             from {rows} h
             where h.probe_id = (select id from probes where name = $1)
               and h.{col} >= $3 and h.{col} < $4
             group by 1 order by 1"
        );
        let rows = sqlx::query(&sql)
            .bind(probe)
            .bind(i32::from(phase))
            .bind(from)
            .bind(to)
            .bind(step_secs as f64)
            .fetch_all(self.pool())
            .await
            .map_err(|e| err("latency query failed", e))?;
        let mut points = Vec::with_capacity(rows.len());
        for r in &rows {
            let bins: Vec<i64> = r.try_get(1).map_err(|e| err("latency query failed", e))?;
            let hist = unpack_bins(&bins);
            if hist.is_empty() {
                continue;
            }
            let q = |q: f64| hist.value_at_quantile(q).map(|v| v as i64);
            points.push(LatencyPoint {
                time: r.try_get(0).map_err(|e| err("latency query failed", e))?,
                count: i64::try_from(hist.total()).unwrap_or(i64::MAX),
                p50_us: q(0.50),
                p90_us: q(0.90),
                p95_us: q(0.95),
                p99_us: q(0.99),
                max_us: q(1.0),
            });
        }
        Ok(points)
    }
}

impl Store {
    /// The quantile `q` of `phase` of one probe between `from` and `to`, from the
    /// table of the given resolution (`minute`, `hour` or `day`).
    pub async fn quantile(
        &self,
        probe: &str,
        phase: i16,
        resolution: Resolution,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        q: f64,
    ) -> Result<Option<i64>, StoreError> {
        let (rows, col) = resolution.rows("$3", "$4");
        // The probe's id as a value, not a join: the live views' minute branch
        // takes only restrictions, not join conditions (see `Resolution::rows`).
        let sql = format!(
            "select prober_quantile($5, prober_merge(prober_phase(h.bins, $2)), $2)
             from {rows} h
             where h.probe_id = (select id from probes where name = $1)
               and h.{col} >= $3 and h.{col} < $4"
        );
        let row = sqlx::query(&sql)
            .bind(probe)
            .bind(i32::from(phase))
            .bind(from)
            .bind(to)
            .bind(q)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| err("quantile query failed", e))?;
        row.try_get::<Option<i64>, _>(0)
            .map_err(|e| err("quantile query failed", e))
    }
}

/// Which histogram table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Minute,
    Hour,
    Day,
}

impl Resolution {
    /// The rows of this resolution between the SQL expressions `from` and
    /// `to` (both included; readers add their own bounds), and their time
    /// column: `prober_minutes(from, to)` (migration 0015: stored, pending
    /// and packed minute rows, opening only the blocks of the hours in
    /// range), `prober_hours(from, to)` (migration 0020: the same for hour
    /// rows and packed days), or the live day view (migration 0011). Postgres
    /// pushes a reader's conditions into their branches only as
    /// restrictions (`probe_id = <value>`, or a lateral reference), never
    /// from a join, so readers filter that way.
    pub(super) fn rows(self, from: &str, to: &str) -> (String, &'static str) {
        match self {
            Resolution::Minute => (format!("prober_minutes({from}, {to})"), "minute"),
            Resolution::Hour => (format!("prober_hours({from}, {to})"), "hour"),
            Resolution::Day => ("hist_day_live".into(), "day"),
        }
    }
}

/// A stored bins array (migration 0011) of every phase as one histogram per
/// phase id below `phases` (elements of other phases are ignored).
pub(super) fn unpack_phases(mut bins: Vec<i64>, phases: usize) -> Vec<SparseHist> {
    let mut out = vec![SparseHist::default(); phases];
    // Sorted, each bin is added at the end of its phase's list (several
    // rows' bins concatenated would otherwise move the list's tail at
    // almost every new bin), in place: the caller's array is not kept. A
    // stable sort, which merges the runs already sorted (a point's bins
    // are its minutes' sorted lists one after another; 2-3 % less of the
    // analysis' CPU at 30 runs a point than an unstable sort).
    bins.sort();
    // Each phase's list sized once to its distinct bins (grown bin by bin,
    // its reallocations were a third of the decoding at 30 runs a point).
    let mut distinct = vec![0usize; phases];
    let mut last = None;
    for &e in &bins {
        let cell = e >> 32;
        if last != Some(cell) {
            last = Some(cell);
            if let Some(n) = usize::try_from(e >> 48)
                .ok()
                .and_then(|p| distinct.get_mut(p))
            {
                *n += 1;
            }
        }
    }
    for (hist, n) in out.iter_mut().zip(distinct) {
        hist.reserve(n);
    }
    for &e in &bins {
        let phase = usize::try_from(e >> 48).unwrap_or(usize::MAX);
        if let Some(hist) = out.get_mut(phase) {
            let (lo, _) = bin_of_key(((e >> 32) & 0xffff) as i32);
            hist.add_bin_ascending(lo, (e & 0xffff_ffff) as u64);
        }
    }
    out
}

/// A stored bins array (migration 0011) of one phase as a histogram.
fn unpack_bins(bins: &[i64]) -> SparseHist {
    let mut hist = SparseHist::default();
    for &e in bins {
        let (lo, _) = bin_of_key(((e >> 32) & 0xffff) as i32);
        hist.add_bin(lo, (e & 0xffff_ffff) as u64);
    }
    hist
}
