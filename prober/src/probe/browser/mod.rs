//! The `browser` kind: headless Chromium, driven over the DevTools
//! protocol, runs a check's steps as a user would (go to, click, fill,
//! wait for, expect text, expect URL).
//!
//! What a run records:
//! - each step as a scenario step does (its time is the histogram phase
//!   `100 + i`, named `step:<name>`);
//! - the first page's navigation timing as the run's phases: dns, connect,
//!   tls, first byte (request sent → response's first byte) and transfer;
//!   the total is the whole script;
//! - the first page's Web Vitals as facts (`browser.ttfb_ms`,
//!   `browser.fcp_ms`, `browser.lcp_ms`, `browser.cls`), which the store keeps
//!   as the phases `vital:ttfb`, `vital:fcp`, `vital:lcp`, `vital:cls`
//!   ([`crate::run::vital_samples`]);
//! - console errors and uncaught exceptions (`browser.console_errors`,
//!   `browser.console`), and on a failed step a screenshot of the page,
//!   linked from the run (`browser.screenshot`).
//!
//! `cdp` is the protocol connection, `pool` the bounded browser processes,
//! `page` one page and the JavaScript a step runs in it, `shots` where
//! screenshots are kept.

pub mod cdp;
mod page;
pub mod pool;
pub mod shots;

use std::time::Duration;

use tokio::time::Instant;

use self::page::{browser_error, focus_and_clear, text_of, visible, Page, Reading};
pub use self::pool::{BrowserOptions, BrowserPool, PoolStats};
use super::assert::excerpt;
use super::net::{fail, micros};
use super::{Kind, Progress};
use crate::config::browser::{Action, BrowserCheck, BrowserStep};
use crate::run::{AssertionResult, ErrorClass, Phases, ProbeError, StepOutcome, StepStatus};

/// How long the first page's first paint is waited for after its load.
pub const FIRST_PAINT_WAIT: Duration = Duration::from_secs(2);
/// The console messages copied into a run's facts (all are counted).
const CONSOLE_SHOWN: usize = 5;

/// Where a run is, for a timeout's message.
#[derive(Debug, Clone)]
enum Doing {
    Starting,
    WaitingForBrowser,
    Step(usize, Instant),
}

/// The `browser` kind.
pub struct BrowserKind<'a> {
    check: &'a BrowserCheck,
    pool: &'a BrowserPool,
    probe: &'a str,
    timeout: Duration,
    doing: Doing,
    /// The first page's document id and latest reading.
    first: Option<Reading>,
}

