//! The notification outbox (`notifications`): rows are inserted inside the
//! transaction that saves an alert change ([`Outbox`], alerting's
//! [`NoticeWriter`]), then claimed, sent and settled by the delivery worker.
//! Notify's own SQL, over the store's pool; errors keep the store's
//! classification (`crate::store::err`).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::direct::Direct;
use super::{content, NewNotification, Receivers};
use crate::alert::change::WriteFuture;
use crate::alert::{Alert, Event, Notice, NoticeWriter};
use crate::store::{clean_json, err, Store, StoreError};

/// A notification claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub alert_key: String,
    pub receiver: String,
    pub event: Event,
    pub dedup_key: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// Attempts including this one.
    pub attempts: i32,
}

/// A row of the outbox, as tests and the API read it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct OutboxRow {
    pub id: i64,
    pub alert_key: String,
    pub receiver: String,
    pub event: String,
    pub dedup_key: String,
    pub attempts: i32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (while neither delivered nor given up).
    pub next_attempt_at: DateTime<Utc>,
}

const OUTBOX_COLUMNS: &str = "id, alert_key, receiver, event, dedup_key, attempts, delivered_at, failed_at, last_error, created_at, next_attempt_at";

fn outbox_row(r: &sqlx::postgres::PgRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        id: r.try_get(0)?,
        alert_key: r.try_get(1)?,
        receiver: r.try_get(2)?,
        event: r.try_get(3)?,
        dedup_key: r.try_get(4)?,
        attempts: r.try_get(5)?,
        delivered_at: r.try_get(6)?,
        failed_at: r.try_get(7)?,
        last_error: r.try_get(8)?,
        created_at: r.try_get(9)?,
        next_attempt_at: r.try_get(10)?,
    })
}

/// Inserts notifications in the transaction of an alert change. A resolve is
/// recorded only for receivers that were sent the incident's trigger.
/// `direct`: which were already delivered while Postgres was away (recorded
/// as delivered, not sent again).
async fn insert(
    tx: &mut sqlx::PgConnection,
    alert_key: &str,
    notes: &[NewNotification],
    direct: &Direct,
) -> Result<(), StoreError> {
    for n in notes {
        let delivered = direct.delivered(n);
        // The payload carries the run's error message: no NUL reaches jsonb.
        let mut payload = n.payload.clone();
        clean_json(&mut payload, usize::MAX);
        sqlx::query(
            "insert into notifications (alert_key, receiver, event, dedup_key, payload, delivered_at)
             select $1, $2, $3, $4, $5, case when $6 then now() end
             where $3 = 'trigger' or exists (
                 select 1 from notifications t
                 where t.receiver = $2 and t.dedup_key = $4 and t.event = 'trigger')
             on conflict (receiver, dedup_key, event) where event <> 'remind' do nothing",
        )
        .bind(alert_key)
        .bind(&n.receiver)
        .bind(n.event.as_str())
        .bind(&n.dedup_key)
        .bind(&payload)
        .bind(delivered)
        .execute(&mut *tx)
        .await
        .map_err(|e| err("cannot record notification", e))?;
    }
    Ok(())
}

/// Claims up to `limit` due notifications for `lease` (another worker skips
/// them; after the lease they are due again). A notification waits for the
/// earlier ones of the same incident and receiver, so a resolve never
/// overtakes its trigger.
pub async fn claim(
    store: &Store,
    limit: i64,
    lease: std::time::Duration,
    instance: Option<&str>,
) -> Result<Vec<Claimed>, StoreError> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "update notifications n
            set attempts = n.attempts + 1,
                next_attempt_at = now() + make_interval(secs => $2::double precision / 1000),
                claimed_by = $3
          where n.id in (
             select c.id from notifications c
              where c.delivered_at is null and c.failed_at is null and c.next_attempt_at <= now()
                and not exists (
                    select 1 from notifications p
                     where p.receiver = c.receiver and p.dedup_key = c.dedup_key and p.id < c.id
                       and p.delivered_at is null and p.failed_at is null)
              order by c.next_attempt_at, c.id
              limit $1
              for update skip locked)
          returning n.id, n.alert_key, n.receiver, n.event, n.dedup_key, n.payload, n.created_at, n.attempts",
    )
    .bind(limit)
    .bind(lease_ms)
    .bind(instance)
    .fetch_all(store.pool())
    .await
    .map_err(|e| err("cannot claim notifications", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let get = |e: sqlx::Error| err("cannot claim notifications", e);
        let event: String = r.try_get(3).map_err(get)?;
        out.push(Claimed {
            id: r.try_get(0).map_err(get)?,
            alert_key: r.try_get(1).map_err(get)?,
            receiver: r.try_get(2).map_err(get)?,
            event: Event::parse(&event).unwrap_or(Event::Trigger),
            dedup_key: r.try_get(4).map_err(get)?,
            payload: r.try_get(5).map_err(get)?,
            created_at: r.try_get(6).map_err(get)?,
            attempts: r.try_get(7).map_err(get)?,
        });
    }
    Ok(out)
}

