//! blackbox_exporter driven through `/probe` at a fixed rate, against the
//! bench's loopback target: its CPU (its own process, from `/proc/<pid>/stat`),
//! its memory, and the latency it reports (`probe_duration_seconds`).
//!
//! The driver is this process (a reqwest client with a keep-alive pool to the
//! exporter, as Prometheus scrapes it); its CPU is not counted. blackbox_exporter
//! opens a new connection to the target for every probe, as prober does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::procfs::{machine_jiffies, pid_peak_rss_kib, pid_ticks, USER_HZ};
use crate::target::{new_histogram, Target};

/// Most /probe requests in flight before the driver skips a tick's request.
const MAX_IN_FLIGHT: u64 = 4096;

/// The module the driver asks for: prober's defaults (GET, any 2xx, 5 s).
const CONFIG: &str = "modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
";

/// Figures of one blackbox_exporter window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BlackboxFigures {
    pub rate: f64,
    pub window_s: f64,
    /// /probe answers received per second (issued inside the window).
    pub probes_per_s: f64,
    /// blackbox_exporter's user+sys CPU over the window per probe answered, µs.
    pub cpu_us_per_probe: Option<f64>,
    pub machine_busy_pct: Option<f64>,
    /// `probe_duration_seconds` p50 / p99, µs.
    pub duration_us: [Option<u64>; 2],
    /// Sum of `probe_http_duration_seconds` phases p50 / p99, µs.
    pub http_phases_us: [Option<u64>; 2],
    /// The target's actual answer delay p50 / p99, µs, over the window.
    pub target_delay_us: [Option<u64>; 2],
    pub failed: u64,
    /// Requests not sent because MAX_IN_FLIGHT were outstanding.
    pub driver_skipped: u64,
    pub peak_rss_kib: Option<u64>,
}

