//! Observability, in one place: logging setup (`tracing` to stderr, filtered
//! by `RUST_LOG`, with an empty slot for the OTLP layer of the prober's own
//! spans), the `/metrics` exposition built from per-subsystem collectors, the
//! reload status that `/readyz` and `/metrics` report, and the OTLP export of
//! runs ([`otlp`]).

pub mod metrics;
pub mod otlp;
pub mod reload;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload as swap;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// A layer over the bare registry, boxed: the slot the OTLP layer goes into.
type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Where [`trace_own_work`] puts the OTLP layer: set by [`init`].
static OWN_WORK: OnceLock<swap::Handle<Option<Boxed>, Registry>> = OnceLock::new();

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
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    let (own_work, handle) = swap::Layer::new(None::<Boxed>);
    // The prober's own spans at INFO and above, only: filtered outside the slot
    // (a filter inside a reloaded layer is never registered with the subscriber).
    let only_ours =
        tracing_subscriber::filter::Targets::new().with_target("prober", tracing::Level::INFO);
    let subscriber = tracing_subscriber::registry()
        .with(own_work.with_filter(only_ours))
        .with(lines.with_filter(filter));
    // A second init (tests calling the CLI twice in one process) keeps the first.
    if subscriber.try_init().is_ok() {
        let _ = OWN_WORK.set(handle);
    }
}

/// Sends the spans of the prober's own work (`store.write`, `store.rollup`,
/// `alert.evaluate`, `notify.deliver`, the API's `request`; INFO and above, of
/// this crate) to `tracer`; `false` when logging was not set up by [`init`].
pub fn trace_own_work(tracer: opentelemetry_sdk::trace::SdkTracer) -> bool {
    let Some(handle) = OWN_WORK.get() else {
        return false;
    };
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
    handle.reload(Some(layer)).is_ok()
}
