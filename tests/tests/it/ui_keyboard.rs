//! Keyboard navigation on the overview, with real key presses: Debian's
//! `chromium-headless-shell` is driven over the DevTools protocol (JSON
//! messages on a WebSocket) and sent Tab, Enter and typed text as a keyboard
//! user would. Every stop of the Tab order must show its focus ring and be in
//! view; the skip link must jump past the header; the label filter must work
//! from the keyboard alone; Enter on a probe's link must open its page.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::ui::seeded;
use crate::ui_browser::{BROWSER, QUIET};

/// One browser with one page, driven over the DevTools protocol.
struct Browser {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on the browser's DevTools port: its JSON answer. The port
/// may answer nothing for a moment after it is announced: asked again.
async fn devtools_json(port: u16, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut text = String::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        // It keeps the connection open: read up to the body's length.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 16384];
        let read = async {
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&chunk[..n]),
                }
                text = String::from_utf8_lossy(&raw).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = (head.lines())
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>())
                        })
                        .and_then(Result::ok);
                    if length.is_some_and(|n| body.len() >= n) {
                        return serde_json::from_str::<Value>(body).ok();
                    }
                }
            }
            None
        };
        let v = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten();
        if let Some(v) = v.filter(|v| v.as_array().is_some_and(|a| !a.is_empty())) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("DevTools {path} on port {port}: no list of targets: {text:?}")
}

/// The port the browser wrote to `DevToolsActivePort` in its profile.
async fn devtools_port(profile: &Path, child: &mut Child) -> u16 {
    let file = profile.join("DevToolsActivePort");
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Some(port) = text.lines().next().and_then(|l| l.parse().ok()) {
                return port;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{BROWSER} exited ({status}) before it opened its DevTools port");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{BROWSER} never wrote {}", file.display());
}

impl Browser {
    async fn launch(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(BROWSER)
            .args(QUIET)
            .args([
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {BROWSER} ({e}): it must be on PATH; .ci/run installs Debian's chromium-headless-shell package")
            });
        let port = devtools_port(profile.path(), &mut child).await;
        let targets = devtools_json(port, "/json/list").await;
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .unwrap_or_else(|| panic!("no page target: {targets}"));
        let url = page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Browser {
            ws,
            next_id: 0,
            child,
            _profile: profile,
        }
    }

