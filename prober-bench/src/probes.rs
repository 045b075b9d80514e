//! The bench's probes, built by prober's real loader from generated YAML.

use std::net::SocketAddr;
use std::time::Duration;

use prober::config::load::{load_text, LoadReport};
use prober::config::Probe;

/// Probes per generated YAML text: loading a list cost O(items²) once
/// (`yaml::Document::sub` re-rooted the whole position index for every item),
/// so 10,000 probes in one text took minutes; chunks keep it linear either way.
pub const PROBES_PER_TEXT: usize = 250;

/// A duration as the probe format writes it (`1s`, `1500ms`).
pub fn yaml_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `n` probes `bench-00001…` of `http://<target>/`, every `every`, each with `timeout`.
pub fn build_probes(
    n: usize,
    every: Duration,
    timeout: Duration,
    target: SocketAddr,
) -> Result<Vec<Probe>, String> {
    build_probes_of(n, every, timeout, &format!("http://{target}/"))
}

/// `n` probes `bench-00001…` of `url`, every `every`, each with `timeout`.
pub fn build_probes_of(
    n: usize,
    every: Duration,
    timeout: Duration,
    url: &str,
) -> Result<Vec<Probe>, String> {
    build_probes_with(n, every, timeout, url, &[])
}

/// Like [`build_probes_of`], each probe's `http:` mapping with `http_lines`
/// besides `url:` (`version: "2"`, `keep_alive: true`, …).
pub fn build_probes_with(
    n: usize,
    every: Duration,
    timeout: Duration,
    url: &str,
    http_lines: &[String],
) -> Result<Vec<Probe>, String> {
    let extra: String = (http_lines.iter()).map(|l| format!("    {l}\n")).collect();
    let mut report = LoadReport::default();
    let mut first = 1;
    while first <= n {
        let last = (first + PROBES_PER_TEXT - 1).min(n);
        let mut yaml = String::with_capacity(PROBES_PER_TEXT * (100 + extra.len()));
        for i in first..=last {
            yaml.push_str(&format!(
                "- name: bench-{i:05}\n  every: {}\n  timeout: {}\n  http:\n    url: {url}\n{extra}",
                yaml_duration(every),
                yaml_duration(timeout)
            ));
        }
        load_text(std::path::Path::new("<bench>"), &yaml, &mut report);
        first = last + 1;
    }
    if !report.is_ok() {
        let errors: Vec<String> = report.errors().take(5).map(ToString::to_string).collect();
        return Err(format!(
            "the generated probes do not load:\n{}",
            errors.join("\n")
        ));
    }
    if report.probes.len() != n {
        return Err(format!(
            "built {} probes instead of {n}",
            report.probes.len()
        ));
    }
    Ok(report.probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_the_probe_format_accepts() {
        assert_eq!(yaml_duration(Duration::from_secs(10)), "10s");
        assert_eq!(yaml_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn the_generated_probes_load() {
        let target = SocketAddr::from(([127, 0, 0, 1], 8080));
        let every = Duration::from_secs(1);
        let timeout = Duration::from_millis(500);
        let probes = build_probes(3, every, timeout, target).unwrap();
        assert_eq!(probes.len(), 3);
        assert_eq!(probes[2].name, "bench-00003");
        let many = build_probes(PROBES_PER_TEXT + 2, every, timeout, target).unwrap();
        assert_eq!(many.len(), PROBES_PER_TEXT + 2);
        assert_eq!(
            many[PROBES_PER_TEXT].name,
            format!("bench-{:05}", PROBES_PER_TEXT + 1)
        );
    }

    #[test]
    fn probes_with_extra_http_lines_load_with_them() {
        let lines = [
            "version: \"2\"".to_string(),
            "keep_alive: true".to_string(),
            "tls_verify: false".to_string(),
        ];
        let every = Duration::from_secs(1);
        let probes =
            build_probes_with(2, every, every / 2, "https://127.0.0.1:8443/", &lines).unwrap();
        assert_eq!(probes.len(), 2);
        let requests = probes[1].http_requests();
        let req = requests[0].1;
        assert!(req.keep_alive && !req.tls_verify);
        assert_eq!(req.version, prober::config::probe::HttpVersion::Http2);
    }
}
