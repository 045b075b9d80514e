//! `prober check`: validate every probe file and report every problem in one run.

use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::config::{load_paths, LoadReport};

pub fn run(paths: &[PathBuf]) -> ExitCode {
    let report = load_paths(paths);
    print_diagnostics(&report);
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    if errors > 0 {
        eprintln!(
            "{errors} error(s), {warnings} warning(s) in {} file(s); nothing was changed — fix the lines above",
            report.files
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
    println!(
        "ok: {} probe(s) in {} file(s), {warnings} warning(s)",
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
