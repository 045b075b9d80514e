//! The demo shop (HTTP, 9681) and its edge (HTTPS, 9682): axum routers served
//! by hyper's HTTP/1 connection, with the head, body and connection count capped.
//!
//! Shop routes: `/` (HTML), `/api/health`, `/api/version`, `/api/search?q=`,
//! `POST /api/login` → token, `POST /api/orders` (Bearer) → 201,
//! `GET /api/orders/{id}` (Bearer), `DELETE /api/orders?owner=`, and the
//! switches `/control/fail`, `/control/slow?ms=`, `/control/ok` (GET or POST);
//! and the pages for a real browser (`pages.rs`: `/account/…`, `/deals`).
//! The switches act on the storefront's pages only (`/`): the API keeps
//! answering, so exactly one shipped probe, `web-homepage`, turns red.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::{Mutex, MutexGuard};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Switches, IDLE_TIMEOUT};

/// Most bytes of a request head (hyper's smallest allowed buffer is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most bytes of a request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Orders kept; creating one more forgets the oldest.
pub const MAX_ORDERS: usize = 1_000;
/// Login tokens kept; a new login forgets the oldest.
pub const MAX_TOKENS: usize = 1_000;
/// The synthetic user's password. Public: the demo guards nothing.
pub const DEMO_PASSWORD: &str = "demo-password";
/// What a search costs, so the latency example has something to measure.
const SEARCH_WORK: Duration = Duration::from_millis(50);

const HOME: &str = "<!doctype html>\n<html><head><title>Prober demo shop</title></head>\n<body>\n\
<h1>Prober demo shop</h1>\n\
<p>The probes of <code>probes/</code> check this shop. Make this page fail: \
<code>curl -X POST localhost:9681/control/fail</code>; slow: <code>/control/slow?ms=1500</code>; \
heal: <code>/control/ok</code>.</p>\n</body></html>\n";

const EDGE: &str = "<!doctype html>\n<html><head><title>Prober demo edge</title></head>\n\
<body><p>The shop's edge, over HTTPS with a self-signed certificate.</p></body></html>\n";

#[derive(Debug, Clone)]
struct Order {
    id: String,
    sku: String,
    owner: String,
    note: String,
}

impl Order {
    fn json(&self) -> Value {
        json!({"id": self.id, "sku": self.sku, "owner": self.owner, "note": self.note})
    }
}

#[derive(Debug, Default)]
struct Store {
    next_id: u64,
    orders: BTreeMap<u64, Order>,
    /// token → user, oldest first in `token_order`.
    tokens: HashMap<String, String>,
    token_order: VecDeque<String>,
}

/// The shop's state: switches, orders and tokens.
#[derive(Clone)]
pub struct Shop {
    switches: Arc<Switches>,
    store: Arc<Mutex<Store>>,
}

impl Shop {
    pub(crate) fn new(switches: Arc<Switches>) -> Shop {
        Shop {
            switches,
            store: Arc::new(Mutex::new(Store::default())),
        }
    }

    /// The shop on 9681.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(home))
            .route("/api/health", get(health))
            .route("/api/version", get(version))
            .route("/api/search", get(search))
            .route("/api/login", post(login))
            .route("/api/orders", post(create_order).delete(delete_orders))
            .route("/api/orders/{id}", get(read_order))
            .route("/ws", get(ws_echo))
            .merge(super::pages::routes())
            .route("/control/fail", get(control_fail).post(control_fail))
            .route("/control/slow", get(control_slow).post(control_slow))
            .route("/control/ok", get(control_ok).post(control_ok))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone())
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock()
    }

    fn user_of(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        self.store().tokens.get(token.trim()).cloned()
    }
}

/// The largest WebSocket message the echo takes.
const MAX_WS_MESSAGE_BYTES: usize = 64 * 1024;

/// `/ws`: a WebSocket that echoes each text or binary message (the
/// `websocket` example's target).
async fn ws_echo(ws: WebSocketUpgrade) -> Response {
    use axum::extract::ws::Message;
    ws.max_message_size(MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |mut socket| async move {
            while let Some(Ok(msg)) = socket.recv().await {
                let echoed = matches!(msg, Message::Text(_) | Message::Binary(_));
                if matches!(msg, Message::Close(_)) || (echoed && socket.send(msg).await.is_err()) {
                    break;
                }
            }
        })
}

/// The edge on 9682: `/` redirects to `/index.html`, which renders. No switches.
pub fn edge_router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::permanent("/index.html") }))
        .route("/index.html", get(|| async { Html(EDGE) }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

// === pages and the API ===

async fn home(State(shop): State<Shop>) -> Response {
    let slow = shop.switches.slow();
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    if shop.switches.failing() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Internal Server Error: the demo was told to fail (heal it: curl -X POST localhost:9681/control/ok)\n",
        )
            .into_response();
    }
    Html(HOME).into_response()
}

async fn health(State(shop): State<Shop>) -> Json<Value> {
    let orders = shop.store().orders.len();
    Json(json!({
        "status": "ok",
        "checks": {"database": "up", "orders": orders},
        "version": format!("v{}", crate::VERSION),
    }))
}

