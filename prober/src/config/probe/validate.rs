//! A probe as a whole: its name, schedule, timeout, one check, retries, and
//! the run budget they add up to, which must fit inside the interval.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use super::{
    check_url, parse_duration, validate_http, AlertOverrides, Budget, Check, Probe, Schedule,
    Scope, Trace, DEFAULT_TIMEOUT, MIN_INTERVAL,
};
use crate::config::diag::Ctx;
use crate::config::raw::{RawHeaderValue, RawHttp, RawProbe, RawTrace, RawTraceMode};
use crate::config::{kinds, steps};

/// The longest probe name.
pub const MAX_NAME_LEN: usize = 128;

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`: safe as a URL path segment, a file name and
/// a metric label value (no `/`, never `.` or `..`, no leading `-`).
pub fn is_safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A safe name close to `name`, for the error message.
fn suggest_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut out: String = trimmed.chars().take(MAX_NAME_LEN).collect();
    if out.is_empty() {
        out = "probe-1".into();
    }
    out
}

/// Validates one probe, reporting every problem through `ctx`.
pub fn validate(raw: &RawProbe, ctx: &mut Ctx<'_>) -> Option<Probe> {
    let errors_before = ctx.error_count();
    if raw.name.trim().is_empty() {
        ctx.error("name", "the name is empty; give the probe a unique name");
    } else if !is_safe_name(&raw.name) {
        ctx.error(
            "name",
            format!(
                "name {:?} is not allowed: a name starts with a letter or digit and holds only \
                 letters, digits, '.', '_' and '-' ({MAX_NAME_LEN} at most); it is a path segment \
                 of the API and a metric label, so rename the probe (e.g. {:?})",
                raw.name,
                suggest_name(&raw.name)
            ),
        );
    }
    if let Some(rb) = &raw.runbook {
        check_url(ctx, "runbook", rb);
    }
    let schedule = validate_schedule(raw, ctx);
    let interval = schedule.as_ref().map(Schedule::min_interval);
    let timeout = validate_timeout(raw, schedule.as_ref(), interval, ctx);
    let check = validate_check(raw, timeout, ctx);
    let retry = raw
        .retry
        .as_ref()
        .and_then(|r| kinds::validate_retry(r, ctx))
        .map(Box::new);
    if let (Some(schedule), Some(interval), Some(timeout)) = (&schedule, interval, timeout) {
        let budget = Budget::new(timeout, retry.as_deref());
        check_budget(raw, schedule, interval, budget, ctx);
    }
    let alert = raw
        .alert
        .as_ref()
        .map(|a| kinds::validate_alert(a, ctx))
        .filter(|a| *a != AlertOverrides::default())
        .map(Box::new);
    for (i, d) in raw.depends_on.iter().enumerate() {
        if d == &raw.name {
            ctx.error(
                &format!("depends_on[{i}]"),
                "a probe cannot depend on itself; name the probes it needs (e.g. a database or login probe)",
            );
        }
    }
    if ctx.error_count() > errors_before {
        return None;
    }
    let definition =
        match serde_json::value::to_raw_value(&redacted_definition(&ctx.doc.value, raw)) {
            Ok(d) => std::sync::Arc::from(d),
            Err(e) => {
                ctx.error(
                    "",
                    format!("the definition cannot be written as JSON ({e})"),
                );
                return None;
            }
        };
    Some(Probe {
        name: raw.name.clone(),
        description: raw.description.clone(),
        labels: raw.labels.clone(),
        runbook: raw.runbook.clone(),
        schedule: schedule?,
        timeout: timeout?,
        check: check?,
        source: ctx.source(),
        version: ctx.version(),
        definition,
        retry,
        alert,
        depends_on: raw.depends_on.clone(),
        trace: match raw.trace {
            None | Some(RawTrace::On(true)) => Trace::Sampled,
            Some(RawTrace::On(false)) => Trace::Off,
            Some(RawTrace::Mode(RawTraceMode::Unsampled)) => Trace::Unsampled,
        },
    })
}

/// The one check of a probe: exactly one of the kinds.
fn validate_check(raw: &RawProbe, timeout: Option<Duration>, ctx: &mut Ctx<'_>) -> Option<Check> {
    let kinds: Vec<&str> = [
        ("http", raw.http.is_some()),
        ("steps", raw.steps.is_some()),
        ("tcp", raw.tcp.is_some()),
        ("dns", raw.dns.is_some()),
        ("tls", raw.tls.is_some()),
        ("grpc", raw.grpc.is_some()),
        ("icmp", raw.icmp.is_some()),
        ("websocket", raw.websocket.is_some()),
        ("browser", raw.browser.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    match kinds.as_slice() {
        [] => {
            ctx.error(
                "",
                "the probe has no check: add one of `http:` (with at least a `url`), `steps:`, `tcp:`, `dns:`, `tls:`, `grpc:`, `icmp:`, `websocket:`, `browser:`",
            );
            return None;
        }
        [_] => {}
        [_, second, ..] => {
            ctx.error_at_key(
                second,
                format!(
                    "a probe has one check, and this one also has `{}`; split it into two probes",
                    kinds[0]
                ),
            );
            return None;
        }
    }
    if raw.expect.is_some() && raw.http.is_none() {
        ctx.error_at_key(
            "expect",
            "`expect` applies to `http`; a scenario puts `expect` in each step, and tcp/dns/tls/grpc/icmp/websocket/browser have their own keys",
        );
    }
    if let Some(http) = &raw.http {
        return validate_http(
            http,
            raw.expect.as_ref(),
            ctx,
            "http",
            "expect",
            &Scope::default(),
        )
        .map(|h| Check::Http(Box::new(h)));
    }
    if let Some(steps) = &raw.steps {
        return steps::validate_steps(steps, timeout, ctx).map(Check::Steps);
    }
    if let Some(t) = &raw.tcp {
        return kinds::validate_tcp(t, ctx).map(Check::Tcp);
    }
    if let Some(d) = &raw.dns {
        return kinds::validate_dns(d, ctx).map(Check::Dns);
    }
    if let Some(t) = &raw.tls {
        return kinds::validate_tls(t, ctx).map(Check::Tls);
    }
    if let Some(w) = &raw.websocket {
        return kinds::validate_websocket(w, ctx).map(Check::WebSocket);
    }
    if let Some(b) = &raw.browser {
        return crate::config::browser::validate_browser(b, ctx)
            .map(|b| Check::Browser(Box::new(b)));
    }
    if let Some(i) = &raw.icmp {
        return kinds::validate_icmp(i, timeout, ctx).map(Check::Icmp);
    }
    raw.grpc
        .as_ref()
        .and_then(|g| kinds::validate_grpc(g, ctx))
        .map(Check::Grpc)
}

/// The probe's JSON with every secret header value replaced.
fn redacted_definition(value: &Value, raw: &RawProbe) -> Value {
    let mut v = value.clone();
    let mut requests: Vec<(String, &RawHttp)> =
        raw.http.iter().map(|h| ("/http".to_string(), h)).collect();
    for (i, st) in raw.steps.iter().flatten().enumerate() {
        requests.push((format!("/steps/{i}/http"), &st.http));
    }
    for (at, http) in requests {
        for (name, hv) in &http.headers {
            if matches!(hv, RawHeaderValue::Detailed(d) if d.secret) {
                let key = name.replace('~', "~0").replace('/', "~1");
                if let Some(slot) = v.pointer_mut(&format!("{at}/headers/{key}/value")) {
                    *slot = Value::String("<redacted>".into());
                }
            }
        }
    }
    v
}

fn validate_schedule(raw: &RawProbe, ctx: &mut Ctx<'_>) -> Option<Schedule> {
    match (&raw.every, &raw.cron) {
        (Some(_), Some(_)) => {
            ctx.error(
                "cron",
                "both `every` and `cron` are set; keep exactly one of them",
            );
            None
        }
        (None, None) => {
            ctx.error(
                "",
                "the probe has no schedule; add `every: 30s` or `cron: \"0 */5 * * * *\"`",
            );
            None
        }
        (Some(every), None) => {
            let d = parse_duration(ctx, "every", every)?;
            if d < MIN_INTERVAL {
                ctx.error(
                    "every",
                    format!(
                        "every {every} is shorter than the minimum of {}; probe less often",
                        humantime::format_duration(MIN_INTERVAL)
                    ),
                );
                return None;
            }
            Some(Schedule::Every(d))
        }
        (None, Some(expr)) => match cron::Schedule::from_str(expr) {
            Ok(s) if s.upcoming(chrono::Utc).take(2).count() < 2 => {
                ctx.error(
                    "cron",
                    format!("{expr:?} never fires (or fires only once more); check the day and month fields"),
                );
                None
            }
            Ok(s) => Some(Schedule::Cron {
                expr: expr.clone(),
                schedule: Box::new(s),
            }),
            Err(_) => {
                let fields = expr.split_whitespace().count();
                let hint = if (6..=7).contains(&fields) {
                    "a field is out of range or malformed".to_string()
                } else {
                    format!("it has {fields} fields; prober's cron needs 6 or 7, seconds first")
                };
                ctx.error(
                    "cron",
                    format!(
                        "{expr:?} is not a cron expression ({hint}); write \"sec min hour day month weekday\", e.g. \"0 */5 * * * *\""
                    ),
                );
                None
            }
        },
    }
}

