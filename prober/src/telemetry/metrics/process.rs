//! The process's families: probes scheduled, the build, the start time.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::encode::{gauge, unix_seconds};
use crate::schedule::Scheduler;

/// Reads the probe count on each scrape; the build and start time are fixed.
pub struct ProcessCollector {
    pub scheduler: Arc<Scheduler>,
    pub started_at: DateTime<Utc>,
}

impl fmt::Debug for ProcessCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessCollector")
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        gauge(
            &mut enc,
            "prober_probes",
            "Probes being scheduled.",
            None,
            self.scheduler.probes().len() as u64,
        )?;
        let mut m = enc.encode_descriptor(
            "prober_build",
            "The prober build: always 1, the version in a label.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&[("version", crate::VERSION)])?;
        gauge(
            &mut enc,
            "prober_start_time",
            "When the daemon started, as a Unix time.",
            Some(&Unit::Seconds),
            unix_seconds(self.started_at),
        )
    }
}
