//! The raw form of a real-browser check (`browser:`), beside `raw.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A real-browser check: headless Chromium runs the steps in order, as a user would.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `steps:`, the first a `goto`"
)]
pub struct RawBrowser {
    /// The steps, in order; the first is a `goto`.
    pub steps: Vec<RawBrowserStep>,
    /// The window's size in CSS pixels, `WIDTHxHEIGHT` (default `1280x800`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+x[0-9]+$"))]
    pub viewport: Option<String>,
    /// How long a step waits for its element, text or URL before it fails (default 5s;
    /// a `goto` waits for the page's load until the probe's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout: Option<String>,
    /// Verify the sites' certificates (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// Fail the run when the page logs a console error or throws (default false: they are recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_on_console_errors: Option<bool>,
}

/// One step: exactly one action, and optionally a name (the histograms' `step:<name>`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a step: a mapping with one of `goto`, `click`, `fill`, `wait_for`, `expect_text`, `expect_url`"
)]
pub struct RawBrowserStep {
    /// The step's name in results and histograms (default: its action and target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Load an `http://` or `https://` URL, or a path on the first `goto`'s site; waits for the page's load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goto: Option<String>,
    /// Click the element a CSS selector finds (a real mouse click at its centre).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click: Option<String>,
    /// Type a value into the field a CSS selector finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<RawFill>,
    /// Wait until an element the CSS selector finds is visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<String>,
    /// Wait until an element's text contains a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_text: Option<RawExpectText>,
    /// Wait until the page's URL matches a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_url: Option<String>,
}

/// `fill:`: a field and the value typed into it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `selector` and `value`"
)]
pub struct RawFill {
    /// CSS selector of the field.
    pub selector: String,
    /// What is typed; `${env:NAME}` and `${secret:NAME}` are replaced (a secret is redacted from every output).
    pub value: String,
}

/// `expect_text:`: the text an element must contain.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `contains` and optionally `selector`"
)]
pub struct RawExpectText {
    /// CSS selector of the element (default `body`: the whole page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The text it must contain.
    pub contains: String,
}
