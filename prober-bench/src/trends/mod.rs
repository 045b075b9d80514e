//! `--trends`: the trend-detection evaluation harness (issue 17, Acceptance).
//! Synthetic probes with one planted change each ([`synth`]) are written
//! through the real store into a scratch database, then the analysis is
//! replayed as the daemon runs it (`prober::analysis::Analyser::pass` at successive
//! `now`): every `--trend-sweep` minutes over the history, every 5 minutes
//! over the last `--trend-dense-hours` (which hold the planted steps, so the
//! detection delay is that of a daemon passing every 5 minutes). The stored
//! findings are scored against the plan ([`score`]); Apache Otava runs on the
//! same series of 5-minute medians ([`otava`]).

mod otava;
mod report;
mod score;
mod synth;

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;

use prober::analysis::{Analyser, AnalysisConfig};
use prober::run::RunRecord;
use prober::store::trends::FindingFilter;
use prober::store::Store;

use crate::args::BenchArgs;
use crate::db::fresh_store;
use crate::procfs;
pub use score::Row;
use synth::Plan;

/// The scratch database when `--trends` is given without `--database-url`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/prober_bench_trends";
/// `--every` when `--trends` is given without it.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);
/// The seed of every synthetic series.
const SEED: u64 = 0x7e4d_2026_1201;
/// The end of the synthetic history (fixed: the run is deterministic).
const END: &str = "2026-11-29T00:00:00Z";
/// The planted steps start this long before the end (plus 0–115 minutes).
const CHANGE_BEFORE_END: TimeDelta = TimeDelta::hours(6);
/// The daemon's pass interval.
pub(crate) const PASS: TimeDelta = TimeDelta::minutes(5);
/// The step analysis looks back 96 points of 5 minutes.
const STEP_LOOKBACK: TimeDelta = TimeDelta::hours(8);
/// Runs per `write_runs` call.
const BATCH: usize = 5_000;

/// Everything one run of the harness measured.
#[derive(Debug, Clone, Serialize)]
pub struct TrendFigures {
    pub every_s: u64,
    pub days: u32,
    pub diurnal: bool,
    pub probes: usize,
    pub runs: u64,
    pub seed_s: f64,
    pub passes: usize,
    pub dense_from: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub rows: Vec<Row>,
    pub cost: Cost,
    /// Otava's rows, or why it was skipped.
    pub otava: Result<Vec<Row>, String>,
    pub wall_s: f64,
}

/// What the analysis cost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    /// Wall time of one pass, ms: p50, mean, max.
    pub pass_ms: [f64; 3],
    /// Probes a pass analysed (the largest).
    pub subjects: u64,
    /// Wall time per probe and pass, ms (all passes' wall / all subjects).
    pub per_probe_ms: f64,
    /// Share of the probes' passes that ran the full step analysis (the
    /// others read only their new points: `prober::analysis::screen`).
    pub full_share: f64,
    /// Share of one core at a pass every 5 min, extrapolated: 1,000 and 10,000 probes.
    pub core_share_1k: f64,
    pub core_share_10k: f64,
    /// CPU per probe and pass, ms: the harness process (the analysis)
    /// and every Postgres process (its reads and writes; the machine's
    /// other databases too, so a quiet machine's figure). `None` where
    /// `/proc` cannot tell. Unlike the wall, not inflated by waits nor by
    /// a shared machine's steal.
    pub cpu_per_probe_ms: Option<[f64; 2]>,
}

