//! `GET /api/v1/probes/{name}/latency`: percentiles and counts per step, from stored bins.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{known_probe, ms, range, MAX_POINTS};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::run::PHASES;

#[derive(Debug, Deserialize, IntoParams)]
pub struct LatencyQuery {
    /// RFC 3339, before `to`; default: 24 hours before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// A whole number of minutes, hours or days (`1m`, `90m`, `1h`, `1d`); default: about 300 points. At most 10000 points from `from` to `to`.
    #[param(pattern = "^[1-9][0-9]{0,5}[mhd]$")]
    pub step: Option<String>,
    /// `total` (default), `dns`, `connect`, `tls`, `first_byte`, `transfer`, or `step:<name>` for a scenario's step.
    #[param(pattern = "^(total|dns|connect|tls|first_byte|transfer|step:.+)$")]
    pub phase: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyPointView {
    /// Start of the step (steps are aligned to multiples of the step since the Unix epoch, in UTC).
    pub time: DateTime<Utc>,
    pub count: i64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencySeries {
    pub probe: String,
    pub phase: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The step, in milliseconds like every duration of the API (60000 for `1m`).
    pub step_ms: i64,
    /// Steps without runs are omitted.
    pub points: Vec<LatencyPointView>,
}

fn default_step(span: TimeDelta) -> Duration {
    let secs = (span.num_seconds() / 300).max(60);
    let unit = if secs >= 86_400 {
        86_400
    } else if secs >= 3_600 {
        3_600
    } else {
        60
    };
    Duration::from_secs(((secs + unit - 1) / unit * unit) as u64)
}

/// A `step`: a whole number (1–999999) of minutes, hours or days, like `5m`, `1h`, `1d`.
fn parse_step(s: &str) -> Result<Duration, ApiError> {
    let (digits, unit) = s.split_at(s.len() - s.chars().last().map_or(0, char::len_utf8));
    let unit_secs = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => 0,
    };
    let n = Some(digits)
        .filter(|d| (1..=6).contains(&d.len()) && !d.starts_with('0'))
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok());
    match n {
        Some(n) if unit_secs > 0 => Ok(Duration::from_secs(n * unit_secs)),
        _ if humantime::parse_duration(s).is_ok() => Err(ApiError::bad_request(format!(
            "step={s:?} must be a whole number of minutes, hours or days, like 5m, 1h or 1d (histograms are stored per minute)"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "step={s:?} is not a duration; use 1m, 5m, 1h, 1d"
        ))),
    }
}

/// Percentiles (exact to the bin, merged from stored bins) and counts per step.
#[utoipa::path(get, path = "/api/v1/probes/{name}/latency", tag = "probes",
    params(("name" = String, Path, description = "probe name"), LatencyQuery),
    responses((status = 200, body = LatencySeries), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn latency(
    State(core): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LatencyQuery>,
) -> Result<Json<LatencySeries>, ApiError> {
    let (from, to) = range(q.from.as_deref(), q.to.as_deref(), TimeDelta::days(1))?;
    let phase_name = q.phase.as_deref().unwrap_or("total");
    let phase = phase_id(&core, &name, phase_name)?;
    let step = match q.step.as_deref() {
        None => default_step(to - from),
        Some(s) => parse_step(s)?,
    };
    let step_secs = i64::try_from(step.as_secs()).unwrap_or(i64::MAX);
    let points = (to - from).num_seconds() / step_secs;
    if points > MAX_POINTS {
        return Err(ApiError::bad_request(format!(
            "from–to at step {} is {points} points; at most {MAX_POINTS}: raise the step or narrow the range",
            humantime::format_duration(step)
        )));
    }
    known_probe(&core, &name).await?;
    let series = core
        .store
        .latency_series(&name, phase, from, to, step)
        .await?;
    Ok(Json(LatencySeries {
        probe: name,
        phase: phase_name.to_string(),
        from,
        to,
        step_ms: step_secs.saturating_mul(1000),
        points: series
            .into_iter()
            .map(|p| LatencyPointView {
                time: p.time,
                count: p.count,
                p50_ms: p.p50_us.map(ms),
                p90_ms: p.p90_us.map(ms),
                p95_ms: p.p95_us.map(ms),
                p99_ms: p.p99_us.map(ms),
                max_ms: p.max_us.map(ms),
            })
            .collect(),
    }))
}

/// The stored phase id of `phase`: a fixed phase, or `step:<name>` of the probe's current definition.
fn phase_id(core: &AppState, probe: &str, phase: &str) -> Result<i16, ApiError> {
    if let Some(i) = PHASES.iter().position(|p| *p == phase) {
        return Ok(i as i16);
    }
    if let Some(v) = crate::run::VITALS.iter().find(|v| v.1 == phase) {
        return Ok(v.0);
    }
    let Some(step) = phase.strip_prefix("step:") else {
        return Err(ApiError::bad_request(format!(
            "phase={phase:?} is not one of {}, step:<name>, or (a browser check's) vital:ttfb, vital:fcp, vital:lcp, vital:cls",
            PHASES.join(", ")
        )));
    };
    let steps: Vec<String> = (core.scheduler.probe(probe).as_deref())
        .map(|p| p.step_names().into_iter().map(str::to_string).collect())
        .unwrap_or_default();
    steps
        .iter()
        .position(|s| s == step)
        .map(|i| 100 + i as i16)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "phase={phase:?}: probe {probe:?} has no step named {step:?} (steps: {})",
                if steps.is_empty() {
                    "none".to_string()
                } else {
                    steps.join(", ")
                }
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_whole_minutes_hours_or_days() {
        let ok = |s: &str| parse_step(s).map(|d| d.as_secs()).map_err(|e| e.message);
        assert_eq!(ok("1m"), Ok(60));
        assert_eq!(ok("90m"), Ok(5_400));
        assert_eq!(ok("2h"), Ok(7_200));
        assert_eq!(ok("999999d"), Ok(999_999 * 86_400));
        for bad in [
            "", "m", "0m", "01m", "1000000d", "90s", "1h 30m", "1 m", "1M", "-1m", "1é",
        ] {
            assert!(ok(bad).is_err(), "{bad:?} is refused");
        }
        assert!(ok("90s").unwrap_err().contains("whole number"));
        assert!(ok("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn default_steps_are_whole_units_near_300_points() {
        assert_eq!(default_step(TimeDelta::hours(1)), Duration::from_secs(60));
        assert_eq!(default_step(TimeDelta::days(1)), Duration::from_secs(300));
        assert_eq!(
            default_step(TimeDelta::days(30)),
            Duration::from_secs(3 * 3_600)
        );
    }
}
