//! The notification worker's family: attempts by outcome.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::encode::counter_with;
use crate::notify::worker::NotifyStats;

/// Reads the notification worker's counters on each scrape.
#[derive(Debug)]
pub struct NotifyCollector(pub Arc<NotifyStats>);

impl Collector for NotifyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let ns = &self.0;
        let mut m = enc.encode_descriptor(
            "prober_notifications",
            "Notification attempts by outcome: delivered, retried (will try again), given_up (on-call was not told).",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [
            ("delivered", &ns.delivered),
            ("retried", &ns.retried),
            ("given_up", &ns.given_up),
        ] {
            counter_with(&mut m, &[("outcome", outcome)], n.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}
