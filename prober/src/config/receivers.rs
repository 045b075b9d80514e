//! Receivers of notifications as configured in `prober.yaml` (`receivers:`):
//! their kind, where they are reached, and which probes' alerts they take.

use std::collections::BTreeMap;

/// The kinds of receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverKind {
    Webhook,
    Slack,
    PagerDuty,
    Alertmanager,
}

impl ReceiverKind {
    pub fn parse(s: &str) -> Option<ReceiverKind> {
        match s {
            "webhook" => Some(ReceiverKind::Webhook),
            "slack" => Some(ReceiverKind::Slack),
            "pagerduty" => Some(ReceiverKind::PagerDuty),
            "alertmanager" => Some(ReceiverKind::Alertmanager),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Webhook => "webhook",
            ReceiverKind::Slack => "slack",
            ReceiverKind::PagerDuty => "pagerduty",
            ReceiverKind::Alertmanager => "alertmanager",
        }
    }
}

/// PagerDuty's Events API v2 endpoint, used when a pagerduty receiver sets no url.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// A receiver from `prober.yaml`, with `${env:NAME}` already substituted.
#[derive(Clone, PartialEq, Eq)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: String,
    /// Webhook: the HMAC-SHA256 key of `X-Prober-Signature`.
    pub secret: Option<String>,
    /// PagerDuty: the integration's routing key.
    pub routing_key: Option<String>,
    /// Only alerts of probes with all these labels; empty = all.
    pub labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &origin(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field(
                "routing_key",
                &self.routing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("labels", &self.labels)
            .finish()
    }
}

impl Receiver {
    /// Whether alerts of a probe with these labels go to this receiver.
    pub fn routes(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Where the notification is POSTed.
    pub fn endpoint(&self) -> String {
        let base = self.url.trim_end_matches('/');
        match self.kind {
            ReceiverKind::Alertmanager if !base.ends_with("/api/v2/alerts") => {
                format!("{base}/api/v2/alerts")
            }
            ReceiverKind::PagerDuty if !base.ends_with("/v2/enqueue") => {
                format!("{base}/v2/enqueue")
            }
            _ => self.url.clone(),
        }
    }
}

/// The scheme, host and port of a URL: what logs and errors show of a
/// receiver's URL (a Slack webhook's path is its secret).
pub fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "<invalid url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_needs_every_label() {
        let r = Receiver {
            name: "r".into(),
            kind: ReceiverKind::Webhook,
            url: "http://127.0.0.1/".into(),
            secret: None,
            routing_key: None,
            labels: [("team".to_string(), "pay".to_string())].into(),
        };
        assert!(r.routes(&[("team".to_string(), "pay".to_string())].into()));
        assert!(!r.routes(&BTreeMap::new()));
        assert!(!r.routes(&[("team".to_string(), "web".to_string())].into()));
    }
}
