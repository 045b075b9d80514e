//! What an attempt has reached, written by every kind as it goes.
//!
//! The [`Runner`](super::Runner) owns the [`Progress`] of an attempt and lends
//! it to the kind under the attempt's timeout. When the timeout cuts the
//! attempt, the kind's future is dropped but its progress is not: the phases
//! it reached (the unfinished one credited up to the cut), the response so
//! far, the certificate, the scenario steps that ran, are recorded the same
//! way for every kind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::net::micros;
use uuid::Uuid;

use crate::config::probe::Trace;
use crate::config::Probe;
use crate::run::{span_id, AssertionResult, CertInfo, Outcome, Phases, ProbeError, StepOutcome};

/// Where an attempt is: what a cut names, and the phase it credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before the network: preparing, or finding the server to ask (no phase).
    Start,
    Dns,
    Connect,
    Tls,
    /// gRPC: HTTP/2 set up over the connection (no phase).
    Http2,
    /// Writing a request (no phase: it is part of the first byte's wait or too short to time).
    Send,
    FirstByte,
    Transfer,
    /// A DNS query's round trip: the `dns` phase of the `dns` kind.
    Query,
}

impl Stage {
    /// What the attempt was doing, for a timeout's message.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Start => "preparing the run",
            Stage::Dns => "resolving the host name",
            Stage::Connect => "connecting",
            Stage::Tls => "in the TLS handshake",
            Stage::Http2 => "starting HTTP/2",
            Stage::Send => "sending the request",
            Stage::FirstByte => "waiting for the first byte of the response",
            Stage::Transfer => "reading the response",
            Stage::Query => "waiting for the answer",
        }
    }
}

/// What an attempt has measured and found so far.
#[derive(Debug)]
pub struct Progress {
    started_at: DateTime<Utc>,
    start: Instant,
    deadline: Instant,
    /// Set when the attempt ended (or was cut): its whole duration.
    total: Option<Duration>,
    stage: Stage,
    stage_started: Instant,
    /// When the request under way began (a scenario's step).
    request_started: Instant,
    /// Phases of the finished hops (redirects) of the request under way.
    done: Phases,
    /// Phases of the hop under way.
    pub hop: Phases,
    /// The request as sent: method and URL of the last hop, or what the kind asks.
    pub request: String,
    /// Where the attempt talks to (a URL, `host:port`), for messages.
    pub target: String,
    pub status: Option<u16>,
    pub response_bytes: u64,
    pub remote_addr: Option<SocketAddr>,
    pub redirects: u32,
    pub cert: Option<CertInfo>,
    /// The names the certificate is for, for `expect.cert_names` (not recorded: `cert` is).
    pub cert_names: Vec<super::tls::San>,
    pub assertions: Vec<AssertionResult>,
    /// Kind-specific facts (DNS answers, gRPC status, TLS chain), by name.
    pub info: BTreeMap<String, String>,
    /// A scenario's steps that ended, in order.
    pub steps: Vec<StepOutcome>,
    /// The run's W3C trace id (its run id's 32 hex digits), the same in every attempt.
    pub trace_id: String,
    /// Whether and how `traceparent` carries it.
    pub trace: Trace,
    /// The run, its attempt (from 1) and the step being run (from 1): the
    /// span id a request's `traceparent` names ([`span_id`]).
    pub run_id: Uuid,
    pub attempt: u32,
    pub step: u32,
    /// Secret values only known during the attempt (extracted tokens): scrubbed from the outcome.
    pub secrets: Vec<String>,
}

impl Progress {
    /// An attempt starting now, to end by `timeout`.
    pub fn start(timeout: Duration) -> Progress {
        let now = Instant::now();
        Progress {
            started_at: Utc::now(),
            start: now,
            deadline: now + timeout,
            total: None,
            stage: Stage::Start,
            stage_started: now,
            request_started: now,
            done: Phases::default(),
            hop: Phases::default(),
            request: String::new(),
            target: String::new(),
            status: None,
            response_bytes: 0,
            remote_addr: None,
            redirects: 0,
            cert: None,
            cert_names: Vec::new(),
            assertions: Vec::new(),
            info: BTreeMap::new(),
            steps: Vec::new(),
            trace_id: String::new(),
            trace: Trace::Off,
            run_id: Uuid::nil(),
            attempt: 1,
            step: 1,
            secrets: Vec::new(),
        }
    }

