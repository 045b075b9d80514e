//! Durations as written in probe files: a number and a unit, repeated.

use std::time::Duration;

use crate::config::diag::Ctx;

/// The longest duration in a probe file (an interval, a timeout, a retry
/// delay): 366 days. Longer ones would overflow the scheduler's times.
pub const MAX_PROBE_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Parses `30s`, `1m30s`, `500ms`; reports a bad one at `field`.
pub fn parse_duration(ctx: &mut Ctx<'_>, field: &str, text: &str) -> Option<Duration> {
    if !is_duration_syntax(text) {
        ctx.error(
            field,
            format!("{text:?} is not a duration; write a number and a unit (ms, s, m, h), like 500ms, 30s, 5m, 1h or 1m30s"),
        );
        return None;
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            ctx.error(field, format!("{field} must be greater than zero"));
            None
        }
        Ok(d) if d > MAX_PROBE_DURATION => {
            ctx.error(
                field,
                format!(
                    "{text:?} is longer than 366 days (8784h), the longest duration a probe takes"
                ),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            ctx.error(
                field,
                format!("{text:?} is not a duration ({e}); write it like 500ms, 30s, 5m or 1h"),
            );
            None
        }
    }
}

/// `500ms`, `30s`, `1m30s`: digits and a unit, repeated. The JSON Schema says the same.
pub fn is_duration_syntax(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_on_every_number() {
        for ok in ["500ms", "30s", "5m", "1h", "1m30s"] {
            assert!(is_duration_syntax(ok), "{ok}");
        }
        for bad in ["", "30", "30 seconds", "30 s", "1d", "s", "1.5s", "-1s"] {
            assert!(!is_duration_syntax(bad), "{bad}");
        }
    }

    #[test]
    fn a_duration_past_a_year_is_refused_with_the_limit() {
        let text = "name: x\nevery: 9000000h\nhttp: {url: \"http://127.0.0.1:9/\"}\n";
        let mut report = crate::config::LoadReport::default();
        crate::config::load::load_text(std::path::Path::new("x.yaml"), text, &mut report);
        let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
        assert!(
            errors.iter().any(|e| e.contains("longer than 366 days")),
            "{errors:?}"
        );
    }
}
