use std::sync::Arc;

use chrono::{TimeZone, Utc};
use opentelemetry::trace::{SpanKind, Status};
use uuid::Uuid;

use super::*;
use crate::run::{Attempt, ErrorClass, Outcome, ProbeMeta, StepOutcome};

fn record(outcome: Outcome) -> RunRecord {
    let started_at = outcome.started_at;
    RunRecord {
        run_id: Uuid::now_v7(),
        meta: Arc::new(ProbeMeta {
            name: "checkout".into(),
            version: "v1".into(),
            definition: Arc::from(serde_json::value::RawValue::from_string("{}".into()).unwrap()),
            source: "p.yaml:1".into(),
        }),
        scheduled_at: started_at,
        started_at,
        lateness_us: 0,
        outcome,
        trigger: Trigger::Schedule,
    }
}

fn outcome() -> Outcome {
    let t = Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap();
    let mut o = Outcome::failed(
        "checkout",
        "v1",
        t,
        ErrorClass::HttpStatus,
        "status 503".into(),
        Duration::ZERO,
    );
    o.request = "GET http://127.0.0.1:8080/pay".into();
    o.status_code = Some(503);
    o.phases = Phases {
        total_us: 1_987,
        dns_us: Some(11),
        connect_us: Some(222),
        tls_us: None,
        first_byte_us: Some(1_500),
        transfer_us: Some(254),
    };
    o
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("prober").build()
}

fn us(a: SystemTime, b: SystemTime) -> u128 {
    b.duration_since(a).unwrap().as_micros()
}

#[test]
fn a_request_is_a_client_span_under_the_run_with_its_phases_to_the_microsecond() {
    let r = record(outcome());
    let spans = spans_of(&r, "eu", &scope());

    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "checkout",
            "dns",
            "connect",
            "first byte",
            "transfer",
            "GET"
        ]
    );
    let trace = TraceId::from_bytes(*r.run_id.as_bytes());
    assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
    let root = &spans[0];
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    assert_eq!(
        root.span_context.span_id(),
        SpanId::from(span_id(r.run_id, 0, 0, 0))
    );
    assert!(
        matches!(&root.status, Status::Error { description } if description == "http_status: status 503")
    );
    let request = &spans[5];
    assert_eq!(request.span_kind, SpanKind::Client);
    assert_eq!(request.parent_span_id, root.span_context.span_id());
    assert_eq!(
        request.span_context.span_id(),
        SpanId::from(span_id(r.run_id, 1, 1, 0)),
        "the id its traceparent named"
    );
    assert_eq!(us(request.start_time, request.end_time), 1_987);
    let durations: Vec<u128> = spans[1..5]
        .iter()
        .map(|s| us(s.start_time, s.end_time))
        .collect();
    assert_eq!(durations, [11, 222, 1_500, 254]);
    assert!(spans[1..5]
        .iter()
        .all(|s| s.parent_span_id == request.span_context.span_id()));
    assert_eq!(
        spans[1].start_time, request.start_time,
        "phases laid end to end from the request's start"
    );
    assert!(spans[1..4]
        .iter()
        .zip(&spans[2..5])
        .all(|(a, b)| a.end_time == b.start_time));
    assert_eq!(us(root.start_time, root.end_time), 1_987);
    let attr = |s: &SpanData, k: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(
        attr(request, "http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(
        attr(request, "url.full").as_deref(),
        Some("http://127.0.0.1:8080/pay")
    );
    assert_eq!(attr(root, "error.type").as_deref(), Some("http_status"));
    assert_eq!(attr(root, "prober.location").as_deref(), Some("eu"));
}