    /// The `traceparent` header of the request of this attempt and step:
    /// version 00, the run's trace id, the request's span id, the sampled
    /// flag. `None` when the probe sends none.
    pub fn traceparent(&self) -> Option<String> {
        let flags = match self.trace {
            Trace::Off => return None,
            _ if self.trace_id.is_empty() => return None,
            Trace::Sampled => "01",
            Trace::Unsampled => "00",
        };
        let span = span_id(self.run_id, self.attempt, self.step, 0);
        Some(format!("00-{}-{span:016x}-{flags}", self.trace_id))
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn enter(&mut self, stage: Stage) {
        self.enter_at(stage, Instant::now());
    }

    /// Enters `stage` as of `at` (a first byte seen on the wire before the response was parsed).
    pub fn enter_at(&mut self, stage: Stage, at: Instant) {
        self.stage = stage;
        self.stage_started = at;
    }

    pub fn stage_started(&self) -> Instant {
        self.stage_started
    }

    /// Microseconds spent in the current stage so far.
    pub fn stage_us(&self) -> u64 {
        micros(self.stage_started.elapsed())
    }

    /// Time left until the attempt's timeout.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Ends the hop under way (a redirect follows); its phases add to the request's.
    pub fn end_hop(&mut self) {
        let hop = std::mem::take(&mut self.hop);
        self.done.add(&hop);
    }

    /// Credits the time spent in the unfinished stage to its phase (the attempt was cut).
    pub fn cut(&mut self) {
        let us = self.stage_us();
        let slot = match self.stage {
            Stage::Dns | Stage::Query => &mut self.hop.dns_us,
            Stage::Connect => &mut self.hop.connect_us,
            Stage::Tls => &mut self.hop.tls_us,
            Stage::FirstByte => &mut self.hop.first_byte_us,
            Stage::Transfer => &mut self.hop.transfer_us,
            Stage::Start | Stage::Http2 | Stage::Send => return,
        };
        if slot.is_none() {
            *slot = Some(us);
        }
    }

    /// Takes `d` spent on something else (an OAuth2 token's fetch) out of
    /// the attempt's timings: its total and the stage and request under way.
    pub fn exclude(&mut self, d: Duration) {
        self.start += d;
        self.stage_started += d;
        self.request_started += d;
    }

    /// Sets the attempt's total to a measured latency rather than its wall
    /// time (the `icmp` kind: a ping's round trip, not its intervals).
    pub fn set_total(&mut self, total: Duration) {
        self.total = Some(total);
    }

    /// Marks the attempt over: its total is the time until now.
    pub fn stop(&mut self) {
        self.total.get_or_insert(self.start.elapsed());
    }

    /// The phases reached so far; `total_us` is the attempt's.
    pub fn phases(&self) -> Phases {
        let mut p = self.done;
        p.add(&self.hop);
        p.total_us = micros(self.total.unwrap_or_else(|| self.start.elapsed()));
        p
    }

    /// Starts a new request (a scenario's step): what the last one reached is cleared.
    pub fn begin_request(&mut self, request: String) {
        self.request = request;
        self.request_started = Instant::now();
        self.stage = Stage::Start;
        self.stage_started = self.request_started;
        self.done = Phases::default();
        self.hop = Phases::default();
        self.target.clear();
        self.status = None;
        self.response_bytes = 0;
        self.remote_addr = None;
        self.redirects = 0;
        self.cert = None;
        self.cert_names.clear();
        self.assertions.clear();
    }

    /// How long the request under way has taken.
    pub fn request_elapsed(&self) -> Duration {
        self.request_started.elapsed()
    }

    /// The phases of the request under way (`total_us`: the request's own time).
    pub fn request_phases(&self) -> Phases {
        let mut p = self.done;
        p.add(&self.hop);
        p.total_us = micros(self.request_elapsed());
        p
    }

    /// The attempt's outcome: everything reached, and the error that decided it.
    pub fn into_outcome(mut self, probe: &Probe, error: Option<ProbeError>) -> Outcome {
        self.stop();
        let mut o = Outcome {
            probe: probe.name.clone(),
            probe_version: probe.version.clone(),
            started_at: self.started_at,
            success: error.is_none(),
            error,
            request: std::mem::take(&mut self.request),
            status_code: self.status,
            phases: self.phases(),
            response_bytes: self.response_bytes,
            remote_addr: self.remote_addr.map(|a| a.to_string()),
            redirects: self.redirects,
            cert: self.cert.take(),
            assertions: std::mem::take(&mut self.assertions),
            trace_id: std::mem::take(&mut self.trace_id),
            steps: std::mem::take(&mut self.steps),
            attempts: Vec::new(),
            info: std::mem::take(&mut self.info),
        };
        o.redact(&self.secrets);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_cut_credits_the_unfinished_phase_once_and_keeps_the_finished_ones() {
        let mut p = Progress::start(Duration::from_secs(1));
        p.enter(Stage::Connect);
        tokio::time::sleep(Duration::from_millis(10)).await;
        p.hop.connect_us = Some(p.stage_us());
        p.enter(Stage::FirstByte);
        tokio::time::sleep(Duration::from_millis(30)).await;

        p.cut();
        p.stop();

        let phases = p.phases();
        assert_eq!(phases.connect_us, Some(10_000));
        assert_eq!(phases.first_byte_us, Some(30_000));
        assert_eq!(phases.transfer_us, None, "not reached");
        assert_eq!(phases.total_us, 40_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_request_starts_from_nothing_but_the_attempt_keeps_its_steps() {
        let mut p = Progress::start(Duration::from_secs(1));
        p.begin_request("GET http://a/".into());
        p.status = Some(200);
        p.hop.first_byte_us = Some(5);
        p.begin_request("GET http://b/".into());

        assert_eq!(p.request, "GET http://b/");
        assert_eq!(p.status, None);
        assert_eq!(p.request_phases().first_byte_us, None);
    }
}
