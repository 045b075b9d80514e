//! A finished run as OpenTelemetry spans, built after the fact from its
//! record: no tracer runs while the probe does.
//!
//! ```text
//! run (root: the probe's name)                      span_id(run, 0, 0, 0)
//! └─ attempt n (only when the run was retried)      span_id(run, n, 0, 0)
//!    └─ request (one per scenario step)             span_id(run, n, s, 0)  ← traceparent's parent id
//!       └─ dns, connect, tls, first byte, transfer  span_id(run, n, s, p)
//! ```
//!
//! Every span's trace id is the run id ([`crate::run::trace_id`]) and every
//! id is derived ([`span_id`]), so the request span is the one the target was
//! told of: the target's server span becomes its child. A phase span lasts
//! exactly the stored phase (microseconds); the phases of a request are laid
//! end to end from its start, as are a scenario's steps within the attempt
//! (the few microseconds between two, writing the request say, are not
//! measured). A step that never started (the attempt's time ran out before
//! it) or whose request could not be built has no span. Only the last attempt's
//! phases and steps are in the record: an earlier attempt is one span of its
//! total and, for a single request, its request span (so its `traceparent`
//! has a parent too; an earlier attempt's scenario steps have none); attempts
//! are spaced evenly between the run's start and the last attempt's (the
//! retry delay is fixed).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::run::{
    phase_samples, span_id, ErrorClass, Phases, ProbeError, RunRecord, StepStatus, Trigger,
};

/// Names of the phase spans, in the order they happen (`run::PHASES` after `total`).
const PHASE_NAMES: [&str; 5] = ["dns", "connect", "tls", "first byte", "transfer"];

/// What every span of a run shares.
struct Run<'a> {
    record: &'a RunRecord,
    trace: TraceId,
    scope: &'a InstrumentationScope,
}

