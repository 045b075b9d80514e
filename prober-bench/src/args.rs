//! The command line of `prober-bench`.

use std::time::Duration;

use crate::protocol::{Protocol, Wire};
use crate::side::SideArgs;

/// The scratch database the bench drops and recreates.
pub const DEFAULT_BENCH_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/prober_bench";

/// `prober-bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Probes to define (named bench-00001, bench-00002, …); with --storage, default 100.
    #[arg(long, default_value_t = 1000)]
    pub probes: usize,
    /// Interval of every probe (at least 1s, whole milliseconds); with --storage, default 60s, at most 3600s.
    #[arg(long, default_value = "1s", value_parser = parse_every)]
    pub every: Duration,
    /// Length of the measured window in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Seconds run before the window, excluded from the figures.
    #[arg(long, default_value_t = 2)]
    pub warm_up: u64,
    /// Scratch database, DROPPED and recreated; must be local and have "bench" in its name.
    #[arg(long, default_value = DEFAULT_BENCH_DATABASE_URL)]
    pub database_url: String,
    /// The target waits this long before answering.
    #[arg(long, default_value_t = 0)]
    pub target_delay_ms: u64,
    /// Concurrent runs allowed per target host (the daemon's `max_per_host`; default: its default).
    #[arg(long)]
    pub max_per_host: Option<usize>,
    /// Export every run as an OTLP trace (HTTP/protobuf) to the target, which
    /// answers the exports; compare the CPU per run with a run without it.
    #[arg(long)]
    pub otlp: bool,
    /// Send the runs as OTLP metrics (HTTP/protobuf, every 5 s, cumulative)
    /// to the target, which answers them; with or without `--otlp`.
    #[arg(long)]
    pub otlp_metrics: bool,
    /// What the probes speak to the target: h1 (HTTP/1.1, the hand-written
    /// responder), h2c (HTTP/2 with prior knowledge), h1-tls or h2-tls (over
    /// TLS, ALPN); all but h1 are answered by hyper's server.
    #[arg(long, value_enum, default_value_t = Protocol::H1)]
    pub protocol: Protocol,
    /// The probes keep their connection between runs (`http.keep_alive: true`;
    /// the target is then hyper's server, which keeps it too).
    #[arg(long)]
    pub keep_alive: bool,
    /// hyper's server answers even `--protocol h1` without `--keep-alive` (a
    /// control for the hand-written responder).
    #[arg(long)]
    pub hyper_target: bool,
    /// With a TLS protocol: `http.tls_verify: false` instead of trusting the
    /// bench's CA (`http.tls.ca_file`), so no certificate is verified.
    #[arg(long)]
    pub no_tls_verify: bool,
    /// Browser checks per minute instead: `--browser-max` browsers run a
    /// four-step check back to back against a loopback site for `--seconds`.
    #[arg(long)]
    pub browser: bool,
    /// With `--browser`: browsers at once (the pool's `max_concurrent`).
    #[arg(long, default_value_t = 2)]
    pub browser_max: usize,
    /// With `--browser`: each browser's memory budget in MB (the pool's `memory_mb`).
    #[arg(long, default_value_t = 1024)]
    pub browser_memory_mb: u64,
    /// Print the figures as one JSON object instead of the table (used by `--side-by-side`).
    #[arg(long)]
    pub json: bool,
    /// Run the whole side-by-side comparison with blackbox_exporter (each prober
    /// phase is a child `prober-bench --json`) and print one table.
    #[arg(long)]
    pub side_by_side: bool,
    /// Storage benchmark: write --probes × --storage-hours of synthetic runs
    /// through the store's writer, then print every table's bytes per run and
    /// the timings of the heaviest reads.
    #[arg(long, conflicts_with = "side_by_side")]
    pub storage: bool,
    /// With --storage: hours of runs to write, ending now.
    #[arg(long, default_value_t = 2)]
    pub storage_hours: u32,
    /// Trend-detection evaluation harness (issue 17): synthetic probes with
    /// planted changes written through the store, the analysis replayed as the
    /// daemon runs it, scored; Apache Otava beside it. --every defaults to 60s.
    #[arg(long, conflicts_with_all = ["side_by_side", "storage"])]
    pub trends: bool,
    /// Soak: the real daemon for --seconds (e.g. 3600), a row every
    /// --soak-every seconds: RSS, open files, queue depth, runs/s, start
    /// lateness p99, write time per batch; then RSS growth after warm-up and
    /// whether every run was persisted.
    #[arg(long, conflicts_with_all = ["side_by_side", "storage", "trends", "json"])]
    pub soak: bool,
    /// With --soak: seconds between two rows.
    #[arg(long, default_value_t = 60)]
    pub soak_every: u64,
    /// With --soak: Postgres unreachable for the whole soak (the daemon's URL
    /// names a closed loopback port): every run waits in the queue and the
    /// spool; prints the memory and disk per queued run.
    #[arg(long, requires = "soak")]
    pub outage: bool,
    #[command(flatten)]
    pub trend: TrendArgs,
    #[command(flatten)]
    pub side: SideArgs,
}

