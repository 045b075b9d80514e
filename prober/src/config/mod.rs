//! Probe definitions: the file format, loading, and validation.
//!
//! `raw` is the format as written (and the source of the JSON Schema),
//! `yaml` keeps every value's line and column, `probe` holds the validated
//! types, `load` walks files and collects every problem with its place.

pub mod access;
pub mod browser;
pub mod diag;
pub mod kinds;
pub mod load;
pub mod policy;
pub mod probe;
pub mod raw;
mod raw_browser;
mod raw_http;
mod raw_kinds;
pub mod receivers;
pub mod settings;
pub mod steps;
pub mod template;
pub mod watch;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use load::{load_paths, LoadReport};
pub use probe::{Check, Probe, Schedule};