async fn version() -> Json<Value> {
    Json(json!({"version": format!("v{}", crate::VERSION)}))
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn search(Query(q): Query<SearchQuery>) -> Json<Value> {
    tokio::time::sleep(SEARCH_WORK).await;
    let catalogue = [("probe-sku", "Probe, synthetic"), ("widget-1", "Widget")];
    let needle = q.q.to_lowercase();
    let results: Vec<Value> = catalogue
        .iter()
        .filter(|(sku, name)| sku.contains(&needle) || name.to_lowercase().contains(&needle))
        .map(|(sku, name)| json!({"sku": sku, "name": name}))
        .collect();
    Json(json!({"query": q.q, "results": results}))
}

#[derive(Deserialize)]
struct Login {
    user: String,
    #[serde(default)]
    password: Option<String>,
}

/// The password may come in the body (`password`) or the `X-Synthetic-Password` header.
async fn login(State(shop): State<Shop>, headers: HeaderMap, Json(body): Json<Login>) -> Response {
    let header = headers
        .get("x-synthetic-password")
        .and_then(|v| v.to_str().ok());
    let password = body.password.as_deref().or(header);
    if body.user.is_empty() || password != Some(DEMO_PASSWORD) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": format!("unknown user or wrong password (the demo's is {DEMO_PASSWORD:?})")})),
        )
            .into_response();
    }
    let token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let mut store = shop.store();
    if store.token_order.len() >= MAX_TOKENS {
        if let Some(old) = store.token_order.pop_front() {
            store.tokens.remove(&old);
        }
    }
    store.tokens.insert(token.clone(), body.user.clone());
    store.token_order.push_back(token.clone());
    Json(json!({"token": token, "user": body.user})).into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "send `Authorization: Bearer <token>` with a token from POST /api/login"})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NewOrder {
    sku: String,
    #[serde(default)]
    note: String,
}

async fn create_order(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Json(new): Json<NewOrder>,
) -> Response {
    let Some(owner) = shop.user_of(&headers) else {
        return unauthorized();
    };
    let mut store = shop.store();
    store.next_id += 1;
    let n = store.next_id;
    let order = Order {
        id: format!("ord-{n}"),
        sku: new.sku,
        owner,
        note: new.note,
    };
    if store.orders.len() >= MAX_ORDERS {
        store.orders.pop_first();
    }
    store.orders.insert(n, order.clone());
    (StatusCode::CREATED, Json(order.json())).into_response()
}

async fn read_order(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if shop.user_of(&headers).is_none() {
        return unauthorized();
    }
    let found = id
        .strip_prefix("ord-")
        .and_then(|n| n.parse::<u64>().ok())
        .and_then(|n| shop.store().orders.get(&n).cloned());
    match found {
        Some(o) => Json(o.json()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no order {id}")})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct Owner {
    owner: String,
}

async fn delete_orders(State(shop): State<Shop>, Query(o): Query<Owner>) -> Json<Value> {
    let mut store = shop.store();
    let before = store.orders.len();
    store.orders.retain(|_, order| order.owner != o.owner);
    Json(json!({"deleted": before - store.orders.len()}))
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "no such page; the demo serves /, /account/login, /deals, /api/health, /api/version, /api/search, /api/login, /api/orders and /control/{fail,slow,ok}\n",
    )
}

// === the switches ===

async fn control_fail(State(shop): State<Shop>) -> Json<Value> {
    shop.switches.set_failing(true);
    tracing::info!("demo: the home page now answers 503 (heal: /control/ok)");
    switches(&shop)
}

#[derive(Deserialize)]
struct Slow {
    ms: Option<u64>,
}

async fn control_slow(State(shop): State<Shop>, Query(s): Query<Slow>) -> Json<Value> {
    shop.switches
        .set_slow(Duration::from_millis(s.ms.unwrap_or(1_500)));
    tracing::info!(delay = ?shop.switches.slow(), "demo: the home page is now slow (heal: /control/ok)");
    switches(&shop)
}

async fn control_ok(State(shop): State<Shop>) -> Json<Value> {
    shop.switches.heal();
    tracing::info!("demo: the home page is healthy again");
    switches(&shop)
}

fn switches(shop: &Shop) -> Json<Value> {
    let slow = u64::try_from(shop.switches.slow().as_millis()).unwrap_or(u64::MAX);
    Json(json!({
        "mode": if shop.switches.failing() { "fail" } else { "ok" },
        "delay_ms": slow,
        "affects": "/ (the storefront page); the API keeps answering",
    }))
}

// === serving ===

/// Accepts connections until `stop`, at most [`MAX_CONNECTIONS`] at once, each
/// served (over TLS with `tls`) by hyper's HTTP/1 with a capped head.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    super::accept_each(listener, stop, tasks, move |sock| {
        connection(sock, router.clone(), tls.clone())
    })
    .await;
}

async fn connection(sock: TcpStream, router: Router, tls: Option<TlsAcceptor>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(MAX_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT);
    let service = TowerToHyperService::new(router);
    match tls {
        None => {
            let _ = (http.serve_connection(TokioIo::new(sock), service))
                .with_upgrades()
                .await;
        }
        Some(acceptor) => {
            let Ok(Ok(stream)) = tokio::time::timeout(IDLE_TIMEOUT, acceptor.accept(sock)).await
            else {
                return;
            };
            let _ = (http.serve_connection(TokioIo::new(stream), service))
                .with_upgrades()
                .await;
        }
    }
}
