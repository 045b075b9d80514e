use super::super::{Settings, SettingsArgs};
use super::*;

fn resolve(yaml: &str) -> Result<Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prober.yaml");
    std::fs::write(&file, yaml).unwrap();
    Settings::resolve(&SettingsArgs {
        config: Some(file),
        ..SettingsArgs::default()
    })
    .map_err(|e| e.to_string())
}

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
    ] {
        let e = resolve(yaml).unwrap_err();
        assert!(e.contains("otel.") && e.contains(words), "{yaml}: {e}");
    }
}
