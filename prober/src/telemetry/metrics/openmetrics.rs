//! `/metrics` in OpenMetrics 1.0 (`application/openmetrics-text`), served
//! when the scraper asks for it (Prometheus does by default), so the duration
//! histograms can carry exemplars: the trace id of a recent run, which Grafana
//! shows as a link from a latency spike to the trace.
//!
//! Every family is prometheus-client's OpenMetrics encoding but one: the
//! duration histograms, written here, because prometheus-client 0.26 builds
//! an `Exemplar` only inside its own `HistogramWithExemplars`, which would
//! count every run a second time (the page's histograms are read from the
//! live state at scrape time). This file writes that one family's lines
//! (`# TYPE`, `# UNIT`, `# HELP`, buckets with their exemplar, `_count`,
//! `_sum`); the page's `# EOF` is prometheus-client's.

use std::fmt;

use axum::http::HeaderMap;

use super::encode::micros_to_seconds;
use super::probes::Exemplar;
use crate::results::{MetricHist, METRIC_BUCKETS_US};
use crate::run::{span_id, trace_id};

/// The content type of the OpenMetrics page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which page a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4: no exemplars.
    Text,
    /// OpenMetrics 1.0, with exemplars.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `Accept` names it with a weight at least that of
    /// the 0.0.4 text (Prometheus sends `application/openmetrics-text;
    /// version=1.0.0,…,text/plain;version=0.0.4;q=0.5,…`); the text format
    /// otherwise, and for a client that sends no `Accept`.
    pub fn negotiate(headers: &HeaderMap) -> Format {
        let (mut open, mut text) = (0.0_f32, 0.0_f32);
        let accept = headers.get_all(axum::http::header::ACCEPT);
        for item in (accept.iter())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => open = open.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open > 0.0 && open >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// One family written by hand: its name with the unit appended, as OpenMetrics wants.
pub struct Family {
    name: String,
}

impl Family {
    pub fn new(name: &str, unit: &str) -> Family {
        Family {
            name: format!("{name}_{unit}"),
        }
    }

    /// `# TYPE`, `# UNIT` and `# HELP` (escaped: `\\`, `\n`, `\"`).
    pub fn header(&self, out: &mut impl fmt::Write, kind: &str, help: &str) -> fmt::Result {
        let unit = self.name.rsplit('_').next().unwrap_or("");
        writeln!(out, "# TYPE {} {kind}", self.name)?;
        writeln!(out, "# UNIT {} {unit}", self.name)?;
        write!(out, "# HELP {} ", self.name)?;
        escaped(out, help)?;
        out.write_char('\n')
    }

    /// One histogram: cumulative buckets (`le` printed as the 0.0.4 page prints
    /// it, so a scraper that changes format keeps its series), `+Inf`, `_count`,
    /// `_sum`; the exemplar on the bucket holding its value.
    pub fn histogram(
        &self,
        out: &mut impl fmt::Write,
        labels: &[(&str, &str)],
        h: &MetricHist,
        exemplar: Option<&Exemplar>,
    ) -> fmt::Result {
        let held_in = exemplar.map(|e| crate::results::metric_bucket(e.total_us));
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = (METRIC_BUCKETS_US.get(i))
                .map_or_else(|| "+Inf".to_string(), |&b| micros_to_seconds(b).to_string());
            self.sample(out, "_bucket", labels, Some(&le))?;
            write!(out, " {cumulative}")?;
            if let (Some(e), true) = (exemplar, held_in == Some(i)) {
                write_exemplar(out, e)?;
            }
            out.write_char('\n')?;
        }
        self.sample(out, "_count", labels, None)?;
        writeln!(out, " {cumulative}")?;
        self.sample(out, "_sum", labels, None)?;
        writeln!(out, " {}", micros_to_seconds(h.sum_us))
    }

    /// A sample's name and labels (values escaped), without its value.
    fn sample(
        &self,
        out: &mut impl fmt::Write,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<&str>,
    ) -> fmt::Result {
        write!(out, "{}{suffix}{{", self.name)?;
        let le = le.map(|v| ("le", v));
        for (i, (k, v)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            write!(out, "{k}=\"")?;
            escaped(out, v)?;
            out.write_char('"')?;
        }
        out.write_char('}')
    }
}

