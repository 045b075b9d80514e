//! The trend analysis' family: passes, findings by kind and state, the last
//! pass's duration.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::encode::{counter_with, gauge, gauge_with, micros_to_seconds};
use crate::analysis::AnalysisStats;

/// Reads the analysis' counters on each scrape.
#[derive(Debug)]
pub struct TrendCollector(pub Arc<AnalysisStats>);

impl Collector for TrendCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &self.0;
        let mut m = enc.encode_descriptor(
            "prober_trend_passes",
            "Trend analysis passes by outcome (failed: the store could not be read; the next pass retries).",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [("ok", &s.passes), ("failed", &s.failed_passes)] {
            counter_with(&mut m, &[("outcome", outcome)], n.load(Ordering::Relaxed))?;
        }
        let mut m = enc.encode_descriptor(
            "prober_trend_findings",
            "Stored trend findings by kind (step, drift) and state (open, acknowledged, ended), as of the last pass.",
            None,
            MetricType::Gauge,
        )?;
        for (kind, state, n) in s.findings.lock().iter() {
            gauge_with(
                &mut m,
                &[("kind", kind.as_str()), ("state", state.as_str())],
                *n,
            )?;
        }
        gauge(
            &mut enc,
            "prober_trend_analysis_seconds",
            "How long the last trend analysis pass took.",
            None,
            micros_to_seconds(s.last_pass_us.load(Ordering::Relaxed)),
        )?;
        gauge(
            &mut enc,
            "prober_trend_subjects",
            "Probe and location pairs the last pass analysed.",
            None,
            s.subjects.load(Ordering::Relaxed) as i64,
        )
    }
}