#[test]
fn a_retried_run_has_a_span_per_attempt_each_with_its_request() {
    let mut o = outcome();
    let first = o.started_at;
    o.started_at = first + chrono::Duration::milliseconds(1_100);
    let err = o.error.clone();
    o.attempts = vec![
        Attempt {
            attempt: 1,
            success: false,
            error: err.clone(),
            total_us: 100_000,
        },
        Attempt {
            attempt: 2,
            success: false,
            error: err,
            total_us: 1_987,
        },
    ];
    let mut r = record(o);
    r.started_at = first;
    let spans = spans_of(&r, "eu", &scope());

    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "checkout",
            "attempt 1",
            "GET",
            "attempt 2",
            "dns",
            "connect",
            "first byte",
            "transfer",
            "GET"
        ]
    );
    let id = |a, s| SpanId::from(span_id(r.run_id, a, s, 0));
    assert_eq!(spans[1].span_context.span_id(), id(1, 0));
    assert_eq!(
        spans[2].span_context.span_id(),
        id(1, 1),
        "attempt 1's traceparent"
    );
    assert_eq!(spans[2].parent_span_id, id(1, 0));
    assert_eq!(
        spans[8].span_context.span_id(),
        id(2, 1),
        "attempt 2's traceparent"
    );
    assert_eq!(spans[8].parent_span_id, id(2, 0));
    assert_eq!(us(spans[1].start_time, spans[1].end_time), 100_000);
    assert_eq!(spans[1].start_time, at(first));
    assert_eq!(
        spans[3].start_time,
        at(first + chrono::Duration::milliseconds(1_100))
    );
    assert_eq!(
        spans[0].end_time, spans[3].end_time,
        "the run ends with its last attempt"
    );
}

#[test]
fn a_scenario_has_a_request_span_per_step_that_ran() {
    let mut o = outcome();
    let step = |name: &str, status, total_us| StepOutcome {
        name: name.into(),
        status,
        error: None,
        request: format!("POST http://127.0.0.1:8080/{name}"),
        status_code: Some(200),
        phases: Phases {
            total_us,
            connect_us: Some(10),
            first_byte_us: Some(total_us.saturating_sub(10)),
            ..Phases::default()
        },
        assertions: Vec::new(),
        extracted: Vec::new(),
    };
    let never_sent = StepOutcome {
        phases: Phases::default(),
        ..step("confirm", StepStatus::Failed, 0)
    };
    o.steps = vec![
        step("login", StepStatus::Passed, 500),
        step("pay", StepStatus::Failed, 700),
        step("logout", StepStatus::Skipped, 0),
        step("cleanup", StepStatus::Passed, 300),
        never_sent,
    ];
    o.phases.total_us = 1_500;
    let r = record(o);
    let spans = spans_of(&r, "eu", &scope());

    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "checkout",
            "connect",
            "first byte",
            "login",
            "connect",
            "first byte",
            "pay",
            "connect",
            "first byte",
            "cleanup"
        ],
        "no span for a skipped step or one never sent"
    );
    let id = |s| SpanId::from(span_id(r.run_id, 1, s, 0));
    assert_eq!(spans[3].span_context.span_id(), id(1));
    assert_eq!(spans[6].span_context.span_id(), id(2));
    assert_eq!(
        spans[9].span_context.span_id(),
        id(4),
        "numbered as the runner numbers steps, skipped ones too"
    );
    assert_eq!(
        spans[6].start_time, spans[3].end_time,
        "steps laid end to end"
    );
    assert_eq!(us(spans[6].start_time, spans[6].end_time), 700);
}

#[test]
fn a_step_that_failed_before_any_phase_keeps_its_span_unless_it_was_never_built() {
    let mut o = outcome();
    let failed = |name: &str, class: ErrorClass, total_us: u64| StepOutcome {
        name: name.into(),
        status: StepStatus::Failed,
        error: Some(ProbeError {
            class,
            message: "x".into(),
        }),
        request: format!("GET http://127.0.0.1:8080/{name}"),
        status_code: None,
        phases: Phases {
            total_us,
            ..Phases::default()
        },
        assertions: Vec::new(),
        extracted: Vec::new(),
    };
    // A reused connection that failed as the request went out: no phase, but it took time.
    o.steps = vec![
        failed("sent", ErrorClass::InvalidResponse, 80),
        failed("unbuilt", ErrorClass::Config, 3),
    ];
    let r = record(o);
    let spans = spans_of(&r, "eu", &scope());

    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, ["checkout", "sent"]);
    assert_eq!(us(spans[1].start_time, spans[1].end_time), 80);
}
