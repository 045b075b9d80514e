//! Real-browser checks (`browser:`): their validated form and validation.
//!
//! A check is a list of steps, each one action, run in headless Chromium
//! by `probe::browser`. The first step loads a page (`goto`); later `goto`s
//! may give a path on that page's site.

use std::time::Duration;

use regex::Regex;

use super::diag::Ctx;
use super::probe::{parse_duration, regex, template, Scope};
use super::raw::{RawBrowser, RawBrowserStep};
use super::steps::MAX_STEPS;
use super::template::Template;

/// The window's size when `viewport` is not set.
pub const DEFAULT_VIEWPORT: (u32, u32) = (1280, 800);
/// The largest `viewport` side, in CSS pixels (a screenshot is at most this squared).
pub const MAX_VIEWPORT_SIDE: u32 = 4096;
/// How long a step waits for its element, text or URL when `step_timeout` is not set.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest CSS selector or expected text.
pub const MAX_SELECTOR_BYTES: usize = 1024;

/// A validated `browser:` check.
#[derive(Debug, Clone)]
pub struct BrowserCheck {
    pub steps: Vec<BrowserStep>,
    pub viewport: (u32, u32),
    pub step_timeout: Duration,
    pub tls_verify: bool,
    pub fail_on_console_errors: bool,
}

#[derive(Debug, Clone)]
pub struct BrowserStep {
    pub name: String,
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// A URL, or a path on the first `goto`'s site.
    Goto(Template),
    Click(String),
    Fill {
        selector: String,
        value: Template,
    },
    WaitFor(String),
    ExpectText {
        selector: String,
        contains: String,
    },
    ExpectUrl(Regex),
}

impl Action {
    /// The action's word, as written.
    pub fn word(&self) -> &'static str {
        match self {
            Action::Goto(_) => "goto",
            Action::Click(_) => "click",
            Action::Fill { .. } => "fill",
            Action::WaitFor(_) => "wait_for",
            Action::ExpectText { .. } => "expect_text",
            Action::ExpectUrl(_) => "expect_url",
        }
    }

    /// The action and its target, for names and messages (a filled value is not shown).
    pub fn describe(&self) -> String {
        let what = match self {
            Action::Goto(t) => t.source().to_string(),
            Action::Click(s) | Action::WaitFor(s) | Action::Fill { selector: s, .. } => s.clone(),
            Action::ExpectText { selector, contains } => format!("{contains:?} in {selector}"),
            Action::ExpectUrl(r) => r.as_str().to_string(),
        };
        format!("{} {what}", self.word())
    }
}

impl BrowserCheck {
    /// The URL of the first `goto` as written (validation makes the first step one).
    pub fn first_url(&self) -> Option<&Template> {
        match self.steps.first().map(|s| &s.action) {
            Some(Action::Goto(t)) => Some(t),
            _ => None,
        }
    }

    /// Every template of the check (URLs and filled values), with its field.
    pub fn templates(&self) -> Vec<(String, &Template)> {
        (self.steps.iter().enumerate())
            .filter_map(|(i, s)| match &s.action {
                Action::Goto(t) => Some((format!("browser.steps[{i}].goto"), t)),
                Action::Fill { value, .. } => {
                    Some((format!("browser.steps[{i}].fill.value"), value))
                }
                _ => None,
            })
            .collect()
    }
}

/// `WIDTHxHEIGHT`, each side 1 to [`MAX_VIEWPORT_SIDE`].
fn viewport(ctx: &mut Ctx<'_>, text: &str) -> Option<(u32, u32)> {
    let parsed = text
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
    match parsed {
        Some((w, h))
            if (1..=MAX_VIEWPORT_SIDE).contains(&w) && (1..=MAX_VIEWPORT_SIDE).contains(&h) =>
        {
            Some((w, h))
        }
        _ => {
            ctx.error(
                "browser.viewport",
                format!("{text:?} is not a window size; write WIDTHxHEIGHT in CSS pixels, each 1 to {MAX_VIEWPORT_SIDE}, like 1280x800"),
            );
            None
        }
    }
}

/// A CSS selector or expected text: not empty, not over [`MAX_SELECTOR_BYTES`].
fn bounded(ctx: &mut Ctx<'_>, field: &str, text: &str) -> Option<String> {
    if text.trim().is_empty() || text.len() > MAX_SELECTOR_BYTES {
        ctx.error(
            field,
            format!(
                "must be 1 to {MAX_SELECTOR_BYTES} bytes (it is {})",
                text.len()
            ),
        );
        return None;
    }
    Some(text.to_string())
}

