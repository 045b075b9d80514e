//! The TCP check (being written).

use chrono::Utc;

use super::outcome::{ErrorClass, Outcome};
use crate::config::probe::TcpCheck;
use crate::config::Probe;

pub async fn run(probe: &Probe, _check: &TcpCheck) -> Outcome {
    Outcome::failed(&probe.name, &probe.version, Utc::now(), ErrorClass::Config, "tcp probes are not implemented yet".into(), std::time::Duration::ZERO)
}
