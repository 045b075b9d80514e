//! `receivers:`: where notifications go, each checked for its type's
//! fields, its URL and its `${env:NAME}` references.

use super::alerting::{Receiver, ReceiverKind, PAGERDUTY_URL};
use super::file::ReceiverFile;
use super::sink::Sink;
use super::ValueProblem;

/// Checks the receivers and substitutes `${env:NAME}` in their url, secret
/// and routing key. A receiver with an unknown type is not kept, but its
/// other fields are still checked: every problem is reported at once.
pub(super) fn receivers(sink: &mut Sink, files: Vec<Option<ReceiverFile>>) -> Vec<Receiver> {
    let mut out: Vec<Receiver> = Vec::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = format!("receivers[{i}]");
        let Some(f) = f else {
            sink.error(
                &at,
                "an empty entry; give name, type and the type's fields, or remove it",
            );
            continue;
        };
        check_name(sink, &at, &f.name, &names);
        names.push((f.name.clone(), i));
        let kind = ReceiverKind::parse(&f.kind);
        match kind {
            Some(kind) => {
                let problems = receiver_field_problems(
                    kind,
                    f.url.is_some(),
                    f.secret.is_some(),
                    f.routing_key.is_some(),
                );
                for (field, m) in problems {
                    sink.error(&format!("{at}.{field}"), m);
                }
            }
            None => sink.error(
                &format!("{at}.type"),
                format!(
                    "{:?} is not a receiver type; use webhook, slack, pagerduty or alertmanager",
                    f.kind
                ),
            ),
        }
        let receiver = receiver_values(sink, &at, f);
        if let Some(kind) = kind {
            out.push(Receiver { kind, ..receiver });
        }
    }
    out
}

/// A receiver's name: not empty, not taken by an earlier one.
fn check_name(sink: &mut Sink, at: &str, name: &str, earlier: &[(String, usize)]) {
    if name.trim().is_empty() {
        sink.error(
            &format!("{at}.name"),
            "must not be empty; notifications name their receiver",
        );
    } else if let Some((_, j)) = earlier.iter().find(|(n, _)| n == name) {
        let line = sink.doc.value_pos(&format!("receivers[{j}].name")).line;
        sink.error(
            &format!("{at}.name"),
            format!("{name:?} is also the name of receivers[{j}] (line {line}); names must be unique, rename one"),
        );
    }
}

/// A receiver's values, `${env:NAME}` substituted and checked (its kind is
/// set by the caller).
fn receiver_values(sink: &mut Sink, at: &str, f: ReceiverFile) -> Receiver {
    let whose = format!("receiver {:?}", f.name);
    let mut expand = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| sink.expand(&format!("{at}.{field}"), v, &whose))
    };
    let url = expand("url", &f.url);
    let secret = expand("secret", &f.secret);
    let routing_key = expand("routing_key", &f.routing_key);
    if let Some(Some(u)) = &url {
        if let Err(e) = check_receiver_url(u) {
            sink.error(&format!("{at}.url"), e.0);
        }
    }
    if matches!(&secret, Some(Some(s)) if s.is_empty()) {
        sink.error(&format!("{at}.secret"), "is empty; remove it or set a key");
    }
    if matches!(&routing_key, Some(Some(s)) if s.is_empty()) {
        sink.error(
            &format!("{at}.routing_key"),
            "is empty; set the integration key of the PagerDuty service",
        );
    }
    if let Some((k, _)) = f
        .labels
        .iter()
        .flatten()
        .find(|(k, v)| k.is_empty() || v.is_empty())
    {
        sink.error(
            &format!("{at}.labels"),
            format!("{k:?} has an empty name or value"),
        );
    }
    // Unknown here (an unset variable under `prober check`): keep the text as written.
    let known = |v: Option<Option<String>>, raw: &Option<String>| {
        v.map(|x| x.unwrap_or_else(|| raw.clone().unwrap_or_default()))
    };
    Receiver {
        name: f.name,
        kind: ReceiverKind::Webhook,
        url: known(url, &f.url).unwrap_or_else(|| PAGERDUTY_URL.to_string()),
        secret: known(secret, &f.secret),
        routing_key: known(routing_key, &f.routing_key),
        labels: f.labels.unwrap_or_default(),
    }
}

/// What a receiver of `kind` must have and must not have: (field, problem).
pub fn receiver_field_problems(
    kind: ReceiverKind,
    url: bool,
    secret: bool,
    routing_key: bool,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let name = kind.as_str();
    match kind {
        ReceiverKind::PagerDuty if !routing_key => out.push((
            "routing_key",
            "is required for a pagerduty receiver (the integration key of the PagerDuty service)"
                .to_string(),
        )),
        ReceiverKind::Webhook | ReceiverKind::Slack | ReceiverKind::Alertmanager if !url => {
            out.push(("url", format!("is required for a {name} receiver")));
        }
        _ => {}
    }
    if routing_key && kind != ReceiverKind::PagerDuty {
        out.push((
            "routing_key",
            format!("only a pagerduty receiver uses it, not a {name} receiver; remove it"),
        ));
    }
    if secret && kind != ReceiverKind::Webhook {
        out.push((
            "secret",
            format!("only a webhook receiver signs with it, not a {name} receiver; remove it"),
        ));
    }
    out
}

/// A receiver's URL must be http or https with a host. The URL is not
/// repeated in the message: a Slack webhook's path is its secret.
pub fn check_receiver_url(url: &str) -> Result<(), ValueProblem> {
    let u = url::Url::parse(url).map_err(|e| {
        format!("not a URL ({e}); write it whole, like https://hooks.example.com/prober")
    })?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!(
            "the scheme is {}:; receivers are reached over http or https",
            u.scheme()
        )
        .into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host; write it like https://hooks.example.com/prober".into());
    }
    Ok(())
}
