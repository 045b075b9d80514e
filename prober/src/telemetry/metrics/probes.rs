//! Per-probe families: runs by result, failures by error class, success of
//! the last run, and the per-phase duration histograms.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::encode::{counter_with, gauge_with, histogram_with};
use super::openmetrics;
use crate::config::settings::MAX_METRICS_LABEL_VALUE;
use crate::results::{LiveState, MetricHist, RunSummary};
use crate::run::{ErrorClass, PHASES};
use crate::schedule::Scheduler;

/// The runs an exemplar is chosen among: the slowest counted run that
/// started this long before the scrape (the latest one when none did), so a
/// spike stays on the page for a minute, a usual scrape interval, even when
/// the probe runs every second.
pub const EXEMPLAR_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

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
    /// The run named as the exemplar of phase `total` in OpenMetrics.
    exemplar: Option<Exemplar>,
}

/// A recent run named on the duration histogram (OpenMetrics only): its trace
/// id is its run id, so it is found in `runs` and in the trace backend alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exemplar {
    pub run_id: uuid::Uuid,
    pub total_us: u64,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// The exemplar among `recent` at `now`: see [`EXEMPLAR_WINDOW`]. Only
/// counted runs, the ones the histograms hold.
pub fn choose_exemplar<'a>(
    recent: impl DoubleEndedIterator<Item = &'a RunSummary>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Exemplar> {
    let as_exemplar = |r: &RunSummary| Exemplar {
        run_id: r.run_id,
        total_us: r.total_us,
        started_at: r.scheduled_at + chrono::TimeDelta::microseconds(r.lateness_us),
    };
    let mut scheduled = recent.rev().filter(|r| r.counted).map(as_exemplar);
    let latest = scheduled.next()?;
    let since = now - EXEMPLAR_WINDOW;
    let slowest = (std::iter::once(latest).chain(scheduled))
        .take_while(|e| e.started_at >= since)
        // Ties: the later run (met first, as the runs go newest first).
        .reduce(|a, b| if b.total_us > a.total_us { b } else { a });
    Some(slowest.unwrap_or(latest))
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
pub(crate) fn bounded(v: &str) -> &str {
    let mut end = v.len().min(MAX_METRICS_LABEL_VALUE);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

thread_local! {
    /// The probes' snapshot of the OpenMetrics page being encoded on this
    /// thread (a page is encoded on one blocking thread, start to end), so
    /// its counters and its duration histograms, written apart, are read at
    /// one moment ([`PageSnapshot`]).
    static PAGE: std::cell::RefCell<Option<std::rc::Rc<Vec<ProbeSnapshot>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Holds one snapshot for the OpenMetrics page encoded on this thread until dropped.
pub(super) struct PageSnapshot(());

impl Drop for PageSnapshot {
    fn drop(&mut self) {
        PAGE.with(|p| p.borrow_mut().take());
    }
}

impl ProbeCollector {
    /// Takes the snapshot the OpenMetrics page being encoded on this thread reads.
    pub(super) fn page_snapshot(&self) -> PageSnapshot {
        let snap = std::rc::Rc::new(self.snapshots(true));
        PAGE.with(|p| *p.borrow_mut() = Some(snap));
        PageSnapshot(())
    }

    /// The page's snapshot if one is held ([`PageSnapshot`]), else a new one.
    fn page_or_new(&self, exemplars: bool) -> std::rc::Rc<Vec<ProbeSnapshot>> {
        (PAGE.with(|p| p.borrow().clone()))
            .unwrap_or_else(|| std::rc::Rc::new(self.snapshots(exemplars)))
    }

    /// Every probe's numbers; `exemplars`: each one's chosen too (OpenMetrics only).
    fn snapshots(&self, exemplars: bool) -> Vec<ProbeSnapshot> {
        let now = chrono::Utc::now();
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
                    exemplar: None,
                };
                if let Some(state) = self.live.get(&p.name) {
                    let s = state.lock();
                    snap.runs = s.runs;
                    snap.failures = s.failures;
                    snap.up = s.status.map(|st| st.up);
                    snap.phases = s.phase_totals.as_deref().copied().unwrap_or_default();
                    snap.failures_by_class.clone_from(&s.failures_by_class);
                    if exemplars {
                        snap.exemplar = choose_exemplar(s.recent.iter(), now);
                    }
                }
                snap.failures_by_class.sort_by_key(|(c, _)| c.as_str());
                snap
            })
            .collect()
    }
}

impl Collector for ProbeCollector {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_families(enc, true)
    }
}

/// The probe families but the duration histograms, which the OpenMetrics
/// page writes itself with their exemplars ([`ProbeCollector::write_durations`]).
#[derive(Debug)]
pub(super) struct WithoutDurations(pub std::sync::Arc<ProbeCollector>);

impl Collector for WithoutDurations {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.0.encode_families(enc, false)
    }
}

