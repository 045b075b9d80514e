//! `prober-bench`: the real prober daemon (scheduler, HTTP probe, store
//! writer) against a loopback HTTP target in the same process, with every run
//! persisted to a scratch Postgres database; prints one table of figures.
//! `--side-by-side` runs the whole comparison with blackbox_exporter;
//! `--storage` measures what the store keeps per run (`storage`); `--trends`
//! evaluates the trend detection on planted changes (`trends`); `--soak`
//! runs the daemon for an hour or more and prints its resources over time
//! (`soak`); `--browser` measures browser checks per minute (`browser`).
//!
//! A workspace member of its own, so the shipped `prober` binary holds no
//! benchmark code. Method, in short (BENCHMARKS.md has the long form):
//! - the target runs on its own thread with its own current-thread runtime;
//!   its CPU time is read from `/proc/self/task/<tid>/schedstat` and subtracted;
//! - counters, CPU and the wall clock are snapshotted after a warm-up (2 s by
//!   default) and at the end of the window; only the difference is reported;
//! - lateness comes from Postgres (`runs.lateness_us`) for the runs scheduled
//!   inside the window, so it is what the store holds, not a side channel.
//!
//! CPU comes from `/proc` rather than `getrusage`/`clock_gettime`: the
//! workspace forbids `unsafe` code, and those are `unsafe` FFI calls.
//! `/proc/self/stat` is the same accounting as `getrusage(RUSAGE_SELF)`
//! (all threads, exited ones included), in clock ticks of 10 ms.

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use prober::telemetry::{self, LogFormat};

mod args;
mod blackbox;
mod browser;
mod dashboards;
mod db;
mod figures;
mod history;
mod probes;
mod procfs;
mod protocol;
mod report;
mod side;
mod single;
mod soak;
mod storage;
mod target;
mod target_hyper;
mod trends;

use args::BenchArgs;

/// Exit code of a bench that could not run or measure (the reason is on stderr).
/// Usage errors exit 2 as well (clap's own code).
const EXIT_ERROR: u8 = 2;

#[derive(Debug, clap::Parser)]
#[command(
    name = "prober-bench",
    version,
    about = "Benchmark: the real prober daemon against a loopback target, every run persisted to a scratch database"
)]
struct Cli {
    /// Log format on stderr (the level comes from RUST_LOG, default warn).
    #[arg(long, value_enum, default_value = "text", env = "PROBER_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(flatten)]
    bench: BenchArgs,
}

impl Cli {
    /// Parses a command line; `--storage` without `--probes` or `--every`
    /// takes its own, smaller defaults.
    fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let defaulted = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
        if cli.bench.storage {
            if defaulted("probes") {
                cli.bench.probes = storage::DEFAULT_PROBES;
            }
            if defaulted("every") {
                cli.bench.every = storage::DEFAULT_EVERY;
            }
        }
        if cli.bench.trends {
            if defaulted("every") {
                cli.bench.every = trends::DEFAULT_EVERY;
            }
            if defaulted("database_url") {
                cli.bench.database_url = trends::DEFAULT_DATABASE_URL.into();
            }
        }
        Ok(cli)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    telemetry::init(cli.log_format, "warn");
    let args = cli.bench;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = if args.side_by_side {
        runtime.block_on(side::run(&args))
    } else if args.trends {
        runtime.block_on(trends::run(&args))
    } else if args.storage {
        runtime.block_on(storage::run(&args))
    } else if args.soak {
        runtime.block_on(soak::run(&args))
    } else if args.browser {
        runtime.block_on(browser::run(&args))
    } else {
        runtime.block_on(single::run(&args))
    };
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
