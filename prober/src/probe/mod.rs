//! Running probes. A run never fails as a Rust error: whatever the target
//! does, the result is an [`Outcome`], with an [`ErrorClass`] when it failed.
//!
//! `http` runs an HTTP check with hyper directly (so each phase is a real
//! measurement), `tls` builds the TLS client and captures the certificate,
//! `timing` wraps the connection to see the first response byte, `assert`
//! evaluates the expectations.

pub mod assert;
pub mod http;
pub mod outcome;
pub mod timing;
pub mod tls;

pub use outcome::{AssertionResult, CertInfo, ErrorClass, Outcome, Phases, ProbeError};

use crate::config::{Check, Probe};

/// User agent on every probe request, so production can recognise synthetic traffic.
pub const USER_AGENT: &str = concat!("prober/", env!("CARGO_PKG_VERSION"));

/// Runs probes. Holds what runs share (the TLS roots and verifier); one per process.
#[derive(Debug)]
pub struct Runner {
    tls: tls::TlsClients,
}

impl Runner {
    pub fn new() -> Result<Runner, String> {
        Ok(Runner {
            tls: tls::TlsClients::new()?,
        })
    }

    /// Runs a probe once, now, and returns what happened, with its secrets scrubbed.
    pub async fn run(&self, probe: &Probe) -> Outcome {
        let mut outcome = match &probe.check {
            Check::Http(check) => http::run(probe, check, &self.tls).await,
        };
        outcome.redact(&probe.secrets());
        outcome
    }
}
