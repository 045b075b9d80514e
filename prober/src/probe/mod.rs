//! Running probes. A run never fails as a Rust error: whatever the target
//! does, the result is an [`Outcome`], with an [`ErrorClass`] when it failed.
//!
//! `http` runs an HTTP check with hyper directly (so each phase is a real
//! measurement), `tls` builds the TLS client and captures the certificate,
//! `timing` wraps the connection to see the first response byte, `assert`
//! evaluates the expectations.

pub mod assert;
pub mod dns;
pub mod grpc;
pub mod http;
pub mod net;
pub mod steps;
pub mod tcp;
pub mod timing;
pub mod tls;
pub mod tls_check;

use crate::run::{Attempt, Outcome};

use crate::config::{Check, Probe};

/// User agent on every probe request, so production can recognise synthetic traffic.
pub const USER_AGENT: &str = concat!("prober/", env!("CARGO_PKG_VERSION"));

/// Runs probes. Holds what runs share (the TLS roots and verifier); one per process.
#[derive(Debug)]
pub struct Runner {
    tls: tls::TlsClients,
    pool: http::ConnPool,
}

impl Runner {
    pub fn new() -> Result<Runner, String> {
        Ok(Runner {
            tls: tls::TlsClients::new()?,
            pool: http::ConnPool::default(),
        })
    }

    /// Runs a probe once, now (with its retries), and returns what happened, secrets scrubbed.
    pub async fn run(&self, probe: &Probe) -> Outcome {
        let mut outcome = self.attempt(probe).await;
        if let Some(retry) = &probe.retry {
            let mut attempts = vec![attempt_summary(1, &outcome)];
            let mut n = 1;
            while n < retry.attempts
                && outcome
                    .error
                    .as_ref()
                    .is_some_and(|e| retry.on.contains(&e.class))
            {
                tokio::time::sleep(retry.delay).await;
                n += 1;
                outcome = self.attempt(probe).await;
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
    async fn attempt(&self, probe: &Probe) -> Outcome {
        let ctx = http::HttpCtx {
            tls: &self.tls,
            pool: &self.pool,
            probe: &probe.name,
        };
        match &probe.check {
            Check::Http(check) => http::run(probe, check, ctx).await,
            Check::Steps(scenario) => steps::run(probe, scenario, ctx).await,
            Check::Tcp(check) => tcp::run(probe, check).await,
            Check::Dns(check) => dns::run(probe, check).await,
            Check::Tls(check) => tls_check::run(probe, check, &self.tls).await,
            Check::Grpc(check) => grpc::run(probe, check, &self.tls).await,
        }
    }
}

fn attempt_summary(n: u32, o: &Outcome) -> Attempt {
    Attempt {
        attempt: n,
        success: o.success,
        error: o.error.clone(),
        total_us: o.phases.total_us,
    }
}
