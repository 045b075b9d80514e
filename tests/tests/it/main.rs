//! One integration-test binary: the real prober (library and CLI) against
//! fake targets that the tests start on loopback.

// Tests say what they expect by unwrapping; a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod alert_rules;
mod alerts;
mod alerts_shared;
mod alerts_start_down;
mod api;
mod auth;
mod blocks;
mod chaos;
mod check;
mod claims;
mod daemon;
mod dashboards;
mod db;
mod demo;
mod deploy;
mod docker_context;
mod docs;
mod events;
mod examples;
mod exemplars;
mod failover;
mod forecast;
mod fuzz;
mod helpers;
mod hostile;
mod hour_blocks;
mod http_probe;
mod http_reach;
mod kinds_dns_grpc;
mod kinds_tcp_tls;
mod layout;
mod leases;
mod lost_ack;
mod manual_runs;
mod metrics;
mod notify;
mod once;
mod otlp;
mod otlp_metrics;
mod pg_tls;
mod recent;
mod reload;
mod replicas;
mod rollup;
mod run_blocks;
mod scenarios;
mod scheduler;
mod secrets;
mod settings;
mod spool;
mod store;
mod store_chaos;
mod traces;
mod trend_screen;
mod trends;
mod trends_live;
mod trends_spread;
mod ui;
mod ui_browser;
mod ui_keyboard;
mod upgrade;
mod write_faults;
