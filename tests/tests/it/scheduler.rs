//! The scheduler on paused tokio time: spread, no overlap (skipped ticks
//! counted), cron firing times, and runs that hang past their timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use prober::config::Probe;
use prober::results::LiveState;
use prober::run::RunRecord;
use prober::run::{ErrorClass, Outcome};
use prober::schedule::{spread_offset, Clock, Executor, Limits, Scheduler, SchedulerStats};
use prober::store::queue::ResultQueue;

use crate::helpers::probes;

/// An executor that takes `busy` (virtual time) per run and tracks overlap.
fn sleeping_executor(
    busy: Duration,
    concurrent: Arc<AtomicUsize>,
    max_seen: Arc<AtomicUsize>,
) -> Executor {
    Arc::new(move |p: Arc<Probe>, _run_id| {
        let (concurrent, max_seen) = (concurrent.clone(), max_seen.clone());
        Box::pin(async move {
            let now = concurrent.fetch_add(1, Ordering::SeqCst) + 1;
            max_seen.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(busy).await;
            concurrent.fetch_sub(1, Ordering::SeqCst);
            let mut o = Outcome::failed(
                &p.name,
                &p.version,
                Utc::now(),
                ErrorClass::Timeout,
                String::new(),
                busy,
            );
            o.success = true;
            o.error = None;
            o
        })
    })
}

struct Harness {
    scheduler: Scheduler,
    queue: Arc<ResultQueue>,
    stats: Arc<SchedulerStats>,
    live: Arc<LiveState>,
}

fn start(yaml: &str, exec: Executor, wall: DateTime<Utc>) -> Harness {
    let queue = Arc::new(ResultQueue::new(1_000_000));
    let stats = Arc::new(SchedulerStats::default());
    let live = Arc::new(LiveState::new(20));
    let scheduler = Scheduler::start(
        probes(yaml),
        exec,
        live.clone(),
        queue.clone(),
        Clock::anchored(wall),
        Limits {
            global: 10_000,
            per_host: 10_000,
        },
        stats.clone(),
    );
    Harness {
        scheduler,
        queue,
        stats,
        live,
    }
}

impl Harness {
    async fn stop(self) -> (Vec<RunRecord>, Arc<SchedulerStats>, Arc<LiveState>) {
        self.scheduler.shutdown(Duration::from_secs(60)).await;
        (self.queue.take(usize::MAX).records, self.stats, self.live)
    }
}