/// Runs the harness; returns the text to print.
pub async fn run(args: &BenchArgs) -> Result<String, String> {
    let started = Instant::now();
    let t = &args.trend;
    if t.trend_probes == 0 || t.trend_days == 0 {
        return Err("--trend-probes and --trend-days must be at least 1".into());
    }
    if args.every > Duration::from_secs(60) || args.every.subsec_millis() != 0 {
        return Err("--trends: --every must be whole seconds, at most 60s".into());
    }
    let dense = TimeDelta::hours(i64::from(t.trend_dense_hours.max(8)));
    let end: DateTime<Utc> = END.parse().map_err(|e| format!("{e}"))?;
    let start = end - TimeDelta::days(i64::from(t.trend_days));
    if end - start < dense {
        return Err("--trend-days must cover --trend-dense-hours".into());
    }
    if t.trend_reuse && !t.no_otava {
        return Err(
            "--trend-reuse needs --no-otava (Otava reads the series the seeding computes)".into(),
        );
    }
    let store = if t.trend_reuse {
        crate::db::check_database_url(&args.database_url)?;
        Store::new(&args.database_url, "bench").map_err(|e| e.to_string())?
    } else {
        fresh_store(&args.database_url, "bench").await?
    };
    let plans = synth::plans(
        SEED,
        t.trend_probes,
        t.trend_probes * t.trend_stationary_factor.max(1),
        end - CHANGE_BEFORE_END,
        !t.trend_no_diurnal,
    );
    if t.trend_reuse {
        let names: Vec<String> = plans.iter().map(|p| p.meta.name.clone()).collect();
        let found: i64 = sqlx::query_scalar("select count(*) from probes where name = any($1)")
            .bind(&names)
            .fetch_one(store.pool())
            .await
            .map_err(|e| format!("--trend-reuse: {e}: run once without it to seed the database"))?;
        if found != names.len() as i64 {
            return Err(format!(
                "--trend-reuse: {} holds {found} of this run's {} probes: seed it first with the same --trend-* options and without --trend-reuse",
                args.database_url,
                names.len()
            ));
        }
        sqlx::query("delete from trends")
            .execute(store.pool())
            .await
            .map_err(|e| format!("--trend-reuse: {e}"))?;
    }
    eprintln!(
        "bench: trends: {} probes every {} s over {} days ({start} – {end})",
        plans.len(),
        args.every.as_secs(),
        t.trend_days
    );
    let t0 = Instant::now();
    let (runs, medians) = if t.trend_reuse {
        (0, Vec::new())
    } else {
        seed(&store, &plans, args.every, start, end).await?
    };
    let seed_s = t0.elapsed().as_secs_f64();
    // The daemon's writer vacuums the tables each rollup churned
    // (`Store::vacuum_rolled`), so its reads never meet the dead rows of
    // the minutes folded and packed; seeding 4 days in a minute leaves
    // them all, and the analysis' reads scanned them (Postgres autovacuum
    // may be off, as on the machines the figures come from). A database
    // seeded before this vacuum is vacuumed here when reused.
    let t1 = Instant::now();
    store
        .vacuum_rolled(true)
        .await
        .map_err(|e| format!("vacuum after seeding: {e}"))?;
    eprintln!(
        "bench: trends: {runs} runs written in {seed_s:.1} s, vacuumed in {:.1} s; replaying the analysis",
        t1.elapsed().as_secs_f64()
    );
    let sweep = TimeDelta::minutes(i64::from(t.trend_sweep_minutes.max(5)));
    let (passes, cost) = replay(&store, start, end, dense, sweep).await?;
    let findings = store
        .findings(&FindingFilter {
            limit: 1_000_000,
            ..FindingFilter::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let days = f64::from(t.trend_days);
    let rows = score::ours(&plans, &findings, days, args.every);
    let otava = if t.no_otava {
        Err("--no-otava".to_string())
    } else {
        otava::run(&plans, &medians, start, end, days, args.every).await
    };
    let figures = TrendFigures {
        every_s: args.every.as_secs(),
        days: t.trend_days,
        diurnal: !t.trend_no_diurnal,
        probes: plans.len(),
        runs,
        seed_s,
        passes,
        dense_from: end - dense,
        end,
        rows,
        cost,
        otava,
        wall_s: started.elapsed().as_secs_f64(),
    };
    if args.json {
        serde_json::to_string(&figures)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string())
    } else {
        Ok(report::render(&figures))
    }
}

/// Every probe's runs over `[start, end)`, probe `i` offset by `i/n` of the
/// interval, written in time order in batches; a rollup each simulated hour
/// and a last one at the end. Returns the runs written and, per probe, the
/// 5-minute medians of the total (failures included, as the store bins
/// them) for Otava.
async fn seed(
    store: &Store,
    plans: &[Plan],
    every: Duration,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(u64, Vec<Vec<f64>>), String> {
    let e = |x: prober::store::StoreError| x.to_string();
    store.ensure_partitions_around(start).await.map_err(e)?;
    store.start_rollups(start).await.map_err(e)?;
    let every_us = i64::try_from(every.as_micros()).unwrap_or(i64::MAX);
    let ticks = (end - start).num_microseconds().unwrap_or(0) / every_us;
    let points = ((end - start).num_seconds() / 300) as usize;
    let mut totals: Vec<Vec<Vec<u64>>> = vec![vec![Vec::new(); points]; plans.len()];
    let n = plans.len() as i64;
    let (mut batch, mut runs) = (Vec::with_capacity(BATCH), 0u64);
    let mut hour = start;
    for tick in 0..ticks {
        let at0 = start + TimeDelta::microseconds(tick * every_us);
        if at0 - hour >= TimeDelta::hours(1) {
            runs += flush(store, &mut batch).await?;
            hour = at0.duration_trunc(TimeDelta::hours(1)).unwrap_or(at0);
            if hour.time() == chrono::NaiveTime::MIN {
                store.ensure_partitions_around(hour).await.map_err(e)?;
            }
            store.rollup(hour).await.map_err(e)?;
        }
        for (i, plan) in plans.iter().enumerate() {
            let at = at0 + TimeDelta::microseconds(i as i64 * every_us / n);
            let s = plan.sample(SEED, tick as u64, at, start);
            let point = ((at - start).num_seconds() / 300) as usize;
            if let Some(v) = totals[i].get_mut(point) {
                v.push(s.phases.total_us);
            }
            batch.push(synth::record(plan, s, at));
            if batch.len() == BATCH {
                runs += flush(store, &mut batch).await?;
            }
        }
    }
    runs += flush(store, &mut batch).await?;
    store.rollup(end + TimeDelta::minutes(5)).await.map_err(e)?;
    let medians = totals
        .into_iter()
        .map(|probe| probe.into_iter().map(median).collect())
        .collect();
    Ok((runs, medians))
}

async fn flush(store: &Store, batch: &mut Vec<RunRecord>) -> Result<u64, String> {
    if batch.is_empty() {
        return Ok(0);
    }
    let n = store.write_runs(batch).await.map_err(|e| e.to_string())?;
    batch.clear();
    Ok(n)
}

/// The median of a point's samples (NaN for none).
fn median(mut v: Vec<u64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m] as f64
    } else {
        (v[m - 1] + v[m]) as f64 / 2.0
    }
}

