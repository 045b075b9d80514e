//! The run writer's statement: a batch of runs and their histogram samples
//! as columns, inserted in one idempotent statement.

use chrono::{DateTime, NaiveDate, Utc};

use super::clean::{clean_detail, clean_text};
use super::pending::PendingRows;
use super::{err, Store, StoreError, MAX_ERROR_MESSAGE_BYTES};
use crate::results::hist::bin_key;
use crate::run::{phase_samples, RunRecord};

impl Store {
    /// Writes a batch of runs and their histogram bins in one statement.
    /// Idempotent: runs already stored are skipped and not counted again.
    /// Returns how many runs were new.
    pub async fn write_runs(&self, batch: &[RunRecord]) -> Result<u64, StoreError> {
        self.write_runs_as(batch, Form::Full).await
    }

    /// [`Store::write_runs`] in the given form: [`Form::Reduced`] stores the
    /// runs without their error message and detail, for runs whose text
    /// Postgres refused even cleaned.
    pub async fn write_runs_as(&self, batch: &[RunRecord], form: Form) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let (location_id, build_id) = self.dimension_ids().await?;
        let mut days: Vec<NaiveDate> = batch.iter().map(|r| r.scheduled_at.date_naive()).collect();
        days.sort_unstable();
        days.dedup();
        for d in days {
            self.ensure_partition(d).await?;
        }
        let mut cols = RunColumns::default();
        self.register_versions(batch.iter().map(|r| &*r.meta))
            .await?;
        // A run twice in one batch is stored once, so it is counted once:
        // its second copy's samples would join the one row inserted.
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        for r in batch.iter().filter(|r| seen.insert(r.run_id)) {
            let (probe_id, version_id) = self.version_ids(&r.meta).await?;
            let counted = r.trigger.id() == 0 || self.count_api_runs;
            cols.push(r, probe_id, version_id, form, counted);
        }
        let pending = cols.pending.columns();
        let insert = sqlx::query_scalar(INSERT_RUNS)
            .bind(&cols.run_id)
            .bind(&cols.scheduled_at)
            .bind(&cols.probe_id)
            .bind(&cols.version_id)
            .bind(location_id)
            .bind(build_id)
            .bind(&cols.lateness_us)
            .bind(&cols.phases[0])
            .bind(&cols.phases[1])
            .bind(&cols.phases[2])
            .bind(&cols.phases[3])
            .bind(&cols.phases[4])
            .bind(&cols.phases[5])
            .bind(&cols.response_bytes)
            .bind(&cols.status_code)
            .bind(&cols.error_class)
            .bind(&cols.success)
            .bind(&cols.error_message)
            .bind(&cols.s_run_id)
            .bind(&cols.s_phase)
            .bind(&cols.s_us)
            .bind(&cols.s_key)
            .bind(&cols.detail)
            .bind(&cols.trigger)
            .bind(self.count_api_runs)
            .bind(&pending.probe_id)
            .bind(&pending.minute)
            .bind(&pending.bins_from)
            .bind(&pending.bins_to)
            .bind(&pending.stats_from)
            .bind(&pending.stats_to)
            .bind(&pending.bins)
            .bind(&pending.stats)
            .bind(&pending.sums)
            .bind(pending.counted);
        let fail = |e| {
            err(
                &format!("writing {} runs to {}", batch.len(), self.target()),
                e,
            )
        };
        let oldest = batch.iter().map(|r| r.scheduled_at).min();
        let inserted: i64 = if oldest.is_some_and(|t| t < Utc::now() - PACKABLE_AFTER) {
            // A run whose hour a rollup may be packing (a batch replayed
            // late): written after the pack in progress, if any, commits, so
            // the statement sees where packing reached and finds the run in
            // its block. Otherwise a replay could insert again a run the pack
            // had just moved (and count it twice). Newer runs never wait.
            let mut tx = self.pool.begin().await.map_err(fail)?;
            sqlx::query("select pg_advisory_xact_lock_shared($1)")
                .bind(super::rollup::FOLD_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            let n = insert.fetch_one(&mut *tx).await.map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            n
        } else {
            insert.fetch_one(&self.pool).await.map_err(fail)?
        };
        Ok(u64::try_from(inserted).unwrap_or(0))
    }
}

/// Runs scheduled before now less this may lie in an hour a rollup is
/// packing (it packs the hours before H less an hour, H at most the last
/// full hour): their batch waits for a pack in progress. Ten minutes short
/// of that hour, for replicas whose clocks differ.
const PACKABLE_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(50);

