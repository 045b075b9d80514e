//! `prober once`: run probes now and print exactly what a scheduled run would record.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::check::print_diagnostics;
use super::{EXIT_CONFIG, EXIT_FAILED};
use crate::config::{load_paths, Probe};
use crate::run::{phase_samples, Outcome, Phases};

pub fn run(target: &str, probe_paths: &[PathBuf], json: bool, config: Option<PathBuf>) -> ExitCode {
    let probes = match select(target, probe_paths) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // The settings the daemon's runner takes (`proxy`, `browser`), from the same file.
    let args = crate::config::settings::SettingsArgs {
        config,
        ..Default::default()
    };
    let check =
        crate::config::settings::Settings::check(&args, crate::config::settings::EnvMode::Warn);
    let Some(settings) = check.settings.clone() else {
        for e in check.errors() {
            eprintln!("{e}");
        }
        eprintln!("refusing to run: the settings file above has errors (see `prober check`)");
        return ExitCode::from(EXIT_CONFIG);
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    // The daemon's own executor and guard, so a run here is a scheduled run:
    // variables and environment resolved at run time, retries, timeouts.
    let outcomes = runtime.block_on(async {
        let exec = crate::daemon::executor(&settings).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for p in probes {
            let started_at = chrono::Utc::now();
            let run_id = uuid::Uuid::now_v7();
            out.push(crate::schedule::run_guarded(&exec, Arc::new(p), run_id, started_at).await);
        }
        Ok::<_, String>(out)
    });
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut stdout = std::io::stdout().lock();
    for o in &outcomes {
        let text = if json { json_line(o) } else { render_text(o) };
        // A closed pipe (`| head`) is not an error worth a panic.
        if stdout.write_all(text.as_bytes()).is_err() {
            break;
        }
    }
    if outcomes.iter().all(|o| o.success) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// The outcome as one JSON line, with `trigger: manual` last (the runs API
/// says `schedule` or `api`; a run of `once` is never stored).
fn json_line(o: &Outcome) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(flatten)]
        outcome: &'a Outcome,
        trigger: crate::run::Trigger,
    }
    let line = Line {
        outcome: o,
        trigger: crate::run::Trigger::Manual,
    };
    serde_json::to_string(&line).unwrap_or_default() + "\n"
}

