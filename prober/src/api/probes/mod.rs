//! `/api/v1/probes…` and `/api/v1/reload`, one file per endpoint family;
//! here what they share: limits, time ranges, durations in milliseconds.

mod actions;
mod history;
mod latency;
mod screenshot;
mod summary;

#[doc(hidden)]
pub use actions::{__path_reload, __path_run_now};
pub use actions::{reload, run_now};
#[doc(hidden)]
pub use history::__path_runs;
pub use history::runs;
#[doc(hidden)]
pub use latency::__path_latency;
pub use latency::latency;
#[doc(hidden)]
pub use screenshot::__path_screenshot;
pub use screenshot::screenshot;
#[doc(hidden)]
pub use summary::{__path_detail, __path_list};
pub use summary::{detail, label_filters, label_schema, list};

use chrono::{DateTime, TimeDelta, Utc};

use super::error::ApiError;
use super::AppState;
use crate::run::Phases;

/// Most points one latency request may return.
pub const MAX_POINTS: i64 = 10_000;
/// Most runs one history page may return.
pub const MAX_RUNS_PAGE: i64 = 1_000;
/// Runs per history page when `limit` is not given.
pub const DEFAULT_RUNS_PAGE: i64 = 100;

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// Microseconds (as stored) to [`Phases`]' whole microseconds; a negative value (never written) counts as 0.
fn stored_us(us: i32) -> u64 {
    u64::try_from(us).unwrap_or(0)
}

/// A stored `detail` with every duration in milliseconds: rows written before
/// the API settled on milliseconds hold `phases.*_us` and `total_us`.
fn detail_in_ms(mut detail: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    if let Some(steps) = detail.get_mut("steps").and_then(Value::as_array_mut) {
        for phases in steps.iter_mut().filter_map(|s| s.get_mut("phases")) {
            if let Ok(p) = serde_json::from_value::<Phases>(phases.clone()) {
                if let Ok(v) = serde_json::to_value(p) {
                    *phases = v;
                }
            }
        }
    }
    if let Some(attempts) = detail.get_mut("attempts").and_then(Value::as_array_mut) {
        for a in attempts.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(us) = a.remove("total_us").and_then(|v| v.as_u64()) {
                a.insert("total_ms".into(), serde_json::json!(crate::run::ms::of(us)));
            }
        }
    }
    detail
}

fn parse_time(
    field: &str,
    text: Option<&str>,
    default: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    match text {
        None => Ok(default),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "{field}={t:?} is not an RFC 3339 time ({e}), e.g. 2026-11-26T10:00:00Z"
                ))
            }),
    }
}

fn range(
    from: Option<&str>,
    to: Option<&str>,
    default_span: TimeDelta,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = parse_time("to", to, Utc::now())?;
    // Not before year 0: RFC 3339 (the answer's `from`) has no negative years.
    let earliest = DateTime::<Utc>::from_timestamp(-62_167_219_200, 0).unwrap_or(to);
    let default_from = to
        .checked_sub_signed(default_span)
        .map_or(earliest, |f| f.max(earliest));
    let from = parse_time("from", from, default_from)?;
    if from >= to {
        return Err(ApiError::bad_request(format!(
            "from ({from}) must be before to ({to})"
        )));
    }
    Ok((from, to))
}

/// A probe is known if it is scheduled now or has history.
async fn known_probe(core: &AppState, name: &str) -> Result<(), ApiError> {
    if core.scheduler.probe(name).is_some() || core.store.probe_exists(name).await? {
        Ok(())
    } else {
        Err(ApiError::unknown_probe(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_from_never_goes_before_year_0() {
        let (from, to) = range(None, Some("0000-01-01T01:00:00Z"), TimeDelta::days(1))
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(from.to_rfc3339(), "0000-01-01T00:00:00+00:00");
        assert!(from < to);
    }

    #[test]
    fn a_detail_stored_in_microseconds_is_given_in_milliseconds() {
        let old = serde_json::json!({
            "steps": [{"name": "login", "phases": {"dns_us": null, "connect_us": 1500, "tls_us": null,
                "first_byte_us": 2000, "transfer_us": 10, "total_us": 4000}}],
            "attempts": [{"attempt": 1, "success": false, "total_us": 2500}],
            "info": {}
        });
        let new = detail_in_ms(old);
        assert_eq!(new["steps"][0]["phases"]["total_ms"], 4.0);
        assert_eq!(new["steps"][0]["phases"]["connect_ms"], 1.5);
        assert!(new["steps"][0]["phases"]["tls_ms"].is_null());
        assert!(new["steps"][0]["phases"].get("total_us").is_none());
        assert_eq!(new["attempts"][0]["total_ms"], 2.5);
        assert!(new["attempts"][0].get("total_us").is_none());
        // Already in milliseconds: unchanged.
        assert_eq!(detail_in_ms(new.clone()), new);
    }
}
