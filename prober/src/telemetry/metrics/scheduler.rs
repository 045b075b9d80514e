//! The scheduler's families: start lateness, skipped ticks, runs in flight and
//! finished, and whether the timer thread runs at real-time priority.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::encode::{counter, gauge, histogram};
use crate::schedule::{timer_realtime, SchedulerStats};

/// Reads the scheduler's counters on each scrape.
#[derive(Debug)]
pub struct SchedulerCollector(pub Arc<SchedulerStats>);

impl Collector for SchedulerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = &self.0;
        let m = enc.encode_descriptor(
            "prober_scheduler_lateness",
            "How late runs started after their scheduled tick (waits for the concurrency limits included).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        histogram(m, &stats.lateness())?;
        counter(
            &mut enc,
            "prober_scheduler_skipped_ticks",
            "Ticks skipped because the probe's previous run was still going (or the process stalled).",
            None,
            stats.skipped_ticks.load(Ordering::Relaxed),
        )?;
        if let Some(realtime) = timer_realtime() {
            gauge(
                &mut enc,
                "prober_scheduler_timer_realtime",
                "1 if the timer thread that starts ticks runs at real-time priority (SCHED_FIFO), 0 if it was refused (give CAP_SYS_NICE or RLIMIT_RTPRIO 1); absent until the first tick.",
                None,
                u64::from(realtime),
            )?;
        }
        gauge(
            &mut enc,
            "prober_scheduler_runs_in_flight",
            "Runs started or waiting for a concurrency slot, not yet finished.",
            None,
            stats.in_flight.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "prober_scheduler_runs",
            "Runs finished, all probes together.",
            None,
            stats.runs_finished.load(Ordering::Relaxed),
        )
    }
}
