//! Running probes. A run never fails as a Rust error: whatever the target
//! does, the result is an [`Outcome`], with an [`ErrorClass`](crate::run::ErrorClass)
//! when it failed.
//!
//! The [`Runner`] owns a run's budget ([`Budget`]): it applies the timeout to
//! each attempt (here, once, for every kind), sleeps the retry delays, and
//! [`run_limit`] is the one place the scheduler's guard comes from. Each kind
//! writes what it reaches into a [`Progress`], so an attempt cut by its
//! timeout still records it.
//!
//! `http` runs an HTTP check with hyper directly (so each phase is a real
//! measurement), `tls` builds the TLS client and captures the certificate,
//! `timing` wraps the connection to see the first response byte, `assert`
//! evaluates the expectations.

pub mod assert;
pub mod browser;
pub mod dns;
pub mod grpc;
pub mod http;
mod icmp;
pub mod net;
pub mod progress;
pub mod steps;
pub mod tcp;
pub mod timing;
pub mod tls;
pub mod tls_check;
mod websocket;

use std::time::Duration;

use uuid::Uuid;

pub use progress::{Progress, Stage};

use crate::config::probe::Budget;
use crate::config::{Check, Probe};
use crate::run::{trace_id, Attempt, Outcome, ProbeError};

/// User agent on every probe request, so production can recognise synthetic traffic.
pub const USER_AGENT: &str = concat!("prober/", env!("CARGO_PKG_VERSION"));

/// Past a run's budget, how long the scheduler still waits before it gives up
/// on the run as stuck (the runner keeps the budget itself; this only guards
/// against an executor that does not yield).
pub const STUCK_GUARD: Duration = Duration::from_secs(1);

/// How long a run may take before the scheduler gives up on it: the probe's
/// [`Budget::total`] (every attempt and retry delay, as the runner spends it)
/// and [`STUCK_GUARD`]. The one place this limit is computed.
pub fn run_limit(probe: &Probe) -> Duration {
    probe.budget().total() + STUCK_GUARD
}

/// A probe kind as the runner drives it through one attempt.
pub(crate) trait Kind {
    /// Runs the check, writing what it reaches into `p`; `Err` is the attempt's failure.
    /// Cancelled at the attempt's timeout: anything worth keeping goes into `p` (or `self`).
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError>;

    /// The error of an attempt cut at its timeout, from what it had reached.
    fn timed_out(&self, p: &Progress) -> ProbeError;

    /// Judges what the attempt reached, cut or not; may replace its error.
    fn conclude(&mut self, _p: &mut Progress, error: Option<ProbeError>) -> Option<ProbeError> {
        error
    }
}

/// Runs probes. Holds what runs share (the TLS roots and verifier); one per process.
#[derive(Debug)]
pub struct Runner {
    tls: tls::TlsClients,
    pool: http::ConnPool,
    tokens: http::TokenCache,
    browsers: browser::BrowserPool,
    /// The settings' `proxy`: for HTTP requests whose probe names none.
    proxy: Option<crate::config::probe::Proxy>,
}

impl Runner {
    /// A runner whose browser checks use the default [`browser::BrowserOptions`].
    pub fn new() -> Result<Runner, String> {
        Runner::with_browsers(browser::BrowserOptions::default())
    }

    /// A runner whose browser checks run as `browsers` says (`browser:` in `prober.yaml`).
    pub fn with_browsers(browsers: browser::BrowserOptions) -> Result<Runner, String> {
        Ok(Runner {
            tls: tls::TlsClients::new()?,
            pool: http::ConnPool::default(),
            tokens: http::TokenCache::new()?,
            browsers: browser::BrowserPool::new(browsers),
            proxy: None,
        })
    }

    /// This runner, sending the HTTP requests of probes that name no proxy through `proxy`.
    pub fn with_default_proxy(mut self, proxy: Option<crate::config::probe::Proxy>) -> Runner {
        self.proxy = proxy;
        self
    }

    /// The browser processes' counts (browser checks).
    pub fn browser_stats(&self) -> browser::PoolStats {
        self.browsers.stats()
    }

    /// The memory of the browsers alive (their process groups' proportional sets), in bytes.
    pub fn browser_memory_bytes(&self) -> u64 {
        self.browsers.memory_bytes()
    }

    /// How browser checks are run.
    pub fn browser_options(&self) -> &browser::BrowserOptions {
        self.browsers.options()
    }

    /// Runs a probe once, now, as a run with a new id (`Uuid::now_v7`): see [`Runner::run_as`].
    pub async fn run(&self, probe: &Probe) -> Outcome {
        self.run_as(probe, Uuid::now_v7()).await
    }

    /// Runs a probe once, now, within its budget: each attempt within the
    /// timeout, retried (after the delay) while it fails with a class in
    /// `retry.on`. Returns what happened, every attempt listed, secrets scrubbed.
    /// The run's trace id is `run_id`'s ([`trace_id`]): every attempt's requests
    /// carry it in `traceparent` (unless the probe says `trace: false`).
    pub async fn run_as(&self, probe: &Probe, run_id: Uuid) -> Outcome {
        let budget: Budget = probe.budget();
        let mut outcome = self.attempt(probe, run_id, 1).await;
        if let Some(retry) = &probe.retry {
            let mut attempts = vec![attempt_summary(1, &outcome)];
            let mut n = 1;
            while n < budget.attempts
                && outcome
                    .error
                    .as_ref()
                    .is_some_and(|e| retry.on.contains(&e.class))
            {
                tokio::time::sleep(budget.delay).await;
                n += 1;
                outcome = self.attempt(probe, run_id, n).await;
                attempts.push(attempt_summary(n, &outcome));
            }
            outcome.attempts = attempts;
        }
        outcome.redact(&probe.secrets());
        outcome
    }

