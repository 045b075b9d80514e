//! The probe kinds other than HTTP (tcp, dns, tls, grpc, icmp, websocket) and retries: their
//! validated types and validation.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use regex::Regex;

use super::diag::Ctx;
use super::probe::{parse_duration, regex};
use super::raw::{RawDns, RawGrpc, RawIcmp, RawRetry, RawTcp, RawTls, RawWebSocket};
use crate::run::ErrorClass;

/// DNS record types a `dns` probe may ask for.
pub const DNS_TYPES: [&str; 10] = [
    "A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "PTR", "CAA",
];
/// DNS response codes a `dns` probe may expect.
pub const DNS_RCODES: [&str; 6] = [
    "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP",
];
/// Most attempts a retry may make.
pub const MAX_ATTEMPTS: u32 = 10;
/// Wait between attempts when `retry.delay` is not set.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Error classes retried when `retry.on` is not set: the transient ones.
pub const DEFAULT_RETRY_ON: [ErrorClass; 5] = [
    ErrorClass::Connect,
    ErrorClass::Timeout,
    ErrorClass::Dns,
    ErrorClass::Tls,
    ErrorClass::InvalidResponse,
];

#[derive(Debug, Clone)]
pub struct TcpCheck {
    pub host: String,
    pub port: u16,
    pub send: Option<String>,
    pub expect: Option<Regex>,
}

/// The longest `websocket.send`.
pub const MAX_WS_SEND_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct WebSocketCheck {
    pub url: url::Url,
    pub send: Option<String>,
    pub expect: Option<Regex>,
    pub tls_verify: bool,
}

