//! `prober check`: validate the settings and every probe file offline (no
//! database, no network) and report every problem in one run.

use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::config::settings::{EnvMode, Settings, SettingsArgs, SettingsCheck};
use crate::config::{load_paths, LoadReport};

/// Checks the settings file (`config`, or `prober.yaml` in the working
/// directory if present, as `run` would read it) and the probe files under
/// `paths` (default: the paths the settings name, as `run` would load them).
pub fn run(paths: &[PathBuf], args: SettingsArgs) -> ExitCode {
    let settings = Settings::check(&args, EnvMode::Warn);
    let paths = if paths.is_empty() {
        settings.probes.clone()
    } else {
        paths.to_vec()
    };
    let report = load_paths(&paths);
    print_settings_diagnostics(&settings);
    print_diagnostics(&report);
    let errors = report.errors().count() + settings.errors().count();
    let warnings = report.warnings().count() + settings.warnings().count();
    let settings_file = settings.file.as_ref().map(|f| f.display().to_string());
    let files = report.files + usize::from(settings_file.is_some());
    if errors > 0 {
        eprintln!(
            "{errors} error(s), {warnings} warning(s) in {files} file(s); nothing was changed — fix the lines above"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    if report.files == 0 {
        eprintln!(
            "no probe files (*.yaml, *.yml) under {}; add one (see probes/README.md)",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let with_settings = settings_file.map_or(String::new(), |f| format!(", settings {f}"));
    say!(
        "ok: {} probe(s) in {} file(s){with_settings}, {warnings} warning(s)",
        report.probes.len(),
        report.files
    );
    ExitCode::SUCCESS
}

/// Prints every diagnostic on stderr, errors first, each with its place.
pub fn print_diagnostics(report: &LoadReport) {
    for d in report.errors().chain(report.warnings()) {
        eprintln!("{d}");
    }
}

fn print_settings_diagnostics(check: &SettingsCheck) {
    for d in check.errors().chain(check.warnings()) {
        eprintln!("{d}");
    }
}
