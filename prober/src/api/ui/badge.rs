//! SVG badges: `/badge/{probe}/status.svg`, `uptime.svg?window=30d` (1h,
//! 24h, 30d), `latency.svg?window=24h` (p95; 1h, 24h), and the same per group of the status
//! page (`/badge/groups/{value}/…`: the probes whose `group_by` label has
//! that value). Served for the probes on the public status page, and for
//! every probe when `api.public_read` is on; cacheable for a minute.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::us;
use crate::api::AppState;
use crate::config::Probe;
use crate::store::read::WindowStats;

/// How long a client may keep a badge.
const MAX_AGE_SECS: u32 = 60;
/// The windows a badge may cover: uptime over each; p95 over the first two
/// (a 30-day p95 of a badge's probes is on their pages).
const WINDOWS: [&str; 3] = ["1h", "24h", "30d"];

/// The badges' colours (a badge is an image of its own: no page variables).
/// White text on each has at least 4.5:1 contrast.
pub const COLOURS: [(&str, &str); 4] = [
    ("up", "#1a7f37"),
    ("warn", "#8a4600"),
    ("down", "#cf222e"),
    ("muted", "#59636e"),
];
const LABEL_COLOUR: &str = "#3d444d";

#[derive(Debug, Deserialize)]
pub struct BadgeQuery {
    pub window: Option<String>,
}

/// A badge: `label` on grey, `value` on the colour of `class`.
pub fn svg(label: &str, value: &str, class: &str) -> Markup {
    let colour = COLOURS
        .iter()
        .find(|c| c.0 == class)
        .map_or(COLOURS[3].1, |c| c.1);
    // About 7 px a character at 11 px Verdana, 6 px padding each side.
    let width = |s: &str| 12 + 7 * s.chars().count();
    let (lw, vw) = (width(label), width(value));
    let total = lw + vw;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(total) height="20" role="img" aria-label={(label) ": " (value)} {
            title { (label) ": " (value) }
            rect width=(lw) height="20" fill=(LABEL_COLOUR) {}
            rect x=(lw) width=(vw) height="20" fill=(colour) {}
            g fill="#ffffff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" {
                text x=(lw / 2) y="14" { (label) }
                text x=(lw + vw / 2) y="14" { (value) }
            }
        }
    }
}

fn respond(badge: Markup) -> Response {
    let mut r = badge.into_string().into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={MAX_AGE_SECS}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn refuse(status: StatusCode, why: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        why,
    )
        .into_response()
}

/// The probes a badge may show: those on the status page, or any when reads are public.
fn visible(core: &AppState, p: &Probe) -> bool {
    core.settings.api.public_read || core.settings.ui.status_page.shows(&p.name, &p.labels)
}

/// Runs, failures and percentiles of every probe over `window`.
async fn windows(core: &AppState, window: &str) -> Result<super::Windows, Response> {
    // Each a read of about one row per probe (the fleet's API reads): a
    // public badge never starts a scan of 30 days of day rows.
    let read = match window {
        "1h" => core.store.last_hour().await,
        "24h" => core.store.last_day().await,
        _ => core
            .store
            .month_counts()
            .await
            .map(super::overview::counts_as_windows),
    };
    read.map_err(|e| {
        // The cause is for the log: a badge is public.
        tracing::warn!(error = %e, "a badge could not read the store");
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the history is unavailable for a moment; probing goes on".into(),
        )
    })
}