/// The per-attempt timeout: as written, shorter than the interval; by default
/// [`DEFAULT_TIMEOUT`], at most half the interval. `interval` is the schedule's
/// shortest gap ([`Schedule::min_interval`]).
fn validate_timeout(
    raw: &RawProbe,
    schedule: Option<&Schedule>,
    interval: Option<Duration>,
    ctx: &mut Ctx<'_>,
) -> Option<Duration> {
    let Some(text) = &raw.timeout else {
        let half = interval.map_or(DEFAULT_TIMEOUT, |i| i / 2);
        return Some(DEFAULT_TIMEOUT.min(half));
    };
    let timeout = parse_duration(ctx, "timeout", text)?;
    if let (Some(interval), Some(schedule)) = (interval, schedule) {
        if timeout >= interval {
            ctx.error(
                "timeout",
                format!(
                    "timeout {text} must be shorter than the interval ({schedule}, {} between runs); lower the timeout or run less often",
                    humantime::format_duration(interval)
                ),
            );
            return None;
        }
    }
    Some(timeout)
}

/// A retried run's whole budget (every attempt's timeout and the delays between
/// them) must end before the next tick: otherwise the retry that was meant to
/// rescue the run collides with the schedule. Without retries the budget is the
/// timeout, which `validate_timeout` has already held to the interval.
fn check_budget(
    raw: &RawProbe,
    schedule: &Schedule,
    interval: Duration,
    budget: Budget,
    ctx: &mut Ctx<'_>,
) {
    if budget.attempts <= 1 || budget.total() < interval {
        return;
    }
    let fmt = humantime::format_duration;
    let (field, timeout) = match &raw.timeout {
        Some(text) => ("timeout", format!("timeout {text}")),
        None => (
            "retry.attempts",
            format!("the default timeout {}", fmt(budget.timeout)),
        ),
    };
    let delays = budget.delay * (budget.attempts - 1);
    let fits = interval
        .checked_sub(delays)
        .map(|room| room.saturating_sub(Duration::from_millis(1)) / budget.attempts)
        .map(|t| match t.as_secs() {
            // Whole seconds where that is precise enough, to read as one would write it.
            0 => Duration::from_millis(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            s => Duration::from_secs(s),
        })
        .filter(|t| !t.is_zero());
    let hint = match fits {
        Some(t) => format!("lower `timeout` (to {} or less here)", fmt(t)),
        None => "lower `retry.delay`".to_string(),
    };
    ctx.error(
        field,
        format!(
            "a retried run may take {} ({} attempts × {timeout} + {} × retry.delay {}), which does \
             not fit inside the interval ({schedule}, {} between runs): the last attempt would \
             still be going at the next tick; {hint} or `retry.attempts`, or run less often",
            fmt(budget.total()),
            budget.attempts,
            budget.attempts - 1,
            fmt(budget.delay),
            fmt(interval),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_limited_to_a_safe_set() {
        for ok in [
            "a",
            "checkout-health",
            "api.v2_login",
            "9",
            &"x".repeat(128),
        ] {
            assert!(is_safe_name(ok), "{ok}");
        }
        for bad in [
            ".",
            "..",
            "/",
            "a//b",
            "../etc/passwd",
            "a/b",
            "-a",
            ".hidden",
            "_a",
            "a b",
            "é",
            "a?b",
            "a%2Fb",
            &"x".repeat(129),
        ] {
            assert!(!is_safe_name(bad), "{bad}");
            assert!(
                is_safe_name(&suggest_name(bad)),
                "{bad} → {}",
                suggest_name(bad)
            );
        }
        assert_eq!(suggest_name("../etc/passwd"), "etc-passwd");
    }

    fn load(text: &str) -> crate::config::LoadReport {
        let mut report = crate::config::LoadReport::default();
        crate::config::load::load_text(std::path::Path::new("p.yaml"), text, &mut report);
        report
    }

    #[test]
    fn a_retried_run_that_would_outlast_the_interval_is_refused_at_its_timeout() {
        let report = load(
            "name: a\nevery: 30s\ntimeout: 10s\nretry: {attempts: 3, delay: 2s}\nhttp: {url: \"http://127.0.0.1/\"}\n",
        );

        let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("p.yaml:3:10: probe \"a\": timeout: a retried run may take 34s (3 attempts × timeout 10s + 2 × retry.delay 2s)"),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].contains("(every 30s, 30s between runs)"),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("to 8s or less"), "{}", errors[0]);
    }

    #[test]
    fn a_budget_exactly_the_interval_is_refused_and_just_under_it_loads() {
        let yaml = |timeout: &str| {
            format!("name: a\nevery: 21s\ntimeout: {timeout}\nretry: {{attempts: 2, delay: 1s}}\nhttp: {{url: \"http://127.0.0.1/\"}}\n")
        };
        assert!(
            !load(&yaml("10s")).is_ok(),
            "2 × 10s + 1s is the interval: refused"
        );
        let ok = load(&yaml("9999ms"));
        assert!(ok.is_ok(), "{:?}", ok.diagnostics);
        assert_eq!(ok.probes[0].budget().total(), Duration::from_millis(20_998));
    }

    #[test]
    fn with_the_default_timeout_the_problem_is_placed_at_the_attempts() {
        let report = load(
            "name: a\nevery: 20s\nretry:\n  attempts: 3\nhttp: {url: \"http://127.0.0.1/\"}\n",
        );

        let e = report
            .errors()
            .next()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            e.starts_with("p.yaml:4:13: probe \"a\": retry.attempts:"),
            "{e}"
        );
        assert!(
            e.contains("3 attempts × the default timeout 10s + 2 × retry.delay 1s"),
            "{e}"
        );
    }

    #[test]
    fn a_cron_probe_is_held_to_its_shortest_gap() {
        let report = load(
            "name: a\ncron: \"*/10 * * * * *\"\ntimeout: 4s\nretry: {attempts: 2, delay: 3s}\nhttp: {url: \"http://127.0.0.1/\"}\n",
        );

        let e = report
            .errors()
            .next()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(e.contains("11s") && e.contains("10s between runs"), "{e}");
    }
}