/// ` # {trace_id="…",span_id="…"} value timestamp`: the run's trace id (its
/// run id, as `traceparent` sent it) and its root span, the duration in
/// seconds, the run's start in Unix seconds. 63 characters of label names and
/// values, inside OpenMetrics' 128.
fn write_exemplar(out: &mut impl fmt::Write, e: &Exemplar) -> fmt::Result {
    let us = e.started_at.timestamp_micros();
    write!(
        out,
        " # {{trace_id=\"{}\",span_id=\"{:016x}\"}} {} {}{}.{:06}",
        trace_id(e.run_id),
        span_id(e.run_id, 0, 0, 0),
        micros_to_seconds(e.total_us),
        if us < 0 { "-" } else { "" },
        us.unsigned_abs() / 1_000_000,
        us.unsigned_abs() % 1_000_000,
    )
}

/// A label value or help text with `\`, `"` and newlines escaped.
fn escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accept(v: &str) -> Format {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::ACCEPT,
            HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
        );
        Format::negotiate(&h)
    }

    #[test]
    fn openmetrics_only_when_the_scraper_prefers_it() {
        assert_eq!(Format::negotiate(&HeaderMap::new()), Format::Text);
        // Prometheus 2.x's scrape header.
        assert_eq!(
            accept("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::OpenMetrics
        );
        assert_eq!(accept("application/openmetrics-text"), Format::OpenMetrics);
        assert_eq!(accept("text/plain;version=0.0.4"), Format::Text);
        assert_eq!(accept("*/*"), Format::Text);
        assert_eq!(accept("application/openmetrics-text;q=0"), Format::Text);
        assert_eq!(
            accept("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
            Format::Text
        );
        assert_eq!(accept("application/json"), Format::Text);
    }

    #[test]
    fn a_histogram_carries_its_exemplar_on_the_bucket_holding_it() {
        let mut h = MetricHist::default();
        for us in [800, 3_000, 3_000, 40_000, 20_000_000] {
            h.record(us);
        }
        let run_id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let e = Exemplar {
            run_id,
            total_us: 40_000,
            started_at: chrono::DateTime::from_timestamp_micros(1_733_300_000_250_000)
                .unwrap_or_default(),
        };
        let family = Family::new("x_duration", "seconds");
        let mut out = String::new();
        family
            .header(
                &mut out,
                "histogram",
                "Time \"spent\".\nSecond line \\ end.",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        family
            .histogram(&mut out, &[("probe", "a\"b\\c\nd")], &h, Some(&e))
            .unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# TYPE x_duration_seconds histogram");
        assert_eq!(lines[1], "# UNIT x_duration_seconds seconds");
        assert_eq!(
            lines[2],
            r#"# HELP x_duration_seconds Time \"spent\".\nSecond line \\ end."#
        );
        let labels = r#"probe="a\"b\\c\nd""#;
        assert_eq!(
            lines[3],
            format!("x_duration_seconds_bucket{{{labels},le=\"0.001\"}} 1")
        );
        assert_eq!(
            lines[5],
            format!("x_duration_seconds_bucket{{{labels},le=\"0.005\"}} 3")
        );
        let span = format!("{:016x}", span_id(run_id, 0, 0, 0));
        assert_eq!(
            lines[8],
            format!("x_duration_seconds_bucket{{{labels},le=\"0.05\"}} 4 # {{trace_id=\"0123456789abcdef0123456789abcdef\",span_id=\"{span}\"}} 0.04 1733300000.250000")
        );
        assert_eq!(lines.iter().filter(|l| l.contains(" # {")).count(), 1);
        assert_eq!(
            lines[12],
            format!("x_duration_seconds_bucket{{{labels},le=\"1\"}} 4")
        );
        assert_eq!(
            lines[16],
            format!("x_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 5")
        );
        assert_eq!(lines[17], format!("x_duration_seconds_count{{{labels}}} 5"));
        assert_eq!(
            lines[18],
            format!("x_duration_seconds_sum{{{labels}}} 20.0468")
        );
        assert_eq!(lines.len(), 19);
    }

    #[test]
    fn an_exemplar_before_1970_keeps_its_sign() {
        let e = Exemplar {
            run_id: uuid::Uuid::from_u128(1),
            total_us: 1_500,
            started_at: chrono::DateTime::from_timestamp_micros(-1_500_000).unwrap_or_default(),
        };
        let mut out = String::new();
        write_exemplar(&mut out, &e).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.ends_with("} 0.0015 -1.500000"), "{out}");
    }
}
