//! Observability, in one place: logging setup (`tracing` to stderr, filtered
//! by `RUST_LOG`), the `/metrics` exposition built from per-subsystem
//! collectors, and the reload status that `/readyz` and `/metrics` report.

pub mod metrics;
pub mod otlp;
pub mod reload;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `default_level` applies when `RUST_LOG` is
/// unset; Postgres's notices (sqlx logs "relation … already exists, skipping"
/// at INFO for every idempotent migration statement) are kept to warnings
/// then. Colours only on a terminal, and never with `NO_COLOR` set.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},sqlx::postgres::notice=warn")));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests calling the CLI twice in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
