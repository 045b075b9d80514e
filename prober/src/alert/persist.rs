//! Alert state, history and silences in Postgres, and the reads of the
//! periodic rules: alerting's own SQL, over the store's pool. Errors keep
//! the store's classification (`crate::store::err`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::burn::Counts;
use super::{Alert, Change, NoticeWriter, Severity, State, Transition};
use crate::config::policy::Silence;
use crate::run::{ErrorClass, ProbeError};
use crate::store::{clean_json, clean_text, err, Store, StoreError, MAX_ERROR_MESSAGE_BYTES};

/// Every alert that is not a quiet ok.
pub async fn load(store: &Store) -> Result<Vec<Alert>, StoreError> {
    load_where(store, None).await
}

/// The alerts of `probes` at `location` that are not a quiet ok (a replica
/// taking these probes over from another).
pub async fn load_probes(
    store: &Store,
    probes: &[String],
    location: &str,
) -> Result<Vec<Alert>, StoreError> {
    load_where(store, Some((probes, location))).await
}

async fn load_where(
    store: &Store,
    only: Option<(&[String], &str)>,
) -> Result<Vec<Alert>, StoreError> {
    let rows = sqlx::query(
        "select alert_key, probe, rule, location, severity, state, consecutive_failures,
                consecutive_successes, since, fired_at, resolved_at, last_error_class, last_error_message,
                failed_runs, last_failure, notified, suppressed, last_notified_at
         from alerts where state <> 'ok'
          and ($1::text[] is null or (probe = any($1) and location = $2))",
    )
    .bind(only.map(|(p, _)| p))
    .bind(only.map(|(_, l)| l))
    .fetch_all(store.pool())
    .await
    .map_err(|e| err("cannot load alert state", e))?;
    let mut out = Vec::new();
    for r in rows {
        let get = |e: sqlx::Error| err("cannot load alert state", e);
        let class: Option<String> = r.try_get(11).map_err(get)?;
        let message: Option<String> = r.try_get(12).map_err(get)?;
        let state: String = r.try_get(5).map_err(get)?;
        let severity: String = r.try_get(4).map_err(get)?;
        let last_failure: Option<serde_json::Value> = r.try_get(14).map_err(get)?;
        out.push(Alert {
            failed_runs: u32::try_from(r.try_get::<i32, _>(13).map_err(get)?).unwrap_or(0),
            last_failure: last_failure.and_then(|v| serde_json::from_value(v).ok()),
            notified: r.try_get(15).map_err(get)?,
            suppressed: r.try_get(16).map_err(get)?,
            last_notified_at: r.try_get(17).map_err(get)?,
            key: r.try_get(0).map_err(get)?,
            probe: r.try_get(1).map_err(get)?,
            rule: r.try_get(2).map_err(get)?,
            location: r.try_get(3).map_err(get)?,
            severity: if severity == "ticket" {
                Severity::Ticket
            } else {
                Severity::Page
            },
            state: State::parse(&state).unwrap_or(State::Ok),
            consecutive_failures: u32::try_from(r.try_get::<i32, _>(6).map_err(get)?).unwrap_or(0),
            consecutive_successes: u32::try_from(r.try_get::<i32, _>(7).map_err(get)?).unwrap_or(0),
            since: r.try_get(8).map_err(get)?,
            fired_at: r.try_get(9).map_err(get)?,
            resolved_at: r.try_get(10).map_err(get)?,
            last_error: class.and_then(|c| {
                let class: ErrorClass =
                    serde_json::from_value(serde_json::Value::String(c)).ok()?;
                Some(ProbeError {
                    class,
                    message: message.unwrap_or_default(),
                })
            }),
        });
    }
    Ok(out)
}

