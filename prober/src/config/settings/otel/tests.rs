use super::super::resolve_yaml as resolve;
use super::*;

#[test]
fn otel_is_off_by_default_and_on_with_an_endpoint() {
    let s = resolve("location: x\n").unwrap();
    let env_set = OTLP_ENDPOINT_VARS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty()));
    assert_eq!(
        s.otel.traces, env_set,
        "off unless the environment names a receiver"
    );
    let s = resolve(
        "otel:\n  endpoint: http://127.0.0.1:4317\n  protocol: grpc\n  headers: {X-Api-Key: k}\n  queue_runs: 500\n",
    )
    .unwrap();
    assert!(s.otel.traces);
    assert_eq!(s.otel.endpoint.as_deref(), Some("http://127.0.0.1:4317"));
    assert_eq!(s.otel.protocol, OtlpProtocol::Grpc);
    assert_eq!(s.otel.headers["x-api-key"], "k");
    assert_eq!(s.otel.queue_runs, 500);
    let off = resolve("otel:\n  endpoint: http://127.0.0.1:4318\n  traces: false\n").unwrap();
    assert!(!off.otel.traces);
    let full = resolve("otel:\n  endpoint: http://c:4318/v1/traces\n").unwrap();
    assert_eq!(
        full.otel.endpoint.as_deref(),
        Some("http://c:4318"),
        "the base address"
    );
}

#[test]
fn a_bad_otel_setting_is_an_error_at_its_field_saying_what_to_write() {
    for (yaml, words) in [
        (
            "otel:\n  endpoint: https://otlp.example.com\n",
            "https is not supported yet",
        ),
        (
            "otel:\n  endpoint: collector:4317\n",
            "e.g. http://otel-collector:4318",
        ),
        (
            "otel:\n  endpoint: http://c:4318\n  protocol: thrift\n",
            "write grpc or http",
        ),
        (
            "otel:\n  endpoint: http://c:4318\n  queue_runs: 5\n",
            "at least 100",
        ),
        (
            "otel:\n  endpoint: http://c:4318\n  sample_ratio: 2\n",
            "between 0 and 1",
        ),
        (
            "otel:\n  endpoint: http://c:4318\n  headers: {\"a b\": x}\n",
            "not an HTTP header name",
        ),
        (
            "otel:\n  endpoint: http://c:4318\n  metrics: true\n  metrics_temporality: monthly\n",
            "write cumulative or delta",
        ),
        (
            "otel:\n  endpoint: http://c:4318\n  metrics: true\n  metrics_interval: 100ms\n",
            "at least 1s",
        ),
        (
            "otel:\n  endpoint: http://c:4318\n  metrics_interval: soon\n",
            "not a duration",
        ),
    ] {
        let e = resolve(yaml).unwrap_err();
        assert!(e.contains("otel.") && e.contains(words), "{yaml}: {e}");
    }
}

#[test]
fn otlp_metrics_are_opt_in_and_take_a_temporality_and_an_interval() {
    let on = resolve("otel:\n  endpoint: http://c:4318\n").unwrap();
    assert!(!on.otel.metrics, "off unless asked for");
    assert_eq!(on.otel.metrics_temporality, MetricsTemporality::Cumulative);
    assert_eq!(on.otel.metrics_interval, std::time::Duration::from_secs(60));
    let s = resolve(
        "otel:\n  endpoint: http://c:4318\n  traces: false\n  metrics: true\n  metrics_temporality: Delta\n  metrics_interval: 15s\n",
    )
    .unwrap();
    assert!(s.otel.metrics && !s.otel.traces);
    assert_eq!(s.otel.metrics_temporality, MetricsTemporality::Delta);
    assert_eq!(s.otel.metrics_interval, std::time::Duration::from_secs(15));
    let low = resolve(
        "otel:\n  endpoint: http://c:4318\n  metrics: true\n  metrics_temporality: lowmemory\n",
    )
    .unwrap();
    assert_eq!(
        low.otel.metrics_temporality,
        MetricsTemporality::Delta,
        "the specification's lowmemory is delta for counters and histograms"
    );
    let env_set = METRICS_ENDPOINT_VARS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty()));
    if !env_set {
        let e = resolve("otel:\n  metrics: true\n").unwrap_err();
        assert!(
            e.contains("otel.metrics") && e.contains("needs a receiver"),
            "{e}"
        );
    }
}

#[test]
fn a_bad_metric_export_interval_variable_is_a_warning_and_the_default_serves() {
    let d = OtelSettings::default();
    for (value, expected) in [("15000", 15), ("500", 60), ("soon", 60)] {
        let mut sink = Sink {
            file: "prober.yaml".into(),
            doc: super::super::file::empty_document(),
            out: Vec::new(),
            mode: super::super::EnvMode::Require,
        };
        let env = |name: &str| (name == INTERVAL_VAR).then(|| value.to_string());
        let (_, interval) = metrics_timing(&mut sink, (None, None), &d, env);
        assert_eq!(
            interval,
            std::time::Duration::from_secs(expected),
            "{value}"
        );
        let warned: Vec<String> = sink.out.iter().map(|w| w.to_string()).collect();
        if expected == 60 {
            assert!(
                warned.len() == 1 && warned[0].contains(&format!("{INTERVAL_VAR}={value}")),
                "{warned:?}"
            );
        } else {
            assert!(warned.is_empty(), "{warned:?}");
        }
    }
}
