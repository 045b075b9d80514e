//! The HTTP check, on hyper directly so every phase is measured where it happens:
//! DNS (the system resolver), TCP connect, TLS handshake, first byte (request
//! written → first response byte on the wire), transfer (first byte → end of
//! body). ARCHITECTURE.md says why not reqwest.
//!
//! `exchange` sends one request (following redirects), `pool` keeps idle
//! keep-alive connections; here the kind itself: the response judged against
//! `expect`, and the message of an attempt cut at its timeout.

use std::time::Duration;

use crate::config::probe::{Expect, HttpCheck};
use crate::config::template::Vars;
use crate::probe::assert::{evaluate, ResponseView};
use crate::probe::net::fail;
use crate::probe::tls::TlsClients;
use crate::probe::{Kind, Progress, Stage};
use crate::run::{AssertionResult, ErrorClass, ProbeError};

mod decode;
mod exchange;
mod oauth;
mod pool;
mod proxy;

pub use exchange::{exchange, Response};
pub use oauth::TokenCache;
pub use pool::ConnPool;

/// What an HTTP exchange needs besides the request: TLS, the keep-alive pool, and whose it is.
#[derive(Clone, Copy)]
pub struct HttpCtx<'a> {
    pub tls: &'a TlsClients,
    pub pool: &'a ConnPool,
    /// OAuth2 tokens, by probe.
    pub tokens: &'a TokenCache,
    /// The probe's name: keep-alive connections are never shared between probes.
    pub probe: &'a str,
    /// The settings' `proxy`, for a request whose probe names none.
    pub default_proxy: Option<&'a crate::config::probe::Proxy>,
}

/// The `http` kind: one request and its expectations.
pub struct HttpKind<'a> {
    check: &'a HttpCheck,
    ctx: HttpCtx<'a>,
    timeout: Duration,
}

impl<'a> HttpKind<'a> {
    pub fn new(check: &'a HttpCheck, ctx: HttpCtx<'a>, timeout: Duration) -> HttpKind<'a> {
        HttpKind {
            check,
            ctx,
            timeout,
        }
    }
}

impl Kind for HttpKind<'_> {
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
        let req = &self.check.request;
        p.begin_request(format!("{} {}", req.method, req.url.source()));
        let vars = Vars::new();
        let response = exchange(req, self.ctx, &vars, p).await?;
        judge(&self.check.expect, &response, p, &vars)
    }

    fn timed_out(&self, p: &Progress) -> ProbeError {
        timeout_error(p, self.timeout)
    }
}

/// Holds a response to its expectations (into `p.assertions`); the first failure decides.
pub fn judge(
    expect: &Expect,
    response: &Response,
    p: &mut Progress,
    vars: &Vars,
) -> Result<(), ProbeError> {
    p.assertions = evaluate(
        expect,
        &ResponseView {
            status: response.status.as_u16(),
            headers: &response.headers,
            body: &response.body,
            total: p.request_elapsed(),
            cert: p.cert.as_ref(),
            cert_names: &p.cert_names,
            facts: &p.info,
        },
        vars,
    );
    first_failure(&p.assertions).map_or(Ok(()), Err)
}

/// The error of a request cut at `timeout`: where it was, and what it was waiting for.
pub fn timeout_error(p: &Progress, timeout: Duration) -> ProbeError {
    let where_ = match p.remote_addr {
        Some(a) => format!("{} ({a})", p.target),
        None => p.target.clone(),
    };
    let doing = match p.stage() {
        Stage::Transfer => "reading the response body",
        other => other.describe(),
    };
    fail(
        ErrorClass::Timeout,
        format!(
            "no complete response within the timeout of {} (still {doing} at {where_}); the target is slow or hung — raise `timeout` only if that latency is acceptable",
            humantime::format_duration(timeout),
        ),
    )
}

/// The error that decides a run whose response arrived: the status first, then other expectations.
fn first_failure(assertions: &[AssertionResult]) -> Option<ProbeError> {
    let failed = assertions.iter().find(|a| !a.passed)?;
    let class = if failed.check == "status" {
        ErrorClass::HttpStatus
    } else {
        ErrorClass::Assertion
    };
    let others = assertions.iter().filter(|a| !a.passed).count() - 1;
    let more = if others > 0 {
        format!(" (and {others} more failed)")
    } else {
        String::new()
    };
    Some(fail(
        class,
        format!(
            "{}: expected {}, got {}{more}",
            failed.check, failed.expected, failed.actual
        ),
    ))
}