/// Makes the claims `instance` still holds due now: they were left by an
/// earlier process on the same spool directory, which stopped mid-send (a
/// live process holds the directory's lock, so none is in flight). Sent
/// again with the same idempotency key. Returns how many.
pub async fn recover(store: &Store, instance: &str) -> Result<u64, StoreError> {
    sqlx::query(
        "update notifications set next_attempt_at = now(), claimed_by = null
          where claimed_by = $1 and delivered_at is null and failed_at is null",
    )
    .bind(instance)
    .execute(store.pool())
    .await
    .map(|r| r.rows_affected())
    .map_err(|e| err("cannot recover this instance's notification claims", e))
}

/// The receiver accepted the notification.
pub async fn delivered(store: &Store, id: i64) -> Result<(), StoreError> {
    sqlx::query("update notifications set delivered_at = now(), last_error = null, claimed_by = null where id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .map(|_| ())
        .map_err(|e| err("cannot mark notification delivered", e))
}

/// Sending failed; try again at `at`.
pub async fn retry(
    store: &Store,
    id: i64,
    at: DateTime<Utc>,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query("update notifications set next_attempt_at = $2, last_error = $3, claimed_by = null where id = $1")
        .bind(id)
        .bind(at)
        .bind(error)
        .execute(store.pool())
        .await
        .map(|_| ())
        .map_err(|e| err("cannot schedule notification retry", e))
}

/// Given up: the reason stays in `last_error`.
pub async fn failed(store: &Store, id: i64, error: &str) -> Result<(), StoreError> {
    sqlx::query("update notifications set failed_at = now(), last_error = $2, claimed_by = null where id = $1")
        .bind(id)
        .bind(error)
        .execute(store.pool())
        .await
        .map(|_| ())
        .map_err(|e| err("cannot mark notification failed", e))
}

/// Gives claimed but unsent notifications back (at shutdown), uncounted.
pub async fn release(store: &Store, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "update notifications set next_attempt_at = now(), attempts = greatest(attempts - 1, 0), claimed_by = null
         where id = any($1) and delivered_at is null and failed_at is null",
    )
    .bind(ids)
    .execute(store.pool())
    .await
    .map(|_| ())
    .map_err(|e| err("cannot release notifications", e))
}

/// For alerts still firing: each receiver's trigger payload that was
/// delivered and not yet followed by a resolve (to re-send to Alertmanager).
pub async fn firing_triggers(
    store: &Store,
) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    let rows = sqlx::query(
        "select n.receiver, n.payload from notifications n
           join alerts a on a.alert_key = n.alert_key and a.state = 'firing'
          where n.event = 'trigger' and n.delivered_at is not null
            and not exists (select 1 from notifications r
                             where r.receiver = n.receiver and r.dedup_key = n.dedup_key
                               and r.event = 'resolve')
          order by n.id",
    )
    .fetch_all(store.pool())
    .await
    .map_err(|e| err("cannot read firing alerts", e))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| err("cannot read firing alerts", e))
}

/// The outbox rows of an alert, oldest first.
pub async fn notifications(store: &Store, alert_key: &str) -> Result<Vec<OutboxRow>, StoreError> {
    let mut rows = recent(store, Some(alert_key), false, i64::MAX).await?;
    rows.reverse();
    Ok(rows)
}

/// The outbox, newest first: optionally of one alert, optionally only what
/// is not delivered yet (waiting, retrying or given up).
pub async fn recent(
    store: &Store,
    alert_key: Option<&str>,
    undelivered: bool,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "select {OUTBOX_COLUMNS} from notifications
         where ($1::text is null or alert_key = $1) and (not $2 or delivered_at is null)
         order by id desc limit $3"
    ))
    .bind(alert_key)
    .bind(undelivered)
    .bind(limit)
    .fetch_all(store.pool())
    .await
    .map_err(|e| err("cannot read notifications", e))?;
    rows.iter()
        .map(outbox_row)
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| err("cannot read notifications", e))
}

/// Records the notifications of alert notices in the outbox: one per routed
/// receiver, built from the change's alert as it was saved. Alerting calls
/// it inside the transaction that saves the change.
#[derive(Debug, Clone)]
pub struct Outbox {
    routing: Receivers,
    /// Sent while Postgres was away (see `direct.rs`).
    direct: std::sync::Arc<Direct>,
}