/// The analysis as the daemon runs it: a pass every `sweep` from the first
/// full step window, every 5 minutes over the last `dense`. Returns the
/// passes run and their cost.
async fn replay(
    store: &Store,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    dense: TimeDelta,
    sweep: TimeDelta,
) -> Result<(usize, Cost), String> {
    let cfg = AnalysisConfig::default();
    let dense_from = end - dense;
    let mut times = Vec::new();
    let mut now = start + STEP_LOOKBACK;
    while now < dense_from {
        times.push(now);
        now += sweep;
    }
    // The cost is that of the dense passes: a pass every 5 minutes, as the
    // daemon runs it (the sweep's passes an hour apart each analyse drifts).
    // At the daemon's times: as points close (`next_pass`).
    let dense_start = times.len();
    let mut now = prober::analysis::next_pass(dense_from - TimeDelta::seconds(1), cfg.every);
    while now <= end {
        times.push(now);
        now = prober::analysis::next_pass(now, cfg.every);
    }
    let (mut walls, mut subjects, mut max_subjects) = (Vec::new(), 0u64, 0u64);
    let mut full = 0u64;
    let mut analyser = Analyser::default();
    let cpu = || {
        Some([
            procfs::process_cpu_us()?,
            procfs::postgres_cluster_cpu_us()?,
        ])
    };
    let mut cpu_from = None;
    for (k, now) in times.iter().enumerate() {
        if k == dense_start {
            cpu_from = cpu();
        }
        let t = Instant::now();
        let pass = analyser
            .pass(store, &cfg, *now)
            .await
            .map_err(|e| format!("analysis at {now}: {e}"))?;
        let wall = t.elapsed().as_secs_f64() * 1_000.0;
        if k >= dense_start {
            walls.push(wall);
            subjects += pass.subjects;
            full += pass.full;
        }
        max_subjects = max_subjects.max(pass.subjects);
        if k % 50 == 0 {
            eprintln!(
                "bench: trends: pass {k}/{} at {now}: {} probes, {wall:.0} ms",
                times.len(),
                pass.subjects,
            );
        }
    }
    let per_probe = |us: u64| us as f64 / 1_000.0 / subjects.max(1) as f64;
    let cpu_per_probe_ms = match (cpu_from, cpu()) {
        (Some([h0, p0]), Some([h1, p1])) => Some([
            per_probe(h1.saturating_sub(h0)),
            per_probe(p1.saturating_sub(p0)),
        ]),
        _ => None,
    };
    let total_ms: f64 = walls.iter().sum();
    let per_probe_ms = total_ms / subjects.max(1) as f64;
    let mut sorted = walls.clone();
    sorted.sort_by(f64::total_cmp);
    let pass_s = PASS.num_seconds() as f64;
    let cost = Cost {
        pass_ms: [
            sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
            total_ms / walls.len().max(1) as f64,
            sorted.last().copied().unwrap_or(0.0),
        ],
        subjects: max_subjects,
        per_probe_ms,
        full_share: full as f64 / subjects.max(1) as f64,
        core_share_1k: per_probe_ms * 1_000.0 / 1_000.0 / pass_s,
        core_share_10k: per_probe_ms * 10_000.0 / 1_000.0 / pass_s,
        cpu_per_probe_ms,
    };
    Ok((times.len(), cost))
}
