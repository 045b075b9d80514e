//! Dimension rows (location, build, probe versions): registered once, their
//! ids cached in the store.

use super::clean::clean_definition;
use super::{err, Store, StoreError};
use crate::run::ProbeMeta;

impl Store {
    pub(super) async fn dimension_ids(&self) -> Result<(i16, i16), StoreError> {
        if let (Some(l), Some(b)) = {
            let ids = self.lock_ids();
            (ids.location, ids.build)
        } {
            return Ok((l, b));
        }
        let location: i16 = sqlx::query_scalar(
            "insert into locations (name) values ($1) on conflict (name) do update set name = excluded.name returning id",
        )
        .bind(&self.location)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err("cannot register the location", e))?;
        let build: i16 = sqlx::query_scalar(
            "insert into builds (version) values ($1) on conflict (version) do update set version = excluded.version returning id",
        )
        .bind(&self.build)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err("cannot register the build", e))?;
        let mut ids = self.lock_ids();
        ids.location = Some(location);
        ids.build = Some(build);
        Ok((location, build))
    }

    /// Registers every probe version not yet known, in three statements whatever
    /// their number (10,000 new probes must not cost 20,000 round trips).
    pub async fn register_versions<'a>(
        &self,
        metas: impl Iterator<Item = &'a ProbeMeta>,
    ) -> Result<(), StoreError> {
        let mut new: Vec<&ProbeMeta> = {
            let ids = self.lock_ids();
            metas
                .filter(|m| {
                    !ids.versions
                        .contains_key(&(m.name.clone(), m.version.clone()))
                })
                .collect()
        };
        new.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        new.dedup_by(|a, b| a.name == b.name && a.version == b.version);
        if new.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = new.iter().map(|m| m.name.as_str()).collect();
        let versions: Vec<&str> = new.iter().map(|m| m.version.as_str()).collect();
        let definitions: Vec<sqlx::types::Json<serde_json::Value>> = new
            .iter()
            .map(|m| sqlx::types::Json(clean_definition(&m.definition)))
            .collect();
        let sources: Vec<&str> = new.iter().map(|m| m.source.as_str()).collect();
        let fail = |e: sqlx::Error| {
            err(
                &format!("cannot register {} probe version(s)", new.len()),
                e,
            )
        };
        sqlx::query(
            "insert into probes (name) select unnest($1::text[]) on conflict (name) do nothing",
        )
        .bind(&names)
        .execute(&self.pool)
        .await
        .map_err(fail)?;
        sqlx::query(
            "insert into probe_versions (probe_id, version, definition, source)
             select p.id, v.version, v.definition, v.source
             from unnest($1::text[], $2::text[], $3::jsonb[], $4::text[]) as v(name, version, definition, source)
             join probes p on p.name = v.name
             on conflict (probe_id, version) do nothing",
        )
        .bind(&names)
        .bind(&versions)
        .bind(&definitions)
        .bind(&sources)
        .execute(&self.pool)
        .await
        .map_err(fail)?;
        let rows: Vec<(String, String, i32, i32)> = sqlx::query_as(
            "select p.name, v.version, p.id, v.id
             from unnest($1::text[], $2::text[]) as k(name, version)
             join probes p on p.name = k.name
             join probe_versions v on v.probe_id = p.id and v.version = k.version",
        )
        .bind(&names)
        .bind(&versions)
        .fetch_all(&self.pool)
        .await
        .map_err(fail)?;
        let mut ids = self.lock_ids();
        for (name, version, probe_id, version_id) in rows {
            ids.versions.insert((name, version), (probe_id, version_id));
        }
        Ok(())
    }

    /// Ids of a probe and its version, registering them the first time.
    pub async fn version_ids(&self, meta: &ProbeMeta) -> Result<(i32, i32), StoreError> {
        let key = (meta.name.clone(), meta.version.clone());
        if let Some(ids) = self.lock_ids().versions.get(&key) {
            return Ok(*ids);
        }
        let probe_id: i32 = sqlx::query_scalar(
            "insert into probes (name) values ($1) on conflict (name) do update set name = excluded.name returning id",
        )
        .bind(&meta.name)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err(&format!("cannot register probe {:?}", meta.name), e))?;
        let version_id: i32 = sqlx::query_scalar(
            "insert into probe_versions (probe_id, version, definition, source) values ($1, $2, $3, $4)
             on conflict (probe_id, version) do update set version = excluded.version returning id",
        )
        .bind(probe_id)
        .bind(&meta.version)
        .bind(sqlx::types::Json(clean_definition(&meta.definition)))
        .bind(&meta.source)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err(&format!("cannot register probe {:?}", meta.name), e))?;
        self.lock_ids().versions.insert(key, (probe_id, version_id));
        Ok((probe_id, version_id))
    }
}