/// A batch as columns, for `unnest`.
#[derive(Default)]
struct RunColumns {
    run_id: Vec<uuid::Uuid>,
    scheduled_at: Vec<DateTime<Utc>>,
    probe_id: Vec<i32>,
    version_id: Vec<i32>,
    lateness_us: Vec<i32>,
    phases: [Vec<Option<i32>>; 6],
    response_bytes: Vec<i32>,
    status_code: Vec<Option<i16>>,
    error_class: Vec<Option<i16>>,
    success: Vec<bool>,
    error_message: Vec<Option<String>>,
    detail: Vec<Option<serde_json::Value>>,
    trigger: Vec<i16>,
    // one entry per (run, phase) sample, with its bin
    s_run_id: Vec<uuid::Uuid>,
    s_phase: Vec<i16>,
    s_us: Vec<i64>,
    s_key: Vec<i32>,
    /// The `hist_pending` rows of the counted runs.
    pending: PendingRows,
}

fn clamp_i32(v: i64) -> i32 {
    i32::try_from(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX))).unwrap_or(i32::MAX)
}

impl RunColumns {
    fn push(&mut self, r: &RunRecord, probe_id: i32, version_id: i32, form: Form, counted: bool) {
        let o = &r.outcome;
        let key = counted.then(|| self.pending.run(probe_id, r.scheduled_at));
        self.run_id.push(r.run_id);
        self.scheduled_at.push(r.scheduled_at);
        self.probe_id.push(probe_id);
        self.version_id.push(version_id);
        self.lateness_us.push(clamp_i32(r.lateness_us));
        self.trigger.push(r.trigger.id());
        let mut sample = |phase: i16, us: u64| {
            let (us, bin) = (i64::try_from(us).unwrap_or(i64::MAX), bin_key(us));
            self.s_run_id.push(r.run_id);
            self.s_phase.push(phase);
            self.s_us.push(us);
            self.s_key.push(bin);
            if let Some(key) = key {
                self.pending.sample(key, phase, us, bin, !o.success);
            }
        };
        let phases = phase_samples(&o.phases);
        for (i, us) in phases.iter().enumerate() {
            if let Some(us) = us {
                sample(i as i16, *us);
            }
        }
        // A scenario's steps: phase 100 + the step's index, for the steps that ran.
        for (i, st) in o.steps.iter().enumerate().take(100) {
            if st.status != crate::run::StepStatus::Skipped {
                sample(100 + i as i16, st.phases.total_us);
            }
        }
        // A browser check's Web Vitals: phases 200-203.
        for (id, v) in crate::run::vital_samples(o) {
            sample(id, v);
        }
        for (i, us) in phases.iter().enumerate() {
            self.phases[i].push(us.map(|us| clamp_i32(us as i64)));
        }
        let has_detail = !(o.steps.is_empty() && o.attempts.is_empty() && o.info.is_empty());
        self.detail
            .push((has_detail && form == Form::Full).then(|| {
                clean_detail(
                    serde_json::json!({"steps": o.steps, "attempts": o.attempts, "info": o.info}),
                )
            }));
        self.response_bytes.push(clamp_i32(o.response_bytes as i64));
        self.status_code.push(o.status_code.map(|c| c as i16));
        self.error_class
            .push(o.error.as_ref().map(|e| error_class_id(e.class)));
        self.success.push(o.success);
        self.error_message
            .push(o.error.as_ref().map(|e| match form {
                Form::Full => clean_text(&e.message, MAX_ERROR_MESSAGE_BYTES).into_owned(),
                Form::Reduced => REDUCED_MESSAGE.to_string(),
            }));
    }
}

/// How much of a run is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Everything, text cleaned and capped.
    Full,
    /// Times, status, error class and histogram samples; no error message
    /// (replaced by [`REDUCED_MESSAGE`]) and no detail.
    Reduced,
}

/// The `error_message` of a run stored in reduced form.
pub const REDUCED_MESSAGE: &str = "stored in reduced form: Postgres refused this run's message or detail; the prober's log has the original under this run id";

/// The stable id of an error class in the `error_classes` table.
pub fn error_class_id(c: crate::run::ErrorClass) -> i16 {
    use crate::run::ErrorClass::*;
    match c {
        Dns => 1,
        Connect => 2,
        Tls => 3,
        Timeout => 4,
        HttpStatus => 5,
        Assertion => 6,
        BodyTooLarge => 7,
        RedirectLimit => 8,
        InvalidResponse => 9,
        Config => 10,
    }
}

