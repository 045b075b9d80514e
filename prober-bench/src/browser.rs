//! `--browser`: browser checks per minute on this machine, at a stated
//! memory ceiling. The real `Runner` runs a four-step check (load a form,
//! fill it, click, wait for the result page's element) against a loopback
//! site, back to back from as many workers as the pool has browsers
//! (`--browser-max`), for `--seconds` after a warm-up; nothing is stored.
//!
//! Reported: checks per minute, the checks' p50/p95/max, the browsers'
//! memory (their process groups' proportional set sizes, sampled every 100 ms:
//! mean and peak, against `memory_mb` × browsers, the ceiling the pool
//! enforces), the machine's CPU busy share (the browsers' renderers are
//! most of it), and the pool's launches and replacements.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prober::config::settings::BrowserOptions;
use prober::probe::Runner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::args::BenchArgs;
use crate::procfs;

const FORM: &str = "<!doctype html><html><head><title>search</title></head><body><h1>Search</h1>\
<form action=\"/result\" method=\"get\"><input id=\"q\" name=\"q\"><button id=\"go\" type=\"submit\">Go</button></form></body></html>";
const RESULT: &str =
    "<!doctype html><html><head><title>result</title></head><body><h1 id=\"done\">Results</h1>\
<ul><li>one</li><li>two</li><li>three</li></ul></body></html>";

/// The loopback site: `/` the form, `/result…` the result page.
async fn site() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind the loopback site: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let page = if head.starts_with(b"GET /result") {
                    RESULT
                } else {
                    FORM
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

fn check(addr: SocketAddr, i: usize) -> Result<prober::config::Probe, String> {
    let yaml = format!(
        "name: bench-browser-{i}\nevery: 1m\ntimeout: 30s\nbrowser:\n  steps:\n    - goto: http://{addr}/\n    - fill: {{selector: \"#q\", value: probes}}\n    - click: \"#go\"\n    - wait_for: \"#done\"\n"
    );
    let mut report = prober::config::LoadReport::default();
    prober::config::load::load_text(
        std::path::Path::new("bench-browser.yaml"),
        &yaml,
        &mut report,
    );
    report.probes.pop().ok_or_else(|| {
        format!(
            "the bench's browser check does not load: {:?}",
            report.diagnostics
        )
    })
}

/// Memory samples of the browsers, in bytes.
#[derive(Default)]
struct Memory {
    samples: Vec<u64>,
}

impl Memory {
    fn mean(&self) -> u64 {
        self.samples.iter().sum::<u64>() / self.samples.len().max(1) as u64
    }
    fn peak(&self) -> u64 {
        self.samples.iter().copied().max().unwrap_or(0)
    }
}

pub async fn run(args: &BenchArgs) -> Result<String, String> {
    let addr = site().await?;
    let browsers = args.browser_max.max(1);
    let opts = BrowserOptions {
        max_concurrent: browsers,
        memory_mb: args.browser_memory_mb,
        screenshots: std::env::temp_dir().join("prober-bench-screenshots"),
        ..BrowserOptions::default()
    };
    let runner = Arc::new(Runner::with_browsers(opts.clone())?);
    // Warm-up: every browser launched and one check each, not counted.
    let warm: Vec<_> = (0..browsers)
        .map(|i| {
            let (runner, p) = (Arc::clone(&runner), check(addr, i));
            tokio::spawn(async move { Ok::<bool, String>(runner.run(&p?).await.success) })
        })
        .collect();
    for w in warm {
        if !w.await.map_err(|e| e.to_string())?? {
            return Err("a warm-up check failed: is chromium-headless-shell installed?".into());
        }
    }
    let launched_before = runner.browser_stats().launched;
    let window = Duration::from_secs(args.seconds);
    let until = Instant::now() + window;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (runner, sampling) = (Arc::clone(&runner), Arc::clone(&sampling));
        tokio::spawn(async move {
            let mut m = Memory::default();
            while sampling.load(Ordering::Relaxed) {
                m.samples.push(runner.browser_memory_bytes());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            m
        })
    };
    let cpu_before = procfs::machine_jiffies();
    let started = Instant::now();
    let workers: Vec<_> = (0..browsers)
        .map(|i| {
            let runner = Arc::clone(&runner);
            let p = check(addr, i);
            tokio::spawn(async move {
                let p = p?;
                let mut times = Vec::new();
                let mut failed = Vec::new();
                while Instant::now() < until {
                    let o = runner.run(&p).await;
                    match o.error {
                        None => times.push(o.phases.total_us),
                        Some(e) => failed.push(format!("{}: {}", e.class, e.message)),
                    }
                }
                Ok::<_, String>((times, failed))
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for w in workers {
        let (t, f) = w.await.map_err(|e| e.to_string())??;
        times.extend(t);
        errors.extend(f);
    }
    let failed = errors.len();
    let elapsed = started.elapsed();
    let cpu_after = procfs::machine_jiffies();
    sampling.store(false, Ordering::Relaxed);
    let memory = sampler.await.map_err(|e| e.to_string())?;
    let stats = runner.browser_stats();
    times.sort_unstable();
    let q = |f: f64| {
        times
            .get(((times.len() as f64 * f).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    let busy = match (cpu_before, cpu_after) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64,
        _ => f64::NAN,
    };
    let per_minute = times.len() as f64 * 60.0 / elapsed.as_secs_f64();
    let ceiling = opts.memory_mb * browsers as u64;
    let mut out = String::new();
    let _ = writeln!(out, "{}", procfs::machine_line());
    let _ = writeln!(out, "browser checks: {browsers} browser(s), memory_mb {} (ceiling {ceiling} MB), {}s window, 4-step check on loopback", opts.memory_mb, elapsed.as_secs());
    let _ = writeln!(out, "| browsers | checks/min | failed | p50 ms | p95 ms | max ms | browser memory mean MB | peak MB | ceiling MB | machine CPU busy | launches in window |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {browsers} | {per_minute:.0} | {failed} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {ceiling} | {busy:.0} % | {} |",
        q(0.5) as f64 / 1000.0,
        q(0.95) as f64 / 1000.0,
        times.last().copied().unwrap_or(0) as f64 / 1000.0,
        memory.mean() as f64 / 1048576.0,
        memory.peak() as f64 / 1048576.0,
        stats.launched - launched_before,
    );
    if let Some(e) = errors.first() {
        let _ = writeln!(out, "first failure: {e}");
    }
    Ok(out)
}
