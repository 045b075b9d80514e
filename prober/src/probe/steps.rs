//! Scenarios: steps run in order under the probe's timeout (the runner's);
//! the first failing step fails the run, later steps are skipped, `always`
//! steps (cleanup) still run. Variables extracted by a step are available to
//! the steps after it. A step's own `timeout`, when shorter than what is left,
//! cuts that step alone, and an `always` step after it still runs.
//!
//! Each step that ends goes into the attempt's [`Progress`], so a scenario cut
//! by the probe's timeout records the steps before the cut, the step it cut
//! (failed, with what it reached) and the steps it never started.

use std::time::Duration;

use serde_json::Value;

use super::http::{exchange, judge, timeout_error, HttpCtx, Response};
use super::{Kind, Progress};
use crate::config::probe::{ExtractFrom, Scenario, Step};
use crate::config::template::{RenderError, Vars};
use crate::run::{ErrorClass, Phases, ProbeError, StepOutcome, StepStatus};

/// The `steps` kind: a scenario.
pub struct ScenarioKind<'a> {
    scenario: &'a Scenario,
    ctx: HttpCtx<'a>,
    timeout: Duration,
}

impl<'a> ScenarioKind<'a> {
    pub fn new(scenario: &'a Scenario, ctx: HttpCtx<'a>, timeout: Duration) -> ScenarioKind<'a> {
        ScenarioKind {
            scenario,
            ctx,
            timeout,
        }
    }

    /// Runs one step (its request, expectations and extractions) into `p.steps`.
    async fn step(&self, step: &Step, vars: &mut Vars, p: &mut Progress) {
        // Secret headers built from variables (a token) are only known now: scrub them too.
        let secret_headers = (step.check.request.headers.iter())
            .filter(|h| h.secret)
            .filter_map(|h| h.value.render_vars(vars).ok())
            .filter(|v| !v.is_empty());
        p.secrets.extend(secret_headers.collect::<Vec<_>>());
        let req = &step.check.request;
        p.begin_request(format!("{} {}", req.method, req.url.source()));
        let own_timeout = step.timeout.filter(|t| *t < p.remaining());
        let response = match own_timeout {
            None => exchange(req, self.ctx, vars, p).await,
            Some(t) => match tokio::time::timeout(t, exchange(req, self.ctx, vars, p)).await {
                Ok(r) => r,
                Err(_) => {
                    p.cut();
                    Err(timeout_error(p, t))
                }
            },
        };
        let (result, extracted) = match response {
            Ok(response) => match judge(&step.check.expect, &response, p, vars) {
                Ok(()) => extract_all(step, &response, vars, &mut p.secrets),
                Err(e) => (Err(e), Vec::new()),
            },
            Err(e) => (Err(e), Vec::new()),
        };
        let outcome = step_outcome(step, result.err(), extracted, p);
        p.steps.push(outcome);
    }
}

impl Kind for ScenarioKind<'_> {
    async fn check(&mut self, p: &mut Progress) -> Result<(), ProbeError> {
        let mut vars = Vars::new();
        for (i, step) in self.scenario.steps.iter().enumerate() {
            let failed = p.steps.iter().any(|s| s.status == StepStatus::Failed);
            if failed && !step.always {
                p.steps.push(skipped(step, "an earlier step failed".into()));
                continue;
            }
            if p.remaining().is_zero() {
                p.steps.push(ran_out(step, self.timeout));
                continue;
            }
            // A cleanup step after a failure may need a variable that was never extracted: skip it, with the reason.
            if let Some(missing) = missing_var(step, &vars).filter(|_| failed) {
                p.steps.push(skipped(
                    step,
                    format!("it needs ${{{missing}}}, which an earlier step did not extract"),
                ));
                continue;
            }
            p.step = u32::try_from(i + 1).unwrap_or(u32::MAX);
            self.step(step, &mut vars, p).await;
        }
        // The steps decide; `conclude` says how.
        Ok(())
    }

    fn timed_out(&self, p: &Progress) -> ProbeError {
        timeout_error(p, self.timeout)
    }

    /// Completes a cut scenario's steps, then the first failing step decides.
    fn conclude(&mut self, p: &mut Progress, cut: Option<ProbeError>) -> Option<ProbeError> {
        if let Some(e) = cut {
            // The step under way when the timeout cut the scenario, then those never started.
            if let Some(step) = self.scenario.steps.get(p.steps.len()) {
                let outcome = step_outcome(step, Some(e), Vec::new(), p);
                p.steps.push(outcome);
            }
            let started = p.steps.len().min(self.scenario.steps.len());
            for step in &self.scenario.steps[started..] {
                let outcome = if step.always {
                    ran_out(step, self.timeout)
                } else {
                    skipped(step, "an earlier step failed".into())
                };
                p.steps.push(outcome);
            }
        }
        summarize(p)
    }
}

fn fail(class: ErrorClass, message: String) -> ProbeError {
    ProbeError { class, message }
}

/// The first scenario variable the step's request needs and does not have.
fn missing_var(step: &Step, vars: &Vars) -> Option<String> {
    let r = &step.check.request;
    let mut templates = vec![&r.url];
    templates.extend(r.headers.iter().map(|h| &h.value));
    if let Some(crate::config::probe::Body::Text(t) | crate::config::probe::Body::Json(t)) = &r.body
    {
        templates.push(t);
    }
    templates
        .into_iter()
        .flat_map(|t| t.vars())
        .find(|v| !vars.contains_key(*v))
        .map(str::to_string)
}

