//! Change events (`change_events`, migration 0013): deploys and other changes
//! that people or pipelines mark, with labels and a time; and the context a
//! finding is shown with — the events near it that match its probe's labels,
//! and whether the probe's definition or the prober's build changed near it
//! ([`FINDING_CONTEXT_COLUMNS`], [`FINDING_CONTEXT_JOINS`], read by
//! `trends.rs` in the same statement as the findings).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::Row;

use super::{err, Store, StoreError};

/// A stored change event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeEvent {
    pub id: i64,
    /// When the change happened.
    pub at: DateTime<Utc>,
    pub title: String,
    /// Matched against probes' labels: an event belongs to a probe when every
    /// one of its labels is among the probe's (an event without labels, to every probe).
    pub labels: BTreeMap<String, String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// An event to store, already checked by the caller.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at: DateTime<Utc>,
    pub title: String,
    pub labels: BTreeMap<String, String>,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Every one must be among the event's labels.
    pub labels: Vec<(String, String)>,
    /// The events of a probe with these labels: every label of the event
    /// must be among them (an event without labels belongs to every probe).
    pub of_probe: Option<BTreeMap<String, String>>,
    /// At most this many, newest first.
    pub limit: i64,
}

const EVENT_COLUMNS: &str = "e.id, e.at, e.title, e.labels, e.created_at";

/// What a finding's select adds after its own columns: the matching events
/// (a JSON array, oldest first), when the probe's definition changed and when
/// the build recording its runs at its location changed, each the nearest to
/// `change_at` within an hour either side (at most 50 events, the nearest).
/// `t` is the `trends` row.
pub(super) const FINDING_CONTEXT_COLUMNS: &str =
    "ctx_events.events, ctx_probe.changed_at, ctx_build.changed_at";

/// The joins behind [`FINDING_CONTEXT_COLUMNS`]: laterals over the small
/// tables and one probe's runs in a two-hour window (the runs' key), so a
/// page of findings stays one statement.
pub(super) const FINDING_CONTEXT_JOINS: &str = "
    cross join lateral (
        select coalesce(jsonb_agg(jsonb_build_object('id', n.id, 'at', n.at, 'title', n.title,
                                  'labels', n.labels, 'created_at', n.created_at)
                                  order by n.at, n.id), '[]'::jsonb) as events
        from (
            select e.* from change_events e
            where e.at between t.change_at - interval '1 hour' and t.change_at + interval '1 hour'
              and e.labels <@ coalesce((select v.definition -> 'labels' from probe_versions v
                                        where v.probe_id = t.probe_id order by v.id desc limit 1),
                                       '{}'::jsonb)
            order by abs(extract(epoch from e.at - t.change_at)), e.id
            limit 50
        ) n
    ) ctx_events
    left join lateral (
        select v.first_seen_at as changed_at from probe_versions v
        where v.probe_id = t.probe_id
          and v.first_seen_at between t.change_at - interval '1 hour' and t.change_at + interval '1 hour'
          and exists (select 1 from probe_versions o where o.probe_id = v.probe_id and o.id < v.id)
        order by abs(extract(epoch from v.first_seen_at - t.change_at)) limit 1
    ) ctx_probe on true
    left join lateral (
        select b.scheduled_at as changed_at
        from (
            select r.scheduled_at, r.build_id,
                   lag(r.build_id) over (order by r.scheduled_at) as previous
            from prober_run_rows(t.change_at - interval '1 hour', t.change_at + interval '1 hour') r
            where r.probe_id = t.probe_id and r.location_id = t.location_id
        ) b
        where b.build_id <> b.previous
        order by abs(extract(epoch from b.scheduled_at - t.change_at)) limit 1
    ) ctx_build on true";

/// The events of [`FINDING_CONTEXT_COLUMNS`]' JSON array.
pub(super) fn events_of_json(v: serde_json::Value) -> Result<Vec<ChangeEvent>, sqlx::Error> {
    serde_json::from_value(v).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Store {
    /// Stores a change event; returns it as stored (id, `created_at`).
    pub async fn add_event(&self, e: &NewEvent) -> Result<ChangeEvent, StoreError> {
        let fail = |e| err("storing a change event failed", e);
        let sql = format!(
            "insert into change_events as e (at, title, labels) values ($1, $2, $3)
             returning {EVENT_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(e.at)
            .bind(&e.title)
            .bind(Json(&e.labels))
            .fetch_one(self.pool())
            .await
            .map_err(fail)?;
        event_of_row(&row).map_err(fail)
    }

    /// Stored change events, newest first.
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<ChangeEvent>, StoreError> {
        let fail = |e| err("reading change events failed", e);
        // One object per filter, every one contained: `a=b&a=c` matches nothing.
        let wanted: Vec<Json<BTreeMap<&str, &str>>> = filter
            .labels
            .iter()
            .map(|(k, v)| Json(BTreeMap::from([(k.as_str(), v.as_str())])))
            .collect();
        let sql = format!(
            "select {EVENT_COLUMNS} from change_events e
             where ($1::timestamptz is null or e.at >= $1)
               and not exists (select 1 from unnest($2::jsonb[]) w where not e.labels @> w)
               and ($4::jsonb is null or e.labels <@ $4)
             order by e.at desc, e.id desc
             limit $3"
        );
        let rows = sqlx::query(&sql)
            .bind(filter.since)
            .bind(&wanted)
            .bind(filter.limit.max(1))
            .bind(filter.of_probe.as_ref().map(Json))
            .fetch_all(self.pool())
            .await
            .map_err(fail)?;
        rows.iter()
            .map(event_of_row)
            .collect::<Result<_, _>>()
            .map_err(fail)
    }
}

fn event_of_row(r: &sqlx::postgres::PgRow) -> Result<ChangeEvent, sqlx::Error> {
    let Json(labels) = r.try_get::<Json<BTreeMap<String, String>>, _>(3)?;
    Ok(ChangeEvent {
        id: r.try_get(0)?,
        at: r.try_get(1)?,
        title: r.try_get(2)?,
        labels,
        created_at: r.try_get(4)?,
    })
}