/// The badge of `probes` (one, or a group's) of `kind`.
async fn badge(
    core: &AppState,
    probes: &[std::sync::Arc<Probe>],
    kind: &str,
    window: Option<String>,
) -> Response {
    let kind = kind.strip_suffix(".svg").unwrap_or(kind);
    let default = if kind == "latency" { "24h" } else { "30d" };
    let window = window.unwrap_or_else(|| default.into());
    if !WINDOWS.contains(&window.as_str()) || (kind == "latency" && window == "30d") {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("window={window:?}: use 1h, 24h or 30d for uptime, 1h or 24h for latency"),
        );
    }
    let markup = match kind {
        "status" => {
            let down = (probes.iter())
                .filter(|p| {
                    core.live
                        .probe(&p.name)
                        .lock()
                        .status
                        .is_some_and(|s| !s.up)
                })
                .count();
            let known = (probes.iter()).any(|p| core.live.probe(&p.name).lock().status.is_some());
            match (known, down) {
                (false, _) => svg("status", "no runs yet", "muted"),
                (true, 0) => svg("status", "up", "up"),
                (true, n) if probes.len() == 1 || n == probes.len() => {
                    svg("status", "down", "down")
                }
                (true, n) => svg("status", &format!("{n} down"), "down"),
            }
        }
        "uptime" | "latency" => {
            let all = match windows(core, &window).await {
                Ok(w) => w,
                Err(r) => return r,
            };
            let mut sum = WindowStats::default();
            for w in probes.iter().filter_map(|p| all.get(&p.name)) {
                sum.runs += w.runs;
                sum.failures += w.failures;
                sum.p95_us = sum.p95_us.max(w.p95_us);
            }
            if kind == "uptime" {
                let a = (sum.runs > 0).then(|| (sum.runs - sum.failures) as f64 / sum.runs as f64);
                let text = a.map_or_else(
                    || "no runs".to_string(),
                    |a| format!("{}%", super::percent(a)),
                );
                svg(
                    &format!("uptime {window}"),
                    &text,
                    super::chart::availability_class(a),
                )
            } else {
                let class = if sum.p95_us.is_some() { "up" } else { "muted" };
                svg(&format!("p95 {window}"), &us(sum.p95_us), class)
            }
        }
        _ => {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("no badge {kind:?}: use status.svg, uptime.svg or latency.svg"),
            )
        }
    };
    respond(markup)
}

/// `GET /badge/{probe}/{kind}`.
pub async fn probe(
    State(core): State<AppState>,
    Path((name, kind)): Path<(String, String)>,
    Query(q): Query<BadgeQuery>,
) -> Response {
    match core.scheduler.probe(&name).filter(|p| visible(&core, p)) {
        Some(p) => badge(&core, &[p], &kind, q.window).await,
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("no badge for {name:?}: no such probe on the status page (ui.status_page selects them)"),
        ),
    }
}

/// `GET /badge/groups/{group}/{kind}`: the probes on the status page whose
/// group label (`ui.status_page.group_by`) has this value. A group's p95
/// badge shows the highest of its probes' p95.
pub async fn group(
    State(core): State<AppState>,
    Path((group, kind)): Path<(String, String)>,
    Query(q): Query<BadgeQuery>,
) -> Response {
    let Some(key) = core.settings.ui.status_page.group_by.clone() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no groups: set ui.status_page.group_by (or ui.group_by) to a label key".into(),
        );
    };
    let members: Vec<_> = (core.scheduler.probes().into_iter())
        .filter(|p| visible(&core, p) && p.labels.get(&key) == Some(&group))
        .collect();
    if members.is_empty() {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no probe on the status page has {key}={group}"),
        );
    }
    badge(&core, &members, &kind, q.window).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ui::theme::contrast;

    #[test]
    fn white_text_reads_on_every_badge_colour() {
        for (name, c) in COLOURS.iter().chain([("label", LABEL_COLOUR)].iter()) {
            assert!(contrast("#ffffff", c) >= 4.5, "{name} {c}");
        }
    }

    #[test]
    fn a_badge_says_its_label_and_value_and_escapes_them() {
        let s = svg("uptime 30d", "99.95%", "up").into_string();
        assert!(
            s.starts_with("<svg") && s.contains("99.95%") && s.contains("#1a7f37"),
            "{s}"
        );
        let s = svg("<x>", "a&b", "down").into_string();
        assert!(s.contains("&lt;x&gt;") && s.contains("a&amp;b"), "{s}");
    }
}