/// One statement, one round trip: insert the runs (skipping known run ids),
/// then, for the runs actually inserted (scheduled ones only, unless API runs
/// count), one `hist_pending` row per (probe, minute) with every phase's bins
/// and counters (encoding: migration 0011): the rows the writer built when
/// every counted run was new, else grouped here from the samples. Insert-only: nothing here waits on
/// the fold or the rollup (`rollup.rs`), except a batch of runs old enough to
/// be packed (see [`PACKABLE_AFTER`]).
const INSERT_RUNS: &str = r#"
with input as (
    select * from unnest(
        $1::uuid[], $2::timestamptz[], $3::int[], $4::int[], $7::int[],
        $8::int[], $9::int[], $10::int[], $11::int[], $12::int[], $13::int[],
        $14::int[], $15::int2[], $16::int2[], $17::bool[], $18::text[], $23::jsonb[], $24::int2[])
    as t(run_id, scheduled_at, probe_id, version_id, lateness_us,
         total_us, dns_us, connect_us, tls_us, first_byte_us, transfer_us,
         response_bytes, status_code, error_class, success, error_message, detail, trigger)
),
ins as (
    insert into runs (run_id, scheduled_at, probe_id, version_id, location_id, build_id,
                      lateness_us, total_us, dns_us, connect_us, tls_us, first_byte_us,
                      transfer_us, response_bytes, status_code, error_class, success, error_message,
                      detail, trigger)
    select run_id, scheduled_at, probe_id, version_id, $5::int2, $6::int2,
           lateness_us, total_us, dns_us, connect_us, tls_us, first_byte_us,
           transfer_us, response_bytes, status_code, error_class, success, error_message,
           detail, trigger
    from input t
    -- A run already packed into its hour's block (a batch replayed an hour
    -- late) is known too; the check costs nothing for newer runs.
    where t.scheduled_at >= coalesce((select packed_through from hist_mark), '-infinity')
       or not exists (select 1 from run_blocks b
                      where b.probe_id = t.probe_id and b.location_id = $5::int2
                        and b.hour = date_trunc('hour', t.scheduled_at, 'UTC')
                        and prober_block_holds(b, t.run_id, t.scheduled_at))
    on conflict do nothing
    returning run_id, scheduled_at, probe_id, success, trigger
),
samples as (
    select ins.probe_id, ins.success, s.phase, s.us, s.bin_key,
           date_trunc('minute', ins.scheduled_at) as minute
    from unnest($19::uuid[], $20::int2[], $21::int8[], $22::int4[]) as s(run_id, phase, us, bin_key)
    join ins on ins.run_id = s.run_id
    -- Runs asked for through the API are stored but not counted, unless $25 (api.manual_runs_count).
    where ins.trigger = 0 or $25::bool
),
bins as (
    select probe_id, minute,
           array_agg((phase::int8 << 48) | (bin_key::int8 << 32) | n order by phase, bin_key) as bins
    from (select probe_id, minute, phase, bin_key, count(*) as n
          from samples group by 1, 2, 3, 4) b
    group by 1, 2
),
stats as (
    select probe_id, minute,
           array_agg((phase::int8 << 48) | (runs << 24) | failures order by phase) as stats,
           array_agg(sum_us order by phase) as sums
    from (select probe_id, minute, phase, count(*) as runs,
                 count(*) filter (where not success) as failures, sum(us)::int8 as sum_us
          from samples group by 1, 2, 3) c
    group by 1, 2
),
counted as (select count(*) as n from ins where ins.trigger = 0 or $25::bool),
pending as (
    insert into hist_pending (probe_id, location_id, minute, bins, stats, sums)
    -- Every counted run was new: the rows the writer built ($26-$35, `pending.rs`).
    select u.probe_id, $5::int2, u.minute, ($32::int8[])[u.bf:u.bt], ($33::int8[])[u.sf:u.st],
           ($34::int8[])[u.sf:u.st]
    from unnest($26::int4[], $27::timestamptz[], $28::int4[], $29::int4[], $30::int4[], $31::int4[])
         as u(probe_id, minute, bf, bt, sf, st)
    where (select n from counted) = $35::int8
    union all
    -- Some were known (a replay): the samples of the runs inserted.
    select probe_id, $5::int2, minute, bins, stats, sums
    from stats join bins using (probe_id, minute)
    where (select n from counted) <> $35::int8
)
select count(*) from ins
"#;
