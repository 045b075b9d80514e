//! Scenarios: steps run in order under one timeout; the first failing step
//! fails the run, later steps are skipped, `always` steps (cleanup) still run.
//! Variables extracted by a step are available to the steps after it.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::time::Instant;

use super::http::{exchange_check, new_trace_id, Exchange, HttpCtx, Response};
use crate::config::probe::{ExtractFrom, Scenario, Step};
use crate::config::template::{RenderError, Vars};
use crate::config::Probe;
use crate::run::{ErrorClass, Outcome, Phases, ProbeError, StepOutcome, StepStatus};

pub async fn run(probe: &Probe, scenario: &Scenario, ctx: HttpCtx<'_>) -> Outcome {
    let started_at = Utc::now();
    let start = Instant::now();
    let deadline = start + probe.timeout;
    let trace_id = new_trace_id();
    let mut vars = Vars::new();
    let mut failure: Option<(usize, ProbeError)> = None;
    let mut steps = Vec::with_capacity(scenario.steps.len());
    let mut secrets: Vec<String> = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        if failure.is_some() && !step.always {
            steps.push(skipped(step, "an earlier step failed".into()));
            continue;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let e = fail(
                ErrorClass::Timeout,
                format!(
                    "the scenario's timeout of {} ran out before this step",
                    humantime::format_duration(probe.timeout)
                ),
            );
            steps.push(failed_without_request(step, e.clone()));
            failure.get_or_insert((i, e));
            continue;
        }
        let timeout = step.timeout.map_or(remaining, |t| t.min(remaining));
        // A cleanup step after a failure may need a variable that was never extracted: skip it, with the reason.
        if failure.is_some() {
            if let Some(missing) = missing_var(step, &vars) {
                steps.push(skipped(
                    step,
                    format!("it needs ${{{missing}}}, which an earlier step did not extract"),
                ));
                continue;
            }
        }
        // Secret headers built from variables (a token) are only known now: scrub them too.
        secrets.extend(
            (step.check.request.headers.iter())
                .filter(|h| h.secret)
                .filter_map(|h| h.value.render_vars(&vars).ok())
                .filter(|v| !v.is_empty()),
        );
        let x = exchange_check(&step.check, ctx, &trace_id, timeout, &vars).await;
        let (outcome, error) = finish_step(step, x, &mut vars, &mut secrets);
        if let Some(e) = error {
            failure.get_or_insert((i, e));
        }
        steps.push(outcome);
    }
    let mut outcome = summarize(probe, started_at, start.elapsed(), trace_id, steps, failure);
    outcome.redact(&secrets);
    outcome
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

/// Turns an exchange into the step's outcome, extracting variables when it passed.
fn finish_step(
    step: &Step,
    x: Exchange,
    vars: &mut Vars,
    secrets: &mut Vec<String>,
) -> (StepOutcome, Option<ProbeError>) {
    let mut error = x.error.clone();
    let mut extracted = Vec::new();
    if error.is_none() {
        if let Some(resp) = &x.response {
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
                        error = Some(fail(
                            ErrorClass::Assertion,
                            format!(
                                "extract `{}`: {} found {what} in the response; the steps after it need ${{{}}}",
                                ex.name,
                                describe(&ex.from),
                                ex.name
                            ),
                        ));
                        break;
                    }
                }
            }
        }
    }
    // A variable missing at render time is named in the error by the template.
    if let Some(e) = &mut error {
        if e.class == ErrorClass::Config && e.message.contains("has no value") {
            e.class = ErrorClass::Assertion;
        }
    }
    let outcome = StepOutcome {
        name: step.name.clone(),
        status: if error.is_none() {
            StepStatus::Passed
        } else {
            StepStatus::Failed
        },
        error: error.clone(),
        request: x.request,
        status_code: x.status_code,
        phases: x.phases,
        assertions: x.assertions,
        extracted,
    };
    (outcome, error)
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

/// The run's outcome: the first failing step decides; phases add up over the steps that ran.
fn summarize(
    probe: &Probe,
    started_at: chrono::DateTime<Utc>,
    elapsed: Duration,
    trace_id: String,
    steps: Vec<StepOutcome>,
    failure: Option<(usize, ProbeError)>,
) -> Outcome {
    let mut o = Outcome::failed(
        &probe.name,
        &probe.version,
        started_at,
        ErrorClass::Config,
        String::new(),
        elapsed,
    );
    o.trace_id = trace_id;
    let mut phases = Phases::default();
    for st in steps.iter().filter(|s| s.status != StepStatus::Skipped) {
        phases.add(&st.phases);
    }
    phases.total_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    o.phases = phases;
    let deciding = match &failure {
        Some((i, _)) => steps.get(*i),
        None => steps.iter().rev().find(|s| s.status == StepStatus::Passed),
    };
    if let Some(st) = deciding {
        o.request = st.request.clone();
        o.status_code = st.status_code;
        o.assertions = st.assertions.clone();
    }
    o.error = failure.map(|(i, e)| ProbeError {
        class: e.class,
        message: format!("step {} `{}`: {}", i + 1, steps[i].name, e.message),
    });
    o.success = o.error.is_none();
    o.response_bytes = 0;
    o.steps = steps;
    o
}

impl From<RenderError> for ProbeError {
    fn from(e: RenderError) -> ProbeError {
        fail(ErrorClass::Config, e.to_string())
    }
}
