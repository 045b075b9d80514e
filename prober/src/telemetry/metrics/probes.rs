//! Per-probe families: runs by result, failures by error class, success of
//! the last run, and the per-phase duration histograms.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::encode::{counter_with, gauge_with, histogram_with};
use crate::config::settings::MAX_METRICS_LABEL_VALUE;
use crate::results::{LiveState, MetricHist};
use crate::run::{ErrorClass, PHASES};
use crate::schedule::Scheduler;

/// Reads the probes being scheduled and their live state on each scrape.
pub struct ProbeCollector {
    scheduler: Arc<Scheduler>,
    live: Arc<LiveState>,
    /// `metrics_labels` of the settings: probe labels copied onto every series.
    labels: Vec<String>,
}

impl ProbeCollector {
    pub fn new(scheduler: Arc<Scheduler>, live: Arc<LiveState>, labels: Vec<String>) -> Self {
        ProbeCollector {
            scheduler,
            live,
            labels,
        }
    }
}

impl fmt::Debug for ProbeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeCollector")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// One probe's numbers, copied out under its lock so each probe is consistent
/// across families (runs = histogram count of phase `total`).
struct ProbeSnapshot {
    name: String,
    /// The probe's values of `metrics_labels` ("" where it has none), in that order.
    extra: Vec<(String, String)>,
    runs: u64,
    failures: u64,
    /// Success of the last run; `None` before the first.
    up: Option<bool>,
    phases: [MetricHist; 6],
    failures_by_class: Vec<(ErrorClass, u64)>,
}

impl ProbeSnapshot {
    /// The series' labels: `probe`, then `own`, then the `metrics_labels`.
    fn labels<'a>(&'a self, own: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut l = Vec::with_capacity(1 + own.len() + self.extra.len());
        l.push(("probe", self.name.as_str()));
        l.extend_from_slice(own);
        l.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        l
    }
}

/// A label value cut to [`MAX_METRICS_LABEL_VALUE`] bytes (on a character boundary).
fn bounded(v: &str) -> &str {
    let mut end = v.len().min(MAX_METRICS_LABEL_VALUE);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

impl ProbeCollector {
    fn snapshots(&self) -> Vec<ProbeSnapshot> {
        (self.scheduler.probes().iter())
            .map(|p| {
                let mut snap = ProbeSnapshot {
                    name: p.name.clone(),
                    extra: (self.labels.iter())
                        .map(|l| {
                            let v = p.labels.get(l).map_or("", |v| bounded(v));
                            (l.clone(), v.to_string())
                        })
                        .collect(),
                    runs: 0,
                    failures: 0,
                    up: None,
                    phases: Default::default(),
                    failures_by_class: Vec::new(),
                };
                if let Some(state) = self.live.get(&p.name) {
                    let s = state.lock();
                    snap.runs = s.runs;
                    snap.failures = s.failures;
                    snap.up = s.status.map(|st| st.up);
                    snap.phases = s.phase_totals.as_deref().copied().unwrap_or_default();
                    snap.failures_by_class.clone_from(&s.failures_by_class);
                }
                snap.failures_by_class.sort_by_key(|(c, _)| c.as_str());
                snap
            })
            .collect()
    }
}

impl Collector for ProbeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let probes = self.snapshots();
        let mut m = enc.encode_descriptor(
            "prober_probe_runs",
            "Finished runs of the probe, by result.",
            None,
            MetricType::Counter,
        )?;
        for p in &probes {
            let ok = p.runs.saturating_sub(p.failures);
            counter_with(&mut m, &p.labels(&[("result", "success")]), ok)?;
            counter_with(&mut m, &p.labels(&[("result", "failure")]), p.failures)?;
        }
        if probes.iter().any(|p| !p.failures_by_class.is_empty()) {
            let mut m = enc.encode_descriptor(
                "prober_probe_failures",
                "Failed runs of the probe, by error class (only classes that occurred).",
                None,
                MetricType::Counter,
            )?;
            for p in &probes {
                for (class, n) in &p.failures_by_class {
                    counter_with(&mut m, &p.labels(&[("error_class", class.as_str())]), *n)?;
                }
            }
        }
        if probes.iter().any(|p| p.up.is_some()) {
            let mut m = enc.encode_descriptor(
                "prober_probe_success",
                "Whether the last run of the probe succeeded (1) or failed (0).",
                None,
                MetricType::Gauge,
            )?;
            for p in &probes {
                if let Some(up) = p.up {
                    gauge_with(&mut m, &p.labels(&[]), u64::from(up))?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "prober_probe_duration",
            "Time spent per phase of the probe's runs (phase total: the whole run). \
             A phase a run did not reach is not observed.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for p in &probes {
            for (i, (phase, h)) in PHASES.iter().zip(&p.phases).enumerate() {
                // Phase total always, so every probe has its run count; others once observed.
                if i == 0 || h.count() > 0 {
                    histogram_with(&mut m, &p.labels(&[("phase", *phase)]), h)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_cut_to_the_bound_on_a_character_boundary() {
        assert_eq!(bounded("payments"), "payments");
        let long = "é".repeat(MAX_METRICS_LABEL_VALUE);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_METRICS_LABEL_VALUE && cut.len() >= MAX_METRICS_LABEL_VALUE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