/// Saves a change: the alert's state and, in the same transaction, the
/// transition that changed it and what its notice owes on-call (written by
/// `notices`, so notifications are recorded before they are sent, and
/// exactly when their transition is).
pub async fn save(
    store: &Store,
    change: &Change,
    notices: &dyn NoticeWriter,
    fence: Option<Fence<'_>>,
) -> Result<Saved, StoreError> {
    let a = &change.alert;
    let mut tx = store
        .pool()
        .begin()
        .await
        .map_err(|e| err("cannot save alert", e))?;
    if let Some(f) = fence {
        if !f.holds(&mut tx).await? {
            return Ok(Saved::Fenced);
        }
    }
    // A per-run alert's change goes only over a row that still looks as
    // `before` (or none: a new alert, a database emptied); two replicas'
    // inserts of a new alert meet at the key, the second then compared.
    // A quiet ok matches a quiet ok whatever its time.
    let b = &change.before;
    let written = sqlx::query(
        "insert into alerts (alert_key, probe, rule, location, severity, state, consecutive_failures,
                             consecutive_successes, since, fired_at, resolved_at, last_error_class,
                             last_error_message, failed_runs, last_failure, notified, suppressed,
                             last_notified_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, now())
         on conflict (alert_key) do update set
             severity = excluded.severity, state = excluded.state,
             consecutive_failures = excluded.consecutive_failures,
             consecutive_successes = excluded.consecutive_successes,
             since = excluded.since, fired_at = excluded.fired_at, resolved_at = excluded.resolved_at,
             last_error_class = excluded.last_error_class,
             last_error_message = excluded.last_error_message,
             failed_runs = excluded.failed_runs, last_failure = excluded.last_failure,
             notified = excluded.notified, suppressed = excluded.suppressed,
             last_notified_at = excluded.last_notified_at, updated_at = now()
         where not $19 or (alerts.state = 'ok' and $20 = 'ok')
               or (alerts.state = $20 and alerts.since = $21
                   and alerts.last_notified_at is not distinct from $22)",
    )
    .bind(&a.key)
    .bind(&a.probe)
    .bind(&a.rule)
    .bind(&a.location)
    .bind(a.severity.as_str())
    .bind(a.state.as_str())
    .bind(i32::try_from(a.consecutive_failures).unwrap_or(i32::MAX))
    .bind(i32::try_from(a.consecutive_successes).unwrap_or(i32::MAX))
    .bind(a.since)
    .bind(a.fired_at)
    .bind(a.resolved_at)
    .bind(a.last_error.as_ref().map(|e| e.class.as_str()))
    // Cleaned like a run's message: a NUL from a target's body must not
    // make every later save of this alert fail.
    .bind(
        a.last_error
            .as_ref()
            .map(|e| clean_text(&e.message, MAX_ERROR_MESSAGE_BYTES)),
    )
    .bind(i32::try_from(a.failed_runs).unwrap_or(i32::MAX))
    .bind(
        a.last_failure
            .as_ref()
            .and_then(|f| serde_json::to_value(f).ok())
            .map(|mut v| {
                clean_json(&mut v, MAX_ERROR_MESSAGE_BYTES);
                v
            }),
    )
    .bind(a.notified)
    .bind(&a.suppressed)
    .bind(a.last_notified_at)
    .bind(fence.is_none())
    .bind(b.state.as_str())
    .bind(b.since)
    .bind(b.last_notified_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| err("cannot save alert", e))?;
    if written.rows_affected() == 0 {
        return already_saved(&mut tx, a).await;
    }
    if let Some(t) = &change.transition {
        record_transition(&mut tx, t).await?;
    }
    if let Some(notice) = &change.notice {
        notices.write(&mut tx, a, notice).await?;
    }
    tx.commit().await.map_err(|e| err("cannot save alert", e))?;
    Ok(Saved::Written)
}

/// A change refused by its row: already saved when the row is the change
/// (a retry of a save that committed though its answer was lost, or the
/// same change from another replica), else stale.
async fn already_saved(tx: &mut sqlx::PgConnection, a: &Alert) -> Result<Saved, StoreError> {
    let same: Option<bool> = sqlx::query_scalar(
        "select state = $2 and since = $3 and last_notified_at is not distinct from $4
         from alerts where alert_key = $1",
    )
    .bind(&a.key)
    .bind(a.state.as_str())
    .bind(a.since)
    .bind(a.last_notified_at)
    .fetch_optional(tx)
    .await
    .map_err(|e| err("cannot read the saved alert", e))?;
    Ok(if same == Some(true) {
        Saved::Written
    } else {
        Saved::Stale
    })
}

/// One transition into the alert's history, in the save's transaction.
async fn record_transition(tx: &mut sqlx::PgConnection, t: &Transition) -> Result<(), StoreError> {
    sqlx::query(
        "insert into alert_transitions (alert_key, from_state, to_state, at, reason)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(&t.key)
    .bind(t.from.as_str())
    .bind(t.to.as_str())
    .bind(t.at)
    .bind(clean_text(&t.reason, MAX_ERROR_MESSAGE_BYTES))
    .execute(tx)
    .await
    .map_err(|e| err("cannot save alert transition", e))?;
    Ok(())
}

/// The lease a change was made under: the change is saved only while that
/// lease still has this holder and term (see `alert/engine/leader.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub lease: &'a str,
    pub holder: &'a str,
    pub term: i64,
}

impl Fence<'_> {
    /// Whether the lease still has this holder and term, unexpired; the row
    /// stays share-locked until `tx` ends, so a takeover waits for it.
    async fn holds(&self, tx: &mut sqlx::PgConnection) -> Result<bool, StoreError> {
        let held: Option<i32> = sqlx::query_scalar(
            "select 1 from leases
             where name = $1 and holder = $2 and term = $3 and expires_at > now()
             for share",
        )
        .bind(self.lease)
        .bind(self.holder)
        .bind(self.term)
        .fetch_optional(tx)
        .await
        .map_err(|e| err("cannot check the evaluator lease", e))?;
        Ok(held.is_some())
    }
}

