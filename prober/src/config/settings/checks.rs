//! Checks of single values: the dashboard URL and `/metrics` labels.

use super::sink::Sink;
use super::{SettingsArgs, ValueProblem, MAX_METRICS_LABELS, RESERVED_METRICS_LABELS};

/// `metrics_labels`: the flag's (trimmed, empty ones dropped) over the
/// file's, each problem reported where the list came from.
pub(super) fn metrics_labels(
    sink: &mut Sink,
    args: &SettingsArgs,
    file: Option<Vec<String>>,
) -> Vec<String> {
    match (&args.metrics_labels, file) {
        (Some(l), _) => {
            let l: Vec<String> = l
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            for (_, m) in metrics_label_problems(&l) {
                sink.flag_error(
                    "--metrics-labels / PROBER_METRICS_LABELS",
                    "metrics_labels",
                    m,
                );
            }
            l
        }
        (None, Some(l)) => {
            for (i, m) in metrics_label_problems(&l) {
                let field = i.map_or("metrics_labels".to_string(), |i| {
                    format!("metrics_labels[{i}]")
                });
                sink.error(&field, m);
            }
            l
        }
        (None, None) => Vec::new(),
    }
}

/// `dashboard_url`: an http(s) URL in which `{probe}` is the only placeholder.
pub fn check_dashboard_url(template: &str) -> Result<(), ValueProblem> {
    check_url_template(
        template,
        ("probe", "the probe's name"),
        "https://grafana.example.com/d/probe?var-probe={probe}",
    )
}

/// A run's link: `trace_url` with `{trace_id}` replaced by its trace id.
pub fn trace_link(template: &str, trace_id: &str) -> String {
    template.replace("{trace_id}", trace_id)
}

/// `trace_url`: an http(s) URL in which `{trace_id}` is the only placeholder.
pub fn check_trace_url(template: &str) -> Result<(), ValueProblem> {
    check_url_template(
        template,
        ("trace_id", "a run's 32-digit trace id"),
        "https://tempo.example.com/trace/{trace_id}",
    )
}

/// An http(s) URL with a host in which `{name}` is the only placeholder.
fn check_url_template(
    template: &str,
    (placeholder, meaning): (&str, &str),
    example: &str,
) -> Result<(), ValueProblem> {
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let end = after.find('}').ok_or_else(|| {
            format!("`{{` without a closing `}}`; the only placeholder is {{{placeholder}}}")
        })?;
        let name = &after[..end];
        if name != placeholder {
            return Err(format!(
                "unknown placeholder {{{name}}}; the only placeholder is {{{placeholder}}} ({meaning})"
            )
            .into());
        }
        rest = &after[end + 1..];
    }
    let u = url::Url::parse(&template.replace(&format!("{{{placeholder}}}"), "p"))
        .map_err(|e| format!("not a URL ({e}); write it like {example}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err("must be an http or https URL with a host".into());
    }
    Ok(())
}

/// Problems of `metrics_labels`: (index, problem); `None` = the list as a whole.
pub fn metrics_label_problems(labels: &[String]) -> Vec<(Option<usize>, String)> {
    let mut out = Vec::new();
    if labels.len() > MAX_METRICS_LABELS {
        out.push((None, format!("{} labels; at most {MAX_METRICS_LABELS} (each one lengthens every per-probe line of /metrics)", labels.len())));
    }
    for (i, l) in labels.iter().enumerate() {
        let mut chars = l.chars();
        let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            out.push((Some(i), format!("{l:?} is not a Prometheus label name; use letters, digits and _, not starting with a digit")));
        } else if l.starts_with("__") {
            out.push((
                Some(i),
                format!("{l:?}: names starting with __ are reserved by Prometheus"),
            ));
        } else if RESERVED_METRICS_LABELS.contains(&l.as_str()) {
            out.push((Some(i), format!("{l:?} is a label /metrics (or Prometheus) sets itself; name another probe label")));
        } else if labels[..i].contains(l) {
            out.push((Some(i), format!("{l:?} is listed twice")));
        }
    }
    out
}
