//! The reload families: reloads by result, problems of the last attempt,
//! and when the probe files last loaded.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::encode::{counter_with, gauge, unix_seconds};
use crate::telemetry::reload::ReloadStatus;

/// Reads the reload status on each scrape.
#[derive(Debug)]
pub struct ReloadCollector(pub Arc<ReloadStatus>);

impl Collector for ReloadCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let reload = self.0.get();
        let mut m = enc.encode_descriptor(
            "prober_reloads",
            "Reloads of the probe files, by result (a refused reload changes nothing).",
            None,
            MetricType::Counter,
        )?;
        counter_with(&mut m, &[("result", "success")], reload.succeeded_total)?;
        counter_with(&mut m, &[("result", "failure")], reload.failed_total)?;
        gauge(
            &mut enc,
            "prober_reload_errors",
            "Problems found by the last reload attempt (0 when it applied).",
            None,
            reload.errors.len() as u64,
        )?;
        if let Some(at) = reload.last_success_at {
            gauge(
                &mut enc,
                "prober_config_last_reload_success_timestamp",
                "When the probe files were last loaded successfully (start or reload), as a Unix time.",
                Some(&Unit::Seconds),
                unix_seconds(at),
            )?;
        }
        Ok(())
    }
}