/// A blackbox_exporter process this bench started; killed on drop.
struct Exporter {
    child: Child,
    config: PathBuf,
    port: u16,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

impl Exporter {
    async fn start(bin: &Path) -> Result<Exporter, String> {
        let config =
            std::env::temp_dir().join(format!("prober-bench-blackbox-{}.yml", std::process::id()));
        std::fs::write(&config, CONFIG)
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        // A free port: bind, read it, release it (blackbox_exporter cannot report one).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} ({e}); install it with `apt-get install prometheus-blackbox-exporter` or pass --blackbox-bin",
                    bin.display()
                )
            })?;
        let exporter = Exporter {
            child,
            config,
            port,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = client
                .get(format!("http://127.0.0.1:{port}/-/healthy"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(exporter);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer on 127.0.0.1:{port} within 10 s",
                    bin.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// What the driver collects for the requests issued inside the window.
struct Collected {
    duration: Histogram<u64>,
    phases: Histogram<u64>,
    answered: u64,
    failed: u64,
}

/// The value of an unlabelled sample and the sum of a labelled family's samples.
fn parse_probe(text: &str) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mut duration = None;
    let mut success = None;
    let mut phases: Option<f64> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if name == "probe_duration_seconds" {
            duration = Some(v);
        } else if name == "probe_success" {
            success = Some(v);
        } else if name.starts_with("probe_http_duration_seconds{") {
            phases = Some(phases.unwrap_or(0.0) + v);
        }
    }
    (duration, success, phases)
}

fn quantiles(h: &Histogram<u64>) -> [Option<u64>; 2] {
    if h.is_empty() {
        [None, None]
    } else {
        [
            Some(h.value_at_quantile(0.5)),
            Some(h.value_at_quantile(0.99)),
        ]
    }
}

/// Runs blackbox_exporter at `rate` /probe requests per second against `target`.
pub async fn measure(
    bin: &Path,
    target: &Target,
    rate: f64,
    warm_up: Duration,
    window: Duration,
) -> Result<BlackboxFigures, String> {
    let exporter = Exporter::start(bin).await?;
    let driver = Driver::new(&exporter, target)?;
    let (from, skipped) = driver
        .drive(exporter.pid(), target, rate, warm_up, window)
        .await;
    let to = Mark::take(exporter.pid(), target);
    // Let the window's requests finish before reading what they reported.
    driver.drain().await;
    let peak_rss_kib = pid_peak_rss_kib(exporter.pid());
    drop(exporter);

    let c = driver.collected.lock();
    let elapsed = window.as_secs_f64();
    let answered = c.answered;
    let (cpu0, machine0, delays0) = match from {
        Some(m) => (m.cpu, m.machine, Some(m.delays)),
        None => (None, None, None),
    };
    let mut delays = to.delays;
    let delays_ok = delays0.is_some_and(|d0| delays.subtract(&d0).is_ok());
    Ok(BlackboxFigures {
        rate,
        window_s: elapsed,
        probes_per_s: answered as f64 / elapsed,
        cpu_us_per_probe: cpu0
            .zip(to.cpu)
            .filter(|_| answered > 0)
            .map(|(a, b)| (b.saturating_sub(a) * (1_000_000 / USER_HZ)) as f64 / answered as f64),
        machine_busy_pct: machine0
            .zip(to.machine)
            .map(|((b0, t0), (b1, t1))| (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * 100.0),
        duration_us: quantiles(&c.duration),
        http_phases_us: quantiles(&c.phases),
        target_delay_us: if delays_ok {
            quantiles(&delays)
        } else {
            [None, None]
        },
        failed: c.failed,
        driver_skipped: skipped,
        peak_rss_kib,
    })
}

/// The exporter's CPU, the machine's and the target's answer delays at one instant.
struct Mark {
    cpu: Option<u64>,
    machine: Option<(u64, u64)>,
    delays: Histogram<u64>,
}

impl Mark {
    fn take(pid: u32, target: &Target) -> Mark {
        Mark {
            cpu: pid_ticks(pid),
            machine: machine_jiffies(),
            delays: target.delays(),
        }
    }
}

/// The load generator: /probe requests from a keep-alive pool, as Prometheus scrapes.
struct Driver {
    client: reqwest::Client,
    url: String,
    collected: Arc<Mutex<Collected>>,
    in_flight: Arc<AtomicU64>,
}

impl Driver {
    fn new(exporter: &Exporter, target: &Target) -> Result<Driver, String> {
        let url = format!(
            "http://127.0.0.1:{}/probe?module=http_2xx&target=http://{}/",
            exporter.port, target.addr
        );
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the driver's client: {e}"))?;
        let collected = Arc::new(Mutex::new(Collected {
            duration: new_histogram()?,
            phases: new_histogram()?,
            answered: 0,
            failed: 0,
        }));
        Ok(Driver {
            client,
            url,
            collected,
            in_flight: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Every 5 ms, sends the requests due so far at `rate` (so the average
    /// rate is exact) until the window ends; returns the mark at the window's
    /// start and the requests not sent in it (MAX_IN_FLIGHT outstanding).
    async fn drive(
        &self,
        pid: u32,
        target: &Target,
        rate: f64,
        warm_up: Duration,
        window: Duration,
    ) -> (Option<Mark>, u64) {
        let start = Instant::now();
        let window_from = start + warm_up;
        let window_to = window_from + window;
        let mut from = None;
        let mut skipped = 0u64;
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while Instant::now() < window_to {
            tick.tick().await;
            let now = Instant::now();
            if from.is_none() && now >= window_from {
                from = Some(Mark::take(pid, target));
            }
            let due = (now.duration_since(start).as_secs_f64() * rate) as u64;
            let in_window = now >= window_from;
            while sent < due {
                sent += 1;
                if self.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                    if in_window {
                        skipped += 1;
                    }
                    continue;
                }
                self.send(in_window);
            }
        }
        (from, skipped)
    }

    /// One /probe request on its own task; its answer is collected if it was
    /// issued inside the window.
    fn send(&self, in_window: bool) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let (client, url, collected, in_flight) = (
            self.client.clone(),
            self.url.clone(),
            self.collected.clone(),
            self.in_flight.clone(),
        );
        tokio::spawn(async move {
            let body = match client
                .get(&url)
                .header("x-prometheus-scrape-timeout-seconds", "5")
                .send()
                .await
            {
                Ok(r) => r.text().await.ok(),
                Err(_) => None,
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if in_window {
                collected.lock().add(body.as_deref());
            }
        });
    }

    /// Waits up to 10 s for the requests in flight.
    async fn drain(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        while self.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Collected {
    /// Counts one /probe answer (`None`: no answer) and records its latencies.
    fn add(&mut self, body: Option<&str>) {
        let (duration, success, phases) = body.map_or((None, None, None), parse_probe);
        if success != Some(1.0) {
            self.failed += 1;
            return;
        }
        self.answered += 1;
        let us = |s: f64| ((s * 1e6).round() as u64).max(1);
        if let Some(d) = duration {
            let _ = self.duration.record(us(d));
        }
        if let Some(p) = phases {
            let _ = self.phases.record(us(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_answer_gives_duration_success_and_the_sum_of_phases() {
        let text = "# HELP probe_duration_seconds x\nprobe_duration_seconds 0.051\n\
            probe_http_duration_seconds{phase=\"connect\"} 0.001\n\
            probe_http_duration_seconds{phase=\"processing\"} 0.05\nprobe_success 1\n";
        let (d, s, p) = parse_probe(text);
        assert_eq!(d, Some(0.051));
        assert_eq!(s, Some(1.0));
        assert!((p.unwrap() - 0.051).abs() < 1e-9);
    }
}
