//! `otel:` in `prober.yaml`: where the runs go as OTLP traces.

use std::collections::BTreeMap;

use super::file::OtelFile;
use super::sink::Sink;
use super::{MetricsTemporality, OtelSettings, OtlpProtocol};

/// The environment variables of OpenTelemetry's exporter specification that
/// name a trace receiver: either one turns the export on without `otel.endpoint`.
pub const OTLP_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// The variables that name the metrics' receiver, the first set wins.
const METRICS_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// The variables that choose the protocol when only the metrics are sent.
const METRICS_PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
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
    let from_env = OTLP_ENDPOINT_VARS.iter().find_map(|v| Some((*v, env(v)?)));
    // The base address, as OTEL_EXPORTER_OTLP_ENDPOINT is: a `/v1/traces` written out is taken off.
    let endpoint = (f.endpoint.filter(|e| !e.is_empty())).map(|e| {
        e.trim_end_matches('/')
            .trim_end_matches("/v1/traces")
            .trim_end_matches("/v1/metrics")
            .to_string()
    });
    let metrics = f.metrics.unwrap_or(d.metrics);
    // Nothing is exported: the endpoint and the variables are not looked at.
    let off = f.traces == Some(false) && !metrics;
    if let Some(e) = endpoint.as_ref().filter(|_| !off) {
        if let Err(problem) = check_endpoint(e) {
            sink.error("otel.endpoint", problem);
        }
    }
    let traces_off = f.traces == Some(false);
    // The traces' variable, checked when the traces are on (the metrics' below).
    let checked = from_env
        .as_ref()
        .filter(|_| !traces_off && endpoint.is_none());
    if let Some((var, e)) = checked {
        if let Err(problem) = check_endpoint(e) {
            sink.error("otel.endpoint", format!("{var}: {problem}"));
        }
    }
    // One protocol serves both exports: the traces' variables, or the
    // metrics' when only the metrics are sent.
    let protocol_vars = if traces_off {
        METRICS_PROTOCOL_VARS
    } else {
        OTLP_PROTOCOL_VARS
    };
    let env_protocol = (protocol_vars.iter().find_map(|v| Some((*v, env(v)?)))).filter(|_| !off);
    let protocol = protocol_of(sink, f.protocol.as_deref(), env_protocol, d);
    let headers = headers_of(sink, f.headers.unwrap_or_default());
    let queue_runs = f.queue_runs.unwrap_or(d.queue_runs);
    if queue_runs < 100 {
        sink.error(
            "otel.queue_runs",
            format!("{queue_runs} is too few; at least 100 (default {}: runs waiting for the receiver, each ~2 KB)", d.queue_runs),
        );
    }
    let receiver = endpoint.is_some() || from_env.is_some();
    let traces = f.traces.unwrap_or(true) && receiver;
    let self_traces = f.self_traces.unwrap_or(d.self_traces);
    if self_traces && !receiver {
        sink.error(
            "otel.self_traces",
            "needs a receiver: set otel.endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)",
        );
    }
    let sample_ratio = f.sample_ratio.unwrap_or(d.sample_ratio);
    if !(0.0..=1.0).contains(&sample_ratio) {
        sink.error(
            "otel.sample_ratio",
            format!(
                "{sample_ratio} must be between 0 and 1 (1: every trace of the prober's own work)"
            ),
        );
    }
    let metrics_receiver = metrics_receiver_of(
        sink,
        metrics,
        endpoint.is_some(),
        checked.map(|(v, _)| *v),
        env,
    );
    let (metrics_temporality, metrics_interval) = metrics_timing(
        sink,
        (
            f.metrics_temporality.as_deref(),
            f.metrics_interval.as_deref(),
        ),
        d,
        |name: &str| env(name).filter(|_| metrics),
    );
    OtelSettings {
        endpoint,
        protocol,
        headers,
        traces,
        queue_runs,
        self_traces: self_traces && receiver,
        sample_ratio,
        metrics: metrics && metrics_receiver,
        metrics_temporality,
        metrics_interval,
    }
}