impl<'a> BrowserKind<'a> {
    pub fn new(
        check: &'a BrowserCheck,
        pool: &'a BrowserPool,
        probe: &'a str,
        timeout: Duration,
    ) -> BrowserKind<'a> {
        BrowserKind {
            check,
            pool,
            probe,
            timeout,
            doing: Doing::Starting,
            first: None,
        }
    }

    /// The URL a `goto` loads: its own, or its path on the first `goto`'s site.
    fn url_of(&self, t: &crate::config::template::Template) -> Result<String, ProbeError> {
        let written = t
            .render()
            .map_err(|e| fail(ErrorClass::Config, format!("goto {}: {e}", t.source())))?;
        if written.starts_with("http://") || written.starts_with("https://") {
            return Ok(written);
        }
        let base = (self.check.first_url())
            .and_then(|f| f.render().ok())
            .and_then(|u| url::Url::parse(&u).ok());
        base.and_then(|b| b.join(&written).ok())
            .map(String::from)
            .ok_or_else(|| {
                fail(
                    ErrorClass::Config,
                    format!(
                        "goto {written:?} is neither a URL nor a path on the first goto's site"
                    ),
                )
            })
    }

    /// Runs one step: `Ok(Err)` is the step's (the site's) failure, `Err` the browser's.
    async fn step(
        &self,
        page: &Page<'_>,
        step: &BrowserStep,
        out: &mut StepOutcome,
    ) -> Result<Result<(), ProbeError>, cdp::CdpError> {
        let wait = self.check.step_timeout;
        let secs = humantime::format_duration(wait);
        let missing = |sel: &str| {
            fail(
                ErrorClass::Assertion,
                format!("no visible element matches `{sel}` after {secs} (browser.step_timeout); check the selector against the page, or the step before it"),
            )
        };
        match &step.action {
            Action::Goto(t) => {
                let url = match self.url_of(t) {
                    Ok(u) => u,
                    Err(e) => return Ok(Err(e)),
                };
                out.request = format!("goto {url}");
                if let Err(e) = page.goto(&url).await? {
                    return Ok(Err(e));
                }
                let r = page.read().await?;
                out.status_code = r.status;
                if let Some(s) = r.status.filter(|s| *s >= 400) {
                    return Ok(Err(fail(
                        ErrorClass::HttpStatus,
                        format!("{url} answered {s}; the page the browser shows is an error page"),
                    )));
                }
                Ok(Ok(()))
            }
            Action::Click(sel) => {
                let (found, at) = page.wait_for(&visible(sel), wait).await?;
                let xy = at
                    .as_array()
                    .and_then(|a| Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?)));
                match (found, xy) {
                    (true, Some((x, y))) => page.click_at(x, y).await.map(Ok),
                    _ => Ok(Err(missing(sel))),
                }
            }
            Action::Fill { selector, value } => {
                if !page.wait_for(&visible(selector), wait).await?.0 {
                    return Ok(Err(missing(selector)));
                }
                let text = match value.render() {
                    Ok(t) => t,
                    Err(e) => {
                        return Ok(Err(fail(
                            ErrorClass::Config,
                            format!("fill {selector}: {e}"),
                        )))
                    }
                };
                page.eval(&focus_and_clear(selector)).await?.ok();
                page.type_text(&text).await.map(Ok)
            }
            Action::WaitFor(sel) => {
                let found = page.wait_for(&visible(sel), wait).await?.0;
                Ok(if found { Ok(()) } else { Err(missing(sel)) })
            }
            Action::ExpectText { selector, contains } => {
                expect_text(page, selector, contains, wait, out).await
            }
            Action::ExpectUrl(re) => expect_url(page, re, wait, out).await,
        }
    }

    /// Runs the steps in order, recording each; stops at the first failure.
    async fn steps(
        &mut self,
        page: &Page<'_>,
        p: &mut Progress,
    ) -> Result<Result<(), ProbeError>, cdp::CdpError> {
        for (i, step) in self.check.steps.iter().enumerate() {
            let started = Instant::now();
            self.doing = Doing::Step(i, started);
            p.step = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let mut out = step_outcome(step, StepStatus::Passed);
            let result = self.step(page, step, &mut out).await?;
            out.phases.total_us = micros(started.elapsed());
            if result.is_ok() {
                self.observe(page, p).await?;
            }
            if let Err(e) = result {
                out.status = StepStatus::Failed;
                out.error = Some(e.clone());
                p.steps.push(out);
                self.skip_after(i, p);
                return Ok(Err(e));
            }
            p.steps.push(out);
        }
        Ok(Ok(()))
    }

    /// Reads the page: the first document's vitals and timing, kept while it is shown.
    async fn observe(&mut self, page: &Page<'_>, p: &mut Progress) -> Result<(), cdp::CdpError> {
        let mut r = page.read().await?;
        // The first page's first paint may come a moment after its load (a
        // busy machine): waited for, briefly, before a next step can leave it.
        let until = Instant::now() + FIRST_PAINT_WAIT;
        while self.first.is_none() && r.id.is_some() && r.fcp_ms.is_none() && Instant::now() < until
        {
            tokio::time::sleep(page::POLL_EVERY).await;
            r = page.read().await?;
        }
        let same = match &self.first {
            None => r.id.is_some(),
            Some(f) => f.id.is_some() && f.id == r.id,
        };
        if same {
            let [dns, connect, tls, first_byte, transfer] =
                r.nav.map(|ms| ms.map(|ms| (ms * 1000.0).round() as u64));
            p.hop = Phases {
                dns_us: dns,
                connect_us: connect,
                tls_us: tls,
                first_byte_us: first_byte,
                transfer_us: transfer,
                total_us: 0,
            };
            p.status = r.status;
            p.response_bytes = r.bytes;
            self.first = Some(r);
        }
        Ok(())
    }

    /// The steps after `i`, not run.
    fn skip_after(&self, i: usize, p: &mut Progress) {
        for s in self.check.steps.iter().skip(i + 1) {
            p.steps.push(step_outcome(s, StepStatus::Skipped));
        }
    }

    /// A failed step's screenshot, kept and linked from the run.
    async fn screenshot(&self, page: &Page<'_>, p: &mut Progress) {
        let Some(png) = page.screenshot().await else {
            return;
        };
        let opts = self.pool.options();
        match shots::save(opts, self.probe, p.run_id, p.attempt, &png).await {
            Ok((link, file)) => {
                p.info.insert("browser.screenshot".into(), link);
                let file = std::path::absolute(&file).unwrap_or(file);
                p.info
                    .insert("browser.screenshot_file".into(), file.display().to_string());
            }
            Err(e) => tracing::warn!(probe = %self.probe, "{e}"),
        }
    }
}