pub fn validate_websocket(raw: &RawWebSocket, ctx: &mut Ctx<'_>) -> Option<WebSocketCheck> {
    let before = ctx.error_count();
    let url = match url::Url::parse(&raw.url) {
        Ok(u) if matches!(u.scheme(), "ws" | "wss") && u.host().is_some() => Some(u),
        Ok(u) => {
            ctx.error(
                "websocket.url",
                format!(
                    "{:?} is not a ws:// or wss:// URL with a host (scheme {:?})",
                    raw.url,
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            ctx.error(
                "websocket.url",
                format!("{:?} is not a valid URL ({e})", raw.url),
            );
            None
        }
    };
    if raw
        .send
        .as_ref()
        .is_some_and(|m| m.len() > MAX_WS_SEND_BYTES)
    {
        ctx.error(
            "websocket.send",
            format!("over {MAX_WS_SEND_BYTES} bytes; a probe's message should be small"),
        );
    }
    let expect = (raw.expect.as_ref()).and_then(|r| regex(ctx, "websocket.expect", r));
    if ctx.error_count() > before {
        return None;
    }
    Some(WebSocketCheck {
        url: url?,
        send: raw.send.clone(),
        expect,
        tls_verify: raw.tls_verify.unwrap_or(true),
    })
}

/// The most echo requests one `icmp` run sends.
pub const MAX_ICMP_COUNT: u32 = 100;
/// The shortest `icmp.interval`: a probe measures, it must not flood its target.
pub const MIN_ICMP_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct IcmpCheck {
    pub host: String,
    pub count: u32,
    pub interval: Duration,
    pub wait: Duration,
    pub ip_version: super::probe::IpVersion,
    pub max_loss_percent: u8,
}

impl IcmpCheck {
    /// How long a run takes at most: every request sent, then the wait for the last reply.
    pub fn span(&self) -> Duration {
        self.interval * (self.count - 1) + self.wait
    }
}

#[derive(Debug, Clone)]
pub struct DnsCheck {
    pub name: String,
    /// Upper case, one of [`DNS_TYPES`].
    pub record_type: String,
    /// `None`: the first nameserver of the system's resolver configuration.
    pub server: Option<SocketAddr>,
    pub tcp: bool,
    /// Upper case, one of [`DNS_RCODES`].
    pub rcode: String,
    pub answers: Vec<String>,
    pub min_answers: u32,
}

#[derive(Debug, Clone)]
pub struct TlsCheck {
    pub host: String,
    pub port: u16,
    pub server_name: String,
    pub verify: bool,
    pub cert_valid_days: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct GrpcCheck {
    pub host: String,
    pub port: u16,
    pub service: String,
    pub tls: bool,
    pub tls_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub delay: Duration,
    pub on: Vec<ErrorClass>,
}

fn host(ctx: &mut Ctx<'_>, field: &str, host: &str) -> bool {
    let ok = !host.is_empty() && !host.contains(['/', ' ', ':']) || host.parse::<IpAddr>().is_ok();
    if !ok {
        ctx.error(
            field,
            format!("{host:?} is not a host name or IP address (no scheme, path or port here)"),
        );
    }
    ok
}

pub fn validate_tcp(raw: &RawTcp, ctx: &mut Ctx<'_>) -> Option<TcpCheck> {
    let before = ctx.error_count();
    host(ctx, "tcp.host", &raw.host);
    if raw.port == 0 {
        ctx.error(
            "tcp.port",
            "port 0 cannot be connected to; give the service's port",
        );
    }
    let expect = raw
        .expect
        .as_ref()
        .and_then(|r| regex(ctx, "tcp.expect", r));
    (ctx.error_count() == before).then(|| TcpCheck {
        host: raw.host.clone(),
        port: raw.port,
        send: raw.send.clone(),
        expect,
    })
}

pub fn validate_icmp(
    raw: &RawIcmp,
    timeout: Option<Duration>,
    ctx: &mut Ctx<'_>,
) -> Option<IcmpCheck> {
    use super::probe::IpVersion;
    let before = ctx.error_count();
    host(ctx, "icmp.host", &raw.host);
    let count = raw.count.unwrap_or(3);
    if count == 0 || count > MAX_ICMP_COUNT {
        ctx.error(
            "icmp.count",
            format!("{count} requests: give 1 to {MAX_ICMP_COUNT}"),
        );
    }
    let interval = match &raw.interval {
        Some(t) => parse_duration(ctx, "icmp.interval", t),
        None => Some(Duration::from_millis(200)),
    };
    if interval.is_some_and(|i| i < MIN_ICMP_INTERVAL) {
        ctx.error(
            "icmp.interval",
            "at least 10ms between requests; a probe must not flood its target",
        );
    }
    let wait = match &raw.wait {
        Some(t) => parse_duration(ctx, "icmp.wait", t),
        None => Some(Duration::from_secs(1)),
    };
    let ip_version = (raw.ip_version.as_ref())
        .and_then(|v| super::probe::one_of(ctx, "icmp.ip_version", v, &IpVersion::WRITTEN))
        .unwrap_or_default();
    let max_loss_percent = raw.max_loss_percent.unwrap_or(99);
    if max_loss_percent > 100 {
        ctx.error("icmp.max_loss_percent", "a share of 0 to 100 percent");
    }
    if ctx.error_count() > before {
        return None;
    }
    let check = IcmpCheck {
        host: raw.host.clone(),
        count,
        interval: interval?,
        wait: wait?,
        ip_version,
        max_loss_percent,
    };
    if let Some(t) = timeout.filter(|t| *t <= check.span()) {
        ctx.error(
            "icmp",
            format!(
                "{count} requests {} apart and a {} wait take {}, longer than the timeout of {}; raise `timeout` or send fewer",
                humantime::format_duration(check.interval),
                humantime::format_duration(check.wait),
                humantime::format_duration(check.span()),
                humantime::format_duration(t)
            ),
        );
        return None;
    }
    Some(check)
}

pub fn validate_dns(raw: &RawDns, ctx: &mut Ctx<'_>) -> Option<DnsCheck> {
    let before = ctx.error_count();
    if raw.name.trim().is_empty() || raw.name.contains(' ') {
        ctx.error("dns.name", format!("{:?} is not a DNS name", raw.name));
    }
    let record_type = raw
        .record_type
        .as_deref()
        .unwrap_or("A")
        .to_ascii_uppercase();
    if !DNS_TYPES.contains(&record_type.as_str()) {
        ctx.error(
            "dns.type",
            format!(
                "{record_type:?} is not a supported record type; use one of {}",
                DNS_TYPES.join(", ")
            ),
        );
    }
    let server = raw.server.as_ref().and_then(|s| {
        let parsed = s
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
        if parsed.is_none() {
            ctx.error("dns.server", format!("{s:?} is not an IP address or ip:port (e.g. 10.0.0.2 or 127.0.0.1:5353; names are not resolved here)"));
        }
        parsed
    });
    let tcp = match raw
        .protocol
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("udp") => false,
        Some("tcp") => true,
        Some(other) => {
            ctx.error("dns.protocol", format!("{other:?} is not udp or tcp"));
            false
        }
    };
    let rcode = raw
        .rcode
        .as_deref()
        .unwrap_or("NOERROR")
        .to_ascii_uppercase();
    if !DNS_RCODES.contains(&rcode.as_str()) {
        ctx.error(
            "dns.rcode",
            format!(
                "{rcode:?} is not a response code; use one of {}",
                DNS_RCODES.join(", ")
            ),
        );
    }
    let min_answers = raw.min_answers.unwrap_or(u32::from(rcode == "NOERROR"));
    (ctx.error_count() == before).then(|| DnsCheck {
        name: raw.name.clone(),
        record_type,
        server,
        tcp,
        rcode,
        answers: raw.answers.clone(),
        min_answers,
    })
}

pub fn validate_tls(raw: &RawTls, ctx: &mut Ctx<'_>) -> Option<TlsCheck> {
    let before = ctx.error_count();
    host(ctx, "tls.host", &raw.host);
    let port = raw.port.unwrap_or(443);
    if port == 0 {
        ctx.error("tls.port", "port 0 cannot be connected to");
    }
    let server_name = raw.server_name.clone().unwrap_or_else(|| raw.host.clone());
    if rustls::pki_types::ServerName::try_from(server_name.clone()).is_err() {
        ctx.error(
            "tls.server_name",
            format!("{server_name:?} is not a valid TLS server name"),
        );
    }
    (ctx.error_count() == before).then(|| TlsCheck {
        host: raw.host.clone(),
        port,
        server_name,
        verify: raw.verify.unwrap_or(true),
        cert_valid_days: raw.cert_valid_days,
    })
}

pub fn validate_grpc(raw: &RawGrpc, ctx: &mut Ctx<'_>) -> Option<GrpcCheck> {
    let parsed = raw.target.rsplit_once(':').and_then(|(h, p)| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        Some((h.to_string(), p.parse::<u16>().ok().filter(|p| *p > 0)?))
    });
    let Some((host, port)) = parsed.filter(|(h, _)| !h.is_empty() && !h.contains('/')) else {
        ctx.error(
            "grpc.target",
            format!(
                "{:?} is not host:port (e.g. orders.internal:50051; no scheme)",
                raw.target
            ),
        );
        return None;
    };
    Some(GrpcCheck {
        host,
        port,
        service: raw.service.clone().unwrap_or_default(),
        tls: raw.tls.unwrap_or(false),
        tls_verify: raw.tls_verify.unwrap_or(true),
    })
}

pub fn validate_retry(raw: &RawRetry, ctx: &mut Ctx<'_>) -> Option<Retry> {
    let before = ctx.error_count();
    if !(2..=MAX_ATTEMPTS).contains(&raw.attempts) {
        ctx.error(
            "retry.attempts",
            format!(
                "attempts {} must be 2 to {MAX_ATTEMPTS} (the first attempt included)",
                raw.attempts
            ),
        );
    }
    let delay = match &raw.delay {
        Some(d) => parse_duration(ctx, "retry.delay", d),
        None => Some(DEFAULT_RETRY_DELAY),
    };
    let mut on = Vec::new();
    for (i, c) in raw.on.iter().enumerate() {
        match serde_json::from_value::<ErrorClass>(serde_json::Value::String(c.clone())) {
            Ok(class) => on.push(class),
            Err(_) => ctx.error(
                &format!("retry.on[{i}]"),
                format!("{c:?} is not an error class; use dns, connect, tls, timeout, http_status, assertion, body_too_large, redirect_limit, invalid_response, config"),
            ),
        }
    }
    if on.is_empty() {
        on = DEFAULT_RETRY_ON.to_vec();
    }
    if ctx.error_count() > before {
        return None;
    }
    Some(Retry {
        attempts: raw.attempts,
        delay: delay?,
        on,
    })
}

/// A probe's alerting overrides; unset fields take the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AlertOverrides {
    pub enabled: Option<bool>,
    pub failures_to_fire: Option<u32>,
    pub successes_to_resolve: Option<u32>,
    pub severity: Option<super::policy::Severity>,
    pub latency: Option<super::policy::LatencyRule>,
    pub slo: Option<super::policy::SloRule>,
    pub cert_expiry_days: Option<u32>,
    pub min_locations: Option<u32>,
    pub trend_severity: Option<super::policy::Severity>,
}

