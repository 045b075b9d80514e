//! Why the daemon did not start, each with what to do about it.

use std::net::SocketAddr;

use crate::store::StoreError;

/// A reason `prober run` (or [`Daemon::start`](super::Daemon::start)) gave up
/// before serving; the CLI prints it and exits 2.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The probe files have problems, each with file:line.
    #[error(
        "{}\nrefusing to start: fix the probe files above (`prober check` shows the same)",
        .0.join("\n")
    )]
    ProbesInvalid(Vec<String>),
    /// The database settings cannot make a store (the URL is not a Postgres URL).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The listen address is taken or not ours.
    #[error(
        "cannot listen on {addr}: {source}; pick another address with --listen or PROBER_LISTEN"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The socket was bound but its address cannot be read.
    #[error("cannot read the bound address: {0}; check the listen address, then start again")]
    BoundAddress(std::io::Error),
    /// The spool directory cannot be used (or another process holds it).
    #[error("{0}")]
    Spool(#[from] crate::store::spool::SpoolError),
    /// The probe runner (TLS roots, HTTP clients) cannot be built.
    #[error("cannot prepare the probe runner: {0}")]
    Runner(String),
    /// The OTLP exporter cannot be built from `otel` and the `OTEL_*` variables.
    #[error("{0}")]
    Otlp(String),
}

/// For callers whose errors are still messages (the CLI prints them as they are).
impl From<StartError> for String {
    fn from(e: StartError) -> String {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_probes_are_listed_one_a_line_then_what_to_do() {
        let e = StartError::ProbesInvalid(vec![
            "probes/a.yaml:1:1: probe \"a\": the probe has no schedule".into(),
            "probes/b.yaml:4:9: probe \"b\": unknown field `urll`".into(),
        ]);
        assert_eq!(
            e.to_string(),
            "probes/a.yaml:1:1: probe \"a\": the probe has no schedule\n\
             probes/b.yaml:4:9: probe \"b\": unknown field `urll`\n\
             refusing to start: fix the probe files above (`prober check` shows the same)"
        );
    }
}
