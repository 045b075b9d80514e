//! The TLS check (being written).

use chrono::Utc;

use super::outcome::{ErrorClass, Outcome};
use crate::config::probe::TlsCheck;
use crate::config::Probe;

pub async fn run(probe: &Probe, _check: &TlsCheck, _tls: &super::tls::TlsClients) -> Outcome {
    Outcome::failed(&probe.name, &probe.version, Utc::now(), ErrorClass::Config, "tls probes are not implemented yet".into(), std::time::Duration::ZERO)
}