fn skipped(step: &Step, why: String) -> StepOutcome {
    StepOutcome {
        name: step.name.clone(),
        status: StepStatus::Skipped,
        error: Some(fail(ErrorClass::Config, format!("skipped: {why}"))),
        request: format!(
            "{} {}",
            step.check.request.method,
            step.check.request.url.source()
        ),
        status_code: None,
        phases: Phases::default(),
        assertions: Vec::new(),
        extracted: Vec::new(),
    }
}

fn failed_without_request(step: &Step, e: ProbeError) -> StepOutcome {
    StepOutcome {
        status: StepStatus::Failed,
        error: Some(e),
        ..skipped(step, String::new())
    }
}

/// A step that never started: the scenario's timeout ran out before it.
fn ran_out(step: &Step, timeout: Duration) -> StepOutcome {
    let e = fail(
        ErrorClass::Timeout,
        format!(
            "the scenario's timeout of {} ran out before this step",
            humantime::format_duration(timeout)
        ),
    );
    failed_without_request(step, e)
}

/// Extracts the step's variables from a response that passed; the names extracted,
/// and the error when one is missing.
fn extract_all(
    step: &Step,
    resp: &Response,
    vars: &mut Vars,
    secrets: &mut Vec<String>,
) -> (Result<(), ProbeError>, Vec<String>) {
    let mut extracted = Vec::new();
    for ex in &step.extract {
        match extract(&ex.from, resp) {
            Some(v) if !v.is_empty() => {
                if ex.secret {
                    secrets.push(v.clone());
                }
                vars.insert(ex.name.clone(), v);
                extracted.push(ex.name.clone());
            }
            found => {
                let what = if found.is_some() {
                    "an empty value"
                } else {
                    "nothing"
                };
                let e = fail(
                    ErrorClass::Assertion,
                    format!(
                        "extract `{}`: {} found {what} in the response; the steps after it need ${{{}}}",
                        ex.name,
                        describe(&ex.from),
                        ex.name
                    ),
                );
                return (Err(e), extracted);
            }
        }
    }
    (Ok(()), extracted)
}

/// The step's outcome from what its request reached, and its error.
fn step_outcome(
    step: &Step,
    mut error: Option<ProbeError>,
    extracted: Vec<String>,
    p: &Progress,
) -> StepOutcome {
    // A variable missing at render time is named in the error by the template.
    if let Some(e) = &mut error {
        if e.class == ErrorClass::Config && e.message.contains("has no value") {
            e.class = ErrorClass::Assertion;
        }
    }
    StepOutcome {
        name: step.name.clone(),
        status: if error.is_none() {
            StepStatus::Passed
        } else {
            StepStatus::Failed
        },
        error,
        request: p.request.clone(),
        status_code: p.status,
        phases: p.request_phases(),
        assertions: p.assertions.clone(),
        extracted,
    }
}

fn describe(from: &ExtractFrom) -> String {
    match from {
        ExtractFrom::Json { source, .. } => format!("json path {source}"),
        ExtractFrom::Header(h) => format!("header {h}"),
        ExtractFrom::Regex(r) => format!("regex {:?}", r.as_str()),
        ExtractFrom::Status => "status".into(),
    }
}

/// The value `from` selects in the response, if any.
fn extract(from: &ExtractFrom, resp: &Response) -> Option<String> {
    match from {
        ExtractFrom::Status => Some(resp.status.as_u16().to_string()),
        ExtractFrom::Header(h) => resp
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ExtractFrom::Regex(re) => {
            let body = String::from_utf8_lossy(&resp.body);
            let caps = re.captures(&body)?;
            caps.get(1)
                .or_else(|| caps.get(0))
                .map(|m| m.as_str().to_string())
        }
        ExtractFrom::Json { path, .. } => {
            let doc: Value = serde_json::from_slice(&resp.body).ok()?;
            let found = path.query(&doc).all();
            match found.first()? {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        }
    }
}

/// The scenario as one outcome: the first failing step decides (its error,
/// prefixed with the step) and shows its request; else the last step that
/// passed. Phases add up over the steps that ran.
fn summarize(p: &mut Progress) -> Option<ProbeError> {
    let mut phases = Phases::default();
    for st in p.steps.iter().filter(|s| s.status != StepStatus::Skipped) {
        phases.add(&st.phases);
    }
    p.begin_request(String::new());
    p.hop = phases;
    let failed = p.steps.iter().position(|s| s.status == StepStatus::Failed);
    let deciding = match failed {
        Some(i) => p.steps.get(i),
        None => p
            .steps
            .iter()
            .rev()
            .find(|s| s.status == StepStatus::Passed),
    };
    if let Some(st) = deciding {
        p.request = st.request.clone();
        p.status = st.status_code;
        p.assertions = st.assertions.clone();
    }
    let i = failed?;
    let st = &p.steps[i];
    let e = st
        .error
        .clone()
        .unwrap_or_else(|| fail(ErrorClass::Assertion, String::new()));
    Some(ProbeError {
        class: e.class,
        message: format!("step {} `{}`: {}", i + 1, st.name, e.message),
    })
}

impl From<RenderError> for ProbeError {
    fn from(e: RenderError) -> ProbeError {
        fail(ErrorClass::Config, e.to_string())
    }
}
