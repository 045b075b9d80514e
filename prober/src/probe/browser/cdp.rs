//! A DevTools protocol connection: JSON commands and their answers over the
//! browser's WebSocket, with flattened sessions (one per page).
//!
//! Untyped on purpose: a check sends a dozen commands and reads a few
//! fields, and a browser newer than a typed client's protocol files adds
//! events and fields every release. Here an unknown message is ignored.
//!
//! One task reads the socket: an answer goes to the call waiting for its id,
//! a console error or uncaught exception is kept (bounded) for its session,
//! every other event is dropped. When the socket closes, every waiting call
//! ends with [`CdpError::Closed`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The largest message read from the browser (a viewport screenshot in base64 is well under it).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Console errors kept per session; later ones are counted, not kept.
pub const MAX_CONSOLE_KEPT: usize = 20;
/// The longest console message kept, in characters.
const MAX_CONSOLE_CHARS: usize = 300;

/// Why a command got no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdpError {
    #[error("the browser closed its DevTools connection (it exited or crashed)")]
    Closed,
    #[error("the browser refused {method}: {message}")]
    Refused { method: String, message: String },
}

/// What a session's page reported.
#[derive(Debug, Default, Clone)]
pub struct Console {
    /// Console errors and uncaught exceptions, the first [`MAX_CONSOLE_KEPT`].
    pub errors: Vec<String>,
    /// How many there were in all.
    pub count: usize,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    console: Mutex<HashMap<String, Console>>,
}

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// A connection to one browser.
pub struct Cdp {
    sink: tokio::sync::Mutex<Sink>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for Cdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cdp").finish_non_exhaustive()
    }
}

impl Cdp {
    /// Connects to the browser's endpoint `ws://127.0.0.1:{port}{path}`.
    pub async fn connect(port: u16, path: &str) -> Result<Cdp, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("cannot connect to the browser's DevTools port {port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let url = format!("ws://127.0.0.1:{port}{path}");
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let (ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(config))
            .await
            .map_err(|e| {
                format!("the browser's DevTools WebSocket {url} refused the upgrade: {e}")
            })?;
        let (sink, mut stream) = ws.split();
        let shared = Arc::new(Shared::default());
        let reading = Arc::clone(&shared);
        let reader = tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m {
                    if let Ok(v) = serde_json::from_str::<Value>(&t) {
                        reading.dispatch(v);
                    }
                }
            }
            // Closed: every waiting call ends (its sender is dropped).
            reading.pending.lock().clear();
        });
        Ok(Cdp {
            sink: tokio::sync::Mutex::new(sink),
            shared,
            next_id: AtomicU64::new(1),
            reader,
        })
    }

    /// Sends `method` (to a page's `session`, or to the browser) and waits for its result.
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, CdpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        if self.reader.is_finished() {
            return Err(CdpError::Closed);
        }
        self.shared.pending.lock().insert(id, tx);
        let sent = self
            .sink
            .lock()
            .await
            .send(Message::text(msg.to_string()))
            .await;
        if sent.is_err() {
            self.shared.pending.lock().remove(&id);
            return Err(CdpError::Closed);
        }
        let answer = rx.await.map_err(|_| CdpError::Closed)?;
        match answer.get("error") {
            Some(e) => Err(CdpError::Refused {
                method: method.to_string(),
                message: e["message"].as_str().unwrap_or("no message").to_string(),
            }),
            None => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// What the session's page reported to its console so far (taken: the next call starts afresh).
    pub fn take_console(&self, session: &str) -> Console {
        self.shared
            .console
            .lock()
            .remove(session)
            .unwrap_or_default()
    }
}