/// What [`save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Written,
    /// Refused, nothing written: the fence's lease has another holder or
    /// term now, or expired.
    Fenced,
    /// Refused, nothing written: the saved alert changed since this
    /// replica's copy (another replica evaluated the probe's runs too).
    Stale,
}

/// Transitions, newest first, optionally of one probe.
pub async fn history(
    store: &Store,
    probe: Option<&str>,
    limit: i64,
) -> Result<Vec<(Transition, String)>, StoreError> {
    let rows = sqlx::query(
        "select t.alert_key, t.from_state, t.to_state, t.at, t.reason, a.probe
         from alert_transitions t join alerts a on a.alert_key = t.alert_key
         where ($1::text is null or a.probe = $1)
         order by t.at desc, t.id desc limit $2",
    )
    .bind(probe)
    .bind(limit)
    .fetch_all(store.pool())
    .await
    .map_err(|e| err("alert history query failed", e))?;
    transitions(&rows).map_err(|e| err("alert history query failed", e))
}

/// Transitions of `rule` alerts of `probes` since `since`, newest first
/// (the public status page's incidents: only its probes' own history).
pub async fn history_of(
    store: &Store,
    probes: &[String],
    rule: &str,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Transition, String)>, StoreError> {
    let rows = sqlx::query(
        "select t.alert_key, t.from_state, t.to_state, t.at, t.reason, a.probe
         from alert_transitions t join alerts a on a.alert_key = t.alert_key
         where a.probe = any($1) and a.rule = $2 and t.at >= $3
         order by t.at desc, t.id desc limit $4",
    )
    .bind(probes)
    .bind(rule)
    .bind(since)
    .bind(limit)
    .fetch_all(store.pool())
    .await
    .map_err(|e| err("alert history query failed", e))?;
    transitions(&rows).map_err(|e| err("alert history query failed", e))
}

fn transitions(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<(Transition, String)>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            let from: String = r.try_get(1)?;
            let to: String = r.try_get(2)?;
            let at: DateTime<Utc> = r.try_get(3)?;
            Ok((
                Transition {
                    key: r.try_get(0)?,
                    from: State::parse(&from).unwrap_or(State::Ok),
                    to: State::parse(&to).unwrap_or(State::Ok),
                    at,
                    reason: r.try_get(4)?,
                },
                r.try_get(5)?,
            ))
        })
        .collect()
}