impl Run<'_> {
    fn span(&self, ids: (u32, u32, u8), parent: u64, name: Cow<'static, str>) -> SpanData {
        let (attempt, step, phase) = ids;
        let id = span_id(self.record.run_id, attempt, step, phase);
        SpanData {
            span_context: SpanContext::new(
                self.trace,
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: if parent == 0 {
                SpanId::INVALID
            } else {
                SpanId::from(parent)
            },
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name,
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

fn at(t: chrono::DateTime<chrono::Utc>) -> SystemTime {
    let us = t.timestamp_micros();
    match u64::try_from(us) {
        Ok(us) => SystemTime::UNIX_EPOCH + Duration::from_micros(us),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

fn trigger(t: Trigger) -> &'static str {
    match t {
        Trigger::Schedule => "schedule",
        Trigger::Api => "api",
        Trigger::Manual => "manual",
    }
}

fn error_status(e: Option<&ProbeError>) -> Status {
    match e {
        None => Status::Unset,
        Some(e) => Status::error(format!("{}: {}", e.class, e.message)),
    }
}

/// The spans of one run, root first.
pub fn spans_of(record: &RunRecord, location: &str, scope: &InstrumentationScope) -> Vec<SpanData> {
    let o = &record.outcome;
    let run = Run {
        record,
        trace: TraceId::from_bytes(*record.run_id.as_bytes()),
        scope,
    };
    let mut out = Vec::with_capacity(8);
    let mut root = root_span(&run, location);
    let root_id = span_id(record.run_id, 0, 0, 0);
    let last_start = at(o.started_at);
    earlier_attempts(&run, root.start_time, last_start, &mut out);
    let n = u32::try_from(o.attempts.len().max(1)).unwrap_or(u32::MAX);
    let parent = if o.attempts.len() > 1 {
        let mut s = run.span((n, 0, 0), root_id, Cow::Owned(format!("attempt {n}")));
        s.start_time = last_start;
        s.end_time = last_start + Duration::from_micros(o.phases.total_us);
        s.status = error_status(o.error.as_ref());
        out.push(s);
        span_id(record.run_id, n, 0, 0)
    } else {
        root_id
    };
    let end = requests(&run, (n, parent), last_start, &mut out);
    root.end_time = end.max(last_start + Duration::from_micros(o.phases.total_us));
    out.insert(0, root);
    out
}

/// The run's own span (kind client, the probe's name), without its end.
fn root_span(run: &Run<'_>, location: &str) -> SpanData {
    let record = run.record;
    let o = &record.outcome;
    let mut root = run.span((0, 0, 0), 0, Cow::Owned(record.meta.name.clone()));
    root.span_kind = SpanKind::Client;
    root.start_time = at(record.started_at);
    root.attributes = vec![
        KeyValue::new("prober.probe", record.meta.name.clone()),
        KeyValue::new("prober.probe_version", record.meta.version.clone()),
        KeyValue::new("prober.location", location.to_string()),
        KeyValue::new("prober.trigger", trigger(record.trigger)),
        KeyValue::new("prober.run_id", record.run_id.to_string()),
    ];
    if let Some(e) = &o.error {
        root.attributes
            .push(KeyValue::new("error.type", e.class.as_str()));
    }
    root.status = error_status(o.error.as_ref());
    root
}

/// The attempts before the last into `out`: their totals only, evenly spaced
/// from the run's start to the last attempt's; a single request's span too.
fn earlier_attempts(run: &Run<'_>, first: SystemTime, last: SystemTime, out: &mut Vec<SpanData>) {
    let o = &run.record.outcome;
    let Some((_, earlier)) = o.attempts.split_last() else {
        return;
    };
    let busy: u64 = earlier.iter().map(|a| a.total_us).sum();
    let idle = (last.duration_since(first).unwrap_or_default())
        .saturating_sub(Duration::from_micros(busy));
    let gap = idle / u32::try_from(earlier.len().max(1)).unwrap_or(1);
    let root_id = span_id(run.record.run_id, 0, 0, 0);
    let mut start = first;
    for (i, a) in earlier.iter().enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let finish = start + Duration::from_micros(a.total_us);
        let mut s = run.span((n, 0, 0), root_id, Cow::Owned(format!("attempt {n}")));
        (s.start_time, s.end_time) = (start, finish);
        s.status = error_status(a.error.as_ref());
        let request = o.steps.is_empty().then(|| {
            let parent = span_id(run.record.run_id, n, 0, 0);
            let mut r = request_span(run, (n, 1), parent, &o.request);
            (r.start_time, r.end_time) = (start, finish);
            r.status = s.status.clone();
            r
        });
        out.push(s);
        out.extend(request);
        start = finish + gap;
    }
}

/// The last attempt's request spans (one per step that ran) and their phases
/// into `out`, from `start`; returns when the last one ended.
fn requests(
    run: &Run<'_>,
    (n, parent): (u32, u64),
    start: SystemTime,
    out: &mut Vec<SpanData>,
) -> SystemTime {
    let o = &run.record.outcome;
    if o.steps.is_empty() {
        let mut r = request_span(run, (n, 1), parent, &o.request);
        r.start_time = start;
        r.status = error_status(o.error.as_ref());
        if let Some(code) = o.status_code {
            r.attributes
                .push(KeyValue::new("http.response.status_code", i64::from(code)));
        }
        if let Some(addr) = &o.remote_addr {
            r.attributes
                .push(KeyValue::new("network.peer.address", addr.clone()));
        }
        let end = phases(run, (n, 1), &mut r, &o.phases, out);
        out.push(r);
        return end;
    }
    let mut end = start;
    for (i, st) in o.steps.iter().enumerate() {
        if st.status == StepStatus::Skipped {
            continue;
        }
        let unbuilt = st
            .error
            .as_ref()
            .is_some_and(|e| e.class == ErrorClass::Config);
        if !reached(&st.phases) && (st.phases.total_us == 0 || unbuilt) {
            // Never sent (the attempt's time ran out before it, or its request
            // could not be built): no request span, only its time passes.
            end += Duration::from_micros(st.phases.total_us);
            continue;
        }
        let s = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let mut r = request_span(run, (n, s), parent, &st.request);
        r.name = Cow::Owned(st.name.clone());
        r.start_time = end;
        r.status = error_status(st.error.as_ref());
        if let Some(code) = st.status_code {
            r.attributes
                .push(KeyValue::new("http.response.status_code", i64::from(code)));
        }
        end = phases(run, (n, s), &mut r, &st.phases, out);
        out.push(r);
    }
    end
}

/// A request's span (kind client), named by its method as HTTP's conventions ask.
fn request_span(run: &Run<'_>, (n, s): (u32, u32), parent: u64, request: &str) -> SpanData {
    let (method, target) = request.split_once(' ').unwrap_or((request, ""));
    let mut r = run.span((n, s, 0), parent, Cow::Owned(method.to_string()));
    r.span_kind = SpanKind::Client;
    if target.contains("://") {
        r.attributes
            .push(KeyValue::new("http.request.method", method.to_string()));
        r.attributes
            .push(KeyValue::new("url.full", target.to_string()));
    } else {
        r.attributes
            .push(KeyValue::new("prober.request", request.to_string()));
    }
    r
}

/// Whether a request reached any phase (it went to the network).
fn reached(p: &Phases) -> bool {
    phase_samples(p)[1..].iter().any(Option::is_some)
}

/// The request's phase spans into `out`, laid end to end from its start; sets
/// its end (its total) and returns it.
fn phases(
    run: &Run<'_>,
    (n, s): (u32, u32),
    request: &mut SpanData,
    p: &Phases,
    out: &mut Vec<SpanData>,
) -> SystemTime {
    let parent = span_id(run.record.run_id, n, s, 0);
    let mut t = request.start_time;
    // The stored phase order (`run::PHASES`) less the total: the span's phase number is its index.
    for (i, us) in phase_samples(p).into_iter().enumerate().skip(1) {
        let Some(us) = us else { continue };
        let phase = u8::try_from(i).unwrap_or(u8::MAX);
        let mut span = run.span((n, s, phase), parent, Cow::Borrowed(PHASE_NAMES[i - 1]));
        span.start_time = t;
        t += Duration::from_micros(us);
        span.end_time = t;
        out.push(span);
    }
    request.end_time = request.start_time + Duration::from_micros(p.total_us);
    request.end_time
}

#[cfg(test)]
mod tests;
