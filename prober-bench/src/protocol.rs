//! What the probes speak to the loopback target (`--protocol`, `--keep-alive`,
//! `--hyper-target`, `--no-tls-verify`), and the probe options that follow from it.
//! The default (HTTP/1.1 in clear text, a new connection per run, the
//! hand-written responder) writes exactly the probes the bench always wrote.

use std::net::SocketAddr;
use std::path::Path;

/// `--protocol`: the HTTP version and transport between the probes and the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Protocol {
    /// HTTP/1.1 in clear text (`http://`, `version` left at `auto`).
    #[default]
    H1,
    /// HTTP/2 in clear text with prior knowledge (`http://`, `version: "2"`).
    H2c,
    /// HTTP/1.1 over TLS (`https://`, `version: "1.1"`: ALPN `http/1.1`).
    H1Tls,
    /// HTTP/2 over TLS (`https://`, `version: "2"`: ALPN `h2`).
    H2Tls,
}

impl Protocol {
    /// The name `--protocol` takes.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2c => "h2c",
            Protocol::H1Tls => "h1-tls",
            Protocol::H2Tls => "h2-tls",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Protocol::H1Tls | Protocol::H2Tls)
    }

    pub fn h2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2Tls)
    }

    /// `http.version` as the probes write it; `None` leaves it at `auto`.
    fn version(self) -> Option<&'static str> {
        match self {
            Protocol::H1 => None,
            Protocol::H1Tls => Some("\"1.1\""),
            Protocol::H2c | Protocol::H2Tls => Some("\"2\""),
        }
    }
}

/// The probes' side of the wire and the target that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wire {
    pub protocol: Protocol,
    /// The probes reuse their connection between runs (`http.keep_alive: true`).
    pub keep_alive: bool,
    /// hyper's server even where the hand-written responder would do (a control).
    pub hyper_target: bool,
    /// The probes do not verify the target's certificate (`http.tls_verify: false`)
    /// instead of trusting the bench's CA (`http.tls.ca_file`).
    pub no_tls_verify: bool,
}

impl Wire {
    /// Combinations the bench cannot run, with `--otlp` or `--otlp-metrics` as given.
    pub fn check(&self, otlp: bool) -> Result<(), String> {
        if self.no_tls_verify && !self.protocol.tls() {
            return Err(format!(
                "--no-tls-verify needs a TLS protocol (--protocol h1-tls or h2-tls), not {}",
                self.protocol.name()
            ));
        }
        if otlp && !self.hand_written() {
            return Err("--otlp and --otlp-metrics need the hand-written target (the OTLP sink is its): drop --protocol, --keep-alive and --hyper-target".into());
        }
        Ok(())
    }

    /// Whether the hand-written HTTP/1.1 responder answers (it closes every
    /// connection after one answer, so keep-alive needs hyper's server).
    pub fn hand_written(&self) -> bool {
        self.protocol == Protocol::H1 && !self.keep_alive && !self.hyper_target
    }

    /// The probes' URL.
    pub fn url(&self, target: SocketAddr) -> String {
        let scheme = if self.protocol.tls() { "https" } else { "http" };
        format!("{scheme}://{target}/")
    }

    /// The lines the probes' `http:` mapping gets besides `url:`, indented for
    /// it; `ca_file` is the bench CA's PEM file (TLS protocols, verifying).
    pub fn http_lines(&self, ca_file: Option<&Path>) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(v) = self.protocol.version() {
            lines.push(format!("version: {v}"));
        }
        if self.keep_alive {
            lines.push("keep_alive: true".into());
        }
        if self.protocol.tls() {
            match (self.no_tls_verify, ca_file) {
                (false, Some(ca)) => lines.push(format!("tls:\n      ca_file: {}", ca.display())),
                _ => lines.push("tls_verify: false".into()),
            }
        }
        lines
    }

    /// One line for the report: what the probes speak and what answers them.
    pub fn describe(&self) -> String {
        let what = match self.protocol {
            Protocol::H1 => "HTTP/1.1 in clear text",
            Protocol::H2c => "HTTP/2 in clear text (h2c, prior knowledge)",
            Protocol::H1Tls => "HTTP/1.1 over TLS (ALPN http/1.1)",
            Protocol::H2Tls => "HTTP/2 over TLS (ALPN h2)",
        };
        let verify = match (self.protocol.tls(), self.no_tls_verify) {
            (false, _) => "",
            (true, false) => ", certificate verified (tls.ca_file)",
            (true, true) => ", certificate not verified",
        };
        let conn = if self.keep_alive {
            "keep-alive (a connection per probe, reused)"
        } else {
            "a new connection per run"
        };
        let target = if self.hand_written() {
            "hand-written responder"
        } else {
            "hyper's server"
        };
        format!(
            "{}: {what}{verify}; {conn}; target: {target}",
            self.protocol.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(protocol: Protocol) -> Wire {
        Wire {
            protocol,
            ..Wire::default()
        }
    }

    #[test]
    fn the_default_is_plain_http1_on_the_hand_written_target_with_no_extra_lines() {
        let w = Wire::default();
        assert!(w.hand_written());
        assert_eq!(
            w.url(SocketAddr::from(([127, 0, 0, 1], 80))),
            "http://127.0.0.1:80/"
        );
        assert!(w.http_lines(None).is_empty());
        assert!(w.check(true).is_ok());
    }

    #[test]
    fn each_protocol_sets_its_scheme_and_version() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let cases = [
            (Protocol::H2c, "http", "version: \"2\""),
            (Protocol::H1Tls, "https", "version: \"1.1\""),
            (Protocol::H2Tls, "https", "version: \"2\""),
        ];
        for (protocol, scheme, version) in cases {
            let w = wire(protocol);
            assert!(!w.hand_written(), "{protocol:?}");
            assert!(
                w.url(addr).starts_with(&format!("{scheme}://")),
                "{protocol:?}"
            );
            assert_eq!(w.http_lines(None)[0], version, "{protocol:?}");
        }
    }

    #[test]
    fn tls_probes_trust_the_ca_file_unless_told_not_to_verify() {
        let ca = Path::new("/tmp/ca.pem");
        let verified = wire(Protocol::H2Tls).http_lines(Some(ca));
        assert!(verified.contains(&"tls:\n      ca_file: /tmp/ca.pem".to_string()));
        let unverified = Wire {
            no_tls_verify: true,
            ..wire(Protocol::H2Tls)
        };
        assert!(unverified
            .http_lines(Some(ca))
            .contains(&"tls_verify: false".to_string()));
    }

    #[test]
    fn keep_alive_and_the_control_take_hyper_s_target() {
        let kept = Wire {
            keep_alive: true,
            ..Wire::default()
        };
        assert!(!kept.hand_written());
        assert_eq!(kept.http_lines(None), vec!["keep_alive: true".to_string()]);
        let control = Wire {
            hyper_target: true,
            ..Wire::default()
        };
        assert!(!control.hand_written());
        assert!(control.http_lines(None).is_empty());
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let plain = Wire {
            no_tls_verify: true,
            ..Wire::default()
        };
        assert!(plain.check(false).is_err());
        assert!(wire(Protocol::H2c).check(true).is_err());
        assert!(wire(Protocol::H2c).check(false).is_ok());
    }
}