/// Whether the metrics have a receiver: otel.endpoint (`has_endpoint`), else
/// the variables the metric exporter reads, checked unless `checked` (the
/// traces' variable, already checked) is the same one.
fn metrics_receiver_of(
    sink: &mut Sink,
    metrics: bool,
    has_endpoint: bool,
    checked: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> bool {
    let metrics_env = METRICS_ENDPOINT_VARS
        .iter()
        .find_map(|v| Some((*v, env(v)?)));
    let receiver = has_endpoint || metrics_env.is_some();
    if metrics && !receiver {
        sink.error(
            "otel.metrics",
            "needs a receiver: set otel.endpoint (or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT)",
        );
    }
    let to_check = metrics_env.filter(|(var, _)| metrics && !has_endpoint && checked != Some(*var));
    if let Some((var, e)) = to_check {
        if let Err(problem) = check_endpoint(&e) {
            sink.error("otel.endpoint", format!("{var}: {problem}"));
        }
    }
    receiver
}

/// The metrics' temporality and interval: `otel.metrics_temporality` (or
/// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`) and
/// `otel.metrics_interval` (or `OTEL_METRIC_EXPORT_INTERVAL`, milliseconds).
fn metrics_timing(
    sink: &mut Sink,
    (temporality_text, interval_text): (Option<&str>, Option<&str>),
    d: &OtelSettings,
    env: impl Fn(&str) -> Option<String>,
) -> (MetricsTemporality, std::time::Duration) {
    let temporality = match temporality_text {
        Some(t) => temporality(t).unwrap_or_else(|| {
            sink.error(
                "otel.metrics_temporality",
                format!("{t:?} is not a temporality; write cumulative or delta"),
            );
            d.metrics_temporality
        }),
        None => match env(TEMPORALITY_VAR) {
            None => d.metrics_temporality,
            Some(t) => temporality(&t).unwrap_or_else(|| {
                sink.warning(
                    "otel.metrics_temporality",
                    format!("{TEMPORALITY_VAR}={t} is not supported (cumulative or delta); using cumulative"),
                );
                d.metrics_temporality
            }),
        },
    };
    let interval = match (interval_text, env(INTERVAL_VAR)) {
        (Some(text), _) => sink.duration("otel.metrics_interval", Some(text), d.metrics_interval),
        (None, Some(ms)) => match ms.trim().parse::<u64>() {
            Ok(ms) if ms >= 1_000 => std::time::Duration::from_millis(ms),
            _ => {
                sink.warning(
                    "otel.metrics_interval",
                    format!(
                        "{INTERVAL_VAR}={ms} is not a number of milliseconds of at least 1000; using {} s",
                        d.metrics_interval.as_secs()
                    ),
                );
                d.metrics_interval
            }
        },
        (None, None) => d.metrics_interval,
    };
    let interval = if interval < std::time::Duration::from_secs(1) {
        sink.error(
            "otel.metrics_interval",
            format!(
                "{} ms is too short; at least 1s (default 60s, as OpenTelemetry's)",
                interval.as_millis()
            ),
        );
        d.metrics_interval
    } else {
        interval
    };
    (temporality, interval)
}

/// The variable of OpenTelemetry's exporter specification that chooses the metrics' temporality.
const TEMPORALITY_VAR: &str = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
/// The variable of the SDK specification that sets the export interval, in milliseconds.
const INTERVAL_VAR: &str = "OTEL_METRIC_EXPORT_INTERVAL";

/// `cumulative` or `delta`, in any case (as the variable is written);
/// `lowmemory` is delta for the two instruments here (a counter and a
/// histogram), as the specification defines it.
fn temporality(t: &str) -> Option<MetricsTemporality> {
    match t.to_ascii_lowercase().as_str() {
        "cumulative" => Some(MetricsTemporality::Cumulative),
        "delta" | "lowmemory" => Some(MetricsTemporality::Delta),
        _ => None,
    }
}

/// The protocol: `otel.protocol`, else the variable's (`from_env`), else the default.
fn protocol_of(
    sink: &mut Sink,
    written: Option<&str>,
    from_env: Option<(&str, String)>,
    d: &OtelSettings,
) -> OtlpProtocol {
    match written {
        Some(p) => protocol(p).unwrap_or_else(|| {
            sink.error(
                "otel.protocol",
                format!(
                    "{p:?} is not a protocol; write grpc or http (OTLP over HTTP with protobuf)"
                ),
            );
            d.protocol
        }),
        None => match from_env {
            None => d.protocol,
            Some((var, p)) => protocol(&p).unwrap_or_else(|| {
                sink.warning(
                    "otel.protocol",
                    format!(
                        "{var}={p} is not supported (grpc or http/protobuf); using http/protobuf"
                    ),
                );
                d.protocol
            }),
        },
    }
}

/// `otel.headers` checked: HTTP header names, values with `${env:NAME}`
/// substituted and nothing a header cannot hold; names in lower case.
fn headers_of(sink: &mut Sink, raw: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    for (k, v) in raw {
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
    headers
}

/// An endpoint the exporter can use: http with a host (no TLS yet).
fn check_endpoint(e: &str) -> Result<(), String> {
    match url::Url::parse(e) {
        Ok(u) if u.scheme() == "http" && u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(u) if u.scheme() == "https" => Err(format!("{e}: https is not supported yet; send to an OpenTelemetry Collector over http beside the prober (e.g. http://127.0.0.1:4318) and let it forward over TLS")),
        _ => Err(format!("{e} is not an http URL with a host; write the receiver's base address, e.g. http://otel-collector:4318 (http) or http://otel-collector:4317 (grpc)")),
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
mod tests;