/// Silences from the API.
/// Silences that have not ended (recurring ones may be closed right now).
pub async fn active_silences(
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<Silence>, StoreError> {
    silences(store, Some(now)).await
}

/// Silences, newest first; with `now`, only those not ended by then. Their
/// times are read from the year 1 to chrono's last instant (an open end,
/// [`is_open_end`](crate::config::policy::is_open_end)): an operator's
/// `update silences set ends_at = 'infinity'` (a permanent silence, which
/// the table's checks allow) once failed to decode and stopped the alert
/// engine on every replica; it is now an open end.
pub async fn silences(
    store: &Store,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<Silence>, StoreError> {
    let rows = sqlx::query(
        "select id, matchers,
                least(greatest(starts_at, '0001-01-01 00:00:00+00'), '262142-12-31 23:59:59.999999+00'),
                least(greatest(ends_at, '0001-01-01 00:00:00+00'), '262142-12-31 23:59:59.999999+00'),
                cron, duration_ms, comment, created_by
         from silences where ($1::timestamptz is null or ends_at > $1)
         order by created_at desc, id limit 1000",
    )
    .bind(now)
    .fetch_all(store.pool())
    .await
    .map_err(|e| err("cannot read silences", e))?;
    rows.iter()
        .map(|r| {
            let id: uuid::Uuid = r.try_get(0)?;
            let matchers: serde_json::Value = r.try_get(1)?;
            let duration_ms: Option<i64> = r.try_get(5)?;
            Ok(Silence {
                id: id.to_string(),
                matchers: serde_json::from_value(matchers).unwrap_or_default(),
                starts_at: r.try_get(2)?,
                ends_at: r.try_get(3)?,
                cron: r.try_get(4)?,
                duration_ms: duration_ms.and_then(|d| u64::try_from(d).ok()),
                comment: r.try_get(6)?,
                created_by: r.try_get(7)?,
                source: "api".into(),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| err("cannot read silences", e))
}

/// Stores a new silence (already validated).
pub async fn insert_silence(store: &Store, s: &Silence, id: uuid::Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "insert into silences (id, matchers, starts_at, ends_at, cron, duration_ms, comment, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(serde_json::to_value(&s.matchers).unwrap_or_default())
    .bind(s.starts_at)
    .bind(s.ends_at)
    .bind(&s.cron)
    .bind(s.duration_ms.and_then(|d| i64::try_from(d).ok()))
    .bind(&s.comment)
    .bind(&s.created_by)
    .execute(store.pool())
    .await
    .map(|_| ())
    .map_err(|e| err("cannot save the silence", e))
}

/// Ends a silence now; false if there is no such silence or it had ended.
pub async fn expire_silence(store: &Store, id: uuid::Uuid) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "update silences set ends_at = greatest(now(), starts_at + interval '1 microsecond')
         where id = $1 and ends_at > now()",
    )
    .bind(id)
    .execute(store.pool())
    .await
    .map_err(|e| err("cannot end the silence", e))?;
    Ok(r.rows_affected() == 1)
}

/// Per probe, the locations (not `all`) where its `rule` alert fires, as every replica saved them.
pub async fn firing_locations(
    store: &Store,
    probes: &[String],
    rule: &str,
) -> Result<HashMap<String, Vec<String>>, StoreError> {
    let rows = sqlx::query(
        "select probe, array_agg(location order by location) from alerts
         where probe = any($1) and rule = $2 and state = 'firing' and location <> 'all'
         group by probe",
    )
    .bind(probes)
    .bind(rule)
    .fetch_all(store.pool())
    .await
    .map_err(|e| err("cannot read firing locations", e))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<HashMap<_, _>, sqlx::Error>>()
        .map_err(|e| err("cannot read firing locations", e))
}

/// Runs and failed runs (phase total, every location) of each probe over
/// each window ending now. Windows up to 2 h read minute rows (whole
/// minutes, the current one included); longer ones read hour rows (whole
/// hours, the current one included), through `prober_minutes` and
/// `prober_hours` from the window's start, so only the packed hours and
/// days in the window are opened (the `*_counters_live` views would open
/// every packed hour of the probe).
pub async fn window_counts(
    store: &Store,
    probes: &[String],
    windows: &[std::time::Duration],
    now: DateTime<Utc>,
) -> Result<HashMap<String, Vec<Counts>>, StoreError> {
    let mut out: HashMap<String, Vec<Counts>> = probes
        .iter()
        .map(|p| (p.clone(), vec![Counts::default(); windows.len()]))
        .collect();
    for (rows, trunc, short) in [
        ("prober_minutes", "minute", true),
        ("prober_hours", "hour", false),
    ] {
        let picked: Vec<(usize, i64)> = windows
            .iter()
            .enumerate()
            .filter(|(_, w)| (w.as_secs() <= 7_200) == short)
            .map(|(i, w)| (i, i64::try_from(w.as_secs()).unwrap_or(i64::MAX)))
            .collect();
        if picked.is_empty() {
            continue;
        }
        let idx: Vec<i32> = picked.iter().map(|(i, _)| *i as i32).collect();
        let secs: Vec<i64> = picked.iter().map(|(_, s)| *s).collect();
        let sql = format!(
            "select p.name, w.i, c.runs, c.failures
             from probes p
             cross join unnest($2::int[], $3::bigint[]) as w(i, secs)
             cross join lateral (
                 select coalesce(sum(prober_runs(h.stats, 0)), 0)::bigint runs,
                        coalesce(sum(prober_failures(h.stats, 0)), 0)::bigint failures
                 from {rows}(date_trunc('{trunc}', $4::timestamptz - make_interval(secs => w.secs)),
                             'infinity') h
                 where h.probe_id = p.id) c
             where p.name = any($1)"
        );
        let rows = sqlx::query(&sql)
            .bind(probes)
            .bind(&idx)
            .bind(&secs)
            .bind(now)
            .fetch_all(store.pool())
            .await
            .map_err(|e| err("cannot count runs for burn rates", e))?;
        for r in rows {
            let get = |e: sqlx::Error| err("cannot count runs for burn rates", e);
            let name: String = r.try_get(0).map_err(get)?;
            let i: i32 = r.try_get(1).map_err(get)?;
            let runs: i64 = r.try_get(2).map_err(get)?;
            let failures: i64 = r.try_get(3).map_err(get)?;
            if let Some(slot) = out
                .get_mut(&name)
                .and_then(|v| v.get_mut(usize::try_from(i).unwrap_or(usize::MAX)))
            {
                *slot = Counts {
                    runs: u64::try_from(runs).unwrap_or(0),
                    failures: u64::try_from(failures).unwrap_or(0),
                };
            }
        }
    }
    Ok(out)
}