impl AlertOverrides {
    /// The policy for this probe: the overrides over `default`.
    pub fn apply(&self, default: super::policy::Policy) -> super::policy::Policy {
        super::policy::Policy {
            enabled: self.enabled.unwrap_or(default.enabled),
            failures_to_fire: self.failures_to_fire.unwrap_or(default.failures_to_fire),
            successes_to_resolve: self
                .successes_to_resolve
                .unwrap_or(default.successes_to_resolve),
            severity: self.severity.unwrap_or(default.severity),
            latency: self.latency.or(default.latency),
            slo: self.slo.or(default.slo),
            cert_expiry_days: self.cert_expiry_days.unwrap_or(default.cert_expiry_days),
            min_locations: self.min_locations.unwrap_or(default.min_locations),
            trend_severity: self.trend_severity.unwrap_or(default.trend_severity),
        }
    }
}

/// Default window of a latency rule.
pub const DEFAULT_LATENCY_WINDOW: Duration = Duration::from_secs(300);

/// Reads an `alert:` block (of a probe, or of `alerting.by_label` in the
/// settings); returns the overrides and each problem as (field, message).
pub fn alert_overrides(raw: &super::raw::RawAlert) -> (AlertOverrides, Vec<(String, String)>) {
    let mut problems: Vec<(String, String)> = Vec::new();
    for (field, v) in [
        ("alert.failures_to_fire", raw.failures_to_fire),
        ("alert.successes_to_resolve", raw.successes_to_resolve),
        ("alert.min_locations", raw.min_locations),
    ] {
        if v == Some(0) {
            problems.push((field.into(), "must be at least 1".into()));
        }
    }
    let severity = severity_at(&mut problems, "alert.severity", raw.severity.as_deref());
    let trend_severity = severity_at(
        &mut problems,
        "alert.trend_severity",
        raw.trend_severity.as_deref(),
    );
    let latency_severity = raw.latency.as_ref().and_then(|l| {
        severity_at(
            &mut problems,
            "alert.latency.severity",
            l.severity.as_deref(),
        )
    });
    let latency = raw.latency.as_ref().and_then(|l| {
        let above = duration_at(&mut problems, "alert.latency.above", &l.above);
        let over = match &l.over {
            Some(t) => duration_at(&mut problems, "alert.latency.over", t),
            None => Some(DEFAULT_LATENCY_WINDOW),
        };
        let mut ok = true;
        if !(l.quantile > 0.0 && l.quantile < 1.0) {
            problems.push((
                "alert.latency.quantile".into(),
                format!("{} is not a quantile; write a number between 0 and 1, like 0.95 or 0.99", l.quantile),
            ));
            ok = false;
        }
        if let Some(o) = over {
            if o.as_secs() % 60 != 0 || o.subsec_nanos() != 0 || o > Duration::from_secs(86_400) {
                problems.push((
                    "alert.latency.over".into(),
                    "must be whole minutes up to 24h (the histograms are kept per minute), like 5m or 1h".into(),
                ));
                ok = false;
            }
        }
        Some(super::policy::LatencyRule {
            quantile: l.quantile,
            above: above?,
            over: over?,
            severity: latency_severity.unwrap_or(super::policy::Severity::Ticket),
        })
        .filter(|_| ok)
    });
    let slo = raw.slo.as_ref().and_then(|s| {
        if !(s.objective > 0.0 && s.objective < 100.0) {
            problems.push((
                "alert.slo.objective".into(),
                format!("{} is not an objective; write the percent of runs that must succeed, between 0 and 100, like 99.9", s.objective),
            ));
            return None;
        }
        if s.min_failures == Some(0) {
            problems.push(("alert.slo.min_failures".into(), "must be at least 1".into()));
            return None;
        }
        Some(super::policy::SloRule {
            objective: s.objective / 100.0,
            min_failures: s
                .min_failures
                .unwrap_or(super::policy::DEFAULT_SLO_MIN_FAILURES),
        })
    });
    (
        AlertOverrides {
            enabled: raw.enabled,
            failures_to_fire: raw.failures_to_fire,
            successes_to_resolve: raw.successes_to_resolve,
            severity,
            latency,
            slo,
            cert_expiry_days: raw.cert_expiry_days,
            min_locations: raw.min_locations,
            trend_severity,
        },
        problems,
    )
}