/// A step's record before it runs.
fn step_outcome(step: &BrowserStep, status: StepStatus) -> StepOutcome {
    StepOutcome {
        name: step.name.clone(),
        status,
        error: None,
        request: step.action.describe(),
        status_code: None,
        phases: Phases::default(),
        assertions: Vec::new(),
        extracted: Vec::new(),
    }
}

/// `expect_text`: waits until the element's text contains `contains`; the check recorded.
async fn expect_text(
    page: &Page<'_>,
    selector: &str,
    contains: &str,
    wait: Duration,
    out: &mut StepOutcome,
) -> Result<Result<(), ProbeError>, cdp::CdpError> {
    let needle = serde_json::to_string(contains).unwrap_or_default();
    let expr = format!(
        "(() => {{ const t = {}; return t !== null && t.includes({needle}) ? t : false; }})()",
        text_of(selector)
    );
    let (ok, _) = page.wait_for(&expr, wait).await?;
    let seen = page.eval(&text_of(selector)).await?.unwrap_or_default();
    let actual = seen
        .as_str()
        .map_or_else(|| format!("no element matches `{selector}`"), excerpt);
    out.assertions.push(AssertionResult {
        check: format!("text of {selector} contains"),
        passed: ok,
        expected: contains.to_string(),
        actual: actual.clone(),
    });
    if ok {
        return Ok(Ok(()));
    }
    Ok(Err(fail(
        ErrorClass::Assertion,
        format!(
            "the text of `{selector}` did not contain {contains:?} within {} (it was: {actual})",
            humantime::format_duration(wait)
        ),
    )))
}

/// `expect_url`: waits until the page's URL matches; the check recorded.
async fn expect_url(
    page: &Page<'_>,
    re: &regex::Regex,
    wait: Duration,
    out: &mut StepOutcome,
) -> Result<Result<(), ProbeError>, cdp::CdpError> {
    let until = Instant::now() + wait;
    loop {
        let href = page.eval("location.href").await?.unwrap_or_default();
        let href = href.as_str().unwrap_or_default().to_string();
        let ok = re.is_match(&href);
        if ok || Instant::now() >= until {
            out.assertions.push(AssertionResult {
                check: "url matches".into(),
                passed: ok,
                expected: re.as_str().to_string(),
                actual: href.clone(),
            });
            if ok {
                return Ok(Ok(()));
            }
            return Ok(Err(fail(
                ErrorClass::Assertion,
                format!(
                    "the page's URL {href} did not match {} within {}",
                    re.as_str(),
                    humantime::format_duration(wait)
                ),
            )));
        }
        tokio::time::sleep(page::POLL_EVERY).await;
    }
}

/// The facts of the first page's Web Vitals, in the units their names say.
fn vitals_info(r: &Reading, p: &mut Progress) {
    let ms = |v: f64| format!("{v:.1}");
    for (key, v) in [
        ("browser.ttfb_ms", r.ttfb_ms),
        ("browser.fcp_ms", r.fcp_ms),
        ("browser.lcp_ms", r.lcp_ms),
    ] {
        if let Some(v) = v {
            p.info.insert(key.into(), ms(v));
        }
    }
    if let Some(c) = r.cls {
        p.info.insert("browser.cls".into(), format!("{c:.4}"));
    }
}

