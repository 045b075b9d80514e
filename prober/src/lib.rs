//! prober: end-to-end test probes against production, on a schedule, with
//! exact latency histograms. A tour of the crate, in the order data flows:

/// The run vocabulary every layer speaks: `Outcome`, `ErrorClass`, phases,
/// the `RunRecord` that is stored. A leaf: imports nothing from the crate.
pub mod run;

/// Probe definitions: the YAML format, its JSON Schema, loading and validation
/// with every error placed at file:line:column.
pub mod config;

/// Running a probe once: the HTTP check with real phase timings, assertions,
/// and the `Outcome` every run produces (a failure is data, not an error).
pub mod probe;

/// When probes run: ticks, spread, no overlap, admission control.
pub mod schedule;

/// Live state in memory: recent runs, status, current-minute histograms.
pub mod results;

/// Postgres: migrations, the batched idempotent writer, partitions, retention, quantiles.
pub mod store;

/// Alerting: the alert state machine, persisted, fed by every run.
pub mod alert;

/// Notifications of alerts: receivers, the outbox worker.
pub mod notify;

/// `/healthz`, `/readyz` (and the API, later).
pub mod api;

/// The daemon: wires settings, store, scheduler and HTTP server; shuts down cleanly.
pub mod daemon;

/// The command line: `check`, `once`, `schema`, `version`.
pub mod cli;

/// `prober demo`: targets on loopback (HTTP, HTTPS, TCP, DNS, gRPC) for the shipped examples.
pub mod demo;

/// Logging setup.
pub mod telemetry;

/// The build's version, recorded with every run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