fn wall() -> DateTime<Utc> {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn probes_spread_across_the_interval_at_a_phase_stable_across_restarts() {
    let yaml: String = (0..200)
        .map(|i| {
            format!("- name: p{i:03}\n  every: 60s\n  http: {{url: \"http://127.0.0.1:9/\"}}\n")
        })
        .collect();
    let exec = sleeping_executor(
        Duration::from_millis(5),
        Default::default(),
        Default::default(),
    );

    let h = start(&yaml, exec.clone(), wall());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (runs, _, _) = h.stop().await;

    assert_eq!(runs.len(), 200, "each probe ran once in its first interval");
    let mut seconds: Vec<u32> = runs.iter().map(|r| r.scheduled_at.second()).collect();
    seconds.sort_unstable();
    seconds.dedup();
    assert!(
        seconds.len() >= 40,
        "200 probes should spread over most of the minute, got {} distinct seconds",
        seconds.len()
    );
    for r in &runs {
        let offset = spread_offset(&r.meta.name, Duration::from_secs(60));
        let into_minute =
            Duration::from_micros((r.scheduled_at.timestamp_micros() % 60_000_000) as u64);
        assert_eq!(
            into_minute, offset,
            "{} runs at its stable offset",
            r.meta.name
        );
        // Paused time: lateness is only the timer's rounding to its 1 ms resolution.
        assert!(
            (0..1_000).contains(&r.lateness_us),
            "lateness {}µs",
            r.lateness_us
        );
    }

    // A restart later on keeps every probe at the same phase.
    let exec = sleeping_executor(
        Duration::from_millis(5),
        Default::default(),
        Default::default(),
    );
    let h = start(&yaml, exec, wall() + chrono::TimeDelta::seconds(3_600 + 17));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (again, _, _) = h.stop().await;
    for r in &again {
        let offset = spread_offset(&r.meta.name, Duration::from_secs(60));
        assert_eq!(
            r.scheduled_at.timestamp_micros() % 60_000_000,
            offset.as_micros() as i64
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_still_going_at_the_next_tick_skips_that_tick_and_counts_it() {
    let concurrent = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    // Each run takes 2.5 s of a 1 s interval (the fake ignores its timeout; the guard is timeout + 1 s).
    let exec = sleeping_executor(
        Duration::from_millis(1_500),
        concurrent.clone(),
        max_seen.clone(),
    );
    let h = start(
        "name: slow\nevery: 1s\ntimeout: 900ms\nhttp: {url: \"http://127.0.0.1:9/\"}\n",
        exec,
        wall(),
    );

    tokio::time::sleep(Duration::from_millis(20_500)).await;
    let (runs, stats, live) = h.stop().await;

    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        1,
        "runs of one probe never overlap"
    );
    let skipped = stats.skipped_ticks.load(Ordering::SeqCst);
    assert_eq!(
        runs.len() as u64 + skipped,
        20,
        "every tick either ran or was counted as skipped"
    );
    assert_eq!(
        runs.len(),
        10,
        "a 1.5 s run every 1 s: every other tick runs"
    );
    assert_eq!(live.probe("slow").lock().skipped_ticks, skipped);
}

#[tokio::test(start_paused = true)]
async fn cron_probes_fire_on_their_cron_times() {
    let exec = sleeping_executor(
        Duration::from_millis(10),
        Default::default(),
        Default::default(),
    );
    let h = start(
        "name: quarter\ncron: \"*/15 * * * * *\"\nhttp: {url: \"http://127.0.0.1:9/\"}\n",
        exec,
        wall() + chrono::TimeDelta::milliseconds(500),
    );

    tokio::time::sleep(Duration::from_secs(61)).await;
    let (runs, _, _) = h.stop().await;

    let times: Vec<String> = runs
        .iter()
        .map(|r| r.scheduled_at.format("%H:%M:%S%.3f").to_string())
        .collect();
    assert_eq!(
        times,
        [
            "10:00:15.000",
            "10:00:30.000",
            "10:00:45.000",
            "10:01:00.000"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_that_hangs_is_recorded_as_a_timeout_and_the_probe_goes_on() {
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    // The first run never returns; later runs answer at once.
    let exec: Executor = Arc::new(move |p: Arc<Probe>, _run_id| {
        let first = {
            let mut n = c.lock().unwrap();
            *n += 1;
            *n == 1
        };
        Box::pin(async move {
            if first {
                std::future::pending::<()>().await;
            }
            let mut o = Outcome::failed(
                &p.name,
                &p.version,
                Utc::now(),
                ErrorClass::Timeout,
                String::new(),
                Duration::ZERO,
            );
            o.success = true;
            o.error = None;
            o
        })
    });
    let h = start(
        "name: hangs\nevery: 5s\ntimeout: 2s\nhttp: {url: \"http://127.0.0.1:9/\"}\n",
        exec,
        wall(),
    );

    tokio::time::sleep(Duration::from_secs(15)).await;
    let (runs, stats, _) = h.stop().await;

    assert_eq!(
        runs.len(),
        3,
        "{:?}",
        runs.iter().map(|r| r.scheduled_at).collect::<Vec<_>>()
    );
    let first = &runs[0].outcome;
    assert_eq!(first.error.as_ref().unwrap().class, ErrorClass::Timeout);
    assert_eq!(
        first.phases.total_us, 3_000_000,
        "recorded at the timeout plus the guard"
    );
    assert!(runs[1].outcome.success && runs[2].outcome.success);
    assert_eq!(stats.skipped_ticks.load(Ordering::SeqCst), 0);
}

/// A loopback HTTP target whose odd-numbered requests (the 1st, 3rd, …) hang
/// (read, never answered) and even-numbered ones answer 200: every run's first
/// attempt times out and its retry passes.
async fn hangs_every_other_request() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut n = 0u32;
        while let Ok((mut sock, _)) = listener.accept().await {
            n += 1;
            let hang = n % 2 == 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf).await;
                if hang {
                    std::future::pending::<()>().await;
                }
                let msg = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = sock.write_all(msg.as_bytes()).await;
            });
        }
    });
    url
}

