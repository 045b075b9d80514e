//! The shop's pages for a real browser (the `browser` example's target):
//! a login form that posts and lands on an account page, and a page whose
//! content arrives late, from a script, as many shops' do.
//!
//! `GET /account/login` (the form), `POST /account/login` (303 to the
//! account page, or 401 with the form again), `GET /account/home?user=`,
//! `GET /deals` (renders "Today's deals" 600 ms after it loads).

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::shop::DEMO_PASSWORD;

/// How long `/deals` takes to show its content after it loads.
pub const DEALS_LATE_MS: u64 = 600;

const STYLE: &str = "<style>body{font:16px system-ui,sans-serif;margin:2rem;max-width:40rem}\
label{display:block;margin:.5rem 0}input{font:inherit;padding:.3rem}button{font:inherit;padding:.3rem 1rem}</style>";

fn login_form(message: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><title>Sign in · demo shop</title>{STYLE}</head><body>\n\
<h1>Sign in</h1>\n<p id=\"message\">{message}</p>\n\
<form method=\"post\" action=\"/account/login\">\n\
<label>User <input id=\"user\" name=\"user\" autocomplete=\"username\"></label>\n\
<label>Password <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\"></label>\n\
<button id=\"sign-in\" type=\"submit\">Sign in</button>\n</form>\n</body></html>\n"
    )
}

/// The routes, merged into the shop's.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/account/login", get(login_page).post(login_post))
        .route("/account/home", get(account))
        .route("/deals", get(deals))
}

async fn login_page() -> Html<String> {
    Html(login_form("Use the demo user."))
}

async fn login_post(body: String) -> Response {
    let mut user = String::new();
    let mut password = String::new();
    for (k, v) in url::form_urlencoded::parse(body.as_bytes()) {
        match &*k {
            "user" => user = v.chars().take(64).collect(),
            "password" => password = v.into_owned(),
            _ => {}
        }
    }
    if user.is_empty() || password != DEMO_PASSWORD {
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_form("Wrong user or password.")),
        )
            .into_response();
    }
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("user", &user)
        .finish();
    Redirect::to(&format!("/account/home?{q}")).into_response()
}

#[derive(serde::Deserialize)]
struct Who {
    user: Option<String>,
}

async fn account(Query(who): Query<Who>) -> Html<String> {
    let user: String = (who.user.unwrap_or_default().chars())
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><title>Your account · demo shop</title>{STYLE}</head><body>\n\
<h1 id=\"welcome\">Welcome back, {user}</h1>\n<p>Your orders are on their way.</p>\n</body></html>\n"
    ))
}

async fn deals() -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><title>Deals · demo shop</title>{STYLE}</head><body>\n\
<h1>Deals</h1>\n<div id=\"deals\">Loading…</div>\n\
<script>setTimeout(() => {{ document.getElementById('deals').innerHTML = \
'<h2 id=\"deals-ready\">Today\\'s deals</h2><p>Half price on every probe.</p>'; }}, {DEALS_LATE_MS});</script>\n\
</body></html>\n"
    ))
}
