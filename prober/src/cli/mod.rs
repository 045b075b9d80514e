//! The command line. Exit codes: 0 ok, 1 a probe or check failed, 2 usage or configuration error.

/// `println!` that ends quietly when stdout is closed (`prober trends | head`)
/// instead of panicking; another write error is said on stderr.
macro_rules! say {
    ($($t:tt)*) => {
        $crate::cli::say_line(format_args!($($t)*))
    };
}

mod check;
mod demo;
pub mod healthcheck;
mod once;
mod trends;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::settings::{Settings, SettingsArgs};
use crate::telemetry::{self, LogFormat};

/// Exit code for a probe that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for a usage or configuration error.
pub const EXIT_CONFIG: u8 = 2;

/// Default place of the probe files, relative to the working directory.
pub const DEFAULT_PROBES_DIR: &str = "probes";

#[derive(Debug, Parser)]
#[command(
    name = "prober",
    version,
    about = "End-to-end test probes against production"
)]
struct Cli {
    /// Log format on stderr (the level comes from RUST_LOG).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PROBER_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: schedule the probes, record every run in Postgres, serve /healthz and /readyz.
    Run {
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Start demo targets on loopback (ports 9681-9685) that the shipped probes/ check, then run the daemon.
    Demo {
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        demo: demo::DemoArgs,
    },
    /// Create the database if missing and run the migrations, then exit.
    Migrate {
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Validate the settings and probe files offline; report every problem with file:line:column.
    Check {
        /// Probe files or directories (searched recursively for *.yaml, *.yml);
        /// default: the probes `run` would load (`--probes`, PROBER_PROBES, the settings' `probes`, else probes/).
        paths: Vec<PathBuf>,
        /// The settings `run` would use, checked too (the file: `--config`, else prober.yaml if present).
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Run probes once, now, and print what a scheduled run would record.
    Once {
        /// A probe's name, or a probe file or directory (then all its probes run).
        target: String,
        /// Where to look up a probe by name.
        #[arg(long = "probes", default_value = DEFAULT_PROBES_DIR, env = "PROBER_PROBES")]
        probes: Vec<PathBuf>,
        /// Print one JSON object per probe (the stored form of a run) instead of text.
        #[arg(long)]
        json: bool,
        /// The settings `run` uses for probes (`proxy`, `browser`) [default: prober.yaml in the working directory, if present].
        #[arg(long = "config", env = "PROBER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Exit 0 if the local daemon's /healthz answers 200 (for container health checks), else 1.
    Healthcheck {
        #[command(flatten)]
        settings: SettingsArgs,
        /// How long to wait for the connection and for each read and write.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show the changes the trend analysis found (from Postgres), or find change points in a CSV.
    Trends {
        /// Only this probe's findings.
        name: Option<String>,
        /// Findings detected or updated this recently.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Run the change-point detector over a CSV of `time,value` rows instead (no database).
        #[arg(long, conflicts_with = "name")]
        file: Option<PathBuf>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Print the JSON Schema of probe files, for editor completion.
    Schema,
    /// Print the version.
    Version,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let level = match cli.command {
        Command::Run { .. } | Command::Demo { .. } | Command::Migrate { .. } => "info",
        _ => "warn",
    };
    telemetry::init(cli.log_format, level);
    match cli.command {
        Command::Run { settings } => with_runtime(settings, |s| async move {
            crate::daemon::run(s).await.map_err(String::from)
        }),
        Command::Demo { settings, demo } => demo::run(settings, demo),
        Command::Migrate { settings } => with_runtime(settings, |s| async move {
            let store = crate::store::Store::new(&s.database_url, &s.location)
                .map_err(|e| e.to_string())?;
            store.pick_host().await;
            store.ensure_database().await.map_err(|e| e.to_string())?;
            store.migrate().await.map_err(|e| e.to_string())?;
            say!(
                "migrations applied to {}",
                crate::store::redact_url(&s.database_url)
            );
            Ok(())
        }),
        Command::Check { paths, settings } => check::run(&paths, settings),
        Command::Once {
            target,
            probes,
            json,
            config,
        } => once::run(&target, &probes, json, config),
        Command::Healthcheck { settings, timeout } => healthcheck::run(&settings, timeout),
        Command::Trends {
            file: Some(path),
            json,
            ..
        } => match trends::file(&path, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Trends {
            name,
            since,
            json,
            settings,
            ..
        } => with_runtime(settings, |s| async move {
            let since = chrono::Duration::from_std(since)
                .ok()
                .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
                .ok_or_else(|| {
                    "--since reaches before year 0; give a shorter duration".to_string()
                })?;
            trends::stored(&s, name, since, json).await
        }),
        Command::Schema => {
            let schema = crate::config::raw::json_schema();
            print_out(&serde_json::to_string_pretty(&schema).unwrap_or_default())
        }
        Command::Version => print_out(&format!("prober {}", crate::VERSION)),
    }
}

/// One line on stdout (see `say!`).
pub(crate) fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{args}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("cannot write to stdout: {e}");
        }
    }
}

/// Prints `text` and a newline on stdout; a closed pipe (`prober schema | head`)
/// ends the output quietly instead of panicking as `println!` does.
fn print_out(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("cannot write to stdout: {e}");
            ExitCode::from(EXIT_FAILED)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Resolves settings, starts a runtime and runs `f`; errors exit 2 with their message.
fn with_runtime<F, Fut>(args: SettingsArgs, f: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let settings = match Settings::resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(f(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The multi-threaded runtime of the commands that do I/O; a failure is reported and exits 2.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(EXIT_CONFIG)
        })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;
    use crate::config::settings::Settings;

    /// `run --help` states every default, and they are the defaults in force.
    #[test]
    fn run_help_shows_the_defaults_in_force_and_the_endpoints_listen_serves() {
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        let d = Settings::default();
        for default in [
            d.database_url.clone(),
            d.location.clone(),
            d.probes[0].display().to_string(),
            d.listen.to_string(),
            d.max_concurrency.to_string(),
            d.max_per_host.to_string(),
            d.queue_capacity.to_string(),
        ] {
            assert!(
                help.contains(&format!("default: {default}")),
                "`run --help` does not show the default {default}:\n{help}"
            );
        }
        for endpoint in ["/healthz", "/readyz", "/metrics", "/api/v1"] {
            assert!(help.contains(endpoint), "{endpoint}:\n{help}");
        }
    }
}