/// The probes `target` names: a file or directory of probes, or a probe's name.
fn select(target: &str, probe_paths: &[PathBuf]) -> Result<Vec<Probe>, ExitCode> {
    let as_path = Path::new(target);
    let by_path = as_path.exists();
    let paths = if by_path {
        vec![as_path.to_path_buf()]
    } else {
        probe_paths.to_vec()
    };
    let report = load_paths(&paths);
    if !report.is_ok() {
        print_diagnostics(&report);
        eprintln!("refusing to run: the probe files above have errors (see `prober check`)");
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    if by_path {
        if report.probes.is_empty() {
            eprintln!("{target} holds no probe");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
        return Ok(report.probes);
    }
    let (found, others): (Vec<Probe>, Vec<Probe>) =
        report.probes.into_iter().partition(|p| p.name == target);
    if found.is_empty() {
        let mut known: Vec<&str> = others.iter().map(|p| p.name.as_str()).collect();
        known.sort_unstable();
        let where_ = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!(
            "no file and no probe named {target:?} under {where_}; known probes: {}",
            if known.is_empty() {
                "(none)".to_string()
            } else {
                known.join(", ")
            }
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok(found)
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

fn phase_line(p: &Phases) -> String {
    let parts = [
        ("dns", p.dns_us),
        ("connect", p.connect_us),
        ("tls", p.tls_us),
        ("first byte", p.first_byte_us),
        ("transfer", p.transfer_us),
    ];
    let mut s: Vec<String> = parts
        .iter()
        .map(|(n, v)| match v {
            Some(us) => format!("{n} {}", ms(*us)),
            None => format!("{n} -"),
        })
        .collect();
    s.push(format!("total {}", ms(p.total_us)));
    s.join(" | ")
}

/// The readable form of an outcome.
pub fn render_text(o: &Outcome) -> String {
    let mut s = String::new();
    let verdict = if o.success { "PASS" } else { "FAIL" };
    // A status only where there is one (HTTP, gRPC); a kind without one
    // (TCP, DNS, TLS) that passed says nothing about a response it never had.
    let status = match (o.status_code, o.success) {
        (Some(c), _) => format!(" -> {c}"),
        (None, true) => String::new(),
        (None, false) => " -> no response".to_string(),
    };
    let _ = writeln!(
        s,
        "{verdict} {}  {}{status}  in {}",
        o.probe,
        o.request,
        ms(o.phases.total_us)
    );
    let _ = writeln!(s, "  phases      {}", phase_line(&o.phases));
    let mut facts = vec![format!("{} bytes", o.response_bytes)];
    if let Some(a) = &o.remote_addr {
        facts.push(format!("from {a}"));
    }
    if o.redirects > 0 {
        facts.push(format!("{} redirect(s)", o.redirects));
    }
    let _ = writeln!(s, "  response    {}", facts.join(", "));
    if let Some(c) = &o.cert {
        let _ = writeln!(
            s,
            "  certificate {} days left (until {}), subject {}, issuer {}",
            c.days_left,
            c.not_after.format("%Y-%m-%d"),
            c.subject,
            c.issuer
        );
    }
    // A scenario shows its assertions under each step.
    for a in o.assertions.iter().filter(|_| o.steps.is_empty()) {
        let mark = if a.passed { "ok  " } else { "FAIL" };
        let _ = writeln!(
            s,
            "  {mark} {}: expected {}, got {}",
            a.check, a.expected, a.actual
        );
    }
    render_steps(o, &mut s);
    for a in &o.attempts {
        let how = match &a.error {
            None => "passed".to_string(),
            Some(e) => format!("{}: {}", e.class, e.message),
        };
        let _ = writeln!(s, "  attempt {}   {} in {}", a.attempt, how, ms(a.total_us));
    }
    for (k, v) in &o.info {
        let _ = writeln!(s, "  {k:<11} {v}");
    }
    if let Some(e) = &o.error {
        let _ = writeln!(s, "  error       {}: {}", e.class, e.message);
    }
    if o.trace_id.is_empty() {
        let _ = writeln!(s, "  version     {}", o.probe_version);
    } else {
        let _ = writeln!(
            s,
            "  trace       {} (probe version {})",
            o.trace_id, o.probe_version
        );
    }
    s
}

/// A scenario's steps: verdict, request and phases, failed checks, error, extracted names.
fn render_steps(o: &Outcome, s: &mut String) {
    for (i, st) in o.steps.iter().enumerate() {
        let status = st
            .status_code
            .map_or_else(|| "-".to_string(), |c| c.to_string());
        let verdict = match st.status {
            crate::run::StepStatus::Passed => "ok  ",
            crate::run::StepStatus::Failed => "FAIL",
            crate::run::StepStatus::Skipped => "skip",
        };
        // A browser step's request is its action, often its name too: said once.
        let request = if st.request == st.name {
            String::new()
        } else {
            format!("  {}", st.request)
        };
        let _ = writeln!(
            s,
            "  step {} {verdict} {}{request} -> {status}  in {}",
            i + 1,
            st.name,
            ms(st.phases.total_us)
        );
        let timed = phase_samples(&st.phases)[1..].iter().any(Option::is_some);
        if st.status != crate::run::StepStatus::Skipped && timed {
            let _ = writeln!(s, "         phases {}", phase_line(&st.phases));
        }
        for a in st.assertions.iter().filter(|a| !a.passed) {
            let _ = writeln!(
                s,
                "         FAIL {}: expected {}, got {}",
                a.check, a.expected, a.actual
            );
        }
        if let Some(e) = &st.error {
            let _ = writeln!(s, "         {}: {}", e.class, e.message);
        }
        if !st.extracted.is_empty() {
            let _ = writeln!(s, "         extracted {}", st.extracted.join(", "));
        }
    }
}