fn validate_step(raw: &RawBrowserStep, at: &str, ctx: &mut Ctx<'_>) -> Option<Action> {
    let scope = Scope::default();
    let set: Vec<&str> = [
        ("goto", raw.goto.is_some()),
        ("click", raw.click.is_some()),
        ("fill", raw.fill.is_some()),
        ("wait_for", raw.wait_for.is_some()),
        ("expect_text", raw.expect_text.is_some()),
        ("expect_url", raw.expect_url.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    if set.len() != 1 {
        ctx.error(
            at,
            format!(
                "a step has exactly one action of goto, click, fill, wait_for, expect_text, expect_url; this one has {}; split it into steps",
                if set.is_empty() { "none".to_string() } else { set.join(" and ") }
            ),
        );
        return None;
    }
    if let Some(u) = &raw.goto {
        return template(ctx, &format!("{at}.goto"), u, &scope).map(Action::Goto);
    }
    if let Some(s) = &raw.click {
        return bounded(ctx, &format!("{at}.click"), s).map(Action::Click);
    }
    if let Some(f) = &raw.fill {
        let selector = bounded(ctx, &format!("{at}.fill.selector"), &f.selector);
        let value = template(ctx, &format!("{at}.fill.value"), &f.value, &scope);
        return Some(Action::Fill {
            selector: selector?,
            value: value?,
        });
    }
    if let Some(s) = &raw.wait_for {
        return bounded(ctx, &format!("{at}.wait_for"), s).map(Action::WaitFor);
    }
    if let Some(e) = &raw.expect_text {
        let selector = e.selector.as_deref().unwrap_or("body");
        let selector = bounded(ctx, &format!("{at}.expect_text.selector"), selector);
        let contains = bounded(ctx, &format!("{at}.expect_text.contains"), &e.contains);
        return Some(Action::ExpectText {
            selector: selector?,
            contains: contains?,
        });
    }
    let r = raw.expect_url.as_deref().unwrap_or_default();
    regex(ctx, &format!("{at}.expect_url"), r).map(Action::ExpectUrl)
}

/// Checks `browser:`: one to [`MAX_STEPS`] steps, the first a `goto` of an
/// absolute http(s) URL; every problem is reported.
pub fn validate_browser(raw: &RawBrowser, ctx: &mut Ctx<'_>) -> Option<BrowserCheck> {
    let before = ctx.error_count();
    if raw.steps.is_empty() || raw.steps.len() > MAX_STEPS {
        ctx.error(
            "browser.steps",
            format!(
                "a browser check has 1 to {MAX_STEPS} steps (it has {}); the first is a goto",
                raw.steps.len()
            ),
        );
        return None;
    }
    let viewport = match &raw.viewport {
        Some(v) => viewport(ctx, v),
        None => Some(DEFAULT_VIEWPORT),
    };
    let step_timeout = match &raw.step_timeout {
        Some(t) => parse_duration(ctx, "browser.step_timeout", t),
        None => Some(DEFAULT_STEP_TIMEOUT),
    };
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (i, s) in raw.steps.iter().enumerate() {
        let at = format!("browser.steps[{i}]");
        let Some(action) = validate_step(s, &at, ctx) else {
            continue;
        };
        let mut name = s.name.clone().unwrap_or_else(|| {
            let d = action.describe();
            d.chars().take(80).collect()
        });
        if steps.iter().any(|b: &BrowserStep| b.name == name) {
            if s.name.is_some() {
                ctx.error(&format!("{at}.name"), format!("{name:?} names an earlier step too; step names are unique (they name the step's histogram)"));
            }
            name = format!("{name} #{}", i + 1);
        }
        steps.push(BrowserStep { name, action });
    }
    let absolute = |u: &str| {
        ["http://", "https://", "${"]
            .iter()
            .any(|p| u.starts_with(p))
    };
    if !raw.steps[0].goto.as_deref().is_some_and(absolute) {
        ctx.error(
            "browser.steps[0]",
            "the first step must be a goto of an http:// or https:// URL: a browser check starts by loading a page; later gotos may give a path on its site",
        );
    }
    if ctx.error_count() > before {
        return None;
    }
    Some(BrowserCheck {
        steps,
        viewport: viewport?,
        step_timeout: step_timeout?,
        tls_verify: raw.tls_verify.unwrap_or(true),
        fail_on_console_errors: raw.fail_on_console_errors.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Check, LoadReport};

    fn load(steps: &str, extra: &str) -> LoadReport {
        let yaml = format!("name: b\nevery: 1m\ntimeout: 20s\nbrowser:\n{extra}  steps:\n{steps}");
        let mut report = LoadReport::default();
        crate::config::load::load_text(std::path::Path::new("b.yaml"), &yaml, &mut report);
        report
    }

    fn errors(r: &LoadReport) -> Vec<String> {
        r.errors().map(ToString::to_string).collect()
    }

    #[test]
    fn steps_are_named_by_their_action_unless_named_and_repeats_are_told_apart() {
        let r = load(
            "    - goto: https://shop.example/\n    - click: \"#buy\"\n    - click: \"#buy\"\n    - {name: paid, expect_url: /thanks$}\n",
            "  viewport: 390x844\n",
        );
        assert!(r.is_ok(), "{:?}", errors(&r));
        let Check::Browser(b) = &r.probes[0].check else {
            panic!("a browser check")
        };
        let names: Vec<&str> = b.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "goto https://shop.example/",
                "click #buy",
                "click #buy #3",
                "paid"
            ]
        );
        assert_eq!(b.viewport, (390, 844));
        assert_eq!(r.probes[0].target_host(), "shop.example");
        assert_eq!(r.probes[0].step_names()[3], "paid");
    }

    #[test]
    fn a_bad_check_is_refused_with_each_problem_at_its_line() {
        let r = load(
            "    - click: \"#go\"\n    - {goto: /a, click: \"#b\"}\n    - {}\n    - expect_url: \"(\"\n    - fill: {selector: \"\", value: x}\n",
            "  viewport: 10000x1\n  step_timeout: soon\n",
        );
        let e = errors(&r).join("\n");
        for want in [
            "b.yaml:5:13: probe \"b\": browser.viewport",
            "b.yaml:6:17: probe \"b\": browser.step_timeout",
            "browser.steps[0]: the first step must be a goto",
            "browser.steps[1]",
            "this one has goto and click",
            "browser.steps[2]",
            "this one has none",
            "browser.steps[3].expect_url",
            "not a valid regular expression",
            "browser.steps[4].fill.selector",
            "must be 1 to 1024 bytes",
        ] {
            assert!(e.contains(want), "{want:?} in:\n{e}");
        }
        assert!(r.probes.is_empty());
        let none = load("    []\n", "");
        assert!(
            errors(&none).join("").contains("1 to 100 steps"),
            "{:?}",
            errors(&none)
        );
    }
}