impl Outbox {
    /// Routes with the receivers and dashboard link of `routing` (replaced on reload).
    pub fn new(routing: Receivers) -> Outbox {
        Outbox {
            routing,
            direct: std::sync::Arc::default(),
        }
    }

    /// One notification per receiver whose labels the probe has.
    pub fn notifications(&self, a: &Alert, notice: &Notice) -> Vec<NewNotification> {
        let routing = self.routing.get();
        let info = &notice.probe;
        let c = content(a, notice.event, &notice.reason, info, &routing);
        let payload = match serde_json::to_value(&c) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(alert = %a.key, error = %e, "cannot encode a notification; it is not sent (a prober bug)");
                return Vec::new();
            }
        };
        (routing.receivers.iter())
            .filter(|r| r.routes(&info.labels))
            .map(|r| NewNotification {
                receiver: r.name.clone(),
                event: notice.event,
                dedup_key: c.dedup_key.clone(),
                payload: payload.clone(),
            })
            .collect()
    }
}

impl NoticeWriter for Outbox {
    fn write<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
        alert: &'a Alert,
        notice: &'a Notice,
    ) -> WriteFuture<'a> {
        let notes = self.notifications(alert, notice);
        Box::pin(async move { insert(tx, &alert.key, &notes, &self.direct).await })
    }

    fn send_now(&self, alert: &Alert, notice: &Notice) {
        let notes = self.notifications(alert, notice);
        self.direct.send(&alert.key, notes, &self.routing);
    }

    fn saved(&self, alert: &Alert, notice: &Notice) {
        // Routing and encoding a notice again only when something was sent
        // directly (Postgres was away), not on every save.
        if !self.direct.is_idle() {
            self.direct.forget(&self.notifications(alert, notice));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{ProbeInfo, Severity, State};
    use crate::config::receivers::{Receiver, ReceiverKind};
    use crate::notify::Routing;
    use std::sync::Arc;

    fn receiver(name: &str, labels: &[(&str, &str)]) -> Receiver {
        Receiver {
            name: name.into(),
            kind: ReceiverKind::Webhook,
            url: "http://127.0.0.1:9/hook".into(),
            secret: None,
            routing_key: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_notice_becomes_one_notification_per_routed_receiver_with_the_reloaded_link() {
        let routing = Receivers::new(Routing {
            receivers: vec![
                receiver("all", &[]),
                receiver("pay", &[("team", "pay")]),
                receiver("web", &[("team", "web")]),
            ],
            dashboard_url: Some("https://grafana.example/d/x?probe={probe}".into()),
            trace_url: Some("https://tempo.example/trace/{trace_id}".into()),
        });
        let outbox = Outbox::new(routing.clone());
        let at = chrono::Utc::now();
        let mut a = Alert::new("checkout", "failing", "eu", Severity::Page, at);
        a.state = State::Firing;
        a.fired_at = Some(at);
        a.last_failure = Some(Box::new(crate::alert::LastFailure {
            at,
            run_id: "0193a1b2-0000-7000-8000-000000000001".into(),
            error_class: "http_status".into(),
            error: "status 503".into(),
            step: None,
            assertion: None,
            request: "GET http://127.0.0.1/".into(),
            phases: crate::run::Phases::default(),
            trace_id: Some("0193a1b2000070008000000000000001".into()),
        }));
        let notice = Notice {
            event: Event::Trigger,
            reason: "3 consecutive failed runs".into(),
            probe: Arc::new(ProbeInfo {
                labels: [("team".to_string(), "pay".to_string())].into(),
                ..ProbeInfo::default()
            }),
        };

        let notes = outbox.notifications(&a, &notice);

        let names: Vec<&str> = notes.iter().map(|n| n.receiver.as_str()).collect();
        assert_eq!(names, ["all", "pay"]);
        let n = &notes[0];
        assert_eq!(
            (n.event, n.dedup_key.as_str()),
            (Event::Trigger, super::super::dedup_key(&a).as_str())
        );
        assert_eq!(n.payload["reason"], "3 consecutive failed runs");
        assert_eq!(
            n.payload["dashboard_url"],
            "https://grafana.example/d/x?probe=checkout"
        );
        assert_eq!(
            n.payload["trace_url"],
            "https://tempo.example/trace/0193a1b2000070008000000000000001"
        );
        assert_eq!(
            n.payload["last_failure"]["trace_id"],
            "0193a1b2000070008000000000000001"
        );

        // A reload changes where the next notice goes.
        routing.set(Routing::default());
        assert!(outbox.notifications(&a, &notice).is_empty());
    }
}