    /// One DevTools command: its result, or its error as `Err`. Events are skipped.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        let wait = async {
            while let Some(m) = self.ws.next().await {
                let Message::Text(t) = m.unwrap() else {
                    continue;
                };
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
            panic!("the browser closed its DevTools connection during {method}")
        };
        let v = tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer in 20 s"));
        match v.get("error") {
            Some(e) => Err(e.clone()),
            None => Ok(v["result"].clone()),
        }
    }

    /// A JavaScript expression's value in the page (`Err` while the page is
    /// being replaced, or if it threw).
    async fn eval(&mut self, expr: &str) -> Result<Value, Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await?;
        match r.get("exceptionDetails") {
            Some(e) => Err(e.clone()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Waits until the page at a URL satisfying `at` has loaded; its URL.
    async fn loaded(&mut self, what: &str, at: impl Fn(&str) -> bool) -> String {
        let mut last = Value::Null;
        for _ in 0..200 {
            let r = self
                .eval("document.readyState === 'complete' ? location.href : null")
                .await;
            if let Ok(Value::String(href)) = &r {
                if at(href) {
                    return href.clone();
                }
            }
            last = r.unwrap_or_else(|e| e);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: never loaded (last: {last})");
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}))
            .await
            .unwrap();
        self.loaded(url, |h| h == url).await;
    }

    /// A key pressed and released, as Puppeteer sends it: `text` for keys that type.
    async fn press(&mut self, key: &str, code: u32, text: Option<&str>) {
        let down = if text.is_some() {
            "keyDown"
        } else {
            "rawKeyDown"
        };
        let mut p = json!({"type": down, "key": key, "code": key, "windowsVirtualKeyCode": code});
        if let Some(t) = text {
            p["text"] = json!(t);
        }
        self.call("Input.dispatchKeyEvent", p).await.unwrap();
        let up = json!({"type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code});
        self.call("Input.dispatchKeyEvent", up).await.unwrap();
    }

    async fn tab(&mut self) -> Option<Focus> {
        self.press("Tab", 9, None).await;
        self.focus().await
    }

    async fn enter(&mut self) {
        self.press("Enter", 13, Some("\r")).await;
    }

    /// The element with the keyboard focus (`None`: the page itself).
    async fn focus(&mut self) -> Option<Focus> {
        let v = self.eval(FOCUS).await.unwrap();
        (!v.is_null()).then(|| Focus {
            tag: v["tag"].as_str().unwrap_or_default().to_string(),
            id: v["id"].as_str().unwrap_or_default().to_string(),
            text: v["text"].as_str().unwrap_or_default().to_string(),
            href: v["href"].as_str().map(str::to_string),
            ring: v["ring"] == true,
            in_view: v["in_view"] == true,
        })
    }

    /// Tabs until the focused element satisfies `want`.
    async fn tab_to(&mut self, what: &str, want: impl Fn(&Focus) -> bool) -> Focus {
        for _ in 0..80 {
            if let Some(f) = self.tab().await.filter(&want) {
                return f;
            }
        }
        panic!("Tab never reached {what}");
    }
}

/// What a keyboard user sees of the focused element.
#[derive(Debug, Clone)]
struct Focus {
    tag: String,
    id: String,
    text: String,
    href: Option<String>,
    /// A focus ring: an outline at least 2 px wide.
    ring: bool,
    /// Inside the window, with a size.
    in_view: bool,
}

const FOCUS: &str = r#"(() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e), r = e.getBoundingClientRect();
  return {
    tag: e.tagName.toLowerCase(),
    id: e.id,
    text: (e.innerText || e.getAttribute('aria-label') || e.value || '').trim().slice(0, 80),
    href: e.getAttribute('href'),
    ring: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2,
    in_view: r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0
      && r.bottom <= innerHeight && r.right <= innerWidth,
  };
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_works_from_the_keyboard_alone() {
    let (_db, _, _target, d) = seeded().await;
    let home = format!("http://{}/", d.addr);
    let mut b = Browser::launch(1280, 900).await;

    // The whole Tab order: every stop visible, with its ring, in document order.
    b.goto(&home).await;
    let mut order: Vec<Focus> = Vec::new();
    for _ in 0..80 {
        match b.tab().await {
            Some(f)
                if order.first().is_some_and(|first| {
                    first.text == f.text && first.tag == f.tag && first.href == f.href
                }) =>
            {
                break
            }
            Some(f) => order.push(f),
            None if !order.is_empty() => break,
            None => {}
        }
    }
    for f in &order {
        assert!(f.ring, "no focus ring on {f:?}");
        assert!(f.in_view, "focused but out of view: {f:?}");
    }
    assert_eq!(order[0].text, "Skip to the content", "{order:#?}");
    let pos = |want: &dyn Fn(&Focus) -> bool, what: &str| {
        order
            .iter()
            .position(want)
            .unwrap_or_else(|| panic!("{what} is not in the Tab order: {order:#?}"))
    };
    let stops = [
        pos(&|f| f.text == "Overview", "the header's Overview link"),
        pos(&|f| f.id == "label", "the label filter"),
        pos(&|f| f.id == "group", "the grouping"),
        pos(&|f| f.tag == "button" && f.text == "Apply", "Apply"),
        pos(
            &|f| f.href.as_deref() == Some("/probes/admin-tool"),
            "admin-tool's link",
        ),
    ];
    assert!(stops.windows(2).all(|w| w[0] < w[1]), "{order:#?}");
    for p in ["checkout", "search"] {
        let href = format!("/probes/{p}");
        pos(&|f| f.href.as_deref() == Some(href.as_str()), &href);
    }

    // The skip link jumps past the header: the next stop is the filter.
    b.goto(&home).await;
    let skip = b.tab().await.expect("the skip link");
    assert_eq!(skip.text, "Skip to the content");
    b.enter().await;
    let next = b.tab().await.expect("a stop after the skip");
    assert_eq!(next.id, "label", "after the skip link: {next:?}");

    // The label filter from the keyboard: type, Enter, only that team's probes.
    b.call("Input.insertText", json!({"text": "team=payments"}))
        .await
        .unwrap();
    b.enter().await;
    b.loaded("the filtered overview", |h| {
        h.contains("label=team%3Dpayments")
    })
    .await;
    let probes = b
        .eval("[...document.querySelectorAll('[data-probe]')].map(e => e.dataset.probe).join(' ')")
        .await
        .unwrap();
    let probes = probes.as_str().unwrap();
    assert!(
        probes.contains("checkout") && !probes.contains("search"),
        "filtered by team=payments: {probes}"
    );

    // Enter on a probe's link opens its page.
    b.tab_to("checkout's link", |f| {
        f.href.as_deref() == Some("/probes/checkout")
    })
    .await;
    b.enter().await;
    b.loaded("checkout's page", |h| h.ends_with("/probes/checkout"))
        .await;
    let h1 = b
        .eval("document.querySelector('h1').innerText")
        .await
        .unwrap();
    assert!(h1.as_str().unwrap().contains("checkout"), "{h1}");
    drop(b);
    d.shutdown().await;
}
