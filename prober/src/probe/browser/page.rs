//! One page in its own browser context (no cookies or cache shared with
//! another check), and what a step does to it over the DevTools protocol.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::cdp::{Cdp, CdpError};
use crate::probe::net::fail;
use crate::run::{ErrorClass, ProbeError};

/// How often a waiting step looks at the page again.
pub const POLL_EVERY: Duration = Duration::from_millis(25);
/// The largest screenshot kept, in bytes.
pub const MAX_SCREENSHOT_BYTES: usize = 16 * 1024 * 1024;

/// Injected into every document before its own scripts: First Contentful
/// Paint, Largest Contentful Paint and Cumulative Layout Shift as
/// web-vitals computes them (CLS: the largest session window of shifts
/// without recent input, shifts under 1 s apart, a window at most 5 s).
const VITALS: &str = r#"(() => {
  if (window.__prober) return;
  const v = window.__prober = {id: Math.random().toString(36).slice(2), fcp: null, lcp: null, cls: 0};
  const watch = (type, f) => { try { new PerformanceObserver(l => l.getEntries().forEach(f)).observe({type, buffered: true}); } catch (e) {} };
  watch('paint', e => { if (e.name === 'first-contentful-paint') v.fcp = e.startTime; });
  watch('largest-contentful-paint', e => { v.lcp = e.startTime; });
  let sum = 0, first = 0, last = 0;
  watch('layout-shift', e => {
    if (e.hadRecentInput) return;
    if (sum && e.startTime - last < 1000 && e.startTime - first < 5000) { sum += e.value; }
    else { sum = e.value; first = e.startTime; }
    last = e.startTime;
    v.cls = Math.max(v.cls, sum);
  });
})()"#;

/// What is read of a document after each step: its id (set by [`VITALS`]),
/// the vitals so far and the navigation's timing, in milliseconds.
const READ: &str = r#"(() => {
  const v = window.__prober || {};
  const n = performance.getEntriesByType('navigation')[0];
  const d = (a, b) => (a > 0 && b >= a) ? b - a : null;
  return {id: v.id || null, fcp: v.fcp ?? null, lcp: v.lcp ?? null, cls: v.cls ?? null,
    nav: n ? {dns: d(n.domainLookupStart, n.domainLookupEnd),
      connect: d(n.connectStart, n.secureConnectionStart > 0 ? n.secureConnectionStart : n.connectEnd),
      tls: n.secureConnectionStart > 0 ? d(n.secureConnectionStart, n.connectEnd) : null,
      first_byte: d(n.requestStart, n.responseStart), transfer: d(n.responseStart, n.responseEnd),
      ttfb: n.responseStart > 0 ? n.responseStart : null, status: n.responseStatus || null,
      bytes: n.transferSize || 0} : null};
})()"#;

/// A document's vitals and navigation timing, as [`READ`] gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub id: Option<String>,
    pub fcp_ms: Option<f64>,
    pub lcp_ms: Option<f64>,
    pub cls: Option<f64>,
    pub ttfb_ms: Option<f64>,
    /// dns, connect, tls, first byte, transfer (ms).
    pub nav: [Option<f64>; 5],
    pub status: Option<u16>,
    pub bytes: u64,
}

impl Reading {
    pub fn parse(v: &Value) -> Reading {
        let f = |v: &Value| v.as_f64().filter(|x| x.is_finite() && *x >= 0.0);
        let n = &v["nav"];
        Reading {
            id: v["id"].as_str().map(str::to_string),
            fcp_ms: f(&v["fcp"]),
            lcp_ms: f(&v["lcp"]),
            cls: f(&v["cls"]),
            ttfb_ms: f(&n["ttfb"]),
            nav: ["dns", "connect", "tls", "first_byte", "transfer"].map(|k| f(&n[k])),
            status: n["status"].as_u64().and_then(|s| u16::try_from(s).ok()),
            bytes: n["bytes"].as_u64().unwrap_or(0),
        }
    }
}

/// A page of one check.
pub struct Page<'c> {
    cdp: &'c Cdp,
    pub session: String,
    context: String,
}

/// A DevTools failure during a step: the browser broke, not the site.
pub fn browser_error(e: &CdpError) -> ProbeError {
    fail(
        ErrorClass::InvalidResponse,
        format!("the browser failed during the check ({e}); it is replaced for the next run"),
    )
}

