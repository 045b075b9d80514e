use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};

use super::*;

fn meta() -> Arc<ProbeMeta> {
    Arc::new(ProbeMeta {
        name: "checkout".into(),
        version: "a".repeat(64),
        definition: Arc::from(
            serde_json::value::RawValue::from_string(r#"{"url":"http://127.0.0.1:1/"}"#.into())
                .unwrap(),
        ),
        source: "probes/checkout.yaml".into(),
    })
}

/// A successful HTTP run as the daemon records it.
pub(crate) fn typical(meta: Arc<ProbeMeta>) -> RunRecord {
    let scheduled_at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let started_at = scheduled_at + Duration::nanoseconds(123_456);
    RunRecord {
        run_id: Uuid::now_v7(),
        scheduled_at,
        started_at,
        lateness_us: 123,
        trigger: Trigger::Schedule,
        outcome: Outcome {
            probe: meta.name.clone(),
            probe_version: meta.version.clone(),
            started_at,
            success: true,
            error: None,
            request: "GET http://127.0.0.1:8080/health".into(),
            status_code: Some(200),
            phases: Phases {
                dns_us: None,
                connect_us: Some(180),
                tls_us: None,
                first_byte_us: Some(950),
                transfer_us: Some(40),
                total_us: 1_210,
            },
            response_bytes: 17,
            remote_addr: Some("127.0.0.1:8080".into()),
            redirects: 0,
            cert: None,
            assertions: vec![AssertionResult {
                check: "status".into(),
                passed: true,
                expected: "200".into(),
                actual: "200".into(),
            }],
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            steps: Vec::new(),
            attempts: Vec::new(),
            info: Default::default(),
        },
        meta,
    }
}

fn roundtrip(r: &RunRecord) -> RunRecord {
    let mut buf = Vec::new();
    encode_run(r, &mut buf);
    decode_run(&buf, r.meta.clone()).unwrap()
}

fn assert_same(a: &RunRecord, b: &RunRecord) {
    assert_eq!(a.run_id, b.run_id);
    assert_eq!(a.scheduled_at, b.scheduled_at);
    assert_eq!(a.started_at, b.started_at);
    assert_eq!(a.lateness_us, b.lateness_us);
    assert_eq!(a.trigger, b.trigger);
    assert_eq!(a.outcome, b.outcome);
}

#[test]
fn a_typical_run_round_trips_in_under_150_bytes() {
    let r = typical(meta());
    let mut buf = Vec::new();
    encode_run(&r, &mut buf);
    assert!(buf.len() < 150, "{} bytes", buf.len());
    assert_same(&r, &roundtrip(&r));
}

#[test]
fn every_field_of_a_rich_run_round_trips() {
    let mut r = typical(meta());
    r.trigger = Trigger::Api;
    r.lateness_us = -5;
    let o = &mut r.outcome;
    o.probe = "renamed".into();
    o.probe_version = "v2".into();
    o.started_at += Duration::milliseconds(3);
    o.success = false;
    o.error = Some(ProbeError {
        class: ErrorClass::Assertion,
        message: "body did not contain \"ok\" — ünïcode".into(),
    });
    o.status_code = Some(503);
    o.phases.dns_us = Some(0);
    o.phases.tls_us = Some(u64::from(u32::MAX) * 7);
    o.cert = Some(CertInfo {
        subject: "CN=a".into(),
        issuer: "CN=b".into(),
        not_after: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
        days_left: -3,
    });
    o.trace_id = String::new();
    o.steps = vec![StepOutcome {
        name: "login".into(),
        status: StepStatus::Skipped,
        error: Some(ProbeError {
            class: ErrorClass::Config,
            message: "x".into(),
        }),
        request: "POST http://127.0.0.1/login".into(),
        status_code: None,
        phases: Phases::default(),
        assertions: Vec::new(),
        extracted: vec!["token".into(), "id".into()],
    }];
    o.attempts = vec![Attempt {
        attempt: 2,
        success: false,
        error: None,
        total_us: 99,
    }];
    o.info.insert("answers".into(), "127.0.0.1".into());
    assert_same(&r, &roundtrip(&r));
    for class in CLASSES {
        r.outcome.error = Some(ProbeError {
            class,
            message: String::new(),
        });
        assert_same(&r, &roundtrip(&r));
    }
    r.outcome.trace_id = "NOT-HEX".into();
    assert_same(&r, &roundtrip(&r));
}

#[test]
fn metas_round_trip() {
    let m = meta();
    let mut buf = Vec::new();
    encode_meta(&m, &mut buf);
    let back = decode_meta(&buf).unwrap();
    assert_eq!(back.name, m.name);
    assert_eq!(back.version, m.version);
    assert_eq!(back.source, m.source);
    assert_eq!(back.definition.get(), m.definition.get());
}

#[test]
fn every_cut_and_every_flipped_byte_is_an_error_or_a_run_never_a_panic() {
    let mut r = typical(meta());
    r.outcome.info.insert("k".into(), "v".into());
    let mut buf = Vec::new();
    encode_run(&r, &mut buf);
    for cut in 0..buf.len() {
        assert!(
            decode_run(&buf[..cut], r.meta.clone()).is_err(),
            "cut at {cut}"
        );
    }
    for i in 0..buf.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = buf.clone();
            b[i] ^= flip;
            let _ = decode_run(&b, r.meta.clone());
        }
    }
    let mut huge = vec![0u8; 16];
    huge.extend([0xffu8; 12]);
    assert_eq!(
        decode_run(&huge, r.meta.clone()).unwrap_err().what,
        "integer longer than 64 bits"
    );
}
