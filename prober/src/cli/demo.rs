//! `prober demo`: the demo targets on loopback, then the daemon exactly as
//! `prober run` starts it (`--targets-only`: the targets alone).

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Args;

use crate::config::settings::SettingsArgs;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address the demo targets listen on (ports 9681-9685); 0.0.0.0 in a container.
    #[arg(long, env = "PROBER_DEMO_BIND", default_value_t = crate::demo::DEFAULT_BIND)]
    pub demo_bind: IpAddr,
    /// Serve the demo targets only; do not run the daemon (no Postgres needed).
    #[arg(long)]
    pub targets_only: bool,
}

pub fn run(settings: SettingsArgs, args: DemoArgs) -> ExitCode {
    super::with_runtime(settings, |s| async move {
        let targets = (crate::demo::start(args.demo_bind).await).map_err(|e| e.to_string())?;
        tracing::info!("{}", targets.describe());
        let result = if args.targets_only {
            crate::daemon::shutdown_signal().await;
            Ok(())
        } else {
            crate::daemon::run(s).await.map_err(String::from)
        };
        targets.shutdown().await;
        result
    })
}
