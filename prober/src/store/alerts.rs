//! Alert state and history in Postgres.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{err, Store, StoreError};
use crate::alert::{Alert, Severity, State, Transition};
use crate::notify::NewNotification;
use crate::probe::{ErrorClass, ProbeError};

impl Store {
    /// Every alert that is not a quiet ok.
    pub async fn load_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query(
            "select alert_key, probe, rule, location, severity, state, consecutive_failures,
                    consecutive_successes, since, fired_at, resolved_at, last_error_class, last_error_message
             from alerts where state <> 'ok'",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| err("cannot load alert state", e))?;
        let mut out = Vec::new();
        for r in rows {
            let get = |e: sqlx::Error| err("cannot load alert state", e);
            let class: Option<String> = r.try_get(11).map_err(get)?;
            let message: Option<String> = r.try_get(12).map_err(get)?;
            let state: String = r.try_get(5).map_err(get)?;
            let severity: String = r.try_get(4).map_err(get)?;
            out.push(Alert {
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
                consecutive_failures: u32::try_from(r.try_get::<i32, _>(6).map_err(get)?)
                    .unwrap_or(0),
                consecutive_successes: u32::try_from(r.try_get::<i32, _>(7).map_err(get)?)
                    .unwrap_or(0),
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

    /// Saves an alert's state and, in the same transaction, the transition that
    /// changed it and the notifications it causes (recorded before they are sent).
    pub async fn save_alert(
        &self,
        a: &Alert,
        t: Option<&Transition>,
        notes: &[NewNotification],
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| err("cannot save alert", e))?;
        sqlx::query(
            "insert into alerts (alert_key, probe, rule, location, severity, state, consecutive_failures,
                                 consecutive_successes, since, fired_at, resolved_at, last_error_class,
                                 last_error_message, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now())
             on conflict (alert_key) do update set
                 severity = excluded.severity, state = excluded.state,
                 consecutive_failures = excluded.consecutive_failures,
                 consecutive_successes = excluded.consecutive_successes,
                 since = excluded.since, fired_at = excluded.fired_at, resolved_at = excluded.resolved_at,
                 last_error_class = excluded.last_error_class,
                 last_error_message = excluded.last_error_message, updated_at = now()",
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
        .bind(a.last_error.as_ref().map(|e| e.message.as_str()))
        .execute(&mut *tx)
        .await
        .map_err(|e| err("cannot save alert", e))?;
        if let Some(t) = t {
            sqlx::query(
                "insert into alert_transitions (alert_key, from_state, to_state, at, reason)
                 values ($1, $2, $3, $4, $5)",
            )
            .bind(&t.key)
            .bind(t.from.as_str())
            .bind(t.to.as_str())
            .bind(t.at)
            .bind(&t.reason)
            .execute(&mut *tx)
            .await
            .map_err(|e| err("cannot save alert transition", e))?;
        }
        super::notify::insert(&mut tx, &a.key, notes).await?;
        tx.commit().await.map_err(|e| err("cannot save alert", e))
    }

    /// Transitions, newest first, optionally of one probe.
    pub async fn alert_history(
        &self,
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
        .fetch_all(self.pool())
        .await
        .map_err(|e| err("alert history query failed", e))?;
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
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| err("alert history query failed", e))
    }
}