/// A probe of `url` retried once after a timeout; every attempt and delay fits the interval.
fn retried_probe(url: &str) -> String {
    format!(
        "name: flaky\nevery: 10s\ntimeout: 2s\nretry: {{attempts: 2, delay: 1s, on: [timeout]}}\nhttp: {{url: \"{url}\"}}\n"
    )
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_timeout_keeps_both_attempts_and_the_run_passes() {
    let url = hangs_every_other_request().await;
    let exec = prober::daemon::http_executor().unwrap();
    // The run takes 2 s (cut) + 1 s (delay) + the retry: more than the timeout and a guard.
    let h = start(&retried_probe(&url), exec, wall());

    tokio::time::sleep(Duration::from_secs(14)).await;
    let (runs, _, live) = h.stop().await;

    let run = &runs.first().expect("the probe ran").outcome;
    assert!(run.success, "{run:#?}");
    assert_eq!(run.status_code, Some(200));
    let attempts: Vec<(u32, bool, Option<ErrorClass>)> = run
        .attempts
        .iter()
        .map(|a| (a.attempt, a.success, a.error.as_ref().map(|e| e.class)))
        .collect();
    assert_eq!(
        attempts,
        [(1, false, Some(ErrorClass::Timeout)), (2, true, None)],
        "both attempts recorded"
    );
    let first = run.attempts[0].error.as_ref().unwrap();
    assert!(first.message.contains("first byte"), "{}", first.message);
    assert_eq!(run.attempts[0].total_us, 2_000_000, "cut at the timeout");
    assert_eq!(live.probe("flaky").lock().skipped_ticks, 0);
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_whole_budget_is_given_up_at_the_budget_plus_the_guard() {
    // An executor that ignores every timeout: 2 attempts × 2 s + 1 s delay = 5 s budget.
    let exec = sleeping_executor(
        Duration::from_secs(9),
        Default::default(),
        Default::default(),
    );
    let h = start(&retried_probe("http://127.0.0.1:9/"), exec, wall());

    tokio::time::sleep(Duration::from_secs(16)).await;
    let (runs, _, _) = h.stop().await;

    let run = &runs.first().expect("the probe ran").outcome;
    assert_eq!(run.error.as_ref().unwrap().class, ErrorClass::Timeout);
    assert_eq!(
        run.phases.total_us, 6_000_000,
        "given up at the budget (5 s) plus the guard (1 s)"
    );
    assert!(run.error.as_ref().unwrap().message.contains("5s"));
}

/// What a run recorded that `once` and the scheduler must agree on.
fn verdict(o: &serde_json::Value) -> serde_json::Value {
    let attempts: Vec<serde_json::Value> = (o["attempts"].as_array().unwrap().iter())
        .map(|a| serde_json::json!([a["attempt"], a["success"], a["error"]]))
        .collect();
    serde_json::json!({
        "success": o["success"],
        "error": o["error"],
        "status_code": o["status_code"],
        "attempts": attempts,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_and_a_scheduled_run_record_the_same_retried_timeout() {
    let _timing = crate::helpers::TIMING.write().await;
    // Real time (`once` is its own process): 2 × 500ms + 200ms fits in 2s.
    let yaml = |url: &str| {
        retried_probe(url)
            .replace("every: 10s", "every: 2s")
            .replace("timeout: 2s", "timeout: 500ms")
            .replace("delay: 1s", "delay: 200ms")
    };
    let dir = tempfile::tempdir().unwrap();
    let by_once_url = hangs_every_other_request().await;
    std::fs::write(dir.path().join("p.yaml"), yaml(&by_once_url)).unwrap();

    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || crate::helpers::cli(&dir, &["once", "--json", "p.yaml"], &[])
    })
    .await
    .unwrap();
    let scheduled_url = hangs_every_other_request().await;
    let h = start(
        &yaml(&scheduled_url),
        prober::daemon::http_executor().unwrap(),
        Utc::now(),
    );
    let ran = crate::helpers::wait_for(Duration::from_secs(6), || !h.queue.is_empty()).await;
    let (runs, _, _) = h.stop().await;

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ran, "the scheduler ran the probe");
    let once: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scheduled = serde_json::to_value(&runs[0].outcome).unwrap();
    // Each has its own target: its address is the one difference allowed.
    let url_of = |v: &serde_json::Value, url: &str| {
        let host_port = url.trim_start_matches("http://").trim_end_matches('/');
        v.to_string().replace(host_port, "TARGET")
    };
    assert_eq!(
        url_of(&verdict(&once), &by_once_url),
        url_of(&verdict(&scheduled), &scheduled_url),
        "once and the scheduler disagree"
    );
    assert_eq!(verdict(&scheduled)["attempts"].as_array().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_joining_replica_counts_its_ticks_as_skipped_and_another_replicas_ticks_are_not() {
    use prober::schedule::Turn;
    let exec = sleeping_executor(Duration::from_millis(10), Arc::default(), Arc::default());
    let h = start(
        "name: mine\nevery: 1s\nhttp: {url: \"http://127.0.0.1:9/\"}\n---\nname: theirs\nevery: 1s\nhttp: {url: \"http://127.0.0.1:9/\"}\n",
        exec,
        wall(),
    );
    // Joining for the first 4 s: nobody knows whose turn a tick is.
    let joined = tokio::time::Instant::now() + Duration::from_secs(4);
    h.scheduler.share(
        "lab",
        Arc::new(move |p: &str| {
            if tokio::time::Instant::now() < joined {
                Turn::Unknown
            } else if p == "mine" {
                Turn::Mine
            } else {
                Turn::Theirs
            }
        }),
    );
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let (runs, stats, live) = h.stop().await;
    let ran = |p: &str| runs.iter().filter(|r| r.meta.name == p).count() as u64;
    let skipped = |p: &str| live.probe(p).lock().skipped_ticks;
    assert_eq!(ran("theirs"), 0);
    assert!(ran("mine") >= 6, "{}", ran("mine"));
    assert_eq!(
        ran("mine") + skipped("mine"),
        10,
        "each of this replica's ticks ran or was counted as skipped"
    );
    assert_eq!(skipped("theirs"), skipped("mine"), "only while joining");
    assert_eq!(
        stats.skipped_ticks.load(Ordering::SeqCst),
        skipped("mine") + skipped("theirs")
    );
}
