//! prober: end-to-end test probes against production, on a schedule, with
//! exact latency histograms. A tour of the crate, in the order of its layers:
//! each module imports only the ones before it (ARCHITECTURE.md, "Layers";
//! `tests/tests/it/layout.rs` enforces it).

/// The run vocabulary every layer speaks: `Outcome`, `ErrorClass`, phases,
/// the `RunRecord` that is stored. A leaf: imports nothing from the crate.
pub mod run;

/// The trend engine: change points, slow drifts and histogram comparison over
/// series. Pure functions, no I/O; imports nothing from the crate.
pub mod trend;

/// Configuration: probe files (the YAML format, its JSON Schema, validation with
/// every error at file:line:column, the run budget), daemon settings, alert policy
/// and receivers, and the watcher that notices changed probe files.
pub mod config;

/// Live state in memory: recent runs, up/down status, `/metrics` histograms.
pub mod results;

/// Running a probe once: the kinds with real phase timings, assertions, and the
/// runner that owns the run budget (per-attempt timeout, retries).
pub mod probe;

/// Postgres: migrations, the batched idempotent writer, partitions, rollups,
/// retention, quantile reads, the audit log. Knows nothing of alerting.
pub mod store;

/// When probes run: ticks, spread, no overlap, admission control.
pub mod schedule;

/// Alerting: pure rules, the state machine, the engine fed by every run, and the
/// persistence of alert state.
pub mod alert;

/// Notifications of alerts: rendering per receiver, the outbox, the delivery worker.
pub mod notify;

/// Trend analysis: each probe's series read from the store, the trend engine
/// run over it, findings confirmed on histograms and stored once.
pub mod analysis;

/// Logging setup, `/metrics` collectors per subsystem, the reload status.
pub mod telemetry;

/// The HTTP API: `/healthz`, `/readyz`, `/metrics`, `/api/v1/…`, tokens, audit.
pub mod api;

/// The daemon: wires everything, owns the shared state and reload; shuts down cleanly.
pub mod daemon;

/// `prober demo`: targets on loopback (HTTP, HTTPS, TCP, DNS, gRPC) for the shipped examples.
pub mod demo;

/// The command line: `run`, `demo`, `migrate`, `check`, `once`, `trends`, `schema`, `version`, `healthcheck`.
pub mod cli;

/// The build's version, recorded with every run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
