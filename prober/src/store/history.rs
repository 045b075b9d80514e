//! Reads of one probe for its page: the definitions it has had, and every
//! phase's histogram merged over a range (the phase breakdown).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::read::{unpack_phases, Resolution};
use super::{err, Store, StoreError};
use crate::results::hist::SparseHist;

/// One version of a probe's definition, as first seen.
#[derive(Debug, Clone)]
pub struct ProbeVersion {
    pub version: String,
    pub first_seen_at: DateTime<Utc>,
    /// file:line it was read from.
    pub source: String,
    /// As written, secret header values redacted.
    pub definition: serde_json::Value,
}

impl Store {
    /// The probe's newest `limit` versions, newest first.
    pub async fn probe_versions(
        &self,
        probe: &str,
        limit: i64,
    ) -> Result<Vec<ProbeVersion>, StoreError> {
        let rows = sqlx::query(
            "select v.version, v.first_seen_at, v.source, v.definition
             from probe_versions v join probes p on p.id = v.probe_id
             where p.name = $1 order by v.first_seen_at desc, v.id desc limit $2",
        )
        .bind(probe)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(|e| err("probe versions query failed", e))?;
        rows.iter()
            .map(|r| {
                Ok(ProbeVersion {
                    version: r.try_get(0)?,
                    first_seen_at: r.try_get(1)?,
                    source: r.try_get(2)?,
                    definition: r.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| err("probe versions query failed", e))
    }

    /// Every phase's histogram of one probe in `[from, to)` at `resolution`,
    /// by stored phase id (0 `total` … 5 `transfer`, 100 + i a scenario's
    /// step i): one merge of the rows' bins, split by phase in Rust.
    pub async fn phase_hists(
        &self,
        probe: &str,
        resolution: Resolution,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<i16, SparseHist>, StoreError> {
        let (rows, col) = resolution.rows("$2", "$3");
        let sql = format!(
            "select prober_merge(h.bins)
             from {rows} h
             where h.probe_id = (select id from probes where name = $1)
               and h.{col} >= $2 and h.{col} < $3"
        );
        let bins: Option<Vec<i64>> = sqlx::query_scalar(&sql)
            .bind(probe)
            .bind(from)
            .bind(to)
            .fetch_one(self.pool())
            .await
            .map_err(|e| err("phase breakdown query failed", e))?;
        let bins = bins.unwrap_or_default();
        // Phase ids are below 100 + the most steps a scenario has.
        let most = 100 + crate::config::steps::MAX_STEPS as i64;
        let phases = (bins.iter().map(|e| e >> 48).max().unwrap_or(-1) + 1).clamp(0, most);
        let hists = unpack_phases(bins, usize::try_from(phases).unwrap_or(0));
        Ok((hists.into_iter().enumerate())
            .filter(|(_, h)| !h.is_empty())
            .filter_map(|(i, h)| Some((i16::try_from(i).ok()?, h)))
            .collect())
    }
}