fn severity_at(
    problems: &mut Vec<(String, String)>,
    field: &str,
    s: Option<&str>,
) -> Option<super::policy::Severity> {
    let s = s?;
    let parsed = parse_severity(s);
    if parsed.is_none() {
        problems.push((
            field.into(),
            format!("{s:?} is not a severity; use page or ticket"),
        ));
    }
    parsed
}

fn duration_at(problems: &mut Vec<(String, String)>, field: &str, text: &str) -> Option<Duration> {
    let d = super::probe::is_duration_syntax(text)
        .then(|| humantime::parse_duration(text).ok())
        .flatten()
        .filter(|d| !d.is_zero());
    if d.is_none() {
        problems.push((
            field.into(),
            format!("{text:?} is not a duration; write a number and a unit (ms, s, m, h), like 800ms or 10m"),
        ));
    }
    d
}

/// Parses a severity name.
pub fn parse_severity(s: &str) -> Option<super::policy::Severity> {
    match s {
        "page" => Some(super::policy::Severity::Page),
        "ticket" => Some(super::policy::Severity::Ticket),
        _ => None,
    }
}

pub fn validate_alert(raw: &super::raw::RawAlert, ctx: &mut Ctx<'_>) -> AlertOverrides {
    let (overrides, problems) = alert_overrides(raw);
    for (field, message) in problems {
        ctx.error(&field, message);
    }
    overrides
}
