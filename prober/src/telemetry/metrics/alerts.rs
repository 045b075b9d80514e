//! The alert engine's families: alerts by state, severity and suppression;
//! runs dropped, evaluations, and whether this replica is the evaluator.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::encode::{counter, gauge, gauge_with};
use crate::alert::engine::AlertEngine;
use crate::alert::{Severity, State};

/// Reads the alert engine on each scrape.
#[derive(Debug)]
pub struct AlertCollector(pub Arc<AlertEngine>);

impl Collector for AlertCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let engine = &self.0;
        let active = engine.active();
        let mut m = enc.encode_descriptor(
            "prober_alerts",
            "Alerts pending or firing now, by state and severity (suppressed: held back by a silence, an upstream or k-of-n).",
            None,
            MetricType::Gauge,
        )?;
        for state in [State::Pending, State::Firing] {
            for severity in [Severity::Page, Severity::Ticket] {
                for suppressed in [false, true] {
                    let n = active
                        .iter()
                        .filter(|a| a.state == state && a.severity == severity)
                        .filter(|a| a.suppressed.is_some() == suppressed)
                        .count();
                    gauge_with(
                        &mut m,
                        &[
                            ("state", state.as_str()),
                            ("severity", severity.as_str()),
                            ("suppressed", if suppressed { "true" } else { "false" }),
                        ],
                        n as u64,
                    )?;
                }
            }
        }
        counter(
            &mut enc,
            "prober_alert_runs_dropped",
            "Runs not evaluated for alerts because the alert engine's queue was full.",
            None,
            engine.dropped.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_alert_evaluations",
            "Periodic alert evaluations (silences, reminders; latency and SLO rules on the evaluator).",
            None,
            engine.evaluations.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "prober_alert_evaluator",
            "Whether this replica holds the evaluator lock and evaluates the all-locations rules (1) or not (0).",
            None,
            u64::from(engine.is_leader()),
        )
    }
}