    /// Idle keep-alive connections held for probes with `keep_alive: true`.
    pub fn idle_connections(&self) -> usize {
        self.pool.len()
    }

    /// One attempt of the probe's check.
    async fn attempt(&self, probe: &Probe, run_id: Uuid, n: u32) -> Outcome {
        let ctx = http::HttpCtx {
            tls: &self.tls,
            pool: &self.pool,
            tokens: &self.tokens,
            probe: &probe.name,
            default_proxy: self.proxy.as_ref(),
        };
        let timeout = probe.timeout;
        let run = (run_id, n);
        match &probe.check {
            Check::Http(c) => drive(probe, run, http::HttpKind::new(c, ctx, timeout)).await,
            Check::Steps(s) => drive(probe, run, steps::ScenarioKind::new(s, ctx, timeout)).await,
            Check::Tcp(c) => drive(probe, run, tcp::TcpKind::new(c, timeout)).await,
            Check::Dns(c) => drive(probe, run, dns::DnsKind::new(c, timeout)).await,
            Check::Tls(c) => {
                drive(probe, run, tls_check::TlsKind::new(c, &self.tls, timeout)).await
            }
            Check::Grpc(c) => drive(probe, run, grpc::GrpcKind::new(c, &self.tls, timeout)).await,
            Check::Icmp(c) => drive(probe, run, icmp::IcmpKind::new(c, timeout)).await,
            Check::WebSocket(c) => {
                drive(probe, run, websocket::WsKind::new(c, &self.tls, timeout)).await
            }
            Check::Browser(c) => {
                let kind = browser::BrowserKind::new(c, &self.browsers, &probe.name, timeout);
                drive(probe, run, kind).await
            }
        }
    }
}

/// One attempt of `kind`, cut at the probe's timeout: the one place a run's
/// timeout is applied. A cut attempt records the progress it made.
async fn drive<K: Kind>(probe: &Probe, (run_id, attempt): (Uuid, u32), mut kind: K) -> Outcome {
    let mut p = Progress::start(probe.timeout);
    p.trace_id = trace_id(run_id);
    p.trace = probe.trace;
    p.run_id = run_id;
    p.attempt = attempt;
    let ran = tokio::time::timeout(probe.timeout, kind.check(&mut p)).await;
    p.stop();
    let error = match ran {
        Ok(result) => result.err(),
        Err(_) => {
            p.cut();
            Some(kind.timed_out(&p))
        }
    };
    let error = kind.conclude(&mut p, error);
    p.into_outcome(probe, error)
}

fn attempt_summary(n: u32, o: &Outcome) -> Attempt {
    Attempt {
        attempt: n,
        success: o.success,
        error: o.error.clone(),
        total_us: o.phases.total_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::ErrorClass;

    /// A kind that connects in 10 ms, then waits forever for the first byte.
    struct Hangs;

    impl Kind for Hangs {
        async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
            p.request = "hang".into();
            p.enter(Stage::Connect);
            tokio::time::sleep(Duration::from_millis(10)).await;
            p.hop.connect_us = Some(p.stage_us());
            p.enter(Stage::FirstByte);
            std::future::pending::<()>().await;
            Ok(())
        }

        fn timed_out(&self, p: &Progress) -> ProbeError {
            net::fail(
                ErrorClass::Timeout,
                format!("still {}", p.stage().describe()),
            )
        }
    }

    fn probe(yaml: &str) -> Probe {
        let mut report = crate::config::LoadReport::default();
        crate::config::load::load_text(std::path::Path::new("p.yaml"), yaml, &mut report);
        assert!(report.is_ok(), "{:?}", report.diagnostics);
        report.probes.remove(0)
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_cut_at_its_timeout_keeps_what_it_reached() {
        let p = probe("name: a\nevery: 10s\ntimeout: 300ms\ntcp: {host: 127.0.0.1, port: 9}\n");

        let o = drive(&p, (Uuid::now_v7(), 1), Hangs).await;

        let e = o.error.as_ref().unwrap();
        assert_eq!(e.class, ErrorClass::Timeout);
        assert_eq!(
            e.message,
            "still waiting for the first byte of the response"
        );
        assert_eq!(o.request, "hang");
        assert_eq!(o.phases.connect_us, Some(10_000), "the finished phase");
        assert_eq!(
            o.phases.first_byte_us,
            Some(290_000),
            "the cut one, credited"
        );
        assert_eq!(o.phases.total_us, 300_000, "cut at the timeout");
    }

    #[test]
    fn the_schedulers_limit_is_the_whole_budget_and_the_guard() {
        let p = probe(
            "name: a\nevery: 1m\ntimeout: 5s\nretry: {attempts: 3, delay: 2s}\ntcp: {host: 127.0.0.1, port: 9}\n",
        );

        assert_eq!(p.budget().total(), Duration::from_secs(3 * 5 + 2 * 2));
        assert_eq!(run_limit(&p), Duration::from_secs(20));
    }
}