impl Shared {
    fn dispatch(&self, v: Value) {
        if let Some(id) = v.get("id").and_then(Value::as_u64) {
            if let Some(tx) = self.pending.lock().remove(&id) {
                let _ = tx.send(v);
            }
            return;
        }
        let (Some(method), Some(session)) = (v["method"].as_str(), v["sessionId"].as_str()) else {
            return;
        };
        let Some(text) = console_error(method, &v["params"]) else {
            return;
        };
        let mut all = self.console.lock();
        // Bounded: a page cannot grow this past its sessions × MAX_CONSOLE_KEPT.
        if all.len() > 1024 && !all.contains_key(session) {
            return;
        }
        let c = all.entry(session.to_string()).or_default();
        c.count += 1;
        if c.errors.len() < MAX_CONSOLE_KEPT {
            c.errors
                .push(text.chars().take(MAX_CONSOLE_CHARS).collect());
        }
    }
}

/// The text of a console error, an uncaught exception or a failed load the
/// browser logged; `None` for every other event.
fn console_error(method: &str, p: &Value) -> Option<String> {
    match method {
        "Runtime.consoleAPICalled" if p["type"] == "error" || p["type"] == "assert" => {
            let args: Vec<String> = (p["args"].as_array().into_iter().flatten())
                .map(|a| match &a["value"] {
                    Value::String(s) => s.clone(),
                    Value::Null => a["description"].as_str().unwrap_or("").to_string(),
                    other => other.to_string(),
                })
                .collect();
            Some(format!("console.error: {}", args.join(" ")))
        }
        "Runtime.exceptionThrown" => {
            let d = &p["exceptionDetails"];
            let text = (d["exception"]["description"].as_str())
                .or_else(|| d["text"].as_str())
                .unwrap_or("an exception");
            let first = text.lines().next().unwrap_or(text);
            Some(format!("uncaught: {first}"))
        }
        "Log.entryAdded" if p["entry"]["level"] == "error" => {
            let e = &p["entry"];
            let url = e["url"]
                .as_str()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default();
            Some(format!("{}{url}", e["text"].as_str().unwrap_or("an error")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_errors_exceptions_and_failed_loads_are_kept_other_events_are_not() {
        let shared = Shared::default();
        let ev = |method: &str, params: Value| json!({"method": method, "sessionId": "S", "params": params});

        shared.dispatch(ev("Runtime.consoleAPICalled", json!({"type": "error", "args": [{"type": "string", "value": "boom"}, {"type": "number", "value": 3}]})));
        shared.dispatch(ev(
            "Runtime.consoleAPICalled",
            json!({"type": "log", "args": [{"value": "fine"}]}),
        ));
        shared.dispatch(ev("Runtime.exceptionThrown", json!({"exceptionDetails": {"text": "Uncaught", "exception": {"description": "TypeError: x is undefined\n    at f"}}})));
        shared.dispatch(ev("Log.entryAdded", json!({"entry": {"level": "error", "text": "Failed to load resource: 404", "url": "http://h/a.js"}})));
        shared.dispatch(ev("Page.loadEventFired", json!({"timestamp": 1.0})));
        for i in 0..30 {
            shared.dispatch(ev(
                "Runtime.consoleAPICalled",
                json!({"type": "error", "args": [{"value": format!("n{i}")}]}),
            ));
        }

        let c = shared.console.lock().remove("S").unwrap();
        assert_eq!(c.count, 33);
        assert_eq!(c.errors.len(), MAX_CONSOLE_KEPT);
        assert_eq!(
            &c.errors[..3],
            [
                "console.error: boom 3",
                "uncaught: TypeError: x is undefined",
                "Failed to load resource: 404 (http://h/a.js)"
            ]
        );
    }

    #[tokio::test]
    async fn an_answer_reaches_the_call_with_its_id() {
        let shared = Shared::default();
        let (tx, rx) = oneshot::channel();
        shared.pending.lock().insert(7, tx);

        shared.dispatch(json!({"id": 8, "result": {}}));
        shared.dispatch(json!({"id": 7, "result": {"ok": true}}));

        assert_eq!(rx.await.unwrap()["result"]["ok"], true);
        assert!(shared.pending.lock().is_empty());
    }
}
