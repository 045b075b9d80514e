//! The built-in pages, served by the daemon beside the API: the overview
//! (`/`), a probe's page (`/probes/{name}`), the public status page
//! (`/status`) and the badges (`/badge/…`). HTML is rendered on the server
//! (maud), charts are SVG drawn here (`chart.rs`): no build step, no script
//! needed, nothing fetched from elsewhere. Every read goes through the same
//! store and state the JSON API reads; the overview and probe pages need
//! the API's `read` scope when `api.public_read` is false (`api/auth.rs`).

mod badge;
pub mod chart;
mod overview;
mod probe;
mod runs;
pub mod status;
pub mod theme;

use std::collections::HashMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::analysis::series::human_us;
use crate::api::AppState;
use crate::store::read::WindowStats;
use crate::store::StoreError;

pub use overview::{overview_data, render_overview, OverviewData};

/// The pages' routes, added to the API's router when `ui.enabled`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/probes/{name}", get(probe::page))
        .route("/status", get(status::page))
        .route("/badge/{probe}/{kind}", get(badge::probe))
        .route("/badge/groups/{group}/{kind}", get(badge::group))
        .route("/ui/style.css", get(stylesheet))
        .route("/ui/icon.svg", get(icon))
}

/// Whether a path is one of the pages that show internals (the overview
/// and probe pages): they need `read` when the API does.
pub fn is_private_page(path: &str) -> bool {
    path == "/" || path.starts_with("/probes/")
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        theme::css(),
    )
        .into_response()
}

/// The pages' icon: a green dot.
async fn icon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#1a7f37"/></svg>"##,
    )
        .into_response()
}

/// A page's frame: the header with its links, and `body`; `refresh`
/// reloads it (no script) every so many seconds.
pub fn frame(title: &str, refresh: Option<u64>, public: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                @if let Some(s) = refresh.filter(|s| *s > 0) {
                    meta http-equiv="refresh" content=(s);
                }
                title { (title) }
                link rel="stylesheet" href="/ui/style.css";
                link rel="icon" type="image/svg+xml" href="/ui/icon.svg";
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    @if public {
                        span.brand { (title) }
                    } @else {
                        a.brand href="/" { "prober" }
                        nav aria-label="Pages" {
                            a href="/" { "Overview" } " · "
                            a href="/status" { "Status page" } " · "
                            a href="/api/v1/openapi.json" { "API" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A rendered page: HTML, not cached (it is live), with the headers that
/// keep it from being framed or sniffed.
pub fn html_response(status: StatusCode, page: Markup) -> Response {
    let mut r = (status, page.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    );
    r
}

/// A page that could not be made: what happened and what to do, as a page.
pub fn error_page(status: StatusCode, what: &str, todo: &str) -> Response {
    html_response(
        status,
        frame(
            "prober: error",
            None,
            false,
            html! {
                h1 { (what) }
                p { (todo) }
                p { a href="/" { "Back to the overview" } }
            },
        ),
    )
}

/// A store read that failed, as a page: the store is degraded, probing goes on.
pub fn store_error(e: &StoreError) -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The history store cannot be read",
        &format!("{e}. Probing goes on and results wait in the queue; /readyz says why and since when. Reload this page when Postgres answers."),
    )
}

/// A duration in microseconds for people, or "–".
pub fn us(v: Option<i64>) -> String {
    v.map_or_else(|| "–".into(), |v| human_us(v as f64))
}

/// An availability as a percentage with its colour class, or "–".
pub fn availability(w: Option<&WindowStats>) -> Markup {
    let a = w
        .filter(|w| w.runs > 0)
        .map(|w| (w.runs - w.failures) as f64 / w.runs as f64);
    let class = chart::availability_class(a);
    html! {
        @match a {
            Some(a) => span class=(class) { (percent(a)) " %" },
            None => span.muted { "–" },
        }
    }
}

/// An availability (0–1) as a percentage to two decimals, rounded down:
/// 99.996 % with a failure reads 99.99, never 100.00.
pub fn percent(a: f64) -> String {
    format!("{:.2}", (a * 10_000.0).floor() / 100.0)
}

/// How long ago, in words: "3 min ago", "2 h ago", "5 d ago".
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3_599 => format!("{} min ago", s / 60),
        3_600..=172_799 => format!("{} h ago", s / 3_600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A time as written on the pages: UTC to the minute, the full time on hover.
pub fn when(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) title=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M UTC")) } }
}

/// A status word with its colour: up, down, or not run yet.
pub fn status_badge(up: Option<bool>) -> Markup {
    match up {
        Some(true) => html! { span.badge.up { "up" } },
        Some(false) => html! { span.badge.down { "down" } },
        None => html! { span.badge.muted { "no runs yet" } },
    }
}

/// The probes' windows read for a page, by name.
pub type Windows = HashMap<String, WindowStats>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_says_the_largest_unit() {
        let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
        let at = |s: i64| now - chrono::TimeDelta::seconds(s);
        assert_eq!(ago(at(5), now), "5 s ago");
        assert_eq!(ago(at(600), now), "10 min ago");
        assert_eq!(ago(at(7_200), now), "2 h ago");
        assert_eq!(ago(at(5 * 86_400), now), "5 d ago");
        assert_eq!(ago(now + chrono::TimeDelta::seconds(3), now), "0 s ago");
    }

    #[test]
    fn only_the_overview_and_probe_pages_are_private() {
        assert!(is_private_page("/") && is_private_page("/probes/checkout"));
        for open in [
            "/status",
            "/badge/checkout/status.svg",
            "/ui/style.css",
            "/healthz",
        ] {
            assert!(!is_private_page(open), "{open}");
        }
    }
}