impl<'c> Page<'c> {
    /// A fresh context and page, sized to `viewport`, its console and vitals watched.
    pub async fn open(
        cdp: &'c Cdp,
        viewport: (u32, u32),
        tls_verify: bool,
    ) -> Result<Page<'c>, CdpError> {
        let ctx = cdp
            .call(
                None,
                "Target.createBrowserContext",
                json!({"disposeOnDetach": true}),
            )
            .await?;
        let context = ctx["browserContextId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let target = cdp
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": context, "width": viewport.0, "height": viewport.1}),
            )
            .await?;
        let attached = cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let page = Page {
            cdp,
            session,
            context,
        };
        for m in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(m, json!({})).await?;
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": viewport.0, "height": viewport.1, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await?;
        page.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": VITALS}),
        )
        .await?;
        if !tls_verify {
            page.call(
                "Security.setIgnoreCertificateErrors",
                json!({"ignore": true}),
            )
            .await?;
        }
        Ok(page)
    }

    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CdpError> {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Closes the page and its context (cookies, cache and storage go with it).
    pub async fn close(self) {
        let _ = (self.cdp)
            .call(
                None,
                "Target.disposeBrowserContext",
                json!({"browserContextId": self.context}),
            )
            .await;
    }

    /// A JavaScript expression's value (promises awaited); `Err(message)` if
    /// it threw, or if the page it ran in went away under it (a click that
    /// navigates races the next step's look at the page): a waiting step
    /// then looks again, at the new page.
    pub async fn eval(&self, expr: &str) -> Result<Result<Value, String>, CdpError> {
        let r = match self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await
        {
            Err(CdpError::Refused { message, .. }) if navigated_away(&message) => {
                return Ok(Err(message))
            }
            other => other?,
        };
        Ok(match r.get("exceptionDetails") {
            Some(d) => Err((d["exception"]["description"].as_str())
                .or_else(|| d["text"].as_str())
                .unwrap_or("an exception")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()),
            None => Ok(r["result"]["value"].clone()),
        })
    }

    /// The document's vitals and navigation timing now.
    pub async fn read(&self) -> Result<Reading, CdpError> {
        Ok(Reading::parse(&self.eval(READ).await?.unwrap_or_default()))
    }

    /// Loads `url` and waits for the new document's `load` event (cut only
    /// by the attempt's timeout). The document is told from the one before
    /// by the id [`VITALS`] gives each.
    pub async fn goto(&self, url: &str) -> Result<Result<(), ProbeError>, CdpError> {
        let before = self
            .eval("window.__prober ? window.__prober.id : null")
            .await?;
        let before = before.ok().and_then(|v| v.as_str().map(str::to_string));
        let r = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(e) = r["errorText"].as_str().filter(|e| !e.is_empty()) {
            return Ok(Err(navigation_error(url, e)));
        }
        let old = serde_json::to_string(&before).unwrap_or_default();
        let loaded = format!(
            "document.readyState === 'complete' && !!window.__prober && window.__prober.id !== {old}"
        );
        loop {
            if self.eval(&loaded).await? == Ok(Value::Bool(true)) {
                return Ok(Ok(()));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Polls `expr` (which returns a value, or null while not there yet)
    /// until it gives a value or `wait` ends; the last value either way.
    pub async fn wait_for(&self, expr: &str, wait: Duration) -> Result<(bool, Value), CdpError> {
        let until = Instant::now() + wait;
        loop {
            let v = self.eval(expr).await?;
            let done = matches!(&v, Ok(x) if !x.is_null() && *x != Value::Bool(false));
            let v = v.unwrap_or_else(Value::String);
            if done || Instant::now() >= until {
                return Ok((done, v));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// A real click (mouse moved, pressed, released) at the point `(x, y)`.
    pub async fn click_at(&self, x: f64, y: f64) -> Result<(), CdpError> {
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await?;
        }
        Ok(())
    }

    /// Types `text` into the focused element, as input events.
    pub async fn type_text(&self, text: &str) -> Result<(), CdpError> {
        self.call("Input.insertText", json!({"text": text}))
            .await
            .map(|_| ())
    }

    /// A PNG of the viewport (`None` when the browser gives none or it is over [`MAX_SCREENSHOT_BYTES`]).
    pub async fn screenshot(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await
            .ok()?;
        let data = r["data"].as_str()?;
        if data.len() / 4 * 3 > MAX_SCREENSHOT_BYTES {
            return None;
        }
        base64::engine::general_purpose::STANDARD.decode(data).ok()
    }
}

/// Whether the browser refused an evaluation because its document was being
/// replaced (Chromium's words for it), not because the browser broke.
fn navigated_away(message: &str) -> bool {
    [
        "navigated or closed",
        "Execution context was destroyed",
        "Cannot find context with specified id",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// A JavaScript expression: the element `selector` finds, if it is visible,
/// as its centre `[x, y]` (scrolled into view first); null otherwise.
pub fn visible(selector: &str) -> String {
    let sel = serde_json::to_string(selector).unwrap_or_default();
    format!(
        "(() => {{ const e = document.querySelector({sel}); if (!e) return null;
          const s = getComputedStyle(e); if (s.visibility === 'hidden' || s.display === 'none') return null;
          e.scrollIntoView({{block: 'center', inline: 'center'}});
          const r = e.getBoundingClientRect(); if (r.width === 0 || r.height === 0) return null;
          return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
    )
}

/// A JavaScript expression: the element's text (null when no element matches).
pub fn text_of(selector: &str) -> String {
    let sel = serde_json::to_string(selector).unwrap_or_default();
    format!("(() => {{ const e = document.querySelector({sel}); return e ? (e.innerText ?? e.textContent ?? '') : null; }})()")
}

/// A JavaScript expression: focuses the element and empties it (null when no element matches).
pub fn focus_and_clear(selector: &str) -> String {
    let sel = serde_json::to_string(selector).unwrap_or_default();
    format!(
        "(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.focus();
          if ('value' in e) {{ e.value = ''; }} return document.activeElement === e; }})()"
    )
}

/// The class and advice of a navigation the browser could not make (its `net::ERR_*`).
pub fn navigation_error(url: &str, error: &str) -> ProbeError {
    let e = error.trim_start_matches("net::");
    let (class, advice) = match e {
        "ERR_NAME_NOT_RESOLVED" | "ERR_NAME_RESOLUTION_FAILED" => {
            (ErrorClass::Dns, "check the host name and the DNS the prober uses")
        }
        "ERR_CONNECTION_REFUSED" | "ERR_CONNECTION_RESET" | "ERR_CONNECTION_CLOSED"
        | "ERR_CONNECTION_FAILED" | "ERR_ADDRESS_UNREACHABLE" | "ERR_INTERNET_DISCONNECTED" => {
            (ErrorClass::Connect, "check that the site is up and reachable from the prober")
        }
        "ERR_TIMED_OUT" | "ERR_CONNECTION_TIMED_OUT" => {
            (ErrorClass::Timeout, "the site did not answer in time")
        }
        "ERR_TOO_MANY_REDIRECTS" => (ErrorClass::RedirectLimit, "the site redirects in a loop"),
        "ERR_HTTP_RESPONSE_CODE_FAILURE" => {
            (ErrorClass::HttpStatus, "the site answered an error status with no page")
        }
        e if e.starts_with("ERR_CERT") || e.starts_with("ERR_SSL") => (
            ErrorClass::Tls,
            "the certificate or TLS setup was refused; fix it, or set browser.tls_verify: false for a test site",
        ),
        _ => (ErrorClass::InvalidResponse, "see the browser's error name"),
    };
    fail(
        class,
        format!("the browser could not load {url} ({error}); {advice}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_takes_the_vitals_and_timing_and_drops_nonsense() {
        let v = json!({"id": "x1", "fcp": 120.5, "lcp": 480.0, "cls": 0.02,
            "nav": {"dns": null, "connect": 0.4, "tls": null, "first_byte": 12.0, "transfer": 1.5,
                    "ttfb": 14.2, "status": 200, "bytes": 900}});
        let r = Reading::parse(&v);
        assert_eq!(r.id.as_deref(), Some("x1"));
        assert_eq!(
            (r.fcp_ms, r.lcp_ms, r.cls, r.ttfb_ms),
            (Some(120.5), Some(480.0), Some(0.02), Some(14.2))
        );
        assert_eq!(r.nav, [None, Some(0.4), None, Some(12.0), Some(1.5)]);
        assert_eq!((r.status, r.bytes), (Some(200), 900));

        let bad = Reading::parse(&json!({"fcp": -1.0, "lcp": "x", "nav": null}));
        assert_eq!(bad, Reading::default());
    }

    #[test]
    fn navigation_errors_get_their_class() {
        let c = |e: &str| navigation_error("http://h/", e).class;
        assert_eq!(c("net::ERR_NAME_NOT_RESOLVED"), ErrorClass::Dns);
        assert_eq!(c("net::ERR_CONNECTION_REFUSED"), ErrorClass::Connect);
        assert_eq!(c("net::ERR_CERT_AUTHORITY_INVALID"), ErrorClass::Tls);
        assert_eq!(c("net::ERR_TOO_MANY_REDIRECTS"), ErrorClass::RedirectLimit);
        assert_eq!(c("net::ERR_ABORTED"), ErrorClass::InvalidResponse);
        assert!(navigation_error("http://h/", "net::ERR_CONNECTION_REFUSED")
            .message
            .contains("http://h/"));
    }

    #[test]
    fn a_page_replaced_under_an_evaluation_is_not_a_broken_browser() {
        assert!(navigated_away("Inspected target navigated or closed"));
        assert!(navigated_away("Execution context was destroyed."));
        assert!(!navigated_away("Session with given id not found."));
    }

    #[test]
    fn selectors_are_quoted_as_javascript_strings() {
        let js = visible(r#"a[title="x'y"]"#);
        assert!(
            js.contains(r#"document.querySelector("a[title=\"x'y\"]")"#),
            "{js}"
        );
    }
}