impl Kind for BrowserKind<'_> {
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
        let first = self
            .check
            .first_url()
            .map(|t| t.render_masked().unwrap_or_else(|_| t.source().to_string()));
        p.request = format!("browser {}", first.as_deref().unwrap_or_default());
        p.target = first.unwrap_or_default();
        self.doing = Doing::WaitingForBrowser;
        let waited = Instant::now();
        let mut lease = self
            .pool
            .lease()
            .await
            .map_err(|e| fail(ErrorClass::Config, e))?;
        // Waiting for a free browser is not the site's latency.
        p.exclude(waited.elapsed());
        let cdp = lease.cdp();
        let opening = Instant::now();
        let page = Page::open(cdp, self.check.viewport, self.check.tls_verify)
            .await
            .map_err(|e| browser_error(&e))?;
        // Nor is opening a fresh page in the browser.
        p.exclude(opening.elapsed());
        let ran = self.steps(&page, p).await;
        if let Some(r) = self.first.clone() {
            vitals_info(&r, p);
        }
        let console = cdp.take_console(&page.session);
        if console.count > 0 {
            p.info
                .insert("browser.console_errors".into(), console.count.to_string());
            let shown: Vec<&str> = console
                .errors
                .iter()
                .take(CONSOLE_SHOWN)
                .map(String::as_str)
                .collect();
            p.info.insert("browser.console".into(), shown.join("\n"));
        }
        let mut result = match ran {
            Ok(r) => r,
            Err(e) => return Err(browser_error(&e)),
        };
        if result.is_ok() && self.check.fail_on_console_errors && console.count > 0 {
            result = Err(fail(
                ErrorClass::Assertion,
                format!(
                    "the page logged {} console error(s), and browser.fail_on_console_errors is set; the first: {}",
                    console.count,
                    console.errors.first().map_or("", String::as_str)
                ),
            ));
        }
        if result.is_err() {
            self.screenshot(&page, p).await;
        }
        page.close().await;
        let budget = self.pool.options().memory_mb * 1024 * 1024;
        let rss = lease.memory_bytes();
        if rss > budget {
            tracing::warn!(probe = %self.probe, "the browser used {} MiB, over browser.memory_mb ({}); it is replaced", rss >> 20, budget >> 20);
        } else {
            lease.keep();
        }
        result
    }

    fn timed_out(&self, p: &Progress) -> ProbeError {
        let doing = match &self.doing {
            Doing::Starting => "starting".to_string(),
            Doing::WaitingForBrowser => format!(
                "waiting for a free browser: all {} (browser.max_concurrent) were busy",
                self.pool.options().max_concurrent
            ),
            Doing::Step(i, since) => format!(
                "at step {} `{}` for {}, after {} step(s) passed",
                i + 1,
                self.check.steps[*i].action.describe(),
                humantime::format_duration(Duration::from_millis(
                    since.elapsed().as_millis() as u64
                )),
                p.steps.len()
            ),
        };
        fail(
            ErrorClass::Timeout,
            format!(
                "the browser check did not finish within the timeout of {} (still {doing}); a page that never finishes loading, or a slow step, is the usual cause",
                humantime::format_duration(self.timeout)
            ),
        )
    }

    fn conclude(&mut self, p: &mut Progress, error: Option<ProbeError>) -> Option<ProbeError> {
        // Cut during a step: that step failed, the ones after it did not run.
        if let (Doing::Step(i, since), Some(e)) = (&self.doing, &error) {
            let i = *i;
            if p.steps.len() == i {
                let mut out = step_outcome(&self.check.steps[i], StepStatus::Failed);
                out.error = Some(e.clone());
                out.phases.total_us = micros(since.elapsed());
                p.steps.push(out);
                self.skip_after(i, p);
            }
        }
        if let Some(r) = self.first.clone() {
            vitals_info(&r, p);
        }
        error
    }
}