impl ProbeCollector {
    fn encode_families(
        &self,
        mut enc: DescriptorEncoder,
        durations: bool,
    ) -> Result<(), fmt::Error> {
        let probes = if durations {
            std::rc::Rc::new(self.snapshots(false))
        } else {
            self.page_or_new(true)
        };
        let mut m = enc.encode_descriptor(
            "prober_probe_runs",
            "Finished runs of the probe, by result.",
            None,
            MetricType::Counter,
        )?;
        for p in probes.iter() {
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
            for p in probes.iter() {
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
            for p in probes.iter() {
                if let Some(up) = p.up {
                    gauge_with(&mut m, &p.labels(&[]), u64::from(up))?;
                }
            }
        }
        if !durations {
            return Ok(());
        }
        let mut m = enc.encode_descriptor(
            DURATION_NAME,
            DURATION_HELP,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (p, phase, h) in duration_series(&probes) {
            histogram_with(&mut m, &p.labels(&[("phase", phase)]), h)?;
        }
        Ok(())
    }

    /// The duration family in OpenMetrics, the last run chosen by
    /// [`choose_exemplar`] as the exemplar of each probe's phase `total`.
    pub(super) fn write_durations(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let probes = self.page_or_new(true);
        let family = openmetrics::Family::new(DURATION_NAME, "seconds");
        family.header(out, "histogram", DURATION_HELP)?;
        for (p, phase, h) in duration_series(&probes) {
            let exemplar = p.exemplar.filter(|_| phase == PHASES[0]);
            family.histogram(out, &p.labels(&[("phase", phase)]), h, exemplar.as_ref())?;
        }
        Ok(())
    }
}

/// `prober_probe_duration`, without its unit (the encoders add `_seconds`).
const DURATION_NAME: &str = "prober_probe_duration";
const DURATION_HELP: &str =
    "Time spent per phase of the probe's runs (phase total: the whole run). \
     A phase a run did not reach is not observed.";

/// The duration series: per probe, phase `total` always (so every probe has
/// its run count), the other phases once observed.
fn duration_series(
    probes: &[ProbeSnapshot],
) -> impl Iterator<Item = (&ProbeSnapshot, &'static str, &MetricHist)> {
    probes.iter().flat_map(|p| {
        (PHASES.iter().zip(&p.phases).enumerate())
            .filter(|(i, (_, h))| *i == 0 || h.count() > 0)
            .map(move |(_, (phase, h))| (p, *phase, h))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Trigger;

    fn run(n: u128, started_s: i64, total_ms: u64, trigger: Trigger) -> RunSummary {
        RunSummary {
            run_id: uuid::Uuid::from_u128(n),
            scheduled_at: chrono::DateTime::from_timestamp(started_s, 0).unwrap_or_default(),
            lateness_us: 0,
            success: true,
            error_class: None,
            status_code: Some(200),
            total_us: total_ms * 1000,
            trigger,
            counted: trigger == Trigger::Schedule,
        }
    }

    #[test]
    fn the_exemplar_is_the_slowest_scheduled_run_of_the_last_minute() {
        let now = chrono::DateTime::from_timestamp(1_000, 0).unwrap_or_default();
        let chosen =
            |runs: &[RunSummary]| choose_exemplar(runs.iter(), now).map(|e| e.run_id.as_u128());
        assert_eq!(chosen(&[]), None);
        // A spike 30 s ago outlasts faster runs since.
        let spike = [
            run(1, 900, 900, Trigger::Schedule),
            run(2, 950, 20, Trigger::Schedule),
            run(3, 970, 800, Trigger::Schedule),
            run(4, 990, 30, Trigger::Schedule),
            run(5, 995, 5_000, Trigger::Api),
        ];
        assert_eq!(
            chosen(&spike),
            Some(3),
            "older than a minute or not counted: not chosen"
        );
        // Equal durations: the later run.
        let ties = [
            run(1, 980, 50, Trigger::Schedule),
            run(2, 990, 50, Trigger::Schedule),
        ];
        assert_eq!(chosen(&ties), Some(2));
        // Nothing in the last minute: the latest scheduled run.
        let old = [
            run(1, 100, 900, Trigger::Schedule),
            run(2, 200, 10, Trigger::Schedule),
            run(3, 300, 1, Trigger::Api),
        ];
        assert_eq!(chosen(&old), Some(2));
        let e = choose_exemplar(spike.iter(), now).unwrap_or_else(|| panic!("an exemplar"));
        assert_eq!((e.total_us, e.started_at.timestamp()), (800_000, 970));
    }

    #[test]
    fn label_values_are_cut_to_the_bound_on_a_character_boundary() {
        assert_eq!(bounded("payments"), "payments");
        let long = "é".repeat(MAX_METRICS_LABEL_VALUE);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_METRICS_LABEL_VALUE && cut.len() >= MAX_METRICS_LABEL_VALUE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
