//! `otel:` in `prober.yaml`: where the runs go as OTLP traces.

use std::collections::BTreeMap;

use super::file::OtelFile;
use super::sink::Sink;
use super::{OtelSettings, OtlpProtocol};

/// The environment variables of OpenTelemetry's exporter specification that
/// name a trace receiver: either one turns the export on without `otel.endpoint`.
pub const OTLP_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// The variables that choose the protocol, the first set wins.
const OTLP_PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// `otel:` checked: an http URL with a host, a known protocol, headers with
/// `${env:NAME}` substituted, a queue of at least 100 runs.
pub(super) fn otel_of(sink: &mut Sink, f: OtelFile, d: &OtelSettings) -> OtelSettings {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let from_env = OTLP_ENDPOINT_VARS.iter().any(|v| env(v).is_some());
    let endpoint = f.endpoint.filter(|e| !e.is_empty());
    if let Some(e) = &endpoint {
        match url::Url::parse(e) {
            Ok(u) if u.scheme() == "http" && u.host_str().is_some_and(|h| !h.is_empty()) => {}
            Ok(u) if u.scheme() == "https" => sink.error(
                "otel.endpoint",
                format!("{e}: https is not supported yet; send to an OpenTelemetry Collector over http beside the prober (e.g. http://127.0.0.1:4318) and let it forward over TLS"),
            ),
            _ => sink.error(
                "otel.endpoint",
                format!("{e} is not an http URL with a host; write the receiver's base address, e.g. http://otel-collector:4318 (http) or http://otel-collector:4317 (grpc)"),
            ),
        }
    }
    let protocol = match f.protocol.as_deref() {
        Some(p) => protocol(p).unwrap_or_else(|| {
            sink.error(
                "otel.protocol",
                format!(
                    "{p:?} is not a protocol; write grpc or http (OTLP over HTTP with protobuf)"
                ),
            );
            d.protocol
        }),
        None => (OTLP_PROTOCOL_VARS.iter().find_map(|v| env(v)))
            .and_then(|p| protocol(&p))
            .unwrap_or(d.protocol),
    };
    let mut headers = BTreeMap::new();
    for (k, v) in f.headers.unwrap_or_default() {
        let field = format!("otel.headers.{k}");
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            sink.error(&field, format!("{k:?} is not an HTTP header name"));
            continue;
        }
        if let Some(v) = sink.expand(&field, &v, "otel.headers") {
            if http::HeaderValue::from_str(&v).is_err() {
                sink.error(
                    &field,
                    "the value has characters not allowed in a header (a newline?)",
                );
                continue;
            }
            headers.insert(k.to_ascii_lowercase(), v);
        }
    }
    let queue_runs = f.queue_runs.unwrap_or(d.queue_runs);
    if queue_runs < 100 {
        sink.error(
            "otel.queue_runs",
            format!("{queue_runs} is too few; at least 100 (default {}: runs waiting for the receiver, each ~2 KB)", d.queue_runs),
        );
    }
    let traces = f.traces.unwrap_or(true) && (endpoint.is_some() || from_env);
    OtelSettings {
        endpoint,
        protocol,
        headers,
        traces,
        queue_runs,
    }
}

/// `grpc`, or `http` (also spelled as the specification's variable does, `http/protobuf`).
fn protocol(p: &str) -> Option<OtlpProtocol> {
    match p {
        "grpc" => Some(OtlpProtocol::Grpc),
        "http" | "http/protobuf" => Some(OtlpProtocol::Http),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(s.otel, OtelSettings::default());
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
                "otel:\n  endpoint: http://c:4318\n  headers: {\"a b\": x}\n",
                "not an HTTP header name",
            ),
        ] {
            let e = resolve(yaml).unwrap_err();
            assert!(e.contains("otel.") && e.contains(words), "{yaml}: {e}");
        }
    }
}