impl BenchArgs {
    /// What the probes speak and what answers them.
    pub fn wire(&self) -> Wire {
        Wire {
            protocol: self.protocol,
            keep_alive: self.keep_alive,
            hyper_target: self.hyper_target,
            no_tls_verify: self.no_tls_verify,
        }
    }
}

/// `--trends` options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrendArgs {
    /// With --trends: probes per planted scenario.
    #[arg(long, default_value_t = 5)]
    pub trend_probes: usize,
    /// With --trends: stationary probes are this many times --trend-probes.
    #[arg(long, default_value_t = 4)]
    pub trend_stationary_factor: usize,
    /// With --trends: days of history (drifts need at least 3; 7 is the drift window).
    #[arg(long, default_value_t = 4)]
    pub trend_days: u32,
    /// With --trends: the last hours replayed with a pass every 5 minutes (at least 8;
    /// the planted steps are 4–6 h before the end).
    #[arg(long, default_value_t = 8)]
    pub trend_dense_hours: u32,
    /// With --trends: minutes between passes before the dense hours.
    #[arg(long, default_value_t = 180)]
    pub trend_sweep_minutes: u32,
    /// With --trends: no diurnal cycle (a control: what the cycle costs in false findings).
    #[arg(long)]
    pub trend_no_diurnal: bool,
    /// With --trends --no-otava: analyse the runs a previous run with the
    /// same --trend-* options wrote to the same database (not dropped, not
    /// seeded again; its findings are deleted first): a change to the
    /// analysis measured in minutes, not the seeding's quarter of an hour.
    #[arg(long)]
    pub trend_reuse: bool,
    /// With --trends: do not run Apache Otava.
    #[arg(long)]
    pub no_otava: bool,
}

/// `--every`: at least 1 s (the shortest interval a probe may have), whole milliseconds.
pub fn parse_every(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s (the shortest interval a probe may have)".into());
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("must be whole milliseconds".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_is_at_least_a_second_in_whole_milliseconds() {
        assert!(parse_every("500ms").is_err());
        assert!(parse_every("1s 500us").is_err());
        assert_eq!(parse_every("2s").unwrap(), Duration::from_secs(2));
    }

    #[test]
    fn the_command_line_parses_with_its_defaults() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from(["prober-bench", "--seconds", "3", "--probes", "10"])
            .unwrap();
        assert_eq!(cli.bench.probes, 10);
        assert_eq!(cli.bench.seconds, 3);
        assert_eq!(cli.bench.every, Duration::from_secs(1));
        assert_eq!(cli.bench.database_url, DEFAULT_BENCH_DATABASE_URL);
        assert!(!cli.bench.side_by_side);
        assert!(!cli.bench.storage);
        assert_eq!(cli.bench.wire(), Wire::default());
    }

    #[test]
    fn protocol_takes_its_four_names() {
        use clap::Parser;
        let parse = |name: &str| {
            crate::Cli::try_parse_from(["prober-bench", "--protocol", name])
                .map(|cli| cli.bench.protocol)
        };
        assert_eq!(parse("h1").unwrap(), Protocol::H1);
        assert_eq!(parse("h2c").unwrap(), Protocol::H2c);
        assert_eq!(parse("h1-tls").unwrap(), Protocol::H1Tls);
        assert_eq!(parse("h2-tls").unwrap(), Protocol::H2Tls);
        assert!(parse("h3").is_err());
        let cli =
            crate::Cli::try_parse_from(["prober-bench", "--protocol", "h2-tls", "--keep-alive"])
                .unwrap();
        assert!(cli.bench.wire().keep_alive);
        assert!(!cli.bench.wire().hand_written());
    }

    #[test]
    fn storage_has_defaults_of_its_own_unless_given() {
        let cli = crate::Cli::parse_args(["prober-bench", "--storage"]).unwrap();
        assert!(cli.bench.storage);
        assert_eq!(cli.bench.probes, crate::storage::DEFAULT_PROBES);
        assert_eq!(cli.bench.every, crate::storage::DEFAULT_EVERY);
        assert_eq!(cli.bench.storage_hours, 2);
        let cli = crate::Cli::parse_args([
            "prober-bench",
            "--storage",
            "--probes",
            "20",
            "--every",
            "10s",
        ])
        .unwrap();
        assert_eq!(cli.bench.probes, 20);
        assert_eq!(cli.bench.every, Duration::from_secs(10));
        let cli = crate::Cli::parse_args(["prober-bench", "--probes", "7"]).unwrap();
        assert_eq!(cli.bench.every, Duration::from_secs(1));
    }
}
