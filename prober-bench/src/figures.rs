//! The figures of one measurement as `--json` prints them (what a
//! `--side-by-side` parent reads from each child).

use serde::{Deserialize, Serialize};

use crate::procfs::peak_rss_kib;
use crate::single::Inputs;

/// The figures of one `prober-bench` run, as `--json` prints them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    pub probes: usize,
    pub rate: f64,
    pub window_s: f64,
    pub finished_per_s: f64,
    pub written_per_s: f64,
    /// Process CPU minus the target thread's, per run finished, µs.
    pub cpu_us_per_probe: Option<f64>,
    pub pg_cpu_us_per_probe: Option<f64>,
    /// Every Postgres process's CPU (exited backends, WAL writer, checkpointer), per run, µs.
    #[serde(default)]
    pub pg_cluster_cpu_us_per_probe: Option<f64>,
    pub machine_busy_pct: Option<f64>,
    /// CPU time stolen by the hypervisor, percent of the machine's (`/proc/stat`).
    #[serde(default)]
    pub machine_steal_pct: Option<f64>,
    /// Start lateness p50, p99, max, µs (from `runs`).
    pub lateness_us: [Option<i32>; 3],
    pub skipped: u64,
    /// Recorded total latency p50, p99, µs (from `runs`).
    pub total_us: [Option<i32>; 2],
    /// The target's actual answer delay p50, p99, µs, over the window.
    pub target_delay_us: [Option<u64>; 2],
    pub runs_stored: i64,
    pub runs_expected: f64,
    pub failed: i64,
    pub peak_rss_kib: Option<u64>,
    /// `VmRSS` at the end of the window (the peak may be the loading of the probes).
    #[serde(default)]
    pub rss_at_end_kib: Option<u64>,
    /// Results waiting in the queue at the end of the window.
    pub queued_at_end: u64,
    pub in_flight_at_end: u64,
    /// After shutdown: finished = written = rows, nothing dropped.
    pub all_persisted: bool,
}

impl Figures {
    /// The figures of a finished measurement.
    pub fn from_inputs(i: &Inputs<'_>) -> Figures {
        let (s0, s1) = (i.s0, i.s1);
        let secs = i.secs();
        let finished = i.delta(|s| s.finished);
        let per_run = |us: u64| (finished > 0).then(|| us as f64 / finished as f64);
        let (process, target) = i.cpu_us();
        let mut delays = s1.delays.clone();
        let delays_ok = delays.subtract(&s0.delays).is_ok() && !delays.is_empty();
        Figures {
            probes: i.args.probes,
            rate: i.rate,
            window_s: secs,
            finished_per_s: finished as f64 / secs,
            written_per_s: i.delta(|s| s.written) as f64 / secs,
            cpu_us_per_probe: process
                .zip(target)
                .and_then(|(p, t)| per_run(p.saturating_sub(t))),
            pg_cpu_us_per_probe: i.pg.and_then(|(us, _, _)| per_run(us)),
            pg_cluster_cpu_us_per_probe: i.pg_cluster_us.and_then(per_run),
            machine_busy_pct: i.machine_busy_pct(),
            machine_steal_pct: i.machine_steal_pct(),
            lateness_us: i.stored.lateness,
            skipped: i.delta(|s| s.skipped),
            total_us: i.stored.total,
            target_delay_us: if delays_ok {
                [
                    Some(delays.value_at_quantile(0.5)),
                    Some(delays.value_at_quantile(0.99)),
                ]
            } else {
                [None, None]
            },
            runs_stored: i.stored.runs,
            runs_expected: i.rate * secs,
            failed: i.stored.failed,
            peak_rss_kib: peak_rss_kib(),
            rss_at_end_kib: s1.rss_kib,
            queued_at_end: s1.queued,
            in_flight_at_end: s1.started.saturating_sub(s1.finished),
            all_persisted: i.totals.all_persisted(i.stored.all_rows),
        }
    }
}
